"""The MaxiMask network in Keras 3 with backend-agnostic ``keras.ops``.

The wiring is :func:`maxidetect.network.architecture.forward`; this module supplies
Keras primitives for it.

Max-pool-with-argmax is expressed as a one-hot "first maximum" selection in
raster order within each window (TensorFlow's tie rule: ReLU outputs tie at
zero often, and the unpooled value goes to the first position), so no
backend-specific argmax/scatter op is needed. Odd sizes are padded at the
bottom/right like TensorFlow's "SAME" pooling.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from maxidetect.network.architecture import ALIGN, LAYER_SPECS, N_POOL, forward

__all__ = ["MaxiMaskNet", "LAYER_SPECS", "build_model", "N_POOL", "ALIGN"]


def _pool_with_switches(x):
    """2x2/2 max-pool; also return the one-hot map of each window's first maximum.

    ``x`` is (N, H, W, C) with values >= 0 (ReLU outputs). Returns the pooled
    map (N, ceil(H/2), ceil(W/2), C) and the boolean switch map (N, H, W, C):
    booleans rather than floats cut the peak memory of a 1024 px tile by ~130 MB.
    """
    h, w = x.shape[1], x.shape[2]
    ph, pw = h % 2, w % 2
    if ph or pw:
        # -1 never wins against ReLU outputs, like TF's ignored SAME padding.
        x = ops.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), constant_values=-1.0)
    a = x[:, 0::2, 0::2, :]
    b = x[:, 0::2, 1::2, :]
    c = x[:, 1::2, 0::2, :]
    d = x[:, 1::2, 1::2, :]
    m = ops.maximum(ops.maximum(a, b), ops.maximum(c, d))
    sa = ops.equal(a, m)
    sb = ops.logical_and(ops.equal(b, m), ops.logical_not(sa))
    taken = ops.logical_or(sa, sb)
    sc = ops.logical_and(ops.equal(c, m), ops.logical_not(taken))
    sd = ops.logical_not(ops.logical_or(taken, sc))
    switches = _interleave(sa, sb, sc, sd)
    if ph or pw:
        switches = switches[:, :h, :w, :]
    return m, switches


def _interleave(a, b, c, d):
    """Assemble four (N, h, w, C) maps into (N, 2h, 2w, C): a b / c d per window."""
    n, h, w, ch = a.shape
    top = ops.reshape(ops.stack([a, b], axis=3), (-1, h, 2 * w, ch))
    bottom = ops.reshape(ops.stack([c, d], axis=3), (-1, h, 2 * w, ch))
    return ops.reshape(ops.stack([top, bottom], axis=2), (-1, 2 * h, 2 * w, ch))


def _unpool(v, switches):
    """Put each value of ``v`` back where its window's maximum was."""
    h, w = switches.shape[1], switches.shape[2]
    up = ops.repeat(ops.repeat(v, 2, axis=1), 2, axis=2)
    if up.shape[1] != h or up.shape[2] != w:
        up = up[:, :h, :w, :]
    return ops.where(switches, up, ops.zeros_like(up))


class MaxiMaskNet(keras.Model):
    """MaxiMask's contaminant segmentation network (5.7 M parameters).

    Call on a float batch of normalised images, shape (N, H, W, 1); returns
    sigmoid probabilities (N, H, W, 14). Any H, W >= 1 works; H, W multiples
    of 32 avoid padded pooling windows.
    """

    def __init__(self, n_classes: int = 14, width: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.n_classes = n_classes
        self.width = width
        self.convs = {}
        for name, filters, act in LAYER_SPECS:
            if filters == 14:
                filters = n_classes
            elif width != 1.0:
                filters = max(4, int(round(filters * width)))
            # Reduced precision inside, float32 at the ends (the first and the
            # final convolution): what the bfloat16 measurements support.
            dtype = "float32" if name in ("conv1", "final_conv") else self.dtype_policy
            layer = layers.Conv2D(filters, 3, padding="same", activation=act, name=name, dtype=dtype)
            setattr(self, name, layer)
            self.convs[name] = layer

    def get_config(self):
        return {**super().get_config(), "n_classes": self.n_classes, "width": self.width}

    def call(self, x, logits: bool = False, training: bool = False):
        return forward(_KerasOps(self.convs, logits), x)


class _KerasOps:
    """:class:`maxidetect.network.architecture.Ops` on Keras layers and ``keras.ops``."""

    def __init__(self, convs, logits: bool):
        self.convs, self.logits = convs, logits

    def asinh(self, x):
        return ops.arcsinh(x)

    def conv(self, name, x):
        return self.convs[name](x)

    def pool(self, x):
        return _pool_with_switches(x)

    def unpool(self, v, switches):
        return _unpool(v, switches)

    def add(self, a, b):
        return a + b

    def head(self, branches):
        out = self.convs["final_conv"](ops.concatenate([ops.cast(b, "float32") for b in branches], axis=-1))
        return out if self.logits else ops.sigmoid(out)


def build_model(n_classes: int = 14, width: float = 1.0, dtype=None) -> MaxiMaskNet:
    """Create the network and its variables.

    Built by a symbolic call: no kernel runs, so no per-op compilation
    (an eager build cost ~370 MB of peak memory on the JAX backend).
    """
    model = MaxiMaskNet(n_classes=n_classes, width=width, dtype=dtype)
    model(keras.KerasTensor((1, ALIGN, ALIGN, 1)))
    return model
