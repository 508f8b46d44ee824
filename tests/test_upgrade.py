"""The upgrade report: two gate runs of different recorded stacks, compared (``compare-runs OLD NEW``).

The "new" run is onnxruntime that reports another version and computes slightly different embeddings
(what an SDK upgrade that changed a kernel does). The report must say the version changed, that the
embeddings moved (not bit-identical, cosine below 1), count the decisions that changed, give the accuracy
delta with an interval and the throughput ratio with its interval. A run compared with itself is
bit-identical with nothing changed; an archive that is missing or of other data is a clear error.
"""

import json

import numpy as np
import pytest

from harness import cli
from harness.core.verdicts import Verdict
from harness.engines.onnxruntime import OnnxRuntimeEngine
from harness.store import runs
from tests import test_data


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return test_data.make_prealigned(tmp_path_factory.mktemp("tiny"))


def gate(tiny, model, cache_dir, out):
    quick = ("--perf-cases", "compute-b8", "--warmup", "0.2", "--min-duration", "1", "--isolation", "none")
    rc = cli.main(test_data.tiny_gate_args(tiny, model, cache_dir, out, "onnxruntime", "fp32", *quick))
    assert rc in (cli.EXIT_PASS, cli.EXIT_FAIL, cli.EXIT_NO_BASELINE, cli.EXIT_INCONCLUSIVE)
    return out


def test_the_upgrade_report_says_what_changed(tiny, facenet_reference_model, tmp_path, monkeypatch, capsys):
    cache_dir = tmp_path / "cache"  # its own: the "new" engine's embeddings must not come from the old's cache
    old = gate(tiny, facenet_reference_model, cache_dir, tmp_path / "old")
    manifest = json.loads((old / "run" / "run.json").read_text())
    assert manifest["complete"] and manifest["rows"][0]["embeddings"]["file"] == "onnxruntime-fp32.npy"

    describe, run = OnnxRuntimeEngine.describe, OnnxRuntimeEngine._run
    monkeypatch.setattr(OnnxRuntimeEngine, "describe", lambda self: {**describe(self), "version": "9.9.9"})

    def changed_kernel(self, batch):
        out = run(self, batch)
        noise = np.random.default_rng(len(batch)).standard_normal(out.shape).astype(np.float32)
        return out + 0.02 * noise

    monkeypatch.setattr(OnnxRuntimeEngine, "_run", changed_kernel)
    new = gate(tiny, facenet_reference_model, cache_dir, tmp_path / "new")
    monkeypatch.undo()

    capsys.readouterr()
    rc = cli.main(
        [
            "compare-runs",
            str(old),
            str(new),
            "--lfw-dir",
            str(tiny[0]),
            "--pairs",
            str(tiny[1]),
            "--boxes",
            "",
            "--out",
            str(tmp_path / "up"),
        ]
    )
    printed = capsys.readouterr().out
    doc = json.loads((tmp_path / "up" / "upgrade.json").read_text())
    assert rc == Verdict(doc["verdict"]).exit_code
    (row,) = doc["rows"]
    assert row["key"] == "onnxruntime fp32"
    assert any(c.startswith("version ") and c.endswith(" -> 9.9.9") for c in row["software_changes"]), row
    assert row["identical"] is False and 0.9 < row["min_cosine"] < 0.9999 and row["mean_cosine"] < 1
    assert row["pairs"] == 4 and 0 <= row["decisions_changed"] <= 4
    assert row["now_right"] + row["now_wrong"] == row["decisions_changed"]
    lo, hi = row["accuracy_delta_ci"]
    assert lo <= row["accuracy_delta"] <= hi
    (tput,) = row["throughput"]
    assert tput["case"] == "compute-b8" and tput["same_device"] and tput["ci"][0] <= tput["ratio"] <= tput["ci"][1]
    assert "-> 9.9.9" in printed and "| onnxruntime fp32 |" in printed
    assert (tmp_path / "up" / "upgrade.md").read_text() == printed.rstrip("\n") + "\n"

    same = cli.main(
        ["compare-runs", str(old), str(old), "--lfw-dir", str(tiny[0]), "--pairs", str(tiny[1]), "--boxes", ""]
    )
    text = capsys.readouterr().out
    assert same == Verdict(json.loads((old / "gate.json").read_text())["verdict"]).exit_code
    assert "(bit-identical)" in text and "| 0 of 4 (0 / 0) |" in text and "software: nothing changed" in text


def test_a_missing_or_foreign_archive_is_a_clear_error(tiny, facenet_reference_model, tmp_path, capsys):
    old = gate(tiny, facenet_reference_model, tmp_path / "cache", tmp_path / "old")
    assert cli.main(["compare-runs", str(tmp_path / "nothing"), str(old)]) == cli.EXIT_USAGE
    assert "run.json: no run archive here" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    images, pairs = test_data.make_prealigned(other, names=("A", "B", "C", "E"))
    doc = json.loads((old / "run" / "run.json").read_text())
    doc["dataset"]["digest"] = "0" * 64
    foreign = tmp_path / "foreign" / "run"
    foreign.mkdir(parents=True)
    (foreign / "run.json").write_text(json.dumps(doc))
    (foreign / "onnxruntime-fp32.npy").write_bytes((old / "run" / "onnxruntime-fp32.npy").read_bytes())
    assert cli.main(["compare-runs", str(foreign.parent), str(old)]) == cli.EXIT_USAGE
    assert "ran on different data" in capsys.readouterr().err
    (foreign / "onnxruntime-fp32.npy").write_bytes(b"damaged")
    with pytest.raises(Exception, match="not the array its run.json names"):
        runs.load(foreign.parent)
