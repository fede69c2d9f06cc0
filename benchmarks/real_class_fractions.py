"""Raw network probabilities (no priors) on the real frames of ../shared/data/real:
the fraction of each frame's pixels a model calls bright background, trail,
cosmic ray or nebula (p > 0.5). Frames without truth: false positives of the
diffuse and trail classes show here, not on simulated frames.

    .venv/bin/python benchmarks/real_class_fractions.py [MODEL ...]

MODEL: a manifest name, or a trained ``.npz`` / ``.weights.h5`` file (run by Keras).
"""

import glob
import sys

import numpy as np
from astropy.io import fits

from maxidetect.classes import CLASSES
from maxidetect.masks.maker import MaskMaker
from maxidetect.network.inference import Predictor


def maker_for(spec: str) -> MaskMaker:
    if spec.endswith((".npz", ".weights.h5")):
        from maxidetect.cli import _load_for_eval  # the same loading as `maxidetect evaluate FILE`

        return MaskMaker(predictor=Predictor(_load_for_eval(spec)[1]), apply_priors=False)
    return MaskMaker(model=spec, apply_priors=False)


names = [c.abbr for c in CLASSES]
models = sys.argv[1:] or ["maximask", "maxidetect-distill"]
frames = []
for f in sorted(glob.glob("../shared/data/real/*.fits")):
    with fits.open(f) as h:
        for i, x in enumerate(h):
            if x.data is not None and x.data.ndim == 2:
                frames.append((f.split("/")[-1], i, x.data.astype(np.float32)))
print("| model | frame | HDU | BBG p>0.5 | TRL p>0.5 | CR p>0.5 | NEB p>0.5 |")
print("|---|---|---|---|---|---|---|")
for model in models:
    mk = maker_for(model)
    sel = [int(k) for k in mk.selected]
    for name, i, d in frames:
        p = mk.probabilities(d)
        frac = {names[k]: float((p[j] > 0.5).mean()) for j, k in enumerate(sel)}
        print(f"| {model.split('/')[-1]} | {name} | {i} | {frac.get('BBG', 0):.2%} | {frac.get('TRL', 0):.2%} | "
              f"{frac.get('CR', 0):.3%} | {frac.get('NEB', 0):.2%} |", flush=True)
