"""Flipped pairs: the pairs an engine decides differently from the reference, in the JSON and on a contact sheet."""

import json

import cv2
import numpy as np
import pytest

from harness import cli, report
from harness.checks import accuracy

from .test_accuracy import scaled_conv_onnx, small_pairs


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def perturbed(facenet_lfw):
    """Reference embeddings for every LFW image (same-person pairs drawn close) and an engine's copy of them
    with noise added, as a reduced-precision engine would give; no model is run."""
    rng = np.random.default_rng(3)
    n = len(facenet_lfw.keys)
    person = {k: k.split("/")[0] for k in facenet_lfw.keys}
    centre = {p: rng.normal(size=512) for p in sorted(set(person.values()))}
    ref = unit(np.stack([centre[person[k]] for k in facenet_lfw.keys]) + 1.6 * rng.normal(size=(n, 512)))
    eng = unit(ref + 0.02 * rng.normal(size=(n, 512))).astype(np.float32)
    return ref.astype(np.float32), eng


def test_flipped_pairs_cross_the_fold_threshold(facenet_lfw, perturbed):
    ref, eng = perturbed
    ev = accuracy.evaluate(eng, facenet_lfw)
    assert 0.8 < ev.accuracy_mean < 0.999  # overlapping classes: some decisions are close calls
    flipped = accuracy.flipped_pairs(eng, ref, facenet_lfw, ev.fold_thresholds)

    # recomputed here: distances pair by pair, the fold as pairs.txt lays it out, the engine's fold threshold
    row = {k: i for i, k in enumerate(facenet_lfw.keys)}
    expected = {}
    for i, p in enumerate(facenet_lfw.protocol.pairs):
        d_ref = float(np.sum((ref[row[p.first]].astype(np.float64) - ref[row[p.second]]) ** 2))
        d_eng = float(np.sum((eng[row[p.first]].astype(np.float64) - eng[row[p.second]]) ** 2))
        thr = ev.fold_thresholds[p.fold]
        if (d_ref < thr) != (d_eng < thr):
            expected[i] = (p, d_ref, d_eng, thr)
    assert report.SHEET_PAIRS <= len(expected) < 600  # the noise flips some decisions, not most
    assert sorted(f.pair for f in flipped) == sorted(expected)
    for f in flipped:
        p, d_ref, d_eng, thr = expected[f.pair]
        assert (f.first, f.second, f.same, f.fold) == (p.first, p.second, p.same, p.fold)
        assert f.reference_distance == pytest.approx(d_ref, abs=1e-9)
        assert f.engine_distance == pytest.approx(d_eng, abs=1e-9)
        assert f.threshold == thr
        assert min(d_ref, d_eng) < thr <= max(d_ref, d_eng)  # the distance really crossed the threshold
        assert f.engine_correct == ((d_eng < thr) == p.same)
    shifts = [abs(f.engine_distance - f.reference_distance) for f in flipped]
    assert shifts == sorted(shifts, reverse=True)  # worst first
    assert {f.engine_correct for f in flipped} == {True, False}  # noise both breaks and fixes decisions
    assert accuracy.flipped_pairs(ref, ref, facenet_lfw, ev.fold_thresholds) == []


def test_contact_sheet_shows_the_crops_of_the_worst_pairs(facenet_lfw, perturbed, tmp_path):
    ref, eng = perturbed
    ev = accuracy.evaluate(eng, facenet_lfw)
    flipped = accuracy.flipped_pairs(eng, ref, facenet_lfw, ev.fold_thresholds)
    path = report.flipped_png(tmp_path / "sheet.png", flipped, facenet_lfw)
    img = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "the contact sheet does not decode as an image"
    shown = flipped[: report.SHEET_PAIRS]
    width, height, where = report.contact_sheet_layout(len(shown))
    assert img.shape == (height, width, 3) == (4 * 230, 4 * 340, 3)  # 16 pairs, 4 by 4
    rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    index = {k: i for i, k in enumerate(facenet_lfw.keys)}
    for f, (x, y) in zip(shown, where, strict=True):  # each pair's two crops, side by side, pixel for pixel
        np.testing.assert_array_equal(rgb[y : y + 160, x : x + 160], facenet_lfw.load(index[f.first]))
        np.testing.assert_array_equal(rgb[y : y + 160, x + 160 : x + 320], facenet_lfw.load(index[f.second]))
    band = rgb[where[0][1] - report.SHEET_TEXT : where[0][1], : report.SHEET_CELL[0]]
    assert (band < 128).any()  # the text (names, distances, threshold) is drawn above the crops


def test_gate_links_the_contact_sheet_of_an_engine_with_flips(facenet_lfw, facenet_reference_model, tmp_path, capsys):
    wrong = tmp_path / "wrong.onnx"
    scaled_conv_onnx(facenet_reference_model.path, wrong, factor=-1.0)  # clearly broken: many flips
    out = tmp_path / "reports"
    rc = cli.main(
        [
            "gate",
            "--onnx",
            str(wrong),
            "--reference-onnx",
            str(facenet_reference_model.path),
            "--lfw-dir",
            str(facenet_lfw.root),
            "--pairs",
            str(small_pairs(tmp_path, facenet_lfw)),
            "--boxes",
            str(facenet_lfw.boxes_path or ""),
            "--baselines",
            str(tmp_path / "mine"),
            "--precisions",
            "fp32",
            "--perf-cases",
            "",
            "--probe-size",
            "4",
            "--out",
            str(out),
        ]
    )
    capsys.readouterr()
    doc = json.loads((out / "gate.json").read_text())
    assert rc == 1 and doc["verdict"] == "FAIL"  # the broken model fails conformance; accuracy has no baseline here
    acc = doc["rows"][0]["accuracy"]
    assert acc["flipped_decisions"] == len(acc["flipped_pairs"]) > 0
    sheet = out / "flipped-onnxruntime-fp32.png"
    assert acc["flipped_png"] == str(sheet)
    worst = acc["flipped_pairs"][0]
    assert (
        min(worst["reference_distance"], worst["engine_distance"])
        < worst["threshold"]
        <= max(worst["reference_distance"], worst["engine_distance"])
    )
    md = (out / "gate.md").read_text()
    shown = min(acc["flipped_decisions"], report.SHEET_PAIRS)
    assert (
        f"| flipped decisions vs reference | {acc['flipped_decisions']} of 120 ([worst {shown}]"
        f"(flipped-onnxruntime-fp32.png)) |" in md
    )
    img = cv2.imdecode(np.fromfile(sheet, np.uint8), cv2.IMREAD_COLOR)
    width, height, _ = report.contact_sheet_layout(shown)
    assert img is not None and img.shape == (height, width, 3)
