"""The names of the files a run folder holds: torch-free, so the command line's checks can read them before
torch loads."""

CHECKPOINT = "last.pt"  # a stage folder's checkpoint
REPORT = "report.json"  # the result of a train, run, slim or calibrate folder
SWEEP = "sweep.json"  # the result of a sweep folder
