"""Which statistic of the calibration activations makes the best int8 ranges.

``benchmarks/calibrate_int8.py`` ships the largest value each int8 layer's
input and output reach (``max``). Clipping at a high percentile instead gives
finer steps to the common values and saturates the rare ones; this measures
which wins, on the same calibration frames, by the masks' agreement with
float32 (priors and thresholds as ``maxidetect mask``) on frames left out of
the calibration, and by recall of the simulated truth.

    .venv/bin/python benchmarks/int8_statistic.py [--out benchmarks/results/int8_statistic.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from calibrate_int8 import frames as calibration_frames  # noqa: E402
from engine_profile import REAL, _masks, _on_grid  # noqa: E402

from maxidetect.classes import CLASS_NAMES, ClassConfig  # noqa: E402
from maxidetect.files import atomic_output  # noqa: E402
from maxidetect.network.normalise import normalise  # noqa: E402
from maxidetect.network.onnx_engine import ALIGN, OnnxForward, build_graph  # noqa: E402
from maxidetect.network.quantise import INT8_LAYERS  # noqa: E402
from maxidetect.network.weights import get_model_info, load_weight_arrays  # noqa: E402
from maxidetect.priors import prior_factors  # noqa: E402
from maxidetect.validation.simulate import BIT, simulate_frame  # noqa: E402

STATISTICS = ("max", 99.9999, 99.999, 99.99)
HELD_REAL = ("fitswcs_zpn_ukirt_wfcam.fits", "ccdproc_a8280271_saao_raw.fits", "fitswcs_tpv_ctio_mosaic2.fits")
_SAMPLE = 200_000  # values drawn per probe and crop for the percentiles


def ranges_by_statistic(weights) -> dict:
    """{statistic: {layer: (input range, output range)}} over the calibration frames (512 px crops)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(build_graph(weights, part="full", probe=True), opts,
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs() if o.name.startswith("probe.")]
    rng = np.random.default_rng(0)
    samples = {n: [] for n in names}
    peak = dict.fromkeys(names, 0.0)
    for _, image in calibration_frames():
        image = normalise(image.astype(np.float32))
        for y0 in range(0, max(image.shape[0] - ALIGN + 1, 1), 512):
            for x0 in range(0, max(image.shape[1] - ALIGN + 1, 1), 512):
                crop = image[y0:y0 + 512, x0:x0 + 512]
                crop = crop[: crop.shape[0] // ALIGN * ALIGN, : crop.shape[1] // ALIGN * ALIGN]
                if crop.size == 0:
                    continue
                for n, v in zip(names, session.run(names, {"x": np.ascontiguousarray(np.arcsinh(crop)[None, None])}),
                                strict=True):
                    peak[n] = max(peak[n], float(v.max()))
                    samples[n].append(v.ravel()[rng.integers(0, v.size, _SAMPLE)])
    out = {}
    for stat in STATISTICS:
        def value(n, stat=stat):
            return peak[n] if stat == "max" else float(np.percentile(np.concatenate(samples[n]), stat))
        out[str(stat)] = {layer: (value(f"probe.{layer}.in"), value(f"probe.{layer}.out")) for layer in INT8_LAYERS}
    return out


def held_frames() -> dict:
    out = {}
    for seed, size in ((200, 1024), (201, 1024), (100, 2048)):
        s = simulate_frame(seed=seed, size=size)
        out[f"sim{seed} ({size}^2)"] = (s.image, s.truth)
    for name in HELD_REAL:
        with fits.open(REAL / name) as hdul:
            hdu = next(h for h in hdul if h.data is not None and h.data.ndim == 2)
            out[f"{name}[{hdul.index_of(hdu)}]"] = (_on_grid(np.asarray(hdu.data, np.float32)), None)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "results" / "int8_statistic.md"))
    args = ap.parse_args(argv)
    weights, _ = load_weight_arrays("maximask")
    ranges = ranges_by_statistic(weights)
    config = ClassConfig.default()
    factors = prior_factors(config.priors, np.asarray(get_model_info(None).training_priors, np.float64))
    ref = OnnxForward(weights)
    fwds = {k: OnnxForward(weights, int8=r) for k, r in ranges.items()}
    rows, recall_rows = [], []
    for name, (image, truth) in held_frames().items():
        x = normalise(image.astype(np.float32))[None]
        m0 = _masks(ref(x)[0], config, factors)
        cells, worst = [], []
        for k, fwd in fwds.items():
            m = _masks(fwd(x)[0], config, factors)
            per = [float(np.mean(m[i] != m0[i])) for i in range(len(CLASS_NAMES))]
            cells.append(f"{np.mean(m != m0):.4%}")
            worst.append(f"{CLASS_NAMES[int(np.argmax(per))]} {max(per):.3%}")
            if truth is not None:
                diffs = []
                for i, c in enumerate(CLASS_NAMES):
                    t = (truth & BIT[c]) != 0 if c in BIT else None
                    if t is not None and t.sum() >= 50:
                        diffs.append((abs(float(m[i][t].mean()) - float(m0[i][t].mean())), c))
                d, c = max(diffs)
                recall_rows.append(f"| {name} | {k} | {c} {d:.3f} |")
        rows.append(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(worst) + " |")
        print(name, cells, flush=True)
    heads = " | ".join(ranges)
    lines = ["# int8 ranges: the largest calibration value vs high percentiles", "",
             "`.venv/bin/python benchmarks/int8_statistic.py` (calibration frames of `benchmarks/calibrate_int8.py`; "
             "the frames below are not among them). Masks with MaxiMask's priors and thresholds, fraction of "
             "pixels x classes differing from float32 ONNX Runtime, and the class that differs most.", "",
             f"| frame | {heads} | worst class: {heads} |", "|---|" + "---|" * (2 * len(ranges)), *rows, "",
             "Largest change of a class's pixel recall of the simulated truth against float32 (classes with >= 50 "
             "true pixels):", "", "| frame | statistic | class, change |", "|---|---|---|", *recall_rows, ""]
    with atomic_output(Path(args.out)) as tmp:
        Path(tmp).write_text("\n".join(lines))
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
