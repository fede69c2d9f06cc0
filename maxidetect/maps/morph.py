"""Binary dilation of frame-sized masks (and label growth) by shifted ORs
(maxima), the shapes of labelled components, and the angle between two axes.

``scipy.ndimage.binary_dilation`` with ``iterations`` visits every pixel
with its structuring element once per iteration: ~40 ms for 3 iterations on
a 2048^2 mask on a 2-core machine, and the maps dilate a dozen such masks
per frame. The same result from whole-array shifts costs ~10x less.
"""

from __future__ import annotations

import numpy as np

__all__ = ["dilate", "grow", "component_shapes", "axis_angle"]


def _grow_axis(m: np.ndarray, n: int, axis: int) -> np.ndarray:
    """The maximum of ``m`` and its copies shifted by 1..``n`` pixels both ways
    along ``axis`` (a new array; for a bool mask, their OR)."""
    out = m.copy()
    for k in range(1, min(n, m.shape[axis] - 1) + 1):
        lo = [slice(None)] * m.ndim
        hi = [slice(None)] * m.ndim
        lo[axis], hi[axis] = slice(k, None), slice(None, -k)
        lo, hi = tuple(lo), tuple(hi)
        np.maximum(out[lo], m[hi], out=out[lo])
        np.maximum(out[hi], m[lo], out=out[hi])
    return out


def dilate(mask: np.ndarray, n: int = 1, square: bool = False) -> np.ndarray:
    """``mask`` (bool 2-D) grown by ``n`` pixels: identical to
    ``ndimage.binary_dilation(mask, structure, iterations=n)`` with the
    4-neighbour cross (``square=False``, ndimage's default: a taxicab ball
    of radius ``n``) or the 3x3 square (``square=True``: a square of side
    2n + 1), nothing outside the array. A new array; ``n`` <= 0 gives a copy."""
    m = np.asarray(mask, bool)
    if n <= 0 or not m.any():
        return m.copy()
    if square:  # separable
        return _grow_axis(_grow_axis(m, n, 0), n, 1)
    out = m
    for _ in range(n):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def grow_labels(lab: np.ndarray, n: int) -> np.ndarray:
    """Each pixel's largest label within the (2n + 1)^2 square around it
    (labels >= 0): ``ndimage.grey_dilation(lab, size=2 * n + 1)``, by
    shifted maxima along each axis, as :func:`dilate` grows a mask (1.7x
    faster on a 2048^2 frame)."""
    lab = np.asarray(lab)
    return _grow_axis(_grow_axis(lab, n, 0), n, 1)


def grow(mask: np.ndarray, n: int) -> np.ndarray:
    """``mask`` grown by ``n`` pixels with the 3x3 square (:func:`dilate`);
    ``mask`` itself, not a copy, when there is nothing to grow."""
    return mask if n <= 0 or not mask.any() else dilate(mask, n, square=True)


def component_shapes(lab: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """(cy, cx, major, minor, theta) of each labelled component, index 0..n
    (0: the background, meaningless): centroid, RMS extent along the major
    and minor axes (second moments of its pixels, each a unit square; a
    uniform line of length l has major l / sqrt(12)) and the major axis'
    angle from +x [rad]. One pass of bincounts over the labelled pixels."""
    ys, xs = np.nonzero(lab)
    k = lab[ys, xs]
    cnt = np.maximum(np.bincount(k, minlength=n + 1), 1).astype(np.float64)
    cy, cx = np.bincount(k, ys, n + 1) / cnt, np.bincount(k, xs, n + 1) / cnt
    dy, dx = ys - cy[k], xs - cx[k]
    syy, sxx = np.bincount(k, dy * dy, n + 1) / cnt + 1 / 12, np.bincount(k, dx * dx, n + 1) / cnt + 1 / 12
    sxy = np.bincount(k, dx * dy, n + 1) / cnt
    half, disc = (syy + sxx) / 2, np.sqrt(((syy - sxx) / 2) ** 2 + sxy ** 2)
    theta = 0.5 * np.arctan2(2 * sxy, sxx - syy)
    return cy, cx, np.sqrt(half + disc), np.sqrt(np.maximum(half - disc, 1e-6)), theta


def axis_angle(a, b):
    """The angle [rad] between two axes at ``a`` and ``b`` (directions modulo pi), 0 to pi/2."""
    return np.abs((a - b + np.pi / 2) % np.pi - np.pi / 2)
