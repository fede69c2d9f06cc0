"""A minimal ONNX model writer: nodes, initialisers, typed inputs and outputs
serialised to ONNX's protobuf wire format.

The engines build their graphs in memory and hand the bytes to ONNX Runtime;
this is all they need of the ``onnx`` package, which would add ~33 MB (with
its dependencies) to every install. ``onnx`` remains an optional extra for
what needs its checker or its tools (quantisation, the tests, which parse
every graph written here with ``onnx`` and check it).

Field numbers follow ``onnx.proto`` (IR version 8/9); repeated scalars are
written unpacked, as ``onnx`` itself writes them (proto2).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Node", "Tensor", "ValueInfo", "make_model", "FLOAT", "UINT8", "INT8", "INT32", "INT64", "BOOL"]

# TensorProto.DataType
FLOAT, UINT8, INT8, INT32, INT64, BOOL = 1, 2, 3, 6, 7, 9
_DTYPES = {np.dtype(np.float32): FLOAT, np.dtype(np.uint8): UINT8, np.dtype(np.int8): INT8,
           np.dtype(np.int32): INT32, np.dtype(np.int64): INT64, np.dtype(np.bool_): BOOL}
# AttributeProto.AttributeType
_A_FLOAT, _A_INT, _A_STRING, _A_FLOATS, _A_INTS = 1, 2, 3, 6, 7


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 two's complement, as protobuf encodes negatives
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _int(num: int, value: int) -> bytes:
    return _varint(num << 3) + _varint(int(value))


def _bytes(num: int, value: bytes | str) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    return _varint(num << 3 | 2) + _varint(len(value)) + value


def _float(num: int, value: float) -> bytes:
    return _varint(num << 3 | 5) + struct.pack("<f", value)


@dataclass
class Node:
    """NodeProto: ``input``/``output`` are plain lists (editable)."""

    op_type: str
    input: list[str]
    output: list[str]
    attrs: dict = field(default_factory=dict)

    def _attribute(self, name: str, value) -> bytes:
        body = _bytes(1, name)
        if isinstance(value, bool | int | np.integer):
            body += _int(20, _A_INT) + _int(3, value)
        elif isinstance(value, float | np.floating):
            body += _int(20, _A_FLOAT) + _float(2, value)
        elif isinstance(value, str):
            body += _int(20, _A_STRING) + _bytes(4, value)
        elif all(isinstance(v, int | np.integer) for v in value):
            body += _int(20, _A_INTS) + b"".join(_int(8, v) for v in value)
        else:
            body += _int(20, _A_FLOATS) + b"".join(_float(7, v) for v in value)
        return body

    def encode(self) -> bytes:
        out = b"".join(_bytes(1, i) for i in self.input) + b"".join(_bytes(2, o) for o in self.output)
        out += _bytes(4, self.op_type)
        return out + b"".join(_bytes(5, self._attribute(k, v)) for k, v in sorted(self.attrs.items()))


@dataclass
class Tensor:
    """TensorProto of an initialiser: float32, (u)int8, int32, int64 or bool, little-endian raw data."""

    name: str
    array: np.ndarray

    def encode(self) -> bytes:
        a = np.ascontiguousarray(self.array)
        if a.dtype not in _DTYPES:
            raise TypeError(f"initialiser {self.name}: dtype {a.dtype} not supported")
        raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        return (b"".join(_int(1, d) for d in a.shape) + _int(2, _DTYPES[a.dtype])
                + _bytes(8, self.name) + _bytes(9, raw))


@dataclass
class ValueInfo:
    """ValueInfoProto of a graph input or output: element type and a shape of
    fixed sizes (int) or named free dimensions (str)."""

    name: str
    elem_type: int
    shape: list

    def encode(self) -> bytes:
        dims = b"".join(_bytes(1, _bytes(2, d) if isinstance(d, str) else _int(1, d)) for d in self.shape)
        tensor_type = _int(1, self.elem_type) + _bytes(2, dims)
        return _bytes(1, self.name) + _bytes(2, _bytes(1, tensor_type))


def make_model(nodes: list[Node], name: str, inputs: list[ValueInfo], outputs: list[ValueInfo],
               initialisers: list[Tensor], opset: int = 17, ir_version: int = 9) -> bytes:
    """A serialised ModelProto (default ONNX domain at ``opset``)."""
    graph = (b"".join(_bytes(1, n.encode()) for n in nodes) + _bytes(2, name)
             + b"".join(_bytes(5, t.encode()) for t in initialisers)
             + b"".join(_bytes(11, v.encode()) for v in inputs) + b"".join(_bytes(12, v.encode()) for v in outputs))
    return (_int(1, ir_version) + _bytes(2, "maxidetect") + _bytes(7, graph)
            + _bytes(8, _bytes(1, "") + _int(2, opset)))
