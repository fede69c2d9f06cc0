"""Image normalisation as the MaxiMask network expects it.

NaN and infinities become 0, values are clipped to [-500, 80000], then a
background map is subtracted and the result divided by a noise map, both
from a ~200 px mesh (SEP: SExtractor's sigma-clipped mode estimator,
3x3 median filter of the mesh, bicubic-spline interpolation).
"""

from __future__ import annotations

import numpy as np
import sep

__all__ = ["normalise", "CLIP_LOW", "CLIP_HIGH", "DEFAULT_MESH"]

CLIP_LOW = -500.0
CLIP_HIGH = 80000.0
DEFAULT_MESH = 200


def normalise(image, mesh: int = DEFAULT_MESH, filter_size: int = 3, copy: bool = True) -> np.ndarray:
    """Return the normalised float32 image.

    Parameters
    ----------
    image : array-like, shape (H, W)
        Any numeric dtype or byte order (FITS data is big-endian).
    mesh : int
        Background mesh size in pixels.
    filter_size : int
        Median filter size applied to the mesh.
    copy : bool
        If False and ``image`` is already a writable, C-contiguous, native
        float32 array, normalise it in place (saves a full-frame copy on big
        frames); otherwise the input is untouched.

    Returns
    -------
    ndarray, float32, shape (H, W)
        ``(clip(image) - background) / noise``; all zeros if the image has no
        finite non-zero pixel.
    """
    arr = np.asarray(image)
    inplace = (
        not copy
        and arr.dtype == np.float32
        and arr.dtype.isnative
        and arr.flags.c_contiguous
        and arr.flags.writeable
    )
    data = arr if inplace else np.array(arr, dtype=np.float32, order="C", copy=True)  # native order
    if data.ndim != 2:
        raise ValueError(f"normalise expects a 2-D image, got shape {data.shape}")
    data[~np.isfinite(data)] = 0.0
    np.clip(data, CLIP_LOW, CLIP_HIGH, out=data)
    if not data.any():
        return data
    h, w = data.shape
    bkg = sep.Background(data, bw=min(mesh, w), bh=min(mesh, h), fw=filter_size, fh=filter_size)
    # One full-frame map alive at a time: the background is subtracted in place.
    bkg.subfrom(data)
    rms = bkg.rms()
    # Constant regions give zero noise; use the global level there so they
    # map to 0 instead of inf.
    fallback = bkg.globalrms if bkg.globalrms > 0 else 1.0
    bad = ~(rms > 0)
    if bad.any():
        rms[bad] = fallback
    data /= rms
    return data
