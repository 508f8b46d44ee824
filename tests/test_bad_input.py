"""The bad-input catalogue: every entry gives a HarnessError (exit code 2 from the CLI) that names the
file and says what to do; parsers and the image loader are fuzzed so nothing else escapes."""

import string

import cv2
import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from harness import cli, model
from harness.checks import accuracy
from harness.core.errors import HarnessError
from harness.engines import create as create_engine
from harness.lfw.data import Dataset, parse_pairs, read_boxes, read_rgb

from .test_data import make_prealigned

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


pytestmark = pytest.mark.usefixtures("no_lfw_env")  # these tests name their data explicitly


# --- images -------------------------------------------------------------------------------------


def test_truncated_jpeg_is_refused(tmp_path, facenet_lfw):
    src = facenet_lfw.paths[0].read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(src[: len(src) // 2])
    with pytest.raises(HarnessError, match="cut.jpg: truncated JPEG"):
        read_rgb(cut)


@pytest.mark.parametrize("content", [b"", b"hello, not an image", b"\x89PNG\r\n\x1a\n\x00\x00garbage"])
def test_non_images_are_refused(tmp_path, content):
    p = tmp_path / "x.png"
    p.write_bytes(content)
    with pytest.raises(HarnessError, match="x.png: not a readable image"):
        read_rgb(p)


def test_an_image_claiming_huge_dimensions_is_refused_before_decoding(tmp_path):
    """A JPEG whose header claims 60000 x 60000 pixels (a corrupt or crafted file) is refused by name,
    undecoded: no cv2.error traceback, no GBs decoded per thread."""
    ok, jpg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    raw = bytearray(jpg.tobytes())
    sof = raw.index(b"\xff\xc0")
    path = tmp_path / "huge.jpg"
    for side, claim in ((60000, "too many pixels"), (5000, "5000 x 5000 pixels")):  # Pillow's limit, ours
        raw[sof + 5 : sof + 9] = side.to_bytes(2, "big") * 2  # height, width
        path.write_bytes(bytes(raw))
        with pytest.raises(HarnessError, match=rf"huge.jpg: the image header claims {claim}"):
            read_rgb(path)
    path.write_bytes(jpg.tobytes())
    assert read_rgb(path).shape == (8, 8, 3)  # an ordinary image still decodes


def test_grayscale_is_converted_and_alpha_dropped(tmp_path):
    gray = np.arange(160 * 160, dtype=np.uint32).reshape(160, 160).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    rgb = read_rgb(tmp_path / "g.png")
    assert rgb.shape == (160, 160, 3) and (rgb == gray[..., None]).all()
    bgra = np.zeros((160, 160, 4), np.uint8)
    bgra[..., 0], bgra[..., 2], bgra[..., 3] = 10, 200, 7  # B, R, alpha
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    rgba = read_rgb(tmp_path / "a.png")
    assert rgba.shape == (160, 160, 3) and rgba[0, 0].tolist() == [200, 0, 10]


def test_corrupt_image_through_the_cli(tmp_path, facenet_reference_model, capsys):
    images, pairs = make_prealigned(tmp_path)
    (images / "C" / "C_0001.png").write_bytes(b"broken")
    rc = cli.main(
        [
            "accuracy",
            "--onnx",
            str(facenet_reference_model.path),
            "--lfw-dir",
            str(images),
            "--pairs",
            str(pairs),
            "--cache",
            str(tmp_path / "cache"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "C_0001.png: not a readable image" in err and "Traceback" not in err
    assert not list((tmp_path / "cache").glob("embeddings/*.npy"))  # nothing half-written was cached


def test_unknown_person_in_pairs_is_named(tmp_path):
    images, _ = make_prealigned(tmp_path)
    pairs = tmp_path / "p.txt"
    pairs.write_text("2 1\nA 1 2\nA 1 Nobody 1\nC 1 2\nC 2 D 2\n")
    with pytest.raises(HarnessError, match="Nobody/Nobody_0001.jpg: image named by .*p.txt is missing"):
        Dataset(images, pairs)


def test_box_outside_the_image_is_named(tmp_path, facenet_lfw):
    boxes = tmp_path / "boxes.tsv"
    boxes.write_text(
        "path\tfaces\tx1\ty1\tx2\ty2\tprob\n"
        + "".join(f"{k}.jpg\t1\t300\t300\t400\t400\t0.9\n" for k in facenet_lfw.keys)
    )
    ds = Dataset(facenet_lfw.root, facenet_lfw.protocol.path, boxes)
    with pytest.raises(HarnessError, match="lies outside the 250x250 image; check its row in .*boxes.tsv"):
        ds.load(0)


# --- models -------------------------------------------------------------------------------------


def nan_model(path):
    """A model of the right interface whose embeddings are NaN."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 160, 160])
    y = helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["N", 512])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [0, -1])
    starts = helper.make_tensor("starts", TensorProto.INT64, [1], [0])
    ends = helper.make_tensor("ends", TensorProto.INT64, [1], [512])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Reshape", ["input", "shape"], ["flat"]),
        helper.make_node("Slice", ["flat", "starts", "ends", "axes"], ["cut"]),
        helper.make_node("Sub", ["cut", "cut"], ["zero"]),
        helper.make_node("Div", ["zero", "zero"], ["emb"]),
    ]  # 0 / 0 = NaN
    graph = helper.make_graph(nodes, "nan", [x], [y], [shape, starts, ends, axes])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_model_producing_nan_is_refused(tmp_path):
    images, pairs = make_prealigned(tmp_path)
    ds = Dataset(images, pairs)
    info = model.inspect(nan_model(tmp_path / "nan.onnx"))
    engine = create_engine("onnxruntime", info, "fp32")
    with pytest.raises(
        HarnessError, match=r"nan.onnx: onnxruntime fp32 produced NaN/Inf embeddings for 4 images, e.g. A/A_0001"
    ):
        accuracy.embed(engine, ds, 4)


def test_directory_as_model_through_the_cli(tmp_path, capsys):
    images, pairs = make_prealigned(tmp_path)
    rc = cli.main(["accuracy", "--onnx", str(tmp_path), "--lfw-dir", str(images), "--pairs", str(pairs)])
    assert rc == 2 and "no such model file" in capsys.readouterr().err


# --- fuzzing ------------------------------------------------------------------------------------

line = st.lists(st.text(alphabet=string.ascii_letters + string.digits + "_-.", max_size=6), max_size=5).map("\t".join)


@FUZZ
@given(st.lists(line, max_size=12), st.sampled_from(["", "2 1", "10 300", "1 1", "x"]))
def test_pairs_parser_fuzz(tmp_path, lines, header):
    p = tmp_path / "pairs.txt"
    p.write_text("\n".join([header] + lines) + "\n")
    try:
        proto = parse_pairs(p)
    except HarnessError as e:
        assert str(p) in str(e)
    else:
        assert len(proto.pairs) == 2 * proto.folds * proto.per_fold


@FUZZ
@given(
    st.lists(
        st.lists(st.one_of(st.text(max_size=5), st.floats().map(str), st.integers(-10, 300).map(str)), max_size=8).map(
            "\t".join
        ),
        max_size=6,
    )
)
def test_boxes_parser_fuzz(tmp_path, rows):
    p = tmp_path / "boxes.tsv"
    p.write_text("path\tfaces\tx1\ty1\tx2\ty2\tprob\n" + "\n".join(rows) + "\n")
    try:
        boxes = read_boxes(p)
    except HarnessError as e:
        assert str(p) in str(e)
    else:
        for box in boxes.values():
            assert box is None or (box.x2 > box.x1 and box.y2 > box.y1)


@FUZZ
@given(st.binary(max_size=2048), st.sampled_from(["img.jpg", "img.png"]))
def test_image_loader_fuzz(tmp_path, content, name):
    p = tmp_path / name
    p.write_bytes(content)
    try:
        img = read_rgb(p)
    except HarnessError as e:
        assert str(p) in str(e)
    else:
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8


@FUZZ
@given(st.integers(1, 2000))
def test_real_jpeg_cut_anywhere_is_refused(tmp_path, facenet_lfw, cut_at):
    data = facenet_lfw.paths[0].read_bytes()
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: max(1, len(data) - cut_at)])
    with pytest.raises(HarnessError, match="cut.jpg"):
        read_rgb(p)
