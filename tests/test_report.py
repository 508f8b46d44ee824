"""The gate report: Markdown, JSON, JUnit XML and the ROC PNG, end to end on a small real dataset."""
import json
import shutil
from xml.etree import ElementTree as ET

import pytest

from harness import baselines, cli, report

from .test_data import make_prealigned


pytestmark = pytest.mark.usefixtures("no_lfw_env")  # these tests name their data explicitly


def test_gate_writes_every_report(reference_model, tmp_path, capsys):
    images, pairs = make_prealigned(tmp_path)
    out = tmp_path / "reports"
    base = tmp_path / "baselines"  # tolerances only: no accuracy, perf or golden baselines apply
    base.mkdir()
    shutil.copy(baselines.folder() / baselines.TOLERANCES_FILE, base)
    rc = cli.main(["gate", "--baselines", str(base), "--onnx", str(reference_model.path), "--lfw-dir", str(images), "--pairs", str(pairs),
                   "--precisions", "fp32", "--perf-cases", "compute-b1", "--probe-size", "4",
                   "--cache", str(tmp_path / "cache"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 3  # no accuracy baseline for this little dataset: not a pass
    md = (out / "gate.md").read_text()
    assert md.startswith("# FaceNet gate: NO BASELINE") and "Environment: " in md.splitlines()[2]
    assert "## onnxruntime fp32: NO BASELINE" in md and "| min / mean cosine |" in md
    assert "| FPS compute-b1 |" in md and "no baseline for this machine | NO BASELINE |" in md
    assert printed.rstrip().endswith(f"ROC curves: {out / 'roc.png'}")
    doc = json.loads((out / "gate.json").read_text())
    assert doc["verdict"] == "NO BASELINE" and doc["rows"][0]["accuracy"]["pairs"] == 4
    suite = ET.fromstring((out / "gate.xml").read_text())
    names = [c.get("name") for c in suite.iter("testcase")]
    assert names == ["accuracy", "conformance", "perf.compute-b1"]
    assert suite.get("skipped") == "2" and suite.get("failures") == "0"  # no accuracy and no perf baseline
    png = (out / "roc.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_junit_marks_failures_with_the_deciding_threshold():
    row = {"backend": "ixrt", "precision": "int8", "verdict": "FAIL",
           "accuracy": {"gate": {"verdict": "FAIL", "checks": [
               {"metric": "accuracy_mean", "value": 0.97, "min": 0.98, "pass": False}]}},
           "conformance": {"gate": {"verdict": "PASS"}, "conformance": {"failures": []}},
           "perf": {"bench": [{"case": "compute-b64", "fps": 9000.0,
                               "gate": {"pass": False, "min": 13560.6, "why": None}}]}}
    suite = ET.fromstring(report.gate_junit({"rows": [row]}))
    assert suite.get("failures") == "2"
    failure = suite.find("testcase[@name='accuracy']/failure")
    assert "accuracy_mean 0.9700 >= 0.9800: FAIL" in failure.get("message")
    assert "floor 13560.6" in suite.find("testcase[@name='perf.compute-b64']/failure").get("message")
