"""photutils as an in-process extractor (``detect --extractor photutils``).

The same SExtractor configuration keys, mapped onto photutils:
BACK_SIZE/BACK_FILTERSIZE -> ``Background2D`` with SExtractor's mode
estimator (``BACK_TYPE MANUAL``: ``BACK_VALUE``); FILTER_NAME -> the
convolution of the detection image; DETECT_THRESH x the filtered noise ->
``detect_sources`` (DETECT_MINAREA pixels); DEBLEND_NTHRESH/DEBLEND_MINCONT
-> ``deblend_sources`` (exponential levels, as SExtractor); PHOT_AUTOPARAMS,
PHOT_APERTURES, PHOT_FLUXFRAC -> ``SourceCatalog``'s Kron, circular and
flux-radius photometry. Zero-weight pixels are the ``mask`` (never detected,
left out of photometry), the weight map gives the ``error`` array (variance
1/w scaled to the measured noise, as SExtractor does), FLAG_IMAGE bits are
OR'ed over each footprint into IMAFLAGS_ISO. Columns carry SExtractor's
names, as the SEP engine's. Differences: photutils has no CLEAN step (an
emulation of SExtractor's wing test on photutils' segments was tried and
dropped: it lost 3-6 pt of completeness on simulated frames where SEP's
CLEAN loses none), and its Kron radius and flux radius use its own
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
        import skimage  # noqa: F401  (photutils' deblending needs it)
        from photutils.background import Background2D, SExtractorBackground
        from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources
    except ImportError:
        raise ConfigError(_EXTRA) from None
    return Background2D, SExtractorBackground, SourceCatalog, deblend_sources, detect_sources


def _pair(cfg: SexConfig, key: str, default: int) -> tuple[int, int]:
    v = [int(float(x)) for x in cfg.get_list(key, [default])]
    return (v[0], v[1] if len(v) > 1 else v[0])


_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))  # 8-connectivity, each pair once


def _above(values: np.ndarray, saddles: np.ndarray) -> float:
    """A child's flux above its split level (its highest saddle with a sibling)."""
    return float(np.clip(values - saddles.max(), 0, None).sum())


def _branch_contrast(conv: np.ndarray, parents: np.ndarray, labels: np.ndarray, mincont: float) -> np.ndarray:
    """SExtractor's contrast criterion on photutils' deblended segments.

    photutils keeps a child when the flux of its whole watershed basin (the
    parent's diffuse pedestal included) is >= ``mincont`` of the parent's;
    SExtractor when the flux of the branch *above the level where it splits
    off* is. On diffuse light every noise bump's basin carries a share of the
    pedestal and passes photutils' test. Here each child's split level is
    its highest saddle with a sibling (the larger of the two pixel values'
    minimum over adjacent pairs); a child whose flux above it is under
    ``mincont`` of the parent's flux merges into the sibling across that
    saddle, faintest first, until all pass.
    """
    out = labels.copy()
    for pl, sl in enumerate(ndimage.find_objects(parents), start=1):
        if sl is None:
            continue
        inside = parents[sl] == pl
        lab = np.where(inside, out[sl], 0)
        kids = np.unique(lab[inside])
        if len(kids) < 2:
            continue
        v = np.where(inside, conv[sl], -np.inf)
        idx = np.searchsorted(kids, lab)  # 0..k-1 inside the parent
        k = len(kids)
        saddle = np.full((k, k), -np.inf)
        for dy, dx in _SHIFTS:
            h, w = lab.shape
            a = (slice(0, h - dy), slice(max(0, -dx), w - max(0, dx)))
            b = (slice(dy, h), slice(max(0, dx), w - max(0, -dx)))
            ok = inside[a] & inside[b] & (lab[a] != lab[b])
            ia, ib = idx[a][ok], idx[b][ok]
            sv = np.minimum(v[a][ok], v[b][ok])
            np.maximum.at(saddle, (ia, ib), sv)
            np.maximum.at(saddle, (ib, ia), sv)
        total = float(np.clip(v[inside], 0, None).sum())
        kid, vals = idx[inside], v[inside]
        pix = np.split(np.argsort(kid, kind="stable"), np.cumsum(np.bincount(kid, minlength=k))[:-1])
        flux = np.array([_above(vals[pix[i]], saddle[i]) for i in range(k)])
        alive = np.ones(k, bool)
        while alive.sum() > 1:
            weak = np.flatnonzero(alive & (flux < mincont * total))
            if not len(weak):
                break
            a = weak[np.argmin(flux[weak])]
            b = int(np.argmax(saddle[a]))
            if not np.isfinite(saddle[a, b]):
                break  # no sibling touches it (cannot happen in a filled parent)
            pix[b] = np.concatenate([pix[b], pix[a]])
            saddle[b] = np.maximum(saddle[b], saddle[a])
            saddle[:, b] = np.maximum(saddle[:, b], saddle[:, a])
            saddle[b, b] = saddle[a, :] = saddle[:, a] = -np.inf
            alive[a] = False
            # Only b's split level moves: another child's highest saddle with
            # a or b is now its saddle with b, the same value.
            flux[a], flux[b] = np.inf, _above(vals[pix[b]], saddle[b])
        if alive.all():
            continue
        merged = lab[inside]
        for i in np.flatnonzero(alive):
            merged[pix[i]] = kids[i]
        out[sl][inside] = merged
    return out


def photutils_sources(image, config: SexConfig | None = None, weight=None, flag=None, header=None):
    """photutils' own objects for an image and its maps: ``(SourceCatalog,
    SegmentationImage or None, background, error, bad pixels)`` — for users
    who continue in photutils."""
    Background2D, SExtractorBackground, SourceCatalog, deblend_sources, detect_sources = _import()
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
    bw, bh = _pair(cfg, "BACK_SIZE", 64)
    fw, fh = _pair(cfg, "BACK_FILTERSIZE", 3)
    h, w = data.shape
    box = (min(bh, h), min(bw, w))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bkg = Background2D(data, box, filter_size=(fh, fw), mask=bad, bkg_estimator=SExtractorBackground(),
                           exclude_percentile=50.0)
    back = np.full(data.shape, cfg.get_float("BACK_VALUE", 0.0)) if cfg.get("BACK_TYPE", "AUTO").upper() == \
        "MANUAL" else np.asarray(bkg.background)
    rms = np.asarray(bkg.background_rms)
    globalrms = float(bkg.background_rms_median)
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
        return None, None, back, err, bad
    nthresh = int(cfg.get_float("DEBLEND_NTHRESH", 32))
    mincont = cfg.get_float("DEBLEND_MINCONT", 0.005)
    if nthresh > 1 and mincont < 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parents = segm.data.copy()
            segm = deblend_sources(conv, segm, minarea, n_levels=nthresh, contrast=mincont, mode="exponential",
                                   progress_bar=False)
        segm.data = _branch_contrast(conv, parents, segm.data, mincont)
        segm.relabel_consecutive()
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
    return cat, segm, back, err, bad


def detect_photutils(image, config: SexConfig | None = None, weight=None, flag=None, header=None,
                     params=None) -> Detection:
    """Detect and measure with photutils; a :class:`Detection` whose catalogue
    has the SEP engine's SExtractor-named columns."""
    cfg = config or SexConfig()
    cat, segm, back, err, bad = photutils_sources(image, cfg, weight, flag, header)
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
