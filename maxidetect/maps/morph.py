"""Binary dilation of frame-sized masks by shifted ORs.

``scipy.ndimage.binary_dilation`` with ``iterations`` visits every pixel
with its structuring element once per iteration: ~40 ms for 3 iterations on
a 2048^2 mask on a 2-core machine, and the maps dilate a dozen such masks
per frame. The same result from whole-array shifts costs ~10x less.
"""

from __future__ import annotations

import numpy as np

__all__ = ["dilate", "grow"]


def _grow_axis(m: np.ndarray, n: int, axis: int) -> np.ndarray:
    """``m`` OR its copies shifted by 1..``n`` pixels both ways along ``axis`` (a new array)."""
    out = m.copy()
    for k in range(1, min(n, m.shape[axis] - 1) + 1):
        lo = [slice(None)] * m.ndim
        hi = [slice(None)] * m.ndim
        lo[axis], hi[axis] = slice(k, None), slice(None, -k)
        out[tuple(lo)] |= m[tuple(hi)]
        out[tuple(hi)] |= m[tuple(lo)]
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


def grow(mask: np.ndarray, n: int) -> np.ndarray:
    """``mask`` grown by ``n`` pixels with the 3x3 square (:func:`dilate`);
    ``mask`` itself, not a copy, when there is nothing to grow."""
    return mask if n <= 0 or not mask.any() else dilate(mask, n, square=True)
