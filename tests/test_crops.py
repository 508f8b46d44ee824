"""The crop cache: LFW faces decoded and cropped once, then served bit-identical without decoding."""

import json

import cv2
import numpy as np
import pytest

from harness.checks import accuracy
from harness.lfw import data
from harness.lfw.data import Dataset

from .test_data import make_prealigned


def raw_subset(tmp_path, facenet_lfw, folds=3):
    """A small raw-LFW protocol over real images and their shared face boxes (crop path, not pre-aligned)."""
    same = [p for p in facenet_lfw.protocol.pairs if p.same][:folds]
    diff = [p for p in facenet_lfw.protocol.pairs if not p.same][:folds]

    def line(p):
        (a, na), (b, nb) = (k.split("/")[1].rsplit("_", 1) for k in (p.first, p.second))
        return f"{a} {int(na)} {int(nb)}" if p.same else f"{a} {int(na)} {b} {int(nb)}"

    lines = [f"{folds} 1"] + [line(p) for s, d in zip(same, diff, strict=False) for p in (s, d)]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("\n".join(lines) + "\n")
    return Dataset(facenet_lfw.root, pairs, facenet_lfw.boxes_path)


def test_cached_batches_equal_decoded_ones_bit_for_bit(tmp_path, facenet_lfw):
    plain = raw_subset(tmp_path, facenet_lfw)
    cached = raw_subset(tmp_path, facenet_lfw)
    cached.use_crop_cache(tmp_path / "cache")
    idx = list(range(len(plain.keys)))[::-1]
    np.testing.assert_array_equal(cached.batch(idx), plain.batch(idx))
    for (ci, cb), (pi, pb) in zip(cached.batches(5), plain.batches(5), strict=False):
        assert ci == pi
        np.testing.assert_array_equal(cb, pb)


def test_second_pass_decodes_no_image(tmp_path, facenet_lfw, monkeypatch):
    ds = raw_subset(tmp_path, facenet_lfw)
    ds.use_crop_cache(tmp_path / "cache")
    calls = []
    real = data.read_rgb
    monkeypatch.setattr(data, "read_rgb", lambda p: calls.append(p) or real(p))
    ds.crops()
    assert len(calls) == len(ds.keys)  # the build decodes each protocol image once
    calls.clear()
    again = raw_subset(tmp_path, facenet_lfw)  # a later process: same files, same cache folder
    again.use_crop_cache(tmp_path / "cache")
    for _ in again.batches(4):
        pass
    assert calls == []


def test_embed_reports_the_time_outside_the_engine(tmp_path, facenet_lfw):
    class Slow:  # the pass's own bookkeeping, not an engine under test: only the timing split is checked
        model = None

        def run(self, batch):
            import time

            time.sleep(0.05)
            return np.ones((len(batch), 512), np.float32) / np.sqrt(512)

    ds = raw_subset(tmp_path, facenet_lfw)
    ds.use_crop_cache(tmp_path / "cache")
    timing = {}
    accuracy.embed(Slow(), ds, batch_size=4, timing=timing)
    batches = -(-len(ds.keys) // 4)
    assert timing["engine_seconds"] >= 0.05 * batches
    assert timing["seconds"] >= timing["engine_seconds"]


def test_key_follows_the_image_bytes_and_the_preprocessing(tmp_path, monkeypatch):
    images, pairs = make_prealigned(tmp_path)
    before = Dataset(images, pairs).crops_key()
    monkeypatch.setattr(data, "PREPROCESSING", {**data.PREPROCESSING, "resize": "cv2.INTER_AREA"})
    assert Dataset(images, pairs).crops_key() != before
    monkeypatch.undo()
    p = images / "D" / "D_0002.png"
    img = cv2.imread(str(p))
    img[5, 5, 1] ^= 1
    cv2.imwrite(str(p), img)
    changed = Dataset(images, pairs)
    assert changed.crops_key() != before
    changed.use_crop_cache(tmp_path / "cache")
    np.testing.assert_array_equal(
        changed.crops()[changed.keys.index("D/D_0002")].transpose(1, 2, 0), cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    )


def test_corrupted_cache_file_is_rebuilt(tmp_path):
    images, pairs = make_prealigned(tmp_path)
    ds = Dataset(images, pairs)
    ds.use_crop_cache(tmp_path / "cache")
    good = np.array(ds.crops())
    (npy,) = (tmp_path / "cache" / "crops").glob("*.npy")
    record = json.loads(npy.with_suffix(".json").read_text())
    assert record["key"] == ds.crops_key() and record["images"] == len(ds.keys)
    raw = bytearray(npy.read_bytes())
    raw[-1] ^= 0xFF  # one flipped pixel: the recorded sha256 no longer matches
    npy.write_bytes(bytes(raw))
    again = Dataset(images, pairs)
    again.use_crop_cache(tmp_path / "cache")
    np.testing.assert_array_equal(again.crops(), good)
    assert not list((tmp_path / "cache" / "crops").glob(".*.tmp"))


def test_unreadable_image_is_named_when_the_cache_is_built(tmp_path):
    images, pairs = make_prealigned(tmp_path)
    (images / "C" / "C_0001.png").write_bytes(b"not an image")
    ds = Dataset(images, pairs)
    ds.use_crop_cache(tmp_path / "cache")
    with pytest.raises(data.HarnessError, match="C_0001.png: not a readable image"):
        ds.crops()
    assert not list((tmp_path / "cache" / "crops").glob("*.npy"))


def test_a_full_disk_is_a_clear_error_and_leaves_no_temp_file(tmp_path, monkeypatch):
    """The crop cache is a memory-mapped file: its blocks are allocated before the first write, so a full
    disk is an error naming the folder and the size needed (not SIGBUS), and the temp file goes."""
    import errno
    import os

    images, pairs = make_prealigned(tmp_path)
    ds = Dataset(images, pairs)
    ds.use_crop_cache(tmp_path / "cache")

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(data.HarnessError, match=r"crops: no room for the crop cache \(\d+ MiB needed: No space left"):
        ds.crops()
    assert not [p for p in (tmp_path / "cache" / "crops").iterdir() if not p.name.endswith(".lock")]


def test_the_gate_serves_lfw_from_the_crop_cache(facenet_gate, facenet_lfw):
    assert facenet_gate.dataset._crop_cache is not None
    idx = np.linspace(0, len(facenet_lfw.keys) - 1, 16).astype(int)
    decoded = data.normalize(np.stack([facenet_lfw.load(i) for i in idx]))
    np.testing.assert_array_equal(facenet_gate.dataset.batch(idx), decoded)
