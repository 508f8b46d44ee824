"""The LFW protocol, face boxes, facenet's crop and the batch loader."""

import re
import textwrap

import cv2
import numpy as np
import pytest

from harness.lfw import data
from harness.lfw.data import Box, Dataset, HarnessError, facenet_crop, parse_pairs, read_boxes


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    return p


# --- pairs.txt ----------------------------------------------------------------------------------


def test_official_protocol(facenet_lfw):
    proto = facenet_lfw.protocol
    assert (proto.folds, proto.per_fold, len(proto.pairs)) == (10, 300, 6000)
    assert proto.issame.sum() == 3000
    assert len(proto.image_keys) == 7701
    assert [p.fold for p in proto.pairs[:600]] == [0] * 600
    first = proto.pairs[0]  # 'Abel_Pacheco 1 4'
    assert (first.first, first.second, first.same) == (
        "Abel_Pacheco/Abel_Pacheco_0001",
        "Abel_Pacheco/Abel_Pacheco_0004",
        True,
    )
    diff = proto.pairs[300]  # the first different-person line of fold 1
    assert not diff.same and diff.first.split("/")[0] != diff.second.split("/")[0]


GOOD = """
    2 1
    A 1 2
    B 1 C 1
    D 1 3
    E 2 F 1
"""


def test_small_protocol(tmp_path):
    proto = parse_pairs(write(tmp_path, "pairs.txt", GOOD))
    assert [(p.first, p.second, p.same, p.fold) for p in proto.pairs] == [
        ("A/A_0001", "A/A_0002", True, 0),
        ("B/B_0001", "C/C_0001", False, 0),
        ("D/D_0001", "D/D_0003", True, 1),
        ("E/E_0002", "F/F_0001", False, 1),
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("ten 300\n", "header 'ten 300'"),
        ("2 1\nA 1 2\nB 1 C 1\nD 1 3\n", "promises 2 folds x 2 x 1 = 4 pairs, the file has 3"),
        ("2 1\nA 1 2 3\nB 1 C 1\nD 1 3\nE 2 F 1\n", "same-person pair 'name n1 n2' (3 fields), got 4"),
        ("2 1\nA 1 2\nB 1 C\nD 1 3\nE 2 F 1\n", "different-person pair 'name1 n1 name2 n2' (4 fields), got 3"),
        ("2 1\nA 1 x\nB 1 C 1\nD 1 3\nE 2 F 1\n", "image number 'x' is not an integer"),
        ("2 1\nA 1 2\nB 1 C 1\nA 2 1\nE 2 F 1\n", "duplicate of the pair on line 2"),
        ("2 1\nA 1 1\nB 1 C 1\nD 1 3\nE 2 F 1\n", "pairs an image with itself"),
        ("2 1\nA 1 2\nB 1 B 2\nD 1 3\nE 2 F 1\n", "names 'B' twice"),
    ],
)
def test_malformed_protocol_names_file_and_line(tmp_path, text, message):
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    with pytest.raises(HarnessError, match=re.escape(message)) as err:
        parse_pairs(path)
    assert str(path) in str(err.value)


def test_missing_pairs_file(tmp_path):
    with pytest.raises(HarnessError, match="LFW_PAIRS"):
        parse_pairs(tmp_path / "nope.txt")


# --- face boxes ---------------------------------------------------------------------------------


def test_shared_boxes(facenet_lfw):
    assert len(facenet_lfw.boxes) == 13233
    assert facenet_lfw.boxes["Marilyn_Monroe/Marilyn_Monroe_0001"] is None  # MTCNN found no face
    box = facenet_lfw.boxes["Abel_Pacheco/Abel_Pacheco_0001"]
    assert 0 < box.x1 < box.x2 < 250 and 0 < box.y1 < box.y2 < 250


HEADER = "path\tfaces\tx1\ty1\tx2\ty2\tprob\n"


@pytest.mark.parametrize(
    "row, message",
    [
        ("A/A_0001.jpg\t1\t10\t10\n", "4 columns"),
        ("A/A_0001.jpg\t1\tnan\t10\t50\t50\t0.9\n", "not finite"),
        ("A/A_0001.jpg\t1\t60\t10\t50\t50\t0.9\n", "negative or zero size"),
        ("A/A_0001.jpg\t1\tten\t10\t50\t50\t0.9\n", "not four numbers"),
    ],
)
def test_malformed_boxes_name_file_and_line(tmp_path, row, message):
    path = write(tmp_path, "boxes.tsv", "# comment\n" + HEADER + row)
    with pytest.raises(HarnessError, match=message) as err:
        read_boxes(path)
    assert f"{path}:3" in str(err.value)


def test_boxes_need_the_header(tmp_path):
    with pytest.raises(HarnessError, match="header"):
        read_boxes(write(tmp_path, "boxes.tsv", "A/A_0001.jpg\t1\t1\t1\t5\t5\n"))


# --- facenet's crop -----------------------------------------------------------------------------


def gradient_image(h=250, w=250):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8)


def test_crop_grows_box_by_half_margin_and_truncates():
    img = gradient_image()
    crop = facenet_crop(img, Box(60.7, 50.2, 180.9, 200.6), margin=32)
    # x: int(60.7 - 16) = 44 .. int(180.9 + 16) = 196; y: int(50.2 - 16) = 34 .. int(200.6 + 16) = 216
    expected = cv2.resize(img[34:216, 44:196], (160, 160), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(crop, expected)


def test_crop_is_clipped_to_the_image():
    img = gradient_image()
    crop = facenet_crop(img, Box(5.0, 3.0, 245.5, 249.0), margin=32)
    expected = cv2.resize(img[0:250, 0:250], (160, 160), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(crop, expected)


def test_no_face_gives_the_centred_crop():
    img = gradient_image()
    np.testing.assert_array_equal(facenet_crop(img, None), img[45:205, 45:205])


def test_normalize_layout_and_range():
    faces = np.zeros((2, 160, 160, 3), np.uint8)
    faces[1, 0, 0] = [255, 0, 128]
    x = data.normalize(faces)
    assert x.shape == (2, 3, 160, 160) and x.dtype == np.float32
    assert x[1, :, 0, 0].tolist() == [(255 - 127.5) / 128, -127.5 / 128, 0.5 / 128]
    assert x[0, 0, 0, 0] == -127.5 / 128


# --- the dataset --------------------------------------------------------------------------------


def test_loader_is_rgb_and_uses_the_box(facenet_lfw):
    i = facenet_lfw.keys.index("Abel_Pacheco/Abel_Pacheco_0001")
    bgr = cv2.imread(str(facenet_lfw.paths[i]))
    expected = facenet_crop(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), facenet_lfw.boxes[facenet_lfw.keys[i]])
    np.testing.assert_array_equal(facenet_lfw.load(i), expected)


def test_prefetching_batches_equal_direct_loading(facenet_lfw):
    indices = list(range(0, 200, 7))
    seen = []
    for chunk, batch in facenet_lfw.batches(8, indices):
        np.testing.assert_array_equal(batch, facenet_lfw.batch(chunk))
        seen += chunk
    assert seen == indices


def make_prealigned(tmp_path, size=160, names=("A", "B", "C", "D")):
    rng = np.random.default_rng(0)
    for name in names:
        (tmp_path / "imgs" / name).mkdir(parents=True, exist_ok=True)
        for n in (1, 2):
            img = rng.integers(0, 255, (size, size, 3), np.uint8)
            cv2.imwrite(str(tmp_path / "imgs" / name / f"{name}_{n:04d}.png"), img)
    pairs = write(tmp_path, "pairs.txt", "2 1\nA 1 2\nA 1 B 1\nC 1 2\nC 2 D 2\n")
    return tmp_path / "imgs", pairs


def tiny_gate_args(tiny, model, cache_dir, out, backend: str, precisions: str, *extra: str) -> list[str]:
    """``facenet-harness gate`` arguments over a ``make_prealigned`` dataset: ``model`` as both the engine's
    model and the reference, a 4-image probe set, then ``extra``."""
    images, pairs = tiny
    return [
        "gate",
        "--backend",
        backend,
        "--precisions",
        precisions,
        "--lfw-dir",
        str(images),
        "--pairs",
        str(pairs),
        "--boxes",
        "",
        "--onnx",
        str(model.path),
        "--reference-onnx",
        str(model.path),
        "--cache",
        str(cache_dir),
        "--out",
        str(out),
        "--probe-size",
        "4",
        *extra,
    ]


def test_prealigned_folder_is_used_as_is(tmp_path):
    images, pairs = make_prealigned(tmp_path)
    ds = Dataset(images, pairs)
    assert ds.form == "pre-aligned" and len(ds.keys) == 6
    img = cv2.cvtColor(cv2.imread(str(images / "A" / "A_0001.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(ds.load(ds.keys.index("A/A_0001")), img)


def test_prealigned_image_of_wrong_size_is_refused(tmp_path):
    images, pairs = make_prealigned(tmp_path, size=150)
    ds = Dataset(images, pairs)
    with pytest.raises(HarnessError, match="must be 160x160, it is 150x150") as err:
        ds.load(0)
    assert "A_0001.png" in str(err.value)


def test_missing_image_is_named(tmp_path):
    images, pairs = make_prealigned(tmp_path)
    (images / "C" / "C_0002.png").unlink()
    with pytest.raises(HarnessError, match="C/C_0002.jpg: image named by .*pairs.txt is missing"):
        Dataset(images, pairs)


def test_corrupt_image_is_named(tmp_path):
    images, pairs = make_prealigned(tmp_path)
    (images / "B" / "B_0001.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    ds = Dataset(images, pairs)
    with pytest.raises(HarnessError, match="B_0001.png: not a readable image"):
        ds.load(ds.keys.index("B/B_0001"))


def test_digest_changes_with_any_image_byte(tmp_path):
    images, pairs = make_prealigned(tmp_path)
    before = Dataset(images, pairs).digest
    assert Dataset(images, pairs).digest == before
    p = images / "D" / "D_0002.png"
    img = cv2.imread(str(p))
    img[0, 0, 0] ^= 1
    cv2.imwrite(str(p), img)
    assert Dataset(images, pairs).digest != before
