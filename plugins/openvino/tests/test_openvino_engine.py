"""The OpenVINO plug-in as the harness sees it: installed by its own distribution, listed with its
precisions, its precision read back from the compiled model (a hint the compiled model does not honour is
refused), gated by the CLI. Its accuracy, conformance, contract and perf are the generic tests'
(``facenet_engine`` is parametrised over every installed engine, openvino included)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from harness import cli, engines
from harness.core.errors import HarnessError

ov = pytest.importorskip("openvino", reason="the OpenVINO plug-in's tests need openvino (make install adds it)")


def cpu_capabilities() -> list[str]:
    return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def test_openvino_is_listed_with_its_precisions_and_where_they_run():
    proc = subprocess.run([sys.executable, "-m", "harness", "engines"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("openvino "))
    assert "fp32,bf16,fp16,int8" in lines[start] and " yes " in lines[start]
    assert "facenet-harness-openvino 0.1.0" in lines[start]
    block = "\n".join(lines[start + 1 : start + 12])
    for precision, capability in (("bf16", "BF16"), ("fp16", "FP16")):
        said = f"{precision} not here: this CPU does not execute {precision} natively" in block
        assert said == (capability not in cpu_capabilities()), block


def test_fp32_is_forced_and_read_back(facenet_reference_model, facenet_gate, facenet_lfw):
    with engines.launch("openvino", facenet_reference_model, "fp32", facenet_gate.engine_context()) as engine:
        d = engine.describe()
        assert d["execution_precision"] == "f32" and set(d["convolutions"]) == {"f32"}
        assert d["version"] == ov.get_version() and d["device"]
        out = engine.run(facenet_lfw.batch([0, 1, 2]))
    assert out.shape == (3, 512) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-4)


def test_a_precision_the_compiled_model_does_not_honour_is_refused(facenet_reference_model, facenet_gate):
    """fp32 asked, bf16 (or f16) forced through the compile properties: where this CPU executes that, the
    compiled model runs it and the engine refuses to call it fp32; where it cannot, OpenVINO runs f32 and
    the engine says so."""
    ctx = facenet_gate.engine_context()
    forced = next((h for h, c in (("bf16", "BF16"), ("f16", "FP16")) if c in cpu_capabilities()), None)
    if forced is None:
        with engines.launch(
            "openvino", facenet_reference_model, "fp32", ctx, {"config": "INFERENCE_PRECISION_HINT=bf16"}
        ) as engine:
            assert engine.describe()["convolutions"].keys() == {"f32"}  # honoured as f32: nothing mislabelled
        return
    with pytest.raises(HarnessError, match=rf"runs its convolutions at \{{'{forced}': \d+\}}.*not fp32; refused"):
        config = {"config": f"INFERENCE_PRECISION_HINT={forced}"}
        engines.launch("openvino", facenet_reference_model, "fp32", ctx, config)


def test_bad_compile_properties_are_a_user_error(facenet_reference_model, facenet_gate):
    with pytest.raises(HarnessError, match="expected KEY=VALUE"):
        engines.launch("openvino", facenet_reference_model, "fp32", facenet_gate.engine_context(), {"config": "oops"})


def test_the_gate_judges_openvino_fp32_and_int8(facenet_reference_model, facenet_gate, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(
        [
            "gate",
            "--backend",
            "openvino",
            "--precisions",
            "fp32,int8",
            "--out",
            str(out),
            "--perf-cases",
            "compute-b8",
            "--warmup",
            "0.5",
            "--min-duration",
            "2",
            "--cache",
            str(facenet_gate.cache_dir),
        ]
    )
    err = capsys.readouterr().err
    doc = json.loads((out / "gate.json").read_text())
    rows = {r["precision"]: r for r in doc["rows"]}
    assert doc["complete"] and set(rows) == {"fp32", "int8"}, err[-2000:]
    for precision, row in rows.items():
        assert row["fault"] is None, row["fault"]
        acc = row["accuracy"]
        assert acc["verdict"] == "PASS", (precision, acc["checks"])
        assert row["conformance"]["verdict"] == "PASS", (precision, row["conformance"]["stats"])
        assert row["perf"]["rows"][0]["fps"] > 0
    assert rows["int8"]["accuracy"]["engine"]["nncf"]
    assert rc in (cli.EXIT_PASS, cli.EXIT_NO_BASELINE, cli.EXIT_INCONCLUSIVE), err[-2000:]
