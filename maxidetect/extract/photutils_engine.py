"""photutils as an in-process extractor (``detect --extractor photutils``).

The same SExtractor configuration keys, mapped onto photutils:
BACK_SIZE/BACK_FILTERSIZE -> ``Background2D``'s meshes with SExtractor's mode
estimator, median-filtered as SExtractor does (``BACK_TYPE MANUAL``:
``BACK_VALUE``); FILTER_NAME -> the convolution of the detection image;
DETECT_THRESH x the filtered noise -> ``detect_sources`` (DETECT_MINAREA
pixels); DEBLEND_NTHRESH/DEBLEND_MINCONT -> SExtractor's deblending tree
(photutils' own ``deblend_sources`` judges contrast differently, see
``_deblend``) with scikit-image's watershed for the leftover pixels;
CLEAN/CLEAN_PARAM -> SExtractor's wing test (``_clean``); PHOT_AUTOPARAMS,
PHOT_APERTURES, PHOT_FLUXFRAC -> ``SourceCatalog``'s Kron, circular and
flux-radius photometry. Zero-weight pixels are the ``mask`` (never detected,
left out of photometry), the weight map gives the ``error`` array (variance
1/w scaled to the measured noise, as SExtractor does), FLAG_IMAGE bits are
OR'ed over each footprint into IMAFLAGS_ISO. Columns carry SExtractor's
names, as the SEP engine's; Kron radius and flux radius use photutils' own
apertures and masking.
"""

from __future__ import annotations

import warnings

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS
from scipy import ndimage

from maxidetect.errors import ConfigError, MaxidetectWarning
from maxidetect.extract.config import SexConfig, read_conv_file
from maxidetect.extract.sep_engine import Detection, finish_columns, select_columns, weight_noise

__all__ = ["photutils_sources", "detect_photutils"]

_EXTRA = "photutils is not installed: pip install 'maxidetect[photutils]'"


def _import():
    try:
        import skimage  # noqa: F401  (the deblending's watershed)
        from photutils.background import Background2D, BkgZoomInterpolator, SExtractorBackground
        from photutils.segmentation import SourceCatalog, detect_sources
    except ImportError:
        raise ConfigError(_EXTRA) from None
    return Background2D, BkgZoomInterpolator, SExtractorBackground, SourceCatalog, detect_sources


def _pair(cfg: SexConfig, key: str, default: int) -> tuple[int, int]:
    v = [int(float(x)) for x in cfg.get_list(key, [default])]
    return (v[0], v[1] if len(v) > 1 else v[0])


def _sextractor_filter(mesh: np.ndarray, fh: int, fw: int) -> np.ndarray:
    """SExtractor's median filter of a background mesh map: meshes without a
    value take the mean of the nearest valid ones, then each mesh the median
    of a ``fh`` x ``fw`` window that shrinks symmetrically at the edges (a
    corner mesh keeps its own value)."""
    bad = ~np.isfinite(mesh)
    if bad.all():
        return np.zeros_like(mesh)
    if bad.any():
        idx = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
        mesh = mesh[tuple(idx)]
    ny, nx = mesh.shape
    out = np.empty_like(mesh)
    for y in range(ny):
        hy = min(fh // 2, y, ny - 1 - y)
        for x in range(nx):
            hx = min(fw // 2, x, nx - 1 - x)
            out[y, x] = np.median(mesh[y - hy:y + hy + 1, x - hx:x + hx + 1])
    return out


def _deblend(conv: np.ndarray, parents: np.ndarray, thresh: np.ndarray, nthresh: int, mincont: float,
             minarea: int) -> tuple[np.ndarray, np.ndarray]:
    """SExtractor's multi-threshold deblending of the detected segments.

    photutils' ``deblend_sources`` keeps a candidate when the flux of its
    whole watershed basin (the parent's diffuse pedestal included) is at
    least ``mincont`` of the parent's: on diffuse light every noise bump
    passes. SExtractor builds a tree of the pieces above ``nthresh``
    exponentially spaced levels between each segment's threshold and peak
    (pieces under ``minarea`` pixels dropped) and, from the top down, splits
    a node into those of its branches whose flux *above their own level*
    exceeds ``mincont`` of the segment's flux, when at least two do. That
    tree is built here for all segments at once (one labelling per level);
    the pixels the branches leave are assigned by a watershed on the
    filtered image, as photutils does (SExtractor draws them at random from
    the branches' profiles). Returns the labels and the branches (the
    deblended objects' pixels above their split level, same labels, 0
    elsewhere): SExtractor places a deblended object at its branch's
    barycentre, not at that of the pixels it gathered.
    """
    from skimage.segmentation import watershed

    shape = parents.shape
    on = np.flatnonzero(parents)
    none = np.zeros(shape, np.int32)
    if not len(on) or nthresh < 2:
        return parents, none
    par = parents.ravel()[on]
    v = conv.ravel()[on]
    npar = int(par.max()) + 1
    peak = np.full(npar, -np.inf)
    np.maximum.at(peak, par, v)
    t0 = np.full(npar, np.inf)
    np.minimum.at(t0, par, thresh.ravel()[on])
    t0 = np.where(np.isfinite(t0) & (t0 > 0), t0, np.nan)
    value0 = mincont * np.bincount(par, v, npar)
    # Node arrays (index 0..npar-1: the segments themselves, level 0).
    node_parent, node_level = [np.full(npar, -1)], [np.zeros(npar, int)]
    node_flux, node_root = [np.full(npar, np.inf)], [np.arange(npar)]
    levels = []  # per level >= 1: node id of each on-pixel (-1 below it)
    cur = par.copy()
    nnode = npar
    struct = np.ones((3, 3), bool)
    ratio = np.where(np.isfinite(t0), peak / t0, 1.0)
    for k in range(1, nthresh):
        tk = (t0 * ratio ** (k / nthresh))[par]
        above = (cur >= 0) & (v > tk)
        if above.sum() < minarea:
            break
        img = np.zeros(shape, bool)
        img.ravel()[on[above]] = True
        lab, n = ndimage.label(img, structure=struct)
        lon = lab.ravel()[on]
        size = np.bincount(lon, minlength=n + 1)
        valid = size >= minarea
        valid[0] = False
        if not valid.any():
            break
        comps = np.flatnonzero(valid)
        ids = np.full(n + 1, -1)
        ids[comps] = nnode + np.arange(len(comps))
        first = np.full(n + 1, -1)
        sel = np.flatnonzero(lon > 0)
        first[lon[sel[::-1]]] = sel[::-1]  # any pixel of each piece names its parent node
        node_parent.append(cur[first[comps]])
        node_level.append(np.full(len(comps), k))
        node_flux.append(np.bincount(lon, v - tk, n + 1)[comps])
        node_root.append(par[first[comps]])
        cur = np.where(valid[lon], ids[lon], -1).astype(np.int32)  # one per pixel above threshold and level
        levels.append(cur)
        nnode += len(comps)
    if not levels:
        return parents, none
    parent_of = np.concatenate(node_parent)
    level_of = np.concatenate(node_level)
    passing = np.concatenate(node_flux) > value0[np.concatenate(node_root)]
    ok = np.ones(nnode, bool)
    is_object = np.zeros(nnode, bool)
    for k in range(len(levels), 0, -1):  # top down: the sons at level k decide for their parents at k - 1
        sons = np.flatnonzero(level_of == k)
        dads = parent_of[sons]
        np.logical_and.at(ok, dads, ok[sons])
        m = np.bincount(dads, passing[sons], nnode)
        split = m > 1
        is_object[sons[split[dads] & ok[sons] & passing[sons]]] = True
        ok[split] = False
    split_roots = np.flatnonzero(~ok[:npar])
    split_roots = split_roots[split_roots > 0]
    if not len(split_roots):
        return parents, none
    markers = np.zeros(len(on), np.int64)
    for cur in levels:
        hit = (cur >= 0) & is_object[np.maximum(cur, 0)]
        markers[hit] = cur[hit] + 1  # node ids made positive
    region = np.isin(par, split_roots)
    mk = np.zeros(shape, np.int64)
    mk.ravel()[on[region]] = markers[region]
    mask = np.zeros(shape, bool)
    mask.ravel()[on[region]] = True
    ws = watershed(-np.where(mask, conv, 0.0), mk, mask=mask, connectivity=2)
    # Unsplit segments keep their label; the split ones get new labels after all others.
    out = np.where(mask, 0, parents).astype(np.int32)
    pieces = np.unique(ws[mask])
    pieces = pieces[pieces > 0]
    relabel = np.zeros(int(pieces.max()) + 1 if len(pieces) else 1, np.int32)
    relabel[pieces] = npar + np.arange(len(pieces))
    out[mask] = relabel[ws[mask]]
    branches = np.zeros(shape, np.int32)
    branches[mk > 0] = relabel[ws[mk > 0]]
    return out, branches


_CLEAN_ZONE = 10.0  # SExtractor's reach of the test, in units of the two objects' summed semi-major axes


def _clean(conv: np.ndarray, sub: np.ndarray, thresh: np.ndarray, labels: np.ndarray, minarea: int,
           beta: float) -> np.ndarray:
    """SExtractor's CLEAN on photutils' segments: drop a detection that the
    extrapolated wing of a brighter neighbour explains.

    Each object's profile is modelled, as SExtractor does, as
    ``amp * (1 + alpha r^2)^-beta`` (``r`` in its own moment ellipse),
    with ``amp`` from its filtered flux and isophotal area and ``alpha``
    such that the profile meets the detection threshold at the isophote's
    area; a fainter object within the zone is removed when that profile at
    its centre exceeds its ``mthresh`` (the filtered level, above threshold,
    of its ``minarea``-th brightest pixel: how far it stands above the
    threshold over a minimum detection). Moments are weighted by the
    filtered image, the isophotal correction ``abcor`` comes from the
    unfiltered pixels above threshold and above half-peak, all as in
    SExtractor, so counts follow the SEP engine's CLEAN.
    """
    from scipy.spatial import cKDTree

    ids = np.unique(labels)
    ids = ids[ids > 0]
    if len(ids) < 2:
        return labels
    lab = labels.ravel()
    on = np.flatnonzero(lab)
    idx = np.searchsorted(ids, lab[on])
    k = len(ids)
    cv, val, th = conv.ravel()[on], sub.ravel()[on], thresh.ravel()[on]
    yy, xx = np.divmod(on, labels.shape[1])
    cnt = np.bincount(idx, minlength=k).astype(float)
    flux = np.bincount(idx, cv, k)
    w = np.where(flux > 0, flux, np.nan)
    mx, my = np.bincount(idx, cv * xx, k) / w, np.bincount(idx, cv * yy, k) / w
    dx, dy = xx - mx[idx], yy - my[idx]
    x2, y2 = np.bincount(idx, cv * dx * dx, k) / w, np.bincount(idx, cv * dy * dy, k) / w
    xy = np.bincount(idx, cv * dx * dy, k) / w
    det = x2 * y2 - xy * xy
    singular = det < 0.00694  # a line of pixels: SExtractor's regularisation
    x2, y2 = np.where(singular, x2 + 1 / 12, x2), np.where(singular, y2 + 1 / 12, y2)
    det = x2 * y2 - xy * xy
    half = np.sqrt(0.25 * (x2 - y2) ** 2 + xy * xy)
    a = np.sqrt(np.clip(0.5 * (x2 + y2) + half, 0, None))
    b = np.sqrt(np.clip(0.5 * (x2 + y2) - half, 0, None))
    cxx, cyy, cxy = y2 / det, x2 / det, -2 * xy / det
    # Threshold and peak per object: the threshold at its brightest filtered pixel.
    order = np.lexsort((-cv, idx))
    first = np.r_[0, np.cumsum(cnt.astype(int))[:-1]]
    t_obj = th[order[first]]
    peak = np.full(k, -np.inf)
    np.maximum.at(peak, idx, val)
    t2 = (t_obj + peak) / 2
    dnpix = np.bincount(idx, val > t_obj[idx], k)
    area2 = np.bincount(idx, val > t2[idx], k)
    darea = area2 - dnpix
    t1t2 = np.where(t2 > 0, t_obj / np.where(t2 > 0, t2, 1), 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        abcor = np.where(darea < 0, darea, -1.0) / (2 * np.pi * np.log(np.minimum(t1t2, 0.99)) * a * b)
    abcor = np.where((t1t2 > 0) & np.isfinite(abcor), np.minimum(abcor, 1.0), 1.0)
    # mthresh: the minarea-th highest (filtered value - threshold) of each object.
    above = (cv - th)[order]
    rank = np.arange(len(order)) - first[idx[order]]
    m = minarea - 1
    mthresh = np.zeros(k)
    sel = rank == m
    mthresh[idx[order][sel]] = above[sel]
    mthresh[cnt < minarea] = 0.0
    unit = np.pi * a * b
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        amp = flux / (2 * unit * abcor)
        alpha = (np.power(np.clip(amp / t_obj, 0, None), 1.0 / beta) - 1) * unit / cnt
    ok = np.isfinite(mx) & np.isfinite(amp) & np.isfinite(alpha)
    pos = np.c_[np.nan_to_num(mx), np.nan_to_num(my)]
    tree = cKDTree(pos)
    amax = float(np.nanmax(np.where(ok, a, 0))) if ok.any() else 0.0
    alive = ok.copy()
    for i in range(k):  # SExtractor's order: each object tests those after it
        if not ok[i]:
            continue
        near = np.asarray(tree.query_ball_point(pos[i], _CLEAN_ZONE * (a[i] + amax)), int)
        near = near[(near > i) & alive[near]]
        if not len(near):
            continue
        ddx, ddy = pos[i, 0] - pos[near, 0], pos[i, 1] - pos[near, 1]
        near_ok = ddx * ddx + ddy * ddy <= (_CLEAN_ZONE * (a[i] + a[near])) ** 2
        near, ddx, ddy = near[near_ok], ddx[near_ok], ddy[near_ok]
        if not len(near):
            continue
        smaller = flux[near] < flux[i]
        with np.errstate(over="ignore", invalid="ignore"):
            v_i = 1 + alpha[i] * (cxx[i] * ddx * ddx + cyy[i] * ddy * ddy + cxy[i] * ddx * ddy)
            eaten = smaller & (v_i > 1) & (v_i < 1e10) & (amp[i] * np.power(v_i, -beta) > mthresh[near])
            v_j = 1 + alpha[near] * (cxx[near] * ddx * ddx + cyy[near] * ddy * ddy + cxy[near] * ddx * ddy)
            eats = ~smaller & (v_j > 1) & (v_j < 1e10) & (amp[near] * np.power(v_j, -beta) > mthresh[i])
        alive[near[eaten]] = False
        if eats.any():
            alive[i] = False
    alive |= ~ok  # objects the model cannot describe are kept
    if alive.all():
        return labels
    full = np.zeros(int(ids.max()) + 1, labels.dtype)
    full[ids] = ids
    full[ids[~alive]] = 0
    return full[labels]


def photutils_sources(image, config: SexConfig | None = None, weight=None, flag=None, header=None):
    """photutils' own objects for an image and its maps: ``(SourceCatalog,
    SegmentationImage or None, background, error, bad pixels)`` — for users
    who continue in photutils."""
    return _sources(image, config, weight, header)[:5]


def _sources(image, config, weight, header):
    """photutils_sources' tuple, then the deblended objects' branches and the
    filtered image (for SExtractor's positions of deblended objects)."""
    Background2D, BkgZoomInterpolator, SExtractorBackground, SourceCatalog, detect_sources = _import()
    cfg = config or SexConfig()
    data = np.asarray(image, np.float64)
    if data.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {data.shape}")
    bad = ~np.isfinite(data)
    data = np.where(bad, 0.0, data)
    wtype = cfg.get("WEIGHT_TYPE", "NONE").upper() if weight is not None else "NONE"
    wtype = "MAP_WEIGHT" if weight is not None and wtype == "NONE" else wtype
    wmap = None
    if weight is not None:
        wmap = np.asarray(weight, np.float64)
        if wmap.shape != data.shape:
            raise ValueError(f"weight map shape {wmap.shape} != image shape {data.shape}")
        wmap = np.where(np.isfinite(wmap), wmap, 0.0 if wtype == "MAP_WEIGHT" else np.inf)
        wthresh = cfg.get_float("WEIGHT_THRESH", 0.0 if wtype == "MAP_WEIGHT" else np.inf)
        bad |= (wmap <= wthresh) if wtype == "MAP_WEIGHT" else (wmap >= wthresh)
    if bad.all():  # no usable pixel (all blank, or all zero weight): nothing to detect, as in the SEP engine
        zero = np.zeros(data.shape)
        return None, None, zero, np.ones(data.shape), bad, None, zero
    bw, bh = _pair(cfg, "BACK_SIZE", 64)
    fw, fh = _pair(cfg, "BACK_FILTERSIZE", 3)
    h, w = data.shape
    box = (min(bh, h), min(bw, w))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # photutils' meshes, filtered as SExtractor does (its window shrinks
        # symmetrically at the map's edges; photutils' pads with NaN, which
        # moved the edge meshes by up to 1.5 sigma on nebulous frames).
        bkg = Background2D(data, box, filter_size=(1, 1), mask=bad, bkg_estimator=SExtractorBackground(),
                           exclude_percentile=50.0)
        mesh = _sextractor_filter(np.asarray(bkg.background_mesh, np.float64), fh, fw)
        rmesh = _sextractor_filter(np.asarray(bkg.background_rms_mesh, np.float64), fh, fw)
        zoom = BkgZoomInterpolator()
        kw = {"shape": data.shape, "box_size": box, "dtype": np.float64}
        rms = np.asarray(zoom(rmesh, **kw))
        manual = cfg.get("BACK_TYPE", "AUTO").upper() == "MANUAL"
        back = np.full(data.shape, cfg.get_float("BACK_VALUE", 0.0)) if manual else np.asarray(zoom(mesh, **kw))
    globalrms = float(np.median(rmesh))
    # Without weights the threshold is DETECT_THRESH x the global noise, as in
    # SExtractor and the SEP engine (photutils' local rms map: +20% objects on
    # simulated frames); photometry errors keep the local map.
    err = weight_noise(globalrms, wmap, wtype, bad, (bw, bh, fw, fh))
    err = np.broadcast_to(err, data.shape).astype(np.float64) if np.isscalar(err) else err
    sub = data - back
    sub[bad] = 0.0
    kernel = read_conv_file(cfg.resolve("FILTER_NAME", "default.conv")) if cfg.get_bool("FILTER", True) else None
    # SExtractor's threshold: DETECT_THRESH x sqrt(variance filtered like the
    # image); unusable pixels have a huge noise, so nothing within the
    # kernel's reach of them is detected (as in the SEP engine).
    noisy = np.where(bad, 1e12 * globalrms, err)
    if kernel is not None:
        k = kernel.astype(np.float64)
        conv = ndimage.convolve(sub, k, mode="constant", cval=0.0)
        detnoise = np.sqrt(ndimage.convolve(noisy**2, k, mode="constant", cval=0.0))
    else:
        conv, detnoise = sub, noisy
    thresh_items = cfg.get_list("DETECT_THRESH", ["1.5"])
    if len(thresh_items) > 1:
        raise ConfigError("DETECT_THRESH in mag/arcsec2 is not supported by the photutils engine")
    threshold = float(thresh_items[0]) * detnoise
    minarea = int(cfg.get_float("DETECT_MINAREA", 5))
    segm = detect_sources(conv, threshold, minarea, mask=bad)
    if segm is None:
        return None, None, back, err, bad, None, conv
    nthresh = int(cfg.get_float("DEBLEND_NTHRESH", 32))
    mincont = cfg.get_float("DEBLEND_MINCONT", 0.005)
    branches = np.zeros(segm.data.shape, np.int32)
    if nthresh > 1 and mincont < 1:
        segm.data, branches = _deblend(conv, segm.data, threshold, nthresh, mincont, minarea)
    if cfg.get_bool("CLEAN", True):
        segm.data = _clean(conv, sub, threshold, segm.data, minarea, cfg.get_float("CLEAN_PARAM", 1.0))
        if not segm.data.any():
            return None, None, back, err, bad, None, conv
    segm.relabel_consecutive()
    branches = np.where(branches > 0, segm.data, 0)  # a branch pixel carries its object's label
    kf, kmin = (cfg.get_floats("PHOT_AUTOPARAMS", [2.5, 3.5]) + [3.5])[:2]
    wcs = None
    if header is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                wcs = WCS(header, naxis=2)
                wcs = wcs if wcs.has_celestial else None
            except Exception:  # an unusable WCS: no sky coordinates, as with none
                wcs = None
    phot_err = rms if wmap is None else err
    cat = SourceCatalog(sub, segm, convolved_data=conv, error=np.where(bad, 0.0, phot_err), mask=bad, background=back,
                        wcs=wcs, kron_params=(kf, max(kmin, 1e-3), 0.0))  # photutils needs a radius > 0
    return cat, segm, back, err, bad, branches, conv


def detect_photutils(image, config: SexConfig | None = None, weight=None, flag=None, header=None,
                     params=None) -> Detection:
    """Detect and measure with photutils; a :class:`Detection` whose catalogue
    has the SEP engine's SExtractor-named columns."""
    cfg = config or SexConfig()
    cat, segm, back, err, bad, branches, conv = _sources(image, cfg, weight, header)
    data = np.nan_to_num(np.asarray(image, np.float64))
    zp = cfg.get_float("MAG_ZEROPOINT", 0.0)
    t = Table()
    if cat is None:
        seg = np.zeros(data.shape, np.int32)
        ids = np.zeros(0, int)
        for name in ("NUMBER", "X_IMAGE", "Y_IMAGE", "FLUX_AUTO", "FLUXERR_AUTO", "MAG_AUTO", "FLUX_RADIUS"):
            t[name] = np.zeros(0)
        t["FLAGS"] = np.zeros(0, np.int16)
        t = finish_columns(t, seg, ids, bad, flag)
        return Detection(catalog=t, segmentation=seg, background=back, rms=np.broadcast_to(err, data.shape),
                         globalrms=float(np.median(err)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = np.asarray(segm.data, np.int32)
        ids = np.asarray(cat.labels)
        x, y = np.asarray(cat.x_centroid), np.asarray(cat.y_centroid)
        if branches.any():  # deblended objects sit at their branch's barycentre, as in SExtractor
            has = np.bincount(branches.ravel(), minlength=len(ids) + 1)[ids] > 0
            cy, cx = np.array(ndimage.center_of_mass(np.clip(conv, 0, None), branches, ids[has])).T.reshape(2, -1)
            x, y = x.copy(), y.copy()
            x[has], y[has] = cx, cy
        t["NUMBER"] = ids.astype(np.int32)
        t["X_IMAGE"], t["Y_IMAGE"] = x + 1.0, y + 1.0
        t["X2_IMAGE"], t["Y2_IMAGE"] = np.asarray(cat.covariance_xx), np.asarray(cat.covariance_yy)
        t["XY_IMAGE"] = np.asarray(cat.covariance_xy)
        t["A_IMAGE"], t["B_IMAGE"] = np.asarray(cat.semimajor_axis), np.asarray(cat.semiminor_axis)
        t["THETA_IMAGE"] = np.asarray(cat.orientation)
        t["ISOAREA_IMAGE"] = np.asarray(cat.area).astype(np.int32)
        t["FLUX_ISO"] = np.asarray(cat.segment_flux)
        t["FLUX_MAX"] = np.asarray(cat.max_value)
        t["KRON_RADIUS"] = np.asarray(cat.kron_radius)
        fa, fea = np.nan_to_num(np.asarray(cat.kron_flux)), np.nan_to_num(np.asarray(cat.kron_flux_err))
        t["FLUX_AUTO"], t["FLUXERR_AUTO"] = fa, fea
        with np.errstate(divide="ignore", invalid="ignore"):
            pos = fa > 0
            t["MAG_AUTO"] = np.where(pos, zp - 2.5 * np.log10(np.where(pos, fa, 1.0)), 99.0)
            t["MAGERR_AUTO"] = np.where(pos, 1.0857 * fea / np.where(pos, fa, 1.0), 99.0)
        diam = cfg.get_floats("PHOT_APERTURES", [5.0])
        fl = [np.nan_to_num(np.asarray(cat.circular_photometry(d / 2.0)[0])) for d in diam]
        fe = [np.nan_to_num(np.asarray(cat.circular_photometry(d / 2.0)[1])) for d in diam]
        fl, fe = np.stack(fl, 1), np.stack(fe, 1)
        t["FLUX_APER"] = fl[:, 0] if fl.shape[1] == 1 else fl
        t["FLUXERR_APER"] = fe[:, 0] if fe.shape[1] == 1 else fe
        with np.errstate(divide="ignore", invalid="ignore"):
            mag = np.where(fl > 0, zp - 2.5 * np.log10(np.where(fl > 0, fl, 1.0)), 99.0)
        t["MAG_APER"] = mag[:, 0] if mag.shape[1] == 1 else mag
        fracs = cfg.get_floats("PHOT_FLUXFRAC", [0.5])
        fr = np.stack([np.nan_to_num(np.asarray(cat.flux_radius(f))) for f in fracs], 1)
        t["FLUX_RADIUS"] = fr[:, 0] if fr.shape[1] == 1 else fr
        t["XWIN_IMAGE"] = np.asarray(cat.x_centroid_win) + 1.0
        t["YWIN_IMAGE"] = np.asarray(cat.y_centroid_win) + 1.0
        t["BACKGROUND"] = np.asarray(cat.background_centroid)
        if cat.wcs is not None:
            sky = cat.sky_centroid
            t["ALPHA_J2000"], t["DELTA_J2000"] = sky.icrs.ra.deg, sky.icrs.dec.deg
        else:
            t["ALPHA_J2000"] = t["DELTA_J2000"] = np.full(len(ids), np.nan)
    satur = cfg.get_float("SATUR_LEVEL", 50000.0)
    if header is not None and cfg.get("SATUR_KEY") in header:
        try:
            satur = float(header[cfg.get("SATUR_KEY")])
        except (TypeError, ValueError):
            pass
    flags = np.zeros(len(ids), np.int16)
    peak_raw = np.asarray(ndimage.maximum(data, seg, ids)) if len(ids) else np.zeros(0)
    flags[peak_raw >= satur] |= 4
    h, w = data.shape
    bb = cat.bbox_xmin, cat.bbox_xmax, cat.bbox_ymin, cat.bbox_ymax
    flags[(np.asarray(bb[0]) == 0) | (np.asarray(bb[1]) == w - 1) | (np.asarray(bb[2]) == 0)
          | (np.asarray(bb[3]) == h - 1)] |= 8
    t["FLAGS"] = flags
    t = finish_columns(t, seg, ids, bad, flag)
    if params is not None:
        t = select_columns(t, params)
    if len(ids) and (np.asarray(cat.labels) != np.arange(1, len(ids) + 1)).any():
        warnings.warn("photutils labels are not consecutive", MaxidetectWarning, stacklevel=2)
    return Detection(catalog=t, segmentation=seg, background=back, rms=np.asarray(err),
                     globalrms=float(np.median(err)))
