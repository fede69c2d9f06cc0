"""Diffraction spikes of saturated stars: the frame's spike angle, the
distance to the spike lines, and whether a pixel sits on a visible spike.

The maps use it to tell a spike (the network calls its sharp pixels cosmic
rays, most of all in undersampled frames) from a cosmic ray; the detection
score to weigh a detection's distance to a spike.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from maxidetect.maps.morph import component_shapes, dilate

__all__ = ["FAR", "spike_angle", "spike_distance", "on_spikes", "network_spikes", "spike_stars"]

FAR = 500.0  # px: "none near"


def spike_angle(sub: np.ndarray, stars: list[tuple[float, float, float]], fwhm: float,
                min_significance: float = 6.0, bin_deg: float = 2.0) -> float | None:
    """The frame's diffraction-spike angle (radians, modulo pi/2), or None.

    Four spikes at right angles (a secondary mirror on a cross of vanes, the
    common case) are one line at one angle modulo 90 degrees. Around each of
    the brightest saturated stars ``(y, x, radius)``, the light in an
    annulus, less its median at each radius (the halo), is folded modulo 90
    degrees and its median taken over radius per angle bin: a spike is there
    at every radius, a neighbouring star or a cosmic ray at a few. The
    profiles of the stars add; the peak is the angle, None when it is not
    ``min_significance`` robust sigmas above the rest (no spikes, or not four).
    """
    h, w = sub.shape
    nbin = int(round(90 / bin_deg))
    total, used = np.zeros(nbin), 0
    for cy, cx, r_sat in stars:
        r0, r1 = r_sat + 2 * fwhm, r_sat + 15 * fwhm
        y0, y1 = int(max(cy - r1, 0)), int(min(cy + r1 + 1, h))
        x0, x1 = int(max(cx - r1, 0)), int(min(cx + r1 + 1, w))
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dy, dx = yy - cy, xx - cx
        r = np.hypot(dy, dx)
        ring = (r >= r0) & (r <= r1)
        if ring.sum() < 4 * nbin:
            continue
        v = sub[y0:y1, x0:x1][ring]
        rb = ((r[ring] - r0) / max(fwhm, 1.0)).astype(int)
        halo = np.asarray(ndimage.median(v, labels=rb + 1, index=np.arange(1, rb.max() + 2)))
        res = v - halo[rb]
        psi = (np.degrees(np.arctan2(dy[ring], dx[ring])) % 90 // bin_deg).astype(int) % nbin
        prof = np.nan_to_num(np.asarray(ndimage.median(res, labels=psi + 1, index=np.arange(1, nbin + 1)),
                                        float))
        scale = 1.4826 * np.median(np.abs(prof - np.median(prof)))
        if scale > 0:
            total += (prof - np.median(prof)) / scale
            used += 1
    if not used:
        return None
    smooth = (np.roll(total, 1) + total + np.roll(total, -1)) / 3  # a spike spans ~2 bins
    spread = 1.4826 * np.median(np.abs(smooth - np.median(smooth)))
    k = int(np.argmax(smooth))
    if spread <= 0 or (smooth[k] - np.median(smooth)) / spread < min_significance:
        return None
    return float(np.radians((k + 0.5) * bin_deg)) % (np.pi / 2)


def spike_stars(sub: np.ndarray, sat: np.ndarray, fwhm: float, max_stars: int = 12):
    """(phi, [(y, x, saturated radius)]) of the frame's saturated stars and
    their spike angle, or None (no saturated star, or no spikes found)."""
    if not sat.any():
        return None
    lab, n = ndimage.label(sat, structure=np.ones((3, 3), bool))
    boxes = ndimage.find_objects(lab)
    # area, centroid and extent within each component's box (not a pass over the frame per statistic)
    area, cy, cx, span = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    for k, box in enumerate(boxes):
        yy, xx = np.nonzero(lab[box] == k + 1)
        area[k], cy[k], cx[k] = len(yy), yy.mean() + box[0].start, xx.mean() + box[1].start
        span[k] = max(box[0].stop - box[0].start, box[1].stop - box[1].start)
    keep = (area >= 4) & (span <= 400)  # not a saturated region or column
    if not keep.any():
        return None
    # (Stars with bleed trails included: on simulated frames with bleeding
    # the angle came out within 1 degree; the round cores alone were too few.)
    cy, cx, r_sat = cy[keep], cx[keep], np.sqrt(area[keep] / np.pi)
    order = np.argsort(r_sat)[::-1]
    phi = spike_angle(sub, [(cy[i], cx[i], r_sat[i]) for i in order[:max_stars]], fwhm)
    if phi is None:
        return None
    return phi, list(zip(cy, cx, r_sat, strict=True))


def _around_stars(y, x, phi, stars, fwhm):
    """Per saturated star with positions within its spikes' reach (20 FWHM
    plus 10 saturated radii): (its centre (y, x), in reach, distance to the
    star, angle from the spike direction ``phi``)."""
    for yc, xc, rs in stars:
        dy, dx = y - yc, x - xc
        r = np.hypot(dy, dx)
        reach = (r <= 20 * fwhm + 10 * rs) & (r > rs)
        if reach.any():
            yield (yc, xc), reach, r, np.arctan2(dy, dx) - phi


def spike_distance(sub: np.ndarray, sat: np.ndarray, x: np.ndarray, y: np.ndarray, fwhm: float,
                   max_stars: int = 12) -> np.ndarray:
    """Distance (px, at most ``FAR``) of each position to the nearest
    spike line of a saturated star, within the reach of its spikes (20 FWHM
    plus 10 saturated radii, a generous length: the model weighs it with the
    distance to the star)."""
    out = np.full(len(x), FAR)
    found = spike_stars(sub, sat, fwhm, max_stars) if len(x) else None
    if found is None:
        return out
    for _, reach, r, ang in _around_stars(y, x, *found, fwhm):
        # distance to the two lines through the star at phi and phi + 90 deg
        d = r * np.minimum(np.abs(np.sin(ang)), np.abs(np.cos(ang)))
        out = np.where(reach, np.minimum(out, d), out)
    return out


def on_spikes(sub: np.ndarray, rms: np.ndarray, sat: np.ndarray, y: np.ndarray, x: np.ndarray, fwhm: float,
              tol: float | None = None, min_snr: float = 2.0, stars=False) -> np.ndarray:
    """bool per position (``y``, ``x`` integer pixels): on a diffraction
    spike that is there. Within ``tol`` px of a spike line of a saturated
    star (:func:`spike_distance`'s geometry; default 1 px + the FWHM, a
    spike's half width and the angle's error) and the line itself bright on
    both sides: the median of ``sub`` 2-6 px away along the line, on each side, is
    at least ``min_snr`` times the local noise. A cosmic ray that merely lies on the
    line's extension, past the spike's end, is not. ``stars``:
    :func:`spike_stars` of ``sub``, ``sat`` and ``fwhm`` when already found
    (False: found here)."""
    y, x = np.asarray(y, int), np.asarray(x, int)
    out = np.zeros(len(y), bool)
    if not len(y):
        return out
    found = spike_stars(sub, sat, fwhm) if stars is False else stars
    if found is None:
        return out
    phi = found[0]
    tol = 1.0 + fwhm if tol is None else tol
    h, w = sub.shape
    steps = np.r_[2:7].astype(np.float64)
    for (yc, xc), reach, r, ang in _around_stars(y, x, *found, fwhm):
        for line, across, along in ((phi, np.sin(ang), np.cos(ang)), (phi + np.pi / 2, np.cos(ang), np.sin(ang))):
            near = reach & ~out & (np.abs(r * across) <= tol)
            if not near.any():
                continue
            k = np.flatnonzero(near)
            # the spike's direction through this star (unit vector), sampled
            # along it from the pixel's foot on the axis
            uy, ux = np.sin(line), np.cos(line)
            t = (r * along)[k, None]
            level = np.full(len(k), np.inf)
            for sign in (1, -1):  # each side on its own: the line must go on both ways
                sy = np.clip(np.round(yc + (t + sign * steps[None, :]) * uy).astype(int), 0, h - 1)
                sx = np.clip(np.round(xc + (t + sign * steps[None, :]) * ux).astype(int), 0, w - 1)
                level = np.minimum(level, np.median(sub[sy, sx], axis=1))
            out[k] = level >= min_snr * rms[y[k], x[k]]
    return out


#: The network's spike calls within this many pixels (taxicab) of a saturated pixel are its star's.
SPIKE_REACH = 25
#: A spike's light fades away from its star; a trail that ends by (or crosses) a saturated star is as
#: bright all along. A line of spike calls at least FLAT_LENGTH px long whose farthest third from the
#: star holds FLAT_SHARE of its nearest third's S/N or more, itself FLAT_SNR times its noise, is no
#: spike. Each third's S/N: the median of its pixels within FLAT_CORE px of the calls' axis (the calls'
#: band is several times wider than the line: its median is the sky's; a star on it, a few pixels).
FLAT_LENGTH, FLAT_SHARE, FLAT_SNR, FLAT_CORE = 100.0, 0.7, 5.0, 1.5


def network_spikes(sp: np.ndarray, sat: np.ndarray, fwhm: float, reach: int = SPIKE_REACH,
                   snr: np.ndarray | None = None) -> np.ndarray:
    """The network's spike calls (``sp``, bool) that are spikes of saturated
    stars (``sat``): its connected components within ``reach`` of a saturated
    pixel, less those that draw a line (>= 30 px, four times longer than
    wide) whose axis passes clear of every saturated pixel within reach (by
    more than 2 FWHM and 5 px). A spike points at its star; the network also
    calls faint and broad satellite trails spikes end to end (measured on the
    second generator: a 3-sigma trail across the frame, 100% SP, whose band
    of calls touched a saturated star 15 px off its axis, was never searched).
    With ``snr`` (the frame in noise units), a long line of calls as bright far
    from the star as near it is no spike either (:data:`FLAT_LENGTH`: a
    2-sigma trail 250 px long ending 5 px from a small saturated star, 100% SP)."""
    out = np.zeros(sp.shape, bool)
    if not sp.any() or not sat.any():
        return out
    lab, n = ndimage.label(sp, structure=np.ones((3, 3)))
    # within reach (taxicab, as ``reach`` cross dilations; the distance transform is 2-3x faster)
    near = ndimage.distance_transform_cdt(~sat, metric="taxicab") <= reach
    ids = np.unique(lab[near & (lab > 0)])
    ids = ids[ids > 0]
    if not len(ids):
        return out
    cy, cx, major, minor, theta = component_shapes(lab, n)  # each label's own moments
    spike = np.zeros(n + 1, bool)
    spike[ids] = True
    lines = ids[(major[ids] >= 30 / np.sqrt(12)) & (major[ids] >= 4 * minor[ids])]
    clear = max(5.0, 2.0 * fwhm)
    boxes = ndimage.find_objects(lab) if len(lines) else []
    for i in lines:
        box = boxes[i - 1]
        y0, y1 = max(box[0].start - reach, 0), box[0].stop + reach
        x0, x1 = max(box[1].start - reach, 0), box[1].stop + reach
        sy, sx = np.nonzero(sat[y0:y1, x0:x1] & dilate(lab[y0:y1, x0:x1] == i, reach))
        if len(sy):
            across = -(sx + x0 - cx[i]) * np.sin(theta[i]) + (sy + y0 - cy[i]) * np.cos(theta[i])
            spike[i] = np.abs(across).min() <= clear
            if spike[i] and snr is not None and major[i] * np.sqrt(12) >= FLAT_LENGTH:
                j = int(np.argmin(np.abs(across)))
                spike[i] = not _flat_from(snr, lab, i, box, (sy[j] + y0, sx[j] + x0), (cy[i], cx[i]), theta[i])
    return spike[lab]


def _flat_from(snr: np.ndarray, lab: np.ndarray, i: int, box, star: tuple, centre: tuple, theta: float) -> bool:
    """Whether component ``i`` of ``lab`` (its ``box``, its axis through ``centre`` (y, x) at ``theta``)
    is as bright in its farthest third from ``star`` (y, x) as in its nearest (:data:`FLAT_SHARE`)."""
    yy, xx = np.nonzero(lab[box] == i)
    yy, xx = yy + box[0].start, xx + box[1].start
    c, s = np.cos(theta), np.sin(theta)
    core = np.abs(-(xx - centre[1]) * s + (yy - centre[0]) * c) <= FLAT_CORE
    yy, xx = yy[core], xx[core]
    r = np.abs((xx - star[1]) * c + (yy - star[0]) * s)
    v = np.asarray(snr[yy, xx], np.float64)
    if len(r) < 60:
        return False
    lo, hi = float(r.min()), float(r.max())
    third = (hi - lo) / 3.0
    near, far = v[r <= lo + third], v[r >= hi - third]
    near, far = near[np.isfinite(near)], far[np.isfinite(far)]
    if len(near) < 20 or len(far) < 20:
        return False
    m_near, m_far = float(np.median(near)), float(np.median(far))
    return bool(m_far >= FLAT_SNR * 1.2533 / np.sqrt(len(far)) and m_far >= FLAT_SHARE * m_near)
