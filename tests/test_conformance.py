"""Every available engine against the FP32 reference on the fixed probe set, with tolerances from baselines/."""
import numpy as np
import pytest

from harness import accuracy, baselines, compare, data, precision

from conftest import engine_params, unavailable


@pytest.fixture(scope="session")
def probe(lfw):
    conf = baselines.tolerances(baselines.folder())["probe"]
    return compare.probe_indices(lfw, conf["size"], conf["seed"])


@pytest.fixture(scope="session")
def golden(lfw, probe):
    emb, record = baselines.load_golden(baselines.folder(), lfw, probe, data.PREPROCESSING)
    if emb is None:
        unavailable(f"no golden probe set applies: {record}")
    return emb


@pytest.mark.parametrize("backend, prec", engine_params())
def test_engine_conforms_to_the_golden_reference(backend, prec, engines, lfw, probe, golden):
    engine = engines(backend, prec)
    emb = accuracy.embed(engine, lfw, 64, indices=probe)[probe]
    tol = compare.Tolerance.from_dict(baselines.precision_tolerance(baselines.folder(), prec))
    result = compare.compare(golden, emb, [lfw.keys[i] for i in probe], tol)
    print(result.table(f"{backend} {prec}"))
    assert result.passed, result.table(f"{backend} {prec}")


def test_static_batch_engine_conforms(prepared, engines, lfw, probe, golden):
    from harness import model

    engine = engines("onnxruntime", "fp32", model.inspect(prepared.static))
    sub = probe[:100]  # 64 + a partial batch of 36
    emb = accuracy.embed(engine, lfw, 64, indices=sub)[sub]
    tol = compare.Tolerance.from_dict(baselines.precision_tolerance(baselines.folder(), "fp32"))
    result = compare.compare(golden[:100], emb, [lfw.keys[i] for i in sub], tol)
    assert result.passed, result.table("onnxruntime fp32 static batch 64")


def test_golden_store_is_intact(lfw, probe, golden):
    record_path = baselines.folder() / baselines.GOLDEN_DIR / f"probe-{lfw.digest[:16]}.json"
    _, record = baselines.load_golden(baselines.folder(), lfw, probe, data.PREPROCESSING)
    assert record["preprocessing"] == data.PREPROCESSING and record_path.is_file()
    assert golden.shape == (len(probe), 512)
    np.testing.assert_allclose(np.linalg.norm(golden, axis=1), 1.0, atol=1e-5)


def test_probe_is_a_fixed_seeded_rule(lfw):
    a = compare.probe_indices(lfw, 256, 0)
    assert a == compare.probe_indices(lfw, 256, 0) and a == sorted(set(a)) and len(a) == 256
    assert a != compare.probe_indices(lfw, 256, 1)


def test_calibration_images_are_outside_the_protocol(lfw):
    files = lfw.calibration_files(256, 0)
    keys = [k for k, _ in files]
    assert len(set(keys)) == 256 and not set(keys) & set(lfw.keys)
    assert keys == [k for k, _ in lfw.calibration_files(256, 0)]
    assert keys != [k for k, _ in lfw.calibration_files(256, 1)]


def test_int8_cache_key_follows_calibration(reference_model, lfw, tmp_path, cache_dir):
    # the default calibration is already cached; another seed must build another model
    default = precision.int8_model(reference_model, lfw, cache_dir, precision.Calibration())
    again = precision.int8_model(reference_model, lfw, cache_dir, precision.Calibration())
    assert default == again
    other = precision.int8_model(reference_model, lfw, tmp_path, precision.Calibration(size=32, seed=3))
    assert other != default


def test_int8_rebuilds_when_a_calibration_image_changes(reference_model, tmp_path):
    import cv2

    from harness.data import Dataset

    from .test_data import make_prealigned

    images, pairs = make_prealigned(tmp_path)
    ds = Dataset(images, pairs)
    calib = precision.Calibration(size=2, batch_size=2)
    assert [k for k, _ in ds.calibration_files(2, 0)] == ["B/B_0002", "D/D_0001"]  # the two outside the protocol
    precision.int8_model(reference_model, ds, tmp_path / "cache", calib)
    precision.int8_model(reference_model, ds, tmp_path / "cache", calib)  # cached: no new record
    assert len(list((tmp_path / "cache" / "precision").glob("*.json"))) == 1
    img = cv2.imread(str(images / "D" / "D_0001.png"))
    cv2.imwrite(str(images / "D" / "D_0001.png"), 255 - img)
    precision.int8_model(reference_model, Dataset(images, pairs), tmp_path / "cache", calib)
    assert len(list((tmp_path / "cache" / "precision").glob("*.json"))) == 2
