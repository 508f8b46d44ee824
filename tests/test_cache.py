"""The artifact cache: whole files or nothing, content keys, one builder at a time."""

import multiprocessing
import os
import time

import pytest

from harness.store import cache


def test_failed_write_leaves_nothing(tmp_path):
    dest = tmp_path / "a" / "artifact.bin"
    with pytest.raises(RuntimeError):
        with cache.atomic_path(dest) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_write_replaces_whole_file(tmp_path):
    dest = tmp_path / "x.txt"
    cache.atomic_write_text(dest, "old")
    cache.atomic_write_text(dest, "new")
    assert dest.read_text() == "new" and os.stat(dest).st_mode & 0o044 == 0o044
    assert cache.verified(dest, cache.sha256_bytes(b"new"))
    assert not cache.verified(dest, cache.sha256_bytes(b"old"))


def test_key_depends_on_every_part():
    base = cache.key_of(model="a", dataset="b", engine={"version": "1"})
    assert base == cache.key_of(dataset="b", model="a", engine={"version": "1"})
    assert base != cache.key_of(model="a", dataset="b", engine={"version": "2"})


def _build_once(target, log):
    with cache.locked(target):
        if not os.path.exists(target):
            with open(log, "a") as f:
                f.write("built\n")
            time.sleep(0.2)
            cache.atomic_write_text(target, "artifact")


def test_concurrent_builders_build_once(tmp_path):
    target, log = str(tmp_path / "artifact"), str(tmp_path / "log")
    procs = [multiprocessing.get_context("fork").Process(target=_build_once, args=(target, log)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0] * 4
    assert open(log).read() == "built\n"


def test_cache_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path / "c"))
    assert cache.cache_root() == tmp_path / "c" and (tmp_path / "c").is_dir()


def test_the_embeddings_key_has_everything_that_changes_the_embeddings(monkeypatch):
    """OpenCV's version (it decodes and resizes), the CPU's ISA identity for CPU engines (a shared cache
    must not hand one CPU's INT8 embeddings to another), and every resolved setting, also one the
    engine's describe() leaves out."""
    import types

    import cv2

    from harness.checks import accuracy
    from harness.store import environment

    def engine(**settings):
        return types.SimpleNamespace(
            model=types.SimpleNamespace(sha256="m"),
            describe=lambda: {"backend": "plug-in", "precision": "int8"},
            settings=settings,
            device_kind="cpu",
        )

    ds = types.SimpleNamespace(digest="d")
    base = accuracy.embeddings_key(engine(threads=2), ds)
    assert accuracy.embeddings_key(types.SimpleNamespace(**vars(engine(threads=2))), ds) == base
    other_class = type("Subclass", (types.SimpleNamespace,), {})(**vars(engine(threads=2)))
    assert accuracy.embeddings_key(other_class, ds) != base  # same description, another implementation
    assert accuracy.embeddings_key(engine(threads=2), ds) == base
    assert accuracy.embeddings_key(engine(threads=2, int8_format="qop"), ds) != base
    monkeypatch.setattr(cv2, "__version__", "0.0.1")
    assert accuracy.embeddings_key(engine(threads=2), ds) != base
    monkeypatch.undo()
    here = environment.cpu_identity()
    monkeypatch.setattr(environment, "cpu_identity", lambda: {**here, "isa": ["avx2"]})
    assert accuracy.embeddings_key(engine(threads=2), ds) != base
    monkeypatch.setattr(environment, "cpu_identity", lambda: {**here, "cores": 64})  # speed, not results
    assert accuracy.embeddings_key(engine(threads=2), ds) == base


def test_a_valid_entry_is_used_without_the_lock_and_an_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch):
    """A read-only cache holding valid entries is used (a hit takes no lock, so no lock file is opened);
    a miss where the cache cannot be written is an error naming the folder, not a PermissionError."""
    from harness.core.errors import HarnessError

    art = tmp_path / "c" / "a.bin"
    art.parent.mkdir()
    cache.get_or_build(art, lambda tmp: tmp.write_bytes(b"x") and None, {"k": 1})

    def no_lock(path):
        raise AssertionError("a hit must not take the lock")

    monkeypatch.setattr(cache, "locked", no_lock)
    record, hit = cache.get_or_build(art, lambda tmp: None, {"k": 1})
    assert hit and record["k"] == 1
    monkeypatch.undo()
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder should be")
    with pytest.raises(HarnessError, match="the cache folder is not writable.*FACENET_HARNESS_CACHE"):
        cache.get_or_build(blocked / "a.bin", lambda tmp: tmp.write_bytes(b"x") and None)


def test_a_killed_builds_temp_file_is_removed_by_the_next_build(tmp_path):
    art = tmp_path / "c" / "a.bin"
    art.parent.mkdir()
    stale = art.parent / ".a.bin.k1ll3d.tmp"  # what atomic_path leaves when its process is killed -9
    stale.write_bytes(b"half an artifact")
    cache.get_or_build(art, lambda tmp: tmp.write_bytes(b"x") and None)
    assert not stale.exists() and art.read_bytes() == b"x"
