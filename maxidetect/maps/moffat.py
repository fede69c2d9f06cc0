"""The frame's PSF as a Moffat profile: its shape measured on the stellar locus, fitted to one source.

Rule 1 fits Gaussians (separable, a grid of widths and centres: fast over
thousands of stamps). A star's wings are a Moffat's, far above a Gaussian's
of the same core, and an undersampled core's peak pixel is higher: a bright
star's own pixels then lie tens of sigma off its best Gaussian. Where that
decides whether the network's call on a star was the star itself
(:func:`maxidetect.maps.stars.protect_sources`' ``explained``), the frame's
own Moffat -- beta and FWHM measured once on the stars the PSF was measured
on -- is fitted too (a second generator's Moffat stars of FWHM 1.1-1.5 px:
stars of S/N > 20 with a false cosmic-ray flag 24 -> 6 of 242).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares, minimize

#: Stars the shape is measured on (the brightest of the locus), and the fewest it needs.
MAX_STARS = 20
MIN_STARS = 5
BETA_RANGE = (1.1, 50.0)  # 50: a Gaussian, near enough
#: A member whose reduced chi2 under the first shape is this many times the median is left out.
OUTLIER_CHI2 = 3.0


def _supersample(fwhm: float) -> int:
    """Sub-pixels per axis of the pixel integration: an undersampled core changes within a pixel."""
    return 5 if fwhm < 2.5 else 3 if fwhm < 6.0 else 1


def moffat_image(shape, x0, y0, fwhm: float, beta: float, q: float = 1.0, theta: float = 0.0) -> np.ndarray:
    """A Moffat profile (1 at its centre) integrated over each pixel of a
    ``shape`` stamp, centred at (``x0``, ``y0``) [px, pixel centres at
    integers]; elliptical with axis ratio ``q`` and major axis at ``theta``
    from +x, ``fwhm`` the geometric mean of the axes' (as
    :class:`maxidetect.maps.frame.FrameStats`'). With arrays of centres,
    one stamp per centre: (n, H, W)."""
    ss = _supersample(fwhm)
    sub = (np.arange(ss) + 0.5) / ss - 0.5
    a2 = fwhm * fwhm / (4.0 * (2.0 ** (1.0 / beta) - 1.0))
    x0, y0 = np.asarray(x0, np.float64), np.asarray(y0, np.float64)
    ys = (np.arange(shape[0])[:, None] + sub).ravel()[:, None] - y0[..., None, None]
    xs = (np.arange(shape[1])[:, None] + sub).ravel()[None, :] - x0[..., None, None]
    c, s = np.cos(theta), np.sin(theta)
    u, v = xs * c + ys * s, ys * c - xs * s  # along, across the major axis
    fine = (1.0 + (u * u * q + v * v / q) / a2) ** -beta
    return fine.reshape(*x0.shape, shape[0], ss, shape[1], ss).mean(axis=(-3, -1))


#: Spacing [px] of the centres a trailed Moffat is averaged over along its segment.
TRAIL_STEP = 0.5


def trailed_moffat_image(shape, x0, y0, fwhm: float, beta: float, half: float, theta: float) -> np.ndarray:
    """A round Moffat core (``fwhm``, ``beta``) drawn along a segment of half-length ``half`` at
    ``theta`` from +x (a tracking error's PSF, as :func:`maxidetect.maps.frame.trailed_gaussian`):
    the mean of the core at centres :data:`TRAIL_STEP` apart along it, each pixel-integrated on 3
    sub-pixels per axis at most (the segment blurs along it)."""
    t = np.linspace(-half, half, max(2, int(np.ceil(2 * half / TRAIL_STEP)) + 1))
    x0, y0 = np.asarray(x0, np.float64)[..., None], np.asarray(y0, np.float64)[..., None]
    # A round core, in float32 (3x faster over the centres; 1e-6 of the peak off, against the
    # 4% shape error the fits allow): the measure and the fits of a trailed frame's Moffat.
    ss = min(_supersample(fwhm), 3)
    sub = ((np.arange(ss) + 0.5) / ss - 0.5).astype(np.float32)
    a2 = np.float32(fwhm * fwhm / (4.0 * (2.0 ** (1.0 / beta) - 1.0)))
    cx, cy = (x0 + t * np.cos(theta)).astype(np.float32), (y0 + t * np.sin(theta)).astype(np.float32)
    ys = (np.arange(shape[0], dtype=np.float32)[:, None] + sub).ravel()[:, None] - cy[..., None, None]
    xs = (np.arange(shape[1], dtype=np.float32)[:, None] + sub).ravel()[None, :] - cx[..., None, None]
    fine = np.exp(np.float32(-beta) * np.log1p((xs * xs + ys * ys) / a2))
    img = fine.reshape(*cx.shape, shape[0], ss, shape[1], ss).mean(axis=(-3, -1))
    return img.mean(axis=-3).astype(np.float64)


def _chi2_linear(d, w, m) -> np.ndarray:
    """chi2 of ``d`` = a m + b with amplitude and background fitted (weighted least squares), per
    stamp of (n, H, W) stacks."""
    def tot(x):
        return x.sum(axis=(-2, -1))
    sw, swd, swm, swmm, swmd = tot(w), tot(w * d), tot(w * m), tot(w * m * m), tot(w * d * m)
    det = sw * swmm - swm * swm
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (sw * swmd - swm * swd) / det
        b = (swd - a * swm) / sw
        chi2 = tot(w * (d - a[..., None, None] * m - b[..., None, None]) ** 2)
    return np.where(det > 0, chi2, np.inf)


@dataclass(frozen=True)
class MoffatPSF:
    """A frame's PSF shape: FWHM [px] and beta; axis ratio and angle as the frame's; ``half`` > 0:
    trailed (a round core of that FWHM drawn along a segment of that half-length at ``theta``)."""

    fwhm: float
    beta: float
    q: float = 1.0
    theta: float = 0.0
    half: float = 0.0

    def image(self, shape, x0: float, y0: float) -> np.ndarray:
        if self.half > 0:
            return trailed_moffat_image(shape, x0, y0, self.fwhm, self.beta, self.half, self.theta)
        return moffat_image(shape, x0, y0, self.fwhm, self.beta, self.q, self.theta)

    def fit(self, d: np.ndarray, var: np.ndarray, use: np.ndarray, x0: float, y0: float,
            shape_error: float = 0.0):
        """The source model (amplitude, centre and a constant background free)
        fitted to the stamp ``d`` over the pixels ``use``, starting from
        (``x0``, ``y0``): (model incl. background, (amplitude, x, y,
        background)); None when the fit fails or its centre leaves the
        start by more than a pixel and a half. With ``shape_error``, that
        fraction of the first fit's model joins the noise of a second: a bright
        undersampled core's peak pixel no longer sets the fit alone (a hit on
        it pulled the amplitude up until the hit fitted)."""
        if use.sum() <= 4:
            return None
        dd = d[use]
        peak = float(d[int(round(np.clip(y0, 0, d.shape[0] - 1))), int(round(np.clip(x0, 0, d.shape[1] - 1)))])
        p = np.array([max(peak, 1e-6), x0, y0, 0.0])
        v = var[use]
        for _ in range(2 if shape_error > 0 else 1):
            w = np.sqrt(1.0 / v)

            def resid(q, w=w):
                return (dd - q[0] * self.image(d.shape, q[1], q[2])[use] - q[3]) * w
            try:
                p = least_squares(resid, p, method="lm", x_scale="jac", ftol=1e-4, xtol=1e-4).x
            except (ValueError, np.linalg.LinAlgError):
                return None
            if not (np.all(np.isfinite(p)) and p[0] > 0 and np.hypot(p[1] - x0, p[2] - y0) <= 1.5):
                return None
            model = p[0] * self.image(d.shape, p[1], p[2]) + p[3]
            v = var[use] + (shape_error * np.maximum(model - p[3], 0.0)[use]) ** 2
        return model, tuple(float(a) for a in p)


def measure_moffat(sub: np.ndarray, rms: np.ndarray, stars_xy: np.ndarray, fwhm: float, q: float = 1.0,
                   theta: float = 0.0, half: float = 0.0) -> MoffatPSF | None:
    """The Moffat (beta, FWHM; the frame's axis ratio and angle) that fits
    the :data:`MAX_STARS` brightest stars at ``stars_xy`` ((n, 2) x, y: the
    locus the PSF was measured on, :class:`maxidetect.maps.frame.FrameStats`'
    ``psf_stars``) best, from ``fwhm`` (the Gaussian measure) on; None with
    fewer than :data:`MIN_STARS` usable stars. Each star's centre comes from
    a first fit (beta 3); the shape is then the one of least chi2 summed
    over the stars (Nelder-Mead in log beta and log FWHM, amplitudes and
    backgrounds linear), the centres fitted again with it once, members it
    fits far worse than the rest (:data:`OUTLIER_CHI2`) left out, and the
    shape again. Beta 50 (the range's end) is a Gaussian: a locus that holds
    cosmic-ray hits blurred to a star's width gives that, and the Moffat then
    explains nothing the Gaussian did not. ``half`` > 0: a trailed PSF (``fwhm`` its round core's,
    ``q`` then unused), the segment fixed, the core's shape measured."""
    h, w = sub.shape
    if half <= 0:
        hs = int(np.clip(np.ceil(1.5 * fwhm) + 2, 4, 10))
    else:  # the whole streak in the stamp
        hs = int(np.clip(np.ceil(1.5 * fwhm + half) + 2, 4, 14))
    stamps = []
    for x, y in np.asarray(stars_xy, float).reshape(-1, 2):
        cy, cx = int(round(y)), int(round(x))
        if cy - hs < 0 or cx - hs < 0 or cy + hs >= h or cx + hs >= w:
            continue
        sl = (slice(cy - hs, cy + hs + 1), slice(cx - hs, cx + hs + 1))
        d = np.asarray(sub[sl], np.float64)
        var = np.maximum(np.asarray(rms[sl], np.float64), 1e-12) ** 2
        stamps.append((float(d.max() / np.sqrt(var.mean())), d, var, x - cx + hs, y - cy + hs))
    stamps = sorted(stamps, key=lambda t: -t[0])[:MAX_STARS]
    if len(stamps) < MIN_STARS:
        return None
    every = np.ones(stamps[0][1].shape, bool)
    data = np.stack([t[1] for t in stamps])
    weight = 1.0 / np.stack([t[2] for t in stamps])

    def centres(psf, keep):
        xy = []
        for k in keep:
            _, d, var, x0, y0 = stamps[k]
            f = psf.fit(d, var, every, x0, y0)
            xy.append(f[1][1:3] if f is not None else (x0, y0))
        return np.array(xy)

    def chi2(fw, beta, xy, keep):
        model = MoffatPSF(fw, beta, q, theta, half).image(data.shape[1:], xy[:, 0], xy[:, 1])
        return _chi2_linear(data[keep], weight[keep], model)

    def cost(p, xy, keep):
        beta, fw = np.exp(p)
        if not (BETA_RANGE[0] <= beta <= BETA_RANGE[1]) or not 0.3 * fwhm <= fw <= 2.0 * fwhm:
            return np.inf
        return float(chi2(fw, beta, xy, keep).sum())

    psf = MoffatPSF(0.9 * fwhm, 3.0, q, theta, half)
    keep = np.arange(len(stamps))
    for iters in (60, 30):
        xy = centres(psf, keep)
        if iters < 60:
            # Members the first shape fits far worse than the rest are no stars (cosmic-ray hits
            # that passed for the locus, brighter than its stars: beta came out a Gaussian's).
            rchi = chi2(psf.fwhm, psf.beta, xy, keep) / (data[0].size - 4)
            good = rchi <= OUTLIER_CHI2 * np.median(rchi)
            if good.sum() >= MIN_STARS:
                keep, xy = keep[good], xy[good]
        r = minimize(cost, np.log([psf.beta, psf.fwhm]), args=(xy, keep), method="Nelder-Mead",
                     options={"xatol": 0.005, "fatol": 0.01, "maxiter": iters})
        if not np.isfinite(r.fun):
            return None
        beta, fw = np.exp(r.x)
        psf = MoffatPSF(float(fw), float(beta), q, theta, half)
    return psf
