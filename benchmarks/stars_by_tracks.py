"""Faint stars under and beside cosmic-ray tracks: what rule 1 keeps.

Constructed 320x320 frames (sky 1000, noise 10, 40 stars of flux 2000-60000
for the PSF, pixel-integrated Gaussian stars), each with six faint stars
(peak 6-10 sigma, S/N ~15-25) crossed or flanked by a bright cosmic-ray
track, and the same tracks on six empty patches. The network's call is
drawn as the track and a 1-px halo. SEP detects with the fused maps' weight.
Three sets:

- ``under``: a straight track across the star's core (nearest-pixel or
  bilinear deposits), 12-50 sigma per pixel of length, 24-40 px, FWHM 2.2-4.5 px;
- ``under-faint``: a 25-sigma track across stars of peak 6 and 10 sigma,
  FWHM 1.8-3.7 px;
- ``beside``: a 40-sigma track deposited over two pixels, its near edge
  1.5-2.5 px from a star of peak 7 sigma, FWHM 2.2-3.6 px.

Counts: stars detected within 2 px; detections within reach of the empty
tracks (none wanted); empty tracks > 90% zeroed.

    PYTHONPATH=TREE .venv/bin/python benchmarks/stars_by_tracks.py [--sets under,under-faint,beside]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from scipy import ndimage

from maxidetect.classes import CLASSES
from maxidetect.extract.sep_engine import detect
from maxidetect.maps.fusion import fuse
from maxidetect.maps.policy import MapPolicy
from maxidetect.maps.stars import _pixel_gauss

SKY, NOISE = 1000.0, 10.0
CR = {c.abbr: c.bit for c in CLASSES}["CR"]


def _star(shape, x, y, flux, fwhm):
    s = fwhm / 2.3548
    return flux * np.outer(_pixel_gauss(np.arange(shape[0]) - y, s), _pixel_gauss(np.arange(shape[1]) - x, s))


def _field(n, fwhm, seed):
    rng = np.random.default_rng(seed)
    img = rng.normal(SKY, NOISE, (n, n))
    pos = []
    for _ in range(40):
        x, y = rng.uniform(12, n - 12, 2)
        img += _star(img.shape, x, y, rng.uniform(2e3, 6e4), fwhm)
        pos.append((x, y))
    return img, pos


def _track(shape, x, y, length, angle, per_pixel, bilinear=False):
    """A straight track through (x, y), ``per_pixel`` deposited per pixel of length."""
    t = np.arange(-length / 2, length / 2, 0.25)
    ys, xs = y + t * np.sin(angle), x + t * np.cos(angle)
    out = np.zeros(shape)
    if not bilinear:
        iy = np.clip(np.round(ys).astype(int), 0, shape[0] - 1)
        ix = np.clip(np.round(xs).astype(int), 0, shape[1] - 1)
        np.add.at(out, (iy, ix), per_pixel / 4)
        return out, out > 0
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = ys - y0, xs - x0
    for dy, dx, w in ((0, 0, (1 - fy) * (1 - fx)), (1, 0, fy * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 1, fy * fx)):
        np.add.at(out, (np.clip(y0 + dy, 0, shape[0] - 1), np.clip(x0 + dx, 0, shape[1] - 1)), w * per_pixel / 4)
    return out, out > 0.05 * per_pixel


def run_case(fwhm, peak, seed, amp, length, where="under", bilinear=False, offset=0.0):
    """(stars detected of 6, detections by the empty tracks, empty tracks zeroed of 6)."""
    n = 320
    img, pos = _field(n, fwhm, 41 + seed)
    rng = np.random.default_rng(42 + seed)
    flags = np.zeros(img.shape, np.int32)
    free = [(x + 0.4, y + 0.3) for y in range(30, 300, 30) for x in range(30, 300, 30)
            if min(np.hypot(x - px, y - py) for px, py in pos) > 12]
    stars, empty = free[:6], free[-6:]
    s = fwhm / 2.3548
    tracks = []
    for k, (x, y) in enumerate(stars + empty):
        if k < len(stars):
            img += _star(img.shape, x, y, peak * NOISE * 2 * np.pi * s * s, fwhm)
        if where == "under":
            trk, on = _track(img.shape, x + rng.uniform(-0.5, 0.5), y, length, rng.uniform(0, np.pi), amp * NOISE,
                             bilinear)
        else:  # beside: two pixels wide, its near edge `offset` px from the star
            a = rng.uniform(0, np.pi)
            trk, on = np.zeros(img.shape), np.zeros(img.shape, bool)
            for off in (offset, offset + 1.0):
                t, o = _track(img.shape, x - off * np.sin(a), y + off * np.cos(a), length, a, amp * NOISE)
                trk, on = trk + t, on | o
        img += trk
        tracks.append(on)
        flags[ndimage.binary_dilation(on, structure=np.ones((3, 3), bool))] |= CR
    img = img.astype(np.float32)
    zero, _, _ = fuse(img, flags, MapPolicy())
    cat = detect(img, weight=(~zero).astype(np.float32)).catalog
    x, y = np.asarray(cat["X_IMAGE"]) - 1, np.asarray(cat["Y_IMAGE"]) - 1
    kept = sum(bool(len(x)) and np.hypot(x - sx, y - sy).min() < 2 for sx, sy in stars)
    fx, fy = np.array([p[0] for p in pos]), np.array([p[1] for p in pos])
    field_star = np.hypot(x[:, None] - fx, y[:, None] - fy).min(axis=1) <= 3
    bare = sum(int(((np.hypot(x - ex, y - ey) < length / 2 + 3) & ~field_star).sum()) for ex, ey in empty)
    zeroed = sum(zero[on].mean() > 0.9 for on in tracks[len(stars):])
    return kept, bare, zeroed


def cases(name):
    if name == "under":
        for bilinear in (False, True):
            for amp, length in ((12, 24), (50, 24), (25, 40)):
                for fwhm in (2.2, 3.0, 4.5):
                    for seed in (2, 3):
                        yield dict(fwhm=fwhm, peak=8.0, seed=seed, amp=amp, length=length, bilinear=bilinear)
    elif name == "under-faint":
        for fwhm in (1.8, 3.0, 3.7):
            for peak in (6.0, 10.0):
                for seed in (0, 1):
                    yield dict(fwhm=fwhm, peak=peak, seed=seed, amp=25, length=24)
    elif name == "beside":
        for fwhm in (2.2, 2.9, 3.6):
            for offset in (1.5, 2.0, 2.5):
                for seed in (0, 1):
                    yield dict(fwhm=fwhm, peak=7.0, seed=seed, amp=40, length=30, where="beside", offset=offset)
    else:
        raise SystemExit(f"unknown set {name!r}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="under,under-faint,beside")
    args = ap.parse_args(argv)
    print("| set | cases | stars detected | detections by empty tracks | empty tracks zeroed |")
    print("|---|---|---|---|---|")
    for name in args.sets.split(","):
        tot, n = np.zeros(3, int), 0
        for kw in cases(name):
            tot += run_case(**kw)
            n += 1
            print(f"  {name} {kw}: {tot}", file=sys.stderr, flush=True)
        print(f"| {name} | {n} | {tot[0]} of {6 * n} | {tot[1]} | {tot[2]} of {6 * n} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
