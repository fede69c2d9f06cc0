"""Survey-scale throughput: 1 worker vs 2 local workers vs a Dask LocalCluster
with 2 workers on the same synthetic frames, and peak memory per worker for
a 2048^2 and an 8192^2 frame.

    .venv/bin/python benchmarks/survey.py --frames 32 --size 2048

Each mode runs in its own Python process (``--mode``), so every peak-RSS
figure is that mode's alone. Writes results/survey.md and .json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

HERE = Path(__file__).resolve().parent


def make_inputs(d: Path, n: int, size: int, seed: int = 2000) -> list[Path]:
    from maxidetect.validation.simulate import simulate_frame

    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        p = d / f"frame{k:03d}.fits"
        if not p.exists():
            f = simulate_frame(seed + k, size=size)
            fits.PrimaryHDU(f.image.astype(np.float32), f.header).writeto(p)
        paths.append(p)
    return paths


def run_mode(mode: str, inputs: list[str], out: str, kind: str) -> dict:
    """One mode in this process: serial, pool2 (2 local processes) or dask2."""
    from maxidetect.runner import Job, _peak_rss_mb, run_files

    job = Job(kind, out_dir=out)
    client = cluster = None
    workers = 1
    if mode == "pool2":
        workers, job = 2, dataclasses.replace(job, threads=max(1, (os.cpu_count() or 2) // 2))
    elif mode == "dask2":
        from dask.distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    t0 = time.perf_counter()
    s = run_files(job, inputs, workers=workers, client=client, progress=None)
    wall = time.perf_counter() - t0
    if client is not None:
        client.close()
        cluster.close()
    d = s.to_dict()
    d.pop("results")
    d["wall_s"] = wall
    d["parent_peak_rss_mb"] = _peak_rss_mb()
    d["children_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return d


def _sub(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--big", type=int, default=8192, help="side of the memory-check frame (0: skip)")
    ap.add_argument("--kind", default="mask", choices=["mask", "maps", "detect"])
    ap.add_argument("--modes", default="serial,pool2,dask2")
    ap.add_argument("--work", help="keep inputs here (default: a temporary directory)")
    ap.add_argument("--out", default=str(HERE / "results" / "survey"))
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--inputs", nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--render", action="store_true", help="only rewrite the .md from the .json")
    args = ap.parse_args(argv)
    if args.render:
        out = Path(args.out)
        render(json.loads(out.with_suffix(".json").read_text()), out)
        return
    if args.mode:  # child
        out = tempfile.mkdtemp(prefix=f"survey-{args.mode}-")
        print(json.dumps(run_mode(args.mode, args.inputs, out, args.kind)))
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="maxidetect-survey-"))
    t0 = time.perf_counter()
    modes = [m for m in args.modes.split(",") if m and m != "none"]
    inputs = [str(p) for p in make_inputs(work / f"in{args.size}", args.frames if modes else 0, args.size)]
    print(f"{len(inputs)} inputs in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    rows = {}
    for mode in modes:
        rows[mode] = _sub(["--mode", mode, "--kind", args.kind, "--inputs", *inputs])
        print(mode, json.dumps(rows[mode]), file=sys.stderr, flush=True)
    memory = {}
    if args.big:
        for size in (args.size, args.big):
            one = [str(p) for p in make_inputs(work / f"one{size}", 1, size, seed=3000)]
            memory[size] = _sub(["--mode", "serial", "--kind", args.kind, "--inputs", *one])
            print("memory", size, json.dumps(memory[size]), file=sys.stderr, flush=True)
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "frames": args.frames, "size": args.size, "kind": args.kind, "modes": rows,
              "memory": {str(k): v for k, v in memory.items()}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    render(result, out)


def render(result: dict, out: Path) -> None:
    """The markdown table; MPix/s from the frame count and size (not the runner's tally)."""
    rows, memory = result["modes"], result["memory"]
    n, size, kind = result["frames"], result["size"], result["kind"]
    mpix = n * size * size / 1e6
    base = rows.get("serial")
    if not rows:  # memory check only (--modes none)
        lines = [f"# Peak memory of one `maxidetect {kind}` worker by frame size",
                 "", f"`.venv/bin/python benchmarks/survey.py --modes none --kind {kind} --size {size} "
                 f"--big <N>`; {result['machine']}; one serial worker in a fresh process per frame "
                 "(network loading included).", "", "| frame | peak RSS [MB] | seconds |", "|---|---|---|"]
        for sz, r in memory.items():
            lines.append(f"| {sz}x{sz} | {max(r['peak_rss_mb_per_worker'].values()):.0f} | {r['wall_s']:.0f} |")
        out.with_suffix(".md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    lines = [f"# Survey throughput: {n} synthetic {size}x{size} frames, `maxidetect {kind}`",
             "", f"`.venv/bin/python benchmarks/survey.py --frames {n} --size {size} --kind {kind} "
             f"--modes {','.join(rows)}`; "
             f"{result['machine']}; each mode in a fresh process, outputs to a temporary directory; "
             "wall time includes starting the workers and loading the network.", "",
             "| mode | workers | wall [s] | files/s | MPix/s | vs 1 worker | peak RSS per worker [MB] |",
             "|---|---|---|---|---|---|---|"]
    for mode, r in rows.items():
        ratio = base["wall_s"] / r["wall_s"] if base else float("nan")
        rss = r["peak_rss_mb_per_worker"].values()
        lines.append(f"| {mode} | {r['workers']} | {r['wall_s']:.0f} | {r['done'] / r['wall_s']:.3f} | "
                     f"{mpix / r['wall_s']:.3f} | {ratio:.2f}x | {max(rss):.0f} |")
    if memory:
        lines += ["", "Peak RSS of one worker (serial, fresh process) by frame size:", "",
                  "| frame | peak RSS [MB] | seconds |", "|---|---|---|"]
        for sz, r in memory.items():
            lines.append(f"| {sz}x{sz} | {max(r['peak_rss_mb_per_worker'].values()):.0f} | {r['wall_s']:.0f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
