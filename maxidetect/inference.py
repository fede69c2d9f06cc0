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
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# 2**5 for the network's five 2x2 poolings (network.ALIGN); repeated here so
# that importing the tiling does not import Keras.
ALIGN = 32

__all__ = ["Predictor", "tile_grid", "DEFAULT_TILE", "DEFAULT_MARGIN"]

DEFAULT_TILE = 1024
DEFAULT_MARGIN = 160  # measured: stitched == untiled (benchmarks/margin.py)


def _ceil_to(n: int, k: int) -> int:
    return int(math.ceil(n / k) * k)


def _axis_tile_size(n: int, tile: int, margin: int) -> int:
    """Smallest aligned tile side <= ``tile`` that covers ``n`` in as few tiles
    as ``tile`` would: less wasted overlap than always using ``tile``."""
    if n <= tile:
        return n
    count = math.ceil((n - 2 * margin) / (tile - 2 * margin))
    return min(tile, _ceil_to(math.ceil((n + 2 * margin * (count - 1)) / count), ALIGN))


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
    """All tiles of a padded image: list of (y0, x0, ky0, ky1, kx0, kx1) and tile shape."""
    h, w = shape
    th, tw = _axis_tile_size(h, tile, margin), _axis_tile_size(w, tile, margin)
    ty = _axis_tiles(h, th, margin)
    tx = _axis_tiles(w, tw, margin)
    grid = [(y0, x0, a, b, c, d) for (y0, a, b) in ty for (x0, c, d) in tx]
    return grid, (th, tw)


def _make_forward(model):
    """A compiled numpy -> numpy forward pass for the active Keras backend."""
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


@dataclass
class TileResult:
    """Probabilities for one block of the output image."""

    y0: int
    y1: int
    x0: int
    x1: int
    probs: np.ndarray  # float32, (n_classes, y1 - y0, x1 - x0)


class Predictor:
    """Holds a loaded network and runs tiled inference on normalised images.

    Parameters
    ----------
    model : str, keras.Model or None
        Model name from the manifest (default: the manifest's first), or a
        built network.
    tile : int
        Tile side in pixels (rounded up to a multiple of 32).
    margin : int
        Context each kept pixel has from a cut edge (rounded up to a
        multiple of 16).
    batch_size : int
        Tiles per forward pass.
    precision : {"float32", "bfloat16", "float16"}
        Compute precision; weights stay float32.
    """

    def __init__(
        self,
        model=None,
        tile: int = DEFAULT_TILE,
        margin: int = DEFAULT_MARGIN,
        batch_size: int = 1,
        precision: str = "float32",
    ):
        from .weights import get_model_info, load_network

        policy = {"float32": None, "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
        if precision not in policy:
            raise ValueError(f"precision must be one of {list(policy)}, got {precision!r}")
        if model is None or isinstance(model, str):
            self.model, self.info = load_network(model, dtype=policy[precision])
        else:
            self.model, self.info = model, get_model_info(None)
        self.precision = precision
        self.tile = _ceil_to(max(int(tile), ALIGN), ALIGN)
        self.margin = _ceil_to(max(int(margin), 0), ALIGN // 2)
        if self.tile - 2 * self.margin < ALIGN:
            raise ValueError(f"tile {tile} leaves no room inside margin {margin}")
        self.batch_size = max(1, int(batch_size))
        self._forward = _make_forward(self.model)

    @property
    def n_classes(self) -> int:
        return len(self.info.classes)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Raw network call: (N, H, W) or (N, H, W, 1) -> (N, H, W, n_classes) float32."""
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[..., None]
        return np.asarray(self._forward(batch), dtype=np.float32)

    def iter_tiles(self, image: np.ndarray) -> Iterator[TileResult]:
        """Run the network over a normalised 2-D image, yielding stitched blocks.

        The blocks partition the image; memory is bounded by the tile size.
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
            out = self.forward(batch)
            for k, (y0, x0, ky0, ky1, kx0, kx1) in enumerate(chunk):
                ky1, kx1 = min(ky1, h), min(kx1, w)
                if ky0 >= ky1 or kx0 >= kx1:
                    continue  # block lies wholly in the padding
                block = out[k, ky0 - y0 : ky1 - y0, kx0 - x0 : kx1 - x0, :]
                yield TileResult(ky0, ky1, kx0, kx1, np.ascontiguousarray(np.moveaxis(block, -1, 0)))

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Probabilities for a normalised 2-D image: float32 (n_classes, H, W)."""
        image = np.asarray(image)
        out = np.empty((self.n_classes,) + image.shape, dtype=np.float32)
        for t in self.iter_tiles(image):
            out[:, t.y0 : t.y1, t.x0 : t.x1] = t.probs
        return out
