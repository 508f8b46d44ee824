"""The harness's own MTCNN alignment: its pieces on hand cases, and agreement with the shared boxes."""

import numpy as np
import pytest

from harness.lfw import align, data
from harness.lfw.data import Box
from harness.model import weights
from harness.store import cache


@pytest.fixture(scope="module")
def detector(cache_dir, facenet_unavailable):
    try:
        return align.MTCNN(weights.mtcnn_nets(cache_dir))
    except data.HarnessError as e:
        facenet_unavailable(f"cannot fetch the MTCNN nets: {e}")


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 9, 9, 0.9], [1, 1, 10, 10, 0.8], [50, 50, 60, 60, 0.7]], float)
    assert sorted(align.nms(boxes, 0.5).tolist()) == [0, 2]
    # 'min' divides by the smaller area: a box inside another is suppressed even when IoU is small
    inner = np.array([[0, 0, 99, 99, 0.9], [10, 10, 29, 29, 0.8]], float)
    assert align.nms(inner, 0.5).tolist() == [0, 1] and align.nms(inner, 0.5, "min").tolist() == [0]


def test_square_keeps_the_centre():
    sq = align.square(np.array([[10.0, 20.0, 30.0, 60.0, 1.0]]))
    assert sq[0, :4].tolist() == [0.0, 20.0, 40.0, 60.0]


def test_face_choice_prefers_big_and_central():
    boxes = np.array(
        [
            [0, 0, 60, 60, 1.0],  # big but in the corner
            [95, 95, 155, 155, 1.0],  # as big and centred
            [110, 110, 140, 140, 1.0],
        ],
        float,
    )  # centred, small
    assert align.choose_face(boxes, (250, 250)) == 1


def test_iou():
    assert align.iou(Box(0, 0, 10, 10), Box(0, 0, 10, 10)) == 1.0
    assert align.iou(Box(0, 0, 10, 10), Box(5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert align.iou(Box(0, 0, 1, 1), Box(2, 2, 3, 3)) == 0.0


def test_boxes_agree_with_the_shared_detector(detector, facenet_lfw):
    idx = np.random.default_rng(0).choice(len(facenet_lfw.keys), 150, replace=False)
    ours = {}
    for i in idx:
        img = data.read_rgb(facenet_lfw.paths[i])
        boxes, points = detector.detect(img)
        assert points.shape == (len(boxes), 10)
        ours[facenet_lfw.keys[i]] = Box(*boxes[align.choose_face(boxes, img.shape[:2]), :4]) if len(boxes) else None
    agree = align.agreement(ours, {k: facenet_lfw.boxes[k] for k in ours})
    assert agree["images"] == 150
    assert agree["fraction_iou_ge_0.8"] >= 0.98, agree
    assert agree["median_iou"] >= 0.88, agree


def test_written_tsv_is_a_dataset_box_file(tmp_path, cache_dir, facenet_lfw):
    folder = tmp_path / "lfw"
    for key in facenet_lfw.keys[:3]:
        (folder / key.split("/")[0]).mkdir(parents=True, exist_ok=True)
        (folder / f"{key}.jpg").write_bytes(facenet_lfw.paths[facenet_lfw.keys.index(key)].read_bytes())
    blank = folder / "Blank" / "Blank_0001.jpg"
    blank.parent.mkdir()
    import cv2

    cv2.imwrite(str(blank), np.full((250, 250, 3), 128, np.uint8))  # no face to find
    out = tmp_path / "boxes.tsv"
    stats = align.align_folder(folder, out, weights.mtcnn_nets(cache_dir), workers=2)
    assert stats == {"images": 4, "no_face": 1}
    boxes = data.read_boxes(out)
    assert boxes["Blank/Blank_0001"] is None
    for key in facenet_lfw.keys[:3]:
        assert align.iou(boxes[key], facenet_lfw.boxes[key]) >= 0.8
    assert cache.sha256_file(out)  # written whole
