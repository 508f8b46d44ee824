"""This repository's own test settings.

The fixtures the tests use (``facenet_lfw``, ``facenet_engine``, ``facenet_gate``, ...) come from the
facenet-harness pytest plugin (``harness/pytest_plugin.py``), exactly as in an SDK team's repository.
Only what is particular to this checkout is here: the default dataset (``../shared`` beside the
checkout, as the Makefile sets it) and a few fixtures of the harness's own tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parent.parent / "shared"


def pytest_configure(config):
    if not os.environ.get("LFW_DIR") and not config.getoption("lfw_dir") and (SHARED / "lfw").is_dir():
        os.environ.update(
            LFW_DIR=str(SHARED / "lfw"),
            LFW_PAIRS=str(SHARED / "lfw_pairs.txt"),
            LFW_BOXES=str(SHARED / "lfw_mtcnn_boxes.tsv"),
        )


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    from harness.store import cache

    return cache.cache_root()


@pytest.fixture(scope="session")
def prepared(cache_dir, facenet_unavailable):
    """Both exports of the pinned model (dynamic batch and static batch 64)."""
    from harness import model
    from harness.core.errors import HarnessError

    try:
        return model.prepare(cache_dir)
    except HarnessError as e:
        facenet_unavailable(f"cannot prepare the FaceNet model: {e}")


@pytest.fixture
def no_lfw_env(monkeypatch):
    """The Makefile exports LFW_* for ../shared; tests that name their own data clear them."""
    for var in ("LFW_DIR", "LFW_PAIRS", "LFW_BOXES"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def lfw_faces(facenet_lfw):
    """16 real LFW crops spread over the protocol's images (uint8 HWC) and their keys."""
    import numpy as np

    idx = np.linspace(0, len(facenet_lfw.keys) - 1, 16).astype(int)
    return [facenet_lfw.keys[i] for i in idx], np.stack([facenet_lfw.load(i) for i in idx])
