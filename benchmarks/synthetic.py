"""A quick synthetic CCD frame for throughput benchmarks (not the truth simulator).

Sky with a gradient, Poisson + read noise, Gaussian-core stars with a power-law
magnitude distribution (a few saturated, with bleed columns), cosmic-ray hits
and tracks, hot pixels, a hot column and a satellite trail.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS


def make_frame(size: int = 2048, seed: int = 42, return_truth: bool = False):
    """(image, header), plus the stars' (x, y, flux) 0-based if ``return_truth``."""
    rng = np.random.default_rng(seed)
    h = w = size
    gain, rdnoise, sat = 2.0, 5.0, 60000.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sky = 800.0 + 0.05 * xx + 0.03 * yy
    img = np.zeros((h, w), np.float32)
    n_stars = int(800 * (size / 2048) ** 2)
    fwhm = 3.5
    sig = fwhm / 2.3548
    r = int(6 * sig) + 8
    ky, kx = np.mgrid[-r : r + 1, -r : r + 1]
    flux = 10 ** rng.uniform(2.0, 6.3, n_stars)
    ys, xs = rng.uniform(r, h - r, n_stars), rng.uniform(r, w - r, n_stars)
    for f, y, x in zip(flux, ys, xs, strict=True):
        iy, ix = int(y), int(x)
        dy, dx = ky - (y - iy), kx - (x - ix)
        rr2 = dx * dx + dy * dy
        # Gaussian core plus Moffat-like wings.
        psf = np.exp(-rr2 / (2 * sig * sig)) + 0.05 * (1 + rr2 / 9.0) ** -2.5
        psf /= psf.sum()
        img[iy - r : iy + r + 1, ix - r : ix + r + 1] += f * psf
    img += sky
    img = rng.poisson(np.clip(img, 0, None) * gain).astype(np.float32) / gain
    img += rng.normal(0, rdnoise / gain, img.shape).astype(np.float32)
    # Saturation with bleeding along columns.
    for y, x in zip(*np.nonzero(img > sat), strict=True):
        n = rng.integers(3, 15)
        img[max(0, y - n) : y + n, x] = sat
    np.minimum(img, sat, out=img)
    # Cosmic rays: single hits, blobs and tracks.
    for _ in range(int(400 * (size / 2048) ** 2)):
        y, x = rng.integers(2, h - 30), rng.integers(2, w - 30)
        e = rng.uniform(500, 20000)
        kind = rng.random()
        if kind < 0.3:
            img[y, x] += e
        elif kind < 0.7:
            img[y : y + 2, x : x + rng.integers(1, 3)] += e * rng.uniform(0.3, 1, (2, 1))
        else:
            length = rng.integers(5, 25)
            ang = rng.uniform(0, np.pi)
            t = np.arange(length)
            img[(y + t * np.sin(ang)).astype(int), (x + t * np.cos(ang)).astype(int)] += e / 3
    # Hot pixels, a hot column, a satellite trail.
    for _ in range(int(100 * (size / 2048) ** 2)):
        img[rng.integers(0, h), rng.integers(0, w)] += rng.uniform(2000, 30000)
    img[:, w // 3] += 300.0
    x0 = np.arange(w)
    ytr = (0.3 * h + 0.4 * x0).astype(int)
    ok = ytr < h - 2
    for d in (-1, 0, 1):
        img[ytr[ok] + d, x0[ok]] += 400.0 * (1.5 - abs(d))
    hdr = WCS(
        {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRPIX1": w / 2, "CRPIX2": h / 2,
         "CRVAL1": 150.0, "CRVAL2": 2.0, "CD1_1": -7.5e-5, "CD2_2": 7.5e-5, "CD1_2": 0.0, "CD2_1": 0.0}
    ).to_header()
    hdr["GAIN"], hdr["RDNOISE"], hdr["SATURATE"] = gain, rdnoise, sat
    if return_truth:
        return img.astype(np.float32), hdr, {"x": xs, "y": ys, "flux": flux}
    return img.astype(np.float32), hdr


def write_frame(path, size: int = 2048, seed: int = 42) -> None:
    img, hdr = make_frame(size, seed)
    fits.PrimaryHDU(img, hdr).writeto(path, overwrite=True)
