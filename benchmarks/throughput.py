"""maxidetect vs the MaxiMask CLI on the same synthetic frame, in one run.

Reports wall time, MPix/s and peak RSS of each command (both CLIs end to
end, process start included), their ratios, and per-class mask agreement.

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--work", default=str(Path(__file__).resolve().parent / "work"))
    ap.add_argument("--skip-maximask", action="store_true")
    args = ap.parse_args(argv)

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    (work / "md").mkdir(parents=True)
    (work / "mm").mkdir()
    frame = work / "md" / "frame.fits"
    write_frame(frame, args.size)
    shutil.copy(frame, work / "mm" / "frame.fits")
    mpix = args.size * args.size / 1e6

    results = {"size": args.size, "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}
    wall, rss = run_measured([str(BIN / "maxidetect"), "mask", str(frame), "--overwrite"])
    results["maxidetect"] = {"wall_s": wall, "mpix_per_s": mpix / wall, "peak_rss_mb": rss}
    print(f"maxidetect: {wall:.1f} s, {mpix / wall:.3f} MPix/s, peak RSS {rss:.0f} MB", flush=True)
    # The Keras engine on TensorFlow, and on JAX (no TensorFlow runtime in the
    # process), against the default engine's masks.
    variants = {"maxidetect_tf": (["--engine", "keras"], None), "maxidetect_jax": ([], {"KERAS_BACKEND": "jax"})}
    for key, (flags, env) in variants.items():
        if key == "maxidetect_jax":
            try:
                import jax  # noqa: F401
            except ImportError:
                continue
        (work / key).mkdir()
        wall, rss = run_measured([str(BIN / "maxidetect"), "mask", str(frame), "-o", str(work / key), *flags], env=env)
        a = fits.getdata(work / "md" / "frame.masks.fits")
        b = fits.getdata(work / key / "frame.masks.fits")
        results[key] = {"wall_s": wall, "mpix_per_s": mpix / wall, "peak_rss_mb": rss,
                        "frac_differing_vs_default": float(np.mean(a != b))}
        print(f"{key}: {wall:.1f} s, {mpix / wall:.3f} MPix/s, peak RSS {rss:.0f} MB", flush=True)
    # Steady state, as a survey worker sees it: model loaded and compiled once.
    from maxidetect.masks import MaskMaker

    data = fits.getdata(frame)
    maker = MaskMaker()
    maker.masks(data)
    t0 = time.perf_counter()
    maker.masks(data)
    warm = time.perf_counter() - t0
    results["maxidetect_warm"] = {"wall_s": warm, "mpix_per_s": mpix / warm}
    print(f"maxidetect warm (per frame, model loaded): {warm:.1f} s, {mpix / warm:.3f} MPix/s", flush=True)
    if not args.skip_maximask:
        wall, rss = run_measured([str(BIN / "maximask"), str(work / "mm" / "frame.fits")])
        results["maximask"] = {"wall_s": wall, "mpix_per_s": mpix / wall, "peak_rss_mb": rss}
        print(f"maximask:   {wall:.1f} s, {mpix / wall:.3f} MPix/s, peak RSS {rss:.0f} MB", flush=True)
        md = results["maxidetect"]
        mm = results["maximask"]
        results["speedup"] = mm["wall_s"] / md["wall_s"]
        results["speedup_warm"] = mm["wall_s"] / results["maxidetect_warm"]["wall_s"]
        results["rss_ratio"] = md["peak_rss_mb"] / mm["peak_rss_mb"]
        a = fits.getdata(work / "md" / "frame.masks.fits")
        b = fits.getdata(work / "mm" / "frame.mask.fits")
        results["agreement"] = agreement(a, b)
        results["frac_differing_all"] = float(np.mean(a.astype(bool) != b.astype(bool)))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"throughput_{args.size}.json").write_text(json.dumps(results, indent=2))
    lines = [
        f"# Throughput: {args.size}x{args.size} synthetic frame, {os.cpu_count()} CPU cores",
        "",
        f"Command: `.venv/bin/python benchmarks/throughput.py --size {args.size}`",
        "",
        "| tool | wall [s] | MPix/s | peak RSS [MB] |",
        "|---|---|---|---|",
    ]
    names = {"maxidetect": "maxidetect CLI (default: ONNX Runtime)",
             "maxidetect_tf": "maxidetect CLI `--engine keras` (TensorFlow)",
             "maxidetect_jax": "maxidetect CLI, `KERAS_BACKEND=jax`", "maximask": "maximask CLI"}
    for tool, name in names.items():
        if tool in results:
            r = results[tool]
            lines.append(f"| {name} | {r['wall_s']:.1f} | {r['mpix_per_s']:.3f} | {r['peak_rss_mb']:.0f} |")
    r = results["maxidetect_warm"]
    lines.append(f"| maxidetect, model loaded (per frame) | {r['wall_s']:.1f} | {r['mpix_per_s']:.3f} | - |")
    if "speedup" in results:
        lines += [
            "",
            f"Speed-up (maximask CLI / maxidetect CLI): **{results['speedup']:.1f}x** end to end, "
            f"**{results['speedup_warm']:.1f}x** per frame with the model loaded; "
            f"RSS ratio (maxidetect / maximask): {results['rss_ratio']:.2f}; "
            f"all-class differing pixels: {100 * results['frac_differing_all']:.4f}%"
            + "".join(f"; {names[k]} vs default masks: {100 * results[k]['frac_differing_vs_default']:.5f}% differ"
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
    (out / f"throughput_{args.size}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
