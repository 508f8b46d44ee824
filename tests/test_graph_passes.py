"""Graph passes for the TensorRT-family builders: each found by pattern, each equivalent on real faces."""

from collections import Counter

import numpy as np
import onnx
import pytest

from harness import model
from harness.engines import create as create_engine
from harness.lfw import data
from harness.model import graph_passes

from .test_model import renamed_copy


@pytest.fixture(scope="module")
def crops(lfw_faces):
    return data.normalize(lfw_faces[1])


@pytest.fixture(scope="module")
def original(facenet_reference_model, crops):
    return create_engine("onnxruntime", facenet_reference_model, "fp32").run(crops)


def transformed(src, names, tmp_path):
    out = tmp_path / "t.onnx"
    onnx.save(graph_passes.apply(onnx.load(str(src)), names), str(out))
    return model.inspect(out)


def ops(path):
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


@pytest.mark.parametrize(
    "names",
    [
        ["cut-at-last-bn"],
        ["fold-bottleneck"],
        ["fold-residual-scale"],
        ["fold-residual-scale", "fold-bottleneck", "cut-at-last-bn"],
    ],
)
def test_pass_is_equivalent_on_real_faces(names, facenet_reference_model, crops, original, tmp_path):
    info = transformed(facenet_reference_model.path, names, tmp_path)
    got = create_engine("onnxruntime", info, "fp32").run(crops)
    assert np.abs(got - original).max() <= 1e-5
    counts, before = ops(info.path), ops(facenet_reference_model.path)
    if "fold-residual-scale" in names:
        assert counts["Mul"] == 0 and before["Mul"] == 21
    if "fold-bottleneck" in names:
        assert counts["MatMul"] == 0 and counts["BatchNormalization"] == 0 and counts["Conv"] == before["Conv"] + 1
    if "cut-at-last-bn" in names:
        assert not info.normalized and counts["ReduceL2"] == 0 and counts["Div"] == 0


def test_passes_work_on_renamed_graphs(facenet_reference_model, crops, original, tmp_path):
    renamed_copy(facenet_reference_model.path, tmp_path / "renamed.onnx")
    info = transformed(
        tmp_path / "renamed.onnx", ["fold-residual-scale", "fold-bottleneck", "cut-at-last-bn"], tmp_path
    )
    got = create_engine("onnxruntime", info, "fp32").run(crops)
    assert np.abs(got - original).max() <= 1e-5


def test_fold_uses_the_nodes_own_epsilon(facenet_reference_model, tmp_path):
    m = onnx.load(str(facenet_reference_model.path))
    bn = next(n for n in m.graph.node if n.op_type == "BatchNormalization")
    eps = next(onnx.helper.get_attribute_value(a) for a in bn.attribute if a.name == "epsilon")
    assert eps == pytest.approx(1e-3)  # the checkpoint's, not the 1e-8 the reference deployment used
    folded = graph_passes.fold_bottleneck(m)
    w = next(t for t in folded.graph.initializer if t.name.startswith("folded_bottleneck_weight"))
    g = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    scale, var = g[bn.input[1]], g[bn.input[4]]
    mm = next(n for n in m.graph.node if n.op_type == "MatMul")
    expected = (g[mm.input[1]] * (scale / np.sqrt(var + 1e-3))).T
    np.testing.assert_allclose(onnx.numpy_helper.to_array(w)[:, :, 0, 0], expected, rtol=1e-5, atol=1e-7)


def test_simplify(facenet_reference_model, crops, original, tmp_path):
    pytest.importorskip("onnxsim", reason="onnx-simplifier (the 'passes' extra) is not installed")
    info = transformed(facenet_reference_model.path, ["simplify"], tmp_path)
    got = create_engine("onnxruntime", info, "fp32").run(crops)
    assert np.abs(got - original).max() <= 1e-5


def test_unknown_pass_and_unfit_graph():
    with pytest.raises(graph_passes.HarnessError, match="unknown graph pass"):
        graph_passes.apply(onnx.ModelProto(), ["nope"])
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 512])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 512])
    m = onnx.helper.make_model(onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    with pytest.raises(graph_passes.HarnessError, match="nothing to cut at"):
        graph_passes.cut_at_last_bn(m)
    with pytest.raises(graph_passes.HarnessError, match="no BatchNormalization"):
        graph_passes.fold_bottleneck(m)
