"""Probabilities -> per-class masks: Bayesian prior modification,
thresholds, and :class:`~maxidetect.masks.maker.MaskMaker` (arrays and files)."""
