"""The baselines store loses nothing when several processes write at once (pytest-xdist workers, two
`make perf-baseline`): every save is a locked read-modify-write, and a golden record and its array are
one unit."""

import json
import multiprocessing
import types

import numpy as np

from harness.store.baselines import BaselineStore

WRITERS, EACH = 4, 25


def _save_perf(folder: str, writer: int) -> None:
    store = BaselineStore(folder)
    for i in range(EACH):
        identity = {"backend": "onnxruntime", "precision": "fp32", "writer": writer, "i": i}
        store.save_perf(identity, {"runtime": "x"}, {"compute-b8": {"fps": float(i)}}, "test", "host", "2026-12-02")


def _save_reference(folder: str, writer: int) -> None:
    store = BaselineStore(folder)
    summary = dict.fromkeys(("accuracy_mean", "accuracy_std", "auc", "val", "val_std", "far", "eer", "threshold"), 0.5)
    for i in range(EACH):
        store.save_reference(f"digest-{writer}-{i}", "test", summary, {"writer": writer})


def _run(target, folder) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=target, args=(str(folder), w)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0


def test_parallel_perf_saves_keep_every_entry(tmp_path):
    _run(_save_perf, tmp_path)
    entries = json.loads((tmp_path / "perf.json").read_text())["entries"]
    assert sorted((e["identity"]["writer"], e["identity"]["i"]) for e in entries) == [
        (w, i) for w in range(WRITERS) for i in range(EACH)
    ]


def test_parallel_accuracy_saves_keep_every_dataset(tmp_path):
    _run(_save_reference, tmp_path)
    datasets = json.loads((tmp_path / "accuracy.json").read_text())["datasets"]
    assert len(datasets) == WRITERS * EACH


def test_a_golden_record_always_names_its_own_array(tmp_path, monkeypatch):
    """Saved twice, the probe set's record names the array it was hashed from (hashed in memory, before
    publishing, under a name of its own content) and no array is left that no record names."""
    from harness.store import baselines, cache

    monkeypatch.setattr(baselines, "probe_fingerprint", lambda dataset, indices: {})
    ds = types.SimpleNamespace(digest="d" * 64, keys=["A/A_0001", "B/B_0001"])
    store = BaselineStore(tmp_path)
    for value in (1.0, 2.0):
        meta = {"engine": {}, "preprocessing": {"p": 1}, "model_sha256": "m"}
        store.save_golden(ds, [0, 1], np.full((2, 512), value, np.float32), meta)
    record = json.loads((tmp_path / "golden" / f"probe-{'d' * 16}-m{'m'}.json").read_text())
    arrays = list((tmp_path / "golden").glob(f"probe-{'d' * 16}-m{'m'}.*.npy"))
    assert [a.name for a in arrays] == [record["embeddings_file"]]
    assert cache.sha256_file(arrays[0]) == record["embeddings_sha256"]
    assert np.load(arrays[0])[0, 0] == 2.0
    emb, why = store.golden(ds, [0, 1], {"p": 1}, "m")  # read back through the record's own array
    assert emb is not None and emb[0, 0] == 2.0, why
    meta = {"engine": {}, "preprocessing": {"p": 1}, "model_sha256": "other"}  # another reference model
    store.save_golden(ds, [0, 1], np.full((2, 512), 9.0, np.float32), meta)
    assert store.golden(ds, [0, 1], {"p": 1}, "m")[0][0, 0] == 2.0  # this one's set is untouched
    assert store.golden(ds, [0, 1], {"p": 1}, "other")[0][0, 0] == 9.0


def test_a_baselines_file_of_the_wrong_shape_is_a_clear_error(tmp_path):
    """Valid JSON of the wrong shape names the file and what to do (it was a KeyError traceback)."""
    import pytest

    from harness.core.errors import HarnessError

    store = BaselineStore(tmp_path)
    (tmp_path / "accuracy.json").write_text(json.dumps({"datasets": {"d": {"reference": {}}}}))
    with pytest.raises(HarnessError, match=r"accuracy.json: not an accuracy baselines file"):
        store.accuracy_gate("d", "fp32")
    (tmp_path / "perf.json").write_text(json.dumps({"entries": {"not": "a list"}}))
    with pytest.raises(HarnessError, match=r"perf.json: not a performance baselines file"):
        store.perf_baseline({"backend": "x"}, "compute-b8")


def test_accuracy_gates_are_kept_per_dataset_and_reference_model(tmp_path):
    """Saving gates for another reference model (a weak ONNX) never replaces this one's (it did: 0.98467
    became 0.898); saving again for the same reference needs replace; an entry of the older dataset-only
    form counts for the model it was recorded with, and for no other."""
    import pytest

    from harness.core.errors import HarnessError

    store = BaselineStore(tmp_path)
    keys = ("accuracy_mean", "accuracy_std", "auc", "val", "val_std", "far", "eer", "threshold")

    def summary(acc):
        return {**dict.fromkeys(keys, 0.5), "accuracy_mean": acc, "auc": 0.998}

    store.save_reference("d", "pinned", summary(0.98467), {"model_sha256": "pinned"})
    store.save_reference("d", "weak", summary(0.898), {"model_sha256": "weak"})
    assert store.accuracy_gate("d", "fp32", "pinned")["accuracy_min"] > 0.97
    assert store.accuracy_gate("d", "fp32", "weak")["accuracy_min"] < 0.9
    with pytest.raises(HarnessError, match="already has accuracy gates.*--replace-baseline"):
        store.save_reference("d", "again", summary(0.5), {"model_sha256": "pinned"})
    store.save_reference("d", "again", summary(0.97), {"model_sha256": "pinned"}, replace=True)
    assert store.accuracy_gate("d", "fp32", "pinned")["accuracy_min"] < 0.97
    old = tmp_path / "old"
    old.mkdir()
    entry = json.loads((tmp_path / "accuracy.json").read_text())["datasets"]["d/pinned"]
    (old / "accuracy.json").write_text(json.dumps({"datasets": {"d": entry}}))  # the older form
    assert BaselineStore(old).accuracy_gate("d", "fp32", "pinned") is not None
    assert BaselineStore(old).accuracy_gate("d", "fp32", "weak") is None
