"""The gate report: Markdown, JSON, JUnit XML and the ROC PNG, end to end on a small real dataset."""

import json
import shutil
from types import SimpleNamespace as NS
from xml.etree import ElementTree as ET

import pytest

from harness import cli, report
from harness.core.verdicts import Check, Verdict
from harness.store.baselines import TOLERANCES_FILE, BaselineStore, shipped_folder

from .test_data import make_prealigned

pytestmark = pytest.mark.usefixtures("no_lfw_env")  # these tests name their data explicitly


def test_gate_writes_every_report(facenet_reference_model, tmp_path, capsys):
    images, pairs = make_prealigned(tmp_path)
    out = tmp_path / "reports"
    base = tmp_path / "baselines"  # tolerances only: no accuracy, perf or golden baselines apply
    base.mkdir()
    shutil.copy(shipped_folder() / TOLERANCES_FILE, base)
    rc = cli.main(
        [
            "gate",
            "--baselines",
            str(base),
            "--reference-onnx",
            str(facenet_reference_model.path),
            "--onnx",
            str(facenet_reference_model.path),
            "--lfw-dir",
            str(images),
            "--pairs",
            str(pairs),
            "--precisions",
            "fp32",
            "--perf-cases",
            "compute-b1",
            "--probe-size",
            "4",
            "--cache",
            str(tmp_path / "cache"),
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 3  # no accuracy baseline for this little dataset: not a pass
    md = (out / "gate.md").read_text()
    assert md.startswith("# FaceNet gate: NO BASELINE") and "Environment: " in md.splitlines()[2]
    assert "## onnxruntime fp32: NO BASELINE" in md and "| min / mean cosine |" in md
    assert (
        "| perf case | images/s | CV | baseline (stack, recorded) | ratio [95% CI] |" in md and "| compute-b1 |" in md
    )
    assert printed.rstrip().endswith(f"ROC curves: {out / 'roc.png'}")
    doc = json.loads((out / "gate.json").read_text())
    assert doc["verdict"] == "NO BASELINE" and doc["rows"][0]["accuracy"]["dataset"]["pairs"] == 4
    suite = ET.fromstring((out / "gate.xml").read_text())
    names = [c.get("name") for c in suite.iter("testcase")]
    assert names == ["accuracy", "conformance", "perf.compute-b1"]
    # the user's folder is read over the shipped baselines: the perf row is judged by whatever applies there
    perf = doc["rows"][0]["perf"]
    expected, _ = BaselineStore(base).perf_baseline(perf["identity"], "compute-b1")
    got = perf["rows"][0]["baseline"]
    assert (got is None) == (expected is None) and (got is None or got["fps"] == expected["fps"])
    perf_not_judged = perf["rows"][0]["verdict"] in ("NO BASELINE", "INCONCLUSIVE")
    assert (expected is None) <= (perf["rows"][0]["verdict"] == "NO BASELINE")
    assert suite.get("skipped") == str(1 + perf_not_judged)  # no accuracy baseline (and maybe no perf verdict)
    png = (out / "roc.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_junit_marks_failures_with_the_deciding_threshold():
    acc_check = Check.at_least("accuracy_mean", 0.97, 0.98)
    fps_check = Check.at_least("fps", 9000.0, 13560.6, why="0.631x of 14274.3, -5% allowed")
    row = NS(
        fault=None,
        backend="ixrt",
        precision="int8",
        verdict=Verdict.FAIL,
        accuracy=NS(verdict=Verdict.FAIL, checks=[acc_check]),
        conformance=NS(verdict=Verdict.PASS, failures=[]),
        perf=NS(
            rows=[
                NS(case="compute-b64", fps=9000.0, verdict=fps_check.verdict, why=fps_check.why),
                NS(case="compute-b1", fps=10.0, verdict=Verdict.INCONCLUSIVE, why="cv 30%"),
            ]
        ),
    )
    suite = ET.fromstring(report.gate_junit(NS(rows=[row], complete=True, status="")))
    assert suite.get("failures") == "2" and suite.get("skipped") == "1" and suite.get("tests") == "4"
    failure = suite.find("testcase[@name='accuracy']/failure")
    assert "accuracy_mean 0.97000 (>= 0.98000): FAIL" in failure.get("message")
    assert "0.631x of 14274.3" in suite.find("testcase[@name='perf.compute-b64']/failure").get("message")
    assert "INCONCLUSIVE: " in suite.find("testcase[@name='perf.compute-b1']/skipped").get("message")


def test_failed_and_inconclusive_parts_are_counted_and_shown():
    """Results are falsy unless they PASS: the gate and the report must test for presence, not truth."""
    from harness.gate import row_verdict

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
    conf = NS(
        verdict=Verdict.FAIL,
        failures=["min cosine 0.9 < 0.999"],
        stats={"min_cosine": 0.9, "mean_cosine": 0.99},
        tolerance=NS(min_cosine=0.999, mean_cosine=0.9999),
        first_divergence=None,
    )
    perf = NS(
        verdict=Verdict.INCONCLUSIVE,
        rows=[
            NS(
                case="compute-b64",
                fps=80.0,
                cv=0.04,
                baseline=None,
                ratio=None,
                ratio_ci=None,
                normalised_ratio=None,
                normalised_ci=None,
                verdict=Verdict.INCONCLUSIVE,
                why="unstable measurement: load",
                breakdown=None,
                stage_deltas=[],
            )
        ],
    )
    assert row_verdict(acc, conf, perf) is Verdict.FAIL  # a failed conformance fails the row
    assert row_verdict(acc, None, perf) is Verdict.PASS  # an inconclusive perf row does not fail the gate
    row = NS(
        backend="onnxruntime",
        precision="int8",
        verdict=Verdict.FAIL,
        accuracy=acc,
        conformance=conf,
        perf=perf,
        fault=None,
    )
    md = "\n".join(report._row_markdown(row))
    assert "| min / mean cosine | 0.900000 / 0.990000 | >= 0.999 / 0.9999 | FAIL |" in md
    assert "| compute-b64 | 80.0 | 4.0% | none | - | - | INCONCLUSIVE | unstable measurement: load |" in md
    suite = ET.fromstring(report.gate_junit(NS(rows=[row], complete=True, status="")))
    assert suite.get("failures") == "1" and suite.get("skipped") == "1"


def test_results_are_falsy_unless_they_pass():
    from harness import gate

    fail = gate.PerfResult({}, {"backend": "x", "precision": "fp32"}, {}, None, [], Verdict.FAIL, {})
    inconclusive = gate.PerfResult({}, {"backend": "x", "precision": "fp32"}, {}, None, [], Verdict.INCONCLUSIVE, {})
    ok = gate.PerfResult({}, {"backend": "x", "precision": "fp32"}, {}, None, [], Verdict.PASS, {})
    assert not fail and not inconclusive and ok
    assert gate.row_verdict(NS(verdict=Verdict.PASS), None, fail) is Verdict.FAIL


def _small_gate_args(tmp_path, facenet_reference_model, out, precisions="fp32,fp16"):
    images, pairs = make_prealigned(tmp_path)
    base = tmp_path / "baselines"
    base.mkdir(exist_ok=True)
    shutil.copy(shipped_folder() / TOLERANCES_FILE, base)
    return [
        "gate",
        "--baselines", str(base),
        "--reference-onnx", str(facenet_reference_model.path),
        "--onnx", str(facenet_reference_model.path),
        "--lfw-dir", str(images),
        "--pairs", str(pairs),
        "--precisions", precisions,
        "--perf-cases", "",
        "--probe-size", "4",
        "--cache", str(tmp_path / "cache"),
        "--out", str(out),
    ]  # fmt: skip


def test_a_gate_that_stops_leaves_an_incomplete_report_not_a_stale_pass(
    facenet_reference_model, tmp_path, capsys, monkeypatch
):
    """The previous run's PASS report is gone the moment a run starts; a run that stops on its second row
    (here the harness itself fails) leaves a report that says it is incomplete, after which row and why,
    is never PASS, and exits with the internal-error code, not FAIL's 1."""
    from harness.gate import Gate

    out = tmp_path / "reports"
    out.mkdir()
    (out / "gate.json").write_text(json.dumps({"verdict": "PASS", "complete": True}))
    (out / "flipped-onnxruntime-int8.png").write_bytes(b"old")
    real = Gate.conformance

    def conformance(self, engine, *a, **k):
        if engine.precision == "fp16":
            raise RuntimeError("a bug in the harness")
        return real(self, engine, *a, **k)

    monkeypatch.setattr(Gate, "conformance", conformance)
    rc = cli.main(_small_gate_args(tmp_path, facenet_reference_model, out))
    err = capsys.readouterr().err
    assert rc == cli.EXIT_INTERNAL == 70 and "internal error" in err and "RuntimeError: a bug in the harness" in err
    doc = json.loads((out / "gate.json").read_text())
    assert doc["complete"] is False and doc["verdict"] != "PASS"
    assert doc["status"] == "stopped after 1 of 2 rows: RuntimeError: a bug in the harness"
    assert [r["precision"] for r in doc["rows"]] == ["fp32"]
    assert "(INCOMPLETE)" in (out / "gate.md").read_text().splitlines()[0]
    junit = ET.parse(out / "gate.xml").getroot()
    assert int(junit.get("errors")) + int(junit.get("failures")) >= 1  # CI never reads it as green
    assert not (out / "flipped-onnxruntime-int8.png").exists()


def test_an_unwritable_report_target_is_a_user_error_before_the_run(facenet_reference_model, tmp_path, capsys):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    rc = cli.main(_small_gate_args(tmp_path, facenet_reference_model, blocked / "reports"))
    assert rc == 2 and "cannot write the gate report there" in capsys.readouterr().err
    rc = cli.main([*_small_gate_args(tmp_path, facenet_reference_model, tmp_path / "r"), "--json", str(tmp_path)])
    assert rc == 2 and "is a folder; --json takes a file name" in capsys.readouterr().err
    assert not (tmp_path / "r" / "gate.json").exists()  # refused before anything ran
