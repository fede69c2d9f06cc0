"""The network on OpenVINO: float32, or bfloat16 where it keeps the masks.

The same parts as the ONNX Runtime engine
(:class:`~maxidetect.network.onnx_engine.PartsForward`: stem and head in row
strips, core on the whole tile), built with mask switches (OpenVINO has no
``MaxUnpool``) and compiled by OpenVINO's CPU plugin, whose convolutions use
AMX or AVX-512 BF16 when asked for bfloat16. The head runs as two graphs,
its half-resolution level and its full-resolution level, so that each can
have its own precision.

Precisions (``benchmarks/engine_profile.py`` measures speed and agreement):
``"float32"``
    every part in float32 (probabilities agree with ONNX Runtime to float32
    rounding, except rare pixels where a near-tie in a max-pool window flips).
``"mixed"``
    everything in bfloat16 except the full-resolution level (the last
    unpooling, the 14-channel convolutions, the final convolution and the
    sigmoid: ~1/4 of the arithmetic), which stays float32: bfloat16 there
    changed ~1% of the HCL mask, elsewhere ~0.01-0.04% of all mask pixels.
``"bfloat16"``
    every part in bfloat16: fastest, furthest from float32.

On a CPU without bfloat16 instructions OpenVINO computes float32 whatever is
asked; :attr:`OpenVinoForward.effective_precision` says what ran.
"""

from __future__ import annotations

import warnings

import numpy as np

from maxidetect.errors import MaxidetectWarning
from maxidetect.network.onnx_engine import OnnxForward, PartsForward, build_graph

__all__ = ["OpenVinoForward", "available", "PRECISIONS", "supports_bf16"]

#: Per part, the OpenVINO inference precision of each named precision.
PRECISIONS = {
    "float32": {"stem": "f32", "core": "f32", "head_half": "f32", "head_full": "f32"},
    "mixed": {"stem": "bf16", "core": "bf16", "head_half": "bf16", "head_full": "f32"},
    "bfloat16": {"stem": "bf16", "core": "bf16", "head_half": "bf16", "head_full": "bf16"},
}

_CORE = []


def available() -> bool:
    """True when ``openvino`` can be imported (the ``openvino`` extra)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def _core():
    if not _CORE:
        import openvino as ov

        _CORE.append(ov.Core())
    return _CORE[0]


def supports_bf16() -> bool:
    """True when OpenVINO's CPU plugin computes bfloat16 natively here (AVX-512 BF16 or AMX)."""
    return "BF16" in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoForward(PartsForward):
    """:class:`~maxidetect.network.onnx_engine.PartsForward` on OpenVINO.

    Parameters
    ----------
    weights, threads, strip_pixels
        As for :class:`~maxidetect.network.onnx_engine.PartsForward`.
    precision : {"float32", "mixed", "bfloat16"}
        See the module's documentation.
    """

    def __init__(self, weights: dict[str, tuple[np.ndarray, np.ndarray]], threads: int | None = None,
                 strip_pixels: int | None = None, precision: str = "float32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        if not available():
            raise ImportError("the openvino engine needs OpenVINO: pip install 'maxidetect[openvino]'")
        super().__init__(weights, threads, strip_pixels)
        self.precision = precision
        self.effective_precision = precision
        if precision != "float32" and not supports_bf16():

            warnings.warn(f"this CPU has no bfloat16 instructions: precision {precision!r} runs as float32",
                          MaxidetectWarning, stacklevel=2)
            self.effective_precision = "float32"
        self._compiled = {}
        self._fallback = None  # sizes off the 32 px grid (MaxUnpool graphs): ONNX Runtime
        for part in PRECISIONS["float32"]:  # fail early on a broken install
            self._compiled[part] = self._compile(part)

    def _compile(self, part: str):
        core = _core()
        model = core.read_model(build_graph(self.weights, part=part, switches="masks"))
        config = {
            # Explicit: on AMX CPUs OpenVINO's default for float32 models is bfloat16.
            "INFERENCE_PRECISION_HINT": PRECISIONS[self.effective_precision][part],
            "PERFORMANCE_HINT": "LATENCY",
        }
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        return core.compile_model(model, "CPU", config)

    def _request(self, part: str):
        requests = self._local.__dict__.setdefault("requests", {})
        if part not in requests:
            requests[part] = self._compiled[part].create_infer_request()
        return requests[part]

    def _run(self, part: str, feeds: dict, outputs: dict, shape=None) -> None:
        if part == "full":
            if self._fallback is None:
                self._fallback = OnnxForward(self.weights, self.threads, self.strip_pixels)
            self._fallback._run(part, feeds, outputs, shape)
            return
        if part == "head":  # in two: the half-resolution level, then the full-resolution one
            x = np.ascontiguousarray(feeds["x"])
            half = self._request("head_half")
            half.infer({name: np.ascontiguousarray(value) for name, value in feeds.items()})
            full = self._request("head_full")
            full.infer({"x": x, **{name: half.get_tensor(name).data for name, _ in self._half}})
            np.copyto(outputs["y"], full.get_tensor("y").data)
            return
        request = self._request(part)
        request.infer({name: np.ascontiguousarray(value) for name, value in feeds.items()})
        for name, buf in outputs.items():
            np.copyto(buf, request.get_tensor(name).data)
