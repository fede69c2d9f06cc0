"""``--clean`` at other thresholds, from the catalogues two ``maxidetect bench`` runs kept.

Two score models compared on the same frames and maps (``bench --work-dir``, SEP): for each
threshold, the spurious detections the clean catalogue keeps and its completeness (true sources
of expected S/N > 10, matched as the bench does), summed and averaged over the frames of each
variant. The frames are simulated again from their seeds (the bench keeps no truth).

    python benchmarks/clean_sweep.py --work BEFORE_DIR AFTER_DIR --labels before after
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import numpy as np

from maxidetect.extract.catalog import read_catalog
from maxidetect.validation.scoring import score_catalog
from maxidetect.validation.simulate import SimConfig, simulate_frame

VARIANTS = {"default": {}, "undersampled": {"fwhm": (1.5, 2.2)}, "crowded": {"n_stars": 2800}}
THRESHOLDS = (0.85, 0.9, 0.93, 0.95, 0.97, 0.99)


def sweep(works, labels, seeds, size: int = 2048) -> list[str]:
    lines = ["| variant | threshold | " + " | ".join(f"{x} spurious | {x} completeness" for x in labels) + " |",
             "|---|---|" + "---|---|" * len(labels)]
    for variant, over in VARIANTS.items():
        acc = {}
        for s in seeds:
            frame = simulate_frame(s, SimConfig(**{**asdict(SimConfig()), **over}), size=size)
            fwhm = float(frame.header["SIMFWHM"])
            for work, label in zip(works, labels, strict=True):
                t = read_catalog(Path(work) / f"{variant}_{s}_maxidetect_SEP" / f"sim_{variant}_{s}.sep.cat.fits")
                contam = np.asarray(t["MD_CONTAM"], float)
                for th in THRESHOLDS:
                    sc = score_catalog(t[contam < th], frame.catalog, frame.truth, fwhm)
                    a = acc.setdefault((label, th), [0, 0.0])
                    a[0] += sc["n_spurious"]
                    a[1] += sc["completeness"] / len(seeds)
        for th in THRESHOLDS:
            cells = " | ".join(f"{acc[(x, th)][0]} | {acc[(x, th)][1]:.4f}" for x in labels)
            lines.append(f"| {variant} | {th:g} | {cells} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", nargs="+", required=True, help="bench work folders (--work-dir)")
    ap.add_argument("--labels", nargs="+", required=True)
    ap.add_argument("--seeds", default="100,101,102")
    ap.add_argument("--out", default=None, help="markdown table here (else printed)")
    args = ap.parse_args()
    lines = sweep(args.work, args.labels, [int(s) for s in args.seeds.split(",")])
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
