"""What the zebra verbs do, built on the training loop: the two-model run, sweeps, the Slimming flows
(``pruning``), calibration without training (``no_training``), exports (``artefacts``) and accelerator
estimates (``hardware``)."""
