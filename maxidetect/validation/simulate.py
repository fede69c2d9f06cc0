"""Simulated CCD frames with known truth, reproducible by seed.

As the MaxiMask training set was built: start from a clean sky with stars and
galaxies, then add the contaminants one kind at a time, keeping each kind's
ground-truth mask (in the registry's bit codes). Every frame also has a
truth catalogue of its sources.

Photon-like components (sky, gradient, bright background, nebulosities,
fringes, persistence, sources, diffraction spikes, satellite trails) get
Poisson noise at the gain; saturation bleeds along columns; charge-like
defects (cosmic rays, hot pixels and columns) are added after the noise, dead
pixels and columns scale the signal down, and an overscan strip holds only
bias and read noise.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from scipy import ndimage
from scipy.signal import fftconvolve

from maxidetect.classes import CLASS_NAMES, CLASSES
from maxidetect.files import write_hdulist_atomic

__all__ = ["SimConfig", "SimFrame", "simulate_frame", "write_frame", "BIT", "TRUTH_LEVEL", "truth_level",
           "SIMULATOR_VERSION"]

BIT = {c.abbr: c.bit for c in CLASSES}
#: Changes whenever the same seed gives other frames (models trained on them
#: record it; a change means retraining).
SIMULATOR_VERSION = 2

#: Where an additive contaminant enters its truth mask: injected signal above
#: this many sky-noise sigmas (BBG: above this fraction of the sky level).
#: Pixel defects (HP, DP, HCL, DCL, OV) and SAT are marked where injected.
TRUTH_LEVEL = {"CR": 0.5, "TRL": 0.5, "P": 1.0, "SP": 1.0, "NEB": 1.0, "BBG": 0.25}


def truth_level(abbr: str, sky: float, noise: float) -> float:
    """The injected-signal level [ADU] above which ``abbr`` is in the truth."""
    return TRUTH_LEVEL[abbr] * (sky if abbr == "BBG" else noise)


@dataclass
class SimConfig:
    """Frame and contaminant parameters. Counts of point-like items (sources,
    cosmic rays, hot/dead pixels, persistence ghosts) are per 2048x2048 and
    scale with the area (Poisson); frame-scale features (trails, columns,
    fringes, nebulae, bright background) are counts per frame. Ranges are
    drawn uniformly per frame (or per item)."""

    size: int = 2048
    gain: float = 2.0  # e-/ADU
    rdnoise: float = 5.0  # e-
    bias: float = 300.0  # ADU
    sky: tuple = (400.0, 1500.0)  # ADU
    sky_gradient: float = 0.15  # fractional change across the frame
    saturate: float = 50000.0  # ADU above bias
    zeropoint: float = 30.0  # mag for 1 ADU
    fwhm: tuple = (2.5, 4.5)  # px
    ellipticity: tuple = (0.0, 0.12)
    moffat_beta: float = 3.0
    n_stars: int = 700
    star_mag: tuple = (12.0, 25.0)
    star_slope: float = 0.2  # dN/dm ~ 10**(slope m)
    n_galaxies: int = 500
    galaxy_mag: tuple = (17.0, 26.0)
    galaxy_slope: float = 0.32
    # Nearby disc galaxies (r_eff 20-100 px, any inclination, a bulge), mean number per frame: real
    # sources far larger than the field's, which the network may call nebulosity. 0 in the bench.
    n_large_galaxies: float = 0.0
    n_cr: int = 450
    # px: Gaussian sigma of the charge diffusion that blurs the cosmic rays (a thick, deep-depletion
    # CCD spreads a hit's charge before collecting it; the sky's light is blurred by the PSF anyway),
    # drawn per frame; 0: sharp
    cr_diffusion: tuple = (0.0, 0.0)
    n_hp: int = 150
    n_dp: int = 100
    n_hcl: int = 2
    n_dcl: int = 3
    n_persistence: int = 8
    n_trails: int = 2
    n_fringe_regions: int = 1
    n_nebulae: int = 1
    n_bbg: int = 1
    overscan: int = 24  # columns at the right edge; 0 for none
    spike_mag: float = 15.5  # stars brighter than this get spikes
    noise: bool = True  # False: the expectation image (for tests of the truth masks)
    tracking_length: float = 0.0  # px: telescope tracking error smearing every source along a line
    tracking_angle: float | None = None  # radians; None: random

    @classmethod
    def from_file(cls, path) -> SimConfig:
        """Overrides from a JSON file (keys are field names)."""
        data = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        bad = set(data) - known
        if bad:
            raise ValueError(f"{path}: unknown simulation parameters {sorted(bad)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass
class SimFrame:
    """A simulated frame.

    Attributes
    ----------
    image : float32 (H, W), ADU
    header : Header (GAIN, RDNOISE, SATURATE, WCS, simulation parameters)
    truth : int32 (H, W), OR of the registry bit codes of injected contaminants
    catalog : Table, one row per source: X, Y (0-based), FLUX [ADU], MAG, KIND,
        SNR (expected, local background), CONTAM (OR of truth bits within 1 FWHM)
    """

    image: np.ndarray
    header: fits.Header
    truth: np.ndarray
    catalog: Table

    def class_mask(self, abbr: str) -> np.ndarray:
        return (self.truth & BIT[abbr.upper()]) != 0


def _area_scale(cfg: SimConfig) -> float:
    return (cfg.size / 2048.0) ** 2


def _count(rng, n: float) -> int:
    return int(rng.poisson(n)) if n > 0 else 0


def _powerlaw_mags(rng, n, lo, hi, slope):
    # Inverse CDF of dN/dm ~ 10**(slope m) on [lo, hi].
    u = rng.uniform(0, 1, n)
    a, b = 10 ** (slope * lo), 10 ** (slope * hi)
    return np.log10(a + u * (b - a)) / slope


def _moffat_stamp(fwhm, e, pa, beta, dx, dy, r):
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    x, y = xx - dx, yy - dy
    c, s = np.cos(pa), np.sin(pa)
    u, v = c * x + s * y, (-s * x + c * y) / (1 - e)
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    p = (1 + (u * u + v * v) / alpha**2) ** (-beta)
    return p / p.sum()


def _sersic_stamp(n, re, e, pa, dx, dy, r):
    from astropy.modeling.models import Sersic2D

    os_ = 3  # oversample the cusp
    g = (np.arange((2 * r + 1) * os_) - (2 * r + 1) * os_ / 2 + 0.5) / os_
    xx, yy = np.meshgrid(g - dx, g - dy)
    m = Sersic2D(amplitude=1.0, r_eff=re, n=n, x_0=0, y_0=0, ellip=e, theta=pa)
    img = m(xx, yy).reshape(2 * r + 1, os_, 2 * r + 1, os_).mean(axis=(1, 3))
    return img / img.sum()


def _add(img, stamp, x, y):
    """Add a stamp centred on integer pixel (x, y), clipped to the image."""
    r = stamp.shape[0] // 2
    h, w = img.shape
    y0, y1, x0, x1 = y - r, y + r + 1, x - r, x + r + 1
    sy0, sx0 = max(0, -y0), max(0, -x0)
    sy1, sx1 = stamp.shape[0] - max(0, y1 - h), stamp.shape[1] - max(0, x1 - w)
    if sy1 <= sy0 or sx1 <= sx0:
        return
    img[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)] += stamp[sy0:sy1, sx0:sx1]


def _track_kernel(length: float, angle: float, oversample: int = 8) -> np.ndarray:
    """Unit-sum kernel of a uniform motion of ``length`` px at ``angle``."""
    half = int(np.ceil(length / 2)) + 1
    k = np.zeros((2 * half + 1, 2 * half + 1))
    t = np.linspace(-length / 2, length / 2, max(2, int(np.ceil(length * oversample))))
    x = np.clip(np.round(half + t * np.cos(angle)).astype(int), 0, 2 * half)
    y = np.clip(np.round(half + t * np.sin(angle)).astype(int), 0, 2 * half)
    np.add.at(k, (y, x), 1.0)
    return k / k.sum()


def _line(img, x0, y0, ang, length, profile_sigma, amp, rng=None, glints=0):
    """Add a straight Gaussian-profile line; returns its mask (signal > 0)."""
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w]
    c, s = np.cos(ang), np.sin(ang)
    along = (xx - x0) * c + (yy - y0) * s
    across = -(xx - x0) * s + (yy - y0) * c
    inside = (along >= 0) & (along <= length) & (np.abs(across) < 4 * profile_sigma + 1)
    prof = np.zeros((h, w), np.float64)
    prof[inside] = amp * np.exp(-0.5 * (across[inside] / profile_sigma) ** 2)
    if glints and rng is not None:
        for _ in range(glints):
            at = rng.uniform(0, length)
            width = rng.uniform(5, 40)
            prof[inside] *= 1 + rng.uniform(1, 5) * np.exp(-0.5 * ((along[inside] - at) / width) ** 2)
    img += prof
    return prof


def _taper(r: int) -> np.ndarray:
    """A circular window for a (2r+1)^2 stamp: 1 inside 0.7 r, a cosine to 0
    at r. Sources end smoothly, never in the straight edge of their box
    (a step edge passes for a bad column or a trail)."""
    rad = np.hypot(*np.mgrid[-r:r + 1, -r:r + 1]) / max(r, 1)
    return np.where(rad < 0.7, 1.0, np.where(rad < 1.0, 0.5 * (1 + np.cos(np.pi * (rad - 0.7) / 0.3)), 0.0))


@dataclass
class _Frame:
    """The frame under construction: what every component reads and adds to."""

    cfg: SimConfig
    seed: int
    photons: np.ndarray  # expected signal [ADU] before noise
    truth: np.ndarray
    sky: float
    noise: float  # sky noise [ADU]
    fwhm: float
    ell: float
    pa: float
    img: np.ndarray | None = None  # after noise
    rows: list = field(default_factory=list)
    bright: list = field(default_factory=list)  # (x, y, flux) of stars that get spikes
    background: np.ndarray | None = None
    track_angle: float | None = None
    cr_diffusion: float = 0.0  # px, the cosmic rays' blur

    @property
    def n(self) -> int:
        return self.cfg.size

    def rng(self, name: str) -> np.random.Generator:
        """One random stream per component, named: switching a component off
        leaves every other component, and the noise, exactly as they were."""
        return np.random.default_rng([self.seed, zlib.crc32(name.encode())])

    def mark(self, abbr: str, signal: np.ndarray, level: float) -> None:
        self.truth[signal > level] |= BIT[abbr]

    def grid(self):
        return np.mgrid[0:self.n, 0:self.n].astype(np.float32)


def _bright_background(f: _Frame) -> None:
    """A broad glow (scattered light of an off-field bright star)."""
    rng, (yy, xx), n = f.rng("bright background"), f.grid(), f.n
    for _ in range(f.cfg.n_bbg):
        cx, cy = rng.uniform(-0.2, 1.2) * n, rng.uniform(-0.2, 1.2) * n
        rad = rng.uniform(0.1, 0.3) * n
        glow = rng.uniform(0.5, 2.0) * f.sky * np.exp(-0.5 * ((xx - cx) ** 2 + (yy - cy) ** 2) / rad**2)
        f.photons += glow
        f.mark("BBG", glow, truth_level("BBG", f.sky, f.noise))


def _nebulae(f: _Frame) -> None:
    rng, (yy, xx), n = f.rng("nebulae"), f.grid(), f.n
    for _ in range(f.cfg.n_nebulae):
        field_ = ndimage.gaussian_filter(rng.normal(0, 1, (n // 8 + 1, n // 8 + 1)), rng.uniform(3, 8))
        field_ = ndimage.zoom(field_, 8, order=3)[:n, :n]  # cubic: no kinks every 8 columns
        field_ = np.clip(field_ / field_.std() - 0.5, 0, None)
        cx, cy, rad = rng.uniform(0.2, 0.8) * n, rng.uniform(0.2, 0.8) * n, rng.uniform(0.15, 0.35) * n
        env = np.exp(-0.5 * ((xx - cx) ** 2 + (yy - cy) ** 2) / rad**2)
        neb = rng.uniform(4, 15) * f.noise * field_ * env
        f.photons += neb
        f.mark("NEB", neb, truth_level("NEB", f.sky, f.noise))


def _fringes(f: _Frame) -> None:
    rng, (yy, xx), n = f.rng("fringes"), f.grid(), f.n
    for _ in range(f.cfg.n_fringe_regions):
        period = rng.uniform(15, 40)
        ang = rng.uniform(0, np.pi)
        wave = np.sin(2 * np.pi * ((xx * np.cos(ang) + yy * np.sin(ang)) / period
                                   + 0.3 * np.sin(2 * np.pi * xx / (period * 7.3))))
        x0, y0 = rng.uniform(0, 0.5) * n, rng.uniform(0, 0.5) * n
        rw, rh = rng.uniform(0.3, 0.6) * n, rng.uniform(0.3, 0.6) * n
        region = ((xx >= x0) & (xx < x0 + rw) & (yy >= y0) & (yy < y0 + rh)).astype(np.float64)
        region = ndimage.gaussian_filter(region, 10)
        f.photons += rng.uniform(0.2, 0.8) * f.noise * wave * region  # residual: below the pixel noise
        f.truth[region > 0.5] |= BIT["FR"]


def _stars(f: _Frame) -> None:
    cfg, rng, n = f.cfg, f.rng("stars"), f.n
    r_star = int(np.ceil(4 * f.fwhm)) + 3
    mags = _powerlaw_mags(rng, _count(rng, cfg.n_stars * _area_scale(cfg)), *cfg.star_mag, cfg.star_slope)
    for m in mags:
        x, y = rng.uniform(0, n), rng.uniform(0, n)
        flux = 10 ** (-0.4 * (m - cfg.zeropoint))
        ix, iy = int(x), int(y)
        r = r_star if m > 15 else int(r_star * (1 + (15 - m)))  # bright wings
        stamp = _moffat_stamp(f.fwhm, f.ell, f.pa, cfg.moffat_beta, x - ix - 0.5, y - iy - 0.5, r) * _taper(r)
        _add(f.photons, flux * stamp / stamp.sum(), ix, iy)
        f.rows.append((x, y, flux, m, "star"))
        if m < cfg.spike_mag:
            f.bright.append((x, y, flux))


def _galaxies(f: _Frame) -> None:
    cfg, rng, n = f.cfg, f.rng("galaxies"), f.n
    r_star = int(np.ceil(4 * f.fwhm)) + 3
    r_gal = int(np.ceil(6 * f.fwhm)) + 12
    psf = _moffat_stamp(f.fwhm, f.ell, f.pa, cfg.moffat_beta, 0, 0, r_star)
    mags = _powerlaw_mags(rng, _count(rng, cfg.n_galaxies * _area_scale(cfg)), *cfg.galaxy_mag, cfg.galaxy_slope)
    for m in mags:
        x, y = rng.uniform(0, n), rng.uniform(0, n)
        flux = 10 ** (-0.4 * (m - cfg.zeropoint))
        ix, iy = int(x), int(y)
        nser = rng.uniform(0.5, 4.0)
        re = rng.uniform(1.0, 5.0) * (1.0 + max(0.0, 20.0 - m) * 0.4)
        rr = int(min(r_gal + 3 * re, 80))
        gal = _sersic_stamp(nser, re, rng.uniform(0, 0.6), rng.uniform(0, np.pi), x - ix - 0.5, y - iy - 0.5, rr)
        _add_galaxy(f, gal, psf, rr, x, y, flux, m)


def _add_galaxy(f: _Frame, gal: np.ndarray, psf: np.ndarray, r: int, x: float, y: float, flux: float,
                m: float) -> None:
    """A galaxy's stamp (half size ``r``) seen through ``psf``, tapered, added with ``flux`` at
    (``x``, ``y``), and its row in the truth catalogue."""
    gal = np.clip(fftconvolve(gal, psf, mode="same"), 0, None) * _taper(r)
    _add(f.photons, flux * gal / gal.sum(), int(x), int(y))
    f.rows.append((x, y, flux, m, "galaxy"))


def _large_galaxies(f: _Frame) -> None:
    """Nearby disc galaxies: an exponential disc (r_eff 20-100 px, axis ratio 0.1-1) and a de
    Vaucouleurs bulge (r_e a tenth of the disc's, 10-40% of the light), magnitude 12.5-16, seen
    through the PSF; in the truth catalogue as galaxies. Their own random stream."""
    cfg, rng, n = f.cfg, f.rng("large_galaxies"), f.n
    if cfg.n_large_galaxies <= 0:
        return
    r_star = int(np.ceil(4 * f.fwhm)) + 3
    psf = _moffat_stamp(f.fwhm, f.ell, f.pa, cfg.moffat_beta, 0, 0, r_star)
    for _ in range(int(rng.poisson(cfg.n_large_galaxies))):
        x, y = rng.uniform(0.15, 0.85, 2) * n
        m = rng.uniform(12.5, 16.0)
        re, q, pa = rng.uniform(20.0, 100.0), rng.uniform(0.1, 1.0), rng.uniform(0, np.pi)
        r = int(3 * re) + r_star
        dx, dy = x - int(x) - 0.5, y - int(y) - 0.5
        bulge = rng.uniform(0.1, 0.4)
        gal = (1 - bulge) * _sersic_stamp(1.0, re, 1 - q, pa, dx, dy, r) \
            + bulge * _sersic_stamp(4.0, 0.1 * re, 0.5 * (1 - q), pa, dx, dy, r)
        _add_galaxy(f, gal, psf, r, x, y, 10 ** (-0.4 * (m - cfg.zeropoint)), m)


def _spikes(f: _Frame) -> np.ndarray:
    """Diffraction spikes of the bright stars (returned for the truth, which
    is marked after a tracking error has smeared them too)."""
    cfg, n = f.cfg, f.n
    spikes = np.zeros((n, n))
    for x, y, flux in f.bright:
        length = 6 * f.fwhm * np.sqrt(flux / 10 ** (-0.4 * (cfg.spike_mag - cfg.zeropoint)))
        length = min(length, 0.25 * n)
        amp = 2e-4 * flux / f.fwhm
        box = (slice(max(0, int(y - length - 5)), min(n, int(y + length + 6))),
               slice(max(0, int(x - length - 5)), min(n, int(x + length + 6))))
        sub = np.zeros((box[0].stop - box[0].start, box[1].stop - box[1].start))
        for k in range(4):
            ang = f.pa + k * np.pi / 2 + np.pi / 4
            _line(sub, x - box[1].start, y - box[0].start, ang, length, 0.6 * f.fwhm / 2.355, amp)
        sub *= np.exp(-np.hypot(*np.mgrid[box[0], box[1]][::-1] - np.array([x, y])[:, None, None]) / (0.5 * length))
        spikes[box] += sub
    f.photons += spikes
    return spikes


def _tracking(f: _Frame, before_sources: np.ndarray, spikes: np.ndarray) -> np.ndarray:
    """A tracking error moves the whole sky during the exposure: every source
    (and its spikes) is smeared along one line; diffuse light and the
    detector's own defects are not."""
    cfg = f.cfg
    if cfg.tracking_length <= 0:
        return spikes
    f.track_angle = cfg.tracking_angle if cfg.tracking_angle is not None else f.rng("tracking").uniform(0, np.pi)
    kernel = _track_kernel(cfg.tracking_length, f.track_angle)
    src = fftconvolve(f.photons - before_sources, kernel, mode="same")
    f.photons = before_sources + np.clip(src, 0, None)
    return fftconvolve(spikes, kernel, mode="same")


def _trails(f: _Frame) -> None:
    rng, n = f.rng("trails"), f.n
    for _ in range(f.cfg.n_trails):
        ang = rng.uniform(0, np.pi)
        cx, cy = rng.uniform(0.2, 0.8) * n, rng.uniform(0.2, 0.8) * n
        x0, y0 = cx - np.cos(ang) * 2 * n, cy - np.sin(ang) * 2 * n
        trl = np.zeros((n, n))
        _line(trl, x0, y0, ang, 4 * n, rng.uniform(0.5, 1.8), rng.uniform(1.5, 15) * f.noise, rng,
              glints=int(rng.integers(0, 4)))
        f.photons += trl
        f.mark("TRL", trl, truth_level("TRL", f.sky, f.noise))


def _persistence(f: _Frame) -> None:
    """Faint, soft ghosts of an earlier exposure's bright stars."""
    rng, n = f.rng("persistence"), f.n
    pers = np.zeros((n, n))
    for _ in range(_count(rng, f.cfg.n_persistence * _area_scale(f.cfg))):
        x, y = rng.uniform(0, n), rng.uniform(0, n)
        r = int(3 * f.fwhm) + 4
        blob = _moffat_stamp(f.fwhm * rng.uniform(1.0, 2.0), 0, 0, 2.5, x % 1 - 0.5, y % 1 - 0.5, r) * _taper(r)
        _add(pers, rng.uniform(3, 12) * f.noise * blob / blob.max(), int(x), int(y))
    f.photons += pers
    f.mark("P", pers, truth_level("P", f.sky, f.noise))


def _saturation(f: _Frame) -> np.ndarray:
    """Saturation and bleeding along columns (charge conserved); returns the
    saturated pixels."""
    sat_level, h = f.cfg.saturate, f.n
    photons = f.photons
    over = photons > sat_level
    if over.any():
        lab, _ = ndimage.label(over)
        for sl in ndimage.find_objects(lab):
            ys, xs = sl
            for col in range(xs.start, xs.stop):
                column = photons[ys, col]
                excess = float(np.clip(column - sat_level, 0, None).sum())
                if excess <= 0:
                    continue
                rows_over = np.nonzero(column > sat_level)[0] + ys.start
                extra = int(excess / sat_level / 2)
                lo, hi = max(0, rows_over.min() - extra), min(h, rows_over.max() + extra + 1)
                photons[lo:hi, col] = np.maximum(photons[lo:hi, col], sat_level)
    saturated = photons >= sat_level
    f.truth[saturated] |= BIT["SAT"]
    return saturated


def _noise(f: _Frame, saturated: np.ndarray) -> None:
    cfg, rng, n = f.cfg, f.rng("noise"), f.n
    if cfg.noise:
        e = rng.poisson(np.clip(f.photons, 0, None) * cfg.gain).astype(np.float64)
        f.img = e / cfg.gain + rng.normal(0, cfg.rdnoise / cfg.gain, (n, n))
    else:
        f.img = f.photons.copy()
    f.img[saturated] = cfg.saturate  # a full well does not fluctuate


def _cosmic_rays(f: _Frame) -> None:
    """Charge deposited after the exposure's noise: single hits, blobs, and
    tracks/worms (a random walk with a preferred direction)."""
    cfg, rng, n = f.cfg, f.rng("cosmic rays"), f.n
    cr = np.zeros((n, n))
    for _ in range(_count(rng, cfg.n_cr * _area_scale(cfg))):
        y, x = rng.integers(0, n), rng.integers(0, n)
        energy = rng.lognormal(np.log(3000), 0.9)  # e-
        kind = rng.random()
        if kind < 0.35:
            cr[y, x] += energy / cfg.gain
        elif kind < 0.7:
            blob = rng.uniform(0.2, 1.0, (3, 3))
            blob[blob < 0.5] = 0
            blob[1, 1] = 1.0
            _add(cr, energy / cfg.gain * blob / blob.sum() * 2, x, y)
        else:
            length = int(rng.integers(6, 60))
            ang = rng.uniform(0, 2 * np.pi)
            px, py = float(x), float(y)
            per = energy / cfg.gain / length * 3
            for _ in range(length):
                ang += rng.normal(0, 0.25 if rng.random() < 0.5 else 0.05)
                px += np.cos(ang)
                py += np.sin(ang)
                ix, iy = int(round(px)), int(round(py))
                if 0 <= ix < n and 0 <= iy < n:
                    cr[iy, ix] += per * rng.uniform(0.5, 1.5)
    if max(cfg.cr_diffusion) > 0:  # its own stream: sharp frames stay as they were
        f.cr_diffusion = float(f.rng("cr diffusion").uniform(*cfg.cr_diffusion))
        cr = ndimage.gaussian_filter(cr, f.cr_diffusion, mode="constant")  # charge kept (up to the edge)
    f.img += cr
    f.truth[cr > truth_level("CR", f.sky, f.noise)] |= BIT["CR"]


def _hot_pixels(f: _Frame) -> None:
    rng, n = f.rng("hot pixels"), f.n
    for _ in range(_count(rng, f.cfg.n_hp * _area_scale(f.cfg))):
        y, x = rng.integers(0, n), rng.integers(0, n)
        f.img[y, x] += rng.uniform(10, 500) * f.noise
        f.truth[y, x] |= BIT["HP"]


def _hot_columns(f: _Frame) -> None:
    rng, n = f.rng("hot columns"), f.n
    for _ in range(f.cfg.n_hcl):
        vertical = rng.random() < 0.8
        pos = rng.integers(0, n)
        start = rng.integers(0, n // 2)
        stop = rng.integers(start + n // 4, n + 1)
        level = rng.uniform(2, 30) * f.noise
        sl = (slice(start, stop), pos) if vertical else (pos, slice(start, stop))
        f.img[sl] += level
        f.truth[sl] |= BIT["HCL"]


def _dead_pixels(f: _Frame) -> None:
    rng, n = f.rng("dead pixels"), f.n
    for _ in range(_count(rng, f.cfg.n_dp * _area_scale(f.cfg))):
        y, x = rng.integers(0, n), rng.integers(0, n)
        f.img[y, x] *= rng.uniform(0.0, 0.2)
        f.truth[y, x] |= BIT["DP"]


def _dead_columns(f: _Frame) -> None:
    """Dead columns (a fraction of the signal) and dead clusters."""
    rng, n = f.rng("dead columns"), f.n
    for _ in range(f.cfg.n_dcl):
        if rng.random() < 0.6:
            pos = rng.integers(0, n)
            start = rng.integers(0, n // 2)
            stop = rng.integers(start + n // 4, n + 1)
            f.img[start:stop, pos] *= rng.uniform(0.0, 0.3)
            f.truth[start:stop, pos] |= BIT["DCL"]
        else:
            cy, cx = rng.integers(0, n), rng.integers(0, n)
            cl = np.zeros((n, n), bool)
            cl[cy, cx] = True
            cl = ndimage.binary_dilation(cl, iterations=int(rng.integers(1, 4)))
            f.img[cl] *= rng.uniform(0.0, 0.3)
            f.truth[cl] |= BIT["DCL"]


def _overscan(f: _Frame) -> None:
    """Bias everywhere, and overscan columns holding only bias and read noise."""
    cfg, n = f.cfg, f.n
    f.img += cfg.bias
    if cfg.overscan > 0:
        ov = slice(n - cfg.overscan, n)
        ov_noise = f.rng("overscan").normal(0, cfg.rdnoise / cfg.gain, (n, cfg.overscan)) if cfg.noise else 0.0
        f.img[:, ov] = cfg.bias + ov_noise
        f.truth[:, ov] = BIT["OV"]


def _truth_catalog(f: _Frame) -> Table:
    cfg, n = f.cfg, f.n
    names = ("X", "Y", "FLUX", "MAG", "KIND")
    cat = Table(rows=f.rows, names=names) if f.rows else Table(names=names, dtype=(float, float, float, float, str))
    npix = np.pi * f.fwhm**2
    ix = np.clip(cat["X"].astype(int), 0, n - 1)
    iy = np.clip(cat["Y"].astype(int), 0, n - 1)
    local = np.clip(f.background[iy, ix], 0, None) if len(cat) else np.zeros(0)
    cat["SNR"] = cat["FLUX"] * cfg.gain / np.sqrt(cat["FLUX"] * cfg.gain + npix * (local * cfg.gain + cfg.rdnoise**2))
    near = ndimage.grey_dilation(f.truth, footprint=_disk(max(1, int(round(f.fwhm)))))
    cat["CONTAM"] = near[iy, ix].astype(np.int32) if len(cat) else np.zeros(0, np.int32)
    in_ov = cat["X"] >= n - cfg.overscan if cfg.overscan else np.zeros(len(cat), bool)
    cat = cat[~np.asarray(in_ov)]  # overscan columns hold no sky
    cat["X"].unit = cat["Y"].unit = "pix"
    cat["FLUX"].unit = "adu"
    cat["MAG"].unit = "mag"
    cat.meta.update({"FWHM": f.fwhm, "SKY": f.sky, "SEED": f.seed})
    return cat


def _header(f: _Frame) -> fits.Header:
    cfg, n, rng = f.cfg, f.n, f.rng("wcs")
    hdr = WCS({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRPIX1": n / 2, "CRPIX2": n / 2,
               "CRVAL1": float(rng.uniform(0, 360)), "CRVAL2": float(rng.uniform(-60, 60)),
               "CD1_1": -7.5e-5, "CD2_2": 7.5e-5, "CD1_2": 0.0, "CD2_1": 0.0}).to_header()
    hdr["GAIN"] = (cfg.gain, "e-/ADU")
    hdr["RDNOISE"] = (cfg.rdnoise, "read noise [e-]")
    hdr["SATURATE"] = (float(cfg.bias + cfg.saturate), "saturation level [ADU]")
    hdr["MAGZERO"] = (cfg.zeropoint, "magnitude of 1 ADU")
    hdr["SIMSEED"] = (f.seed, "maxidetect.simulate seed")
    hdr["SIMVERS"] = (SIMULATOR_VERSION, "maxidetect.simulate version")
    hdr["SIMFWHM"] = (round(f.fwhm, 4), "PSF FWHM [pix]")
    hdr["SIMSKY"] = (round(f.sky, 3), "sky level [ADU]")
    if f.track_angle is not None:
        hdr["SIMTRKL"] = (float(cfg.tracking_length), "tracking error length [pix]")
        hdr["SIMTRKA"] = (round(float(np.degrees(f.track_angle)), 3), "tracking error angle [deg]")
    if f.cr_diffusion:
        hdr["SIMCRDIF"] = (round(f.cr_diffusion, 4), "cosmic rays' charge diffusion sigma [pix]")
    if cfg.overscan:
        hdr["BIASSEC"] = (f"[{n - cfg.overscan + 1}:{n},1:{n}]", "overscan columns")
    return hdr


def simulate_frame(seed: int = 0, config: SimConfig | None = None, size: int | None = None) -> SimFrame:
    """Simulate one frame; the same seed and config give the same frame.

    Each component (:func:`_stars`, :func:`_trails`, ...) draws from its own
    named random stream and adds its signal and its truth; the order follows
    the physics (photons, saturation, noise, then charge-like defects).
    """
    cfg = config or SimConfig()
    if size is not None:
        cfg = SimConfig(**{**asdict(cfg), "size": size})
    n = cfg.size
    rng = np.random.default_rng([seed, zlib.crc32(b"frame")])
    sky = rng.uniform(*cfg.sky)
    f = _Frame(cfg=cfg, seed=seed, photons=np.zeros((n, n)), truth=np.zeros((n, n), np.int32), sky=sky,
               noise=np.sqrt(sky * cfg.gain + cfg.rdnoise**2) / cfg.gain, fwhm=rng.uniform(*cfg.fwhm),
               ell=rng.uniform(*cfg.ellipticity), pa=rng.uniform(0, np.pi))
    yy, xx = f.grid()
    gx, gy = rng.normal(0, 1, 2)
    f.photons = (sky * (1 + cfg.sky_gradient * (gx * (xx / n - 0.5) + gy * (yy / n - 0.5)))).astype(np.float64)
    del yy, xx
    _bright_background(f)
    _nebulae(f)
    _fringes(f)
    f.background = f.photons.copy()  # the local background sets each source's S/N
    before_sources = f.photons.copy()
    _stars(f)
    _galaxies(f)
    _large_galaxies(f)
    spikes = _tracking(f, before_sources, _spikes(f))
    f.mark("SP", spikes, truth_level("SP", f.sky, f.noise))
    del before_sources, spikes
    _trails(f)
    _persistence(f)
    saturated = _saturation(f)
    _noise(f, saturated)
    _cosmic_rays(f)
    _hot_pixels(f)
    _hot_columns(f)
    _dead_pixels(f)
    _dead_columns(f)
    _overscan(f)
    img = np.clip(f.img, 0, 65535).astype(np.float32)
    return SimFrame(image=img, header=_header(f), truth=f.truth, catalog=_truth_catalog(f))


def _disk(r: int) -> np.ndarray:
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return x * x + y * y <= r * r


def write_frame(frame: SimFrame, out_dir, name: str, overwrite: bool = False) -> dict:
    """Write NAME.fits (image), NAME.truth.fits (int32 bit mask + one uint8
    plane per class) and NAME.truth.cat.fits; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"image": out / f"{name}.fits", "truth": out / f"{name}.truth.fits",
             "catalog": out / f"{name}.truth.cat.fits"}
    write_hdulist_atomic(fits.HDUList([fits.PrimaryHDU(frame.image, frame.header)]), paths["image"], overwrite)
    th = frame.header.copy()
    th["MDOUTPUT"] = ("BITMASK", "truth: OR of class bit codes")
    planes = np.stack([((frame.truth & c.bit) != 0) if c.bit else (frame.truth == 0)
                       for c in CLASSES]).astype(np.uint8)
    ph = frame.header.copy()
    ph["WCSAXES"] = 2
    for k, abbr in enumerate(CLASS_NAMES):
        ph[f"MDCLS{k + 1}"] = abbr
    write_hdulist_atomic(fits.HDUList([fits.PrimaryHDU(frame.truth, th),
                                       fits.ImageHDU(planes, ph, name="CLASSES")]), paths["truth"], overwrite)
    hdu = fits.table_to_hdu(frame.catalog)
    hdu.name = "TRUTH"
    write_hdulist_atomic(fits.HDUList([fits.PrimaryHDU(), hdu]), paths["catalog"], overwrite)
    return paths


def read_truth(path: str | os.PathLike) -> np.ndarray:
    """The int32 truth bit mask of a NAME.truth.fits file."""
    return np.asarray(fits.getdata(path, 0), dtype=np.int32)
