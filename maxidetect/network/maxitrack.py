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

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["build_tracker", "load_tracker", "TrackResult", "Tracker", "TILE", "DEFAULT_PRIOR",
           "DEFAULT_THRESHOLD", "write_table", "tracking_benchmark", "TRACKING_SIM"]

TILE = 400
DEFAULT_PRIOR = 0.05  # MaxiMask's default expected fraction of frames with tracking errors
TRAINING_PRIOR = 0.5
DEFAULT_THRESHOLD = 0.5
_CONVS = (("conv1", 16), ("conv2", 32), ("conv3", 64), ("conv4", 128), ("conv5", 128))
_DENSES = (("dense1", 64), ("dense2", 64))


def _keras():
    import keras
    from keras import layers, ops

    return keras, layers, ops


def build_tracker(dtype=None):
    """The MaxiTrack network (Keras 3, any backend), built for 400x400x1 input."""
    keras, layers, ops = _keras()

    class TrackNet(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.convs = [layers.Conv2D(n, 9, padding="same", name=name, dtype=dtype) for name, n in _CONVS]
            self.conv_prelu = [layers.PReLU(name=f"{name}_prelu", dtype=dtype) for name, _ in _CONVS]
            self.pool = layers.MaxPooling2D(2, 2, padding="valid")
            self.flat = layers.Flatten()
            self.denses = [layers.Dense(n, name=name, dtype=dtype) for name, n in _DENSES]
            self.dense_prelu = [layers.PReLU(name=f"{name}_prelu", dtype=dtype) for name, _ in _DENSES]
            self.out = layers.Dense(2, name="dense3", dtype=dtype)

        def call(self, x):
            x = ops.arcsinh(x)
            for conv, act in zip(self.convs, self.conv_prelu, strict=True):
                x = self.pool(act(conv(x)))
            x = self.flat(x)
            for dense, act in zip(self.denses, self.dense_prelu, strict=True):
                x = act(dense(x))
            return ops.softmax(ops.cast(self.out(x), "float32"), axis=-1)

    model = TrackNet(name="maxitrack")
    model(np.zeros((1, TILE, TILE, 1), np.float32))
    return model


def _tracker_info() -> dict:
    from maxidetect.network.weights import manifest_path

    data = json.loads(manifest_path().read_text())
    for t in data.get("trackers", []):
        if t["name"] == "maxitrack":
            return t
    raise RuntimeError(f"{manifest_path()}: no 'maxitrack' entry under 'trackers'")


def _convert(model) -> None:
    """Copy the SavedModel's variables: convs/denses by name, the PReLU
    slopes (saved as unnamed ``variables/N``) in layer order."""
    try:
        import tensorflow as tf
    except ImportError:
        raise RuntimeError("converting the MaxiTrack SavedModel needs TensorFlow once (pip install tensorflow)") \
            from None
    from maxidetect.network.weights import maximask_savedmodel_dir

    ckpt = maximask_savedmodel_dir().parent.parent / "maxitrack" / "model" / "variables" / "variables"
    reader = tf.train.load_checkpoint(str(ckpt))
    names = reader.get_variable_to_shape_map()
    for layer in list(model.convs) + list(model.denses) + [model.out]:
        layer.set_weights([reader.get_tensor(f"{layer.name}/kernel/.ATTRIBUTES/VARIABLE_VALUE"),
                           reader.get_tensor(f"{layer.name}/bias/.ATTRIBUTES/VARIABLE_VALUE")])
    slopes = sorted((int(k.split("/")[1]), k) for k in names if k.startswith("variables/"))
    prelus = list(model.conv_prelu) + list(model.dense_prelu)
    if len(slopes) != len(prelus):
        raise RuntimeError(f"MaxiTrack SavedModel: {len(slopes)} PReLU slopes, expected {len(prelus)}")
    for layer, (_, key) in zip(prelus, slopes, strict=True):
        layer.set_weights([reader.get_tensor(key)])


def load_tracker(dtype=None):
    """The MaxiTrack network with its verified pretrained weights.

    Converted from the installed ``maximask`` package on first use and
    cached beside the MaxiMask weights (see :func:`maxidetect.network.weights.cache_dir`).
    """
    from maxidetect.errors import WeightsError
    from maxidetect.network.weights import _atomic_save_weights, cache_dir, weights_checksum

    info = _tracker_info()
    model = build_tracker(dtype=dtype)
    cache = cache_dir() / "maxitrack.weights.h5"
    if cache.exists():
        model.load_weights(str(cache))
        if weights_checksum(model) == info["sha256"]:
            return model
        cache.unlink()  # stale or damaged: rebuilt below
    _convert(model)
    got = weights_checksum(model)
    if got != info["sha256"]:
        raise WeightsError(f"converted MaxiTrack weights have checksum {got}, manifest says {info['sha256']}")
    _atomic_save_weights(model, cache)
    return model


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
                 max_tiles: int | None = 16, batch_size: int = 8, model=None):
        if prior is not None and not 0.0 < prior < 1.0:
            raise ValueError(f"prior must lie strictly between 0 and 1, got {prior}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
        self.prior, self.threshold = prior, threshold
        self.max_tiles, self.batch_size = max_tiles, max(1, int(batch_size))
        self.model = model if model is not None else load_tracker()

    def verdict(self, p: float) -> str:
        return "trailed" if p > self.threshold else "ok"

    def tiles(self, image: np.ndarray) -> np.ndarray:
        """Normalised tiles of a 2-D image: float32 (n, 400, 400, 1)."""
        from maxidetect.network.normalise import normalise

        norm = normalise(image)
        h, w = norm.shape
        if h < TILE or w < TILE:
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
            from maxidetect.masks.priors import modify_priors, prior_factors

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
                p, n = self.score_image(data)
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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        t.write(tmp, format=fmt, overwrite=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


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
    import sys
    import time

    from tqdm import tqdm

    from maxidetect.validation.simulate import SimConfig, simulate_frame

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
