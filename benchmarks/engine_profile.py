"""Where the network's time goes on this CPU, and what reduced precision costs in agreement.

1. Per part (stem / core / head) wall time and MPix/s of each engine and
   precision against tile size, strip size (pixels per stem/head strip) and
   threads, on one simulated frame (model loaded, second of two runs).
2. Agreement of every engine/precision with the float32 ONNX Runtime
   reference on simulated frames and on the real frames of
   ``../shared/data/real``: max |dp|, and the fraction of pixels whose
   thresholded mask differs (the model's priors and thresholds, as ``maxidetect
   mask`` writes them), all classes and per class; recall of the simulated
   truth per class.

    .venv/bin/python benchmarks/engine_profile.py [--size 2048] [--out benchmarks/results]

Timings drift with the machine's load: stop other jobs first (the table
records the CPU and its flags).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from maxidetect.classes import CLASS_NAMES, ClassConfig
from maxidetect.network.inference import ALIGN
from maxidetect.network.normalise import normalise
from maxidetect.network.onnx_engine import OnnxForward
from maxidetect.network.quantise import calibration_path, load_ranges
from maxidetect.priors import modify_priors, prior_factors
from maxidetect.validation.simulate import simulate_frame

HERE = Path(__file__).resolve().parent
REAL = HERE.parent.parent / "shared" / "data" / "real"

VARIANTS = [("onnxruntime", "float32"), ("onnxruntime", "int8"), ("openvino", "float32"), ("openvino", "mixed"),
            ("openvino", "bfloat16")]


def _forward(engine: str, precision: str, weights, threads: int | None, strip_pixels: int | None = None):
    if engine == "onnxruntime":
        int8 = load_ranges(None) if precision == "int8" else None
        return OnnxForward(weights, threads=threads, strip_pixels=strip_pixels, int8=int8)
    from maxidetect.network.openvino_engine import OpenVinoForward

    return OpenVinoForward(weights, threads=threads, strip_pixels=strip_pixels, precision=precision)


def _timed_parts(fwd, x: np.ndarray) -> dict:
    """Seconds per part of one pass over ``x`` (N, H, W), after a warm-up pass."""
    seconds: dict[str, float] = {}
    run = fwd._run

    def timed(part, *a, **k):
        t0 = time.perf_counter()
        run(part, *a, **k)
        seconds[part] = seconds.get(part, 0.0) + time.perf_counter() - t0

    fwd(x)
    fwd._run = timed
    t0 = time.perf_counter()
    fwd(x)
    seconds["total"] = time.perf_counter() - t0
    fwd._run = run
    return seconds


def profile(weights, image: np.ndarray, variants, threads_list, tiles, strips) -> list[dict]:
    rows = []

    def add(engine, precision, tile, strip, threads):
        x = image[None, :tile, :tile]
        fwd = _forward(engine, precision, weights, threads, strip)
        s = _timed_parts(fwd, x)
        mpix = x.size / 1e6
        row = {"engine": engine, "precision": precision, "tile": tile, "strip_pixels": strip or 2**18,
               "threads": threads, **{k: round(v, 3) for k, v in s.items()}, "mpix_per_s": mpix / s["total"]}
        rows.append(row)
        print(f"{engine:12s} {precision:9s} tile {tile:5d} strip {row['strip_pixels']:8d} threads {threads}: "
              f"stem {s['stem']:.2f} core {s['core']:.2f} head {s['head']:.2f} total {s['total']:.2f} s "
              f"({row['mpix_per_s']:.3f} MPix/s)", flush=True)

    for engine, precision in variants:
        for tile in tiles:
            add(engine, precision, tile, None, max(threads_list))
    for engine, precision in [v for v in variants if v[1] == "float32"]:
        for strip in strips:
            if strip != 2**18:
                add(engine, precision, max(tiles), strip, max(threads_list))
        for threads in threads_list:
            if threads != max(threads_list):
                add(engine, precision, max(tiles), None, threads)
    return rows


def _on_grid(image: np.ndarray) -> np.ndarray:
    h, w = (n // ALIGN * ALIGN for n in image.shape)
    return image[:h, :w]


def _masks(probs: np.ndarray, config: ClassConfig, factors: np.ndarray) -> np.ndarray:
    p = probs.copy()
    modify_priors(p, factors, axis=0, out=p)
    return p > config.thresholds[:, None, None].astype(np.float32)


def agreement(weights, frames: dict[str, tuple[np.ndarray, np.ndarray | None]], variants) -> dict:
    """Per frame and variant: max |dp| and mask differences against float32 ONNX Runtime; truth recall."""
    from maxidetect.network.weights import get_model_info
    from maxidetect.validation.simulate import BIT

    config = ClassConfig.default()
    factors = prior_factors(config.priors, np.asarray(get_model_info(None).training_priors, np.float64))
    out = {}
    fwds = {v: _forward(*v, weights, None) for v in variants}
    for name, (image, truth) in frames.items():
        x = normalise(image.astype(np.float32))[None]
        probs = {v: fwd(x)[0] for v, fwd in fwds.items()}
        ref = _masks(probs[variants[0]], config, factors)
        res = {}
        for v in variants:
            m = _masks(probs[v], config, factors)
            row = {"max_dp": float(np.abs(probs[v] - probs[variants[0]]).max()),
                   "differing_all": float(np.mean(m != ref)),
                   "differing": {c: float(np.mean(m[k] != ref[k])) for k, c in enumerate(CLASS_NAMES)}}
            if truth is not None:
                row["recall"] = {}
                for k, c in enumerate(CLASS_NAMES):
                    t = (truth & BIT[c]) != 0 if c in BIT else None
                    if t is not None and t.sum() >= 50:
                        row["recall"][c] = float(m[k][t].mean())
            res["/".join(v)] = row
        out[name] = res
        print(name, {k: f"{r['differing_all']:.2e}" for k, r in res.items()}, flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--frames", type=int, default=2, help="simulated frames for the agreement")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--report-only", action="store_true", help="rewrite the markdown from OUT/engine_profile.json")
    args = ap.parse_args(argv)
    if args.report_only:
        _report(json.loads((Path(args.out) / "engine_profile.json").read_text()), Path(args.out) / "engine_profile.md",
                args)
        return 0
    from maxidetect.network import openvino_engine
    from maxidetect.network.weights import load_weight_arrays

    variants = VARIANTS if openvino_engine.available() else VARIANTS[:2]
    if openvino_engine.available() and not openvino_engine.supports_bf16():
        variants = VARIANTS[:3]
    weights, _ = load_weight_arrays(None)
    sim = simulate_frame(seed=11, size=args.size)
    image = normalise(sim.image.astype(np.float32))
    cores = os.cpu_count() or 1
    threads = sorted({1, cores})
    tiles = [t for t in (512, 1024, 2048, 4096) if t <= args.size]
    strips = [2**16, 2**18, 2**20]
    rows = profile(weights, image, variants, threads, tiles, strips)

    frames = {}
    for k in range(args.frames):
        s = simulate_frame(seed=200 + k, size=1024)
        frames[f"sim{200 + k} (1024^2)"] = (s.image, s.truth)
    for path in sorted(REAL.glob("*.fits")):
        with fits.open(path) as h:
            for i, hdu in enumerate(h):
                if hdu.data is not None and hdu.data.ndim == 2 and min(hdu.data.shape) >= 256:
                    frames[f"{path.name}[{i}]"] = (_on_grid(np.asarray(hdu.data, np.float32)), None)
                    break
    agree = agreement(weights, frames, variants)

    flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").exists() else ""
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f" {f}" in flags]
    model = next((ln.split(":", 1)[1].strip() for ln in flags.splitlines() if ln.startswith("model name")), "?")
    result = {"machine": {"cpu": model, "cores": cores, "isa": isa, "platform": platform.platform()},
              "size": args.size, "profile": rows, "agreement": agree}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "engine_profile.json").write_text(json.dumps(result, indent=2))
    _report(result, out / "engine_profile.md", args)
    return 0


def _report(r: dict, path: Path, args) -> None:
    m = r["machine"]
    lines = [f"# Network engines and precisions, part by part ({m['cpu']}, {m['cores']} cores)", "",
             f"`.venv/bin/python benchmarks/engine_profile.py --size {args.size} --frames {args.frames}`; "
             f"ISA: {', '.join(m['isa'])}. Model loaded; seconds of the second of two passes over a "
             "normalised simulated frame cut to the tile; strips: pixels per stem/head strip.", "",
             "| engine | precision | tile | strip px | threads | stem s | core s | head s | total s | MPix/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for p in r["profile"]:
        lines.append(f"| {p['engine']} | {p['precision']} | {p['tile']} | {p['strip_pixels']} | {p['threads']} | "
                     f"{p['stem']:.2f} | {p['core']:.2f} | {p['head']:.2f} | {p['total']:.2f} | "
                     f"{p['mpix_per_s']:.3f} |")
    variants = list(next(iter(r["agreement"].values())))
    calibration = json.loads(calibration_path("maximask").read_text())["record"]["frames"]
    lines += ["", "## Agreement with float32 ONNX Runtime", "",
              "Thresholded masks with the model's priors and thresholds (what `maxidetect mask` writes): "
              "fraction of pixels x classes that differ; max |dp| over all classes. onnxruntime/int8's "
              f"activation ranges (`weights/maximask.int8.json`) come from {'; '.join(calibration)}: the "
              "simulated frames below (other seeds) and the UKIRT frame are not among them.", "",
              "| frame | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for name, res in r["agreement"].items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * res[v]['differing_all']:.4f}% (max dp "
                                                   f"{res[v]['max_dp']:.2g})" for v in variants) + " |")
    worst = {v: {c: max(res[v]["differing"][c] for res in r["agreement"].values()) for c in CLASS_NAMES}
             for v in variants}
    lines += ["", "Worst frame, per class (differing pixels):", "",
              "| variant | " + " | ".join(CLASS_NAMES) + " |", "|---|" + "---|" * len(CLASS_NAMES)]
    for v in variants:
        lines.append(f"| {v} | " + " | ".join(f"{100 * worst[v][c]:.3f}%" for c in CLASS_NAMES) + " |")
    sims = {k: v for k, v in r["agreement"].items() if "recall" in next(iter(v.values()))}
    if sims:
        classes = sorted({c for res in sims.values() for c in res[variants[0]]["recall"]})
        lines += ["", "Recall of the simulated truth (pixels), mean over the simulated frames:", "",
                  "| variant | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
        for v in variants:
            vals = [np.mean([res[v]["recall"][c] for res in sims.values() if c in res[v]["recall"]])
                    for c in classes]
            lines.append(f"| {v} | " + " | ".join(f"{x:.4f}" for x in vals) + " |")
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
