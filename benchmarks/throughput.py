"""maxidetect vs the MaxiMask CLI on the same simulated frame, in one run.

Reports wall time, MPix/s and peak RSS of each command (both CLIs end to
end, process start included), their ratios, per-class mask agreement, and
(on a ``maxidetect.validation.simulate`` frame) each tool's per-class pixel
recall of the simulated truth. Variants: the default engine (ONNX Runtime,
float32), ``--precision int8`` (ONNX Runtime), ``--precision mixed`` (OpenVINO, when installed), and the Keras
engine on TensorFlow and JAX (unless ``--skip-keras``).

    .venv/bin/python benchmarks/throughput.py [--size 2048] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import write_frame  # noqa: E402

from maxidetect.classes import CLASS_NAMES  # noqa: E402
from maxidetect.validation.simulate import BIT, simulate_frame  # noqa: E402

BIN = Path(sys.executable).parent


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Run ``cmd``; return (wall seconds, peak RSS in MB) of that child alone."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=None if env is None else {**os.environ, **env})
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024.0


def measure(cmd: list[str], out: Path, mpix: float, runs: int, env: dict | None = None, inputs=()) -> dict:
    """``runs`` runs of ``cmd`` writing into ``out`` (emptied before each, or
    the run records would skip the work; ``inputs`` copied in): median wall
    time, largest peak RSS (memory at its worst: ONNX Runtime's pool varies
    from run to run)."""
    def once():
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        for f in inputs:
            shutil.copy(f, out)
        return run_measured(cmd, env)

    walls, rss = zip(*(once() for _ in range(max(1, runs))), strict=True)
    wall = float(np.median(walls))
    return {"wall_s": wall, "mpix_per_s": mpix / wall, "peak_rss_mb": max(rss), "runs": len(walls),
            "walls_s": list(walls), "rss_mb": list(rss)}


def agreement(a: np.ndarray, b: np.ndarray) -> list[dict]:
    rows = []
    for i, name in enumerate(CLASS_NAMES):
        x, y = a[i].astype(bool), b[i].astype(bool)
        union = np.logical_or(x, y).sum()
        rows.append({
            "class": name,
            "n_maxidetect": int(x.sum()),
            "n_maximask": int(y.sum()),
            "iou": float(np.logical_and(x, y).sum() / union) if union >= 100 else None,
            "frac_differing": float(np.logical_xor(x, y).mean()),
        })
    return rows


def _cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "?"
    return next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--work", default=str(Path(__file__).resolve().parent / "work"))
    ap.add_argument("--skip-maximask", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each maxidetect CLI (median time, worst RSS)")
    ap.add_argument("--maximask-repeat", type=int, default=1, help="runs of the MaxiMask CLI (~3 min each)")
    ap.add_argument("--frame", choices=("sim", "synthetic"), default="sim",
                    help="maxidetect's simulator (with pixel truth) or benchmarks/synthetic.py (stars, hot column)")
    ap.add_argument("--skip-keras", action="store_true", help="no Keras engine variants (TensorFlow, JAX)")
    args = ap.parse_args(argv)

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    frame = work / "frame.fits"
    truth = None
    if args.frame == "sim":
        sim = simulate_frame(seed=1, size=args.size)
        fits.PrimaryHDU(sim.image, sim.header).writeto(frame)
        truth = sim.truth
    else:
        write_frame(frame, args.size)
    mpix = args.size * args.size / 1e6

    results = {"size": args.size, "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}
    md_out = work / "maxidetect"
    r = results["maxidetect"] = measure([str(BIN / "maxidetect"), "mask", str(frame), "-o", str(md_out)], md_out, mpix,
                                        args.repeat)
    print(f"maxidetect: {r['walls_s']} s, {r['mpix_per_s']:.3f} MPix/s, peak RSS {r['rss_mb']} MB", flush=True)
    # The Keras engine on TensorFlow, and on JAX (no TensorFlow runtime in the
    # process), against the default engine's masks.
    variants = {"maxidetect_int8": (["--precision", "int8"], None),
                "maxidetect_mixed": (["--precision", "mixed"], None)}
    if not args.skip_keras:
        variants.update({"maxidetect_tf": (["--engine", "keras"], None),
                         "maxidetect_jax": ([], {"KERAS_BACKEND": "jax"})})
    from maxidetect.network import openvino_engine

    for key, (flags, env) in variants.items():
        if key == "maxidetect_jax":
            try:
                import jax  # noqa: F401
            except ImportError:
                continue
        if key == "maxidetect_mixed" and not openvino_engine.available():
            continue
        r = results[key] = measure([str(BIN / "maxidetect"), "mask", str(frame), "-o", str(work / key), *flags],
                                   work / key, mpix, args.repeat, env=env)
        a = fits.getdata(md_out / "frame.masks.fits")
        b = fits.getdata(work / key / "frame.masks.fits")
        r["frac_differing_vs_default"] = float(np.mean(a != b))
        print(f"{key}: {r['walls_s']} s, {r['mpix_per_s']:.3f} MPix/s, peak RSS {r['rss_mb']} MB", flush=True)
    # Steady state, as a survey worker sees it: model loaded and compiled once.
    from maxidetect.masks.maker import MaskMaker

    data = fits.getdata(frame)
    maker = MaskMaker()
    maker.masks(data)
    t0 = time.perf_counter()
    maker.masks(data)
    warm = time.perf_counter() - t0
    results["maxidetect_warm"] = {"wall_s": warm, "mpix_per_s": mpix / warm}
    print(f"maxidetect warm (per frame, model loaded): {warm:.1f} s, {mpix / warm:.3f} MPix/s", flush=True)
    if not args.skip_maximask:
        mm_out = work / "maximask"  # it writes beside its input
        r = results["maximask"] = measure([str(BIN / "maximask"), str(mm_out / frame.name)], mm_out, mpix,
                                          args.maximask_repeat, inputs=(frame,))
        print(f"maximask: {r['walls_s']} s, {r['mpix_per_s']:.3f} MPix/s, peak RSS {r['rss_mb']} MB", flush=True)
        md = results["maxidetect"]
        mm = results["maximask"]
        results["speedup"] = mm["wall_s"] / md["wall_s"]
        results["speedup_warm"] = mm["wall_s"] / results["maxidetect_warm"]["wall_s"]
        results["rss_ratio"] = md["peak_rss_mb"] / mm["peak_rss_mb"]
        a = fits.getdata(md_out / "frame.masks.fits")
        b = fits.getdata(mm_out / "frame.mask.fits")
        results["agreement"] = agreement(a, b)
        results["frac_differing_all"] = float(np.mean(a.astype(bool) != b.astype(bool)))
        for key in variants:
            if key in results:
                c = fits.getdata(work / key / "frame.masks.fits")
                results[key]["frac_differing_vs_maximask"] = float(np.mean(c.astype(bool) != b.astype(bool)))
    if truth is not None:
        masks = {"maxidetect": md_out / "frame.masks.fits", "maximask": work / "maximask" / "frame.mask.fits",
                 **{k: work / k / "frame.masks.fits" for k in variants if k in results}}
        results["recall"] = {}
        for tool, path in masks.items():
            if path.exists():
                m = fits.getdata(path).astype(bool)
                results["recall"][tool] = {c: float(m[i][(truth & BIT[c]) != 0].mean())
                                           for i, c in enumerate(CLASS_NAMES)
                                           if c in BIT and ((truth & BIT[c]) != 0).sum() >= 50}

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"throughput_{args.size}.json").write_text(json.dumps(results, indent=2))
    lines = [
        f"# Throughput: {args.size}x{args.size} {'simulated' if truth is not None else 'synthetic'} frame, "
        f"{os.cpu_count()} CPU cores",
        "",
        f"Command: `.venv/bin/python benchmarks/throughput.py --size {args.size} --repeat {args.repeat} "
        f"--maximask-repeat {args.maximask_repeat} --frame {args.frame}{' --skip-keras' if args.skip_keras else ''}`"
        f"; {platform.processor() or platform.machine()}, {_cpu_name()}",
        "",
        "Wall: median of the runs (range in brackets); peak RSS: the largest of the runs.",
        "",
        "| tool | runs | wall [s] | MPix/s | peak RSS [MB] |",
        "|---|---|---|---|---|",
    ]
    names = {"maxidetect": "maxidetect CLI (default: ONNX Runtime)",
             "maxidetect_int8": "maxidetect CLI `--precision int8` (ONNX Runtime)",
             "maxidetect_mixed": "maxidetect CLI `--precision mixed` (OpenVINO)",
             "maxidetect_tf": "maxidetect CLI `--engine keras` (TensorFlow)",
             "maxidetect_jax": "maxidetect CLI, `KERAS_BACKEND=jax`", "maximask": "maximask CLI"}
    for tool, name in names.items():
        if tool in results:
            r = results[tool]
            span = f" ({min(r['walls_s']):.1f}-{max(r['walls_s']):.1f})" if r["runs"] > 1 else ""
            lines.append(f"| {name} | {r['runs']} | {r['wall_s']:.1f}{span} | {r['mpix_per_s']:.3f} | "
                         f"{r['peak_rss_mb']:.0f} |")
    r = results["maxidetect_warm"]
    lines.append(f"| maxidetect, model loaded (per frame) | 1 | {r['wall_s']:.1f} | {r['mpix_per_s']:.3f} | - |")
    if "speedup" in results:
        lines += [
            "",
            f"Speed-up (maximask CLI / maxidetect CLI): **{results['speedup']:.1f}x** end to end, "
            f"**{results['speedup_warm']:.1f}x** per frame with the model loaded; "
            f"RSS ratio (maxidetect / maximask): {results['rss_ratio']:.2f}; "
            f"all-class differing pixels: {100 * results['frac_differing_all']:.4f}%"
            + "".join(f"; {names[k]} vs default masks: {100 * results[k]['frac_differing_vs_default']:.5f}% differ, "
                      f"vs MaxiMask's {100 * results[k]['frac_differing_vs_maximask']:.4f}%, "
                      f"speed-up {results['maximask']['wall_s'] / results[k]['wall_s']:.1f}x"
                      for k in variants if k in results),
            "",
            "| class | maxidetect px | maximask px | IoU (>=100 px) | differing px |",
            "|---|---|---|---|---|",
        ]
        for r in results["agreement"]:
            iou = "-" if r["iou"] is None else f"{r['iou']:.4f}"
            lines.append(
                f"| {r['class']} | {r['n_maxidetect']} | {r['n_maximask']} | {iou} | {100 * r['frac_differing']:.4f}% |"
            )
    if results.get("recall"):
        classes = sorted({c for r in results["recall"].values() for c in r})
        lines += ["", "Pixel recall of the simulated truth per class (masks as written):", "",
                  "| tool | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
        for tool, r in results["recall"].items():
            lines.append(f"| {names.get(tool, tool)} | " + " | ".join(f"{r[c]:.4f}" for c in classes) + " |")
    (out / f"throughput_{args.size}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
