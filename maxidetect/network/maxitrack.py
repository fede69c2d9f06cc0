"""Whole-frame quality: the MaxiTrack tracking-error classifier.

Architecture read from the SavedModel in ``maximask`` 1.4.1
(``maximask_and_maxitrack/maxitrack/model``): input ``asinh(x)`` of a
normalised 400x400 tile; five times a 9x9 "same" convolution with bias, a
PReLU with one slope per position and channel, and a 2x2/2 "valid"
max-pool (400 -> 200 -> 100 -> 50 -> 25 -> 12); flatten (12*12*128 =
18432); dense 64 + PReLU, dense 64 + PReLU (dropout only in training),
dense 2 + softmax. Output 1 is the probability of a tracking error; the
network was trained on balanced classes, so its training prior is 0.5.

Frame score: the HDU is normalised as for MaxiMask, cut into
non-overlapping 400x400 tiles (the grid centred; a side under 400 px is
padded with background, i.e. zeros after normalisation), at most
``max_tiles`` of them evenly spread are scored, each tile probability is
moved to the expected fraction of bad frames (prior modification), and the
tile mean is the HDU's probability. A frame's probability is the mean over
its image HDUs; above the threshold the verdict is ``trailed``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maxidetect.errors import MaxidetectWarning
from maxidetect.files import atomic_output
from maxidetect.network import onnx_proto

__all__ = ["build_tracker_graph", "TrackerNet", "TrackResult", "Tracker", "TILE", "DEFAULT_PRIOR",
           "DEFAULT_THRESHOLD", "write_table"]

TILE = 400
DEFAULT_PRIOR = 0.05  # MaxiMask's default expected fraction of frames with tracking errors
TRAINING_PRIOR = 0.5
DEFAULT_THRESHOLD = 0.5
_CONVS = (("conv1", 16), ("conv2", 32), ("conv3", 64), ("conv4", 128), ("conv5", 128))
_DENSES = (("dense1", 64), ("dense2", 64))


def build_tracker_graph(arrays: dict) -> bytes:
    """The MaxiTrack network as a serialised ONNX model: (N, 1, 400, 400)
    normalised tiles -> (N, 2) softmax probabilities (NCHW; Keras's NHWC
    flatten order is restored before the first dense layer)."""
    inits, nodes = [], []

    def init(name, arr):
        inits.append(onnx_proto.Tensor(name, np.ascontiguousarray(arr, np.float32)))
        return name

    def node(op, inputs, outputs, **attrs):
        nodes.append(onnx_proto.Node(op, inputs, outputs, attrs))

    x = "asinh"
    node("Asinh", ["x"], [x])
    for name, _ in _CONVS:
        kernel, bias = arrays[name]
        (slope,) = arrays[f"{name}_prelu"]
        k = init(f"{name}_w", np.transpose(kernel, (3, 2, 0, 1)))
        b = init(f"{name}_b", bias)
        node("Conv", [x, k, b], [f"{name}_c"], pads=[4, 4, 4, 4])
        s = init(f"{name}_s", np.transpose(slope, (2, 0, 1)))
        node("PRelu", [f"{name}_c", s], [f"{name}_a"])
        node("MaxPool", [f"{name}_a"], [f"{name}_p"], kernel_shape=[2, 2], strides=[2, 2])
        x = f"{name}_p"
    node("Transpose", [x], ["nhwc"], perm=[0, 2, 3, 1])
    node("Flatten", ["nhwc"], ["flat"], axis=1)
    x = "flat"
    for name in [n for n, _ in _DENSES] + ["dense3"]:
        kernel, bias = arrays[name]
        node("Gemm", [x, init(f"{name}_w", kernel), init(f"{name}_b", bias)], [f"{name}_d"])
        x = f"{name}_d"
        if f"{name}_prelu" in arrays:
            (slope,) = arrays[f"{name}_prelu"]
            node("PRelu", [x, init(f"{name}_s", slope)], [f"{name}_a"])
            x = f"{name}_a"
    node("Softmax", [x], ["y"], axis=1)
    return onnx_proto.make_model(
        nodes, "maxitrack", [onnx_proto.ValueInfo("x", onnx_proto.FLOAT, ["N", 1, TILE, TILE])],
        [onnx_proto.ValueInfo("y", onnx_proto.FLOAT, ["N", 2])], inits, opset=17, ir_version=8)


class TrackerNet:
    """MaxiTrack on ONNX Runtime: ``net(tiles)`` with tiles (N, 400, 400[, 1])
    -> (N, 2) probabilities (ok, tracking error)."""

    def __init__(self, arrays: dict | None = None, threads: int | None = None):
        import onnxruntime as ort

        from maxidetect.network.weights import load_tracker_arrays

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = int(threads)
        graph = build_tracker_graph(arrays if arrays is not None else load_tracker_arrays())
        self._session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])

    def __call__(self, tiles) -> np.ndarray:
        x = np.asarray(tiles, np.float32)
        if x.ndim == 4:
            x = x[..., 0]
        return self._session.run(["y"], {"x": np.ascontiguousarray(x[:, None])})[0]


def tile_origins(n: int, max_tiles: int | None = None) -> list[int]:
    """Origins of non-overlapping TILE-wide tiles along a side of ``n`` pixels,
    centred (the remainder split between both ends); ``[0]`` under TILE."""
    k = max(n // TILE, 1)
    start = max((n - k * TILE) // 2, 0)
    return [start + i * TILE for i in range(k)]


@dataclass
class TrackResult:
    """One row of the table: an HDU, or the whole frame (``hdu == "all"``)."""

    path: str
    hdu: str
    probability: float
    verdict: str
    n_tiles: int

    def as_row(self) -> tuple:
        return (self.path, self.hdu, self.probability, self.verdict, self.n_tiles)


class Tracker:
    """Frame-level tracking-error scores.

    Parameters
    ----------
    prior : float
        Expected fraction of frames with tracking errors (MaxiMask: 0.05);
        None keeps the network's balanced training prior.
    threshold : float
        Probability above which a frame is called ``trailed``.
    max_tiles : int or None
        At most this many 400x400 tiles per HDU (evenly spread); None: all.
    batch_size : int
        Tiles per forward pass.
    """

    def __init__(self, prior: float | None = DEFAULT_PRIOR, threshold: float = DEFAULT_THRESHOLD,
                 max_tiles: int | None = 16, batch_size: int = 8, model=None, threads: int | None = None):
        if prior is not None and not 0.0 < prior < 1.0:
            raise ValueError(f"prior must lie strictly between 0 and 1, got {prior}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
        self.prior, self.threshold = prior, threshold
        self.max_tiles, self.batch_size = max_tiles, max(1, int(batch_size))
        self.model = model if model is not None else TrackerNet(threads=threads)

    def verdict(self, p: float) -> str:
        return "trailed" if p > self.threshold else "ok"

    def tiles(self, image: np.ndarray) -> np.ndarray:
        """Normalised tiles of a 2-D image: float32 (n, 400, 400, 1)."""
        from maxidetect.network.normalise import normalise

        norm = normalise(image)
        h, w = norm.shape
        if h < TILE or w < TILE:
            # The network was trained on whole 400 px tiles: on a padded cut-out
            # its score swings from 0 to 1 with the cut (measured on a real frame).
            warnings.warn(f"image {h}x{w} is smaller than MaxiTrack's {TILE}x{TILE} tile (padded): "
                          "its score is not reliable", MaxidetectWarning, stacklevel=2)
            pad = np.zeros((max(h, TILE), max(w, TILE)), np.float32)
            y0, x0 = (pad.shape[0] - h) // 2, (pad.shape[1] - w) // 2
            pad[y0:y0 + h, x0:x0 + w] = norm
            norm, (h, w) = pad, pad.shape
        coords = [(y, x) for y in tile_origins(h) for x in tile_origins(w)]
        if self.max_tiles and len(coords) > self.max_tiles:
            pick = np.unique(np.linspace(0, len(coords) - 1, self.max_tiles).round().astype(int))
            coords = [coords[i] for i in pick]
        return np.stack([norm[y:y + TILE, x:x + TILE] for y, x in coords])[..., None]

    def tile_probabilities(self, image: np.ndarray) -> np.ndarray:
        """Prior-modified tracking-error probability of each scored tile."""
        t = self.tiles(image)
        p = np.concatenate([np.asarray(self.model(t[i:i + self.batch_size]))[:, 1]
                            for i in range(0, len(t), self.batch_size)]).astype(np.float64)
        if self.prior is not None:
            from maxidetect.priors import modify_priors, prior_factors

            f = prior_factors([self.prior], [TRAINING_PRIOR])
            p = modify_priors(p[None], f, axis=0)[0]
        return p

    def score_image(self, image: np.ndarray) -> tuple[float, int]:
        """(probability, tiles scored) for a 2-D image (3-D: the mean over planes)."""
        data = np.asarray(image)
        if data.ndim == 3:
            ps = [self.tile_probabilities(plane) for plane in data]
            return float(np.mean([p.mean() for p in ps])), int(sum(len(p) for p in ps))
        if data.ndim != 2:
            raise ValueError(f"expected a 2-D or 3-D image, got shape {data.shape}")
        p = self.tile_probabilities(data)
        return float(p.mean()), len(p)

    def score_file(self, spec) -> list[TrackResult]:
        """One row per image HDU, then the frame row (``hdu="all"``)."""
        from maxidetect.errors import InputError
        from maxidetect.files import InputSpec, is_image_hdu, open_fits, parse_input, select_hdus

        spec = spec if isinstance(spec, InputSpec) else parse_input(str(spec))
        hdul = open_fits(spec.path)
        rows = []
        with hdul:
            for index, hdu in select_hdus(hdul, spec):
                if not is_image_hdu(hdu):
                    continue
                try:
                    data = hdu.data
                except Exception as exc:
                    raise InputError(f"{spec.path}[{index}]: cannot read image data ({exc})") from None
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", MaxidetectWarning)
                    p, n = self.score_image(data)
                for w in caught:
                    warnings.warn(f"{spec.path}[{index}]: {w.message}", MaxidetectWarning, stacklevel=2)
                rows.append(TrackResult(str(spec.path), str(index), p, self.verdict(p), n))
        if not rows:
            raise InputError(f"{spec.path}: no 2-D or 3-D image HDU to score")
        frame = float(np.mean([r.probability for r in rows]))
        rows.append(TrackResult(str(spec.path), "all", frame, self.verdict(frame), sum(r.n_tiles for r in rows)))
        return rows

    def header_cards(self, p: float) -> list[tuple]:
        return [("MDTRKP", round(float(p), 6), "MaxiTrack tracking-error probability (frame)"),
                ("MDTRKV", self.verdict(p), "MaxiTrack verdict"),
                ("MDTRKPR", -1.0 if self.prior is None else self.prior, "MaxiTrack prior (-1: none)"),
                ("MDTRKTH", self.threshold, "MaxiTrack threshold")]


def write_table(rows: list[TrackResult], path) -> Path:
    """The rows as CSV (``.csv``) or a FITS table (anything else), atomically."""
    from astropy.table import Table

    path = Path(path)
    t = Table(rows=[r.as_row() for r in rows] or None, names=("path", "hdu", "probability", "verdict", "n_tiles"),
              dtype=(str, str, float, str, int))
    fmt = "ascii.csv" if path.suffix.lower() == ".csv" else "fits"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        t.write(tmp, format=fmt, overwrite=True)
    return path
