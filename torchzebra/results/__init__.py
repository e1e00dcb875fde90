"""Results of runs: the method registry, one typed result for every kind of run, its JSON file and its
Markdown tables. Below the engine and the reports, which both read it."""

from .methods import METHODS, SWEEP_METHODS, Method, method_colour, method_title
from .schema import Machine, ModelRow, RunInfo, RunResult, model_row
from .store import CHECKPOINT, REPORT, SWEEP, ResultError, read_result, result_file, stage_traffic, write_result

__all__ = ["CHECKPOINT", "METHODS", "Machine", "Method", "ModelRow", "REPORT", "ResultError", "RunInfo", "RunResult",
           "SWEEP", "SWEEP_METHODS", "method_colour", "method_title", "model_row", "read_result", "result_file",
           "stage_traffic", "write_result"]
