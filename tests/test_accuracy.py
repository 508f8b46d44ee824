"""The LFW accuracy gate: the FP32 reference on the full protocol, judged by baselines/ (not test code)."""
import json

import pytest

from harness import baselines, cli

from conftest import engine_params


@pytest.mark.accuracy
def test_reference_fp32_meets_its_baseline(lfw, reference_model, tmp_path, capsys):
    gate = baselines.accuracy_gate(baselines.folder(), lfw.digest, "fp32")
    if gate is None:
        pytest.fail(f"no fp32 accuracy baseline for dataset digest {lfw.digest} in baselines/accuracy.json")
    out = tmp_path / "accuracy.json"
    rc = cli.main(["accuracy", "--onnx", str(reference_model.path), "--lfw-dir", str(lfw.root),
                   "--pairs", str(lfw.protocol.path), "--boxes", str(lfw.boxes_path or ""), "--json", str(out)])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert (report["pairs"], report["images"]) == (len(lfw.protocol.pairs), len(lfw.keys))
    assert report["dataset"]["digest"] == lfw.digest
    assert report["model"]["sha256"] == reference_model.sha256
    assert report["accuracy_mean"] >= gate["accuracy_min"], printed
    assert report["auc"] >= gate["auc_min"], printed
    assert report["gate"]["verdict"] == "PASS" and rc == 0, printed
    assert "VERDICT: PASS" in printed


@pytest.mark.accuracy
@pytest.mark.parametrize("backend, prec", [p for p in engine_params() if p.values != ("onnxruntime", "fp32")])
def test_engine_accuracy(backend, prec, lfw, reference_model, tmp_path, capsys):
    gate = baselines.accuracy_gate(baselines.folder(), lfw.digest, prec)
    max_delta = baselines.tolerances(baselines.folder())["accuracy_delta"][prec]
    assert gate is not None, f"no {prec} accuracy gate for dataset {lfw.digest} in baselines/accuracy.json"
    out = tmp_path / "accuracy.json"
    rc = cli.main(["accuracy", "--backend", backend, "--precision", prec, "--onnx", str(reference_model.path),
                   "--lfw-dir", str(lfw.root), "--pairs", str(lfw.protocol.path),
                   "--boxes", str(lfw.boxes_path or ""), "--json", str(out)])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    print(printed)
    assert report["engine"]["precision"] == prec
    assert report["accuracy_mean"] >= gate["accuracy_min"] and report["auc"] >= gate["auc_min"], printed
    assert abs(report["accuracy_delta"]) <= max_delta, printed  # within the stated delta of the FP32 reference
    assert 0 <= report["flipped_decisions"] <= report["pairs"]
    assert report["gate"]["verdict"] == "PASS" and rc == 0, printed


def test_judge_holds_engines_to_the_fp32_delta():
    gate = {"accuracy_min": 0.97, "auc_min": 0.99}
    ref = {"accuracy_mean": 0.987}
    ok = baselines.judge({"accuracy_mean": 0.985, "auc": 0.998}, gate, ref, 0.003)
    assert ok["verdict"] == "PASS"
    bad = baselines.judge({"accuracy_mean": 0.983, "auc": 0.998}, gate, ref, 0.003)
    assert bad["verdict"] == "FAIL" and bad["checks"][-1]["metric"] == "accuracy_delta_vs_fp32"
    too_good = baselines.judge({"accuracy_mean": 0.991, "auc": 0.999}, gate, ref, 0.003)
    assert too_good["verdict"] == "FAIL"  # far better than the reference means something else was measured


def test_judge_fails_below_either_gate():
    gate = {"accuracy_min": 0.98, "auc_min": 0.997}
    assert baselines.judge({"accuracy_mean": 0.985, "auc": 0.998}, gate)["verdict"] == "PASS"
    low_acc = baselines.judge({"accuracy_mean": 0.979, "auc": 0.998}, gate)
    assert low_acc["verdict"] == "FAIL"
    assert [c["metric"] for c in low_acc["checks"] if not c["pass"]] == ["accuracy_mean"]
    assert baselines.judge({"accuracy_mean": 0.985, "auc": 0.996}, gate)["verdict"] == "FAIL"
    assert baselines.judge({"accuracy_mean": 0.985, "auc": 0.998}, None)["verdict"] == "NO BASELINE"


def test_shared_dataset_has_gates_derived_from_its_reference(lfw):
    entry = baselines.load_accuracy(baselines.folder())["datasets"].get(lfw.digest)
    assert entry, "the ../shared LFW copy must have an accuracy baseline"
    ref, fp32 = entry["reference"], entry["gates"]["fp32"]
    assert ref["accuracy_mean"] - fp32["accuracy_min"] == pytest.approx(baselines.ACCURACY_MARGIN, abs=1e-5)
    assert ref["auc"] - fp32["auc_min"] == pytest.approx(baselines.AUC_MARGIN, abs=1e-5)
