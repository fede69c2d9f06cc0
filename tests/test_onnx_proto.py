"""The ONNX writer: what it serialises is what the ``onnx`` package reads,
checks and would have built itself."""

import numpy as np
import pytest

from maxidetect.network import onnx_proto
from maxidetect.network.architecture import LAYER_SPECS
from maxidetect.network.maxitrack import build_tracker_graph
from maxidetect.network.onnx_engine import PARTS, build_graph
from maxidetect.network.weights import load_tracker_arrays, load_weight_arrays

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def test_messages_equal_onnx_helpers():
    """Every field kind the engines use, negative ints and free dimensions
    included, parses to the message onnx's own helpers build."""
    w = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3) - 2.5
    idx = np.array([0, -1, 2**40], np.int64)
    ours = onnx_proto.make_model(
        [onnx_proto.Node("Conv", ["x", "w"], ["c"], {"pads": [1, 1, -1, 0], "kernel_shape": [2, 3]}),
         onnx_proto.Node("DepthToSpace", ["c"], ["d"], {"blocksize": 2, "mode": "DCR"}),
         onnx_proto.Node("LeakyRelu", ["d"], ["y"], {"alpha": 0.25})],
        "g", [onnx_proto.ValueInfo("x", onnx_proto.FLOAT, ["N", 1, 8, "W"])],
        [onnx_proto.ValueInfo("y", onnx_proto.FLOAT, ["N", 1, 16, "W2"])],
        [onnx_proto.Tensor("w", w), onnx_proto.Tensor("i", idx), onnx_proto.Tensor("b", np.array([True, False]))],
        opset=17, ir_version=9)
    theirs = helper.make_model(
        helper.make_graph(
            [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, -1, 0], kernel_shape=[2, 3]),
             helper.make_node("DepthToSpace", ["c"], ["d"], blocksize=2, mode="DCR"),
             helper.make_node("LeakyRelu", ["d"], ["y"], alpha=0.25)],
            "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, "W"])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 16, "W2"])],
            [numpy_helper.from_array(w, "w"), numpy_helper.from_array(idx, "i"),
             numpy_helper.from_array(np.array([True, False]), "b")]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=9, producer_name="maxidetect")
    parsed = onnx.load_from_string(ours)
    assert parsed == theirs
    assert numpy_helper.to_array(parsed.graph.initializer[1]).tolist() == idx.tolist()


@pytest.mark.parametrize("part", PARTS)
def test_engine_graphs_pass_onnx_checker(part):
    weights, _ = load_weight_arrays("maximask")
    for switches in ("indices", "masks"):
        model = onnx.load_from_string(build_graph(weights, part=part, switches=switches))
        onnx.checker.check_model(model, full_check=True)
        assert len(model.graph.initializer) >= (2 * len(LAYER_SPECS) if part == "full" else 1)


def test_fixed_size_and_tracker_graphs_pass_onnx_checker():
    weights, _ = load_weight_arrays("maximask")
    onnx.checker.check_model(onnx.load_from_string(build_graph(weights, shape=(97, 130))), full_check=True)
    tracker = onnx.load_from_string(build_tracker_graph(load_tracker_arrays()))
    onnx.checker.check_model(tracker, full_check=True)
    assert [d.dim_value for d in tracker.graph.input[0].type.tensor_type.shape.dim[1:]] == [1, 400, 400]
