"""SEP engine vs the real SExtractor on the real frames, with and without maps.

Same settings (``sextractor_configs/default.sex``) for both engines; counts
per image HDU with no maps, with a uniform weight map of ones (SExtractor's
weighted code path with nothing masked) and with maxidetect's maps
(catalogue defaults).

    .venv/bin/python benchmarks/parity_real.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from astropy.io import fits

from maxidetect.extract.catalog import read_catalog
from maxidetect.extract.config import SexConfig
from maxidetect.extract.inprocess import detect_file
from maxidetect.extract.sextractor import run_sextractor
from maxidetect.files import is_image_hdu
from maxidetect.maps.writer import MapPolicy, write_maps
from maxidetect.masks.maker import MaskMaker

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"


def _ones(maps: tuple[Path, Path], work: Path) -> tuple[Path, Path]:
    out = []
    for path, value in zip(maps, (1, 0), strict=True):
        with fits.open(path) as h:
            for hdu in h:
                if hdu.data is not None:
                    hdu.data[:] = value
            target = work / f"ones.{path.name}"
            h.writeto(target)
        out.append(target)
    return out[0], out[1]


def _counts(cat_path: Path) -> list[int]:
    cat = read_catalog(cat_path)
    if "EXT_NUMBER" in cat.colnames:
        return [int(np.sum(cat["EXT_NUMBER"] == e)) for e in np.unique(cat["EXT_NUMBER"])]
    return [len(cat)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="*", default=sorted(str(p) for p in REAL.glob("*.fits")))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "parity_real"))
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="maxidetect-parity-"))
    params = ["NUMBER", "EXT_NUMBER", "X_IMAGE", "Y_IMAGE", "FLUX_AUTO", "FLAGS"]
    (work / "p.param").write_text("\n".join(params) + "\n")
    cfg = SexConfig(overrides={"CATALOG_TYPE": "FITS_1.0", "PARAMETERS_NAME": str(work / "p.param")})
    maker = MaskMaker(for_maps=True)
    rows = []
    for image in args.images:
        image = Path(image)
        with fits.open(image) as h:
            n_hdu = sum(is_image_hdu(x) for x in h)
        maps = write_maps(image, maker, MapPolicy(), out_dir=work / image.stem)
        for mode, m in (("no maps", None), ("weights of ones", _ones(maps, work / image.stem)), ("maps", maps)):
            out = work / image.stem / mode.replace(" ", "_")
            sep_n = _counts(detect_file(image, cfg, maps=m, out_dir=out / "sep"))
            sex_n = _counts(run_sextractor(image, cfg, maps=m, out_dir=out / "sex").catalog)
            r = {"image": image.name, "hdus": n_hdu, "mode": mode, "sextractor": sum(sex_n), "sep": sum(sep_n),
                 "sextractor_per_hdu": sex_n, "sep_per_hdu": sep_n}
            r["difference"] = (r["sep"] - r["sextractor"]) / max(r["sextractor"], 1)
            rows.append(r)
            print(r, flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    lines = [
        "# SEP engine vs SExtractor 2.25 on the real frames",
        "",
        "`.venv/bin/python benchmarks/parity_real.py`; same `default.sex`, maps = catalogue defaults.",
        "",
        "| image | maps | SExtractor | SEP | difference | per HDU (SExtractor / SEP) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['image']} | {r['mode']} | {r['sextractor']} | {r['sep']} | {100 * r['difference']:+.1f}% "
                     f"| {r['sextractor_per_hdu']} / {r['sep_per_hdu']} |")
    for mode in ("no maps", "weights of ones", "maps"):
        a = sum(r["sextractor"] for r in rows if r["mode"] == mode)
        b = sum(r["sep"] for r in rows if r["mode"] == mode)
        lines.append(f"| all | {mode} | {a} | {b} | {100 * (b - a) / max(a, 1):+.1f}% | |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
