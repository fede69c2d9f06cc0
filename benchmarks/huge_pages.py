"""The command line with numpy's transparent-huge-page advice off (maxidetect's
default) and on, side by side.

numpy asks Linux for transparent huge pages on every array of 4 MB or more
(``NUMPY_MADVISE_HUGEPAGE``, read once at import). maxidetect sets it to 0
unless it is set: the maps' evidence fusion makes hundreds of short-lived
whole-frame temporaries, and on the machines measured here their 2 MB faults
cost more kernel time than they saved. Each command runs on one simulated
frame in a fresh process, the two settings alternated (the machine's speed
drifts); wall and kernel (system) seconds of the child.

    .venv/bin/python benchmarks/huge_pages.py [--size 2048] [--rounds 3] [--commands maps,mask] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _run(cmd: list[str], env: dict) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_stime - before.ru_stime


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--commands", default="maps,mask")
    ap.add_argument("--out", default=None, help="markdown report (default: stdout only)")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from fusion_time import _cpu_name

    with tempfile.TemporaryDirectory(prefix="maxidetect-hugepages-") as tmp:
        tmp = Path(tmp)
        exe = [sys.executable, "-m", "maxidetect"]
        subprocess.run([*exe, "simulate", str(tmp / "sim"), "--seed", str(a.seed), "--size", str(a.size), "-q"],
                       check=True)
        frame = str(tmp / "sim" / f"sim{a.seed}.fits")
        times: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for r in range(a.rounds):
            for command in a.commands.split(","):
                for setting in (("0", "1") if r % 2 == 0 else ("1", "0")):
                    out = tmp / f"{command}_{setting}_{r}"
                    env = dict(os.environ, NUMPY_MADVISE_HUGEPAGE=setting)
                    times.setdefault((command, setting), []).append(
                        _run([*exe, command, frame, "-o", str(out), "-q"], env))
    cmd = "python benchmarks/huge_pages.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [f"# numpy's huge-page advice off and on: one simulated {a.size}^2 frame (seed {a.seed})", "",
             f"`{cmd.strip()}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, {_cpu_name()}); "
             f"median of {a.rounds} alternated fresh processes per command and setting, and every round's wall time "
             "[s]. `NUMPY_MADVISE_HUGEPAGE=0` is maxidetect's default.", "",
             "| command | NUMPY_MADVISE_HUGEPAGE | wall | kernel | rounds (wall) |", "|---|---|---|---|---|"]
    wall = {}  # (command, setting) -> median wall [s]
    for command in a.commands.split(","):
        for setting in ("0", "1"):
            t = np.array(times[(command, setting)])
            wall[command, setting] = np.median(t[:, 0])
            lines.append(f"| {command} | {setting} | {wall[command, setting]:.2f} | {np.median(t[:, 1]):.2f} | "
                         + ", ".join(f"{w:.2f}" for w in t[:, 0]) + " |")
    lines.append("")
    lines.append("Off over on (wall): " + ", ".join(
        f"{c} {wall[c, '1'] / wall[c, '0']:.2f}x" for c in a.commands.split(",")) + ".")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
