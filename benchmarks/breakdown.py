"""Where the time of each command goes on a 2048^2 frame: mask, maps, detect, sex.

Each command runs as a user runs it (a fresh process, ``--summary``); the
per-stage seconds come from the run's own timings (``maxidetect.timing``:
read, normalise, network, priors, fusion, maps, extract, score, writes; each
second counted once), the rest of the wall time is process start-up, imports
and model loading. Every command starts from nothing (no reused masks or
maps), so each includes the network.

    .venv/bin/python benchmarks/breakdown.py [--size 2048] [--precision float32] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from astropy.io import fits

from maxidetect.timing import STAGES
from maxidetect.validation.simulate import simulate_frame

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
COMMANDS = ("mask", "maps", "detect", "sex")


def run(command: str, frame: Path, out: Path, extra: list[str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    summary = out / "summary.json"
    cmd = [str(BIN / "maxidetect"), command, str(frame), "-o", str(out), "--summary", str(summary), "-q", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()[-500:]}")
    result = json.loads(summary.read_text())["results"][0]
    stages = result["stages"]
    return {"command": command, "wall_s": wall, "file_s": result["seconds"], "stages": stages,
            "startup_s": wall - sum(stages.values()), "peak_rss_mb": result["peak_rss_mb"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--precision", default="float32", help="network precision (float32, mixed, ...)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per command (the fastest is kept)")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--work", default=str(HERE / "work" / "breakdown"))
    args = ap.parse_args(argv)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    frame = work / "frame.fits"
    sim = simulate_frame(seed=3, size=args.size)
    fits.PrimaryHDU(sim.image, sim.header).writeto(frame)
    extra = [] if args.precision == "float32" else ["--precision", args.precision]
    rows = []
    for command in COMMANDS:
        if command == "sex" and shutil.which("source-extractor") is None and shutil.which("sex") is None:
            continue
        best = min((run(command, frame, work / command, extra) for _ in range(max(1, args.repeat))),
                   key=lambda r: r["wall_s"])
        rows.append(best)
        print(f"{command}: {best['wall_s']:.2f} s " + ", ".join(f"{k} {v:.2f}" for k, v in best["stages"].items()),
              flush=True)
    result = {"size": args.size, "precision": args.precision, "cpus": os.cpu_count(), "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"breakdown_{args.size}" + ("" if args.precision == "float32" else f"_{args.precision}")
    (out / f"{tag}.json").write_text(json.dumps(result, indent=2))
    used = [s for s in STAGES if any(s in r["stages"] for r in rows)]
    lines = [f"# Where the time goes: {args.size}x{args.size} simulated frame, {os.cpu_count()} CPU cores, "
             f"network {args.precision}", "",
             f"`.venv/bin/python benchmarks/breakdown.py --size {args.size} --precision {args.precision} "
             f"--repeat {args.repeat}` (fastest of the runs). Seconds per stage (each counted once); start-up: "
             "process start, imports, model loading; MPix/s: end to end.", "",
             "| command | " + " | ".join(used) + " | start-up | wall | MPix/s | peak RSS [MB] |",
             "|---|" + "---|" * (len(used) + 4)]
    for r in rows:
        lines.append(f"| {r['command']} | " + " | ".join(f"{r['stages'].get(s, 0.0):.2f}" for s in used)
                     + f" | {r['startup_s']:.2f} | {r['wall_s']:.2f} | {args.size**2 / 1e6 / r['wall_s']:.3f} | "
                       f"{r['peak_rss_mb']:.0f} |")
    (out / f"{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
