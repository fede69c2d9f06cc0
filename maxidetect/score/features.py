"""What is known about each detection, as numbers a model can weigh.

From the image, the maps (weight and flag), the segmentation of the
catalogue and the frame's PSF and fitted trails, for every object:

- per class, the fraction of its isophote and whether its core (3x3 at the
  peak) carries the class's flag, and the fraction at zero weight;
- its shape against the frame's PSF (round, elliptical or trailed, as the maps'
  header measured it): half-light radius and peak / flux against the PSF's,
  a sharpness statistic (peak over its 8 neighbours), area in PSF beams,
  elongation, alone and against the PSF's, and its major axis's angle to the
  PSF's (a star trailed by a tracking error is as long as a cosmic-ray track,
  but shaped and aligned as every other star of the frame);
- how well a local plane plus the PSF fits the pixels around its peak
  (in a box of +-1.2 FWHM: R^2 for the PSF scaled to 0.6, 1 and 1.6 times its width, and the PSF
  component's share of the isophotal flux; an elongated PSF's best of a few centres along its
  major axis, where the peak of its flat top is noise's choice): a star on a nebula or on bright
  background is PSF-shaped once the local light is taken out, a knot of the
  nebula is broader, a cosmic ray narrower (the isophote alone cannot tell:
  the nebula's light inflates a star's isophotal flux and area);
- its angle to, and distance from, any fitted trail;
- local background and noise relative to the frame's, its S/N;
- whether it is a piece of a brighter object cut by zero-weight pixels (a
  star across a masked column or trail comes out as two detections): the
  flux ratio of the brightest object across a gap (up to 7 px) holding
  zero-weight pixels;
- its crowding: distance to the nearest other detection and the number of
  detections within 5 FWHM (in a crowded field a real source overlaps flags
  and neighbours far more often than in the field the model saw most);
- its distance to saturated pixels and to the image edge, and to the
  nearest diffraction-spike line of a saturated star (the frame's spike
  angle measured on its brightest saturated stars: the network's SP calls
  spread over whole halos, a spike is a line).

Everything is computed from the pixels and the segmentation, so catalogues
of SEP, SExtractor or photutils get the same features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sep
from scipy import ndimage
from scipy.spatial import cKDTree

from maxidetect.classes import CLASSES
from maxidetect.extract.segments import Segments
from maxidetect.maps.frame import elliptical_gaussian, in_usual_units, segment_half
from maxidetect.maps.morph import axis_angle, dilate
from maxidetect.maps.spikes import spike_distance

__all__ = ["FEATURES", "FLAG_CLASSES", "PsfShape", "detection_features"]

#: Classes whose flags enter the features (BG has no bit).
FLAG_CLASSES = tuple(c.abbr for c in CLASSES if c.bit)
FEATURES = (
    [f"iso_{a}" for a in FLAG_CLASSES] + [f"core_{a}" for a in FLAG_CLASSES]
    + ["iso_zero", "core_zero", "r50_psf", "peak_frac_psf", "sharpness", "area_beams", "elongation",
       "trail_angle", "trail_dist", "back_rel", "noise_rel", "log_snr", "sat_dist", "edge_dist", "log_flux",
       "spike_dist", "nn_dist", "n_within_5fwhm", "psf_r2", "psf_r2_narrow", "psf_r2_broad", "psf_flux_frac",
       "zero_split", "psf_q", "elong_psf", "psf_angle"]
)
_PSF_SCALES = (1.0, 0.6, 1.6)  # Gaussian widths fitted, in PSF widths (the PSF's first)
_FAR = 500.0  # px: "none near" for the distance features
_KERNEL_REACH = 2  # px: how far from a zero-weight pixel detection filters keep an object's pixels
_MAX_GAP = 7  # px: widest gap across which two objects may be one (a 3-px zero line and its reach each side)
_NO_SPLIT = -3.0  # zero_split with no object across a gap: a flux ratio of 1e-3


@dataclass(frozen=True)
class PsfShape:
    """The frame's PSF shape beside its FWHM (the geometric mean of its axes'):
    axis ratio, major axis angle from +x [rad], and whether it is trailed (a
    round core drawn along its major axis, :func:`~maxidetect.maps.frame.elliptical_gaussian`)."""

    q: float = 1.0
    theta: float = 0.0
    trailed: bool = False

    @classmethod
    def from_header(cls, header) -> PsfShape:
        """From the maps' header cards (MDPSFQ, MDPSFTH, MDPSFTR); round where they are missing."""
        if header is None or header.get("MDPSFQ") is None:
            return cls()
        return cls(q=float(np.clip(header["MDPSFQ"], 0.05, 1.0)), theta=float(np.radians(header.get("MDPSFTH", 0.0))),
                   trailed=bool(header.get("MDPSFTR", False)))

    @property
    def round(self) -> bool:
        return self.q >= 1.0 and not self.trailed

    def profile(self, dx, dy, fwhm: float, scale: float = 1.0):
        """The PSF at offsets ``dx``, ``dy`` [px] of width ``scale`` times its own: a round one
        integrated over the pixel exactly (peak 1 before), else as
        :func:`~maxidetect.maps.frame.elliptical_gaussian` approximates it (peak 1)."""
        if self.round:
            from scipy.special import erf

            q = np.sqrt(2.0) * scale * fwhm / 2.3548
            return (0.5 * (erf((dy + 0.5) / q) - erf((dy - 0.5) / q))
                    * 0.5 * (erf((dx + 0.5) / q) - erf((dx - 0.5) / q)))
        return elliptical_gaussian(dx, dy, (scale * fwhm / 2.3548) ** 2, self.q, self.theta, self.trailed)

    def half_length(self, fwhm: float) -> float:
        """How far its centre may lie from its brightest pixel along the major axis [px]: a trailed
        PSF's segment half-length (its top is flat), else 0."""
        if not self.trailed or self.q >= 1.0:
            return 0.0
        return float(segment_half((fwhm / 2.3548) ** 2, self.q))

    def _grid(self, fwhm: float, scale: float = 1.0):
        reach = int(np.ceil(scale * (4 * fwhm / np.sqrt(self.q) + self.half_length(fwhm)))) + 2
        off = np.arange(-reach, reach + 1, dtype=np.float64)
        return off, self.profile(off[None, :], off[:, None], fwhm, scale)

    def total(self, fwhm: float, scale: float = 1.0) -> float:
        """The flux of :meth:`profile` (peak 1)."""
        return float(self._grid(fwhm, scale)[1].sum())

    def peak_and_r50(self, fwhm: float) -> tuple[float, float]:
        """Its centred peak pixel over its total flux, and its half-light radius [px] (a round
        one's exact, FWHM / 2; else measured on its model as the objects' are)."""
        if self.round:
            from scipy.special import erf

            return float(erf(0.5 / (np.sqrt(2) * fwhm / 2.3548)) ** 2), fwhm / 2
        off, g = self._grid(fwhm)
        c = len(off) // 2
        r, _ = sep.flux_radius(np.ascontiguousarray(g), np.array([float(c)]), np.array([float(c)]),
                               np.array([float(c)]), 0.5, subpix=5)
        return float(g[c, c] / g.sum()), float(r[0])


def _local_psf_fits(sub, valid, px, py, fwhm: float, psf: PsfShape = PsfShape()):
    """Least-squares fits of ``a + b dx + c dy + f * G`` (G the PSF scaled to unit flux at the
    peak's 3x3 centroid; for a trailed PSF, the best of centres along its major axis within its
    half-length) in a box of radius ~1.2 FWHM (along the major axis) around each peak,
    zero-weight pixels left out. Returns the R^2 of each width in :data:`_PSF_SCALES` (n, 3) and
    the PSF width's flux f (n,)."""
    h, w = sub.shape
    r = int(np.clip(np.ceil(1.2 * fwhm / np.sqrt(psf.q)), 2, 6 if psf.q >= 1.0 else 8))
    off = np.arange(-r, r + 1, dtype=np.float64)
    ys, xs = py[:, None] + off.astype(int), px[:, None] + off.astype(int)
    iy, ix = np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)
    cut = sub[iy[:, :, None], ix[:, None, :]]
    use = (((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]
           & valid[iy[:, :, None], ix[:, None, :]]).astype(np.float64)
    c3 = np.clip(cut[:, r - 1:r + 2, r - 1:r + 2], 0, None) * use[:, r - 1:r + 2, r - 1:r + 2]
    s3 = np.maximum(c3.sum(axis=(1, 2)), 1e-12)
    cy = c3.sum(axis=2) @ np.array([-1.0, 0.0, 1.0]) / s3
    cx = c3.sum(axis=1) @ np.array([-1.0, 0.0, 1.0]) / s3
    n_use = np.maximum(use.sum(axis=(1, 2)), 1.0)
    mean = (cut * use).sum(axis=(1, 2)) / n_use
    tss = np.maximum((((cut - mean[:, None, None]) ** 2) * use).sum(axis=(1, 2)), 1e-12)
    n, k = len(px), len(off)
    cols = np.empty((n, 4, k, k))
    cols[:, 0], cols[:, 1], cols[:, 2] = 1.0, off[None, :, None], off[None, None, :]
    cols = cols.reshape(n, 4, -1)
    cut, use = cut.reshape(n, -1), use.reshape(n, -1)
    half = psf.half_length(fwhm)
    shifts = np.linspace(-half, half, min(2 * int(np.ceil(half / 1.5)) + 1, 11)) if half > 0 else np.zeros(1)
    r2 = np.full((n, len(_PSF_SCALES)), -np.inf)
    flux = np.zeros(n)
    totals = [psf.total(fwhm, scale) for scale in _PSF_SCALES]
    for t in shifts:
        dy = off[None, :, None] - (cy + t * np.sin(psf.theta))[:, None, None]
        dx = off[None, None, :] - (cx + t * np.cos(psf.theta))[:, None, None]
        for j, scale in enumerate(_PSF_SCALES):
            cols[:, 3] = (psf.profile(dx, dy, fwhm, scale) / totals[j]).reshape(n, -1)
            a = cols * use[:, None, :]
            m = a @ cols.transpose(0, 2, 1)
            m += 1e-9 * np.trace(m, axis1=1, axis2=2)[:, None, None] * np.eye(4)
            theta = np.linalg.solve(m, a @ cut[..., None])
            rss = (((cut - (cols.transpose(0, 2, 1) @ theta)[..., 0]) ** 2) * use).sum(axis=1)
            fit = 1.0 - rss / tss
            if j == 0:
                flux = np.where(fit > r2[:, 0], theta[:, 3, 0], flux)
            r2[:, j] = np.maximum(r2[:, j], fit)
    return np.clip(r2, -1.0, 1.0), flux


def _zero_split(seg, zero, flux_of_label, ids) -> np.ndarray:
    """log10(flux of the brightest other object across a gap holding
    zero-weight pixels / own flux), per object of ``ids``; :data:`_NO_SPLIT`
    where there is none. A gap is a straight run (one of 8 directions) of at
    most :data:`_MAX_GAP` pixels of no object, at least one at zero weight,
    the rest next to one (the detection filter keeps objects a kernel
    radius away from zero-weight pixels). ``flux_of_label``: isophotal flux
    per segmentation label."""
    h, w = seg.shape
    if not zero.any():
        return np.full(len(ids), _NO_SPLIT)
    near = dilate(zero, _KERNEL_REACH, square=True)
    free = near & (seg == 0)  # pixels a gap may cross
    start = np.flatnonzero(((seg > 0) & dilate(free, 1, square=True)).ravel())
    y0, x0 = np.divmod(start, w)
    lab0 = seg.ravel()[start]
    best = {}
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1), (0, -1), (-1, 0), (-1, -1), (-1, 1)):
        gap = np.ones(len(start), bool)  # pixels 1..k-1 all free
        crossed = np.zeros(len(start), bool)  # ... and one at zero weight
        for k in range(1, _MAX_GAP + 2):
            y, x = y0 + k * dy, x0 + k * dx
            inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
            yc, xc = np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)
            if k > 1:
                other = seg[yc, xc]
                hit = gap & crossed & inside & (other > 0) & (other != lab0)
                for a, b in set(zip(lab0[hit].tolist(), other[hit].tolist(), strict=True)):
                    best[a] = max(best.get(a, -np.inf), flux_of_label[b])
            gap &= inside & free[yc, xc]
            crossed |= gap & zero[yc, xc]
            if not gap.any():
                break
    out = np.full(len(ids), _NO_SPLIT)
    pos = {int(v): i for i, v in enumerate(ids)}
    for a, fb in best.items():
        i = pos.get(int(a))
        if i is not None:
            fa = max(float(flux_of_label[a]), 1e-12)
            out[i] = float(np.clip(np.log10(max(float(fb), 1e-12) / fa), -3.0, 3.0))
    return out


def detection_features(image, weight, flag, segmentation, ids, fwhm: float, trails=(), header=None,
                       psf: PsfShape | None = None) -> np.ndarray:
    """Feature matrix (n, len(FEATURES)), float32, for the objects ``ids``
    (their labels in ``segmentation``) of one 2-D image.

    ``weight``/``flag`` may be None (no maps: those features are 0).
    ``psf``: the PSF's shape (FWHM ``fwhm``); None: round.
    """
    psf = psf or PsfShape()
    ids = np.asarray(ids, np.int64)
    n = len(ids)
    out = np.zeros((n, len(FEATURES)), np.float32)
    if n == 0:
        return out
    image, _ = in_usual_units(image, None)  # its floors are set in the usual units
    data = np.nan_to_num(np.asarray(image, np.float64))
    h, w = data.shape
    seg = np.asarray(segmentation)
    zero = (np.asarray(weight) <= 0) if weight is not None else np.zeros(data.shape, bool)
    flags = np.asarray(flag, np.int64) if flag is not None else np.zeros(data.shape, np.int64)
    bkg = sep.Background(data, mask=zero | (seg > 0), bw=min(64, w), bh=min(64, h))
    back, rms = bkg.back(), bkg.rms()
    sub = data - back
    col = {name: k for k, name in enumerate(FEATURES)}

    # Per-object sums over the isophote (ndimage over the segmentation labels).
    segs = Segments(seg, ids)
    area = np.maximum(segs.count.astype(np.float64), 1.0)
    f_iso = segs.values(flags)
    for c in CLASSES:
        if c.bit:
            hits = np.bincount(segs.labels, weights=(f_iso & c.bit) != 0, minlength=segs.n_labels)[segs.ids]
            out[:, col[f"iso_{c.abbr}"]] = hits / area
    out[:, col["iso_zero"]] = segs.sum(zero) / area
    flux = segs.sum(sub)
    py, px = (np.asarray(a, int) for a in segs.argmax(sub))
    peak = sub[py, px]
    # Core: the 3x3 around the peak.
    core_flags = np.zeros(n, np.int64)
    core_zero = np.zeros(n)
    neigh = np.zeros(n)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            yy, xx = np.clip(py + dy, 0, h - 1), np.clip(px + dx, 0, w - 1)
            core_flags |= flags[yy, xx]
            core_zero = np.maximum(core_zero, zero[yy, xx])
            if dy or dx:
                neigh += sub[yy, xx] / 8.0
    for c in CLASSES:
        if c.bit:
            out[:, col[f"core_{c.abbr}"]] = (core_flags & c.bit) != 0
    out[:, col["core_zero"]] = core_zero
    psf_peak, psf_r50 = psf.peak_and_r50(fwhm)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[:, col["sharpness"]] = np.where(peak > 0, (peak - neigh) / peak, 0.0)
        out[:, col["peak_frac_psf"]] = np.where(flux > 0, peak / flux, 1.0) / psf_peak
    out[:, col["area_beams"]] = area / (np.pi * (fwhm / 2) ** 2)

    # Moments of the isophote: elongation and orientation.
    # (over the labelled pixels only: no full-frame coordinate arrays)
    yy, xx = (c.astype(np.float64) for c in np.unravel_index(segs.pixels, data.shape))
    wpos = np.clip(segs.values(sub), 0, None)

    def per_object(v):
        return np.bincount(segs.labels, weights=v, minlength=segs.n_labels)[segs.ids]

    m0 = np.maximum(per_object(wpos), 1e-12)
    mx = per_object(wpos * xx) / m0
    my = per_object(wpos * yy) / m0
    mxx = per_object(wpos * xx * xx) / m0 - mx**2
    myy = per_object(wpos * yy * yy) / m0 - my**2
    mxy = per_object(wpos * xx * yy) / m0 - mx * my
    tr, det = mxx + myy, mxx * myy - mxy**2
    disc = np.sqrt(np.maximum(tr**2 / 4 - det, 0))
    a2, b2 = np.maximum(tr / 2 + disc, 1e-6), np.maximum(tr / 2 - disc, 1e-6)
    out[:, col["elongation"]] = np.sqrt(a2 / b2)
    theta = 0.5 * np.arctan2(2 * mxy, mxx - myy)  # of the major axis, from x
    out[:, col["psf_q"]] = psf.q
    out[:, col["elong_psf"]] = out[:, col["elongation"]] * psf.q
    out[:, col["psf_angle"]] = np.degrees(axis_angle(theta, psf.theta))

    # Half-light radius against the PSF's.
    r, _ = sep.flux_radius(sub, mx, my, np.maximum(6 * np.sqrt(a2), 3.0), 0.5, subpix=5)
    out[:, col["r50_psf"]] = np.nan_to_num(np.asarray(r)) / psf_r50

    # Fitted trails: the nearest one's distance and the angle to it.
    dist = np.full(n, 1e3)
    angle = np.full(n, 90.0)
    for t in trails:
        d = np.abs(mx * np.cos(t.theta) + my * np.sin(t.theta) - t.rho)
        along = -mx * np.sin(t.theta) + my * np.cos(t.theta)
        d = np.where((along >= t.t0 - 20) & (along <= t.t1 + 20), d, 1e3)
        trail_dir = t.theta + np.pi / 2  # direction along the trail
        da = np.degrees(axis_angle(theta, trail_dir))
        closer = d < dist
        dist, angle = np.where(closer, d, dist), np.where(closer, da, angle)
    out[:, col["trail_dist"]] = np.minimum(dist, 1e3) / fwhm
    out[:, col["trail_angle"]] = angle

    # Local background and noise, S/N.
    iy, ix = np.clip(np.round(my).astype(int), 0, h - 1), np.clip(np.round(mx).astype(int), 0, w - 1)
    gback, grms = float(np.median(back)), max(float(bkg.globalrms), 1e-12)
    out[:, col["back_rel"]] = (back[iy, ix] - gback) / grms
    out[:, col["noise_rel"]] = rms[iy, ix] / grms
    snr = flux / (rms[iy, ix] * np.sqrt(area))
    out[:, col["log_snr"]] = np.log10(np.clip(snr, 1e-2, None))
    out[:, col["log_flux"]] = np.log10(np.clip(flux / grms, 1e-2, None))

    # Saturated pixels and edges.
    sat = (flags & next(c.bit for c in CLASSES if c.abbr == "SAT")) != 0
    if sat.any():
        # nearest saturated pixel of each object (the same as a distance
        # transform read at the objects, without a full-frame transform)
        d, _ = cKDTree(np.argwhere(sat)).query(np.c_[iy, ix], distance_upper_bound=_FAR + 1)
        out[:, col["sat_dist"]] = np.minimum(d, _FAR) / fwhm
    else:
        out[:, col["sat_dist"]] = _FAR / fwhm
    out[:, col["spike_dist"]] = spike_distance(sub, sat, mx, my, fwhm) / fwhm
    # Crowding, from the peaks of all the objects scored together (a catalogue).
    if n > 1:
        pts = np.c_[px, py].astype(np.float64)
        tree = cKDTree(pts)
        d, _ = tree.query(pts, k=2)
        out[:, col["nn_dist"]] = np.minimum(d[:, 1], _FAR) / fwhm
        out[:, col["n_within_5fwhm"]] = tree.query_ball_point(pts, 5 * fwhm, return_length=True) - 1
    else:
        out[:, col["nn_dist"]] = _FAR / fwhm
    r2, psf_flux = _local_psf_fits(sub, ~zero, px, py, fwhm, psf)
    out[:, col["psf_r2"]], out[:, col["psf_r2_narrow"]], out[:, col["psf_r2_broad"]] = r2.T
    with np.errstate(divide="ignore", invalid="ignore"):
        out[:, col["psf_flux_frac"]] = np.clip(np.where(flux > 0, psf_flux / flux, 0.0), -1.0, 2.0)
    if zero.any():
        flux_of_label = np.zeros(max(int(seg.max()), int(ids.max())) + 1)
        flux_of_label[segs.ids] = flux
        others = np.setdiff1d(np.unique(seg), np.r_[0, segs.ids])  # objects not scored still cut the star
        if len(others):
            flux_of_label[others] = ndimage.sum(sub, seg, others)
        out[:, col["zero_split"]] = _zero_split(seg, zero, flux_of_label, ids)
    else:
        out[:, col["zero_split"]] = _NO_SPLIT
    out[:, col["edge_dist"]] = np.minimum(np.minimum(mx, w - 1 - mx), np.minimum(my, h - 1 - my)) / fwhm
    return np.nan_to_num(out, nan=0.0, posinf=1e3, neginf=-1e3).astype(np.float32)
