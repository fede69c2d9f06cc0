"""Bayesian prior modification and thresholding of the network's posteriors.

The network's sigmoid outputs are posteriors under the class proportions of
its training set, PN(c). For data where class c has proportion P(c) the
posterior becomes (Saerens et al. 2002, as in the MaxiMask paper)::

    P(c|x) = PN(c|x) / (PN(c|x) + f_c (1 - PN(c|x)))
    f_c    = [PN(c) / (1 - PN(c))] * [(1 - P(c)) / P(c)]

It rescales probabilities along the ROC curve; the ranking is unchanged.
"""

from __future__ import annotations

import numpy as np

from maxidetect.classes import CLASSES, N_CLASSES

__all__ = ["prior_factors", "modify_priors", "threshold", "bitmask"]


def prior_factors(new_priors, training_priors=None) -> np.ndarray:
    """Return f_c, shape ``(n,)``, for new priors P(c) and training priors PN(c)."""
    new = np.asarray(new_priors, dtype=np.float64)
    tr = (
        np.array([c.training_prior for c in CLASSES])
        if training_priors is None
        else np.asarray(training_priors, dtype=np.float64)
    )
    if np.any((new <= 0) | (new >= 1)) or np.any((tr <= 0) | (tr >= 1)):
        raise ValueError("priors must lie strictly between 0 and 1")
    return (tr / (1.0 - tr)) * ((1.0 - new) / new)


def modify_priors(probs: np.ndarray, factors, axis: int = 0, out=None) -> np.ndarray:
    """Apply prior modification to ``probs`` (classes along ``axis``).

    Parameters
    ----------
    probs : ndarray, float
        Raw network posteriors PN(c|x), e.g. shape ``(n_classes, H, W)``.
    factors : array-like, shape ``(n_classes,)``
        The f_c from :func:`prior_factors`.
    axis : int
        Axis of ``probs`` that indexes classes.
    out : ndarray, optional
        Where to write the result (may be ``probs`` itself).
    """
    probs = np.asarray(probs)
    f = np.asarray(factors, dtype=probs.dtype).ravel()
    if f.size != probs.shape[axis]:
        raise ValueError(f"{f.size} factors for {probs.shape[axis]} classes")
    res = np.empty_like(probs) if out is None else out
    # One class plane at a time: a single plane-sized temporary instead of
    # three full (n_classes, H, W) ones (~300 MB on a 1184 px block).
    src, dst = np.moveaxis(probs, axis, 0), np.moveaxis(res, axis, 0)
    one = probs.dtype.type(1)
    for p, r, fc in zip(src, dst, f, strict=True):
        denom = np.subtract(one, p)
        denom *= fc
        denom += p
        # PN = 0 and f = 0 would give 0/0; such a pixel keeps its raw value.
        with np.errstate(invalid="ignore", divide="ignore"):
            np.divide(p, denom, out=r)
        if fc == 0:
            np.copyto(r, p, where=denom == 0)
    return res


def threshold(probs: np.ndarray, thresholds, axis: int = 0) -> np.ndarray:
    """Boolean masks ``probs > thresholds`` (strict), classes along ``axis``."""
    probs = np.asarray(probs)
    t = np.asarray(thresholds, dtype=probs.dtype)
    shape = [1] * probs.ndim
    shape[axis] = t.size
    return probs > t.reshape(shape)


def bitmask(masks: np.ndarray, class_indices=None) -> np.ndarray:
    """OR the registry bit codes of flagged classes into one int32 image.

    Parameters
    ----------
    masks : ndarray of bool, shape ``(n, H, W)``
        One mask per class listed in ``class_indices`` (all 14 if None).
    """
    masks = np.asarray(masks)
    idx = range(N_CLASSES) if class_indices is None else class_indices
    out = np.zeros(masks.shape[1:], dtype=np.int32)
    for plane, ci in zip(masks, idx, strict=True):
        bit = CLASSES[ci].bit
        if bit:
            out[plane.astype(bool)] |= bit
    return out
