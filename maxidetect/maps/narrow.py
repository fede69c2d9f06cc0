"""Cosmic rays by their shape: compact sources significantly narrower than the PSF.

Nothing on the sky is sharper than the PSF. A cosmic ray blurred by charge
diffusion (a thick CCD), or a simulator's small Gaussian hit, is round and
smooth like a star: rule 1's narrowest source (0.85 PSF widths) explains it
within the noise, and neither the network nor L.A.Cosmic (made for sharp hits)
need call it. A round Gaussian fitted over a grid of widths tells: a source
whose best width is well under the PSF's, far better fitted (chi2) than by any
width a star can have, and smooth (one Gaussian explains the whole stamp: a
star under a hit does not) is a cosmic ray.

Blurred tracks are elongated: a line segment blurred across and at its ends
by one Gaussian is fitted instead (width, length, centre; along the source's
own axis), and one narrower across than the PSF by a margin is a track. What
is elongated on the sky (a galaxy seen edge on, two stars blended, a star of
an elongated PSF along its minor axis) is at least as wide across as the PSF.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, special

from maxidetect.maps.frame import touches
from maxidetect.maps.stars import _pixel_gauss

#: A source's best Gaussian sigma under this fraction of the PSF's (its narrowest axis) ...
NARROW_RATIO = 0.8
#: ... better by this much chi2 (5 sigma) than any width a star can have (:data:`STAR_MIN_RATIO`
#: of the PSF's sigma and up) ...
NARROW_DCHI2 = 25.0
STAR_MIN_RATIO = 0.85
#: ... and a smooth fit (reduced chi2, with a 10% model error) is a cosmic ray.
NARROW_SMOOTH = 2.0
#: Sources this many sigma above the sky at their peak or fainter are not tried (no fit tells).
NARROW_MIN_PEAK = 5.0
#: Light left around it (within 2 PSF widths, its own taken away) more significant than this
#: [sigma] is a source under it: left to rule 1 and the network.
NARROW_UNDER = 3.0
#: The quarter-pixel grid of centres the fits try (along each axis) [px].
_OFFSETS = np.linspace(-0.5, 0.5, 5)
#: A best Gaussian this narrow [px] is a single pixel's (the grid's floor is 0.35): no star's.
HIT_SIGMA = 0.45


def _width_chi2(sub, rms, ys, xs, hs: int, sigmas: np.ndarray):
    """Per source (peak pixel ys, xs), the chi2 of the best pixel-integrated round Gaussian
    of each width in ``sigmas`` (amplitude and background linear, centre on a quarter-pixel
    grid, 10% model error) over its (2 hs + 1)^2 stamp: (chi2 (N, n_sig), amplitude,
    centre offset index (into the quarter-pixel grid's 5 x 5)) of each width's best, and the
    profiles (n_sig, 5, 2 hs + 1) that rebuild a model."""
    offs = _OFFSETS
    grid = np.arange(-hs, hs + 1, dtype=np.float64)
    prof = _pixel_gauss(grid[None, None, :] - offs[None, :, None], sigmas[:, None, None])  # (n_sig, n_off, L)
    g = prof[:, :, None, :, None] * prof[:, None, :, None, :]  # (n_sig, off_y, off_x, L, L)
    n_sig, n_off = len(sigmas), len(offs)
    chi = np.full((len(ys), n_sig), np.inf)
    amp = np.zeros((len(ys), n_sig))
    where = np.zeros((len(ys), n_sig), int)
    win = np.arange(-hs, hs + 1)
    batch = 8  # the models are (batch, n_sig, 5, 5, 2 hs + 1, 2 hs + 1)
    for k0 in range(0, len(ys), batch):
        y, x = ys[k0:k0 + batch], xs[k0:k0 + batch]
        d = np.asarray(sub[y[:, None, None] + win[None, :, None], x[:, None, None] + win[None, None, :]], np.float64)
        r = rms[y[:, None, None] + win[None, :, None], x[:, None, None] + win[None, None, :]] if np.ndim(rms) \
            else np.full(d.shape, float(rms))
        var = np.asarray(r, np.float64) ** 2
        wt = 1.0 / var
        each = (slice(None), None, None, None)  # a stamp's value against every model
        sw, swd = wt.sum(axis=(1, 2))[each], (wt * d).sum(axis=(1, 2))[each]
        gw = g[None] * wt[each]
        swg, swgg, swgd = gw.sum(axis=(4, 5)), (gw * g[None]).sum(axis=(4, 5)), (gw * d[each]).sum(axis=(4, 5))
        a = (sw * swgd - swg * swd) / (sw * swgg - swg**2)
        b = (swd - a * swg) / sw
        model = a[..., None, None] * g[None]
        res = (d[each] - model - b[..., None, None]) ** 2 / (var[each] + (0.1 * model) ** 2)
        c2 = res.sum(axis=(4, 5)).reshape(len(y), n_sig, n_off * n_off)
        best = np.argmin(c2, axis=2)
        chi[k0:k0 + batch] = np.take_along_axis(c2, best[..., None], 2)[..., 0]
        amp[k0:k0 + batch] = np.take_along_axis(a.reshape(len(y), n_sig, -1), best[..., None], 2)[..., 0]
        where[k0:k0 + batch] = best
    return chi, amp, where, prof


def _segment_chi2(d, wt, dy0: float, dx0: float, theta: float, sigmas: np.ndarray, lengths: np.ndarray):
    """Per width in ``sigmas``, the chi2 (10% model error) of the best blurred line segment of
    that width (Gaussian sigma across, the same blur at its ends) along ``theta``: its length (of
    ``lengths``) and centre (a 3 x 3 half-pixel grid around (dy0, dx0) off the stamp's centre)
    chosen by the plain chi2, amplitude and background linear; pixels of weight ``wt`` (0:
    another source's). Pixel integration as a variance of 1/12 (the widths compared are the
    PSF's, fitted so). Returns (chi2 (n_sig,), each width's length index, the best width's
    model (unit amplitude), amplitude, width index and centre (dy, dx))."""
    h = d.shape[0] // 2
    yy, xx = np.mgrid[-h:h + 1, -h:h + 1].astype(np.float32)
    c, s = np.cos(theta), np.sin(theta)
    offs = np.array([-0.5, 0.0, 0.5])
    oy, ox = np.meshgrid(dy0 + offs, dx0 + offs, indexing="ij")
    oy, ox = oy.ravel().astype(np.float32), ox.ravel().astype(np.float32)
    u = (c * (xx[None] - ox[:, None, None]) + s * (yy[None] - oy[:, None, None])).reshape(len(oy), -1)
    v = (-s * (xx[None] - ox[:, None, None]) + c * (yy[None] - oy[:, None, None])).reshape(len(oy), -1)
    se = np.sqrt(sigmas ** 2 + 1.0 / 12.0).astype(np.float32)[:, None, None, None]
    half = (0.5 * lengths).astype(np.float32)[None, :, None, None]
    along = special.ndtr((u + half) / se) - special.ndtr((u - half) / se)  # (n_sig, n_len, n_off, n_pix)
    g = (along * np.exp(-0.5 * (v / se) ** 2)).reshape(len(sigmas), -1, u.shape[1])
    g /= g.max(axis=2, keepdims=True)
    w = wt.ravel().astype(np.float32)
    df = d.ravel().astype(np.float32)
    sw, swd, swdd = float(w.sum()), float(w @ df), float(w @ (df * df))
    swg, swgd, swgg = g @ w, g @ (w * df), (g * g) @ w
    a = (sw * swgd - swg * swd) / (sw * swgg - swg ** 2)
    b = (swd - a * swg) / sw
    plain = np.where(a > 0, swdd - a * swgd - b * swd, np.inf)
    k = np.argmin(plain, axis=1)  # (n_sig,): each width's best length and centre
    idx = np.arange(len(sigmas))
    gk, ak, bk = g[idx, k], a[idx, k], b[idx, k]
    model = ak[:, None] * gk
    var = np.where(w > 0, 1.0 / np.where(w > 0, w, 1.0), np.inf)
    chi = np.where(ak > 0, ((df - model - bk[:, None]) ** 2 / (var + (0.1 * model) ** 2)).sum(axis=1), np.inf)
    j = int(np.argmin(chi))
    n_off = len(oy)
    return (chi.astype(np.float64), k // n_off, gk[j].reshape(d.shape).astype(np.float64), float(ak[j]), j,
            (float(oy[k[j] % n_off]), float(ox[k[j] % n_off])))


def _star_under(d, noise2, hit, dy: float, dx: float, sig_psf: float) -> float:
    """The significance [sigma] of a PSF-wide source centred (dy, dx) off the stamp's centre,
    fitted beside the ``hit`` model to the sky-subtracted stamp ``d`` of variance ``noise2``.
    No background of its own: a free one takes a broad faint star's light (a S/N 13 star of FWHM
    4 px read 1.9 sigma), and light on diffuse light errs towards keeping the weight."""
    h = d.shape[0] // 2
    grid = np.arange(-h, h + 1, dtype=np.float64)
    star = np.outer(_pixel_gauss(grid - dy, sig_psf), _pixel_gauss(grid - dx, sig_psf))
    basis = np.stack([hit.ravel(), star.ravel()], axis=1)
    w = 1.0 / noise2.ravel()
    normal = basis.T @ (basis * w[:, None])
    try:
        cov = np.linalg.inv(normal)
    except np.linalg.LinAlgError:
        return 0.0
    coef = cov @ (basis.T @ (w * d.ravel()))
    return float(coef[1] / np.sqrt(max(cov[1, 1], 1e-30)))


def narrower_than_psf(sub: np.ndarray, rms, objects, segmentation: np.ndarray, sig_psf: float,
                      support: np.ndarray | None = None,
                      skip: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The sources of ``objects`` (SEP's, with ``segmentation``) that are cosmic rays by their
    shape: round (axis ratio > 0.5), peaking over :data:`NARROW_MIN_PEAK` sigma, their best
    Gaussian under :data:`NARROW_RATIO` of ``sig_psf`` (the PSF's narrowest sigma), better than
    any width from :data:`STAR_MIN_RATIO` of it by :data:`NARROW_DCHI2`, and smooth
    (reduced chi2 under :data:`NARROW_SMOOTH`); and, unless as sharp as a single pixel
    (:data:`HIT_SIGMA`), with ``support`` (bool like ``sub``: the network's faint cosmic-ray
    evidence; None: none needed) within a pixel of the peak. A real frame's PSF, measured once
    and on a few stars, can be that much broader than one of them: a S/N 40 compact source of
    SEP's NTT reference frame at 0.75 of the PSF's width (chi2 25 better), which the network
    gives a cosmic-ray probability of 0.04. Sources whose peak lies in ``skip`` are not tried.
    Elongated sources (axis ratio <= 0.5) are tried as tracks (:func:`_narrow_tracks`).
    Returns (their indices, their pixels: where their fitted light is over 2 sigma, not on
    another source's segment)."""
    h, w = sub.shape
    out = np.zeros((h, w), bool)
    if not len(objects) or not sig_psf > 0:
        return np.zeros(0, int), out
    ypk = np.asarray(objects["ypeak"], int)
    xpk = np.asarray(objects["xpeak"], int)
    noise = rms[np.clip(ypk, 0, h - 1), np.clip(xpk, 0, w - 1)] if np.ndim(rms) else np.full(len(ypk), float(rms))
    ratio = objects["b"] / np.maximum(objects["a"], 1e-6)
    bright = objects["peak"] > NARROW_MIN_PEAK * noise
    if skip is not None:
        bright &= ~skip[np.clip(ypk, 0, h - 1), np.clip(xpk, 0, w - 1)]
    peaks = (ypk, xpk)
    hits = _narrow_hits(sub, rms, objects, peaks, segmentation, sig_psf, support, bright & (ratio > 0.5), out)
    tracks = _narrow_tracks(sub, rms, objects, peaks, segmentation, sig_psf, support, bright & (ratio <= 0.5), out)
    return np.union1d(hits, tracks), out


def _narrow_hits(sub, rms, objects, peaks, segmentation, sig_psf: float, support, tried, out) -> np.ndarray:
    """The round sources of ``tried`` (bool per object) that are cosmic rays by their shape (see
    :func:`narrower_than_psf`; ``peaks``: the objects' peak pixels (y, x)). Their lit pixels are
    added to ``out``; returns their indices."""
    h, w = sub.shape
    hs = int(np.clip(np.ceil(2.5 * sig_psf), 3, 8))
    ypk, xpk = peaks
    # A star's isophotal flux over its peak is at least a centred narrowest star's, less what the
    # isophote cuts: only sources under it (and a margin) are fitted.
    s_min = STAR_MIN_RATIO * sig_psf
    centred = _pixel_gauss(np.zeros(1), s_min)[0] ** 2
    idx = np.flatnonzero(tried & (objects["flux"] < 1.2 * objects["peak"] / centred)
                         & (ypk >= hs) & (xpk >= hs) & (ypk < h - hs) & (xpk < w - hs))
    if not len(idx):
        return np.zeros(0, int)
    sigmas = np.geomspace(0.35, max(1.6 * sig_psf, 0.5), 24)
    chi, amp, where, prof = _width_chi2(sub, rms, ypk[idx], xpk[idx], hs, sigmas)
    best = np.argmin(chi, axis=1)
    star = sigmas >= s_min
    dchi = chi[:, star].min(axis=1) - chi[np.arange(len(idx)), best]
    smooth = chi[np.arange(len(idx)), best] / ((2 * hs + 1) ** 2 - 5) < NARROW_SMOOTH
    narrow = (sigmas[best] < NARROW_RATIO * sig_psf) & (dchi > NARROW_DCHI2) & smooth
    if support is not None and narrow.any():
        narrow &= touches(support, xpk[idx], ypk[idx]) | (sigmas[best] <= HIT_SIGMA)
    keep = np.zeros(len(idx), bool)
    r2 = (np.arange(-hs, hs + 1)[:, None] ** 2 + np.arange(-hs, hs + 1)[None, :] ** 2)
    for k in np.flatnonzero(narrow):
        i, j = idx[k], best[k]
        oy, ox = divmod(int(where[k, j]), prof.shape[1])
        sl = slice(ypk[i] - hs, ypk[i] + hs + 1), slice(xpk[i] - hs, xpk[i] + hs + 1)
        noise2 = np.asarray(rms[sl] if np.ndim(rms) else np.full(r2.shape, float(rms)), np.float64) ** 2
        model = amp[k, j] * np.outer(prof[j, oy], prof[j, ox])
        d = np.asarray(sub[sl], np.float64)
        # Its fitted light over 2 sigma, no further: a faint broad galaxy 4 px from a single-pixel
        # hit lost its detection to a 5 x 5 disc (a second generator's FWHM 6 px frame).
        lit = model > 2.0 * np.sqrt(noise2)
        # Nothing under it: the light left within 2 PSF widths once the hit is taken away is noise.
        # A faint star (S/N 13) 2 px from a hot pixel passes the smooth fit, and lost its detection
        # to the hot pixel's zero weight.
        back = np.sum((d - model) / noise2) / np.sum(1.0 / noise2)
        near = (r2 <= (2.0 * sig_psf) ** 2 + 2.0) & ~lit
        if np.sum(d[near] - model[near] - back) > NARROW_UNDER * np.sqrt(np.sum(noise2[near])):
            continue
        # Nor a star under its core: fitted with the hit at its centre, the PSF's own source is noise
        # (a S/N 13 star of FWHM 4 px under a blurred hit fitted as the hit alone, and was zeroed).
        if _star_under(d, noise2, model, _OFFSETS[oy], _OFFSETS[ox], sig_psf) > NARROW_UNDER:
            continue
        keep[k] = True
        seg = segmentation[sl]
        out[sl] |= lit & ((seg == 0) | (seg == i + 1))
    return idx[keep]


#: Lengths of the blurred segments fitted to elongated sources [px] (0.1: a round source).
_LENGTHS = np.r_[0.1, np.geomspace(1.0, 30.0, 24)]
#: Stamps of elongated sources reach this far at most [px]: a longer track is the network's.
_MAX_HALF = 20
#: An elongated source's best width under this fraction of the PSF's (its narrowest axis), better
#: by :data:`NARROW_DCHI2` than any from :data:`TRACK_STAR_RATIO` of it, is a track. Closer to the
#: PSF than for round sources: no star is elongated beyond the PSF, and what is (a galaxy seen
#: edge on, two stars blended) is as wide across as the PSF at least; 10% is left for the PSF
#: varying over the frame. (A track blurred by charge diffusion of 0.75 px under stars of FWHM
#: 2.3 px is 0.8-0.85 of their width.)
TRACK_RATIO = 0.85
TRACK_STAR_RATIO = 0.9


def _narrow_tracks(sub, rms, objects, peaks, segmentation, sig_psf: float, support, tried, out) -> np.ndarray:
    """The elongated sources of ``tried`` (bool per object) that are cosmic-ray tracks by their shape: a
    blurred line segment fits them best at a width under :data:`TRACK_RATIO` of the PSF's,
    better than any segment from :data:`TRACK_STAR_RATIO` of it by :data:`NARROW_DCHI2`,
    smoothly, with ``support`` within a pixel of the peak and no source under them (as for round
    ones). A galaxy seen edge on, or two stars blended, are at least as wide as the PSF across; a
    track blurred by charge diffusion is narrower. ``peaks``: the objects' peak pixels (y, x).
    Their lit pixels are added to ``out``; returns their indices."""
    h, w = sub.shape
    reach = 2.5 * sig_psf + 2.0 * np.asarray(objects["a"])
    half = np.clip(np.ceil(reach), 3, _MAX_HALF).astype(int)
    yc = np.round(np.asarray(objects["y"])).astype(int)
    xc = np.round(np.asarray(objects["x"])).astype(int)
    try_ = tried & (reach <= _MAX_HALF + 0.5) & (yc >= half) & (xc >= half) & (yc < h - half) & (xc < w - half)
    if support is not None:
        try_ &= touches(support, peaks[1], peaks[0])
    # The two widths the verdict compares with are on the grid.
    sigmas = np.union1d(np.geomspace(0.35, max(1.6 * sig_psf, 0.5), 12),
                        [TRACK_RATIO * sig_psf, TRACK_STAR_RATIO * sig_psf])
    star = sigmas >= TRACK_STAR_RATIO * sig_psf
    found = []
    for i in np.flatnonzero(try_):
        hs = half[i]
        sl = slice(yc[i] - hs, yc[i] + hs + 1), slice(xc[i] - hs, xc[i] + hs + 1)
        d = np.asarray(sub[sl], np.float64)
        noise2 = np.asarray(rms[sl] if np.ndim(rms) else np.full(d.shape, float(rms)), np.float64) ** 2
        seg = segmentation[sl]
        mine = (seg == 0) | (seg == i + 1)
        wt = np.where(mine, 1.0 / noise2, 0.0)
        # Lengths near the one its moments give (a^2 = L^2 / 12 + b^2 for a segment), for speed.
        est = np.sqrt(12.0 * max(float(objects["a"][i]) ** 2 - float(objects["b"][i]) ** 2, 0.0))
        lengths = _LENGTHS[(_LENGTHS <= 2 * hs) & (_LENGTHS >= 0.5 * est) & (_LENGTHS <= 2.0 * est + 1.0)]
        lengths = np.union1d(_LENGTHS[:1], lengths)
        theta = float(objects["theta"][i])
        chi, li, g, amp, j, (dy, dx) = _segment_chi2(d, wt, float(objects["y"][i]) - yc[i],
                                                     float(objects["x"][i]) - xc[i], theta, sigmas, lengths)
        best = chi[j]
        if not (sigmas[j] < TRACK_RATIO * sig_psf and chi[star].min() - best > NARROW_DCHI2
                and best / max(int(mine.sum()) - 6, 1) < NARROW_SMOOTH):
            continue
        model = amp * g
        lit = model > 2.0 * np.sqrt(noise2)
        back = np.sum(wt * (d - model)) / np.sum(wt)
        near = ndimage.binary_dilation(model > 0.05 * amp, iterations=max(1, int(round(2.0 * sig_psf)))) & ~lit & mine
        if np.sum(d[near] - model[near] - back) > NARROW_UNDER * np.sqrt(np.sum(noise2[near])):
            continue
        # Nor a star under any part of it: at its centre, its ends, its brightest pixel, or where the
        # light it leaves peaks (second generator: a S/N 34 star at a track's end, in a dense field,
        # and a S/N 13 one beside a track's end, in a crowded field, were zeroed with them).
        ct, st = np.cos(theta), np.sin(theta)
        end = 0.5 * lengths[li[j]]
        py, px = np.unravel_index(np.argmax(np.where(lit, d, -np.inf)), d.shape)
        left = ndimage.gaussian_filter(np.where(mine, d - model - back, 0.0), sig_psf)
        ry, rx = np.unravel_index(np.argmax(np.where(near | lit, left, -np.inf)), d.shape)
        at = [(dy, dx), (dy + end * st, dx + end * ct), (dy - end * st, dx - end * ct), (py - hs, px - hs),
              (ry - hs, rx - hs)]
        # A track's deposit varies along it (a wandering ionisation path): 20% of the model as its error
        # (with the fit's 10%, a bright track's knots passed for stars under it).
        dm, nm = np.where(mine, d, 0.0), np.where(mine, noise2 + (0.2 * model) ** 2, 1e30)
        if max(_star_under(dm, nm, model, ay, ax, sig_psf) for ay, ax in at) > NARROW_UNDER:
            continue
        found.append(i)
        out[sl] |= lit & mine
    return np.asarray(found, int)
