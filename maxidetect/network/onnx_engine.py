"""The network as an ONNX graph run by ONNX Runtime: the fast CPU engine.

Built in memory from the weight arrays with :func:`maxidetect.network.architecture.forward`
(no TensorFlow or Keras import, so a CLI run starts in about a second instead
of ~15 s). ONNX's ``MaxPool`` returns the argmax indices and ``MaxUnpool``
scatters to them; both keep the first maximum in raster order, TensorFlow's
tie rule. Layers whose channel count is not a multiple of 8 (the 14-class
maps) are padded with zero filters: ONNX Runtime's blocked (NCHWc) convolution
kernels then take them, and the padding adds exact zeros.

Tiles run as three graphs (:class:`OnnxForward`): the shallow levels in row
strips, the deep ones on the whole tile, with identical results.
"""

from __future__ import annotations

import threading

import numpy as np

from maxidetect.network import onnx_proto
from maxidetect.network.architecture import (
    ALIGN,
    CORE_OUTPUTS,
    HALF_OUTPUTS,
    HEAD_INPUTS,
    LAYER_SPECS,
    N_POOL,
    core,
    forward,
    head,
    head_full,
    head_half,
    stem,
)

__all__ = ["build_graph", "PartsForward", "OnnxForward", "available", "strip_rows", "STEM_HALO", "HEAD_HALO", "PARTS"]

_OPSET = 17
_BLOCK = 8  # channel blocking of ONNX Runtime's NCHWc kernels on AVX2


def available() -> bool:
    """True when ``onnxruntime`` can be imported."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _padded(n: int) -> int:
    return -(-n // _BLOCK) * _BLOCK


def _pad_axis(a: np.ndarray, axis: int, n: int) -> np.ndarray:
    """``a`` zero-padded along ``axis`` to length ``n``."""
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, n - a.shape[axis])
    return np.pad(a, pad) if n != a.shape[axis] else a


class _GraphOps:
    """:class:`maxidetect.network.architecture.Ops` emitting ONNX nodes (NCHW)."""

    def __init__(self, weights: dict[str, tuple[np.ndarray, np.ndarray]], n_classes: int,
                 shape: tuple[int, int] | None, switches: str = "indices",
                 int8: dict[str, tuple[float, float]] | None = None):
        self.w = weights
        self.n_classes = n_classes
        self.switches = switches
        # {layer: (input range, output range)}: layers run in int8 (see _qconv)
        self.int8 = int8 or {}
        self.probes: list[tuple[str, str, str]] = []  # (layer, input, output) of every hidden convolution
        # Spatial size at each pooling level, for inputs not on the 32 px grid.
        self.sizes = None
        if shape is not None:
            self.sizes = [tuple(int(v) for v in shape)]
            for _ in range(N_POOL):
                self.sizes.append(tuple(-(-v // 2) for v in self.sizes[-1]))
        self.n_pools = 0
        self.nodes, self.inits = [], []
        self._n = 0
        # channels each tensor carries, zero padding included (absent: unpadded)
        self.width: dict[str, int] = {}
        self.consts: set[str] = set()
        self.head_branches: set[str] = set()  # HEAD_INPUTS outputs already summed
        self.head_sum: str | None = None  # running final_conv sum
        self.unpooled: set[tuple[str, str]] = set()

    def _name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def _node(self, op: str, inputs: list[str], n_out: int = 1, prefix: str | None = None, **attrs) -> list[str]:
        outs = [self._name(prefix or op) for _ in range(n_out)]
        self.nodes.append(onnx_proto.Node(op, list(inputs), outs, attrs))
        return outs

    def _init(self, name: str, arr, dtype=np.float32) -> str:
        self.inits.append(onnx_proto.Tensor(name, np.ascontiguousarray(arr, dtype=dtype)))
        return name

    def _index_const(self, name: str, values) -> str:
        """A shared constant: int64 (Slice starts, ends, axes, Split sizes)
        unless ``values`` is a float array."""
        if name not in self.consts:
            self.consts.add(name)
            dtype = values.dtype if isinstance(values, np.ndarray) else np.int64
            self._init(name, values, dtype)
        return name

    def _conv(self, name: str, x: str, kernel: np.ndarray, bias: np.ndarray, relu: bool) -> str:
        """3x3 'same' convolution; ``kernel`` is Keras's (3, 3, in, out)."""
        k = np.transpose(kernel, (3, 2, 0, 1))
        y = self._node("Conv", [x, self._init(f"{name}.W", k), self._init(f"{name}.B", bias)],
                       prefix=name, kernel_shape=[3, 3], pads=[1, 1, 1, 1])[0]
        return self._node("Relu", [y], prefix=name)[0] if relu else y

    def asinh(self, x):
        # ONNX Runtime's Asinh loses precision for negative inputs
        # (x + sqrt(x^2 + 1) cancels): the caller feeds asinh(x) from numpy.
        return x

    def _qdq(self, x: str, scale: float, zero_point: np.ndarray, prefix: str) -> str:
        """``x`` rounded to the int8 grid ``scale`` (QuantizeLinear + DequantizeLinear)."""
        s = self._init(f"{prefix}.scale", np.float32(scale))
        z = self._init(f"{prefix}.zero", zero_point, zero_point.dtype)
        return self._node("DequantizeLinear", [self._node("QuantizeLinear", [x, s, z])[0], s, z])[0]

    def _qconv(self, name: str, x: str, kernel: np.ndarray, bias: np.ndarray) -> str:
        """A ReLU convolution in the QDQ form ONNX Runtime fuses into one
        integer convolution (u8 x s8, VNNI where the CPU has it): input and
        output uint8 with zero point 0 over [0, range] (every input here is a
        ReLU map or a sum / unpooling of them; the output's clamp at 0 is
        the ReLU), weights int8 symmetric per output channel, bias int32."""
        x_range, y_range = self.int8[name]
        sx = max(float(x_range), 1e-12) / 255.0
        u8 = np.zeros((), np.uint8)
        xq = self._qdq(x, sx, u8, f"{name}.x")
        k = np.transpose(kernel, (3, 2, 0, 1))
        sw = np.abs(k).reshape(k.shape[0], -1).max(axis=1) / 127.0
        # zero-padded and dead filters (trained weights of ~1e-36 exist):
        # scale 1, so their weights round to 0 and the bias scale stays finite
        sw = np.where(sw > 1e-6 * sw.max(), sw, 1.0).astype(np.float32)
        kq = np.clip(np.rint(k / sw[:, None, None, None]), -127, 127).astype(np.int8)
        w = self._node("DequantizeLinear", [self._init(f"{name}.Wq", kq, np.int8), self._init(f"{name}.Ws", sw),
                                            self._init(f"{name}.Wz", np.zeros(k.shape[0], np.int8), np.int8)],
                       axis=0)[0]
        sb = (sx * sw).astype(np.float32)
        bq = np.clip(np.rint(bias / sb), -2**31, 2**31 - 1).astype(np.int32)
        b = self._node("DequantizeLinear", [self._init(f"{name}.Bq", bq, np.int32), self._init(f"{name}.Bs", sb),
                                            self._init(f"{name}.Bz", np.zeros(k.shape[0], np.int32), np.int32)],
                       axis=0)[0]
        y = self._node("Conv", [xq, w, b], prefix=name, kernel_shape=[3, 3], pads=[1, 1, 1, 1])[0]
        return self._qdq(y, max(float(y_range), 1e-12) / 255.0, u8, f"{name}.y")

    def conv(self, name, x):
        kernel, bias = self.w[name]
        cout = kernel.shape[3]
        kernel = _pad_axis(kernel, 2, self.width.get(x, kernel.shape[2]))  # input may carry padding
        kernel, bias = _pad_axis(kernel, 3, _padded(cout)), _pad_axis(bias, 0, _padded(cout))
        if name in self.int8:
            y = self._qconv(name, x, kernel, bias)
        else:
            y = self._conv(name, x, kernel, bias, relu=True)
        self.probes.append((name, x, y))
        self.width[y] = _padded(cout)
        if name in HEAD_INPUTS:
            self._head_term(HEAD_INPUTS.index(name), y)
        return y

    def _head_term(self, i: int, branch: str) -> None:
        """Add branch ``i``'s share of final_conv to the running sum as soon as
        the branch exists: final_conv(concat(branches)) == sum of per-branch
        convolutions, so no concatenated copy is made and each full-resolution
        branch map is freed at once (measured on a 1024 px tile: -145 MB of
        peak memory than a concatenation, and no slower)."""
        kernel, bias = self.w["final_conv"]
        cout = _padded(kernel.shape[3])
        start = sum(self.w[n][0].shape[3] for n in HEAD_INPUTS[:i])
        stop = start + self.w[HEAD_INPUTS[i]][0].shape[3]
        part = _pad_axis(_pad_axis(kernel[:, :, start:stop], 2, self.width[branch]), 3, cout)
        b = _pad_axis(bias, 0, cout) if i == 0 else np.zeros(cout, bias.dtype)
        y = self._conv(f"final_conv.{i}", branch, part, b, relu=False)
        self.head_sum = y if self.head_sum is None else self._node("Add", [self.head_sum, y])[0]
        self.head_branches.add(branch)

    def pool(self, x):
        if self.switches == "masks":
            return self._pool_masks(x)
        y, idx = self._node("MaxPool", [x], n_out=2, kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
        self._same_width(x, y)
        self.n_pools += 1
        return y, (idx, self.n_pools - 1)

    def _pool_masks(self, x):
        """2x2 max-pool whose switches are four boolean maps, one per window
        position in raster order, each true where that position holds the
        window's first maximum (TensorFlow's tie rule). Only SpaceToDepth,
        comparisons and logic: runtimes without MaxUnpool (OpenVINO) and
        quantisers take it, and the result equals the indices form exactly."""
        blocks = self._node("SpaceToDepth", [x], blocksize=2)[0]
        c = self.width.get(x) or self._channels(x)
        parts = self._node("Split", [blocks, self._index_const(f"split4_{c}", [c] * 4)], n_out=4, axis=1)
        y = self._node("Max", parts)[0]
        taken, masks = None, []
        for part in parts[:3]:
            eq = self._node("Equal", [part, y])[0]
            first = eq if taken is None else self._node("And", [eq, self._node("Not", [taken])[0]])[0]
            masks.append(first)
            taken = first if taken is None else self._node("Or", [taken, first])[0]
        masks.append(self._node("Not", [taken])[0])
        mask = self._node("Concat", masks, axis=1)[0]
        self._same_width(x, y)
        self.n_pools += 1
        return y, ("masks", mask)

    def _channels(self, x: str) -> int:
        raise ValueError(f"channel count of {x} unknown")

    def unpool(self, v, switches):
        if switches[0] == "masks":
            tiled = self._node("Concat", [v] * 4, axis=1)[0]
            zero = self._index_const("zero_f", np.zeros((), np.float32))
            y = self._node("DepthToSpace", [self._node("Where", [switches[1], tiled, zero])[0]],
                           blocksize=2, mode="DCR")[0]
            self._same_width(v, y)
            return y
        idx, level = switches
        pads = [0, 0, 0, 0]
        if self.sizes is not None:
            # Odd sizes: the indices address the unpadded map, so unpool to
            # exactly its size (the padding holds no maximum).
            (h, w), (ph, pw) = self.sizes[level], self.sizes[level + 1]
            pads = [0, 0, 2 * ph - h, 2 * pw - w]
        # A second unpooling of the same map is made to differ (explicit zero
        # pads) so the optimiser does not merge it with the first: the decoder
        # can then add into the first one in place and the branch makes its own.
        attrs = {"pads": pads} if (any(pads) or (v, idx) in self.unpooled) else {}
        self.unpooled.add((v, idx))
        y = self._node("MaxUnpool", [v, idx], kernel_shape=[2, 2], strides=[2, 2], **attrs)[0]
        self._same_width(v, y)
        return y

    def add(self, a, b):
        y = self._node("Add", [a, b])[0]
        self._same_width(a, y)
        return y

    def _same_width(self, src: str, dst: str) -> None:
        """``dst`` carries ``src``'s channels (padding included)."""
        if src in self.width:
            self.width[dst] = self.width[src]

    def head(self, branches):
        if set(branches) != self.head_branches:
            raise ValueError("final_conv's inputs are not the HEAD_INPUTS layers")
        logits, cout = self.head_sum, _padded(self.n_classes)
        if cout != self.n_classes:
            starts, ends, axes = (self._index_const(k, v) for k, v in
                                  (("zero", [0]), ("n_classes", [self.n_classes]), ("axis_c", [1])))
            logits = self._node("Slice", [logits, starts, ends, axes])[0]
        return self._node("Sigmoid", [logits])[0]


PARTS = ("full", "stem", "core", "head", "head_half", "head_full")


def build_graph(weights: dict[str, tuple[np.ndarray, np.ndarray]], shape: tuple[int, int] | None = None,
                part: str = "full", switches: str = "indices", int8: dict[str, tuple[float, float]] | None = None,
                probe: bool = False):
    """The network, or one part of it, as a serialised ONNX model.

    Parameters
    ----------
    weights : dict
        ``{layer name: (kernel (3, 3, in, out), bias (out,))}`` for every layer
        of :data:`maxidetect.network.architecture.LAYER_SPECS` (Keras layout).
    shape : (H, W) or None
        None: a graph for any H, W that are multiples of 32 (tiles; 4 for
        the stem and head). Else a graph for exactly this input size, which
        may be anything (odd sizes pool like TensorFlow's "SAME", padding at
        the bottom/right); only for ``part="full"``.
    part : {"full", "stem", "core", "head", "head_half", "head_full"}
        The whole network or one of :mod:`maxidetect.network.architecture`'s parts:
        ``"stem"``: ``x`` -> ``p2`` (1/4 resolution); ``"core"``: ``p2`` ->
        the maps named in :data:`~maxidetect.network.architecture.CORE_OUTPUTS`;
        ``"head"``: ``x`` and those maps -> ``y``; or the head in two:
        ``"head_half"``: ``x`` and the core's maps -> the half-resolution maps of
        :data:`~maxidetect.network.architecture.HALF_OUTPUTS`; ``"head_full"``:
        ``x`` and those -> ``y``.
    switches : {"indices", "masks"}
        How max-pooling remembers its maxima for unpooling: ONNX's
        ``MaxPool`` indices and ``MaxUnpool`` (any size), or boolean
        position masks with ``SpaceToDepth``/``DepthToSpace`` (sizes on the
        32 px grid; for runtimes and quantisers without ``MaxUnpool``).
        Both give identical results.
    int8 : dict or None
        ``{layer: (input range, output range)}``: these layers run as integer
        convolutions (:mod:`maxidetect.network.quantise`); the rest float32.
    probe : bool
        Also output every hidden convolution's input and output, as
        ``probe.LAYER.in`` and ``probe.LAYER.out`` (for calibrating ``int8``).

    Returns
    -------
    bytes
        A ModelProto (:mod:`maxidetect.network.onnx_proto`): input ``x``
        (N, 1, H, W) float32, already ``asinh``-transformed; output ``y``
        (N, n_classes, H, W) sigmoid probabilities.
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {list(PARTS)}, got {part!r}")
    if part != "full" and shape is not None:
        raise ValueError("a fixed input shape is for the full network only")
    missing = [name for name, _, _ in LAYER_SPECS if name not in weights]
    if missing:
        raise ValueError(f"weights lack layers: {', '.join(missing)}")
    n_classes = int(weights["final_conv"][0].shape[3])
    if switches not in ("indices", "masks"):
        raise ValueError(f"switches must be 'indices' or 'masks', got {switches!r}")
    if switches == "masks" and shape is not None:
        raise ValueError("mask switches need sizes on the 32 px grid (shape=None)")
    unknown = set(int8 or ()) - {name for name, _, act in LAYER_SPECS if act == "relu"}
    if unknown:
        raise ValueError(f"int8 layers must be hidden ReLU layers, not {sorted(unknown)}")
    ops = _GraphOps(weights, n_classes, shape, switches, int8)

    def tensor(name, channels):
        return onnx_proto.ValueInfo(name, onnx_proto.FLOAT, ["N", channels, "H", "W"])

    def output(src, name):
        ops.nodes.append(onnx_proto.Node("Identity", [src], [name]))

    x = tensor("x", 1)
    y = tensor("y", n_classes)
    p2_width, quarter, half = _part_widths(weights)
    p2 = ("p2", p2_width)
    if part == "full":
        inputs, outputs = [x], [y]
        output(forward(ops, "x"), "y")
    elif part == "stem":
        inputs, outputs = [x], [tensor(*p2)]
        output(stem(ops, "x")[1], "p2")
    elif part == "core":
        inputs, outputs = [tensor(*p2)], [tensor(*q) for q in quarter]
        ops.width[p2[0]] = p2[1]
        for (name, _), t in zip(quarter, core(ops, "p2"), strict=True):
            output(t, name)
    elif part == "head":
        inputs, outputs = [x] + [tensor(*q) for q in quarter], [y]
        ops.width.update(quarter)
        output(head(ops, stem(ops, "x")[0], [name for name, _ in quarter]), "y")
    elif part == "head_half":
        inputs, outputs = [x] + [tensor(*q) for q in quarter], [tensor(*h) for h in half]
        ops.width.update(quarter)
        for (name, _), t in zip(half, head_half(ops, stem(ops, "x")[0], [n for n, _ in quarter]), strict=True):
            output(t, name)
    else:
        inputs, outputs = [x] + [tensor(*h) for h in half], [y]
        ops.width.update(half)
        output(head_full(ops, stem(ops, "x")[0], [name for name, _ in half]), "y")
    if probe:
        for layer, src, dst in list(ops.probes):
            for tag, t in (("in", src), ("out", dst)):
                output(t, f"probe.{layer}.{tag}")
                outputs.append(onnx_proto.ValueInfo(f"probe.{layer}.{tag}", onnx_proto.FLOAT, ["N", "C", "H", "W"]))
    _drop_unused_outputs(ops.nodes, {o.name for o in outputs})
    return onnx_proto.make_model(ops.nodes, f"maximask_{part}", inputs, outputs, ops.inits, opset=_OPSET)


def _part_widths(weights) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """Channels (zero padding included) of the stem's output ``p2``, of each
    core output and of each half-resolution head output: what the parts hand
    each other."""
    def width(name):
        return _padded(weights[name][0].shape[3])

    return width("conv2"), [(name, width(name)) for name in CORE_OUTPUTS], [(n, width(n)) for n in HALF_OUTPUTS]


def _drop_unused_outputs(nodes, graph_outputs: set[str]) -> None:
    """Drop what nothing reads: nodes whose outputs are all unused (the
    stem's switch masks when it runs alone) and MaxPool indices outputs (a
    pooled map nobody reads is still computed, being MaxPool's required
    output)."""
    used = set(graph_outputs)
    keep = []
    for n in reversed(nodes):
        if any(o in used for o in n.output):
            keep.append(n)
            used.update(n.input)
    nodes[:] = keep[::-1]
    for n in nodes:
        if n.op_type == "MaxPool" and len(n.output) == 2 and n.output[1] not in used:
            del n.output[1]


# Rows of context a strip needs on each side so that its rows equal the
# whole tile's: the stem's reach is conv-pool-conv-pool, the head's adds its
# own convolutions on top (measured identical with these; a stem halo of 0
# or a head halo of 4 differ: tests/test_onnx_engine.py). Multiples of 4 keep
# the strips on the stem's 2x2 pooling grids.
STEM_HALO = 4
HEAD_HALO = 8
# Pixels per head strip: its maps take ~0.6 kB per pixel, and the halo costs
# 2 * HEAD_HALO rows of recomputation per strip.
_STRIP_PIXELS = 2**18


def strip_rows(width: int, pixels: int | None = None) -> int:
    """Rows per stem/head strip of about ``pixels`` (None: ``_STRIP_PIXELS``)
    for tiles ``width`` pixels wide (a multiple of 4)."""
    return max(32, int(pixels or _STRIP_PIXELS) // max(int(width), 1) // 4 * 4)


def _strips(n: int, rows: int, halo: int):
    """(r0, r1, a0, a1): output rows [r0, r1) computed from input rows [a0, a1)."""
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        yield r0, r1, max(0, r0 - halo), min(n, r1 + halo)


_ARENA_SHARED = []


def _share_cpu_arena(ort) -> None:
    """Register, once per process, the CPU buffer pool that sessions built
    with ``session.use_env_allocators`` share; it grows by what each request
    needs (the default doubling over-reserved up to ~0.1 GB here)."""
    if not _ARENA_SHARED:
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        # (no limit, kSameAsRequested, default initial chunk, default dead bytes)
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))
        _ARENA_SHARED.append(True)


class PartsForward:
    """A compiled forward pass: normalised tiles in, probabilities out.

    A tile on the 32 px grid runs in three parts (:mod:`maxidetect.network.architecture`):
    the stem in row strips, the core on the whole tile (1/4 resolution), the
    head in row strips. A tile then costs ~0.2 kB per pixel instead of
    ~0.8 kB for the whole network at once (measured peaks, less the ~0.25 GB
    of the loaded engine: 2048 px tile ~0.9 GB, 1184 px tile 1.05-1.5 GB),
    so tiles can be 3x larger, and large tiles waste less on overlap. Other sizes run
    the whole network in one graph built for that size.

    Subclasses say how a part runs (:meth:`_run`); this class cuts the strips.

    Parameters
    ----------
    weights : dict
        As for :func:`build_graph`.
    threads : int or None
        Compute threads; None: one per core.
    strip_pixels : int or None
        Pixels per stem/head strip (None: ``2**18``; see ``benchmarks/engine_profile.py``).
    """

    def __init__(self, weights: dict[str, tuple[np.ndarray, np.ndarray]], threads: int | None = None,
                 strip_pixels: int | None = None):
        self.weights = weights
        self.threads = threads
        self.strip_pixels = strip_pixels
        self.n_classes = int(weights["final_conv"][0].shape[3])
        self._p2_width, self._quarter, self._half = _part_widths(weights)
        # Per thread: the runner shares one engine between a worker's threads.
        self._local = threading.local()

    def _run(self, part: str, feeds: dict, outputs: dict, shape=None) -> None:
        """Run ``part`` on ``feeds``, writing into the arrays of ``outputs``."""
        raise NotImplementedError

    def _buffer(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A reused output buffer: a fresh output per run fragmented ONNX
        Runtime's arena (+100-200 MB over a frame)."""
        buffers = self._local.__dict__
        buf = buffers.get(name)
        if buf is None or buf.shape != shape:
            buffers[name] = None
            buf = buffers[name] = np.empty(shape, np.float32)
        return buf

    def iter_rows(self, batch: np.ndarray):
        """Run a batch, yielding its output in row blocks.

        Parameters
        ----------
        batch : ndarray, shape (N, H, W)
            Normalised images.

        Yields
        ------
        r0, r1 : int
            The rows the block covers.
        probs : ndarray, float32, shape (N, n_classes, r1 - r0, W)
            A view of a buffer the next block overwrites: use or copy it first.
        """
        x = np.ascontiguousarray(np.arcsinh(np.asarray(batch, dtype=np.float32))[:, None])
        n, _, h, w = x.shape
        if h % ALIGN or w % ALIGN:
            y = self._buffer("y", (n, self.n_classes, h, w))
            self._run("full", {"x": x}, {"y": y}, shape=(h, w))
            yield 0, h, y
            return
        rows = strip_rows(w, self.strip_pixels)
        p2 = np.empty((n, self._p2_width, h // 4, w // 4), np.float32)
        for r0, r1, a0, a1 in _strips(h, rows, STEM_HALO):
            part = self._buffer("p2", (n, self._p2_width, (a1 - a0) // 4, w // 4))
            self._run("stem", {"x": x[:, :, a0:a1]}, {"p2": part})
            p2[:, :, r0 // 4 : r1 // 4] = part[:, :, (r0 - a0) // 4 : (r1 - a0) // 4]
        quarter = {name: np.empty((n, c, h // 4, w // 4), np.float32) for name, c in self._quarter}
        self._run("core", {"p2": p2}, quarter)
        del p2
        for r0, r1, a0, a1 in _strips(h, rows, HEAD_HALO):
            y = self._buffer("y", (n, self.n_classes, a1 - a0, w))
            feeds = {name: q[:, :, a0 // 4 : a1 // 4] for name, q in quarter.items()}
            self._run("head", {"x": x[:, :, a0:a1], **feeds}, {"y": y})
            yield r0, r1, y[:, :, r0 - a0 : r1 - a0]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W) normalised float32 -> (N, n_classes, H, W) float32 (a new array)."""
        batch = np.asarray(batch)
        out = np.empty((batch.shape[0], self.n_classes) + batch.shape[1:], np.float32)
        for r0, r1, probs in self.iter_rows(batch):
            out[:, :, r0:r1] = probs
        return out


class OnnxForward(PartsForward):
    """:class:`PartsForward` on ONNX Runtime: float32, the reference engine,
    or with the deep part in int8.

    Parameters
    ----------
    weights, threads, strip_pixels
        As for :class:`PartsForward` (``threads``: ONNX Runtime's intra-op pool).
    int8 : dict or None
        ``{layer: (input range, output range)}`` of the layers to run as
        integer convolutions (:func:`maxidetect.network.quantise.load_ranges`);
        None: all float32.
    """

    def __init__(self, weights: dict[str, tuple[np.ndarray, np.ndarray]], threads: int | None = None,
                 strip_pixels: int | None = None, int8: dict[str, tuple[float, float]] | None = None):
        super().__init__(weights, threads, strip_pixels)
        self.int8 = dict(int8) if int8 else None
        self.effective_precision = "int8" if self.int8 else "float32"
        self._sessions = {}
        for part in ("stem", "core", "head"):  # fail early on a broken install
            self._session(part)

    def _session(self, part: str, shape: tuple[int, int] | None = None):
        key = (part, shape)
        if key not in self._sessions:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # Measured on a 1024 px tile, 2 cores: planning memory from the
            # first run's pattern cost +0.45 GB and ~10% speed.
            opts.enable_mem_pattern = False
            # Priority-based node order: on a 1024 px tile -25% peak memory
            # and ~10% faster than the default topological order.
            opts.execution_order = ort.ExecutionOrder.PRIORITY_BASED
            opts.log_severity_level = 3
            if self.threads:
                opts.intra_op_num_threads = int(self.threads)
                opts.inter_op_num_threads = 1
            # One buffer pool for the three parts: the head's strips reuse what
            # the core freed (separate pools: +0.35 GB on a 2048 x 1184 tile).
            _share_cpu_arena(ort)
            opts.add_session_config_entry("session.use_env_allocators", "1")
            graph = build_graph(self.weights, shape, part=part, int8=self.int8)
            self._sessions[key] = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
        return self._sessions[key]

    def _run(self, part: str, feeds: dict, outputs: dict, shape=None) -> None:
        session = self._session(part, shape)
        io = session.io_binding()
        for name, value in feeds.items():
            io.bind_cpu_input(name, np.ascontiguousarray(value))
        for name, buf in outputs.items():
            io.bind_output(name, "cpu", 0, np.float32, buf.shape, buf.ctypes.data)
        session.run_with_iobinding(io)
