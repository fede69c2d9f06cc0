"""What the host does around an accelerator's network: `MaskMaker.masks` on one frame with the
Keras engine's forward pass replaced by one that returns at once, so only the host's share is
timed (normalisation, tiling, copies, stitching, priors, thresholds). Two forms of the device's
output: float32 probabilities, channels-last (what the Keras engine returned before), and the
uint8 masks thresholded on the device (`Predictor.masks_forward`, the JAX backend's path).
Runs on a CPU: what a GPU node's host would spend however fast its GPU is.

    python benchmarks/host_side.py [--size 4096] [--tile 1024] [--batch 4] [--out benchmarks/results/host_side_4096.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    from maxidetect import timing
    from maxidetect.masks.maker import MaskMaker
    from maxidetect.network.inference import Predictor

    pred = Predictor("maximask", engine="keras", tile=args.tile, batch_size=args.batch)
    maker = MaskMaker(predictor=pred)
    n_all, n_sel = pred.n_classes, maker.selected.size
    rng = np.random.default_rng(0)
    cache = {}

    def probabilities(x):  # a fresh host buffer per batch, as a device-to-host copy makes
        key = ("p",) + x.shape
        if key not in cache:
            cache[key] = rng.random(x.shape + (n_all,), dtype=np.float32)
        return np.moveaxis(np.array(cache[key]), -1, 1)

    def masks(x):
        key = ("m",) + x.shape
        if key not in cache:
            cache[key] = (rng.random((x.shape[0], n_sel) + x.shape[1:]) > 0.95).astype(np.uint8)
        return np.array(cache[key])

    image = rng.normal(1000.0, 10.0, (args.size, args.size)).astype(np.float32)
    rows = []
    for name, how in (("float32 probabilities, channels-last", "probs"), ("uint8 masks, on the device", "masks")):
        pred._forward = probabilities
        maker._masks_forward = (lambda: masks) if how == "masks" else (lambda: None)
        best = None
        for _ in range(args.repeat):
            with timing.record() as seconds:
                t0 = time.perf_counter()
                maker.masks(image)
                wall = time.perf_counter() - t0
            if best is None or wall < best[0]:
                best = (wall, dict(seconds))
        rows.append({"output": name, "wall_s": best[0], "stages_s": best[1]})
        print(rows[-1], flush=True)
    mpix = args.size ** 2 / 1e6
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    lines = [f"# The host's share of `masks` around a free network: {args.size}^2 frame, tiles {args.tile}, "
             f"batch {args.batch}", "",
             f"`python benchmarks/host_side.py --size {args.size} --tile {args.tile} --batch {args.batch}` "
             f"({os.cpu_count()} CPUs, {cpu}); best of {args.repeat}. The network returns at once; what is left is "
             "what a GPU node's host spends on each frame however fast its GPU is.", "",
             "| device output | wall s | host-bound MPix/s | s per stage |", "|---|---|---|---|"]
    for r in rows:
        st = ", ".join(f"{k} {v:.2f}" for k, v in r["stages_s"].items())
        lines.append(f"| {r['output']} | {r['wall_s']:.2f} | {mpix / r['wall_s']:.1f} | {st} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
