"""Defaults that the code and the command line's help both state: one place, torch-free, so ``zebra --help``
stays instant and never disagrees with what a verb does."""

CALIBRATION_IMAGES = 1024  # training images `zebra calibrate` measures each layer on
HOLDOUT_IMAGES = 10000  # other training images its budget is checked on
DENSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)  # kept-block fractions each layer's curve is measured at
