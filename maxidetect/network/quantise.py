"""Integer convolutions for the network's deep part (``--precision int8``).

The network's deep part (:func:`maxidetect.network.architecture.core`, 1/4
resolution and below: ~60% of its arithmetic) runs as u8 x s8 convolutions
(AVX-512 VNNI where the CPU has it); the stem and the head, where the input's
dynamic range and the per-pixel class maps live, stay float32. Activations
are uint8 over [0, range] with the ranges measured once per model on real
and simulated frames (:func:`calibrate`) and shipped beside its weights as
``weights/NAME.int8.json``, tied to the weights' checksum; weights are int8
per output channel. ONNX Runtime fuses the QuantizeLinear/DequantizeLinear
pairs :mod:`maxidetect.network.onnx_engine` writes into integer kernels.

Agreement with float32 and speed: ``benchmarks/engine_profile.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["INT8_LAYERS", "calibrate", "calibration_path", "load_ranges", "write_ranges"]

#: The layers that run in int8: every convolution of the deep part.
INT8_LAYERS = ("conv3_1", "conv3_2", "conv4_1", "conv4_2", "conv5_1", "conv5_2", "convmid", "upconv5_2", "upconv5_1",
               "upconv4_2", "upconv4_1", "upconv3_2", "upconv3_1", "ucp3_conv3", "ucp4_conv4", "ucp4_conv3")

_CROP = 512  # calibration crops: the full graph holds every probed map at once


def calibrate(weights: dict, images, layers=INT8_LAYERS, threads: int | None = None) -> dict[str, tuple[float, float]]:
    """Activation ranges for ``layers``: the largest input and output value
    each reaches over ``images`` (normalised, as the network sees them; cut
    into 512 px crops on the 32 px grid).

    Returns ``{layer: (input range, output range)}`` for :func:`maxidetect.network.onnx_engine.build_graph`.
    """
    import onnxruntime as ort

    from maxidetect.network.onnx_engine import ALIGN, build_graph

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
    session = ort.InferenceSession(build_graph(weights, part="full", probe=True), opts,
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs() if o.name.startswith("probe.")]
    peak = dict.fromkeys(names, 0.0)
    n = 0
    for image in images:
        image = np.asarray(image, np.float32)
        for y0 in range(0, max(image.shape[0] - ALIGN + 1, 1), _CROP):
            for x0 in range(0, max(image.shape[1] - ALIGN + 1, 1), _CROP):
                crop = image[y0:y0 + _CROP, x0:x0 + _CROP]
                crop = crop[: crop.shape[0] // ALIGN * ALIGN, : crop.shape[1] // ALIGN * ALIGN]
                if crop.size == 0:
                    continue
                x = np.ascontiguousarray(np.arcsinh(crop)[None, None])
                for name, value in zip(names, session.run(names, {"x": x}), strict=True):
                    peak[name] = max(peak[name], float(value.max()))
                n += 1
    if not n:
        raise ValueError("no calibration image is 32 px or more on a side")
    return {layer: (peak[f"probe.{layer}.in"], peak[f"probe.{layer}.out"]) for layer in layers}


def calibration_path(model: str) -> Path:
    from maxidetect.network.weights import weights_dir

    return weights_dir() / f"{model}.int8.json"


def write_ranges(model: str, ranges: dict, record: dict, path: Path | None = None) -> Path:
    """Write ``ranges`` for ``model`` (tied to its weights' checksum) with
    ``record`` (what they were measured on), atomically."""
    from maxidetect.files import atomic_output
    from maxidetect.network.weights import get_model_info

    path = Path(path) if path is not None else calibration_path(model)
    body = {"model": model, "weights_sha256": get_model_info(model).sha256, "layers": list(ranges),
            "ranges": {k: [float(a), float(b)] for k, (a, b) in ranges.items()}, "record": record}
    with atomic_output(path) as tmp:
        Path(tmp).write_text(json.dumps(body, indent=1) + "\n")
    return path


def load_ranges(model: str | None = None) -> dict[str, tuple[float, float]]:
    """The shipped int8 ranges of ``model`` (None: the default model).

    Raises ValueError naming the model when it has none, or when they were
    measured on other weights than the model's (its checksum changed).
    """
    from maxidetect.network.weights import get_model_info

    info = get_model_info(model)
    path = calibration_path(info.name)
    if not path.exists():
        raise ValueError(f"model {info.name!r} has no int8 calibration ({path.name}): use --precision float32, or "
                         f"measure one with benchmarks/calibrate_int8.py --model {info.name}")
    body = json.loads(path.read_text())
    if body.get("weights_sha256") != info.sha256:
        raise ValueError(f"{path}: int8 ranges were measured on other weights than model {info.name!r}'s; "
                         f"re-measure them with benchmarks/calibrate_int8.py --model {info.name}")
    return {k: (float(a), float(b)) for k, (a, b) in body["ranges"].items()}
