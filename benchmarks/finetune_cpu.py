"""CPU fine-tuning of the network's head on simulated patches, and its
evaluation against the pretrained weights on held-out simulated frames.

    .venv/bin/python benchmarks/finetune_cpu.py --steps 120

``--trainable head`` trains only the 14-channel output convolutions
(final_conv, ucp*_conv1); ``all`` the whole network. Not adopted as a model:
a record of what CPU fine-tuning reaches (the real run needs the GPU).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from maxidetect.classes import CLASSES
from maxidetect.network.inference import Predictor
from maxidetect.network.normalise import normalise
from maxidetect.network.weights import load_network
from maxidetect.training.train import TrainConfig, run_training
from maxidetect.validation.scoring import mask_quality
from maxidetect.validation.simulate import simulate_frame


def evaluate(model, seeds, size):
    pred = Predictor(model)
    quality = []
    for s in seeds:
        f = simulate_frame(s, size=size)
        p = pred.predict(normalise(f.image, **pred.normalisation))
        quality.append(mask_quality(p, np.full(len(CLASSES), 0.5), f.truth, range(len(CLASSES))))
    out = {}
    for c in CLASSES:
        qs = [q[c.abbr] for q in quality if c.abbr in q and q[c.abbr]["n_true"] > 0]
        if qs:
            out[c.abbr] = {k: float(np.nanmean([q[k] for q in qs])) for k in ("auc", "tpr", "fpr", "purity")}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--trainable", choices=["head", "all"], default="head")
    ap.add_argument("--out", help="results directory (default results/finetune_cpu_TRAINABLE)")
    args = ap.parse_args()
    out = Path(args.out or Path(__file__).resolve().parent / "results" / f"finetune_cpu_{args.trainable}")
    out.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(init="maximask", trainable=args.trainable, patch=192, frame_size=576, batch=2, steps=args.steps,
                      learning_rate=3e-4, l2=0.0, seed=7)
    t0 = time.perf_counter()
    rec = run_training(cfg, Path("/tmp") / "maxidetect_head.weights.h5", progress=False)
    train_s = time.perf_counter() - t0
    base, _ = load_network("maximask")
    tuned, _ = load_network("maximask")
    tuned.load_weights("/tmp/maxidetect_head.weights.h5")
    seeds, size = (500, 501), 1024
    q0, q1 = evaluate(base, seeds, size), evaluate(tuned, seeds, size)
    lines = [f"# CPU fine-tuning, {args.trainable} layers ({args.steps} steps, batch 2 of 192x192 patches, "
             f"{train_s:.0f} s)", "",
             f"Command: `.venv/bin/python benchmarks/finetune_cpu.py --steps {args.steps} "
             f"--trainable {args.trainable}`; loss "
             f"{rec['loss_first']:.4g} -> {rec['loss_last']:.4g}. Held-out simulated frames: seeds {seeds}, "
             f"{size}x{size}; raw probabilities, threshold 0.5.", "",
             "| class | AUC pretrained | AUC tuned | TPR pretrained | TPR tuned | FPR pretrained | FPR tuned |",
             "|---|---|---|---|---|---|---|"]
    for c, a in q0.items():
        b = q1[c]
        lines.append(f"| {c} | {a['auc']:.3f} | {b['auc']:.3f} | {a['tpr']:.3f} | {b['tpr']:.3f} | "
                     f"{a['fpr']:.2e} | {b['fpr']:.2e} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"train": {k: v for k, v in rec.items() if k != "losses"},
                                                  "losses": rec["losses"], "pretrained": q0, "tuned": q1}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
