"""Measure a model's int8 activation ranges (``weights/NAME.int8.json``, ``--precision int8``).

Calibration frames: simulated frames (normal and undersampled PSF) and two of
the real frames of ``../shared/data/real`` (CTIO mosaic, SAAO raw); the other
real frames (crowded UKIRT, GMOS spectra) stay out, for the agreement check
in ``benchmarks/engine_profile.py``.

    .venv/bin/python benchmarks/calibrate_int8.py [--model maximask]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from maxidetect.network.normalise import normalise, normalise_settings
from maxidetect.network.quantise import calibrate, write_ranges
from maxidetect.network.weights import get_model_info, load_weight_arrays
from maxidetect.validation.simulate import SimConfig, simulate_frame

HERE = Path(__file__).resolve().parent
REAL = HERE.parent.parent / "shared" / "data" / "real"
REAL_FRAMES = ("fitswcs_tpv_ctio_mosaic2.fits", "ccdproc_a8280271_saao_raw.fits")
SIM = ((300, None), (301, None), (302, (1.5, 2.2)))  # (seed, FWHM range or the simulator's own)


def frames():
    for seed, fwhm in SIM:
        cfg = SimConfig(size=1024) if fwhm is None else SimConfig(size=1024, fwhm=fwhm)
        yield f"simulated seed {seed}" + ("" if fwhm is None else f" FWHM {fwhm[0]}-{fwhm[1]} px"), \
            simulate_frame(seed=seed, config=cfg).image
    for name in REAL_FRAMES:
        with fits.open(REAL / name) as hdul:
            hdu = next(h for h in hdul if h.data is not None and h.data.ndim == 2)
            yield f"{name}[{hdul.index_of(hdu)}]", np.asarray(hdu.data, np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model name (default: the default model)")
    args = ap.parse_args(argv)
    info = get_model_info(args.model)
    weights, _ = load_weight_arrays(info.name)
    settings = normalise_settings(info.normalisation)
    names, images = [], []
    for name, image in frames():
        names.append(name)
        images.append(normalise(image, **settings))
    t0 = time.perf_counter()
    ranges = calibrate(weights, images)
    record = {"frames": names, "crop": 512, "statistic": "max", "seconds": round(time.perf_counter() - t0, 1),
              "command": "benchmarks/calibrate_int8.py" + (f" --model {args.model}" if args.model else "")}
    path = write_ranges(info.name, ranges, record, HERE.parent / "weights" / f"{info.name}.int8.json")
    print(f"{path}: {len(ranges)} layers from {len(names)} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
