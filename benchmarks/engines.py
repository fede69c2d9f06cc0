"""Both detection engines with and without maps on a synthetic frame with known stars.

For each engine (SEP in process, the real SExtractor) and each map policy
(no maps; weight + flag, the default; flag only, every class "flag"), count
detections, completeness (true stars with S/N > 10 matched within 2 px) and
spurious detections (matching no true star within 3 px).

    .venv/bin/python benchmarks/engines.py --size 2048 --seed 42
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import make_frame  # noqa: E402

from maxidetect.classes import CLASSES  # noqa: E402
from maxidetect.extract.catalog import read_catalog  # noqa: E402
from maxidetect.extract.config import SexConfig  # noqa: E402
from maxidetect.extract.inprocess import detect_file
from maxidetect.extract.sextractor import run_sextractor  # noqa: E402
from maxidetect.maps.writer import MapPolicy, write_maps  # noqa: E402
from maxidetect.masks.maker import MaskMaker  # noqa: E402


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def score(cat, truth, snr_cut):
    xy = np.c_[cat["X_IMAGE"] - 1, cat["Y_IMAGE"] - 1]
    txy = np.c_[truth["x"], truth["y"]]
    d_det, _ = cKDTree(txy).query(xy) if len(xy) else (np.zeros(0), None)
    spurious = int(np.sum(d_det > 3.0))
    bright = truth["snr"] > snr_cut
    d_true, _ = cKDTree(xy).query(txy[bright]) if len(xy) else (np.full(bright.sum(), np.inf), None)
    return {"n": len(cat), "completeness": float(np.mean(d_true < 2.0)), "spurious": spurious}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "engines"))
    args = ap.parse_args(argv)
    img, hdr, truth = make_frame(args.size, args.seed, return_truth=True)
    # S/N of each star inside a 2-FWHM aperture, sky 800 ADU at gain 2.
    npix = np.pi * 3.5**2
    truth["snr"] = truth["flux"] * 2.0 / np.sqrt(truth["flux"] * 2.0 + npix * (800 * 2.0 + 25))
    work = Path(tempfile.mkdtemp(prefix="maxidetect-engines-"))
    path = work / "frame.fits"
    fits.PrimaryHDU(img, hdr).writeto(path)
    maker = MaskMaker(for_maps=True)
    policies = {
        "weight+flag": MapPolicy(),
        "weight+flag, noise weights": MapPolicy(noise=True),
        "flag only": MapPolicy({c.abbr: "flag" for c in CLASSES if c.bit}, noise=False),
    }
    maps = {"no mask": None}
    for name, pol in policies.items():
        maps[name] = write_maps(path, maker, pol, out_dir=work / _slug(name))
    cfg = SexConfig()
    rows = []
    for engine in ("SEP", "SExtractor"):
        for name, m in maps.items():
            out = work / engine / _slug(name)
            if engine == "SEP":
                cat = read_catalog(detect_file(path, cfg, maps=m, out_dir=out))
            else:
                cat = read_catalog(run_sextractor(path, cfg, maps=m, out_dir=out).catalog)
            r = {"engine": engine, "maps": name, **score(cat, truth, 10.0)}
            rows.append(r)
            print(r, flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"size": args.size, "seed": args.seed, "rows": rows}, indent=1))
    lines = [
        f"# Engines with and without maps ({args.size}x{args.size} synthetic frame, seed {args.seed})",
        "",
        f"`.venv/bin/python benchmarks/engines.py --size {args.size} --seed {args.seed}`; "
        f"{len(truth['x'])} true stars, completeness over those with S/N > 10 "
        f"({int(np.sum(truth['snr'] > 10))}), spurious = no true star within 3 px.",
        "",
        "| engine | maps | N | completeness | spurious |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['maps']} | {r['n']} | {r['completeness']:.3f} | {r['spurious']} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
