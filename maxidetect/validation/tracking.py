"""MaxiTrack against simulated tracking errors: ROC/AUC of the frame score."""

from __future__ import annotations

import sys
import time

import numpy as np
from tqdm import tqdm

from maxidetect.network.maxitrack import Tracker
from maxidetect.validation.simulate import SimConfig, simulate_frame

__all__ = ["TRACKING_SIM", "tracking_benchmark"]


# Frames for the tracking benchmark: sky, stars, galaxies, spikes, cosmic
# rays, hot and dead pixels, i.e. what every frame has. Satellite trails,
# bad columns and diffuse light are left out on purpose: MaxiTrack scores
# them as tracking errors too (measured; see tracking_benchmark's
# "contaminated" row), which would blur what the smear alone does.
TRACKING_SIM = {"n_trails": 0, "n_hcl": 0, "n_dcl": 0, "n_fringe_regions": 0, "n_nebulae": 0, "n_bbg": 0,
                "n_persistence": 0, "overscan": 0}


def tracking_benchmark(n_frames: int = 6, size: int = 800, lengths=(4.0, 8.0, 15.0, 30.0), seed0: int = 500,
                       tracker: Tracker | None = None, progress: bool = False) -> dict:
    """ROC AUC of the frame score: clean simulated frames (:data:`TRACKING_SIM`)
    against the same frames smeared by each tracking-error length (random
    directions); also the false-positive rate on clean frames carrying every
    simulated contaminant (trails, bad columns, diffuse light)."""
    tracker = tracker or Tracker()
    scores = {0.0: []}
    seconds = []
    jobs = [(0.0, s) for s in range(n_frames)] + [(float(L), s) for L in lengths for s in range(n_frames)]
    jobs += [(-1.0, s) for s in range(n_frames)]
    for L, s in tqdm(jobs, unit="frame", disable=not progress, file=sys.stderr):
        cfg = SimConfig() if L < 0 else SimConfig(**TRACKING_SIM, tracking_length=L)
        frame = simulate_frame(seed0 + s, cfg, size=size)
        t0 = time.perf_counter()
        scores.setdefault(L, []).append(tracker.score_image(frame.image)[0])
        seconds.append(time.perf_counter() - t0)
    clean = np.asarray(scores[0.0])
    rows = []
    for L in lengths:
        bad = np.asarray(scores[float(L)])
        # AUC = P(smeared frame scores above a clean one), ties count half.
        auc = float(np.mean((bad[:, None] > clean[None, :]) + 0.5 * (bad[:, None] == clean[None, :])))
        rows.append({"length": float(L), "auc": auc, "tpr": float(np.mean(bad > tracker.threshold)),
                     "median_p": float(np.median(bad))})
    dirty = np.asarray(scores[-1.0])
    return {"n_frames": n_frames, "size": size, "prior": tracker.prior, "threshold": tracker.threshold,
            "fpr": float(np.mean(clean > tracker.threshold)), "clean_median_p": float(np.median(clean)),
            "contaminated_fpr": float(np.mean(dirty > tracker.threshold)),
            "contaminated_median_p": float(np.median(dirty)),
            "rows": rows, "seconds_per_frame": float(np.mean(seconds)),
            "scores": {str(k): v for k, v in scores.items()}}
