"""What the other evidence needs to know about a frame: its background and
noise, its own sources, and its PSF measured on them.

Everything here is measured on the frame itself (SEP's SExtractor-style
statistics), so the maps adapt to seeing, sampling and depth.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import sep
from scipy import ndimage

from maxidetect.errors import MaxidetectWarning
from maxidetect.maps.morph import axis_angle, component_shapes, dilate

__all__ = ["Background", "FrameStats", "measure_background", "measure_frame", "elliptical_gaussian",
           "trailed_gaussian", "DEFAULT_FWHM",
           "no_data", "bright_background", "BRIGHT_SKY_SIGMA", "BRIGHT_SKY_NOISE", "sep_extract", "SEP_PIXSTACK"]

#: The PSF FWHM [pix] assumed when the frame has too few clean stars to measure it.
DEFAULT_FWHM = 3.0
_MIN_STARS = 5


#: A solid region of exact zeros this large is a blank fill, not data.
BLANK_MIN_AREA = 2000


def pixel_noise(image: np.ndarray) -> float:
    """The per-pixel noise from pixel differences (robust to sources and
    steps), on every 4th row (a million differences on 2048^2 are plenty)."""
    d = np.diff(np.nan_to_num(np.asarray(image[::4], np.float32)), axis=1)
    if d.size == 0:  # a frame one pixel wide: along its column
        d = np.diff(np.nan_to_num(np.asarray(image, np.float32)), axis=0)
    if d.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2))


#: Noise outside this range [image units] is brought into it by a power of two before fusion.
USUAL_NOISE = (2.0**-16, 2.0**40)
LEVEL_KEYS = ("SATURATE", "SATLEVEL", "SATUR")
GAIN_KEYS = ("GAIN", "EGAIN", "CCDGAIN")


def in_usual_units(image: np.ndarray, header, noise: float | None = None):
    """(image, header) with the image scaled by a power of two (exact in binary) when its noise is
    far outside what raw and reduced frames have: a frame in erg/s/cm^2/A (noise ~1e-19) met the
    fusion's floors on noise and variance and lost every L.A.Cosmic hit, and at ~1e-29 float32
    squares underflow. The header's saturation levels and gain follow; frames in range are
    returned as they are. ``noise``: :func:`pixel_noise` of the image, when already measured."""
    noise = pixel_noise(image) if noise is None else noise
    if not (np.isfinite(noise) and noise > 0) or USUAL_NOISE[0] <= noise <= USUAL_NOISE[1]:
        return image, header
    scale = float(2.0 ** -np.round(np.log2(noise)))
    image = np.asarray(image, np.float32) * np.float32(scale)
    if header is not None:
        header = header.copy()
        for keys, power in ((LEVEL_KEYS, 1), (GAIN_KEYS, -1)):
            for k in keys:
                try:
                    header[k] = float(header[k]) * scale**power
                except (KeyError, TypeError, ValueError):
                    pass
    return image, header


def no_data(image) -> np.ndarray | None:
    """Pixels without data (bool (H, W)), or None when there are none: NaN,
    inf, and exact zeros in solid regions of :data:`BLANK_MIN_AREA` px or
    more -- the zero fill of a resampled or mosaicked frame's blank corners
    (measured on a frame with zero-filled corners: its edges were fitted as
    trails and dead rows, and 6 S/N > 10 stars beside them lost). Noise that
    reads 0 in a sky-subtracted integer frame is no solid region (a 3x3
    opening removes it first)."""
    data = np.asarray(image)
    missing = ~np.isfinite(data) if data.dtype.kind == "f" else np.zeros(data.shape, bool)
    zero = data == 0
    if np.count_nonzero(zero) >= BLANK_MIN_AREA:
        solid = ndimage.binary_opening(zero, structure=np.ones((3, 3), bool))
        if np.count_nonzero(solid) >= BLANK_MIN_AREA:
            lab, _ = ndimage.label(solid)
            big = np.bincount(lab.ravel()) >= BLANK_MIN_AREA
            big[0] = False
            if big.any():  # the whole zero region they belong to (the opening took its thin tips)
                missing |= ndimage.binary_propagation(big[lab], mask=zero)
    return missing if missing.any() else None


@dataclass
class FrameStats:
    """Background, noise and sources of one image.

    Attributes
    ----------
    back, rms : float32 (H, W)
        SEP background and noise maps (64 px mesh, masked pixels left out).
    globalrms : float
    objects : structured array
        SEP detections at 3 sigma on the unmasked image (x, y 0-based,
        peak, flux, npix, a, b, theta, bounding boxes), the frame's own
        sources and artefacts alike.
    segmentation : int32 (H, W)
        Their footprints (object index + 1).
    compact : bool (n_objects,)
        Objects that are not line-like (axis ratio > 0.3 and not one pixel
        thin, or bright and not thinner than 1:8): the ones other evidence
        may mask out of its statistics.
    fwhm : float
        PSF FWHM [pix] on bright isolated unsaturated sources (or DEFAULT_FWHM).
    fwhm_measured : bool
    n_psf_stars : int
    saturation : float
        The level above which pixels are saturated (header, else the image's plateau).
    psf_q, psf_theta : float
        The PSF's axis ratio (1: round, also when not measured) and major
        axis angle from +x [rad]; ``fwhm`` is then the geometric mean of the
        axes' FWHMs.
    psf_trail : (float, float) or None
        Where the elongated PSF is trailed (a round core drawn along its
        major axis by a tracking error, :func:`trailed_gaussian`, fits its
        bright stars clearly better than an elliptical Gaussian): its core's
        sigma and the segment's half-length [px], for rule 1's fits; ``fwhm``,
        ``psf_q`` and ``psf_theta`` stay the elliptical Gaussian's.
    psf_stars : float (n, 2)
        x, y of the stellar locus the PSF was measured on (none when not
        measured), those whose core ``bad`` leaves alone where there are enough.
    """

    back: np.ndarray
    rms: np.ndarray
    globalrms: float
    objects: np.ndarray
    segmentation: np.ndarray
    compact: np.ndarray
    fwhm: float
    fwhm_measured: bool
    n_psf_stars: int
    saturation: float
    psf_q: float = 1.0
    psf_theta: float = 0.0
    psf_trail: tuple[float, float] | None = None
    psf_stars: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))

    @property
    def sigma(self) -> float:
        """The PSF's Gaussian sigma [pix] (geometric mean of its axes)."""
        return self.fwhm / 2.3548

    @property
    def psf_shape(self) -> tuple:
        """(axis ratio, major axis angle, ``psf_trail``): the PSF's shape for rule 1's fits."""
        return self.psf_q, self.psf_theta, self.psf_trail

    @property
    def sigma_minor(self) -> float:
        """The PSF's sigma along its minor axis [pix]: the sharpest a source can be (a trailed
        PSF's core: its streaks are sharper across than the elliptical Gaussian's minor axis)."""
        minor = self.sigma * np.sqrt(min(self.psf_q, 1.0))
        return minor if self.psf_trail is None else min(minor, float(self.psf_trail[0]))

    def source_mask(self, grow: int = 2, snr: np.ndarray | None = None) -> np.ndarray:
        """Footprints of the compact objects, grown by ``grow`` pixels (line-like
        objects, i.e. trails and bad columns, are left visible).

        With ``snr`` (the frame in noise units), a large footprint (semi-major
        axis of 25 px or more) is masked at its blobs and bright peaks alone:
        it may be a line (a satellite trail) merged with the stars or galaxy
        it crosses, and the line must stay visible to the trail search (a
        7-sigma, 290 px trail through a bright galaxy was masked whole and
        never fitted). A blob is all there is of a large star or galaxy."""
        keep = np.concatenate([[False], self.compact])
        blends = np.zeros(0, int)
        if snr is not None and len(self.objects):
            blends = np.flatnonzero(self.compact & (self.objects["a"] >= max(25.0, 3 * self.fwhm)))
            keep[blends + 1] = False
        m = keep[self.segmentation]
        for k in blends:
            sl, blobs = self._blobs(k, snr)
            m[sl] |= blobs
        return dilate(m, grow) if grow > 0 else m

    def _blobs(self, k: int, snr: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray]:
        """Object ``k``'s footprint less its thin parts (an opening that no
        line up to 16 px wide survives), plus disks of 2 FWHM around its
        peaks three times brighter than those thin parts (stars on a trail
        are smaller than the opening): (its box, the mask in the box)."""
        o = self.objects[k]
        h, w = self.segmentation.shape
        pad = int(np.ceil(2 * self.fwhm)) + 1
        y0, y1 = max(int(o["ymin"]) - pad, 0), min(int(o["ymax"]) + pad + 1, h)
        x0, x1 = max(int(o["xmin"]) - pad, 0), min(int(o["xmax"]) + pad + 1, w)
        fp = self.segmentation[y0:y1, x0:x1] == k + 1
        yy, xx = np.mgrid[-8:9, -8:9]
        thick = ndimage.binary_opening(fp, structure=xx**2 + yy**2 <= 64)
        # A thick part drawn out into a line is a trail broader than the opening, no blob: a
        # 116-sigma trail's footprint is 17 px wide, and crossed by a hot column (one object,
        # as compact as a cross) it was masked whole and only its wings were searched.
        lab, n = ndimage.label(thick, structure=np.ones((3, 3), bool))
        if n:
            major, minor = component_shapes(lab, n)[2:4]
            line = (major * np.sqrt(12) >= 48) & (major >= 4 * minor)
            line[0] = False
            thick &= ~line[lab]
        z = np.where(fp, snr[y0:y1, x0:x1], -np.inf)
        thin = fp & ~thick
        level = float(np.median(z[thin])) if thin.any() else 0.0
        r = int(np.ceil(self.fwhm))
        peaks = (z == ndimage.maximum_filter(z, size=2 * r + 1)) & fp & (z > max(3 * level, 5.0))
        if peaks.any():
            # A peak stands three times above the brightest light 2 FWHM around it: a star's
            # does, a line's ridge does not (its light goes on along it: two bright trails
            # crossing, one compact object, were masked end to end by the disks of their ridges'
            # noise peaks and never searched).
            yy, xx = np.mgrid[-2 * r - 1:2 * r + 2, -2 * r - 1:2 * r + 2]
            rr = np.hypot(yy, xx)
            ring = ndimage.maximum_filter(z, footprint=(rr >= 2 * r) & (rr <= 2 * r + 1), mode="constant",
                                          cval=-np.inf)
            peaks &= z > 3 * ring
        return (slice(y0, y1), slice(x0, x1)), thick | (dilate(peaks, 2 * r) & fp)

    def snr(self, image: np.ndarray) -> np.ndarray:
        """(image - background) / rms, float32."""
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (np.asarray(image, np.float32) - self.back) / self.rms
        return np.where(np.isfinite(z), z, 0.0).astype(np.float32)


def _saturation(image: np.ndarray, header) -> float:
    top = float(np.nanmax(image)) if np.isfinite(image).any() else np.inf
    for key in LEVEL_KEYS:
        if header is not None and key in header:
            try:
                level = float(header[key])
            except (TypeError, ValueError):
                continue
            if level <= top * (1 + 1e-6) + 1e-6:
                # The level as the pixels store it (float32 clipped at 42619.4 reads 42619.398:
                # the flat tops were not saturated by the header's level).
                return min(level, top)
            # No pixel reaches it: the frame was rescaled or its sky subtracted since (a raw
            # header's level is then above every saturated star's flat top).
            break
    # The highest values of a frame with saturated stars form a plateau.
    return 0.98 * top if np.count_nonzero(image >= 0.999 * top) >= 9 else np.inf


@dataclass
class Background:
    """A frame's SEP background and noise: the first step of
    :func:`measure_frame`, and all L.A.Cosmic needs (it starts on these while
    the frame's sources and PSF are measured).

    Attributes
    ----------
    back, rms : float32 (H, W)
    globalrms, saturation : float
        As in :class:`FrameStats`.
    """

    back: np.ndarray
    rms: np.ndarray
    globalrms: float
    saturation: float


def measure_background(image: np.ndarray, bad: np.ndarray | None = None, header=None,
                       mesh: int = 64) -> Background:
    """SEP background and noise of a raw 2-D image (``mesh`` px meshes, ``bad``
    and non-finite pixels left out) and its saturation level."""
    data, finite = _finite_data(image)
    mask = ~finite if bad is None else (bad | ~finite)
    h, w = data.shape
    # SEP works in float32 whatever it is given: converted once here (the same values).
    bkg = sep.Background(data.astype(np.float32), mask=mask, bw=min(mesh, w), bh=min(mesh, h), fw=3, fh=3)
    back = bkg.back().astype(np.float32)
    rms = bkg.rms().astype(np.float32)
    good = rms > 0
    if not good.any():
        rms[:] = max(float(bkg.globalrms), 1e-6)
    elif not good.all():
        rms[~good] = float(np.median(rms[good]))
    return Background(back=back, rms=rms, globalrms=float(bkg.globalrms), saturation=_saturation(data, header))


def _finite_data(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image as float64 with non-finite pixels set to 0, and where it is finite."""
    data = np.asarray(image, np.float64)
    finite = np.isfinite(data)
    return np.where(finite, data, 0.0), finite


_KERNEL = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 16.0

#: SEP's pixel stack tried first (SExtractor's default MEMORY_PIXSTACK). SEP allocates it whole,
#: ~45 bytes a pixel: sized to a 4096^2 frame it took 0.75 GB, the maps' peak, and half of the
#: extraction's time (0.89 -> 1.83 s), for the same objects.
SEP_PIXSTACK = 300000
_SEP_LOCK = threading.Lock()  # SEP's limits are global settings: set and used together


def sep_extract(data: np.ndarray, thresh: float, pixstack: int = SEP_PIXSTACK, sub_object_limit: int = 4096,
                **kwargs):
    """``sep.extract(data, thresh, **kwargs)`` with a pixel stack of ``pixstack``, and again with
    one of the image's size where that fills up (an object with more pixels over the threshold
    than it holds at once): the stack bounds what SEP may hold, not what it finds, so the
    objects are the same as with the largest stack, at a fraction of the memory.
    ``sub_object_limit``: SEP's deblending limit per object."""
    with _SEP_LOCK:
        sep.set_sub_object_limit(int(sub_object_limit))
        sep.set_extract_pixstack(int(pixstack))
        try:
            return sep.extract(data, thresh, **kwargs)
        except Exception as exc:
            if "pixel buffer full" not in str(exc) or pixstack >= data.size:
                raise
        sep.set_extract_pixstack(int(data.size))
        return sep.extract(data, thresh, **kwargs)


def _extract(sub: np.ndarray, rms: np.ndarray, mask: np.ndarray | None = None):
    """SEP's objects at 3 sigma on a sky-subtracted image (``mask``: pixels
    left out), and their segmentation."""
    try:
        return sep_extract(np.ascontiguousarray(sub), 3.0, err=np.ascontiguousarray(rms), mask=mask,
                           minarea=3, filter_kernel=_KERNEL, filter_type="conv", deblend_nthresh=32,
                           deblend_cont=0.005, segmentation_map=True)
    except Exception:  # an extreme frame (all noise, all saturated): no sources
        return np.zeros(0, dtype=[("x", float), ("y", float)]), np.zeros(sub.shape, np.int32)


def _compact(objs, rms: np.ndarray, psf: tuple[float, float, float] = (1.0, 0.0, 0.0)) -> np.ndarray:
    """Objects that are not line-like (see :class:`FrameStats`). ``psf``: the frame's (axis ratio,
    major axis angle [rad], geometric-mean sigma [px]); where it is elongated, objects shaped as it
    (its angle within 25 deg, no thinner than 0.6 of its ratio, no longer than twice its major axis)
    are compact too: a tracking error trails every star into a streak as thin as 1:5, which the
    column search, left to see it, took for short bad rows (second generator's ``drift`` frames)."""
    if not len(objs) or "b" not in objs.dtype.names:
        return np.zeros(len(objs), bool)
    h, w = rms.shape
    ratio = objs["b"] / np.maximum(objs["a"], 1e-6)
    iy = np.clip(np.round(objs["y"]).astype(int), 0, h - 1)
    ix = np.clip(np.round(objs["x"]).astype(int), 0, w - 1)
    bright = objs["peak"] > 20 * rms[iy, ix]
    out = ((ratio > 0.3) & (objs["b"] > 0.6)) | (bright & (ratio > 0.12))
    q, theta, sigma = psf
    if q < ELONGATED_Q and sigma > 0:
        off = axis_angle(objs["theta"], theta)
        out |= (off < np.radians(25)) & (ratio > 0.6 * q) & (objs["a"] < 2 * sigma / np.sqrt(q))
    return out


def sources_under(stats: FrameStats, sub: np.ndarray, region: np.ndarray, margin: int = 16) -> FrameStats:
    """``stats`` with the objects centred in ``region`` (bool (H, W): fitted
    trails) found again on ``sub``, the sky-subtracted frame with
    those lines' models subtracted: on the frame itself a star on or beside a
    trail is a part of the trail's object (one elongated blend), and no
    source of its own to judge. Pixels farther than ``margin`` from the
    region are left out (half the time on a crowded frame)."""
    if not region.any():
        return stats
    h, w = region.shape
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    y0, y1 = max(rows[0] - margin, 0), min(rows[-1] + margin + 1, h)
    x0, x1 = max(cols[0] - margin, 0), min(cols[-1] + margin + 1, w)
    crop = (slice(y0, y1), slice(x0, x1))
    new, nseg = _extract(sub[crop], stats.rms[crop], mask=~dilate(region[crop], margin))
    if not len(new):
        return stats

    def inside(o):  # objects whose rounded centre lies in the region
        iy = np.clip(np.round(o["y"]).astype(int), 0, h - 1)
        ix = np.clip(np.round(o["x"]).astype(int), 0, w - 1)
        return region[iy, ix]

    for name in ("x", "xmin", "xmax", "xpeak", "xcpeak"):
        new[name] += x0
    for name in ("y", "ymin", "ymax", "ypeak", "ycpeak"):
        new[name] += y0
    take = np.flatnonzero(inside(new))
    old = stats.objects
    if not len(take) or (len(old) and old.dtype != new.dtype):
        return stats
    keep = np.flatnonzero(~inside(old)) if len(old) else np.zeros(0, int)
    # Old labels renumbered (0 for the objects replaced), then the new footprints over them.
    relabel = np.zeros(len(old) + 1, np.int32)
    relabel[keep + 1] = np.arange(1, len(keep) + 1)
    seg = relabel[stats.segmentation]
    lab = np.zeros(len(new) + 1, np.int32)
    lab[take + 1] = np.arange(len(keep) + 1, len(keep) + len(take) + 1)
    piece = lab[nseg]
    np.copyto(seg[crop], piece, where=piece > 0)  # seg[crop]: a view, written through
    objs = np.concatenate([old[keep], new[take]])
    compact = np.concatenate([stats.compact[keep],
                              _compact(new[take], stats.rms, (stats.psf_q, stats.psf_theta, stats.sigma))])
    return replace(stats, objects=objs, segmentation=seg, compact=compact)


def measure_frame(image: np.ndarray, bad: np.ndarray | None = None, header=None, mesh: int = 64,
                  background: Background | None = None) -> FrameStats:
    """Background, noise, sources and PSF of a raw 2-D image.

    ``bad``: pixels to leave out of the background (also overscan: its step
    would ring through the background spline) and that alone do not make a
    star for the PSF (the defects the network found: cosmic rays and hot
    pixels are sharp and would pass for an undersampled PSF; see
    :func:`_psf_fwhm`). ``background``: :func:`measure_background` of the
    same image, ``bad``, ``header`` and ``mesh``, when already made. A frame whose
    PSF cannot be measured (no stars, all noise, all saturated) gets
    :data:`DEFAULT_FWHM` and a :class:`MaxidetectWarning`.
    """
    bg = measure_background(image, bad, header, mesh) if background is None else background
    back, rms, sat = bg.back, bg.rms, bg.saturation
    data = _finite_data(image)[0]  # made again: a Background lives as long as L.A.Cosmic's thread
    sub = data - back
    objs, seg = _extract(sub, rms)
    fwhm, n, q, theta, trail, stars = _psf_fwhm(sub, objs, seg, rms, sat - float(np.median(back)), bad)
    if len(stars) and bad is not None:  # for the PSF's shape: stars with no hit or call on their core, if enough
        untouched = stars[~touches(bad, objs["x"][stars], objs["y"][stars])]
        stars = untouched if len(untouched) >= _MIN_STARS else stars
    sharpest = None
    if fwhm is None:
        sharpest = _few_stars_fwhm(sub, objs, seg, rms, sat - float(np.median(back)), bad)
        guess = f"{sharpest:.1f} px (its few stars' median)" if sharpest else f"{DEFAULT_FWHM} px"
        hint = ""
        if len(objs) and bad is not None:
            _, _, ok, clean = _bright_sources(sub, objs, seg, rms, sat - float(np.median(back)), bad)
            if (ok & ~clean).sum() >= _MIN_STARS:
                # Stars sharper than the grid's narrowest width fit no locus: rule 1 cannot tell them
                # from hits, and zeroes them by the assumed PSF (pixel-integrated Gaussians of FWHM
                # 0.8-1.0 px: every star).
                hint = (f"; {int((ok & ~clean).sum())} bright sources lie wholly under cosmic-ray or hot-pixel "
                        "calls (hits, or stars sharper than FWHM ~1.1 px: those only --policy CR=flag,HP=flag keeps)")
        warnings.warn(f"PSF not measurable ({n} clean stars): FWHM {guess} assumed{hint}",
                      MaxidetectWarning, stacklevel=2)
    shape = (q, theta, fwhm / 2.3548) if fwhm is not None else (1.0, 0.0, 0.0)
    return FrameStats(back=back, rms=rms, globalrms=bg.globalrms, objects=objs,
                      segmentation=np.asarray(seg, np.int32), compact=_compact(objs, rms, shape),
                      fwhm=fwhm or sharpest or DEFAULT_FWHM,
                      fwhm_measured=fwhm is not None, n_psf_stars=n, saturation=sat,
                      psf_q=q if fwhm is not None else 1.0, psf_theta=theta if fwhm is not None else 0.0,
                      psf_trail=trail if fwhm is not None else None,
                      psf_stars=np.c_[objs["x"][stars], objs["y"][stars]])


#: Bright background: the sky, measured with the sources left out, this many
#: times its pixel noise above its median over the frame ...
BRIGHT_SKY_SIGMA = 3.0
#: ... and its noise this much above the frame's median noise: extra light whose
#: photons raise the detection limit (a sky 21% brighter, where they dominate), not
#: a gradient of a few per cent (second generator: 3 sigma over 6% of a frame, its
#: noise up 6% at most).
BRIGHT_SKY_NOISE = 1.1


def bright_background(image: np.ndarray, stats: FrameStats, bad: np.ndarray | None = None,
                      nsigma: float = BRIGHT_SKY_SIGMA, noise_rise: float = BRIGHT_SKY_NOISE,
                      mesh: int = 64) -> np.ndarray:
    """Where the sky itself is bright (bool (H, W)): the background measured
    with the frame's sources (their footprints grown by 2 px), ``bad`` and
    non-finite pixels left out stands ``nsigma`` times the sky's pixel noise
    above its median over the frame, and its noise ``noise_rise`` times the
    median noise (a glow of scattered light, moonlight). A source's own light
    leaves it as it is: the network calls the bodies of bright galaxies and
    stars bright background (real frames: every bright galaxy of a CTIO
    frame, 97% of a crowded UKIRT frame's detections)."""
    finite = np.isfinite(image)
    mask = stats.source_mask(2) | ~finite
    if bad is not None:
        mask |= bad
    if mask.all():
        return np.zeros(mask.shape, bool)
    try:
        sky = measure_background(image, bad=mask, mesh=mesh)
    except Exception:  # an extreme frame (all masked meshes): no evidence either way
        return np.zeros(mask.shape, bool)
    return (sky.back - float(np.median(sky.back[finite])) >= nsigma * stats.globalrms) \
        & (sky.rms >= noise_rise * float(np.median(sky.rms[finite])))


def trailed_gaussian(dx, dy, var, half: float, theta: float):
    """A round Gaussian of variance ``var`` [px^2] drawn along a segment of
    half-length ``half`` at ``theta`` from +x (peak 1 at dx = dy = 0), the
    pixel integration approximated as in :func:`elliptical_gaussian`."""
    from scipy.special import erf

    r2 = np.sqrt(2.0 * (var + 1 / 12))
    c, s = np.cos(theta), np.sin(theta)
    u, v = dx * c + dy * s, dy * c - dx * s
    return (np.exp(-(v / r2) ** 2) * (erf((u + half) / r2) - erf((u - half) / r2))
            / np.maximum(2 * erf(half / r2), 1e-300))


def segment_half(var, q: float):
    """Half the length of the segment that draws a round core of variance ``var`` * ``q`` out to
    the major axis of an elliptical PSF (geometric-mean variance ``var``, axis ratio ``q``): its
    variance, (2 half)^2 / 12, is the major axis's less the minor's."""
    return np.sqrt(3.0 * (var / q - var * q))


def elliptical_gaussian(dx, dy, var, q: float, theta: float, trailed: bool = False):
    """exp(-chi^2 / 2) of an elliptical Gaussian (peak 1 at dx = dy = 0) of
    geometric-mean variance ``var`` [px^2], axis ratio ``q``, major axis at
    ``theta`` from +x; the pixel integration approximated by a box's
    variance (1/12 px^2 per axis). Arrays broadcast.

    ``trailed``: instead, a round Gaussian drawn along the major axis (a
    tracking error's PSF: flat along its length, with steep ends) of the
    same second moments: the minor axis's variance across, and a segment
    whose variance makes up the major axis's."""
    c, s = np.cos(theta), np.sin(theta)
    va, vb = var / q, var * q
    if trailed and q < 1.0:
        return trailed_gaussian(dx, dy, vb, segment_half(var, q), theta)
    cxx, cyy, cxy = va * c * c + vb * s * s + 1 / 12, va * s * s + vb * c * c + 1 / 12, (va - vb) * c * s
    return np.exp(-0.5 * (cyy * dx * dx - 2 * cxy * dx * dy + cxx * dy * dy) / (cxx * cyy - cxy * cxy))


def light_centre(d: np.ndarray, mask: np.ndarray | None = None) -> tuple[int, int]:
    """The pixel nearest the centroid of ``d``'s light a quarter of its peak
    or more (within ``mask``): a trailed PSF's centre, which its brightest
    pixel is not (its top is flat along its length: noise picks the peak)."""
    m = np.ones(d.shape, bool) if mask is None else mask
    top = np.where(m, d, -np.inf).max()
    w = np.where(m & (d >= 0.25 * top), d, 0.0) if top > 0 else m.astype(np.float64)
    yy, xx = np.indices(d.shape)
    cy, cx = int(round((w * yy).sum() / w.sum())), int(round((w * xx).sum() / w.sum()))
    if not m[cy, cx]:  # a bent group: its brightest pixel
        return np.unravel_index(np.argmax(np.where(m, d, -np.inf)), d.shape)
    return cy, cx


def _gauss_fits(sub, rms, xs, ys, hs: int = 4, shape=(1.0, 0.0)):
    """Best circular pixel-integrated Gaussian (sigma, reduced chi2) of each
    stamp, over a grid of widths and sub-pixel centres (linear amplitude and
    background), with a 10% model error. With ``shape`` (axis ratio < 1,
    major axis angle from +x) the Gaussians are elliptical, of that shape
    (sigma: the geometric mean of the axes; pixel integration approximated
    by a box's variance); a third item of ``shape``, True: trailed (see
    :func:`elliptical_gaussian`)."""
    from scipy.special import erf

    sigmas = np.geomspace(0.35, 6.0, 28)
    step = sigmas[1] / sigmas[0]
    offs = np.linspace(-0.5, 0.5, 5)
    grid = np.arange(-hs, hs + 1, dtype=np.float64)
    out_s, out_c = np.full(len(xs), np.nan), np.full(len(xs), np.inf)
    # Profiles for every (sigma, offset) along one axis: (n_sig, n_off, 2hs+1).
    rel = grid[None, None, :] - offs[None, :, None]
    s2 = np.sqrt(2.0) * sigmas[:, None, None]
    prof = 0.5 * (erf((rel + 0.5) / s2) - erf((rel - 0.5) / s2))
    prof /= prof.max(axis=-1, keepdims=True)  # peak 1 (the separable product's peak is the product of peaks)
    g = prof[:, :, None, :, None] * prof[:, None, :, None, :]  # (n_sig, off_y, off_x, h, w)
    q, theta, trailed = (*shape, False)[:3]
    if q < 1.0:
        rel = grid[None, :] - offs[:, None]
        g = elliptical_gaussian(rel[None, None, :, None, :], rel[None, :, None, :, None],
                                (sigmas**2)[:, None, None, None, None], q, theta, trailed)
        g /= g.max(axis=(3, 4), keepdims=True)

    def sums(m, py, px):  # sum over pixels of g-like separable terms times m: (n_sig, off_y, off_x)
        return np.matmul(np.matmul(py, m), np.swapaxes(px, 1, 2))
    h, w = sub.shape
    buf_m, buf_r = np.empty(g.shape), np.empty(g.shape)
    for k, (x, y) in enumerate(zip(xs, ys, strict=True)):
        cy, cx = int(round(y)), int(round(x))
        if cy - hs < 0 or cx - hs < 0 or cy + hs >= h or cx + hs >= w:
            continue
        d = np.asarray(sub[cy - hs:cy + hs + 1, cx - hs:cx + hs + 1], np.float64)
        iy, ix = light_centre(d) if trailed else np.unravel_index(np.argmax(d), d.shape)  # centre on the peak
        cy, cx = cy + iy - hs, cx + ix - hs
        if cy - hs < 0 or cx - hs < 0 or cy + hs >= h or cx + hs >= w:
            continue
        d = np.asarray(sub[cy - hs:cy + hs + 1, cx - hs:cx + hs + 1], np.float64)
        var = np.asarray(rms[cy - hs:cy + hs + 1, cx - hs:cx + hs + 1], np.float64) ** 2
        wt = 1.0 / var
        sw, swd = wt.sum(), (wt * d).sum()
        if q < 1.0:
            swg, swgg, swgd = (wt * g).sum(axis=(3, 4)), (wt * g * g).sum(axis=(3, 4)), (wt * d * g).sum(axis=(3, 4))
        else:
            swg = sums(wt, prof, prof)
            swgg = sums(wt, prof * prof, prof * prof)
            swgd = sums(wt * d, prof, prof)
        det = sw * swgg - swg ** 2
        a = (sw * swgd - swg * swd) / det
        b = (swd - a * swg) / sw
        # chi2 with model error of every model, in two buffers (the arithmetic of
        # ((d - model - b) ** 2 / (var + (0.1 * model) ** 2)).sum(), without its temporaries)
        model = np.multiply(a[..., None, None], g, out=buf_m)
        res = np.subtract(d, model, out=buf_r)
        res -= b[..., None, None]
        np.square(res, out=res)
        model *= 0.1
        np.square(model, out=model)
        model += var
        res /= model
        chi2 = res.sum(axis=(3, 4))
        j = np.unravel_index(np.argmin(chi2), chi2.shape)
        out_s[k], out_c[k] = sigmas[j[0]], chi2[j] / (d.size - 5)
        if 0 < j[0] < len(sigmas) - 1:  # between grid widths (11% apart): the parabola's vertex in log width
            c0, c1, c2 = chi2.reshape(len(sigmas), -1).min(axis=1)[j[0] - 1:j[0] + 2]
            curv = c0 - 2 * c1 + c2
            if curv > 0:
                out_s[k] *= step ** float(np.clip(0.5 * (c0 - c2) / curv, -0.5, 0.5))
    return out_s, out_c


#: A Gaussian fit this narrow or narrower [px] is a hit's (a single pixel sits at the grid's 0.35),
#: never a star's.
HIT_SIGMA = 0.45
#: Reduced chi2 of a Gaussian fit under which a source counts as smooth (a PSF's locus of sources
#: whose light the network called cosmic rays).
LOCUS_CHI2 = 2.0
#: A PSF whose stars' median axis ratio is below this is measured (and fitted by rule 1) as elongated.
ELONGATED_Q = 0.8


def _bright_sources(sub, objs, seg, rms, saturation_above_sky, bad):
    """(snr, axis ratio, bright, clean) per object: ``bright`` S/N > 20,
    unflagged and unsaturated; ``clean`` with significant light (3 sigma)
    outside ``bad``. Cosmic rays mimic sharp stars, but in good seeing the
    network calls the cores of the stars themselves cosmic rays: leaving out
    every object it touches leaves the galaxies (FWHM 1.2 px measured 3.1);
    a cosmic ray's light is all in its hit, a star's wings are not."""
    iy = np.clip(np.round(objs["y"]).astype(int), 0, sub.shape[0] - 1)
    ix = np.clip(np.round(objs["x"]).astype(int), 0, sub.shape[1] - 1)
    snr = objs["flux"] / (rms[iy, ix] * np.sqrt(np.maximum(objs["npix"], 1)))
    ratio = objs["b"] / np.maximum(objs["a"], 1e-6)
    ok = (snr > 20) & (objs["flag"] == 0) & (objs["peak"] < 0.8 * saturation_above_sky)
    clean = np.ones(len(objs), bool)
    if bad is not None and ok.any():
        out = (seg > 0) & ~bad
        lab = seg[out]
        flux_out = np.bincount(lab, weights=sub[out], minlength=len(objs) + 1)[1:]
        var_out = np.bincount(lab, weights=np.asarray(rms[out], np.float64) ** 2, minlength=len(objs) + 1)[1:]
        clean = flux_out > 3.0 * np.sqrt(var_out)
    return snr, ratio, ok, clean


def _few_stars_fwhm(sub, objs, seg, rms, saturation_above_sky, bad) -> float | None:
    """Below :data:`DEFAULT_FWHM`, the median FWHM of the frame's few (1 to
    ``_MIN_STARS - 1``) bright, round, unsaturated sources with light beyond
    the network's hits that a Gaussian fits; else None. Too few for a
    stellar locus, but in good seeing the default is twice a star's width,
    and rule 1 then took the network's cosmic-ray calls on undersampled
    stars' cores for hits (a sparse FWHM 1.5 px frame: 3 of 18 cores zeroed).
    Wider ones change nothing: a galaxy must not widen the PSF."""
    if not len(objs):
        return None
    _, ratio, ok, clean = _bright_sources(sub, objs, seg, rms, saturation_above_sky, bad)
    idx = np.flatnonzero(ok & (ratio > 0.6) & clean)[:50]
    if not len(idx):
        return None
    sig, chi = _gauss_fits(sub, rms, objs["x"][idx], objs["y"][idx], 6)
    good = np.isfinite(sig) & (chi < 3.0) & (sig > HIT_SIGMA) & (sig < 5.9)
    if not good.any():
        return None
    fwhm = float(np.clip(2.3548 * np.median(sig[good]), 0.8, 30.0))
    return fwhm if fwhm < DEFAULT_FWHM else None


def _weighted_median(v, w) -> float:
    order = np.argsort(v)
    cum = np.cumsum(np.asarray(w, np.float64)[order])
    return float(np.asarray(v)[order][np.searchsorted(cum, 0.5 * cum[-1])])


def _moment_angle(sub, xs, ys, snr, hs: int, default: float) -> float:
    """The major axis' angle from +x of the stars' light at (xs, ys): the median, weighted by
    ``snr`` (a faint star's angle scatters by tens of degrees), of their second moments'
    ellipticity components in a round Gaussian window (which rounds the shape but keeps its
    angle) of sigma ``hs / 2``, about the window's own centroid; ``default`` without any."""
    grid = np.arange(-hs, hs + 1, dtype=np.float64)
    e1, e2, wt = [], [], []
    for x0, y0, s0 in zip(xs, ys, snr, strict=True):
        ix, iy = int(round(x0)), int(round(y0))
        if iy < hs or ix < hs or iy + hs >= sub.shape[0] or ix + hs >= sub.shape[1]:
            continue
        st = np.asarray(sub[iy - hs:iy + hs + 1, ix - hs:ix + hs + 1], np.float64)
        dy, dx = grid[:, None] + (iy - y0), grid[None, :] + (ix - x0)
        for _ in range(2):  # recentred once on the windowed centroid
            w = st * np.exp(-0.5 * (dx**2 + dy**2) / (hs / 2.0) ** 2)
            tot = w.sum()
            if not tot > 0:
                break
            cx, cy = (w * dx).sum() / tot, (w * dy).sum() / tot
            dx, dy = dx - cx, dy - cy
        if not tot > 0:
            continue
        ixx, iyy, ixy = (w * dx * dx).sum(), (w * dy * dy).sum(), (w * dx * dy).sum()
        if ixx + iyy > 0:
            e1.append((ixx - iyy) / (ixx + iyy))
            e2.append(2.0 * ixy / (ixx + iyy))
            wt.append(max(float(s0), 0.0))
    if len(e1) < _MIN_STARS or not sum(wt) > 0:
        return default
    return 0.5 * float(np.arctan2(_weighted_median(e2, wt), _weighted_median(e1, wt)))


def touches(mask: np.ndarray, xs, ys) -> np.ndarray:
    """Whether ``mask`` holds a pixel within one of each (xs, ys) (rounded; the frame's edge
    rows and columns read from their neighbours')."""
    h, w = mask.shape
    iy = np.clip(np.round(ys).astype(int), 1, h - 2)
    ix = np.clip(np.round(xs).astype(int), 1, w - 2)
    return np.any([mask[iy + dy, ix + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)


def _across_width(sub: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Per pixel (ys, xs), the narrowest Gaussian sigma [px] that its two neighbours across a row,
    column or diagonal give (their mean over it, where it tops both; inf where it tops no pair).
    Unintegrated: a measure to compare two sets of pixels by, not a PSF."""
    h, w = sub.shape
    c = np.asarray(sub[ys, xs], np.float64)
    out = np.full(len(ys), np.inf)
    for (dy, dx), r2 in (((0, 1), 1), ((1, 0), 1), ((1, 1), 2), ((1, -1), 2)):
        a = sub[np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)]
        b = sub[np.clip(ys - dy, 0, h - 1), np.clip(xs - dx, 0, w - 1)]
        f = 0.5 * (a + b) / np.where(c > 0, c, np.inf)
        top = (c >= a) & (c >= b) & (f > 0) & (f < 1)
        out[top] = np.minimum(out[top], np.sqrt(r2 / (-2.0 * np.log(f[top]))))
    return out


def _hits_blur(sub, objs, seg, rms, bad, snr, ratio, locus) -> bool:
    """Whether a compact locus (object indices ``locus``) is cosmic-ray hits blurred by charge
    diffusion (a thick CCD), not stars: the network calls most of them, and their cores are
    narrower across than the frame's called cosmic-ray tracks (the same diffusion blurs the tracks
    and a star's light, which the seeing blurs besides). Undiffused tracks are a pixel wide: the
    stars of good seeing are as narrow, and stay the locus. False where the frame has too few tracks
    to tell."""
    if touches(bad, objs["x"][locus], objs["y"][locus]).mean() < 0.75:
        return False
    tracks = np.flatnonzero((snr > 20) & (ratio < 0.4) & (objs["a"] > 2) & (objs["a"] < 15)
                            & (objs["flag"] == 0))
    if len(tracks) < _MIN_STARS:
        return False
    ys, xs = [], []
    for i in tracks:  # the tracks' bright called pixels
        sl = (slice(int(objs["ymin"][i]), int(objs["ymax"][i]) + 1),
              slice(int(objs["xmin"][i]), int(objs["xmax"][i]) + 1))
        r = rms[sl] if np.ndim(rms) else rms
        py, px = np.nonzero((seg[sl] == i + 1) & bad[sl] & (sub[sl] > 10.0 * r))
        ys.append(py + sl[0].start)
        xs.append(px + sl[1].start)
    across = _across_width(sub, np.concatenate(ys), np.concatenate(xs))
    across = across[np.isfinite(across)]
    if len(across) < 10 * _MIN_STARS:
        return False
    own = _across_width(sub, objs["ypeak"][locus].astype(int), objs["xpeak"][locus].astype(int))
    own = own[np.isfinite(own)]
    return len(own) >= _MIN_STARS and float(np.median(own)) < float(np.median(across))


#: No stars (object indices).
NO_STARS = np.zeros(0, int)


#: Under this axis ratio the PSF may be trailed (:func:`elliptical_gaussian`): the
#: trailed profile is tried, and taken where the brightest stars' reduced chi2 in excess of 1
#: is under TRAILED_GAIN of the elliptical Gaussian's (constructed and second-generator trailed
#: frames 0.04-0.77, elliptical Gaussian stars of axis ratio 0.48 1.07-3.7).
TRAILED_Q = 0.5
TRAILED_GAIN = 0.8


def _psf_fwhm(sub, objs, seg, rms, saturation_above_sky,
              bad) -> tuple[float | None, int, float, float, tuple | None, np.ndarray]:
    """FWHM of the stellar locus: bright (S/N > 20), isolated, unsaturated
    sources whose profile a Gaussian fits (cosmic rays and hot pixels do
    not: too sharp, or not smooth), the median width of the best fits; and
    the PSF's axis ratio and angle (1, 0 for a round PSF). The stars must be
    round (axis ratio > 0.6: no trails, no pairs) unless the more compact
    half of the bright isolated sources shares one elongation (a PSF drawn
    out by tracking or optics): then those of that shape are the stars.
    Objects with no significant light outside ``bad`` only join a width
    that objects with some share. A compact locus that is cosmic-ray hits
    blurred by charge diffusion (:func:`_hits_blur`) gives way to a broader
    one of more sources that the network leaves alone. Last, the locus's
    members (indices into ``objs``; none when not measured)."""
    if len(objs) < _MIN_STARS:
        return None, 0, 1.0, 0.0, None, NO_STARS
    x, y = objs["x"], objs["y"]
    snr, ratio, ok, clean = _bright_sources(sub, objs, seg, rms, saturation_above_sky, bad)
    # Down to 1:10: a tracking error trails every star into a streak (1:5 at 14 px and FWHM 2.4 px);
    # a locus of them must still share one direction below, which tracks and galaxies do not.
    ok &= (objs["a"] > 0) & (ratio > 0.1)
    if ok.sum() >= 2:  # isolated: no other detection within 6 a
        from scipy.spatial import cKDTree

        pts = np.c_[x, y]
        d, _ = cKDTree(pts).query(pts[ok], k=2)
        near = d[:, 1] < 6 * np.maximum(objs["a"][ok], 1.0)
        idx = np.flatnonzero(ok)
        ok[idx[near]] = False
    q, theta, trail = 1.0, 0.0, None
    # Judged on the more compact half (the stars: galaxies are larger; size
    # as flux / peak, which brightness does not change), and elongated only
    # if those share one direction (galaxies are elongated every which way:
    # the mean resultant length of 2 theta is small).
    size = objs["flux"] / np.maximum(objs["peak"], 1e-12)
    base = ok & clean
    if base.sum() < _MIN_STARS:
        # Too few clean sources to say the shape (good seeing: the network calls every star's light):
        # the bright ones broader than single-pixel hits say it, for the locus of smooth fits below
        # (an elongated PSF of 1.2 px FWHM across, fitted round, fitted none: 54 of 60 stars zeroed).
        pick = np.flatnonzero(ok)
        pick = pick[np.argsort(-snr[pick])[:150]]
        sg = _gauss_fits(sub, rms, x[pick], y[pick], 6)[0] if len(pick) else np.zeros(0)
        base = np.zeros(len(objs), bool)
        base[pick[np.isfinite(sg) & (sg > HIT_SIGMA)]] = True
    small = base & (size <= np.median(size[base])) if base.any() else base
    two = (np.mean(np.cos(2 * objs["theta"][small])), np.mean(np.sin(2 * objs["theta"][small]))) \
        if small.sum() >= _MIN_STARS else (0.0, 0.0)
    if np.hypot(*two) > 0.6 and np.median(ratio[small]) < ELONGATED_Q:
        q = float(np.median(ratio[small]))
        theta = 0.5 * float(np.arctan2(two[1], two[0]))
        off = axis_angle(objs["theta"], theta)
        ok &= (np.abs(ratio - q) < 0.15) & (off < np.radians(20))  # the same elongation
    else:
        ok &= ratio > 0.6  # round: no trails, no pairs
    idx = np.flatnonzero(ok)
    if len(idx) > 150:  # the brightest are enough for a median width (the clean ones first)
        idx = idx[np.lexsort((-snr[idx], ~clean[idx]))[:150]]
    if len(idx) < _MIN_STARS:
        return None, int(len(idx)), 1.0, 0.0, None, NO_STARS
    hs = int(np.clip(np.ceil(4 * np.percentile(objs["a"][idx], 75)), 6, 12))
    if q < 1.0:
        # The isophotes' angle is off by a few degrees (34 for a true 30 at axis ratio 0.48), and a
        # bright star's wings along its major axis then lie tens of sigma off its model: rule 1
        # took four stars of S/N 1400-4200 for artefacts. The light's own second moments tell it.
        pick = idx[clean[idx]] if clean[idx].sum() >= _MIN_STARS else idx
        theta = _moment_angle(sub, x[pick], y[pick], snr[pick], hs, theta)
        # Isophotal moments read the axis ratio rounder than it is (noise,
        # wings, pixels: 0.75 for a true 0.57): the ratio that fits the 30
        # brightest stars best, from 0.6x the moments' up.
        pick = idx[clean[idx]] if clean[idx].any() else idx
        top = pick[np.argsort(-snr[pick])[:30]]
        fits = {}  # (ratio, trailed): the 30 stars' (sigma, reduced chi2), each fitted once

        def fit(qq, tr):
            if (qq, tr) not in fits:
                fits[qq, tr] = _gauss_fits(sub, rms, x[top], y[top], hs, (qq, theta, tr))
            return fits[qq, tr]

        def cost(qq, tr, clip=np.inf):
            c = fit(qq, tr)[1]
            return float(np.nansum(np.minimum(np.where(np.isfinite(c), c, 10.0), clip)))

        def search(tr, clip=np.inf):
            tries = [float(np.clip(q_m * f, 0.1, 1.0)) for f in (0.6, 0.7, 0.8, 0.9, 1.0)]
            costs = [cost(qq, tr, clip) for qq in tries]
            qb, best = tries[int(np.argmin(costs))], min(costs)
            # Then the ratio more finely (the steps above are 0.1 of the moments' ratio).
            for qq in (float(np.clip(qb * 0.95, 0.1, 1.0)), float(np.clip(qb * 1.05, 0.1, 1.0))):
                c = cost(qq, tr, clip)
                if c < best:
                    qb, best = qq, c
            return qb

        q_m = q  # the moments'
        q = search(False)
        if q < TRAILED_Q:
            # Drawn out this far, a tracking error's streak is flat along its length with steep
            # ends, far off any Gaussian at high S/N (FWHM 1.2 px across, 8 px long: rule 1 took 23
            # stars of S/N 20-420 on one frame for cosmic-ray tracks): the trailed profile where
            # it fits the brightest stars clearly better: their reduced chi2 in excess of 1 (each
            # clipped at 10: a blend or a hit on a few stars, 100-600 in both, decided a plain sum;
            # the faint ones, fitted as well by either, a median). The locus and its width stay
            # the Gaussian's (every other use of the PSF's shape).
            q_t = search(True, 10.0)

            def excess(c):
                return float((np.minimum(np.where(np.isfinite(c), c, 10.0), 10.0) - 1.0).clip(0).sum())
            sg, c_t = fit(q_t, True)
            if excess(c_t) < TRAILED_GAIN * excess(fit(q, False)[1]):
                sg = sg[np.isfinite(sg) & (sg > HIT_SIGMA)]
                if len(sg) >= _MIN_STARS:
                    s_t = float(np.median(sg))  # the geometric-mean sigma
                    trail = (float(s_t * np.sqrt(q_t)), float(segment_half(s_t**2, q_t)))
    sig, chi = _gauss_fits(sub, rms, x[idx], y[idx], hs, (q, theta))
    good = np.isfinite(sig) & (chi < 3.0) & (sig > HIT_SIGMA) & (sig < 5.9)
    if good.sum() < _MIN_STARS:
        return None, int(good.sum()), 1.0, 0.0, None, NO_STARS
    order = np.argsort(sig[good])
    s, s_clean = sig[good][order], clean[idx][good][order]
    members = idx[good][order]
    # The stellar locus is the most compact well-populated group: galaxies
    # and blends are wider, and may outnumber the stars in a deep field.
    need = max(_MIN_STARS, int(0.2 * len(s)))
    hits = None  # a compact locus taken for cosmic-ray hits blurred by charge diffusion
    for c in s:
        near = np.abs(np.log(s / c)) < 0.15
        if not (near.sum() >= need and s_clean[near].sum() >= _MIN_STARS):
            continue
        locus = float(np.clip(2.3548 * np.median(s[near]), 0.8, 30.0)), int(near.sum()), q, theta, trail, members[near]
        if hits is None:
            if bad is None or not _hits_blur(sub, objs, seg, rms, bad, snr, ratio, members[near]):
                return locus
            hits = locus, c, int((np.abs(np.log(s / c)) < 0.3).sum())
        elif (np.log(c / hits[1]) > 0.3 and touches(bad, x[members[near]], y[members[near]]).mean() <= 0.25
              and (np.abs(np.log(s / c)) < 0.3).sum() > hits[2]):
            return locus
    if hits is not None:
        return hits[0]
    # In good seeing with a PSF of faint wings the network calls all of every star's light a cosmic
    # ray, and no star is clean (pixel-integrated Gaussian stars of FWHM 1.2 px: 0 of 60; the default
    # FWHM then made rule 1 zero every one of them). Their cores still fit one Gaussian width, which
    # single-pixel hits do not reach (the grid's floor) and tracks fit badly. A locus twice the usual
    # size of smooth fits is taken for the PSF, unless the clean sources that fit say otherwise
    # (hits blurred to a star's width on a sparse field of broad stars: the stars' width stands).
    smooth = chi[good][order] < LOCUS_CHI2
    for c in s[smooth]:
        near = (np.abs(np.log(s / c)) < 0.15) & smooth
        if near.sum() >= max(2 * _MIN_STARS, need):
            width = float(np.median(s[near]))
            if s_clean.any() and abs(np.log(np.median(s[s_clean]) / width)) > 0.25:
                break
            return float(np.clip(2.3548 * width, 0.8, 30.0)), int(near.sum()), q, theta, trail, members[near]
    return None, int(s_clean.sum()), 1.0, 0.0, None, NO_STARS
