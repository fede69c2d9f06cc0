"""Measure the tile overlap margin that makes stitched == untiled.

A 1000x1000 mosaic of the real frames in ../shared/data/real is run whole
(one 1024 tile) and with 512 px tiles at several margins; prints the largest
probability difference and how many thresholded mask pixels flip.

    .venv/bin/python benchmarks/margin.py
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from maxidetect.classes import ClassConfig
from maxidetect.network.inference import Predictor
from maxidetect.network.normalise import normalise
from maxidetect.priors import modify_priors, prior_factors, threshold

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def mosaic() -> np.ndarray:
    a = normalise(fits.getdata(REAL / "fitswcs_tpv_ctio_mosaic2.fits"))[:500, :500]
    b = normalise(fits.getdata(REAL / "fitswcs_zpn_ukirt_wfcam.fits"))[:500, :500]
    c = normalise(fits.getdata(REAL / "ccdproc_a8280271_saao_raw.fits"))[:500, 36:536]
    img = np.zeros((1000, 1000), np.float32)
    img[:500, :500], img[:500, 500:], img[500:, :500], img[500:, 500:] = a, b, c, a[::-1]
    return img


def main() -> None:
    img = mosaic()
    whole = Predictor(tile=1024, margin=0)
    ref = whole.predict(img)
    cfg = ClassConfig.default()
    f = prior_factors(cfg.priors)
    ref_m = threshold(modify_priors(ref, f), cfg.thresholds)
    print("| margin [px] | max abs prob diff | mask pixels flipped | time [s] |")
    print("|---|---|---|---|")
    for m in (32, 64, 96, 128, 144, 160, 192):
        p = Predictor(whole.model, tile=512, margin=m)
        t0 = time.perf_counter()
        out = p.predict(img)
        dt = time.perf_counter() - t0
        flips = int((threshold(modify_priors(out, f), cfg.thresholds) != ref_m).sum())
        print(f"| {m} | {np.abs(out - ref).max():.2e} | {flips} / {ref_m.size} | {dt:.1f} |")


if __name__ == "__main__":
    main()
