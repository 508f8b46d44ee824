"""The command line: clear errors with exit code 2, and a complete report on a small real dataset."""

import json
import subprocess
import sys

import numpy as np
import pytest

from harness import cli
from harness.checks import accuracy
from harness.engines import create as create_engine

from .test_data import make_prealigned

pytestmark = pytest.mark.usefixtures("no_lfw_env")  # these tests name their data explicitly


def test_missing_dataset_is_a_usage_error(no_lfw_env, facenet_reference_model, capsys):
    rc = cli.main(["accuracy", "--onnx", str(facenet_reference_model.path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "set LFW_DIR and LFW_PAIRS" in err and "Traceback" not in err


def test_bad_onnx_is_a_usage_error(tmp_path, capsys):
    junk = tmp_path / "model.onnx"
    junk.write_text("hello")
    images, pairs = make_prealigned(tmp_path)
    rc = cli.main(["accuracy", "--onnx", str(junk), "--lfw-dir", str(images), "--pairs", str(pairs)])
    assert rc == 2
    assert f"{junk}: not a readable ONNX model" in capsys.readouterr().err


def test_unknown_and_planned_backends(facenet_reference_model, tmp_path, capsys):
    images, pairs = make_prealigned(tmp_path)
    common = ["accuracy", "--onnx", str(facenet_reference_model.path), "--lfw-dir", str(images), "--pairs", str(pairs)]
    assert cli.main(common + ["--backend", "nope"]) == 2
    assert "unknown engine 'nope'" in capsys.readouterr().err
    assert cli.main(common + ["--precision", "int4"]) == 2
    assert "offers precisions fp32" in capsys.readouterr().err
    assert cli.main(common + ["--engine-option", "warp=9"]) == 2
    assert "engine 'onnxruntime' has no option warp; its options: calib_method" in capsys.readouterr().err
    assert cli.main(common + ["--engine-option", "threads=two"]) == 2
    assert "option threads='two' is not a valid int" in capsys.readouterr().err
    bench_common = ["bench"] + common[1:] + ["--cases", "compute-b1"]
    assert cli.main(bench_common + ["--min-rounds", "0", "--min-duration", "0"]) == 2
    assert "--min-rounds must be at least 3" in capsys.readouterr().err
    assert cli.main(["conformance"] + common[1:] + ["--probe-size", "-1"]) == 2
    assert "probe size must be positive" in capsys.readouterr().err
    assert cli.main(common + ["--backend", "tensorrt"]) == 2
    err = capsys.readouterr().err
    assert "engine 'tensorrt' is not available here" in err and "Traceback" not in err


def test_accuracy_report_on_a_dataset_without_baseline(facenet_reference_model, tmp_path, capsys):
    images, pairs = make_prealigned(tmp_path)
    out = tmp_path / "r.json"
    rc = cli.main(
        [
            "accuracy",
            "--onnx",
            str(facenet_reference_model.path),
            "--lfw-dir",
            str(images),
            "--pairs",
            str(pairs),
            "--json",
            str(out),
            "--cache",
            str(tmp_path / "cache"),
        ]
    )
    assert rc == 3  # no baseline for this data: not a pass
    report = json.loads(out.read_text())
    for field in ("accuracy_mean", "accuracy_std", "auc", "val", "val_std", "far", "eer", "threshold"):
        assert isinstance(report["metrics"][field], float), field
    assert (report["dataset"]["pairs"], report["dataset"]["images"]) == (4, 6)
    assert report["model"]["sha256"] == facenet_reference_model.sha256
    assert report["environment"]["onnxruntime"] and report["environment"]["cpu"]
    assert report["engine"]["backend"] == "onnxruntime" and report["engine"]["precision"] == "fp32"
    assert "VERDICT: NO BASELINE" in capsys.readouterr().out


def test_inspect_prints_pattern_tensors(facenet_reference_model, capsys):
    assert cli.main(["inspect", str(facenet_reference_model.path)]) == 0
    out = capsys.readouterr().out
    assert f"last_bn      {facenet_reference_model.last_bn}" in out


def test_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "harness", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "prepare" in proc.stdout and "accuracy" in proc.stdout


def test_embeddings_cache_detects_corruption(facenet_reference_model, tmp_path):
    from harness.lfw.data import Dataset

    images, pairs = make_prealigned(tmp_path)
    ds = Dataset(images, pairs)
    engine = create_engine("onnxruntime", facenet_reference_model, "fp32")
    first, meta = accuracy.cached_embed(engine, ds, tmp_path / "cache", batch_size=4)
    assert not meta["cached"]
    again, meta = accuracy.cached_embed(engine, ds, tmp_path / "cache", batch_size=4)
    assert meta["cached"] and np.array_equal(first, again)
    (stored,) = (tmp_path / "cache" / "embeddings").glob("*.npy")
    stored.write_bytes(stored.read_bytes()[:-100])  # a truncated write
    rebuilt, meta = accuracy.cached_embed(engine, ds, tmp_path / "cache", batch_size=4)
    assert not meta["cached"] and np.array_equal(first, rebuilt)
