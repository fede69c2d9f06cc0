"""maxidetect: contaminant masks (MaxiMask network) for cleaner source catalogues.

Python API first::

    import maxidetect
    probs = maxidetect.predict(image)          # (14, H, W) raw probabilities
    masks = maxidetect.compute_masks(image)    # (14, H, W) uint8, priors + thresholds
    maker = maxidetect.MaskMaker()             # holds the network for reuse
    maker.process_file("frame.fits")           # writes frame.masks.fits
"""

import os

from maxidetect.version import __version__

# TensorFlow's C++ start-up chatter is noise for command-line users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# numpy asks Linux for transparent huge pages on every large array; the maps'
# short-lived whole-frame temporaries then fault in 2 MB pages, which cost more
# than they save (`maps` on a 2048^2 frame, 2-core Zen 4: 15.35 -> 14.27 s;
# benchmarks/results/huge_pages.md). Read by numpy on import: effective where
# maxidetect is imported first (always on the command line); 1 keeps the advice.
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

from maxidetect.classes import CLASS_NAMES, CLASSES, ClassConfig  # noqa: E402
from maxidetect.priors import modify_priors, prior_factors, threshold  # noqa: E402

__all__ = [
    "__version__",
    "CLASSES",
    "CLASS_NAMES",
    "ClassConfig",
    "MaskMaker",
    "Predictor",
    "compute_masks",
    "modify_priors",
    "predict",
    "prior_factors",
    "threshold",
]


def __getattr__(name):
    # The network pulls in Keras and a backend: import it only when used.
    if name in ("MaskMaker", "predict", "compute_masks"):
        from maxidetect.masks import maker

        return getattr(maker, name)
    if name == "Predictor":
        from maxidetect.network.inference import Predictor

        return Predictor
    raise AttributeError(f"module 'maxidetect' has no attribute {name!r}")
