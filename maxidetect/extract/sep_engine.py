"""The SEP engine: SExtractor's detection steps in process.

Background (bad pixels excluded) -> convolution filter -> threshold in units
of the noise -> minimum area -> multi-threshold deblending and cleaning ->
measurements with SExtractor's column names and conventions (1-based pixel
positions, THETA in degrees, magnitudes 99 for non-positive fluxes).

Why ``filter_type="conv"``: SEP 1.4.1's matched filter (its default when
``err`` is an array) lowers the effective threshold of the *whole image* once
a few hundred masked (or near-infinite-noise) pixels are present, which
doubled detections in our tests (``benchmarks/results/sep_matched_filter.md``).
SExtractor itself filters by plain convolution and compares with
DETECT_THRESH x sigma, so the conv filter is also the faithful choice.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import sep
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from scipy import ndimage

from maxidetect.classes import CLASSES
from maxidetect.errors import ConfigError, MaxidetectWarning
from maxidetect.extract.config import SexConfig, read_conv_file
from maxidetect.extract.segments import Segments
from maxidetect.maps.frame import SEP_PIXSTACK, sep_extract

__all__ = ["Detection", "detect", "SUPPORTED_PARAMS", "finish_columns", "select_columns", "weight_noise"]

# Noise of unusable pixels, in units of the global rms: large enough that
# nothing within the filter's reach is detected, small enough that its
# square stays finite in float32.
_BAD_NOISE = 1e12

_UNITS = {
    "X_IMAGE": "pix", "Y_IMAGE": "pix", "XWIN_IMAGE": "pix", "YWIN_IMAGE": "pix",
    "ALPHA_J2000": "deg", "DELTA_J2000": "deg", "A_IMAGE": "pix", "B_IMAGE": "pix",
    "THETA_IMAGE": "deg", "ISOAREA_IMAGE": "pix2", "X2_IMAGE": "pix2", "Y2_IMAGE": "pix2",
    "XY_IMAGE": "pix2", "ERRX2_IMAGE": "pix2", "ERRY2_IMAGE": "pix2", "ERRXY_IMAGE": "pix2",
    "FLUX_RADIUS": "pix", "MAG_AUTO": "mag", "MAGERR_AUTO": "mag", "MAG_APER": "mag",
    "MAGERR_APER": "mag",
}
_DESCR = {
    "NUMBER": "Running object number",
    "X_IMAGE": "Object position along x", "Y_IMAGE": "Object position along y",
    "XWIN_IMAGE": "Windowed position estimate along x", "YWIN_IMAGE": "Windowed position estimate along y",
    "ALPHA_J2000": "Right ascension of barycenter (J2000)", "DELTA_J2000": "Declination of barycenter (J2000)",
    "X2_IMAGE": "Variance along x", "Y2_IMAGE": "Variance along y", "XY_IMAGE": "Covariance between x and y",
    "ERRX2_IMAGE": "Variance of position along x", "ERRY2_IMAGE": "Variance of position along y",
    "ERRXY_IMAGE": "Covariance of position between x and y",
    "A_IMAGE": "Profile RMS along major axis", "B_IMAGE": "Profile RMS along minor axis",
    "THETA_IMAGE": "Position angle (CCW/x)", "ISOAREA_IMAGE": "Isophotal area above Analysis threshold",
    "FLUX_ISO": "Isophotal flux", "FLUX_MAX": "Peak flux above background",
    "FLUX_APER": "Flux within fixed circular aperture(s)", "FLUXERR_APER": "RMS error for aperture flux(es)",
    "MAG_APER": "Fixed aperture magnitude(s)", "MAGERR_APER": "RMS error for aperture magnitude(s)",
    "KRON_RADIUS": "Kron apertures in units of A or B", "FLUX_AUTO": "Flux within a Kron-like elliptical aperture",
    "FLUXERR_AUTO": "RMS error for AUTO flux", "MAG_AUTO": "Kron-like elliptical aperture magnitude",
    "MAGERR_AUTO": "RMS error for AUTO magnitude", "FLUX_RADIUS": "Fraction-of-light radii",
"BACKGROUND": "Background at centroid position",
    "FLAGS": "Extraction flags", "FLAGS_WEIGHT": "Weighted extraction flags",
    "IMAFLAGS_ISO": "FLAG-image flags OR'ed over the iso. profile",
    "NIMAFLAGS_ISO": "Number of flagged pixels entering IMAFLAGS_ISO", "EXT_NUMBER": "FITS extension number",
}
SUPPORTED_PARAMS = tuple(_DESCR)


@dataclass
class Detection:
    """One image's detections: the catalogue and the maps behind it."""

    catalog: Table
    segmentation: np.ndarray
    background: np.ndarray
    rms: np.ndarray
    globalrms: float


def _pair(values: list[float], what: str) -> tuple[int, int]:
    if not values:
        raise ConfigError(f"{what} is empty")
    a = int(values[0])
    return a, int(values[1]) if len(values) > 1 else a


def detect(
    image,
    config: SexConfig | None = None,
    weight=None,
    flag=None,
    header: fits.Header | None = None,
    params: list[str] | None = None,
) -> Detection:
    """Detect and measure sources in a 2-D image with SExtractor's settings.

    Parameters
    ----------
    image : array, shape (H, W)
        Raw image (any numeric dtype, any byte order).
    config : SexConfig
        DETECT_THRESH, DETECT_MINAREA, FILTER/FILTER_NAME, DEBLEND_NTHRESH,
        DEBLEND_MINCONT, CLEAN/CLEAN_PARAM, BACK_TYPE/BACK_VALUE, BACK_SIZE,
        BACK_FILTERSIZE, BACK_FILTTHRESH, WEIGHT_TYPE, WEIGHT_THRESH,
        PHOT_APERTURES, PHOT_AUTOPARAMS, PHOT_FLUXFRAC, MASK_TYPE,
        SATUR_LEVEL/SATUR_KEY, GAIN/GAIN_KEY, MAG_ZEROPOINT.
    weight : array, shape (H, W), optional
        Interpreted per WEIGHT_TYPE (MAP_WEIGHT if not set); pixels at or
        below WEIGHT_THRESH (above it for MAP_RMS/MAP_VAR) are never detected.
    flag : int array, shape (H, W), optional
        FLAG_IMAGE: OR'ed over each footprint into IMAFLAGS_ISO.
    header : Header, optional
        For the WCS (ALPHA/DELTA_J2000), SATUR_KEY and GAIN_KEY.
    params : list of str, optional
        Output columns (default: all supported).
    """
    cfg = config or SexConfig()
    data = np.asarray(image)
    if data.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {data.shape}")
    data = data.astype(np.float64)  # native byte order for SEP
    bad = ~np.isfinite(data)
    data[bad] = 0.0
    wtype = cfg.get("WEIGHT_TYPE", "NONE").upper() if weight is not None else "NONE"
    if weight is not None and wtype == "NONE":
        wtype = "MAP_WEIGHT"
    wmap = None
    if weight is not None:
        wmap = np.asarray(weight, dtype=np.float64)
        if wmap.shape != data.shape:
            raise ValueError(f"weight map shape {wmap.shape} != image shape {data.shape}")
        wmap = np.where(np.isfinite(wmap), wmap, 0.0 if wtype == "MAP_WEIGHT" else np.inf)
        wthresh = cfg.get_float("WEIGHT_THRESH", 0.0 if wtype == "MAP_WEIGHT" else np.inf)
        bad |= (wmap <= wthresh) if wtype == "MAP_WEIGHT" else (wmap >= wthresh)
    if flag is not None:
        flag = np.asarray(flag)
        if flag.shape != data.shape:
            raise ValueError(f"flag map shape {flag.shape} != image shape {data.shape}")
        if not np.issubdtype(flag.dtype, np.integer):
            raise ValueError(f"flag map must hold integers, got {flag.dtype}")

    # -- background
    if cfg.get("BACK_TYPE", "AUTO").upper() == "MANUAL":
        value = cfg.get_float("BACK_VALUE", 0.0)
        bkg_bw = bkg_bh = 64
        bkg_fw = bkg_fh = 3
        bkg = sep.Background(data, mask=bad, bw=bkg_bw, bh=bkg_bh, fw=bkg_fw, fh=bkg_fh)
        back = np.full(data.shape, value)
    else:
        bw, bh = _pair(cfg.get_floats("BACK_SIZE", [64]), "BACK_SIZE")
        fw, fh = _pair(cfg.get_floats("BACK_FILTERSIZE", [3]), "BACK_FILTERSIZE")
        bkg_bw, bkg_bh, bkg_fw, bkg_fh = bw, bh, fw, fh
        bkg = sep.Background(data, mask=bad, bw=bw, bh=bh, fw=fw, fh=fh,
                             fthresh=cfg.get_float("BACK_FILTTHRESH", 0.0))
        back = bkg.back()
    globalrms = float(bkg.globalrms)
    sub = data - back
    sub[bad] = 0.0

    # -- noise. SExtractor turns a weight map into variance 1/w scaled so
    # that its background matches the image's measured noise (median over
    # the background meshes of sigma/sqrt(variance background)).
    err = weight_noise(globalrms, wmap, wtype, bad, (bkg_bw, bkg_bh, bkg_fw, bkg_fh))
    if bad.any():
        # Unusable pixels get huge (finite: inf x a zero tap is NaN) noise
        # rather than SEP's mask, which would also blank them in the filtered
        # image and so widen the dead zone by one more kernel radius.
        if np.isscalar(err):
            err = np.full(data.shape, err)
        err[bad] = _BAD_NOISE * globalrms

    # -- detection
    thresh_items = cfg.get_list("DETECT_THRESH", ["1.5"])
    if len(thresh_items) > 1:
        raise ConfigError("DETECT_THRESH in mag/arcsec2 (<threshold>,<ZP>) is not supported by the SEP engine")
    thresh = float(thresh_items[0])
    kernel = read_conv_file(cfg.resolve("FILTER_NAME", "default.conv")) if cfg.get_bool("FILTER", True) else None
    # SEP thresholds each pixel at thresh x err[pixel]; SExtractor at
    # DETECT_THRESH x sqrt(variance convolved with the filter, zero beyond the
    # edges). Hand SEP the latter so both engines compare the filtered image
    # with the same threshold map: infinite within the kernel's reach of a
    # bad pixel, lower where the kernel leaves the image.
    detnoise = err
    if kernel is not None and not np.isscalar(err):
        detnoise = np.sqrt(ndimage.convolve(err**2, kernel.astype(np.float64), mode="constant", cval=0.0))
    objs, seg = sep_extract(
        sub, thresh, pixstack=max(int(cfg.get_float("MEMORY_PIXSTACK", SEP_PIXSTACK)), 1),
        sub_object_limit=max(int(cfg.get_float("MEMORY_OBJSTACK", 3000)), 4096), err=detnoise,
        minarea=int(cfg.get_float("DETECT_MINAREA", 5)),
        filter_kernel=kernel, filter_type="conv",
        deblend_nthresh=int(cfg.get_float("DEBLEND_NTHRESH", 32)),
        deblend_cont=cfg.get_float("DEBLEND_MINCONT", 0.005),
        clean=cfg.get_bool("CLEAN", True), clean_param=cfg.get_float("CLEAN_PARAM", 1.0),
        segmentation_map=True,
    )
    cat = _measure(objs, seg, sub, back, err, bad, flag, cfg, header, globalrms)
    if params is not None:
        cat = select_columns(cat, params)
    return Detection(catalog=cat, segmentation=seg, background=back, rms=bkg.rms(), globalrms=globalrms)


def weight_noise(globalrms: float, wmap, wtype: str, bad, mesh) -> float | np.ndarray:
    """The noise map of a weight map, as SExtractor makes it: variance 1/w
    (MAP_WEIGHT) scaled so that its background matches the image's measured
    noise (the ratio of the mesh medians), or the map itself (MAP_RMS,
    MAP_VAR); the global rms without a map."""
    if wmap is None:
        return globalrms
    good = ~bad
    if wtype == "MAP_WEIGHT":
        var = np.ones(wmap.shape)
        var[good] = 1.0 / wmap[good]
        sigfac = globalrms
        if good.any() and not np.all(var[good] == var[good][0]):
            # Ratio of the mesh medians (SEP exposes no mesh arrays);
            # exact for 0/1 maps, where the variance background is 1.
            bw, bh, fw, fh = mesh
            vb = sep.Background(var, mask=bad, bw=bw, bh=bh, fw=fw, fh=fh)
            if vb.globalback > 0:
                sigfac = globalrms / np.sqrt(vb.globalback)
        elif good.any():
            sigfac = globalrms / np.sqrt(var[good][0])
        return sigfac * np.sqrt(var)
    if wtype in ("MAP_RMS", "MAP_VAR"):
        return np.sqrt(wmap) if wtype == "MAP_VAR" else wmap.copy()
    raise ConfigError(f"WEIGHT_TYPE {wtype} not supported in process (use MAP_WEIGHT, MAP_RMS, MAP_VAR)")


def _header_value(cfg: SexConfig, header, key_name: str, value_name: str, default: float) -> float:
    key = cfg.get(key_name)
    if header is not None and key and key in header:
        try:
            return float(header[key])
        except (TypeError, ValueError):
            pass
    return cfg.get_float(value_name, default)


def _measure(objs, seg, sub, back, err, bad, flag, cfg, header, globalrms) -> Table:
    n = len(objs)
    ids = np.arange(1, n + 1, dtype=np.int32)
    x, y = objs["x"], objs["y"]
    a, b, theta = objs["a"], objs["b"], objs["theta"]
    # SEP gives a=b=0 for some single-line objects; keep apertures finite.
    good_shape = np.isfinite(a) & np.isfinite(b) & np.isfinite(theta) & (a > 0) & (b > 0)
    a_s = np.where(good_shape, a, 0.5)
    b_s = np.where(good_shape, np.minimum(b, a), 0.5)
    # float32 theta can round just past pi/2, which SEP rejects.
    theta_s = np.clip(np.where(good_shape, theta, 0.0), -np.pi / 2, np.pi / 2)
    gain = _header_value(cfg, header, "GAIN_KEY", "GAIN", 0.0)
    satur = _header_value(cfg, header, "SATUR_KEY", "SATUR_LEVEL", 50000.0)
    zp = cfg.get_float("MAG_ZEROPOINT", 0.0)
    mask_type = cfg.get("MASK_TYPE", "CORRECT").upper()
    segkw = {} if mask_type == "NONE" else {"segmap": seg, "seg_id": ids}
    mask = bad if bad.any() else None
    gkw = {"gain": gain} if gain > 0 else {}

    t = Table()
    t["NUMBER"] = ids
    t["X_IMAGE"] = x + 1.0
    t["Y_IMAGE"] = y + 1.0
    t["X2_IMAGE"], t["Y2_IMAGE"], t["XY_IMAGE"] = objs["x2"], objs["y2"], objs["xy"]
    t["ERRX2_IMAGE"], t["ERRY2_IMAGE"], t["ERRXY_IMAGE"] = objs["errx2"], objs["erry2"], objs["errxy"]
    t["A_IMAGE"], t["B_IMAGE"] = a, b
    t["THETA_IMAGE"] = np.degrees(theta)
    t["ISOAREA_IMAGE"] = objs["npix"].astype(np.int32)
    t["FLUX_ISO"] = objs["flux"]
    t["FLUX_MAX"] = objs["peak"]

    flags = np.zeros(n, np.int16)
    flags[(objs["flag"] & sep.OBJ_MERGED) != 0] |= 2
    flags[(objs["flag"] & sep.OBJ_TRUNC) != 0] |= 8
    flags[(objs["flag"] & sep.OBJ_DOVERFLOW) != 0] |= 64
    if n:
        iy = np.clip(np.round(y).astype(int), 0, sub.shape[0] - 1)
        ix = np.clip(np.round(x).astype(int), 0, sub.shape[1] - 1)
        peak_raw = Segments(seg, ids).max(sub + back)
        flags[np.asarray(peak_raw) >= satur] |= 4
    else:
        iy = ix = np.zeros(0, int)

    kf, kmin = (cfg.get_floats("PHOT_AUTOPARAMS", [2.5, 3.5]) + [3.5])[:2]
    if n:
        kr, kflag = sep.kron_radius(sub, x, y, a_s, b_s, theta_s, 6.0, mask=mask, **segkw)
        kr = np.where(np.isfinite(kr), kr, 0.0)
        # KRON_RADIUS is SExtractor's aperture size: Kron factor x first moment,
        # at least the minimum radius (both in units of A and B).
        kr = np.maximum(kf * kr, kmin)
        fa, fea, faflag = sep.sum_ellipse(sub, x, y, a_s, b_s, theta_s, kr, err=err, mask=mask,
                                          subpix=1, **segkw, **gkw)
        flags[((faflag | kflag) & (sep.APER_TRUNC | sep.APER_HASMASKED)) != 0] |= 16
        # 16 also when the 6-sigma Kron estimation ellipse leaves the image.
        c, s_ = np.cos(theta_s), np.sin(theta_s)
        dx = 6.0 * np.sqrt((a_s * c) ** 2 + (b_s * s_) ** 2)
        dy = 6.0 * np.sqrt((a_s * s_) ** 2 + (b_s * c) ** 2)
        h, w = sub.shape
        out = (x - dx < -0.5) | (x + dx > w - 0.5) | (y - dy < -0.5) | (y + dy > h - 0.5)
        flags[out] |= 16
    else:
        kr = fa = fea = np.zeros(0)
    t["KRON_RADIUS"] = kr
    t["FLUX_AUTO"] = fa
    t["FLUXERR_AUTO"] = fea
    with np.errstate(divide="ignore", invalid="ignore"):
        pos = fa > 0
        t["MAG_AUTO"] = np.where(pos, zp - 2.5 * np.log10(np.where(pos, fa, 1.0)), 99.0)
        t["MAGERR_AUTO"] = np.where(pos, 1.0857 * fea / np.where(pos, fa, 1.0), 99.0)

    diam = cfg.get_floats("PHOT_APERTURES", [5.0])
    if n and diam:
        fl, fe = [], []
        for d in diam:
            f1, e1, cflag = sep.sum_circle(sub, x, y, d / 2.0, err=err, mask=mask, subpix=5, **gkw)
            flags[(cflag & (sep.APER_TRUNC | sep.APER_HASMASKED)) != 0] |= 16
            fl.append(f1)
            fe.append(e1)
        fl, fe = np.stack(fl, 1), np.stack(fe, 1)
    else:
        fl = fe = np.zeros((n, max(len(diam), 1)))
    t["FLUX_APER"] = fl[:, 0] if fl.shape[1] == 1 else fl
    t["FLUXERR_APER"] = fe[:, 0] if fe.shape[1] == 1 else fe
    with np.errstate(divide="ignore", invalid="ignore"):
        t["MAG_APER"] = np.where(fl > 0, zp - 2.5 * np.log10(np.where(fl > 0, fl, 1.0)), 99.0)[:, 0] \
            if fl.shape[1] == 1 else np.where(fl > 0, zp - 2.5 * np.log10(np.where(fl > 0, fl, 1.0)), 99.0)

    fracs = cfg.get_floats("PHOT_FLUXFRAC", [0.5])
    if n:
        ok = fa > 0
        fr = np.zeros((n, len(fracs)))
        if ok.any():
            r, _ = sep.flux_radius(sub, x[ok], y[ok], 6.0 * a_s[ok], fracs, normflux=fa[ok], mask=mask, subpix=5)
            fr[ok] = np.asarray(r).reshape(ok.sum(), len(fracs))
        r_half = sep.flux_radius(sub, x, y, 6.0 * a_s, 0.5, normflux=np.where(ok, fa, 1.0), mask=mask,
                                 subpix=5)[0] if ok.any() else np.zeros(n)
        sig = np.where(ok & (r_half > 0), 2.0 * r_half / 2.35482, 1.0)
        xw, yw, _ = sep.winpos(sub, x, y, sig, mask=mask)
    else:
        fr = np.zeros((0, len(fracs)))
        xw = yw = np.zeros(0)
    t["FLUX_RADIUS"] = fr[:, 0] if len(fracs) == 1 else fr
    t["XWIN_IMAGE"], t["YWIN_IMAGE"] = xw + 1.0, yw + 1.0
    t["BACKGROUND"] = back[iy, ix] if n else np.zeros(0)

    ra = dec = np.full(n, np.nan)
    if header is not None and n:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                w = WCS(header, naxis=2)
                if w.has_celestial:
                    ra, dec = w.all_pix2world(t["X_IMAGE"], t["Y_IMAGE"], 1)
            except Exception:  # an unusable WCS leaves NaN, as a missing one
                pass
    t["ALPHA_J2000"], t["DELTA_J2000"] = ra, dec

    t["FLAGS"] = flags
    return finish_columns(t, seg, ids, bad, flag)


def finish_columns(t: Table, seg, ids, bad, flag) -> Table:
    """FLAGS_WEIGHT, IMAFLAGS_ISO, NIMAFLAGS_ISO from the footprints, and
    SExtractor's units and descriptions (shared by the in-process engines)."""
    n = len(ids)
    # FLAGS_WEIGHT 2: a zero-weight pixel touches the footprint (SExtractor's
    # meaning, checked against the binary in the tests).
    fw = np.zeros(n, np.int16)
    if n and bad.any():
        grown = ndimage.grey_dilation(seg, size=(3, 3))
        touch = Segments(grown, ids).max(bad)
        fw[np.asarray(touch, bool)] |= 2
    t["FLAGS_WEIGHT"] = fw
    imaf = np.zeros(n, np.int32)
    nimaf = np.zeros(n, np.int32)
    if flag is not None and n:
        segs = Segments(seg, ids)
        f = segs.values(flag).astype(np.int64)
        # IMAFLAGS_ISO: the OR of the flags over the isophote, bit by bit
        for c in CLASSES:
            if c.bit:
                hit = np.bincount(segs.labels, weights=(f & c.bit) != 0, minlength=segs.n_labels)[segs.ids]
                imaf[hit > 0] |= c.bit
        nimaf = np.bincount(segs.labels, weights=f != 0, minlength=segs.n_labels)[segs.ids].astype(np.int32)
    t["IMAFLAGS_ISO"] = imaf
    t["NIMAFLAGS_ISO"] = nimaf
    for name in t.colnames:
        t[name].unit = _UNITS.get(name)
        t[name].description = _DESCR.get(name, "")
    return t


def select_columns(t: Table, params: list[str]) -> Table:
    out = Table()
    missing = []
    for p in params:
        base = p.split("(")[0].upper()
        if base in t.colnames:
            out[base] = t[base]
        elif base == "EXT_NUMBER":
            continue  # added per HDU by the caller
        else:
            missing.append(base)
    if missing:
        warnings.warn(f"SEP engine cannot compute {', '.join(missing)}: left out", MaxidetectWarning, stacklevel=3)
    return out

