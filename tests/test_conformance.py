"""Every engine against the FP32 reference on the fixed probe set, through the plugin's fixtures, with
tolerances from the baselines; plus the probe set, the golden store and INT8 calibration rules."""

import numpy as np
import pytest

from harness.checks import accuracy, conformance
from harness.core.verdicts import Verdict
from harness.lfw import data
from harness.model import quantize


@pytest.fixture(scope="session")
def probe(facenet_gate):
    return facenet_gate.probe_indices()


@pytest.fixture(scope="session")
def golden(facenet_store, facenet_lfw, facenet_reference_model, probe, facenet_unavailable):
    emb, record = facenet_store.golden(facenet_lfw, probe, data.PREPROCESSING, facenet_reference_model.sha256)
    if emb is None:
        facenet_unavailable(f"no golden probe set applies: {record}")
    return emb


@pytest.mark.conformance
def test_engine_conforms_to_the_reference(facenet_engine, facenet_gate, golden):
    result = facenet_gate.conformance(facenet_engine)
    print(result)
    assert result, result
    assert result.reference.startswith("golden")  # the committed golden set applied, nothing recomputed
    assert result.stats["samples"] == len(golden)


@pytest.mark.conformance
def test_static_batch_engine_conforms(prepared, facenet_engines, facenet_lfw, facenet_store, probe, golden):
    from harness import model

    engine = facenet_engines("onnxruntime", "fp32", model.inspect(prepared.static))
    sub = probe[:100]  # 64 + a partial batch of 36
    emb = accuracy.embed(engine, facenet_lfw, 64, indices=sub)[sub]
    tol = conformance.Tolerance.from_dict(facenet_store.precision_tolerance("fp32"))
    result = conformance.compare(golden[:100], emb, [facenet_lfw.keys[i] for i in sub], tol)
    assert result.passed, result.failures


def test_golden_store_matches_a_fresh_reference_run(facenet_reference, facenet_lfw, facenet_store, probe, golden):
    """The committed golden embeddings are what the reference computes today (a stale golden set fails)."""
    fresh = accuracy.embed(facenet_reference, facenet_lfw, 64, indices=probe)[probe]
    tol = facenet_store.precision_tolerance("fp32")["atol"]
    assert np.abs(fresh - golden).max() <= tol
    np.testing.assert_allclose(np.linalg.norm(golden, axis=1), 1.0, atol=1e-5)


def test_conformance_fails_a_perturbed_engine(facenet_gate, facenet_reference, probe):
    """The comparison is not vacuous: the reference's own embeddings, slightly rotated, fail fp32 tolerances."""
    ref, _ = facenet_gate.reference_probe(probe)
    tol = conformance.Tolerance.from_dict(facenet_gate.store.precision_tolerance("fp32"))
    keys = [str(i) for i in probe]
    assert conformance.compare(ref, ref, keys, tol).passed
    noisy = ref + np.random.default_rng(0).normal(0, 1e-3, ref.shape).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    failed = conformance.compare(ref, noisy, keys, tol)
    assert not failed.passed and failed.element_failures > 0


def test_probe_is_a_fixed_seeded_rule(facenet_lfw):
    a = conformance.probe_indices(facenet_lfw, 256, 0)
    assert a == conformance.probe_indices(facenet_lfw, 256, 0) and a == sorted(set(a)) and len(a) == 256
    assert a != conformance.probe_indices(facenet_lfw, 256, 1)


def test_calibration_images_are_outside_the_protocol(facenet_lfw):
    files = facenet_lfw.calibration_files(256, 0)
    keys = [k for k, _ in files]
    assert len(set(keys)) == 256 and not set(keys) & set(facenet_lfw.keys)
    assert keys == [k for k, _ in facenet_lfw.calibration_files(256, 0)]
    assert keys != [k for k, _ in facenet_lfw.calibration_files(256, 1)]


def _records(cache):
    return sorted((cache / "precision").glob("*.json"))


def test_int8_cache_key_follows_calibration(facenet_reference_model, tmp_path):
    """In one cache: the same calibration reuses its model; another draw of images builds another one."""
    import cv2

    from harness.lfw.data import Dataset

    from .test_data import make_prealigned

    images, pairs = make_prealigned(tmp_path)
    for name in ("E", "F"):  # two more images outside the protocol: 4 candidates for a draw of 2
        (images / name).mkdir()
        cv2.imwrite(str(images / name / f"{name}_0001.png"), np.full((160, 160, 3), ord(name), np.uint8))
    ds = Dataset(images, pairs)
    draw0, draw3 = ([k for k, _ in ds.calibration_files(2, s)] for s in (0, 3))
    assert draw0 != draw3
    cache = tmp_path / "cache"
    first = quantize.int8_model(facenet_reference_model, ds, cache, quantize.Calibration(size=2, seed=0, batch_size=2))
    again = quantize.int8_model(facenet_reference_model, ds, cache, quantize.Calibration(size=2, seed=0, batch_size=2))
    assert first == again and len(_records(cache)) == 1
    other = quantize.int8_model(facenet_reference_model, ds, cache, quantize.Calibration(size=2, seed=3, batch_size=2))
    assert other != first and len(_records(cache)) == 2


def test_int8_rebuilds_when_a_calibration_image_changes(facenet_reference_model, tmp_path):
    import cv2

    from harness.lfw.data import Dataset

    from .test_data import make_prealigned

    images, pairs = make_prealigned(tmp_path)
    ds = Dataset(images, pairs)
    calib = quantize.Calibration(size=2, batch_size=2)
    assert [k for k, _ in ds.calibration_files(2, 0)] == ["B/B_0002", "D/D_0001"]  # the two outside the protocol
    quantize.int8_model(facenet_reference_model, ds, tmp_path / "cache", calib)
    quantize.int8_model(facenet_reference_model, ds, tmp_path / "cache", calib)  # cached: no new record
    assert len(_records(tmp_path / "cache")) == 1
    img = cv2.imread(str(images / "D" / "D_0001.png"))
    cv2.imwrite(str(images / "D" / "D_0001.png"), 255 - img)
    quantize.int8_model(facenet_reference_model, Dataset(images, pairs), tmp_path / "cache", calib)
    assert len(_records(tmp_path / "cache")) == 2


def test_verdicts_combine_worst_first():
    assert Verdict.combine([Verdict.PASS, Verdict.FAIL, Verdict.NO_BASELINE]) is Verdict.FAIL
    assert Verdict.combine([Verdict.PASS, Verdict.INCONCLUSIVE]) is Verdict.INCONCLUSIVE
    assert Verdict.combine([Verdict.PASS, Verdict.NO_BASELINE]) is Verdict.NO_BASELINE
    assert Verdict.combine([Verdict.PASS]) is Verdict.PASS
    assert Verdict.combine([]) is Verdict.NO_BASELINE  # nothing judged is not a pass
    assert [v.exit_code for v in Verdict] == [0, 1, 4, 3]
