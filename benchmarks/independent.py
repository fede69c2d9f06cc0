"""The maps and ``--clean`` on frames from a second, independent generator.

``maxidetect bench`` simulates with ``maxidetect.validation.simulate``, the
generator the score model was trained on; a tool tuned to one generator can
fail on the sky. Here the frames come from astropy's models instead: Moffat
stars (pixel-integrated by 5x5 oversampling, FWHM and beta drawn per frame),
Sersic galaxies convolved with the PSF, a sky gradient, Poisson and read
noise in electrons, saturation with charge bleeding along the columns, and
defects drawn by other rules than the simulator's: cosmic rays as wandering
tracks deposited bilinearly (and single-pixel hits), hot and cold pixels, a
hot column segment, and (in most frames) a satellite trail that may end
inside the frame; in the ``diffused`` variant the cosmic rays are blurred as
by charge diffusion in a thick CCD; in ``amplifiers`` the frame's right half was
read at another level and gain; in ``edges`` hot columns at one edge and dead
ones at the other; in ``spikes`` every bright star has a reflector's four diffraction spikes;
in ``cmos`` every row and column sits at its own offset (a CMOS sensor's fixed pattern); in
``glints`` the trail comes in bright dashes (a tumbling satellite).
Nothing is fitted to these frames.

For each frame, SEP and SExtractor run with no mask, with the network's maps alone, with
the default fused maps, and with those maps and ``--clean`` (the rows with
``MD_CONTAM`` at or above the model's threshold dropped). Matching and
scoring are the bench's (:func:`maxidetect.validation.scoring.score_catalog`).
*Lost*: true sources with expected S/N > 20 that the no-mask run finds and
a masked run does not, with the zero-weight pixels within 1 FWHM of each.

    .venv/bin/python benchmarks/independent.py [--frames 3] [--size 1024]
        [--variants default,undersampled,...] [--engines SEP,SExtractor]  (default: every variant of VARIANTS)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.modeling.models import Moffat2D, Sersic2D
from astropy.table import Table
from scipy import ndimage, signal

from maxidetect.classes import CLASSES
from maxidetect.extract.config import SexConfig
from maxidetect.files import write_hdulist_atomic
from maxidetect.maps.policy import MapPolicy
from maxidetect.maps.writer import maps_from_masks
from maxidetect.masks.maker import MaskMaker
from maxidetect.score.catalogs import Scorer
from maxidetect.score.model import load_score_model
from maxidetect.validation.bench import _write_maps, _zero_near, run_engine
from maxidetect.validation.scoring import score_catalog

HERE = Path(__file__).resolve().parent
BIT = {c.abbr: c.bit for c in CLASSES}
VARIANTS = {
    "default": {"fwhm": (2.5, 4.5), "density": 1.0},
    "undersampled": {"fwhm": (1.5, 2.1), "density": 1.0},
    "crowded": {"fwhm": (2.5, 4.5), "density": 4.0},
    # Tracking errors, coma, astigmatism: an elliptical PSF (axis ratio 0.55-0.75, FWHM along the major axis).
    "elongated": {"fwhm": (2.0, 3.6), "density": 1.0, "q": (0.55, 0.75)},
    # A bare header (no GAIN, RDNOISE, SATURATE): everything from the pixels.
    "bare": {"fwhm": (1.6, 4.5), "density": 1.0, "bare": True},
    # A dark sky (narrow band, UV, short exposures): read noise dominates.
    "dark": {"fwhm": (1.6, 4.5), "density": 1.0, "sky": (5.0, 40.0), "bare": True},
    # Below every range the tools were built on: FWHM 1.1-1.5 px (space imaging, binned cameras).
    "sharp": {"fwhm": (1.1, 1.5), "density": 1.0},
    # A pipeline-reduced frame: the sky model subtracted (pixels around 0, half negative), bare header.
    "skysub": {"fwhm": (1.6, 4.5), "density": 1.0, "bare": True, "skysub": True},
    # The same with the raw frame's header kept (GAIN and RDNOISE no longer describe the sky's noise).
    "reduced": {"fwhm": (1.6, 4.5), "density": 1.0, "skysub": True},
    # Above every range: bad seeing or a defocused camera, FWHM 6-10 px.
    "wide": {"fwhm": (6.0, 10.0), "density": 1.0},
    # A deep extragalactic field: four times the galaxies (not PSF-shaped, so rule 1 cannot vouch for them).
    "galaxies": {"fwhm": (1.6, 4.5), "density": 1.0, "galaxies": 4.0},
    # A bulge or cluster field: twelve times the stars, blends everywhere.
    "dense": {"fwhm": (1.6, 4.5), "density": 12.0},
    # A thick, deep-depletion CCD: charge diffuses before it is collected, so cosmic rays (tracks
    # and single hits) are blurred by a Gaussian of sigma 0.4-0.8 px, no longer sharper than the PSF.
    "diffused": {"fwhm": (1.6, 4.5), "density": 1.0, "cr_blur": (0.4, 0.8)},
    # A frame read by two amplifiers whose levels were not matched: the right half 2-8 sigma
    # higher and up to 6% more gain (the step a smooth background cannot follow).
    "amplifiers": {"fwhm": (1.6, 4.5), "density": 1.0, "amps": (2.0, 8.0)},
    # A CCD's edges: 1-4 hot (glowing) columns at one side, 3-15 sigma, and the opposite
    # side's 1-3 columns dead (a fraction 0.2-0.6 of the sky's response).
    "edges": {"fwhm": (1.6, 4.5), "density": 1.0, "edges": (3.0, 15.0)},
    # A single exposure warped onto a survey's grid (as SWarp or a difference-imaging pipeline does):
    # a sub-pixel shift and a rotation of up to 3 degrees by cubic-spline interpolation, so the noise
    # is correlated between neighbours, every defect is smoothed and rings, and the corners are NaN.
    "resampled": {"fwhm": (1.6, 4.5), "density": 1.0, "resample": 3.0},
    # A nearby disc galaxy or two, 60-240 px across (r_eff 30-120 px), mostly edge-on (axis ratio
    # 0.04-0.35), a dust lane in half of them: bright straight lines that are real sources.
    "discs": {"fwhm": (1.6, 4.5), "density": 1.0, "discs": (1, 2)},
    # A reflector's spider: every star above 30x the faintest gets four diffraction spikes (the
    # frame's position angle), thin lines whose light falls as the inverse square of the distance.
    "spikes": {"fwhm": (1.6, 4.5), "density": 1.0, "spikes": True},
    # A CMOS sensor's fixed pattern: every row and every column at its own offset (0.3-0.8 sigma
    # rms), which the sky's per-column and per-row statistics see as many faint lines.
    "cmos": {"fwhm": (1.6, 4.5), "density": 1.0, "pattern": (0.3, 0.8)},
    # A tumbling satellite: its trail in bright dashes (20-60% of a 40-160 px period), 0-20% as
    # bright between them.
    "glints": {"fwhm": (1.6, 4.5), "density": 1.0, "glints": True},
    # A tracking error (wind shake, a drifting mount): every star and galaxy smeared along one
    # direction into a streak 5-16 px long, as bright as a cosmic-ray track and as straight.
    "drift": {"fwhm": (1.6, 3.5), "density": 1.0, "drift": (5.0, 16.0)},
    # The same in good seeing (FWHM 1.1-1.6 px across): each streak as sharp as a cosmic-ray track.
    "sharpdrift": {"fwhm": (1.1, 1.6), "density": 1.0, "drift": (5.0, 16.0)},
    # Wind shake or a periodic tracking error: the mount dwells at both ends of its excursion, so each
    # streak has a knot at either end (15-35% of the light each) joined by a fainter bridge.
    "jitter": {"fwhm": (1.3, 3.0), "density": 1.0, "drift": (5.0, 14.0), "dwell": (0.15, 0.35)},
    # A guiding jump half-way through: every star twice, 2.5-8 px apart, the first copy 30-70% of it.
    "double": {"fwhm": (1.3, 3.0), "density": 1.0, "drift": (2.5, 8.0), "jump": (0.3, 0.7)},
}
OVERSAMPLE = 5


def _render(model, x: float, y: float, radius: int, flux: float, kernel=None):
    """(stamp, y0, x0): ``model`` centred at (x, y), integrated over pixels by
    oversampling, optionally convolved with ``kernel`` (oversampled), scaled
    to ``flux`` in total."""
    ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    n = 2 * radius + 1
    sub = (np.arange(n * OVERSAMPLE) + 0.5) / OVERSAMPLE - 0.5 - radius
    yy, xx = np.meshgrid(sub + iy - y, sub + ix - x, indexing="ij")
    fine = model(xx, yy)
    if kernel is not None:
        fine = signal.fftconvolve(fine, kernel, mode="same")
    stamp = fine.reshape(n, OVERSAMPLE, n, OVERSAMPLE).sum(axis=(1, 3))
    total = stamp.sum()
    return (flux * stamp / total if total > 0 else stamp), iy - radius, ix - radius


def _add(image, stamp, y0, x0):
    h, w = image.shape
    ys, xs = slice(max(y0, 0), min(y0 + stamp.shape[0], h)), slice(max(x0, 0), min(x0 + stamp.shape[1], w))
    if ys.start < ys.stop and xs.start < xs.stop:
        image[ys, xs] += stamp[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]


def track_deposits(shape, x: float, y: float, ang: float, n_steps: int, rng):
    """A cosmic-ray track wandering from (x, y) in half-pixel steps (its angle
    drifting by 0.08 rad per step), deposited bilinearly: (row, column,
    weight) of each deposit inside ``shape``."""
    h, w = shape
    for _ in range(n_steps):
        ang += rng.normal(0, 0.08)
        x, y = x + 0.5 * np.cos(ang), y + 0.5 * np.sin(ang)
        ix, iy = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - ix, y - iy
        for dy, dx, wt in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy),
                           (1, 1, fx * fy)):
            if 0 <= iy + dy < h and 0 <= ix + dx < w:
                yield iy + dy, ix + dx, wt


def make_frame(seed: int, size: int = 1024, variant: str = "default", trail=None):
    """(image float32, header, truth catalogue, truth bit mask int32, frame parameters).

    ``trail``: None, the drawn trail (60% of frames); False, none; a dict, a
    trail forced onto the frame: ``snr`` its peak per pixel in sky-noise
    sigmas, ``fwhm`` its width across [px], ``length`` [px] (None: through
    the frame) and ``angle`` [deg] (drawn when left out)."""
    rng = np.random.default_rng([seed, 7])  # a stream of its own: not the simulator's seeds
    spec = VARIANTS[variant]
    area = (size / 1024) ** 2
    fwhm = rng.uniform(*spec["fwhm"])
    beta = rng.uniform(2.5, 4.5)
    gamma = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    gain, rdnoise = rng.uniform(1.0, 3.0), rng.uniform(3.0, 8.0)  # e-/ADU, e-
    sky = rng.uniform(*spec.get("sky", (300.0, 3000.0)))  # ADU
    saturate = rng.uniform(30000.0, 60000.0)
    var_pix = sky / gain + (rdnoise / gain) ** 2  # ADU^2
    yy, xx = np.mgrid[0:size, 0:size]
    light = np.zeros((size, size))
    rows = []
    psf, q, psf_angle = Moffat2D(1.0, 0.0, 0.0, gamma, beta), 1.0, 0.0
    if "q" in spec:  # the circular profile on stretched, rotated coordinates
        q, psf_angle = rng.uniform(*spec["q"]), rng.uniform(0, np.pi)
        circ, c, s = psf, np.cos(psf_angle), np.sin(psf_angle)

        def psf(x, y):
            return circ(x * c + y * s, (-x * s + y * c) / q)
    drift = 0.0
    if "drift" in spec:  # its own random stream: the circular profile averaged along a segment
        r_dr = np.random.default_rng([seed, 16])
        drift, psf_angle = r_dr.uniform(*spec["drift"]), r_dr.uniform(0, np.pi)
        steps = np.linspace(-drift / 2, drift / 2, int(4 * drift) + 1)
        point, c, s = psf, np.cos(psf_angle), np.sin(psf_angle)
        if "dwell" in spec or "jump" in spec:
            if "dwell" in spec:  # a share of the time held at each end
                a, b = r_dr.uniform(*spec["dwell"], 2)
                weights = np.full(len(steps), (1 - a - b) / len(steps))
            else:  # no time in between
                a = r_dr.uniform(*spec["jump"])
                b, weights = 1 - a, np.zeros(len(steps))
            weights[0] += a
            weights[-1] += b
            steps, weights = steps[weights > 0], weights[weights > 0] / weights.sum()
        else:
            weights = None

        def psf(x, y):
            if weights is not None:
                return sum(w * point(x - t * c, y - t * s) for t, w in zip(steps, weights, strict=True))
            return sum(point(x - t * c, y - t * s) for t in steps) / len(steps)
    sig = fwhm / 2.3548  # noise-equivalent area of the PSF (Gaussian approximation; a streak's length
    a_eff = 2.266 * fwhm**2 * q * np.sqrt(1 + drift**2 / 12 / sig**2)  # as a box's variance)
    if "dwell" in spec or "jump" in spec:  # knots: the pixelated PSF's own 1 / sum(p^2)
        a_eff = 1.0 / float(np.sum(_render(psf, 0.0, 0.0, int(3 * fwhm + drift), 1.0)[0] ** 2))
    f_min = 2.5 * np.sqrt(a_eff * var_pix)  # S/N ~ 2.5: the faintest drawn
    # Stars: N(>F) ~ F^-0.75 (Euclidean counts), up to well past saturation.
    n_stars = rng.poisson(320 * area * spec["density"])
    flux = np.minimum(f_min * rng.random(n_stars) ** (-1 / 0.75), 400 * saturate * fwhm**2)
    spider = np.random.default_rng([seed, 13]).uniform(0, np.pi / 2) if spec.get("spikes") else None
    spike_light = np.zeros((size, size)) if spider is not None else 0.0  # a contaminant's, kept apart
    for f in flux:
        x, y = rng.uniform(-5, size + 5, 2)
        radius = int(np.clip(fwhm * (3 + 3 * np.log10(max(f / f_min, 1.0))), 6, 120) + drift / 2)
        _add(light, *_render(psf, x, y, radius, f))
        rows.append((x, y, f, "star", a_eff))
        if spider is not None and f > 30 * f_min:
            _spikes(light, x, y, f, spider, fwhm, np.sqrt(var_pix), xx, yy)
            _spikes(spike_light, x, y, f, spider, fwhm, np.sqrt(var_pix), xx, yy)
    # Galaxies: Sersic profiles convolved with the PSF.
    kr = int(np.ceil(3 * fwhm + drift / 2))
    k_sub = (np.arange((2 * kr + 1) * OVERSAMPLE) + 0.5) / OVERSAMPLE - 0.5 - kr
    ky, kx = np.meshgrid(k_sub, k_sub, indexing="ij")
    kernel = psf(kx, ky)
    kernel /= kernel.sum()
    for _ in range(rng.poisson(140 * area * spec.get("galaxies", 1.0))):
        x, y = rng.uniform(0, size, 2)
        r_eff, n_s = rng.uniform(1.5, 6.0), rng.uniform(0.6, 4.0)
        ell, theta = rng.uniform(0.0, 0.6), rng.uniform(0, np.pi)
        f = min(2 * f_min * rng.random() ** (-1 / 0.6), 100 * saturate)
        model = Sersic2D(1.0, r_eff, n_s, 0.0, 0.0, ell, theta)
        radius = int(np.clip(4 * r_eff + 2 * fwhm, 8, 60) + drift / 2)
        _add(light, *_render(model, x, y, radius, f, kernel))
        rows.append((x, y, f, "galaxy", 2.266 * (fwhm**2 + (1.5 * r_eff) ** 2)))
    if spec.get("discs"):  # its own random stream, as the amplifiers'
        rows += _discs(light, np.random.default_rng([seed, 12]), spec["discs"], fwhm, np.sqrt(var_pix), xx, yy)
    # The true sources' own light in noise units (what the maps must never zero), before any artefact.
    source_snr = ((light - spike_light) / np.sqrt(var_pix)).astype(np.float32)
    truth = np.zeros((size, size), np.int32)
    # Satellite trail (60% of frames): Gaussian across, may end inside the frame.
    drawn = rng.random() < 0.6
    trail_deg = None
    if drawn if trail is None else bool(trail):
        ang = rng.uniform(0, np.pi)
        cx, cy = rng.uniform(0.2, 0.8, 2) * size
        t0, t1 = (-2 * size, 2 * size) if rng.random() < 0.5 else np.sort(rng.uniform(-0.7, 0.7, 2) * size)
        width = fwhm / 2.355 * rng.uniform(1.0, 1.5)
        amp = rng.uniform(1.0, 15.0)
        if trail:
            ang = np.radians(trail["angle"]) if trail.get("angle") is not None else ang
            width, amp = trail["fwhm"] / 2.3548, trail["snr"]
            half = 2 * size if trail.get("length") is None else trail["length"] / 2
            t0, t1 = -half, half
        along = (xx - cx) * np.cos(ang) + (yy - cy) * np.sin(ang)
        across = -(xx - cx) * np.sin(ang) + (yy - cy) * np.cos(ang)
        trail_deg = float(np.degrees(ang))
        line = amp * np.sqrt(var_pix) * np.exp(-0.5 * (across / width) ** 2)
        line *= (along >= t0) & (along <= t1)
        if spec.get("glints"):  # its own random stream, as the amplifiers'
            r_gl = np.random.default_rng([seed, 15])
            period, duty = r_gl.uniform(40.0, 160.0), r_gl.uniform(0.2, 0.6)
            phase = ((along - t0) / period + r_gl.uniform()) % 1.0
            line *= np.where(phase < duty, 1.0, r_gl.uniform(0.0, 0.2))  # bright dashes, faint between
        light += line
        truth[line > 0.5 * np.sqrt(var_pix)] |= BIT["TRL"]
    grad = rng.uniform(-0.15, 0.15, 2) * sky / size
    sky_map = sky + grad[0] * (xx - size / 2) + grad[1] * (yy - size / 2)
    electrons = rng.poisson(np.clip((sky_map + light) * gain, 0, None)).astype(np.float64)
    image = electrons / gain + rng.normal(0.0, rdnoise / gain, (size, size))
    # Saturation: the excess of each run bleeds along its column, half each way.
    over = image > saturate
    if over.any():
        for x in np.flatnonzero(over.any(axis=0)):
            col = image[:, x]
            lab, n = ndimage.label(col > saturate)
            for k in range(1, n + 1):
                run = np.flatnonzero(lab == k)
                extra = int(np.ceil((col[run] - saturate).sum() / saturate / 2))
                lo, hi = max(run[0] - extra, 0), min(run[-1] + extra + 1, size)
                col[lo:hi] = saturate
                truth[lo:hi, x] |= BIT["SAT"]
    noise = np.sqrt(var_pix)
    # Cosmic rays: wandering tracks deposited bilinearly, and single-pixel hits; where the
    # charge diffuses (cr_blur), deposited apart and blurred before they join the image.
    blur = spec.get("cr_blur")
    cr = np.zeros_like(image) if blur else image
    for _ in range(rng.poisson(220 * area)):
        y, x = rng.uniform(0, size, 2)
        if rng.random() < 0.35:
            ix, iy = int(x), int(y)
            cr[iy, ix] += rng.uniform(6, 300) * noise
            truth[iy, ix] |= BIT["CR"]
            continue
        ang, length = rng.uniform(0, 2 * np.pi), min(rng.exponential(8.0) + 1.5, 60.0)
        per_step = rng.uniform(4, 120) * noise
        for py, px, wt in track_deposits((size, size), x, y, ang, int(length / 0.5), rng):
            cr[py, px] += 0.5 * per_step * wt
            if 0.5 * per_step * wt > noise:
                truth[py, px] |= BIT["CR"]
    if blur:
        cr = ndimage.gaussian_filter(cr, np.random.default_rng([seed, 8]).uniform(*blur))
        image += cr
        truth = np.where(cr > noise, truth | BIT["CR"], truth & ~BIT["CR"]).astype(np.int32)
    # Hot and cold pixels, and a hot column segment.
    for _ in range(rng.poisson(40 * area)):
        iy, ix = rng.integers(0, size, 2)
        image[iy, ix] += noise * 10 ** rng.uniform(1.0, 3.0)
        truth[iy, ix] |= BIT["HP"]
    for _ in range(rng.poisson(10 * area)):
        iy, ix = rng.integers(0, size, 2)
        image[iy, ix] = rng.uniform(0.0, 0.3) * sky
        truth[iy, ix] |= BIT["DP"]
    x = rng.integers(0, size)
    y0 = rng.integers(0, size // 2)
    y1 = min(size, y0 + rng.integers(200, size))
    image[y0:y1, x] += rng.uniform(3.0, 30.0) * noise
    truth[y0:y1, x] |= BIT["HCL"]
    image = np.minimum(image, saturate)
    if spec.get("amps"):  # its own random stream: the other variants' frames stay as they were
        r_amp = np.random.default_rng([seed, 9])
        h = size // 2
        image[:, h:] = image[:, h:] * r_amp.uniform(1.0, 1.06) + r_amp.uniform(*spec["amps"]) * noise
    if spec.get("edges"):  # its own random stream, as the amplifiers'
        r_edge = np.random.default_rng([seed, 10])
        hot, dead = int(r_edge.integers(1, 5)), int(r_edge.integers(1, 4))
        lo = r_edge.random() < 0.5
        hot_cols, dead_cols = (slice(0, hot), slice(size - dead, size)) if lo else \
            (slice(size - hot, size), slice(0, dead))
        image[:, hot_cols] += r_edge.uniform(*spec["edges"]) * noise
        image[:, dead_cols] *= r_edge.uniform(0.2, 0.6)
        truth[:, hot_cols] |= BIT["HCL"]
        truth[:, dead_cols] |= BIT["DCL"]
    if spec.get("pattern"):  # its own random stream, as the amplifiers'
        r_pat = np.random.default_rng([seed, 14])
        image += r_pat.normal(0, r_pat.uniform(*spec["pattern"]) * noise, (size, 1))
        image += r_pat.normal(0, r_pat.uniform(*spec["pattern"]) * noise, (1, size))
    if spec.get("skysub"):
        image -= sky_map
    x, y, f, kind, area_eff = (np.array(c) for c in zip(*rows, strict=True))
    if spec.get("resample"):  # its own random stream, as the amplifiers'
        image, truth, x, y = _resample(image, truth, x, y, np.random.default_rng([seed, 11]), spec["resample"])
        source_snr = None  # not warped with the frame: not measured
    image = image.astype(np.float32)
    snr = f / np.sqrt(f / gain + area_eff * var_pix)
    cat = Table({"X": x, "Y": y, "FLUX": f, "MAG": 25 - 2.5 * np.log10(f), "KIND": kind, "SNR": snr})
    inside = (x >= 0) & (x < size) & (y >= 0) & (y < size)
    inside[inside] = np.isfinite(image[y[inside].astype(int), x[inside].astype(int)])  # not in a blank corner
    hdr = fits.Header()
    if not spec.get("bare"):
        hdr["GAIN"] = (round(gain, 4), "e-/ADU")
        hdr["RDNOISE"] = (round(rdnoise, 3), "e-")
        hdr["SATURATE"] = (round(saturate, 1), "ADU")
    return image, hdr, cat[inside], truth, {"fwhm": fwhm, "beta": beta, "sky": sky, "gain": gain, "q": q,
                                         "drift": drift,
                                         "angle": float(np.degrees(psf_angle)),
                                         "trail_deg": trail_deg, "source_snr": source_snr}


def _spikes(light, x: float, y: float, flux: float, angle: float, fwhm: float, noise: float, xx, yy):
    """Four diffraction spikes from the star at (x, y) at ``angle`` and right angles to it: 0.5% of
    its flux in each per pixel at 5 FWHM, falling as the inverse square of the distance, a Gaussian
    of 0.6 the PSF's sigma across, out to where they fade under a tenth of ``noise``."""
    sigma = 0.6 * fwhm / 2.3548
    peak = 0.005 * flux / (np.sqrt(2 * np.pi) * sigma)  # per pixel on the axis, at r0
    r0 = 5 * fwhm
    reach = min(r0 * np.sqrt(peak / (0.1 * noise)), 2 * light.shape[0]) if peak > 0 else 0
    if reach <= r0:
        return
    box = (slice(max(int(y - reach), 0), int(y + reach) + 1), slice(max(int(x - reach), 0), int(x + reach) + 1))
    dx, dy = xx[box] - x, yy[box] - y
    for a in (angle, angle + np.pi / 2):
        along = dx * np.cos(a) + dy * np.sin(a)
        across = -dx * np.sin(a) + dy * np.cos(a)
        r = np.maximum(np.abs(along), r0)
        light[box] += np.where(np.abs(along) <= reach, peak * (r0 / r) ** 2, 0.0) * np.exp(-0.5 * (across / sigma) ** 2)


def _discs(light, rng, count, fwhm: float, noise: float, xx, yy) -> list:
    """Add ``count`` (lo, hi) disc galaxies to ``light``: an exponential disc (r_eff 30-120 px,
    axis ratio 0.04-0.35) and a de Vaucouleurs bulge, a dust lane along the major axis in half of
    them, seen through a Gaussian of the PSF's FWHM, 5-60 sigma at the brightest; their truth rows
    (the S/N's area: the pixels above one sigma)."""
    rows = []
    size = light.shape[0]
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        cx, cy = rng.uniform(0.25, 0.75, 2) * size
        r_eff, q, th = rng.uniform(30, 120), rng.uniform(0.04, 0.35), rng.uniform(0, np.pi)
        m = Sersic2D(1.0, r_eff, 1.0, cx, cy, 1 - q, th)(xx, yy)
        m += rng.uniform(1.0, 4.0) * Sersic2D(1.0, 0.12 * r_eff, 4.0, cx, cy, 0.4, th)(xx, yy)
        if rng.random() < 0.5:
            across = -(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)
            m *= 1 - rng.uniform(0.4, 0.8) * np.exp(-0.5 * (across / max(1.0, 0.25 * q * r_eff)) ** 2)
        m = ndimage.gaussian_filter(m, fwhm / 2.3548)
        m *= rng.uniform(5.0, 60.0) * noise / m.max()
        light += m
        rows.append((cx, cy, float(m.sum()), "galaxy", float((m > noise).sum())))
    return rows


def _resample(image, truth, x, y, rng, max_deg: float):
    """``image`` warped by a rotation about its centre of up to ``max_deg``
    degrees and a shift of 0.25-0.75 px on each axis (cubic spline; NaN where
    no input pixel reaches), with the truth's bits and positions carried
    along (a bit wherever its linearly interpolated mask exceeds 0.05)."""
    th = np.radians(rng.uniform(-max_deg, max_deg))
    shift = rng.uniform(0.25, 0.75, 2)  # (row, column)
    m = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    centre = (np.array(image.shape) - 1) / 2
    offset = centre - m @ centre - shift  # input = m @ output + offset
    warped = ndimage.affine_transform(image, m, offset, order=3, mode="constant", cval=np.nan)
    bits = np.zeros_like(truth)
    for b in (1 << k for k in range(31)):
        if (truth & b).any():
            moved = ndimage.affine_transform((truth & b > 0).astype(np.float32), m, offset, order=1, cval=0.0)
            bits[moved > 0.05] |= b
    out = m.T @ (np.vstack([y, x]) - (centre - shift)[:, None]) + centre[:, None]
    return warped, bits, out[1], out[0]


def run(frames: int, size: int, variants, seed: int, work: Path, engines=("SEP",)) -> dict:
    maker = MaskMaker(for_maps=True)
    sel = [int(i) for i in maker.selected]
    thresholds = maker.config.thresholds[sel][:, None, None]
    model = load_score_model()
    cfg = SexConfig()
    out = []
    for variant in variants:
        for k in range(frames):
            s = seed + k
            image, hdr, cat, truth, meta = make_frame(s, size, variant)
            source_snr = meta.pop("source_snr")
            path = work / f"{variant}_{s}.fits"
            write_hdulist_atomic(fits.HDUList([fits.PrimaryHDU(image, hdr)]), path, overwrite=True)
            t0 = time.perf_counter()
            probs = maker.probabilities(image)
            masks = probs > thresholds
            policy = MapPolicy()
            sets = {"network": maps_from_masks(masks, maker, replace(policy, fuse=False)),
                    "maxidetect": maps_from_masks(masks, maker, policy, image=image, header=hdr, probs=probs)}
            del probs
            seconds = time.perf_counter() - t0
            fwhm_used = sets["maxidetect"].report.fwhm
            rows, matched = {}, {}
            for strat in ("none", "network", "maxidetect"):
                maps = None
                if strat != "none":  # written as `maxidetect maps` writes them (the fusion's cards too)
                    maps = _write_maps(work / f"{variant}_{s}.{strat}.fits", sets[strat], hdr)
                for engine in engines:
                    c = run_engine(engine, path, cfg, maps, work / f"{variant}_{s}_{strat}_{engine}",
                                   Scorer(model) if maps else None)
                    tables = {strat: c}
                    if strat == "maxidetect":
                        tables["maxidetect+clean"] = c[np.asarray(c["MD_CONTAM"]) < model.threshold]
                    for name, t in tables.items():
                        sc = score_catalog(t, cat, truth, meta["fwhm"])
                        matched[(name, engine)] = dict(zip(sc.pop("matched_true").tolist(),
                                                           sc.pop("matched_flux").tolist(), strict=True))
                        sc.pop("matched_det")
                        sc.pop("completeness_curve")
                        rows[f"{name}|{engine}"] = sc
            snr = np.asarray(cat["SNR"])
            for key, sc in rows.items():
                name, engine = key.split("|")
                base, here = matched[("none", engine)], matched[(name, engine)]
                lost = sorted(i for i in base.keys() - here.keys() if snr[i] > 20) if name != "none" else []
                # Found with the maps but with a fifth of its light or more gone, of the no-mask run's
                # and of the truth's (a galaxy's disc zeroed around its bulge keeps its centroid): the
                # partial loss the lost list cannot see (a cosmic ray's light taken off a star is none).
                true_flux = np.asarray(cat["FLUX"])
                cut = sorted(i for i in base.keys() & here.keys() if snr[i] > 20 and base[i] > 0
                             and here[i] < 0.8 * min(base[i], true_flux[i])) if name != "none" else []
                ms = sets[name.removesuffix("+clean")] if name != "none" else None
                sc["lost"] = [{"x": float(cat["X"][i]), "y": float(cat["Y"][i]), "snr": float(snr[i]),
                               "kind": str(cat["KIND"][i]), "zero_px": _zero_near(ms, cat["X"][i], cat["Y"][i],
                                                                                  meta["fwhm"])} for i in lost]
                sc["flux_cut"] = [{"x": float(cat["X"][i]), "y": float(cat["Y"][i]), "snr": float(snr[i]),
                                   "kind": str(cat["KIND"][i]), "kept": float(here[i] / base[i])} for i in cut]
            for name in ("network", "maxidetect"):
                zl = _light_zeroed(sets[name].weight, source_snr, truth, meta["fwhm"])
                for engine in engines:
                    rows[f"{name}|{engine}"]["light_zeroed"] = zl
            out.append({"variant": variant, "seed": s, **meta, "fwhm_measured": fwhm_used, "n_true": len(cat),
                        "maps_seconds": seconds, "rows": rows})
            for engine in engines:
                r0, r, rc = (rows[f"{n}|{engine}"] for n in ("none", "maxidetect", "maxidetect+clean"))
                print(f"{variant} {s} {engine}: fwhm {meta['fwhm']:.2f} (measured {fwhm_used:.2f}); spurious none "
                      f"{r0['n_spurious']} maps {r['n_spurious']} clean {rc['n_spurious']}; completeness "
                      f"{r0['completeness']:.4f} -> {r['completeness']:.4f} / {rc['completeness']:.4f}; lost "
                      f"{len(r['lost'])} / {len(rc['lost'])}", flush=True)
    return {"frames": out, "threshold": model.threshold, "engines": list(engines)}


def _light_zeroed(weight, source_snr, truth, fwhm: float) -> list[int] | None:
    """[pixels, groups]: zero weight on the true sources' own light (>= 5 sigma per pixel) with no
    contaminant within 2 px of it and no saturation within 1 FWHM + 2 px (a saturated star's
    surroundings are the exception rule 1 allows), matching nothing: what a catalogue cannot get back."""
    if source_snr is None:
        return None
    excused = ndimage.binary_dilation(truth != 0, iterations=2)
    sat = (truth & BIT["SAT"]) != 0
    if sat.any():
        excused |= ndimage.binary_dilation(sat, iterations=int(np.ceil(fwhm)) + 2)
    bad = (weight <= 0) & (source_snr >= 5.0) & ~excused
    return [int(bad.sum()), int(ndimage.label(bad, np.ones((3, 3)))[1])]


def report(result: dict, command: str) -> str:
    lines = ["# Maps and `--clean` on frames from an independent generator", "",
             f"`{command}` ({os.cpu_count()} CPU cores). Generator: `benchmarks/independent.py` (astropy Moffat "
             "stars and PSF-convolved Sersic galaxies, Poisson and read noise, bleeding saturation, wandering "
             "cosmic-ray tracks and single-pixel hits, hot/cold pixels, a hot column segment, a trail in most "
             "frames); matching and attribution as in `maxidetect bench`. Sums over the frames of each "
             "variant. *Flagged CR/HP falsely*: true sources of S/N > 20 whose detection's IMAFLAGS_ISO says cosmic "
             "ray or hot pixel with none in the truth within its isophote. *Flux cut*: true sources of S/N > 20 "
             "found with and without the maps whose FLUX_AUTO with them is under 0.8 of the no-mask run's and of "
             "the true flux. *Light zeroed*: zero-weight pixels on the true sources' own light (>= 5 sigma per "
             "pixel in the noise-free source image) with no contaminant in the truth within 2 px and no saturation "
             "within 1 FWHM + 2 px, and their connected groups: a measure that needs no matching (a streaked or "
             "doubled star is deblended into pieces that match no true centroid).", "",
             "| variant | engine | strategy | detections | spurious | vs no mask | completeness (S/N > 10) "
             "| change [pp] | lost S/N > 20 | of them under zero weight | S/N > 20 flux cut > 20% "
             "| S/N > 20 flagged CR/HP falsely | light zeroed px (groups) | spurious by class |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for variant, engine in ((v, e) for v in dict.fromkeys(f["variant"] for f in result["frames"])
                            for e in result["engines"]):
        fr = [f for f in result["frames"] if f["variant"] == variant]
        base_sp = sum(f["rows"][f"none|{engine}"]["n_spurious"] for f in fr)
        n_bright = sum(f["rows"][f"none|{engine}"]["n_true_bright"] for f in fr)
        base_c = sum(f["rows"][f"none|{engine}"]["completeness"] * f["rows"][f"none|{engine}"]["n_true_bright"]
                     for f in fr) / n_bright
        for name in ("none", "network", "maxidetect", "maxidetect+clean"):
            rs = [f["rows"][f"{name}|{engine}"] for f in fr]
            sp = sum(r["n_spurious"] for r in rs)
            comp = sum(r["completeness"] * r["n_true_bright"] for r in rs) / n_bright
            lost = [x for r in rs for x in r["lost"]]
            by = {}
            for r in rs:
                for c, v in r["spurious_by_class"].items():
                    by[c] = by.get(c, 0) + v
            by_s = ", ".join(f"{c} {v}" for c, v in sorted(by.items(), key=lambda kv: -kv[1]) if v)
            change = "" if name == "none" else f"{100 * (sp / base_sp - 1):+.1f}%" if base_sp else ""
            nm = sum(r.get("n_bright_matched", 0) for r in rs)
            fpf = f"{sum(r.get('n_bright_false_point_flag', 0) for r in rs)}/{nm}" if nm and name != "none" else ""
            zl = [r["light_zeroed"] for r in rs if r.get("light_zeroed") is not None]
            zl_s = f"{sum(z[0] for z in zl)} ({sum(z[1] for z in zl)})" if zl and name != "none" else ""
            lines.append(f"| {variant} | {engine} | {name} | {sum(r['n_detections'] for r in rs)} | {sp} | {change} | "
                         f"{comp:.4f} | {'' if name == 'none' else f'{100 * (comp - base_c):+.2f}'} | "
                         f"{'' if name == 'none' else len(lost)} | "
                         f"{'' if name == 'none' else sum(x['zero_px'] > 0 for x in lost)} | "
                         f"{'' if name == 'none' else sum(len(r.get('flux_cut', [])) for r in rs)} | {fpf} | "
                         f"{zl_s} | {by_s} |")
    lines += ["", "Lost true sources (S/N > 20; zero-weight pixels within 1 FWHM):", ""]
    for f in result["frames"]:
        for key, row in f["rows"].items():
            for x in row["lost"]:
                lines.append(f"- {f['variant']} seed {f['seed']} ({key.replace('|', ', ')}): {x['kind']} at "
                             f"({x['x']:.0f}, {x['y']:.0f}) S/N {x['snr']:.0f}, {x['zero_px']} px zeroed")
    cuts = [f"- {f['variant']} seed {f['seed']} ({key.replace('|', ', ')}): {x['kind']} at ({x['x']:.0f}, "
            f"{x['y']:.0f}) S/N {x['snr']:.0f}, {100 * x['kept']:.0f}% of its flux kept"
            for f in result["frames"] for key, row in f["rows"].items() for x in row.get("flux_cut", [])]
    if cuts:
        lines += ["", "True sources found with a fifth of their flux or more gone (S/N > 20):", "", *cuts]
    lines += ["", "Frames: " + "; ".join(f"{f['variant']} {f['seed']}: FWHM {f['fwhm']:.2f} px (measured "
                                        f"{f['fwhm_measured']:.2f}), beta {f['beta']:.1f}, sky {f['sky']:.0f} ADU, "
                                        f"gain {f['gain']:.2f}, {f['n_true']} true sources" for f in result["frames"]),
              ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=500)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--engines", default="SEP,SExtractor", help="SExtractor is skipped where it is not installed")
    ap.add_argument("--out", default=str(HERE / "results" / "independent"))
    ap.add_argument("--work", default=str(HERE / "work" / "independent"))
    args = ap.parse_args(argv)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    engines = [e for e in args.engines.split(",")
               if e == "SEP" or shutil.which("source-extractor") or shutil.which("sex")]
    result = run(args.frames, args.size, args.variants.split(","), args.seed, work, engines)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1, default=float))
    command = ".venv/bin/python benchmarks/independent.py " + " ".join(sys.argv[1:] if argv is None else argv)
    (out / "report.md").write_text(report(result, command.strip()))
    print(f"wrote {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
