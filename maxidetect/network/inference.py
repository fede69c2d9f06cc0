"""Tiled, batched inference of the network on images of any size.

The image is padded (reflection) to a multiple of 32 so the five 2x2
poolings see whole windows, and cut into large tiles whose origins sit on
multiples of 32, so every tile's pooling grid is the whole image's. Each
output pixel is taken from the tile in which it lies at least ``margin``
pixels from any cut edge; tiles are never extended past the image, so the
borders see the same zero padding as an untiled run. With a margin wide
enough for the network's effective reach, stitched == untiled (see
``tests/test_inference.py`` and ``benchmarks/margin.py``).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# 2**5 for the network's five 2x2 poolings (network.ALIGN); repeated here so
# that importing the tiling does not import Keras.
ALIGN = 32

__all__ = ["Predictor", "tile_grid", "resolve_engine", "bound_keras_threads", "ENGINES", "PRECISIONS",
           "DEFAULT_TILES", "DEFAULT_MARGIN"]

ENGINES = ("auto", "onnxruntime", "openvino", "keras")
#: Compute precisions; "mixed" is bfloat16 in the deep part and float32 at the ends (OpenVINO engine);
#: "int8" is integer convolutions in the deep part and float32 at the ends (ONNX Runtime).
PRECISIONS = ("float32", "mixed", "int8", "bfloat16", "float16")

# Tile areas (the square of these sides) that keep a worker well under
# 1.5 GB RSS (measured, 2 cores, CLI on a 2048 px frame: TensorFlow ~1.55 GB
# at 1024 px; ONNX Runtime 1.12-1.14 GB at 2048 px, as it holds only the
# 1/4-resolution maps of a whole tile, see onnxnet.OnnxForward). Bigger
# tiles waste less on overlap: a 2048 px frame is one tile (1x the pixels),
# 4 of 1184 px (1.34x) or 9 of 896 px (1.72x).
DEFAULT_TILES = {"onnxruntime": 2048, "openvino": 2048, "keras": 1024}
DEFAULT_MARGIN = 160  # measured: stitched == untiled (benchmarks/margin.py)


def _ceil_to(n: int, k: int) -> int:
    return int(math.ceil(n / k) * k)


def _axis_tile_size(n: int, count: int, margin: int) -> int:
    """Smallest aligned tile side that covers ``n`` in ``count`` tiles."""
    if count <= 1:
        return n
    return min(n, _ceil_to(math.ceil((n + 2 * margin * (count - 1)) / count), ALIGN))


def _axis_tiles(n: int, tile: int, margin: int) -> list[tuple[int, int, int]]:
    """Tiles of side ``tile`` along one padded axis of length ``n`` (multiples of ALIGN).

    Returns ``(origin, keep_start, keep_end)`` triples: the tile covers
    ``[origin, origin + tile)`` and supplies output ``[keep_start, keep_end)``.
    """
    if n <= tile:
        return [(0, 0, n)]
    step = tile - 2 * margin
    step -= step % ALIGN
    if step < ALIGN:
        raise ValueError(f"tile {tile} too small for margin {margin}")
    origins = list(range(0, n - tile, step)) + [n - tile]
    out = []
    for i, o in enumerate(origins):
        start = 0 if i == 0 else (origins[i - 1] + tile + o) // 2
        end = n if i == len(origins) - 1 else (o + tile + origins[i + 1]) // 2
        out.append((o, start, end))
    return out


def tile_grid(shape: tuple[int, int], tile: int, margin: int):
    """All tiles of a padded image: list of (y0, x0, ky0, ky1, kx0, kx1) and tile shape.

    Tiles hold at most ``tile**2`` pixels (memory goes with a tile's area,
    not its shape) and may be rectangular: of the tilings within that
    budget, the one that computes the fewest pixels (least overlap) wins,
    then the one with fewest tiles.
    """
    h, w = shape
    budget = int(tile) ** 2
    smallest = ALIGN + 2 * margin  # a tile that still keeps ALIGN px
    best = None
    for ny in range(1, h // ALIGN + 1):
        th = _axis_tile_size(h, ny, margin)
        for nx in range(1, w // ALIGN + 1):
            tw = _axis_tile_size(w, nx, margin)
            if th * tw <= budget or tw <= smallest:
                break
        ty, tx = _axis_tiles(h, th, margin), _axis_tiles(w, tw, margin)
        # Over budget only when no tiling fits (tiny budgets): then the smallest tiles.
        cost = (max(th * tw - budget, 0), len(ty) * th * len(tx) * tw, len(ty) * len(tx))
        if best is None or cost < best[0]:
            best = cost, ty, tx, (th, tw)
        if th <= smallest:
            break
    _, ty, tx, (th, tw) = best
    grid = [(y0, x0, a, b, c, d) for (y0, a, b) in ty for (x0, c, d) in tx]
    return grid, (th, tw)


def resolve_engine(engine: str = "auto", model=None, precision: str = "float32") -> str:
    """The engine that runs the network: ``"onnxruntime"``, ``"openvino"`` or ``"keras"``.

    ``"auto"`` picks ONNX Runtime for float32 and int8 (on CPU: no TensorFlow start-up,
    less memory), OpenVINO for ``"mixed"`` (and for ``"bfloat16"`` when it is
    installed), and Keras when a Keras model object is given, ``KERAS_BACKEND``
    is set (the user chose a Keras backend, e.g. JAX on a GPU), for
    ``"float16"``, or when ``onnxruntime`` is not installed.
    """

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    named = model is None or isinstance(model, str)
    if engine == "auto" and named and not os.environ.get("KERAS_BACKEND"):
        from maxidetect.network import openvino_engine

        if precision == "mixed" or (precision == "bfloat16" and openvino_engine.available()):
            engine = "openvino"
    if engine != "auto":
        if engine in ("onnxruntime", "openvino") and not named:
            raise ValueError(f"the {engine} engine takes a model name, not a Keras model")
        allowed = {"onnxruntime": ("float32", "int8"), "openvino": ("float32", "mixed", "bfloat16"),
                   "keras": ("float32", "bfloat16", "float16")}[engine]
        if precision not in allowed:
            raise ValueError(f"the {engine} engine runs precision {' or '.join(allowed)}, not {precision!r}")
        return engine
    from maxidetect.network.onnx_engine import available

    if precision == "int8":
        if not named:
            raise ValueError("precision 'int8' takes a model name, not a Keras model")
        if not available():
            raise ValueError("precision 'int8' needs onnxruntime (pip install onnxruntime)")
        return "onnxruntime"
    if (model is None or isinstance(model, str)) and precision == "float32" \
            and not os.environ.get("KERAS_BACKEND") and available():
        if os.path.exists(_NVIDIA_DEVICE):
            from maxidetect.errors import MaxidetectWarning

            # The ONNX engine is CPU-only: on a GPU node it would be ~100x
            # slower than the Keras engine on JAX (measured 150 MPix/s, H100).
            warnings.warn("an NVIDIA GPU is visible but the network runs on the CPU (ONNX Runtime); "
                          "set KERAS_BACKEND=jax to use the GPU", MaxidetectWarning, stacklevel=3)
        return "onnxruntime"
    return "keras"


_NVIDIA_DEVICE = "/dev/nvidiactl"


def bound_keras_threads(n: int | None) -> None:
    """Bound TensorFlow's thread pools to ``n`` (no-op on other backends, or
    once TensorFlow is running)."""
    if not n:
        return
    import keras

    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(min(n, 2))
    except RuntimeError:
        pass  # TensorFlow already running: its pool is fixed


def _make_forward(model):
    """A compiled forward pass for the active Keras backend:
    (N, H, W) float32 -> (N, n_classes, H, W) float32."""
    fwd = _make_nhwc_forward(model)
    return lambda x: np.moveaxis(fwd(x[..., None]), -1, 1)


def _make_nhwc_forward(model):
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        # XLA fuses the pooling switches and unpooling into few kernels:
        # measured 1.7x faster than the plain graph on 2 CPU cores.
        fn = tf.function(lambda x: model(x, training=False), jit_compile=True)
        return lambda x: fn(tf.convert_to_tensor(x)).numpy()
    if backend == "jax":
        import jax

        tv = [v.value for v in model.trainable_variables]
        ntv = [v.value for v in model.non_trainable_variables]

        @jax.jit
        def fn(tv, ntv, x):
            y, _ = model.stateless_call(tv, ntv, x, training=False)
            return y

        return lambda x: np.asarray(fn(tv, ntv, x))
    if backend == "torch":
        import torch

        def fwd(x):
            with torch.no_grad():
                return model(torch.as_tensor(x), training=False).cpu().float().numpy()

        return fwd
    return lambda x: keras.ops.convert_to_numpy(model(x, training=False))


def _make_jax_masks_forward(model, selected, factors, thresholds):
    """(N, H, W) float32 -> (N, n_selected, H, W) uint8 masks, made inside the compiled call:
    the selected classes prior-modified (``factors``, or None for none) and thresholded there,
    with :func:`~maxidetect.priors.modify_priors`' arithmetic. One byte per class and pixel
    leaves the device instead of four, already channels-first: on the host, the float32
    probabilities' transposes, copies and stitching cost as much as an H200's whole network
    stage (`benchmarks/results/gpu/`)."""
    import jax
    import jax.numpy as jnp

    sel = np.asarray(selected, dtype=np.int64)
    t = np.asarray(thresholds, np.float32).reshape(1, -1, 1, 1)
    f = None if factors is None else np.asarray(factors, np.float32).reshape(1, -1, 1, 1)
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]

    @jax.jit
    def fn(tv, ntv, x):
        y, _ = model.stateless_call(tv, ntv, x[..., None], training=False)
        p = jnp.moveaxis(y[..., sel].astype(jnp.float32), -1, 1)
        if f is not None:
            denom = (1 - p) * f + p
            # PN = 0 with f = 0 keeps its raw value, as modify_priors does.
            p = jnp.where(denom == 0, p, p / jnp.where(denom == 0, 1, denom))
        return (p > t).astype(jnp.uint8)

    return lambda x: np.asarray(fn(tv, ntv, x))


@dataclass
class TileResult:
    """Probabilities for one block of the output image."""

    y0: int
    y1: int
    x0: int
    x1: int
    probs: np.ndarray  # float32, (n_classes, y1 - y0, x1 - x0); rows contiguous


class Predictor:
    """Holds a loaded network and runs tiled inference on normalised images.

    Parameters
    ----------
    model : str, keras.Model or None
        Model name from the manifest (default: the manifest's first), or a
        built network.
    tile : int or None
        Tiles hold at most ``tile**2`` pixels (``tile`` rounded up to a
        multiple of 32; tiles may be rectangular, see :func:`tile_grid`);
        None: the engine's default (:data:`DEFAULT_TILES`).
    margin : int
        Context each kept pixel has from a cut edge (rounded up to a
        multiple of 16).
    batch_size : int
        Tiles per forward pass.
    precision : {"float32", "mixed", "bfloat16", "float16"}
        Compute precision; weights stay float32. ``"mixed"``: OpenVINO engine
        (:mod:`maxidetect.network.openvino_engine`); ``"int8"``: ONNX Runtime
        with the deep part in int8 (:mod:`maxidetect.network.quantise`);
        ``"float16"``: Keras.
    engine : {"auto", "onnxruntime", "openvino", "keras"}
        What runs the network; see :func:`resolve_engine`. In float32 all give
        the same masks (probabilities agree to ~1e-5).
    threads : int or None
        Compute threads; None: the engine's default (one per core).
    """

    def __init__(
        self,
        model=None,
        tile: int | None = None,
        margin: int = DEFAULT_MARGIN,
        batch_size: int = 1,
        precision: str = "float32",
        engine: str = "auto",
        threads: int | None = None,
    ):
        from maxidetect.network.weights import get_model_info, load_network, load_weight_arrays

        policy = {"float32": None, "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
        self.engine = resolve_engine(engine, model, precision)
        if self.engine == "onnxruntime":
            from maxidetect.network.onnx_engine import OnnxForward

            arrays, self.info = load_weight_arrays(model)
            self.model = None  # no Keras model: nothing of Keras is imported
            int8 = None
            if precision == "int8":
                from maxidetect.network.quantise import load_ranges

                int8 = load_ranges(self.info.name)
            self._forward = OnnxForward(arrays, threads=threads, int8=int8)
        elif self.engine == "openvino":
            from maxidetect.network.openvino_engine import OpenVinoForward

            arrays, self.info = load_weight_arrays(model)
            self.model = None
            self._forward = OpenVinoForward(arrays, threads=threads, precision=precision)
        else:
            bound_keras_threads(threads)
            if model is None or isinstance(model, str):
                self.model, self.info = load_network(model, dtype=policy[precision])
            else:
                self.model, self.info = model, get_model_info(None)
            self._forward = _make_forward(self.model)
        self.precision = getattr(self._forward, "effective_precision", precision)  # what really ran
        tile = DEFAULT_TILES[self.engine] if tile is None else tile
        self.tile = _ceil_to(max(int(tile), ALIGN), ALIGN)
        self.margin = _ceil_to(max(int(margin), 0), ALIGN // 2)
        if self.tile - 2 * self.margin < ALIGN:
            raise ValueError(f"tile {tile} leaves no room inside margin {margin}")
        self.batch_size = max(1, int(batch_size))
        self._masks_forwards = {}  # masks_forward's compiled calls, per selection/priors/thresholds

    @property
    def n_classes(self) -> int:
        return len(self.info.classes)

    @property
    def normalisation(self) -> dict:
        """:func:`~maxidetect.network.normalise.normalise` keywords for this model's inputs."""
        from maxidetect.network.normalise import normalise_settings

        return normalise_settings(self.info.normalisation)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Raw network call: (N, H, W) or (N, H, W, 1) -> (N, H, W, n_classes) float32.

        The onnxruntime engine needs H and W multiples of 32 (as tiles are).
        """
        return np.moveaxis(self._forward_nchw(batch), 1, -1).copy()

    def _forward_nchw(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim == 4:
            batch = batch[..., 0]
        return np.asarray(self._forward(batch), dtype=np.float32)

    def masks_forward(self, selected, factors, thresholds):
        """A forward pass that returns thresholded masks, uint8 ``(N, n_selected, H, W)``,
        made where the network runs (the Keras engine on JAX: a GPU), or None where this
        engine cannot (the caller thresholds the probabilities itself). ``factors``:
        :func:`~maxidetect.priors.prior_factors` of the selected classes, or None for no
        prior modification. Pass it to :meth:`iter_tiles` as ``forward``."""
        if self.engine != "keras" or self.model is None:
            return None
        import keras

        if keras.backend.backend() != "jax":
            return None
        key = (tuple(int(i) for i in selected), None if factors is None else tuple(map(float, factors)),
               tuple(map(float, thresholds)))
        if key not in self._masks_forwards:
            self._masks_forwards[key] = _make_jax_masks_forward(self.model, selected, factors, thresholds)
        return self._masks_forwards[key]

    def iter_tiles(self, image: np.ndarray, forward=None) -> Iterator[TileResult]:
        """Run the network over a normalised 2-D image, yielding stitched blocks.

        The blocks partition the image; memory is bounded by the tile size.
        A block's ``probs`` may be a view into the engine's output buffer
        (no copy): use or copy it before asking for the next block; writing
        into it is allowed. With the ONNX engine blocks are row strips of a
        tile's share of the image. ``forward``: a batch function used instead of
        the network's probabilities (:meth:`masks_forward`); the blocks are then
        its output's.
        """
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 2:
            raise ValueError(f"expected a 2-D image, got shape {image.shape}")
        h, w = image.shape
        ph, pw = _ceil_to(h, ALIGN), _ceil_to(w, ALIGN)
        if (ph, pw) != (h, w):
            mode = "reflect" if min(h, w) > 1 else "edge"
            image = np.pad(image, ((0, ph - h), (0, pw - w)), mode=mode)
        grid, (th, tw) = tile_grid((ph, pw), self.tile, self.margin)
        for i in range(0, len(grid), self.batch_size):
            chunk = grid[i : i + self.batch_size]
            batch = np.stack([image[y0 : y0 + th, x0 : x0 + tw] for y0, x0, *_ in chunk])
            blocks = [(0, batch.shape[1], forward(batch))] if forward is not None else self._row_blocks(batch)
            for r0, r1, out in blocks:
                for k, (y0, x0, ky0, ky1, kx0, kx1) in enumerate(chunk):
                    ya, yb = max(ky0, y0 + r0), min(ky1, y0 + r1, h)
                    xa, xb = kx0, min(kx1, w)
                    if ya >= yb or xa >= xb:
                        continue  # nothing of this tile's share (or only padding) in these rows
                    block = out[k, :, ya - y0 - r0 : yb - y0 - r0, xa - x0 : xb - x0]
                    if block.strides[-1] != block.itemsize:  # Keras's channels-last output
                        block = np.ascontiguousarray(block)
                    yield TileResult(ya, yb, xa, xb, block)
                out = block = None
            batch = None

    def _row_blocks(self, batch: np.ndarray):
        """(r0, r1, probs (N, n_classes, r1 - r0, W)) covering a batch of tiles:
        row strips from the ONNX engine (see :class:`~maxidetect.network.onnx_engine.OnnxForward`),
        else the whole batch at once."""
        if self.engine == "onnxruntime":
            yield from self._forward.iter_rows(batch)
        else:
            yield 0, batch.shape[1], self._forward_nchw(batch)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Probabilities for a normalised 2-D image: float32 (n_classes, H, W)."""
        image = np.asarray(image)
        out = np.empty((self.n_classes,) + image.shape, dtype=np.float32)
        for t in self.iter_tiles(image):
            out[:, t.y0 : t.y1, t.x0 : t.x1] = t.probs
        return out
