"""The network on an accelerator, end to end, in one call: JAX, float32 and bfloat16, batch and tile sizes.

For each configuration (precision x tiles per batch x tile size) on one
simulated frame (default 4096^2), with the model loaded and compiled by a
first run: MPix/s of (1) the network alone over the frame's tiles, (2) the
masks end to end in memory (normalise, network, priors, thresholds), and,
once, (3) the fused maps (the CPU-side evidence fusion) to show what a GPU
node would wait for. Masks are compared with the float32 ONNX Runtime
engine's on a 1024^2 cut-out (fraction of pixels that differ).

    KERAS_BACKEND=jax python benchmarks/gpu_end_to_end.py [--size 4096] [--out benchmarks/results/gpu]

Target (issue 22): >= 100 MPix/s end to end on one GPU. Runs on a CPU too
(slowly: use --size 1024 --batches 1 --tiles 512 to check the script).
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

HERE = Path(__file__).resolve().parent


def _device() -> str:
    try:
        import jax

        d = jax.devices()[0]
        return f"{d.platform}: {getattr(d, 'device_kind', d)} (jax {jax.__version__})"
    except Exception as exc:  # no JAX: say so in the record
        return f"unknown ({exc})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--precisions", default="float32,bfloat16")
    ap.add_argument("--batches", default="1,4,8", help="tiles per forward pass")
    ap.add_argument("--tiles", default="1024,2048", help="tile sides")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "gpu"))
    args = ap.parse_args(argv)

    from maxidetect.masks.maker import MaskMaker
    from maxidetect.network.inference import Predictor
    from maxidetect.network.normalise import normalise
    from maxidetect.validation.simulate import simulate_frame

    sim = simulate_frame(seed=5, size=args.size)
    image = sim.image.astype(np.float32)
    mpix = image.size / 1e6
    norm = normalise(image)
    ref = MaskMaker(engine="onnxruntime").masks(image[:1024, :1024])
    rows = []
    for precision in args.precisions.split(","):
        for tile in (int(t) for t in args.tiles.split(",")):
            for batch in (int(b) for b in args.batches.split(",")):
                try:
                    pred = Predictor(engine="keras", precision=precision, tile=tile, batch_size=batch)
                    maker = MaskMaker(predictor=pred)
                    pred.predict(norm[:tile, :tile])  # compile
                    net = min(_timed(pred.predict, norm) for _ in range(args.repeat))
                    e2e = min(_timed(maker.masks, image) for _ in range(args.repeat))
                    differ = float(np.mean(maker.masks(image[:1024, :1024]) != ref))
                    row = {"precision": precision, "tile": tile, "batch": batch, "network_s": net,
                           "network_mpix_s": mpix / net, "masks_s": e2e, "masks_mpix_s": mpix / e2e,
                           "masks_differing_vs_onnxruntime": differ}
                except Exception as exc:  # out of device memory, unsupported precision: record and go on
                    row = {"precision": precision, "tile": tile, "batch": batch, "error": str(exc)[:300]}
                rows.append(row)
                print(row, flush=True)
    fused = None
    try:
        from maxidetect.maps.fusion import fuse
        from maxidetect.maps.policy import MapPolicy
        from maxidetect.priors import bitmask

        best = max((r for r in rows if "masks_s" in r), key=lambda r: r["masks_mpix_s"])
        maker = MaskMaker(predictor=Predictor(engine="keras", precision=best["precision"], tile=best["tile"],
                                              batch_size=best["batch"]))
        masks = maker.masks(image)
        t0 = time.perf_counter()
        fuse(image, bitmask(masks.astype(bool), maker.selected).astype(np.int32), MapPolicy(), sim.header)
        fused = time.perf_counter() - t0
    except Exception as exc:
        print(f"fusion not measured: {exc}", file=sys.stderr)
    result = {"device": _device(), "size": args.size, "platform": platform.platform(), "rows": rows,
              "fusion_s": fused}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"gpu_end_to_end_{args.size}.json").write_text(json.dumps(result, indent=2))
    lines = [f"# Network end to end on {result['device']}, {args.size}x{args.size} simulated frame", "",
             f"`KERAS_BACKEND=jax python benchmarks/gpu_end_to_end.py --size {args.size} --precisions "
             f"{args.precisions} --batches {args.batches} --tiles {args.tiles}`; best of {args.repeat}; "
             "masks: normalise + network + priors + thresholds in memory. Target: >= 100 MPix/s.", "",
             "| precision | tile | batch | network MPix/s | masks MPix/s | masks differing vs ONNX Runtime |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['precision']} | {r['tile']} | {r['batch']} | failed: {r['error'][:60]} | | |")
        else:
            lines.append(f"| {r['precision']} | {r['tile']} | {r['batch']} | {r['network_mpix_s']:.1f} | "
                         f"{r['masks_mpix_s']:.1f} | {100 * r['masks_differing_vs_onnxruntime']:.4f}% |")
    if fused is not None:
        lines += ["", f"Evidence fusion (CPU) on the same frame: {fused:.1f} s ({mpix / fused:.2f} MPix/s)."]
    (out / f"gpu_end_to_end_{args.size}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
