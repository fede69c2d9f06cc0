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
    ap.add_argument("--fusion-size", type=int, default=2048, help="side of the cut-out the fusion is timed on")
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
    rows, makers = [], {}
    for precision in args.precisions.split(","):
        for tile in (int(t) for t in args.tiles.split(",")):
            for batch in (int(b) for b in args.batches.split(",")):
                try:
                    pred = Predictor(engine="keras", precision=precision, tile=tile, batch_size=batch)
                    maker = makers[precision, tile, batch] = MaskMaker(predictor=pred)
                    pred.predict(norm)  # compile every batch shape the frame's tiles make
                    net = min(_timed(pred.predict, norm) for _ in range(args.repeat))
                    device = _device_only(pred, batch, tile)
                    e2e, stages = min((_staged(maker.masks, image) for _ in range(args.repeat)),
                                      key=lambda r: r[0])
                    differ = float(np.mean(maker.masks(image[:1024, :1024]) != ref))
                    row = {"precision": precision, "tile": tile, "batch": batch, "network_s": net,
                           "network_mpix_s": mpix / net, "device_only_mpix_s": device, "masks_s": e2e,
                           "masks_mpix_s": mpix / e2e,
                           "masks_stages_s": stages, "masks_differing_vs_onnxruntime": differ}
                except Exception as exc:  # out of device memory, unsupported precision: record and go on
                    row = {"precision": precision, "tile": tile, "batch": batch, "error": str(exc)[:300]}
                rows.append(row)
                print(row, flush=True)
                _write(args, rows, None)  # each row as it comes: a run stopped at its limit keeps them
    fused = None
    try:
        from maxidetect.classes import CLASSES
        from maxidetect.maps.fusion import fuse
        from maxidetect.maps.policy import MapPolicy
        from maxidetect.priors import bitmask

        best = max((r for r in rows if "masks_s" in r), key=lambda r: r["masks_mpix_s"])
        maker = makers[best["precision"], best["tile"], best["batch"]]  # compiled already
        cut = image[:args.fusion_size, :args.fusion_size]
        sel = list(maker.selected)
        probs = maker.probabilities(cut)
        masks = probs > maker.config.thresholds[sel][:, None, None]
        cr = [CLASSES[i].abbr for i in sel].index("CR")
        t0 = time.perf_counter()
        fuse(cut, bitmask(masks, maker.selected).astype(np.int32), MapPolicy(), sim.header, cr_probability=probs[cr])
        fused = (time.perf_counter() - t0, cut.shape[0])
    except Exception as exc:
        print(f"fusion not measured: {exc}", file=sys.stderr)
    _write(args, rows, fused)
    return 0


def _write(args, rows, fused) -> None:
    result = {"device": _device(), "size": args.size, "platform": platform.platform(), "rows": rows,
              "fusion_s": fused}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"gpu_end_to_end_{args.size}.json").write_text(json.dumps(result, indent=2))
    lines = [f"# Network end to end on {result['device']}, {args.size}x{args.size} simulated frame", "",
             f"`KERAS_BACKEND=jax python benchmarks/gpu_end_to_end.py --size {args.size} --precisions "
             f"{args.precisions} --batches {args.batches} --tiles {args.tiles}`; best of {args.repeat}; "
             "masks: normalise + network + priors + thresholds in memory, its seconds per stage "
             "(`maxidetect.timing`; the network stage holds the host-device copies). Target: >= 100 MPix/s.", "",
             "Device only: the jitted network alone on device-resident tiles of random input (tile pixels, "
             "margins included); the gap to the network column is tiling, copies and host-device transfers.", "",
             "| precision | tile | batch | device only MPix/s | network MPix/s | masks MPix/s | masks: s per stage "
             "| masks differing vs ONNX Runtime |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['precision']} | {r['tile']} | {r['batch']} | failed: {r['error'][:60]} | | | | |")
        else:
            st = ", ".join(f"{k} {v:.2f}" for k, v in r["masks_stages_s"].items())
            dev = f"{r['device_only_mpix_s']:.1f}" if "device_only_mpix_s" in r else "not measured"
            lines.append(f"| {r['precision']} | {r['tile']} | {r['batch']} | {dev} | {r['network_mpix_s']:.1f} | "
                         f"{r['masks_mpix_s']:.1f} | {st} | {100 * r['masks_differing_vs_onnxruntime']:.4f}% |")
    if fused is not None:
        lines += ["", f"Evidence fusion (CPU, one process) on a {fused[1]}^2 cut-out of the same frame: "
                  f"{fused[0]:.1f} s ({fused[1] ** 2 / 1e6 / fused[0]:.2f} MPix/s)."]
    (out / f"gpu_end_to_end_{args.size}.md").write_text("\n".join(lines) + "\n")
    if fused is not None or len(rows) == 1:
        print("\n".join(lines), flush=True)


def _device_only(pred, batch: int, tile: int, reps: int = 5) -> float:
    """MPix/s of the jitted network on a device-resident batch (no host copies)."""
    import jax
    import jax.numpy as jnp

    model = pred.model
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]
    fn = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=False)[0])
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, tile, tile, 1), jnp.float32)
    fn(tv, ntv, x).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(reps):
        y = fn(tv, ntv, x)
    y.block_until_ready()
    return batch * tile * tile * reps / 1e6 / (time.perf_counter() - t0)


def _staged(fn, *args) -> tuple[float, dict]:
    from maxidetect import timing

    with timing.record() as seconds:
        t = _timed(fn, *args)
    return t, {k: round(v, 3) for k, v in seconds.items()}

    return 0


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
