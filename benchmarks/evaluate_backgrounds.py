"""Held-out evaluation of models under other normalisation background maps
than their manifest's: ``NAME@BACKGROUND`` (maximask, centred, sep) runs the
model ``NAME`` on those maps; everything else as ``maxidetect evaluate``.

    .venv/bin/python benchmarks/evaluate_backgrounds.py SIZE FRAMES MODEL[@BG],... OUT_DIR

The real checks (GMOS cosmic rays, the crowded UKIRT frame) run from 1024 px up.
"""

import sys
import warnings

import maxidetect.network.inference as inference
import maxidetect.validation.compare_models as compare


class _Predictor(inference.Predictor):
    def __init__(self, model=None, **kw):
        self._background = None
        if isinstance(model, str) and "@" in model:
            model, self._background = model.split("@")
        super().__init__(model, **kw)

    @property
    def normalisation(self) -> dict:
        n = dict(super().normalisation)
        if self._background:
            n["background"] = self._background
        return n


def main(argv) -> int:
    warnings.simplefilter("ignore")
    size, frames, models, out = int(argv[0]), int(argv[1]), argv[2].split(","), argv[3]
    inference.Predictor = _Predictor  # evaluate_models builds its predictors from the names
    big = size >= 1024
    reports = compare.evaluate_models(
        models, n_frames=frames, size=size, progress=False,
        cr_labels="benchmarks/labels/astroscrappy_gmos_crs.json" if big else None,
        crowded="../shared/data/real/fitswcs_zpn_ukirt_wfcam.fits" if big else None)
    compare.write_model_report(reports, out, meta={"command": "python benchmarks/evaluate_backgrounds.py "
                                                   + " ".join(argv), "n_frames": frames, "size": size,
                                                   "seed0": compare.HELD_OUT_SEED0})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
