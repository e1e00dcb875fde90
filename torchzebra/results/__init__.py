"""Results of runs: the method registry, one typed result for every kind of run, its JSON file and its
Markdown tables. Below the run configuration, the engine and the reports, which all read it. Names load on
first use (the method registry is torch-free)."""

from typing import TYPE_CHECKING

from .._lazy import lazy_package

if TYPE_CHECKING:  # the names below, for type checkers, IDEs and readers; at run time each loads on first use
    from .files import CHECKPOINT, REPORT, SWEEP
    from .methods import (
        BASELINE,
        CALIBRATED,
        METHODS,
        PRUNED_STAGE,
        SPARSE_STAGE,
        ZEBRA,
        Method,
        bind_extensions,
        method_colour,
        method_extensions,
        method_title,
        register_method,
        run_methods,
        slim_flows,
        sweep_methods,
    )
    from .schema import Machine, ModelRow, RunInfo, RunResult, model_row
    from .store import ResultError, read_result, result_file, stage_traffic, write_result

__all__ = lazy_package(__name__, {
    "methods": ["BASELINE", "CALIBRATED", "METHODS", "PRUNED_STAGE", "SPARSE_STAGE", "ZEBRA", "Method",
                "bind_extensions", "method_colour", "method_extensions", "method_title", "register_method",
                "run_methods", "slim_flows", "sweep_methods"],
    "schema": ["Machine", "ModelRow", "RunInfo", "RunResult", "model_row"],
    "files": ["CHECKPOINT", "REPORT", "SWEEP"],
    "store": ["ResultError", "read_result", "result_file", "stage_traffic", "write_result"],
})
