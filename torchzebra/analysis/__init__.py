"""Functions over prepared models: traffic counting (``measure``), parameters and MACs (``cost``), threshold
calibration (``calibrate``), per-layer allocation (``allocation``) and the zero-block penalty (``regularizer``)."""
