"""TRL AUC by how bright the trail is per pixel, on `maxidetect evaluate`'s held-out frames.

The simulator's TRL truth reaches down to 0.5 sigma of trail light per pixel
(``TRUTH_LEVEL``): a faint trail's wings and the faintest trails are in it,
below what any pixel shows. This scores each model's raw TRL probability
(no priors) with the trail pixels fainter than a cut left out (never counted
as negatives either), so the AUC that `evaluate` reports (cut 0.5) can be
read against what is visible.

    .venv/bin/python benchmarks/trail_visibility.py [MODEL ...] [--frames 4] [--out FILE.md]

MODEL: a manifest name, or a trained ``.npz`` / ``.weights.h5`` file (run by Keras:
``KERAS_BACKEND=tensorflow``).
"""

import argparse
import sys
import time

import numpy as np

import maxidetect.validation.simulate as sim
from maxidetect.classes import CLASSES
from maxidetect.network.inference import Predictor
from maxidetect.network.normalise import normalise
from maxidetect.validation.compare_models import HELD_OUT_SEED0, ScoreHistogram

CUTS = (0.5, 1.0, 1.5, 2.0, 3.0)  # trail light per pixel [sky-noise sigma]


def trail_frames(n: int, size: int):
    """(frame, trail S/N per pixel) of the held-out frames: the trail layer is
    read where the simulator marks its truth (the frame itself is unchanged)."""
    layer = {}
    mark = sim._Frame.mark

    def keep(self, abbr, signal, level):
        if abbr == "TRL":
            layer["snr"] = layer.get("snr", 0.0) + signal / self.noise
        return mark(self, abbr, signal, level)

    sim._Frame.mark = keep
    try:
        for i in range(n):
            layer.clear()
            frame = sim.simulate_frame(HELD_OUT_SEED0 + i, size=size)
            yield frame, np.broadcast_to(layer.get("snr", 0.0), frame.image.shape)
    finally:
        sim._Frame.mark = mark


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=["maxidetect-distill", "maximask"])
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--out", default=None, help="markdown report (default: stdout only)")
    a = ap.parse_args(argv)
    k = [c.abbr for c in CLASSES].index("TRL")
    bit = CLASSES[k].bit
    from maxidetect.cli import _load_for_eval  # the same loading as `maxidetect evaluate FILE`

    preds = {}
    for m in a.models:
        spec = _load_for_eval(m)
        preds[m] = Predictor(spec if isinstance(spec, str) else spec[1])
    hist = {m: {c: ScoreHistogram() for c in CUTS} for m in a.models}
    counts = dict.fromkeys(CUTS, 0)
    t0 = time.perf_counter()
    for frame, snr in trail_frames(a.frames, a.size):
        truth = (frame.truth & bit) != 0
        for c in CUTS:
            counts[c] += int((truth & (snr >= c)).sum())
        for m, pred in preds.items():
            p = pred.predict(normalise(frame.image, **pred.normalisation))[k]
            for c in CUTS:
                pos = truth & (snr >= c)
                hist[m][c].add(p, pos, valid=~truth | pos)
    cmd = "python benchmarks/trail_visibility.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [f"# TRL AUC by trail light per pixel: {a.frames} held-out {a.size}^2 frames (seeds from "
             f"{HELD_OUT_SEED0})", "", f"`{cmd.strip()}` ({time.perf_counter() - t0:.0f} s). Raw probabilities, "
             "no priors; trail pixels fainter than the cut left out. Cut 0.5 sigma is the simulator's truth "
             "(`maxidetect evaluate`'s AUC).", "",
             "| model | " + " | ".join(f">= {c:g} sigma" for c in CUTS) + " |",
             "|---|" + "---|" * len(CUTS),
             "| trail pixels | " + " | ".join(str(counts[c]) for c in CUTS) + " |"]
    lines += [f"| {m} | " + " | ".join(f"{hist[m][c].auc():.4f}" for c in CUTS) + " |" for m in a.models]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
