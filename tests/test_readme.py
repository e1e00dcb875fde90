"""The front page: README.md's results box is what benchmarks/readme_box.py makes of docs/results.json, the page
stays short, and every relative link of README.md and docs/*.md names a file of the repository."""

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _generator():
    spec = importlib.util.spec_from_file_location("readme_box", ROOT / "benchmarks" / "readme_box.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_results_box_is_generated_from_results_json():
    generator, readme = _generator(), (ROOT / "README.md").read_text()
    results = json.loads((ROOT / "docs" / "results.json").read_text())
    assert generator.with_box(readme, results) == readme, "run .venv/bin/python benchmarks/readme_box.py"
    assert f"{results['main_job_summary']['mean_zebra_zvc_reduction']:.1%}" in readme


def test_a_changed_result_changes_the_box():
    generator, readme = _generator(), (ROOT / "README.md").read_text()
    results = json.loads((ROOT / "docs" / "results.json").read_text())
    results["main_job_summary"]["mean_zebra_zvc_reduction"] = 0.123
    assert "12.3% fewer activation bytes" in generator.with_box(readme, results)


def test_the_front_page_is_short_and_keeps_its_markers():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert "\n<!-- test-times -->\n" in readme and "## Two commands" in readme


def test_every_relative_link_names_a_file():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not re.match(r"[a-z]+:", target) and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken
