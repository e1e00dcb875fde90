"""docs/RESULTS.md's sentences made by benchmarks/reference.py, checked against docs/results.json without the runs
that reference.py reads."""

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _reference():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # reference.py imports its neighbour readme_box
    try:
        spec = importlib.util.spec_from_file_location("reference", ROOT / "benchmarks" / "reference.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def _best_reductions(results: dict) -> dict[str, float]:
    """Each method's largest compressed-format reduction within the budget, from results.json's points."""
    best: dict[str, float] = {}
    for point in results["points"]:
        if point["drop_points"] <= results["budget_points"] + 1e-9:
            reduction = max(value for fmt, value in point["reduction"].items() if fmt != "dense")
            best[point["method"]] = max(best.get(point["method"], 0.0), reduction)
    return best


def test_the_slimming_sentence_is_the_measurement_beside_the_papers():
    reference, results = _reference(), json.loads((ROOT / "docs" / "results.json").read_text())
    sentence = reference.slimming_verdict(results["slimming_claim"], _best_reductions(results))
    assert sentence == (
        "Measured here, Slimming+Zebra's top-1 is +3.86 points against Slimming alone at the same traffic cut "
        "(68.0 %); the paper reports a gain of about +2 points from combining them. The best Slimming+Zebra point "
        "within 1 point of the baseline's top-1 cuts 68.0 % of the traffic, below Zebra alone (85.4 %).")
    assert f"\n{sentence}\n" in (ROOT / "docs" / "RESULTS.md").read_text()
    assert "holds" not in (ROOT / "docs" / "RESULTS.md").read_text()


def test_the_cached_targets_section_is_results_json_seed_by_seed_beside_the_main_job():
    reference, results = _reference(), json.loads((ROOT / "docs" / "results.json").read_text())
    cached = results["cached_targets"]
    assert [entry["seed"] for entry in cached] == [entry["seed"] for entry in results["main_job"]] == [0, 1, 2]
    lines = reference.cached_targets_markdown(results["main_job"], cached)
    assert lines[0] == "## Distillation targets: the teacher on every batch or cached"
    assert "\n".join(lines) in (ROOT / "docs" / "RESULTS.md").read_text()
    mean = results["cached_targets_summary"]["mean_zebra_zvc_reduction"]
    assert f"cached targets {mean * 100:.1f} %" in lines[-2]
