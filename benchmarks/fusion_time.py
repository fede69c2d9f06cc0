"""Where the maps' evidence fusion spends its time, and how two versions compare.

The network's masks of each simulated frame are made once (cached in the
work directory); then :func:`maxidetect.maps.fusion.fuse` runs on them in a
fresh process per version and round, alternating the versions (the machine's
speed drifts), with its stages timed. ``--against REV`` checks out that
revision (``git worktree``) and reports whether its maps are bit-identical to
this tree's.

    .venv/bin/python benchmarks/fusion_time.py [--size 2048] [--against REV] [--rounds 2] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from revision import checked_out

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: What fuse calls, by module, timed on their own (each once: none calls another).
STAGES = ("measure_background", "measure_frame", "line_ridges", "find_trails", "find_column_defects",
          "protect_sources", "on_spikes", "network_spikes", "collinear_pieces", "line_components",
          "_lacosmic_false_alarms")

# Run in a fresh interpreter: sys.argv = [tree, frames.npz..., out.json]
CHILD = r'''
import functools, inspect, json, os, sys, time, warnings
tree, frames, out = sys.argv[1], sys.argv[2:-1], sys.argv[-1]
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path.insert(0, tree)
warnings.simplefilter("ignore")
import numpy as np
from astropy.io import fits
import maxidetect.maps.fusion as F
from maxidetect.maps.policy import MapPolicy
spent = {}
def cpu_now():  # this process's CPU and its finished children's (rule 1's forked judges)
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system
for name in STAGES:
    if hasattr(F, name):
        def timed(*a, _f=getattr(F, name), _n=name, **k):
            t = time.perf_counter()
            try:
                return _f(*a, **k)
            finally:
                spent[_n] = spent.get(_n, 0.0) + time.perf_counter() - t
        setattr(F, name, timed)
res = []
for path in frames:
    d = np.load(path)
    spent.clear()
    t, c = time.perf_counter(), cpu_now()
    # A tree from before the cosmic-ray tracks (--against) takes no probability.
    kw = {"cr_probability": d["cr"]} if "cr_probability" in inspect.signature(F.fuse).parameters else {}
    zero, flags, _ = F.fuse(d["image"], d["flags"].copy(), MapPolicy(), fits.Header.fromstring(str(d["header"])),
                            missing=False, **kw)
    wall, cpu = time.perf_counter() - t, cpu_now() - c
    np.savez_compressed(path.replace(".npz", "") + "." + out.split("/")[-1] + ".maps.npz", zero=zero, flags=flags)
    res.append({"frame": path, "wall_s": wall, "cpu_s": cpu, "stages": dict(spent)})
json.dump(res, open(out, "w"))
'''


def _cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "?"
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "?")


def make_frames(size: int, variants, seed: int, work: Path) -> list[Path]:
    from astropy.io import fits

    from maxidetect.maps.policy import MapPolicy
    from maxidetect.maps.writer import _Accumulator
    from maxidetect.masks.maker import MaskMaker
    from maxidetect.validation.bench import variant_config
    from maxidetect.validation.simulate import SimConfig, simulate_frame

    maker, paths = MaskMaker(for_maps=True), []  # the maps' classes and thresholds
    thresholds = maker.config.thresholds[list(maker.selected)][:, None, None]
    for v in variants:
        path = work / f"{v}_{seed}_{size}_cr.npz"  # _cr: with the CR probability (older caches lack it)
        if not path.exists():
            frame = simulate_frame(seed, variant_config(SimConfig(), v), size=size)
            acc = _Accumulator(frame.image.shape, maker, MapPolicy(), image=frame.image)
            probs = maker.probabilities(frame.image.copy())
            acc.add(slice(None), slice(None), probs > thresholds, probs)
            np.savez_compressed(path, image=frame.image, flags=acc.flag, cr=acc.cr_prob,
                                header=fits.Header(frame.header).tostring())
        paths.append(path)
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--variants", default="default,undersampled,crowded")
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--against", default=None, help="a git revision to time side by side")
    ap.add_argument("--rounds", type=int, default=5, help="alternated rounds (this machine's speed drifts by 20%%)")
    ap.add_argument("--work", default=None, help="keeps the frames and masks (default: a temporary directory)")
    ap.add_argument("--out", default=None, help="markdown report (default: stdout only)")
    a = ap.parse_args(argv)
    tmp = None if a.work else tempfile.TemporaryDirectory(prefix="maxidetect-fusion-")
    work = Path(a.work or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    frames = make_frames(a.size, a.variants.split(","), a.seed, work)
    trees = {"this tree": str(ROOT)}
    child = f"STAGES = {STAGES!r}\n" + CHILD
    with ExitStack() as stack:
        if a.against:
            trees[a.against] = str(stack.enter_context(checked_out(a.against, work)))
        runs = {t: [] for t in trees}
        for r in range(a.rounds):
            for k, (tag, tree) in enumerate(trees.items()):
                out = work / f"run{r}_{k}.json"
                subprocess.run([sys.executable, "-c", child, tree, *map(str, frames), str(out)], check=True)
                runs[tag].append(json.loads(out.read_text()))
        same = None
        if a.against:
            same = {}
            for f in frames:
                m0 = np.load(str(f).replace(".npz", "") + ".run0_0.json.maps.npz")
                m1 = np.load(str(f).replace(".npz", "") + ".run0_1.json.maps.npz")
                same[f.stem] = int((m0["zero"] != m1["zero"]).sum() + (m0["flags"] != m1["flags"]).sum())
    cmd = "python benchmarks/fusion_time.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [f"# Evidence fusion time: {len(frames)} simulated {a.size}^2 frames (seed {a.seed})", "",
             f"`{cmd.strip()}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, {_cpu_name()}); "
             f"the median of {a.rounds} alternated rounds per frame "
             "and version (stages: of the median round), each in a fresh process; the network's masks made "
             "once. Seconds (wall; CPU: both "
             "threads, L.A.Cosmic's included, and rule 1's forked processes).", ""]
    head = "| frame | version | fusion | CPU | " + " | ".join(STAGES) + " |"
    lines += [head, "|---|---|---|---|" + "---|" * len(STAGES)]
    best = {}
    for tag, rs in runs.items():
        for i, f in enumerate(frames):
            mid = sorted((r[i] for r in rs), key=lambda x: x["wall_s"])[(len(rs) - 1) // 2]
            best[tag, f.stem] = tuple(float(np.median([r[i][k] for r in rs])) for k in ("wall_s", "cpu_s"))
            lines.append(f"| {f.stem} | {tag} | {best[tag, f.stem][0]:.2f} | {best[tag, f.stem][1]:.2f} | "
                         + " | ".join(f"{mid['stages'].get(s, 0.0):.2f}" for s in STAGES) + " |")
    if a.against:
        ratios = [[best[a.against, f.stem][k] / best["this tree", f.stem][k] for k in (0, 1)] for f in frames]
        lines += ["", f"Speed-up over {a.against} (wall, CPU): " + ", ".join(
            f"{f.stem} {r[0]:.2f}x, {r[1]:.2f}x" for f, r in zip(frames, ratios, strict=True))
                  + ". Maps differing pixels (zero weight + flags): "
                  + ", ".join(f"{k} {v}" for k, v in same.items()) + "."]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
