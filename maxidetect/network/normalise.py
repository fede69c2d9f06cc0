"""Image normalisation as the MaxiMask network expects it.

NaN and infinities become 0, values are clipped to [-500, 80000] (a frame
with pixels beyond that range is first scaled into it), then a
background map is subtracted and the result divided by a noise map, both
from a ~200 px mesh of sigma-clipped statistics (SEP: SExtractor's
clipped mode estimator). The ``background`` choices turn the mesh into maps:

``"maximask"`` (the pretrained network's default): whole meshes centred on
the frame (the leftover ``n % mesh`` pixels split between the two edges),
each mesh's level and noise from MaxiMask's own clipping (3 sigma about
the median until stable; the clipped mean, or 2.5 median - 1.5 mean when
clipping changed the spread by more than 20%), outlier meshes (3 sigma
from the grid's median, 5 rounds) replaced by the mean of their
neighbours, the node grid padded by one node with edge values, a 3x3
median filter that sees zeros beyond the padded grid, and a cubic spline
through the nodes. This is what MaxiMask feeds its network; with it our
masks match MaxiMask's. The outlier step matters: a region of bright
background (or a big galaxy) fills whole meshes, which are then given
their neighbours' level, so the brightness stays in the normalised image
for the network to see. The zeros pull the padded nodes down, so both
maps sag within ~one mesh of the edges: on a 2048 px frame that is the
outer ~100 px, but on a 512 px frame it reaches the centre and the network
calls a quarter of the frame bright background (as MaxiMask does).

``"centred"``: the same meshes, statistics and spline, the padded nodes
filtered without the zeros: no sag, for cut-outs and small frames.

``"sep"``: SEP's own full-frame maps (partial meshes at the right/top,
SExtractor's filter and spline), for models trained with them.

``benchmarks/normalisation.py`` scores the three against simulated truth
and against MaxiMask.
"""

from __future__ import annotations

import numpy as np
import sep

from maxidetect.resources import usable_cpus

__all__ = ["normalise", "normalise_settings", "check_background", "BACKGROUNDS", "CLIP_LOW", "CLIP_HIGH",
           "DEFAULT_MESH"]

CLIP_LOW = -500.0
CLIP_HIGH = 80000.0
DEFAULT_MESH = 200
BACKGROUNDS = ("maximask", "centred", "sep")
#: Map pixels evaluated per band (float64 temporaries stay ~32 MB).
_BAND_PIXELS = 1 << 22


def check_background(background: str) -> str:
    """``background`` if it is one of :data:`BACKGROUNDS`, else ValueError."""
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    return background


def normalise_settings(spec: dict | None) -> dict:
    """:func:`normalise` keyword arguments from a model's manifest
    ``normalisation`` entry; models recorded before the ``background`` key
    existed were trained on SEP's maps."""
    spec = spec or {}
    return {
        "mesh": int(spec.get("background_mesh", DEFAULT_MESH)),
        "filter_size": int(spec.get("background_filter", 3)),
        "background": spec.get("background", "sep"),
    }


def normalise(image, mesh: int = DEFAULT_MESH, filter_size: int = 3, copy: bool = True,
              background: str = "maximask") -> np.ndarray:
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
    background : {"maximask", "centred", "sep"}
        How the mesh statistics become full-frame maps (module docstring).

    Returns
    -------
    ndarray, float32, shape (H, W)
        ``(clip(image) - background) / noise``; all zeros if the image has no
        finite non-zero pixel.
    """
    check_background(background)
    if mesh < 1 or filter_size < 1:
        raise ValueError(f"mesh ({mesh}) and filter_size ({filter_size}) must be >= 1")
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
    _into_clip_range(data)
    np.clip(data, CLIP_LOW, CLIP_HIGH, out=data)
    if not data.any():
        return data
    if background == "sep":
        _normalise_sep(data, mesh, filter_size)
    else:
        _normalise_mesh(data, mesh, filter_size, sag=background == "maximask")
    return data


#: The brightest pixel of a frame scaled into the clip range: a raw 16-bit frame's.
_TOP = 65000.0
#: Frames whose every pixel is smaller in size than this are scaled up first.
_TINY = 1e-12


def _sample_level(data: np.ndarray) -> tuple[float, float]:
    """Median and MAD noise of a frame, from ~262144 of its pixels."""
    sample = data.ravel()[::max(1, data.size // 262144)]
    med = float(np.median(sample))
    return med, 1.4826 * float(np.median(np.abs(sample - med)))


def _into_clip_range(data: np.ndarray) -> None:
    """Scale, in place, a frame with pixels beyond MaxiMask's clip range
    [CLIP_LOW, CLIP_HIGH] (a co-add in electrons, a frame x 100, a
    sky-subtracted frame of large noise) into it: its brightest pixel to
    65000 as on a raw 16-bit frame, its darkest to CLIP_LOW at the lowest
    (each no more than 10^4 noise sigmas from the sky: one absurd pixel must
    not squash the frame; beyond, the clip takes it). The normalised image
    ``(x - back) / noise``, MaxiMask's sagging edges included, does not change
    with the scale, but the clip would have flattened the whole frame (a frame
    x 100 lost every cosmic ray and was called a trail and bright background
    over a fifth of its area) or made star cores plateaus. Where the scale
    would leave the noise under one unit (a huge offset: float32 resolves
    0.004 at 65000), the frame is shifted as well, its darkest pixel to 0.
    Frames in range, what MaxiMask was trained on, are left as they are."""
    lo, hi = float(np.min(data)), float(np.max(data))
    if max(-lo, hi) < _TINY:
        # Noise this small (a frame in erg/s/cm^2/Hz) underflows in float32's squares: brought
        # to about a unit by a power of two (exact), which the normalisation then divides out.
        rms = _sample_level(data)[1]
        if rms > 0:
            data *= np.float32(2.0 ** -np.round(np.log2(rms)))
            lo, hi = float(np.min(data)), float(np.max(data))
    if lo >= CLIP_LOW and hi <= CLIP_HIGH:
        return
    med, rms = _sample_level(data)
    if rms > 0:
        lo, hi = max(lo, med - 1e4 * rms), min(hi, med + 1e4 * rms)
    scale = 1.0
    if hi > 0:
        scale = min(scale, _TOP / hi)
    if lo < 0:
        scale = min(scale, CLIP_LOW / lo)
    if rms * scale >= 1.0 or not hi > lo:
        data *= scale
        return
    data -= lo
    data *= _TOP / (hi - lo)


def _normalise_sep(data: np.ndarray, mesh: int, filter_size: int) -> None:
    h, w = data.shape
    bkg = sep.Background(data, bw=min(mesh, w), bh=min(mesh, h), fw=filter_size, fh=filter_size)
    # One full-frame map alive at a time: the background is subtracted in place.
    bkg.subfrom(data)
    rms = bkg.rms()
    # Constant regions give zero noise; use the global level there so they
    # map to 0 instead of inf.
    fallback = bkg.globalrms if bkg.globalrms > 0 else 1.0
    rms[~(rms > 0)] = fallback
    data /= rms


def _axis_meshes(n: int, mesh: int) -> tuple[int, int, int]:
    """(count, size, offset) of the whole meshes centred on an axis of n px."""
    if n < mesh:
        return 1, n, 0
    count = n // mesh
    return count, mesh, (n - count * mesh) // 2


def _mesh_stats(block: np.ndarray, k: float = 3.0) -> tuple[float, float]:
    """MaxiMask's level and noise of one mesh: clip at ``k`` sigma about the
    median until nothing changes; the clipped mean if the spread stayed
    within 20% of the first, else the mode estimate 2.5 median - 1.5 mean.
    float32 arithmetic, as MaxiMask computes it."""
    values = block.ravel()
    med = np.median(values)
    first = spread = np.std(values)
    kept = values
    keep = np.ones(values.shape, bool)
    while True:
        now = keep & (values >= med - k * spread) & (values <= med + k * spread)
        if np.array_equal(now, keep):
            break
        keep = now
        kept = values[keep]
        med, spread = np.median(kept), np.std(kept)
    mean = np.mean(kept)
    level = mean if 0.8 * first < spread < 1.2 * first else 2.5 * med - 1.5 * mean
    return float(level), float(spread)


def _replace_outliers(grid: np.ndarray, k: float = 3.0, rounds: int = 5) -> np.ndarray:
    """MaxiMask's mesh-grid cleaning: nodes ``k`` sigma from the median of
    the nodes still kept (up to ``rounds`` rounds) are outliers, replaced in
    raster order by the mean of their valid 3x3 neighbours (nodes filled
    earlier count), repeated until every one is filled."""
    grid = np.array(grid, np.float64)
    keep = np.ones(grid.shape, bool)
    for _ in range(rounds):
        med, spread = np.median(grid[keep]), np.std(grid[keep])
        out = keep & ((grid > med + k * spread) | (grid < med - k * spread))
        if not out.any():
            break
        keep &= ~out
    bad = ~keep
    if not bad.any() or keep.sum() == 0:
        return grid
    grid[bad] = np.nan
    h, w = grid.shape
    todo = list(zip(*np.nonzero(bad), strict=True))
    while np.isnan(grid).any():
        filled = False
        for y, x in todo:
            near = grid[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2]
            ok = ~np.isnan(near)
            if ok.any():
                grid[y, x] = near[ok].sum() / ok.sum()
                filled = True
        if not filled:  # nothing valid within reach (cannot happen with a kept node; kept as a guard)
            break
    return grid


_cores = usable_cpus  # a name of its own: tests set it


def _normalise_mesh(data: np.ndarray, mesh: int, filter_size: int, sag: bool) -> None:
    from scipy.interpolate import RectBivariateSpline
    from scipy.ndimage import median_filter

    h, w = data.shape
    ny, by, oy = _axis_meshes(h, mesh)
    nx, bx, ox = _axis_meshes(w, mesh)
    back = np.zeros((ny, nx))
    rms = np.ones((ny, nx))
    cells = [(i, j) for i in range(ny) for j in range(nx)]

    def stats(cell):
        i, j = cell
        block = data[oy + i * by: oy + (i + 1) * by, ox + j * bx: ox + (j + 1) * bx]
        return _mesh_stats(block) if block.any() else (0.0, 1.0)  # zero-filled meshes: level 0, noise 1

    # The meshes' medians (NumPy's partition, which releases the GIL) are most of the time:
    # one thread per core (a GPU node's CPUs would otherwise wait on one).
    workers = min(_cores(), len(cells) // 4)
    if workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            found = list(pool.map(stats, cells))
    else:
        found = [stats(c) for c in cells]
    for (i, j), (level, noise) in zip(cells, found, strict=True):
        back[i, j], rms[i, j] = level, noise
    back, rms = _replace_outliers(back), _replace_outliers(rms)
    # Constant meshes (saturated, overscan) have no noise: use the typical one.
    good = rms > 0
    fallback = float(np.median(rms[good])) if good.any() else 1.0
    rms[~good] = fallback
    # Node centres, one padded node beyond each edge.
    yn = oy + by / 2 + by * (np.arange(ny + 2) - 1.0)
    xn = ox + bx / 2 + bx * (np.arange(nx + 2) - 1.0)
    ky, kx = min(3, ny + 1), min(3, nx + 1)
    maps = []
    for grid in (back, rms):
        nodes = np.pad(grid, 1, mode="edge")
        nodes = median_filter(nodes, size=filter_size, mode="constant" if sag else "nearest", cval=0.0)
        # Along an axis with a single mesh (shorter than two meshes: MaxiMask
        # does not run there) the maps are constant instead of sagging.
        if ny == 1:
            nodes[:] = nodes[1]
        if nx == 1:
            nodes[:] = nodes[:, 1:2]
        maps.append(RectBivariateSpline(yn, xn, nodes, kx=ky, ky=kx))
    xs = np.arange(w)
    rows = max(1, _BAND_PIXELS // w)
    for r0 in range(0, h, rows):
        ys = np.arange(r0, min(h, r0 + rows))
        band = data[r0: r0 + rows]
        band -= maps[0](ys, xs)
        noise = maps[1](ys, xs)
        noise[~(noise > 0)] = fallback
        band /= noise
