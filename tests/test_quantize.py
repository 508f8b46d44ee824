"""The INT8 model for TensorRT/IxRT: written by ``facenet-harness quantize --for tensorrt``, held to TensorRT's
Q/DQ rules (read here from the ONNX itself, independently of ``quantize.check_tensorrt_qdq``), and gated on
the CPU with fake-quant semantics (onnxruntime, graph optimisations off) before any GPU sees it."""

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from harness import cli
from harness.model import quantize
from harness.store import cache


def dataset_args(lfw):
    return ["--lfw-dir", str(lfw.root), "--pairs", str(lfw.protocol.path), "--boxes", str(lfw.boxes_path or "")]


@pytest.fixture(scope="session")
def trt_file(facenet_lfw, prepared, tmp_path_factory):
    """``quantize --for tensorrt --no-verify``: the file written, its exit code and report."""
    out = tmp_path_factory.mktemp("quantize") / "q.onnx"
    report = out.with_suffix(".json")
    rc = cli.main(
        ["quantize", "--for", "tensorrt", "--out", str(out), "--no-verify", "--json", str(report)]
        + dataset_args(facenet_lfw)
    )
    return out, rc, json.loads(report.read_text())


def constants(graph):
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    values.update(
        {
            n.output[0]: numpy_helper.to_array(n.attribute[0].t)
            for n in graph.node
            if n.op_type == "Constant" and n.attribute[0].name == "value"
        }
    )
    return values


def attr(node, name, default=None):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def test_written_model_is_tensorrt_ready(trt_file):
    path, rc, report = trt_file
    assert rc == 0 and report["violations"] == [] and report["verdict"] == "PASS"
    assert report["calibration"]["method"] == "Percentile" and report["calibration"]["size"] == 256
    assert report["sha256"] == cache.sha256_file(path)
    m = onnx.load(str(path))
    values = constants(m.graph)
    producer = {o: n for n in m.graph.node for o in n.output}
    qdq = [n for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) > 200
    for n in qdq:  # symmetric INT8: every zero point given, int8 and 0
        zp = values[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), n.name
        if n.op_type == "DequantizeLinear":  # biases stay float: no int32 (quantized bias) tensors
            assert values.get(n.input[0], np.zeros(1, np.int8)).dtype != np.int32, n.name
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    assert len(convs) == 132
    for conv in convs:
        dq = producer[conv.input[1]]
        assert dq.op_type == "DequantizeLinear", f"{conv.name}: weight not quantized"
        w, scale = values[dq.input[0]], values[dq.input[1]]
        assert w.dtype == np.int8 and w.ndim == 4
        assert attr(dq, "axis", 1) == 0 and scale.shape == (w.shape[0],), conv.name  # per output channel
        assert values[conv.input[2]].dtype == np.float32, conv.name  # float bias, no DQ in front of it
    gemm = next(n for n in m.graph.node if n.op_type == "Gemm")
    dq = producer[gemm.input[1]]
    w, scale = values[dq.input[0]], values[dq.input[1]]
    assert attr(gemm, "transB", 0) == 0 and attr(dq, "axis", 1) == 1 and scale.shape == (w.shape[1],)


def test_checker_accepts_the_written_model_and_flags_each_broken_rule(trt_file, tmp_path):
    path, _, _ = trt_file
    assert quantize.check_tensorrt_qdq(path) == []
    m = onnx.load(str(path))
    values = constants(m.graph)
    inits = {i.name: i for i in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    act_q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    zp = inits[act_q.input[2]]
    zp.CopyFrom(numpy_helper.from_array(np.array(3, np.int8), zp.name))  # asymmetric activation
    conv = next(n for n in m.graph.node if n.op_type == "Conv" and n.name != m.graph.node[0].name)
    dq = producer[conv.input[1]]
    scale = inits[dq.input[1]]
    scale.CopyFrom(numpy_helper.from_array(values[dq.input[1]].max(keepdims=False).astype(np.float32), scale.name))
    dq.ClearField("attribute")  # one scale for the whole weight
    onnx.save(m, str(tmp_path / "broken.onnx"))
    found = quantize.check_tensorrt_qdq(tmp_path / "broken.onnx")
    assert len(found) == 3, found  # the Q and the DQ sharing that zero point, and the per-tensor weight
    assert sum("is not 0" in f for f in found) == 2 and any(conv.name in f and "per tensor" in f for f in found)


def test_checker_flags_onnxruntime_default_qdq(facenet_lfw, facenet_reference_model, cache_dir):
    """The model GPU engines got before: quantize_static's defaults (qdq-s8s8), asymmetric with int32 biases."""
    old = quantize.int8_model(
        facenet_reference_model, facenet_lfw, cache_dir, quantize.Calibration(size=8, format="qdq-s8s8", batch_size=8)
    )
    found = quantize.check_tensorrt_qdq(old)
    assert any("is not 0 (asymmetric)" in f for f in found), found
    assert any("int32 input" in f for f in found), found


@pytest.fixture(scope="session")
def trt_engine(facenet_engines, trt_file):
    engine = facenet_engines("onnxruntime", "int8", int8_format=quantize.TRT_INT8_FORMAT)
    # exactly the file quantize wrote, run with every Q/DQ as a float op
    assert engine.describe()["engine_sha256"] == trt_file[2]["sha256"]
    assert engine.session.get_session_options().graph_optimization_level.name == "ORT_DISABLE_ALL"
    assert engine.describe()["calibration"]["method"] == "Percentile"  # the recipe's calibrator when none is named
    return engine


@pytest.mark.conformance
def test_trt_model_conforms_on_the_cpu(trt_engine, facenet_gate, facenet_store):
    result = facenet_gate.conformance(trt_engine)
    print(result)
    assert result, result
    assert result.tolerance.min_cosine == facenet_store.precision_tolerance("int8")["min_cosine"]


def test_cpu_run_is_the_graphs_fake_quant_arithmetic(trt_engine, trt_file, facenet_lfw):
    """onnxruntime with optimisations off computes what the QDQ graph specifies: onnx's own reference
    evaluator (numpy, op by op) gives the same embeddings up to rounding ties flipped by float summation
    order, an error five times smaller than quantization's own (cosine >= 0.9995 vs ~0.998 to FP32)."""
    from onnx import version_converter
    from onnx.reference import ReferenceEvaluator

    m = version_converter.convert_version(onnx.load(str(trt_file[0])), 21)  # its DequantizeLinear: opset >= 19
    x = facenet_lfw.batch(np.linspace(0, len(facenet_lfw.keys) - 1, 3).astype(int))
    want = ReferenceEvaluator(m).run(None, {"input": x})[0]
    got = trt_engine.run(x)
    cos = np.sum(got * want, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.9995, cos


@pytest.mark.accuracy
def test_quantize_gates_the_file_on_the_cpu(facenet_lfw, trt_file, tmp_path, capsys):
    """The whole verb: write, check, then conformance and full-LFW accuracy of that file, both PASS, exit 0."""
    out, report = tmp_path / "q.onnx", tmp_path / "q.json"
    rc = cli.main(
        ["quantize", "--for", "tensorrt", "--out", str(out), "--json", str(report)] + dataset_args(facenet_lfw)
    )
    printed = capsys.readouterr().out
    doc = json.loads(report.read_text())
    assert doc["sha256"] == trt_file[2]["sha256"] == cache.sha256_file(out)  # cached: the same model
    assert doc["conformance"]["verdict"] == "PASS" and doc["accuracy"]["verdict"] == "PASS", printed
    assert abs(doc["accuracy"]["accuracy_delta"]) <= 0.005  # within half a point of FP32 (the bound)
    assert doc["accuracy"]["engine"]["engine_sha256"] == doc["sha256"]
    assert rc == 0 and doc["verdict"] == "PASS", printed
