"""Which normalisation maps the network should see: scored against simulated
truth and against MaxiMask's own normalisation, in one run.

The network, tiling, priors and thresholds (MaxiMask 1.4.1's) are the same in
every row; only :func:`maxidetect.network.normalise.normalise`'s ``background`` changes.

1. Simulated truth (``maxidetect.validation.simulate``, held-out seeds): per class, the
   IoU, purity and AUC of the masks, and false positives within ``--edge`` px
   of the frame edge, for big and small frames.
2. MaxiMask: the same frames normalised by MaxiMask's own function (from the
   installed ``maximask`` package) through our network: per-class IoU and
   differing pixels against each of our choices, plus the map difference in
   noise units. The synthetic frame of ``benchmarks/throughput.py`` and the
   real frames of ``../shared/data/real`` are used.

Usage: ``python benchmarks/normalisation.py [--sizes 2048,512 --frames 3,16]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import make_frame  # noqa: E402

from maxidetect.classes import CLASSES  # noqa: E402
from maxidetect.files import is_image_hdu  # noqa: E402
from maxidetect.masks.maker import MaskMaker  # noqa: E402
from maxidetect.network.normalise import BACKGROUNDS, normalise  # noqa: E402
from maxidetect.priors import modify_priors  # noqa: E402
from maxidetect.validation.scoring import roc_curve  # noqa: E402
from maxidetect.validation.simulate import simulate_frame  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
REAL_FRAMES = ("fitswcs_tpv_ctio_mosaic2.fits", "fitswcs_zpn_ukirt_wfcam.fits", "ccdproc_a8280271_saao_raw.fits")
SEED0 = 9_000_000  # the held-out seeds of `maxidetect evaluate`


def _masks(maker: MaskMaker, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = maker.predictor.predict(x)
    modify_priors(p, maker._factors, axis=0, out=p)
    return p, p > maker._thresh[:, None, None]


def truth_scores(maker: MaskMaker, size: int, n_frames: int, edge: int) -> dict:
    acc = {b: {c.abbr: {"tp": 0, "fp": 0, "fn": 0, "fp_edge": 0, "auc": []} for c in CLASSES if c.bit}
           for b in BACKGROUNDS}
    for k in range(n_frames):
        frame = simulate_frame(SEED0 + k, size=size)
        near_edge = np.ones(frame.truth.shape, bool)
        near_edge[edge:-edge, edge:-edge] = False
        for b in BACKGROUNDS:
            p, m = _masks(maker, normalise(frame.image, background=b))
            for i, c in enumerate(CLASSES):
                if not c.bit:
                    continue
                t = (frame.truth & c.bit) != 0
                a = acc[b][c.abbr]
                a["tp"] += int((m[i] & t).sum())
                a["fp"] += int((m[i] & ~t).sum())
                a["fn"] += int((~m[i] & t).sum())
                a["fp_edge"] += int((m[i] & ~t & near_edge).sum())
                if t.any():
                    a["auc"].append(roc_curve(p[i], t)[2])
    out = {}
    for b, per in acc.items():
        out[b] = {}
        for c, a in per.items():
            tp, fp, fn = a["tp"], a["fp"], a["fn"]
            out[b][c] = {"iou": tp / max(tp + fp + fn, 1), "purity": tp / (tp + fp) if tp + fp else None,
                         "fp": fp, "fp_edge": a["fp_edge"], "auc": float(np.mean(a["auc"])) if a["auc"] else None}
    return out


def maximask_agreement(maker: MaskMaker, name: str, image: np.ndarray) -> dict:
    from maximask_and_maxitrack.utils import image_norm

    ref_x = image_norm(np.asarray(image, np.float32))[0]  # returns (image, seconds)
    _, ref = _masks(maker, ref_x)
    out = {"frame": name, "shape": list(image.shape)}
    for b in BACKGROUNDS:
        x = normalise(image, background=b)
        _, m = _masks(maker, x)
        d = np.abs(x - ref_x)
        per = {}
        for i, c in enumerate(CLASSES):
            union = int((m[i] | ref[i]).sum())
            per[c.abbr] = {"iou": float((m[i] & ref[i]).sum() / union) if union >= 100 else None,
                           "differing": float((m[i] != ref[i]).mean()), "n": int(m[i].sum()),
                           "n_ref": int(ref[i].sum())}
        out[b] = {"differing_all": float((m != ref).mean()), "classes": per,
                  "map_diff_median": float(np.median(d)), "map_diff_p99": float(np.percentile(d, 99))}
    return out


def _fmt(v, f="{:.3f}"):
    return "-" if v is None else f.format(v)


def write_report(res: dict, out: Path) -> None:
    lines = ["# Normalisation background maps: simulated truth and MaxiMask", "",
             f"Command: `{res['command']}`; machine: {res['machine']}; {res['seconds']:.0f} s.",
             "Same network, tiles, priors and thresholds (MaxiMask 1.4.1's) in every column.", ""]
    for size, sc in res["truth"].items():
        n = res["frames"][size]
        lines += [f"## Simulated truth, {n} frame(s) of {size}x{size} (seeds {SEED0}+)", "",
                  "IoU / purity / AUC; FP = false-positive pixels (within the edge band).", "",
                  "| class | " + " | ".join(BACKGROUNDS) + " |", "|---|" + "---|" * len(BACKGROUNDS)]
        for c in sc[BACKGROUNDS[0]]:
            cells = []
            for b in BACKGROUNDS:
                s = sc[b][c]
                cells.append(f"{s['iou']:.3f} / {_fmt(s['purity'])} / {_fmt(s['auc'], '{:.4f}')}; "
                             f"FP {s['fp']} ({s['fp_edge']})")
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Agreement with MaxiMask's normalisation (our network on both)", "",
              "Per frame and choice: pixels differing over all classes; classes with IoU < 0.95 (>= 100 px); "
              "|map difference| in noise units, median / 99th percentile.", "",
              "| frame | background | differing | IoU < 0.95 | map diff |", "|---|---|---|---|---|"]
    for a in res["maximask"]:
        for b in BACKGROUNDS:
            r = a[b]
            low = ", ".join(f"{c} {v['iou']:.3f}" for c, v in r["classes"].items()
                            if v["iou"] is not None and v["iou"] < 0.95) or "none"
            lines.append(f"| {a['frame']} {a['shape'][0]}x{a['shape'][1]} | {b} | {100 * r['differing_all']:.4f}% | "
                         f"{low} | {r['map_diff_median']:.4f} / {r['map_diff_p99']:.3f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2048,512")
    ap.add_argument("--frames", default="3,16", help="simulated frames per size")
    ap.add_argument("--edge", type=int, default=100, help="edge band for false positives [px]")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "normalisation"))
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    frames = [int(s) for s in args.frames.split(",") if s]
    if len(frames) != len(sizes):
        ap.error("--frames needs one count per size")
    t0 = time.perf_counter()
    maker = MaskMaker()
    res = {"command": "python benchmarks/normalisation.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": _machine(), "frames": dict(zip(map(str, sizes), frames, strict=True)), "truth": {},
           "maximask": []}
    for size, n in zip(sizes, frames, strict=True):
        res["truth"][str(size)] = truth_scores(maker, size, n, args.edge)
        print(f"truth {size}: done", file=sys.stderr)
    res["maximask"].append(maximask_agreement(maker, "synthetic (throughput.py)", make_frame(2048)[0]))
    for name in REAL_FRAMES:
        if (REAL / name).exists():
            with fits.open(REAL / name) as h:
                data = np.asarray(next(x for x in h if is_image_hdu(x)).data, np.float32)
            res["maximask"].append(maximask_agreement(maker, name.removesuffix(".fits"), data))
    res["seconds"] = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_report(res, out)
    print(out.with_suffix(".md").read_text())
    return 0


def _machine() -> str:
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores"


if __name__ == "__main__":
    sys.exit(main())
