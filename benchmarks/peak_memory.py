"""Peak memory of the command line, this tree against another revision, on the same frames.

Each command runs in a fresh interpreter on one frame; its peak resident memory is the process's
own high-water mark (VmHWM: rule 1's forked judges share its pages and are not counted twice).
Simulated frames are made once (``maxidetect simulate``); ``--frames`` adds files of your own.
``--against REV`` checks out that revision (``git worktree``) and reports whether each output
file is byte-identical to this tree's.

    .venv/bin/python benchmarks/peak_memory.py [--sizes 2048,4096] [--commands maps,detect] \
        [--against REV] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from revision import checked_out

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Run in a fresh interpreter: sys.argv = [tree, cli args...]; prints the peak last.
CHILD = r'''
import sys
tree = sys.argv[1]
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path.insert(0, tree)
from maxidetect.cli import main
try:
    rc = main(sys.argv[2:])
except SystemExit as exc:
    rc = exc.code
hwm = next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM"))
print(f"PEAK_KB {hwm} RC {rc}")
'''


def _run(tree: str, args: list[str]) -> tuple[float, float, int]:
    """(peak MB, wall s, exit code) of one command."""
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, tree, *args], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("PEAK_KB")), None)
    if line is None:
        raise RuntimeError(f"{' '.join(args)}: no peak reported\n{out.stderr[-2000:]}")
    _, kb, _, rc = line.split()
    return int(kb) / 1024.0, wall, int(rc) if rc.lstrip("-").isdigit() else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2048,4096", help="simulated frames' sides (seed 11)")
    ap.add_argument("--frames", nargs="*", default=[], help="FITS files of your own, as well")
    ap.add_argument("--commands", default="maps,detect")
    ap.add_argument("--against", default=None, help="a git revision to measure side by side")
    ap.add_argument("--work", default=None, help="keeps the frames and outputs (default: a temporary directory)")
    ap.add_argument("--out", default=None, help="markdown report (default: stdout only)")
    a = ap.parse_args(argv)
    tmp = None if a.work else tempfile.TemporaryDirectory(prefix="maxidetect-memory-")
    work = Path(a.work or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    frames = [Path(f).resolve() for f in a.frames]
    for size in (int(s) for s in a.sizes.split(",") if s):
        sim = work / f"sim{size}"
        path = sim / "sim11.fits"
        if not path.exists():
            subprocess.run([sys.executable, "-m", "maxidetect", "simulate", str(sim), "--seed", "11",
                            "--size", str(size), "-q"], check=True)
        frames.insert(0, path)
    trees = {"this tree": str(ROOT)}
    rows = []
    with ExitStack() as stack:
        if a.against:
            trees[a.against] = str(stack.enter_context(checked_out(a.against, work)))
        for cmd in a.commands.split(","):
            for i, f in enumerate(frames):
                res, outs = {}, {}
                for k, (tag, tree) in enumerate(trees.items()):
                    out = work / f"out_{cmd}_{i}_{k}"
                    if out.exists():
                        shutil.rmtree(out)
                    res[tag] = _run(tree, [cmd, str(f), "-o", str(out), "--overwrite", "-q"])
                    outs[tag] = out
                same = ""
                if a.against:
                    # the outputs, not the run records (.maxidetect/: times and paths)
                    a0, a1 = (sorted(p.name for p in o.iterdir() if p.is_file() and not p.name.startswith("."))
                              for o in outs.values())
                    o0, o1 = outs.values()
                    same = "yes" if a0 == a1 and all(filecmp.cmp(o0 / n, o1 / n, shallow=False) for n in a0) \
                        else "NO"
                rows.append((cmd, f"{f.parent.name}/{f.name}", res, same))
                print(cmd, f.name, {t: f"{r[0]:.0f} MB {r[1]:.1f} s rc {r[2]}" for t, r in res.items()}, same,
                      flush=True)
    cmdline = "python benchmarks/peak_memory.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = ["# Peak memory of the command line", "",
             f"`{cmdline.strip()}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs); VmHWM of each command's "
             "process, MB; wall seconds as a guide only (one run each).", ""]
    tags = list(trees)
    lines += ["| command | frame | " + " | ".join(f"{t} MB | {t} s" for t in tags)
              + (" | outputs identical |" if a.against else " |"),
              "|---|---|" + "---|---|" * len(tags) + ("---|" if a.against else "")]
    for cmd, name, res, same in rows:
        lines.append(f"| {cmd} | {name} | " + " | ".join(f"{res[t][0]:.0f} | {res[t][1]:.1f}" for t in tags)
                     + (f" | {same} |" if a.against else " |"))
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
