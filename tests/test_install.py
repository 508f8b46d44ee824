"""The package as an SDK team installs it: built into a wheel, installed (not editable) into a fresh
virtual environment, used from a folder outside the repository with only the shipped baselines."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

USER_TEST = """
import pytest


@pytest.mark.accuracy
def test_lfw_accuracy(facenet_engine, facenet_gate):
    result = facenet_gate.accuracy(facenet_engine)
    assert result, result
    assert result.reference is not None  # compared with the FP32 reference on the same data
"""


def sh(args, **kw):
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900, **kw)
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory, prepared, facenet_lfw):
    """A fresh venv with the wheel and its test extra; the artifact cache is shared (the model is prepared)."""
    tmp = tmp_path_factory.mktemp("install")
    sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), str(ROOT)])
    (wheel,) = (tmp / "dist").glob("facenet_harness-*.whl")
    sh([sys.executable, "-m", "venv", str(tmp / "venv")])
    sh(
        [
            str(tmp / "venv" / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "-c",
            str(ROOT / "constraints.txt"),
            f"{wheel}[test]",
        ]
    )
    user = tmp / "user"
    user.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FACENET_HARNESS_BASELINES")}
    env.update(
        LFW_DIR=str(facenet_lfw.root),
        LFW_PAIRS=str(facenet_lfw.protocol.path),
        LFW_BOXES=str(facenet_lfw.boxes_path or ""),
    )
    return tmp / "venv" / "bin", user, env


def test_the_wheel_ships_every_layer():
    """Every folder of harness/ (a layer: README, "Layout") is listed in pyproject.toml's packages, so a
    non-editable install is never missing one (an editable checkout would hide that)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    tree = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "harness").rglob("__init__.py")}
    assert tree, "no packages found under harness/"
    assert listed - {"harness._baselines"} == tree


@pytest.mark.install
def test_installed_plugin_gates_from_a_user_folder(installed):
    bin_dir, user, env = installed
    (user / "test_mine.py").write_text(textwrap.dedent(USER_TEST))
    proc = sh(
        [
            str(bin_dir / "pytest"),
            "-p",
            "no:cacheprovider",
            "--facenet-backend",
            "onnxruntime",
            "--facenet-precision",
            "fp16",
            "-m",
            "accuracy",
        ],
        cwd=user,
        env=env,
    )
    assert "1 passed" in proc.stdout
    assert "site-packages/harness/_baselines" in proc.stdout  # the shipped baselines, not the repository's


@pytest.mark.install
def test_installed_cli_gives_the_same_verdicts(installed):
    bin_dir, user, env = installed
    proc = subprocess.run(
        [str(bin_dir / "facenet-harness"), "gate", "--perf-cases", "", "--out", "reports"],
        cwd=user,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    doc = json.loads((user / "reports" / "gate.json").read_text())
    assert proc.returncode == 0 and doc["verdict"] == "PASS", proc.stdout[-3000:] + proc.stderr[-2000:]
    assert [(r["precision"], r["verdict"]) for r in doc["rows"]] == [
        ("fp32", "PASS"),
        ("fp16", "PASS"),
        ("int8", "PASS"),
    ]
    # saving a baseline needs a user folder: the installed package's own files are read-only
    proc = subprocess.run(
        [str(bin_dir / "facenet-harness"), "golden", "--save"],
        cwd=user,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 2 and "read-only" in proc.stderr and "--baselines DIR" in proc.stderr
    proc = sh(
        [str(bin_dir / "facenet-harness"), "golden", "--save", "--baselines", str(user / "mine")], cwd=user, env=env
    )
    assert list((user / "mine" / "golden").glob("probe-*.npy"))
