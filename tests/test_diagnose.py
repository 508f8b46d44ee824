"""The first diverging layer (harness.checks.diagnose): a damaged ONNX is traced to the layer that was damaged, a
healthy fp16/int8 engine reports no divergence, an int8 engine's layers are ranked by the error they add,
and engines that cannot expose intermediates say so."""

import json
from types import SimpleNamespace as NS

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from harness import cli, model, report
from harness.checks import conformance, diagnose
from harness.core.verdicts import Verdict
from harness.engines import Engine
from harness.model import graph_passes

from .test_accuracy import scaled_conv_onnx

pytestmark = pytest.mark.usefixtures("no_lfw_env")  # the CLI tests name their data explicitly


def _data_args(lfw, tmp_path):
    return [
        "--lfw-dir",
        str(lfw.root),
        "--pairs",
        str(lfw.protocol.path),
        "--boxes",
        str(lfw.boxes_path or ""),
        "--baselines",
        str(tmp_path / "mine"),
        "--probe-size",
        "16",
    ]


def swapped_channels_onnx(source, dest) -> str:
    """The model reading its input as BGR: a Gather reverses the channels before the first layer."""
    m = onnx.load(str(source))
    inp = m.graph.input[0].name
    m.graph.initializer.append(numpy_helper.from_array(np.array([2, 1, 0], np.int64), "bgr_order"))
    for node in m.graph.node:
        for k, x in enumerate(node.input):
            if x == inp:
                node.input[k] = "input_bgr"
    m.graph.node.insert(0, helper.make_node("Gather", [inp, "bgr_order"], ["input_bgr"], name="swap_channels", axis=1))
    onnx.checker.check_model(m)
    onnx.save(m, str(dest))
    return next(n.name for n in onnx.load(str(source)).graph.node if n.op_type == "Conv")


def test_scaled_convolution_is_named_by_conformance(facenet_lfw, facenet_reference_model, tmp_path, capsys):
    damaged = tmp_path / "scaled.onnx"
    target = scaled_conv_onnx(facenet_reference_model.path, damaged, factor=1.5)
    out = tmp_path / "conf.json"
    rc = cli.main(["conformance", "--onnx", str(damaged), "--json", str(out)] + _data_args(facenet_lfw, tmp_path))
    printed = capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert rc == 1 and doc["verdict"] == "FAIL", printed
    first = doc["first_divergence"]
    assert first["status"] == "DIVERGED" and first["node"] == target and first["op_type"] == "Conv"
    conv = next(n for n in onnx.load(str(facenet_reference_model.path)).graph.node if n.name == target)
    assert first["tensor"] == conv.output[0]
    assert first["error"] > first["tolerance"]["max_error"] and first["cosine"] < 1 and first["max_abs"] > 0
    # what it reads is exact (nothing before it differs), what follows it differs
    assert first["inputs"] and all(i["error"] < 1e-5 for i in first["inputs"])
    at = conv_index(facenet_reference_model, target)
    assert first["after"] and all(s["index"] > at for s in first["after"])
    assert all(not s["diverged"] for s in first["layers"] if s["index"] < at)
    assert (
        len(first["samples"]) == 8 and f"first divergence (fp32, 8 worst probe images): DIVERGED: {target}" in printed
    )


def conv_index(info, name):
    return [n.name for n in onnx.load(str(info.path)).graph.node].index(name)


def test_swapped_input_channels_name_the_first_layer(facenet_lfw, facenet_reference_model, tmp_path, capsys):
    bgr = tmp_path / "bgr.onnx"
    first_conv = swapped_channels_onnx(facenet_reference_model.path, bgr)
    out = tmp_path / "conf.json"
    rc = cli.main(["conformance", "--onnx", str(bgr), "--json", str(out)] + _data_args(facenet_lfw, tmp_path))
    capsys.readouterr()
    doc = json.loads(out.read_text())
    assert rc == 1 and doc["first_divergence"]["node"] == first_conv
    assert doc["first_divergence"]["inputs"] == []  # it reads the graph input: nothing computed before it


def test_passing_conformance_has_no_diagnosis(facenet_gate, facenet_reference):
    result = facenet_gate.conformance(facenet_reference)
    assert result and result.first_divergence is None and result.to_json()["first_divergence"] is None


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_healthy_reduced_precision_engines_do_not_diverge(
    facenet_gate, facenet_engines, facenet_reference_model, precision
):
    engine = facenet_engines("onnxruntime", precision, facenet_reference_model)
    d = facenet_gate.diagnose(engine)
    print(d)
    assert d.status is diagnose.Status.WITHIN_TOLERANCE and d.node is None, d.why
    assert max(s.error for s in d.layers) <= d.tolerance.max_error
    assert d.tolerance.max_error == pytest.approx(
        diagnose.LAYER_FACTOR * np.sqrt(2 * (1 - facenet_gate.store.precision_tolerance(precision)["min_cosine"]))
    )
    assert [s.index for s in d.layers] == sorted(s.index for s in d.layers)  # topological order
    assert 0 < max(s.error for s in d.layers)  # reduced precision is measured, not matched against itself
    if precision == "int8":  # the QOperator graph: dequantized tensors, Conv+Relu fused
        assert d.mapping["dequantized"] > 100 and d.mapping["fused"] > 100 and d.mapping["hidden"]
        assert any(s.op_type == "Conv+Relu" and s.mapped == "fused Relu, dequantized" for s in d.layers)


def test_int8_layers_are_ranked_by_error_contribution(facenet_gate, facenet_engines, facenet_reference_model):
    engine = facenet_engines("onnxruntime", "int8", facenet_reference_model)
    d = facenet_gate.diagnose(engine, samples=4)
    contributions = [s.contribution for s in d.ranking]
    assert len(d.ranking) == diagnose.RANKED and contributions == sorted(contributions, reverse=True)
    assert contributions[0] == max(s.contribution for s in d.layers) > 0
    for s in d.layers:
        assert s.contribution == pytest.approx(s.error - s.input_error)
    text = str(d)
    assert "layers by error contribution:" in text and f"1. {d.ranking[0].node}" in text


class ExposingEngine(Engine):
    """A plug-in engine that runs an ONNX with onnxruntime and exposes intermediates the way a fusing SDK
    does: a Conv fused with its Relu shows only the Relu's output."""

    name = "exposing"
    precisions = ("fp32",)

    def __init__(self, model_info, precision="fp32", context=None):
        super().__init__(model_info, precision, context)
        self.runner = diagnose.OnnxRunner(onnx.load(str(model_info.path)), str(model_info.path))
        g = onnx.load(str(model_info.path)).graph
        self.fused = {
            n.output[0]
            for n in g.node
            for u in g.node
            if n.op_type == "Conv" and u.op_type == "Relu" and u.input[0] == n.output[0]
        }

    def _run(self, batch):
        return self.runner(batch)[self.model.output_name]

    def describe(self):
        return {"backend": self.name, "precision": self.precision}

    def debug_tensors(self, batch, names):
        out = self.runner(batch)
        return {n: out[n] for n in names if n in out and n not in self.fused}


class OpaqueEngine(ExposingEngine):
    name = "opaque"
    debug_tensors = Engine.debug_tensors


def _images(lfw, n=4):
    idx = conformance.probe_indices(lfw, n, 0)
    return lfw.batch(idx), [lfw.keys[i] for i in idx]


def _tol(precision="fp32"):
    from harness.store.baselines import BaselineStore

    return diagnose.layer_tolerance(
        precision, conformance.Tolerance.from_dict(BaselineStore().precision_tolerance(precision))
    )


def test_engine_debug_tensors_are_compared_and_fused_ones_named_hidden(facenet_lfw, facenet_reference_model, tmp_path):
    images, keys = _images(facenet_lfw)
    damaged = tmp_path / "scaled.onnx"
    target = scaled_conv_onnx(facenet_reference_model.path, damaged, factor=1.5)
    with ExposingEngine(facenet_reference_model) as same, ExposingEngine(model.inspect(damaged)) as broken:
        ok = diagnose.diagnose(same, facenet_reference_model.path, images, keys, _tol())
        bad = diagnose.diagnose(broken, facenet_reference_model.path, images, keys, _tol())
    assert ok.status is diagnose.Status.WITHIN_TOLERANCE and len(ok.mapping["hidden"]) == len(same.fused) > 100
    # the damaged convolution is fused with its Relu in this engine: the Relu's output is where it shows
    relu = next(
        n
        for n in onnx.load(str(damaged)).graph.node
        if n.op_type == "Relu"
        and n.input[0] == next(c for c in onnx.load(str(damaged)).graph.node if c.name == target).output[0]
    )
    assert bad.status is diagnose.Status.DIVERGED and bad.node == relu.name and bad.tensor == relu.output[0]


def test_engine_without_debug_tensors_is_not_supported(facenet_lfw, facenet_reference_model):
    images, keys = _images(facenet_lfw, 2)
    with OpaqueEngine(facenet_reference_model) as engine:
        d = diagnose.diagnose(engine, facenet_reference_model.path, images, keys, _tol())
    assert d.status is diagnose.Status.NOT_SUPPORTED and d.why.startswith("not supported by this engine: opaque")
    assert d.node is None and not d.layers and "NOT SUPPORTED" in str(d)


def test_deploy_passes_are_mapped_through_the_reference(facenet_lfw, facenet_reference_model, tmp_path):
    names = ["fold-residual-scale", "fold-bottleneck", "cut-at-last-bn"]
    deployed = tmp_path / "deployed.onnx"
    onnx.save(graph_passes.apply(onnx.load(str(facenet_reference_model.path)), names), str(deployed))
    images, keys = _images(facenet_lfw)
    with ExposingEngine(model.inspect(deployed)) as engine:
        d = diagnose.diagnose(engine, facenet_reference_model.path, images, keys, _tol())
    assert d.mapping["passes"] == names and d.status is diagnose.Status.WITHIN_TOLERANCE, d.why
    assert any(s.node == "folded_bottleneck_conv" for s in d.layers)


def test_unrelated_graph_cannot_be_mapped(facenet_reference_model, facenet_lfw, tmp_path):
    m = onnx.load(str(facenet_reference_model.path))
    renamed = {}
    for i, node in enumerate(m.graph.node):  # another exporter: every intermediate tensor named otherwise
        for k, o in enumerate(node.output):
            if o != facenet_reference_model.output_name:
                renamed[o] = node.output[k] = f"t{i}_{k}"
    for node in m.graph.node:
        for k, x in enumerate(node.input):
            node.input[k] = renamed.get(x, x)
    other = tmp_path / "other.onnx"
    onnx.save(m, str(other))
    images, keys = _images(facenet_lfw, 2)
    with ExposingEngine(model.inspect(other)) as engine:
        d = diagnose.diagnose(engine, facenet_reference_model.path, images, keys, _tol())
    assert d.status is diagnose.Status.NOT_SUPPORTED and "cannot be matched" in d.why


def test_gate_markdown_shows_the_first_divergence(facenet_gate, facenet_engines, tmp_path):
    damaged = tmp_path / "scaled.onnx"
    target = scaled_conv_onnx(facenet_gate.reference.path, damaged, factor=1.5)
    engine = facenet_engines("onnxruntime", "fp32", model.inspect(damaged))
    conf = facenet_gate.conformance(engine)
    assert not conf and conf.first_divergence.node == target
    acc = NS(
        verdict=Verdict.PASS,
        checks=[],
        metrics={
            "accuracy_mean": 0.98,
            "accuracy_std": 0.01,
            "auc": 0.99,
            "eer": 0.02,
            "val": 0.9,
            "val_std": 0.01,
            "far": 0.001,
        },
        flipped_decisions=None,
        dataset=NS(pairs=6000),
    )
    md = "\n".join(
        report._row_markdown(
            NS(
                backend="onnxruntime",
                precision="fp32",
                verdict=Verdict.FAIL,
                accuracy=acc,
                conformance=conf,
                perf=None,
                fault=None,
            )
        )
    )
    assert f"**First divergence**: DIVERGED: {target} (Conv) is the first layer" in md
    assert f"| **{target}** (first) | Conv |" in md
