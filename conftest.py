"""Shared fixtures: the LFW data, the prepared FaceNet model and the reference backend.

Tests that need data or PyTorch skip with the reason when those are absent, except under
``FACENET_HARNESS_STRICT=1`` (CI), where an absence is a failure: a gate must not go green by
skipping its checks.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import backends, cache, data, environment, model
from harness.data import Dataset
from harness.errors import HarnessError

ROOT = Path(__file__).resolve().parent
SHARED = ROOT.parent / "shared"
STRICT = os.environ.get("FACENET_HARNESS_STRICT") == "1"


def pytest_report_header(config):
    return [f"facenet-harness environment: {environment.one_line()}",
            f"facenet-harness cache: {cache.cache_root()}  strict: {STRICT}"]


def pytest_benchmark_update_machine_info(config, machine_info):
    """Add the device fingerprint to pytest-benchmark's machine info (saved runs and comparisons)."""
    machine_info["facenet_harness"] = environment.fingerprint()


def unavailable(reason: str):
    """Skip (developer machine) or fail (CI, FACENET_HARNESS_STRICT=1) for a missing prerequisite."""
    if STRICT:
        pytest.fail(f"{reason} (FACENET_HARNESS_STRICT=1 makes this a failure)", pytrace=False)
    pytest.skip(reason)


def engine_params(precisions=None, fixture=False):
    """pytest params for every known (backend, precision); those this machine cannot run are skipped
    with the reason (no SDK, no GPU), so the same suite is right here and where the SDK exists."""
    out = []
    for name, prec, ok, why in backends.catalogue():
        if precisions is not None and prec not in precisions:
            continue
        marks = [] if ok else [pytest.mark.skip(reason=f"{name} {prec}: {why}")]
        values = ((name, prec),) if fixture else (name, prec)  # a fixture param holds one value
        out.append(pytest.param(*values, marks=marks, id=f"{name}-{prec}"))
    return out


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    return cache.cache_root()


@pytest.fixture(scope="session")
def lfw() -> Dataset:
    images, pairs, boxes = data.locate(SHARED)
    if not images or not pairs:
        unavailable("no LFW data: set LFW_DIR/LFW_PAIRS/LFW_BOXES or put the shared data in ../shared")
    return Dataset(images, pairs, boxes)


@pytest.fixture(scope="session")
def prepared(cache_dir) -> model.PreparedModel:
    try:
        return model.prepare(cache_dir)
    except HarnessError as e:
        unavailable(f"cannot prepare the FaceNet model: {e}")


@pytest.fixture(scope="session")
def reference_model(prepared) -> model.ModelInfo:
    return model.inspect(prepared.dynamic)


@pytest.fixture(scope="session")
def reference_backend(reference_model) -> backends.Backend:
    return backends.create("onnxruntime", reference_model, "fp32")


@pytest.fixture(scope="session")
def engines(reference_model, lfw, cache_dir):
    """``engines(backend, precision[, model])``: each engine built once per session and shared by the tests."""
    made = {}

    def get(name, prec, info=None):
        info = info or reference_model
        key = (name, prec, info.path)
        if key not in made:
            made[key] = backends.create(name, info, prec, cache_dir=cache_dir, dataset=lfw)
        return made[key]

    return get


@pytest.fixture
def no_lfw_env(monkeypatch):
    """The Makefile exports LFW_* for ../shared; tests that name their own data clear them."""
    for var in ("LFW_DIR", "LFW_PAIRS", "LFW_BOXES"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def lfw_faces(lfw):
    """16 real LFW crops spread over the protocol's images (uint8 HWC) and their keys."""
    import numpy as np

    idx = np.linspace(0, len(lfw.keys) - 1, 16).astype(int)
    return [lfw.keys[i] for i in idx], np.stack([lfw.load(i) for i in idx])
