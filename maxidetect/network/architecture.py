"""The MaxiMask network's topology, independent of any tensor library.

Read from the SavedModel shipped by ``maximask`` 1.4.1 (a SegNet with side
branches): input ``asinh(x)``; five encoder levels, each ending in a 2x2/2
max-pool that remembers where its maximum was; a decoder that puts values
back at those positions ("unpooling"), adds the encoder map and convolves;
four side branches (``ucp4`` .. ``ucp1``) that unpool decoder maps straight
back to full resolution; the five 14-channel maps are concatenated and a
final 3x3 convolution gives one sigmoid per class.

:func:`forward` states the wiring once; the Keras model
(:mod:`maxidetect.network.keras_engine`) and the ONNX Runtime graph
(:mod:`maxidetect.network.onnx_engine`) both run it with their own primitives, so the
two engines cannot drift apart.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["LAYER_SPECS", "HEAD_INPUTS", "CORE_OUTPUTS", "HALF_OUTPUTS", "N_POOL", "ALIGN", "Ops", "forward", "stem",
           "core", "head", "head_half", "head_full"]

N_POOL = 5
ALIGN = 2**N_POOL  # tile origins on multiples of this keep the pooling grid

# (layer name, filters, activation) in checkpoint naming and layer order
# (the order the weights checksum runs in).
LAYER_SPECS: tuple[tuple[str, int, str | None], ...] = (
    ("conv1", 32, "relu"),
    ("conv2", 64, "relu"),
    ("conv3_1", 128, "relu"),
    ("conv3_2", 128, "relu"),
    ("conv4_1", 256, "relu"),
    ("conv4_2", 256, "relu"),
    ("conv5_1", 256, "relu"),
    ("conv5_2", 256, "relu"),
    ("convmid", 256, "relu"),
    ("upconv5_2", 256, "relu"),
    ("upconv5_1", 256, "relu"),
    ("upconv4_2", 256, "relu"),
    ("upconv4_1", 128, "relu"),
    ("upconv3_2", 128, "relu"),
    ("upconv3_1", 64, "relu"),
    ("upconv2", 32, "relu"),
    ("upconv1", 14, "relu"),
    ("ucp4_conv4", 128, "relu"),
    ("ucp4_conv3", 64, "relu"),
    ("ucp4_conv2", 32, "relu"),
    ("ucp4_conv1", 14, "relu"),
    ("ucp3_conv3", 64, "relu"),
    ("ucp3_conv2", 32, "relu"),
    ("ucp3_conv1", 14, "relu"),
    ("ucp2_conv2", 32, "relu"),
    ("ucp2_conv1", 14, "relu"),
    ("ucp1_conv1", 14, "relu"),
    ("final_conv", 14, None),
)

#: The encoder: every layer up to the bottleneck (frozen by ``trainable="decoder"``).
ENCODER_LAYERS = ("conv1", "conv2", "conv3_1", "conv3_2", "conv4_1", "conv4_2", "conv5_1", "conv5_2", "convmid")

# The layers whose outputs final_conv reads, in its input-channel order.
HEAD_INPUTS = ("upconv1", "ucp4_conv1", "ucp3_conv1", "ucp2_conv1", "ucp1_conv1")


class Ops(Protocol):
    """Primitives an engine supplies to :func:`forward`.

    ``pool`` returns the pooled map and an opaque "switches" handle that
    ``unpool`` uses to put values back where each window's first maximum
    (raster order) was.
    """

    def asinh(self, x): ...

    def conv(self, name: str, x): ...

    def pool(self, x): ...

    def unpool(self, v, switches): ...

    def add(self, a, b): ...

    def head(self, branches: list): ...


def forward(ops: Ops, x):
    """Wire the network with ``ops``; returns whatever ``ops.head`` returns."""
    skips, p2 = stem(ops, x)
    return head(ops, skips, core(ops, p2))


# The network in three parts, so that an engine can run the two shallow
# levels (stem and head: wide maps, but only a few pixels of reach) in row
# strips and only the deep part (core) on a whole tile, whose maps are 16x
# smaller: the full- and half-resolution maps then never exist for a whole
# tile. ``forward`` is their composition.

def stem(ops: Ops, x):
    """The two shallow encoder levels: (skips, pooled map at 1/4 resolution);
    ``skips`` are what :func:`head` needs from them (maps and switches)."""
    e1 = ops.conv("conv1", ops.asinh(x))
    p, s1 = ops.pool(e1)
    e2 = ops.conv("conv2", p)
    p2, s2 = ops.pool(e2)
    return (e1, s1, e2, s2), p2


# Names of :func:`core`'s outputs: the quarter-resolution maps :func:`head` unpools.
CORE_OUTPUTS = ("upconv3_1", "ucp3_conv3", "ucp4_conv3")


def core(ops: Ops, p2):
    """Everything at 1/4 resolution and below: from the stem's pooled map to
    the maps of :data:`CORE_OUTPUTS`."""
    c, up, add = ops.conv, ops.unpool, ops.add
    e3 = c("conv3_2", c("conv3_1", p2))
    p, s3 = ops.pool(e3)
    e4 = c("conv4_2", c("conv4_1", p))
    p, s4 = ops.pool(e4)
    e5 = c("conv5_2", c("conv5_1", p))
    p, s5 = ops.pool(e5)
    mid = c("convmid", p)

    d5 = c("upconv5_1", c("upconv5_2", add(up(mid, s5), e5)))
    d4 = c("upconv4_1", c("upconv4_2", add(up(d5, s4), e4)))
    d3 = c("upconv3_1", c("upconv3_2", add(up(d4, s3), e3)))
    # The side branches from the shallowest up: each consumes an unpooled
    # map the decoder also used, so that map is freed early.
    b3 = c("ucp3_conv3", up(d4, s3))
    b4 = c("ucp4_conv3", up(c("ucp4_conv4", up(d5, s4)), s3))
    return d3, b3, b4


# Names of :func:`head_half`'s outputs: the half-resolution maps :func:`head_full` unpools.
HALF_OUTPUTS = ("upconv2", "ucp2_conv2", "ucp3_conv2", "ucp4_conv2")


def head_half(ops: Ops, skips, quarter):
    """The head's half-resolution level: unpool the core's maps with the
    stem's second switches, add its map, convolve (maps of :data:`HALF_OUTPUTS`)."""
    c, up, add = ops.conv, ops.unpool, ops.add
    _, _, e2, s2 = skips
    d3, b3, b4 = quarter
    d2 = c("upconv2", add(up(d3, s2), e2))
    return d2, c("ucp2_conv2", up(d3, s2)), c("ucp3_conv2", up(b3, s2)), c("ucp4_conv2", up(b4, s2))


def head_full(ops: Ops, skips, half):
    """The full-resolution level: unpool with the stem's first switches, add
    its map, convolve to 14 channels per branch, then the final 3x3
    convolution over the five concatenated maps (:data:`HEAD_INPUTS` order)
    and the sigmoid."""
    c, up, add = ops.conv, ops.unpool, ops.add
    e1, s1 = skips[:2]
    d2, u2, u3, u4 = half
    main = c("upconv1", add(up(d2, s1), e1))
    b1 = c("ucp1_conv1", up(d2, s1))
    b2 = c("ucp2_conv1", up(u2, s1))
    b3 = c("ucp3_conv1", up(u3, s1))
    b4 = c("ucp4_conv1", up(u4, s1))
    return ops.head([main, b4, b3, b2, b1])


def head(ops: Ops, skips, quarter):
    """The two shallow decoder levels and the side branches' last steps
    (:func:`head_half`, then :func:`head_full`)."""
    return head_full(ops, skips, head_half(ops, skips, quarter))
