"""The LFW accuracy gate, run through the plugin's fixtures as a user's test would: the reference on the
full protocol and every engine against it, thresholds from the baselines (never from test code)."""

import json

import numpy as np
import pytest

from harness import cli
from harness.core.verdicts import Verdict
from harness.store.baselines import ACCURACY_MARGIN, AUC_MARGIN, judge_accuracy


@pytest.mark.accuracy
def test_reference_fp32_meets_its_baseline(facenet_lfw, facenet_reference_model, facenet_store, tmp_path, capsys):
    gate = facenet_store.accuracy_gate(facenet_lfw.digest, "fp32")
    if gate is None:
        pytest.fail(f"no fp32 accuracy baseline for dataset digest {facenet_lfw.digest} in {facenet_store.describe()}")
    out = tmp_path / "accuracy.json"
    rc = cli.main(
        [
            "accuracy",
            "--onnx",
            str(facenet_reference_model.path),
            "--lfw-dir",
            str(facenet_lfw.root),
            "--pairs",
            str(facenet_lfw.protocol.path),
            "--boxes",
            str(facenet_lfw.boxes_path or ""),
            "--json",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert (report["dataset"]["pairs"], report["dataset"]["images"]) == (
        len(facenet_lfw.protocol.pairs),
        len(facenet_lfw.keys),
    )
    assert report["dataset"]["digest"] == facenet_lfw.digest
    assert report["model"]["sha256"] == facenet_reference_model.sha256
    assert (
        report["reference"] is None and report["flipped_decisions"] is None
    )  # the reference is not compared with itself
    assert report["flipped_pairs"] is None and report["flipped_png"] is None
    assert report["metrics"]["accuracy_mean"] >= gate["accuracy_min"], printed
    assert report["metrics"]["auc"] >= gate["auc_min"], printed
    assert report["verdict"] == "PASS" and rc == 0, printed
    assert "VERDICT: PASS" in printed


@pytest.mark.accuracy
@pytest.mark.facenet_select(exclude_reference=True)
def test_engine_accuracy(facenet_engine, facenet_gate, facenet_store, facenet_lfw):
    result = facenet_gate.accuracy(facenet_engine)
    print(result)
    assert result, result
    gate = facenet_store.accuracy_gate(facenet_lfw.digest, facenet_engine.precision)
    assert result.metrics["accuracy_mean"] >= gate["accuracy_min"] and result.metrics["auc"] >= gate["auc_min"]
    assert abs(result.accuracy_delta) <= facenet_store.accuracy_delta(facenet_engine.precision)
    # flipped decisions: recomputed here from the two embedding sets, not taken from the result
    from harness.checks import accuracy

    emb, _ = facenet_gate.embeddings(facenet_engine)
    ref, _ = facenet_gate.embeddings(facenet_gate.reference_engine)
    d_eng = accuracy.pair_distances(emb, facenet_lfw)
    d_ref = accuracy.pair_distances(ref, facenet_lfw)
    # both judged at the engine's threshold of the pair's fold (pairs.txt's fold)
    thr = np.array([result.evaluation.fold_thresholds[p.fold] for p in facenet_lfw.protocol.pairs])
    flipped = np.flatnonzero((d_eng < thr) != (d_ref < thr))
    assert result.flipped_decisions == len(result.flipped_pairs) == flipped.size
    assert sorted(f.pair for f in result.flipped_pairs) == flipped.tolist()
    # a decision can only flip for a pair whose distance moved across the threshold
    moved = np.abs(d_eng - d_ref) >= np.abs(d_ref - thr)
    assert result.flipped_decisions <= int(np.count_nonzero(moved))


def test_judge_holds_engines_to_the_reference_delta():
    gate = {"accuracy_min": 0.97, "auc_min": 0.99}
    ref = {"accuracy_mean": 0.987}
    ok, _ = judge_accuracy({"accuracy_mean": 0.985, "auc": 0.998}, gate, ref, 0.003)
    assert ok is Verdict.PASS
    bad, checks = judge_accuracy({"accuracy_mean": 0.983, "auc": 0.998}, gate, ref, 0.003)
    assert bad is Verdict.FAIL and checks[-1].metric == "accuracy_delta_vs_reference" and not checks[-1].passed
    too_good, _ = judge_accuracy({"accuracy_mean": 0.991, "auc": 0.999}, gate, ref, 0.003)
    assert too_good is Verdict.FAIL  # far better than the reference means something else was measured


def test_judge_fails_below_either_gate():
    gate = {"accuracy_min": 0.98, "auc_min": 0.997}
    assert judge_accuracy({"accuracy_mean": 0.985, "auc": 0.998}, gate)[0] is Verdict.PASS
    low_acc, checks = judge_accuracy({"accuracy_mean": 0.979, "auc": 0.998}, gate)
    assert low_acc is Verdict.FAIL and [c.metric for c in checks if not c.passed] == ["accuracy_mean"]
    assert judge_accuracy({"accuracy_mean": 0.985, "auc": 0.996}, gate)[0] is Verdict.FAIL
    assert judge_accuracy({"accuracy_mean": 0.985, "auc": 0.998}, None) == (Verdict.NO_BASELINE, [])


def test_a_missing_gate_never_hides_a_failing_delta():
    """No accuracy gate for this data, but the reference was measured in the same run: an engine 8 points
    below it FAILs (it was NO BASELINE); one within the delta stays NO BASELINE, the check shown."""
    ref = {"accuracy_mean": 0.987}
    far_below, checks = judge_accuracy({"accuracy_mean": 0.907, "auc": 0.95}, None, ref, 0.003)
    assert far_below is Verdict.FAIL and [c.metric for c in checks] == ["accuracy_delta_vs_reference"]
    close, checks = judge_accuracy({"accuracy_mean": 0.986, "auc": 0.998}, None, ref, 0.003)
    assert close is Verdict.NO_BASELINE and checks[0].passed


def test_shared_dataset_has_gates_derived_from_its_reference(facenet_lfw, facenet_store):
    entry = facenet_store.accuracy_entry(facenet_lfw.digest)
    assert entry, "the ../shared LFW copy must have an accuracy baseline"
    ref, fp32 = entry["reference"], entry["gates"]["fp32"]
    assert ref["accuracy_mean"] - fp32["accuracy_min"] == pytest.approx(ACCURACY_MARGIN, abs=1e-5)
    assert ref["auc"] - fp32["auc_min"] == pytest.approx(AUC_MARGIN, abs=1e-5)


def small_pairs(tmp_path, lfw, folds=2, per_side=30):
    """A pairs.txt with the first ``per_side`` same and different pairs of the first ``folds`` LFW folds."""
    lines = lfw.protocol.path.read_text().splitlines()
    n = int(lines[0].split()[1])
    body = []
    for k in range(folds):
        start = 1 + 2 * n * k
        body += lines[start : start + per_side] + lines[start + n : start + n + per_side]
    path = tmp_path / "pairs-small.txt"
    path.write_text(f"{folds} {per_side}\n" + "\n".join(body) + "\n")
    return path


def scaled_conv_onnx(src, dest, factor=1.5):
    """A copy of ``src`` with one convolution's weights in the middle of the network scaled by ``factor``."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(src))
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    target = convs[len(convs) // 2]
    for init in m.graph.initializer:
        if init.name == target.input[1]:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * factor, init.name))
    onnx.save(m, str(dest))
    return target.name


def test_wrong_onnx_is_judged_against_the_pinned_reference(facenet_lfw, facenet_reference_model, tmp_path, capsys):
    """--onnx replaces the engine's model only: a damaged model is compared with the pinned reference,
    not with itself, for the accuracy delta and flips as for conformance."""
    wrong = tmp_path / "wrong.onnx"
    scaled_conv_onnx(facenet_reference_model.path, wrong, factor=-1.0)  # a sign flip: clearly broken
    data = [
        "--lfw-dir",
        str(facenet_lfw.root),
        "--pairs",
        str(small_pairs(tmp_path, facenet_lfw)),
        "--boxes",
        str(facenet_lfw.boxes_path or ""),
        "--baselines",
        str(tmp_path / "mine"),
    ]
    cli.main(["accuracy", "--onnx", str(wrong), "--json", str(tmp_path / "wrong.json")] + data)
    cli.main(["accuracy", "--json", str(tmp_path / "pinned.json")] + data)
    capsys.readouterr()
    got, pinned = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("wrong", "pinned"))
    assert got["reference_model"]["sha256"] == facenet_reference_model.sha256 == pinned["model"]["sha256"]
    assert got["model"]["sha256"] != facenet_reference_model.sha256
    assert got["reference"]["model_sha256"] == facenet_reference_model.sha256
    assert got["reference"]["auc"] == pinned["metrics"]["auc"]  # the reference is the pinned model's run
    assert got["metrics"]["accuracy_mean"] != pinned["metrics"]["accuracy_mean"]  # its own figures
    assert got["flipped_decisions"] == len(got["flipped_pairs"]) > 0
    assert got["accuracy_delta"] == pytest.approx(got["metrics"]["accuracy_mean"] - pinned["metrics"]["accuracy_mean"])
    # this subset has no gate, but the delta vs the pinned reference measured in the same run fails
    assert got["verdict"] == "FAIL" and got["checks"][0]["metric"] == "accuracy_delta_vs_reference"

    out = tmp_path / "conf.json"
    rc = cli.main(["conformance", "--onnx", str(wrong), "--json", str(out), "--probe-size", "32"] + data)
    report = json.loads(out.read_text())
    assert rc == 1 and report["verdict"] == "FAIL", capsys.readouterr().out
    assert report["reference_model"]["sha256"] == facenet_reference_model.sha256
    assert report["stats"]["min_cosine"] < 0.999
