"""Content-addressed artifact cache: atomic writes, hash-verified reads, one builder at a time.

Every artifact (weights, ONNX exports, embeddings) lives under a key derived from the
content hashes of everything that produced it, so a change of model, data, SDK or library
version can never reuse a stale file.  Files are written to a temporary name and renamed,
so an interrupted run leaves no half-written artifact; a reader re-checks the recorded
sha256 and treats a mismatch as a miss.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from harness.core.errors import HarnessError

ENV_VAR = "FACENET_HARNESS_CACHE"


def cache_root(override: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``override``, else ``$FACENET_HARNESS_CACHE``, else ``~/.cache/facenet-harness``."""
    root = override or os.environ.get(ENV_VAR) or Path.home() / ".cache" / "facenet-harness"
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def key_of(**parts) -> str:
    """A stable hash of the named parts (JSON, sorted keys): the cache key of an artifact."""
    return sha256_bytes(json.dumps(parts, sort_keys=True, default=str).encode())


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it is fsynced and renamed onto ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide shared caches from other users
    try:
        yield tmp
        publish(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def publish(src: Path, dest: Path) -> None:
    """Move a finished file into place atomically (same file system), fsynced first."""
    with open(src, "rb") as f:
        os.fsync(f.fileno())
    os.replace(src, dest)


def atomic_write_bytes(dest: str | os.PathLike, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(dest: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(dest, text.encode())


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive inter-process lock on ``<path>.lock`` (so parallel workers build an artifact once)."""
    lock = Path(f"{path}.lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        f = open(lock, "a")  # closed by the with below
    except OSError as e:
        raise HarnessError(
            f"{lock.parent}: the cache folder is not writable ({e.strerror or e}) and this artifact is not in it "
            "yet; point FACENET_HARNESS_CACHE (or --cache) at a writable folder."
        ) from None
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def get_or_build(path: Path, build: Callable[[Path], dict | None], match: dict | None = None) -> tuple[dict, bool]:
    """The artifact at ``path`` and its record (``path`` with suffix .json), built at most once.

    Under the lock, a record whose ``sha256`` matches the file (and whose items include ``match``) is a
    hit; anything else (no file, truncated or corrupted file, another key) is rebuilt:
    ``build(tmp)`` writes the artifact to a temporary path and may return extra record items.
    Returns (record, hit).
    """
    record_path = path.with_suffix(".json")

    def hit() -> dict | None:
        try:
            record = json.loads(record_path.read_text())
            if all(record.get(k) == v for k, v in (match or {}).items()) and verified(path, record["sha256"]):
                return record
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # missing, torn or wrong-shaped
            pass
        return None

    found = hit()  # published whole and verified by content: no lock needed to use it (a read-only cache)
    if found is not None:
        return found, True
    with locked(path):
        found = hit()
        if found is not None:
            return found, True
        # every writer of this artifact holds this lock while it writes: a temp file here is a killed run's
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
        with atomic_path(path) as tmp:
            extra = build(tmp) or {}
        record = {**(match or {}), **extra, "sha256": sha256_file(path)}
        atomic_write_text(record_path, json.dumps(record, indent=2, default=str))
    return record, False


def verified(path: Path, expected_sha256: str) -> bool:
    """True when ``path`` exists and its content hashes to ``expected_sha256``."""
    return path.is_file() and sha256_file(path) == expected_sha256
