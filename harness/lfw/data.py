"""LFW: the verification protocol (pairs.txt), face boxes, and the images fed to the model.

Two dataset forms are supported:
  * raw LFW images plus a face-box TSV (``../shared/lfw_mtcnn_boxes.tsv`` format): each face is
    cropped as facenet's ``align_dataset_mtcnn`` does (box grown by margin/2 per side, clipped,
    resized to 160x160 bilinear; a centred 160x160 crop where no face was found);
  * a pre-aligned folder of 160x160 images, used as is.
Images are decoded as RGB and normalised ``(x - 127.5) / 128`` into NCHW float32.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from harness.core.errors import HarnessError
from harness.store import cache

IMAGE_SIZE = 160
MARGIN = 32
MEAN, SCALE = 127.5, 128.0
EXTENSIONS = (".jpg", ".png", ".jpeg")
CROPS_LAYOUT = "uint8 NCHW, v1"  # the crop cache's file layout; bump on any change
PREPROCESSING = {
    "crop": "facenet-align",
    "margin": MARGIN,
    "size": IMAGE_SIZE,
    "resize": "cv2.INTER_LINEAR",
    "mean": MEAN,
    "scale": SCALE,
    "order": "RGB",
    "layout": "NCHW",
}


def locate(shared: str | os.PathLike | None = None) -> tuple[str | None, str | None, str | None]:
    """(images, pairs, boxes) from LFW_DIR / LFW_PAIRS / LFW_BOXES, else from a ``shared`` folder
    laid out like ``../shared`` (lfw/, lfw_pairs.txt, lfw_mtcnn_boxes.tsv), else Nones."""
    if os.environ.get("LFW_DIR"):
        return os.environ["LFW_DIR"], os.environ.get("LFW_PAIRS"), os.environ.get("LFW_BOXES") or None
    if shared and (Path(shared) / "lfw").is_dir():
        s = Path(shared)
        return str(s / "lfw"), str(s / "lfw_pairs.txt"), str(s / "lfw_mtcnn_boxes.tsv")
    return None, None, None


@dataclasses.dataclass(frozen=True)
class Pair:
    first: str  # image key "<Person>/<Person>_NNNN"
    second: str
    same: bool
    fold: int


@dataclasses.dataclass(frozen=True)
class Protocol:
    """The parsed LFW protocol: pairs in file order, fold by fold."""

    path: Path
    pairs: tuple[Pair, ...]
    folds: int
    per_fold: int  # same-person pairs per fold (= different-person pairs per fold)
    sha256: str

    @property
    def issame(self) -> np.ndarray:
        return np.array([p.same for p in self.pairs])

    @property
    def image_keys(self) -> list[str]:
        """The distinct images the protocol uses, sorted."""
        return sorted({k for p in self.pairs for k in (p.first, p.second)})


def _image_key(path: Path, lineno: int, name: str, number: str) -> str:
    if not name or "/" in name or name.startswith("."):
        raise HarnessError(f"{path}:{lineno}: {name!r} is not a person name.")
    try:
        n = int(number)
    except ValueError:
        raise HarnessError(f"{path}:{lineno}: image number {number!r} is not an integer.") from None
    if n < 1:
        raise HarnessError(f"{path}:{lineno}: image number {n} must be 1 or more.")
    return f"{name}/{name}_{n:04d}"


def parse_pairs(path: str | os.PathLike) -> Protocol:
    """Parse and validate an LFW ``pairs.txt`` (header ``folds n``, then per fold n same + n different lines)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise HarnessError(f"{path}: cannot read the LFW pairs file ({e}); set LFW_PAIRS or --pairs.") from None
    numbered = [(i + 1, ln.split()) for i, ln in enumerate(lines) if ln.strip()]
    if not numbered:
        raise HarnessError(f"{path}: empty; an LFW pairs file starts with a header line like '10 300'.")
    lineno, header = numbered[0]
    try:
        folds, per_fold = (int(x) for x in header)
    except ValueError:
        raise HarnessError(
            f"{path}:{lineno}: header {' '.join(header)!r} is not '<folds> <pairs per half-fold>' "
            "(the official file says '10 300')."
        ) from None
    if folds < 2 or per_fold < 1:
        raise HarnessError(f"{path}:{lineno}: header says {folds} folds of {per_fold}; need at least 2 folds.")
    body = numbered[1:]
    if len(body) != 2 * folds * per_fold:
        raise HarnessError(
            f"{path}: header promises {folds} folds x 2 x {per_fold} = {2 * folds * per_fold} pairs, "
            f"the file has {len(body)} pair lines."
        )
    pairs: list[Pair] = []
    seen: dict[frozenset[str], int] = {}
    for k, (lineno, fields) in enumerate(body):
        fold, same = k // (2 * per_fold), (k % (2 * per_fold)) < per_fold
        if same:
            if len(fields) != 3:
                raise HarnessError(
                    f"{path}:{lineno}: line {k % (2 * per_fold) + 1} of fold {fold + 1} must be a "
                    f"same-person pair 'name n1 n2' (3 fields), got {len(fields)}."
                )
            a, b = _image_key(path, lineno, fields[0], fields[1]), _image_key(path, lineno, fields[0], fields[2])
        else:
            if len(fields) != 4:
                raise HarnessError(
                    f"{path}:{lineno}: line {k % (2 * per_fold) + 1} of fold {fold + 1} must be a "
                    f"different-person pair 'name1 n1 name2 n2' (4 fields), got {len(fields)}."
                )
            a, b = _image_key(path, lineno, fields[0], fields[1]), _image_key(path, lineno, fields[2], fields[3])
            if fields[0] == fields[2]:
                raise HarnessError(f"{path}:{lineno}: a different-person pair names {fields[0]!r} twice.")
        if a == b:
            raise HarnessError(f"{path}:{lineno}: pairs an image with itself ({a}).")
        key = frozenset((a, b))
        if key in seen:
            raise HarnessError(f"{path}:{lineno}: duplicate of the pair on line {seen[key]} ({a}, {b}).")
        seen[key] = lineno
        pairs.append(Pair(a, b, same, fold))
    return Protocol(path, tuple(pairs), folds, per_fold, cache.sha256_file(path))


@dataclasses.dataclass(frozen=True)
class Box:
    x1: float
    y1: float
    x2: float
    y2: float


BOX_COLUMNS = ("path", "faces", "x1", "y1", "x2", "y2")


def read_boxes(path: str | os.PathLike) -> dict[str, Box | None]:
    """Face boxes by image key from a TSV in the ``lfw_mtcnn_boxes.tsv`` format; None = no face found."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise HarnessError(f"{path}: cannot read the face-box TSV ({e}); set LFW_BOXES or --boxes.") from None
    rows = [(i + 1, ln.split("\t")) for i, ln in enumerate(text.splitlines()) if ln.strip() and not ln.startswith("#")]
    if not rows or tuple(c.strip() for c in rows[0][1][: len(BOX_COLUMNS)]) != BOX_COLUMNS:
        raise HarnessError(
            f"{path}: the first non-comment line must be the header starting {' '.join(BOX_COLUMNS)} (tab-separated)."
        )
    boxes: dict[str, Box | None] = {}
    for lineno, cols in rows[1:]:
        if len(cols) < len(BOX_COLUMNS):
            raise HarnessError(
                f"{path}:{lineno}: {len(cols)} columns, need at least {len(BOX_COLUMNS)} ({', '.join(BOX_COLUMNS)})."
            )
        key = os.path.splitext(cols[0].strip())[0]
        coords = [c.strip() for c in cols[2:6]]
        if not any(coords):
            boxes[key] = None
            continue
        try:
            x1, y1, x2, y2 = (float(c) for c in coords)
        except ValueError:
            raise HarnessError(f"{path}:{lineno}: box {coords} is not four numbers.") from None
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            raise HarnessError(f"{path}:{lineno}: box {coords} is not finite.")
        if x2 <= x1 or y2 <= y1:
            raise HarnessError(f"{path}:{lineno}: box {coords} has a negative or zero size (need x2 > x1, y2 > y1).")
        boxes[key] = Box(x1, y1, x2, y2)
    return boxes


def facenet_crop(img: np.ndarray, box: Box | None, margin: int = MARGIN, size: int = IMAGE_SIZE) -> np.ndarray:
    """Crop as facenet's align_dataset_mtcnn: grow by margin/2, clip, truncate to int, resize bilinear."""
    h, w = img.shape[:2]
    if box is None:  # no face found: the centred crop
        if h < size or w < size:
            raise ValueError(f"image {w}x{h} is smaller than {size}x{size} and has no face box")
        top, left = (h - size) // 2, (w - size) // 2
        return img[top : top + size, left : left + size]
    x1, y1 = int(max(box.x1 - margin / 2, 0)), int(max(box.y1 - margin / 2, 0))
    x2, y2 = int(min(box.x2 + margin / 2, w)), int(min(box.y2 + margin / 2, h))
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"face box {box} lies outside the {w}x{h} image")
    return cv2.resize(img[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_LINEAR)


MAX_IMAGE_PIXELS = 4096 * 4096  # LFW images are 250 x 250; a header claiming far more is refused undecoded


def _check_size(path: Path, raw: bytes) -> None:
    """Refuse an image whose header claims more than ``MAX_IMAGE_PIXELS`` before anything decodes it (a
    crafted or corrupt header would otherwise cost GBs per decoding thread, or an OpenCV traceback).
    Pillow (already here through matplotlib) reads only the header."""
    from PIL import Image, UnidentifiedImageError

    claim = None
    try:
        with Image.open(io.BytesIO(raw)) as im:
            width, height = im.size
            if width * height > MAX_IMAGE_PIXELS:
                claim = f"{width} x {height} pixels"
    except Image.DecompressionBombError as e:  # Pillow's own, far larger limit
        claim = f"too many pixels ({e})"
    except (UnidentifiedImageError, OSError, ValueError):
        return  # not a format Pillow knows, or a header it rejects: OpenCV's decode decides and names it
    if claim is not None:
        raise HarnessError(
            f"{path}: the image header claims {claim}, more than {MAX_IMAGE_PIXELS:,}; not an LFW image, "
            "or a corrupt one: restore it from the LFW archive."
        )


def reserve(path: Path, what: str) -> None:
    """Allocate every block of ``path`` (a memory-mapped file) now: on a full disk that is a clear error
    naming the folder and the size needed, where writing through the mapping would kill the process with
    SIGBUS. The caller's temporary file is removed by its ``atomic_path``."""
    size = path.stat().st_size
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        raise HarnessError(
            f"{path.parent}: no room for {what} ({size / 2**20:.0f} MiB needed: {e.strerror or e}); free space "
            "there or point FACENET_HARNESS_CACHE (or --cache) at another folder."
        ) from None
    finally:
        os.close(fd)


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file to uint8 HWC RGB, refusing corrupt or truncated files by name.

    Grayscale images are converted to RGB (channels replicated) and an alpha channel is dropped,
    as facenet's own loader does; both are stated in the README.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise HarnessError(f"{path}: cannot read the image ({e.strerror}).") from None
    if raw[:2] == b"\xff\xd8" and b"\xff\xd9" not in raw[-16:]:
        # OpenCV decodes a cut-off JPEG into a partly grey image with only a warning: refuse it here.
        raise HarnessError(f"{path}: truncated JPEG (no end-of-image marker); restore it from the LFW archive.")
    _check_size(path, raw)
    try:
        img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR) if raw else None
    except cv2.error as e:
        raise HarnessError(f"{path}: OpenCV cannot decode this image ({str(e).strip()[:200]}).") from None
    if img is None:
        raise HarnessError(
            f"{path}: not a readable image (corrupt or not an image file); restore it from the LFW archive."
        )
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def normalize(faces: np.ndarray) -> np.ndarray:
    """uint8 NHWC RGB -> float32 NCHW ``(x - 127.5) / 128``."""
    return normalize_chw(faces.transpose(0, 3, 1, 2))


def normalize_chw(faces: np.ndarray) -> np.ndarray:
    """uint8 NCHW RGB -> float32 NCHW ``(x - 127.5) / 128``, bit-identical to ``normalize``.

    One pass into a fresh contiguous array (1/128 is a power of two, so the product equals the
    quotient exactly): on contiguous NCHW crops about 3x faster than converting then transposing.
    """
    out = np.empty(faces.shape, np.float32)
    np.subtract(faces, np.float32(MEAN), out=out, dtype=np.float32)
    out *= np.float32(1.0 / SCALE)
    return out


class Dataset:
    """The images of an LFW protocol, on disk, with their face boxes (or pre-aligned)."""

    def __init__(self, images: str | os.PathLike, pairs: str | os.PathLike, boxes: str | os.PathLike | None = None):
        self.root = Path(images)
        if not self.root.is_dir():
            raise HarnessError(
                f"{self.root}: no such LFW image folder; set LFW_DIR or --lfw-dir "
                "(a folder of <Person>/<Person>_NNNN.jpg)."
            )
        self.protocol = parse_pairs(pairs)
        self.boxes_path = Path(boxes) if boxes else None
        self.boxes = read_boxes(boxes) if boxes else None
        self.keys = self.protocol.image_keys
        self.paths = [self._find(k) for k in self.keys]
        if self.boxes is not None:
            missing = [k for k in self.keys if k not in self.boxes]
            if missing:
                raise HarnessError(
                    f"{self.boxes_path}: no face-box row for {len(missing)} protocol images, e.g. "
                    f"{missing[0]}; regenerate it with 'facenet-harness align' or drop --boxes for a "
                    "pre-aligned folder."
                )
        self._digest: str | None = None
        self._crop_cache: Path | None = None
        self._crops: np.ndarray | None = None

    def __getstate__(self) -> dict:
        """What an engine's worker process receives (INT8 calibration): everything but the memory-mapped
        crops (it maps the same crop cache itself when it needs them); the digest travels once computed."""
        state = dict(self.__dict__)
        state["_crops"] = None
        return state

    @property
    def form(self) -> str:
        return "raw+boxes" if self.boxes is not None else "pre-aligned"

    def _find(self, key: str) -> Path:
        for ext in EXTENSIONS:
            p = self.root / f"{key}{ext}"
            if p.is_file():
                return p
        raise HarnessError(
            f"{self.root / key}.jpg: image named by {self.protocol.path} is missing "
            "(LFW_DIR must point at the folder holding <Person>/<Person>_NNNN.jpg)."
        )

    @property
    def digest(self) -> str:
        """sha256 identifying the data: protocol, each used image's bytes, and the face boxes used."""
        if self._digest is None:
            h = hashlib.sha256()
            h.update(f"pairs {self.protocol.sha256}\n".encode())
            for key, path in zip(self.keys, self.paths, strict=True):
                h.update(f"{path.relative_to(self.root)}\0{cache.sha256_file(path)}\n".encode())
                if self.boxes is not None:
                    h.update(f"box {self.boxes[key]}\n".encode())
            self._digest = h.hexdigest()
        return self._digest

    def load(self, index: int) -> np.ndarray:
        """One protocol face, uint8 HWC RGB 160x160; HarnessError naming the file when it cannot be used."""
        return self.load_file(self.paths[index], self.keys[index])

    def load_file(self, path: Path, key: str) -> np.ndarray:
        """Any face of this dataset (protocol or not) by file and image key, cropped like the protocol's."""
        img = read_rgb(path)
        if self.boxes is None:
            if img.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
                raise HarnessError(
                    f"{path}: a pre-aligned image must be {IMAGE_SIZE}x{IMAGE_SIZE}, it is "
                    f"{img.shape[1]}x{img.shape[0]}; for raw LFW images pass the face boxes (LFW_BOXES)."
                )
            return img
        if key not in self.boxes:
            raise HarnessError(f"{self.boxes_path}: no face-box row for {key}; regenerate the TSV.")
        try:
            return facenet_crop(img, self.boxes[key])
        except ValueError as e:
            raise HarnessError(f"{path}: {e}; check its row in {self.boxes_path}.") from None

    def calibration_files(self, size: int, seed: int) -> list[tuple[str, Path]]:
        """``size`` images of this folder that the protocol does NOT use, chosen by a seeded draw.

        Quantizing on the evaluation images (as the reference deployment does) would flatter INT8;
        these are disjoint from them by construction.
        """
        used = set(self.keys)
        candidates = sorted(
            (f"{p.parent.name}/{p.stem}", p)
            for p in self.root.glob("*/*")
            if p.suffix.lower() in EXTENSIONS
            and f"{p.parent.name}/{p.stem}" not in used
            and (self.boxes is None or f"{p.parent.name}/{p.stem}" in self.boxes)
        )
        if len(candidates) < size:
            raise HarnessError(
                f"{self.root}: only {len(candidates)} images outside the protocol for calibration, "
                f"{size} asked; lower the calibration size."
            )
        pick = np.random.default_rng(seed).choice(len(candidates), size, replace=False)
        return [candidates[i] for i in sorted(pick)]

    def use_crop_cache(self, cache_dir: str | os.PathLike) -> None:
        """Serve the protocol faces from a crop cache under ``cache_dir`` (built on first use).

        Decoding and cropping the 7,701 JPEGs runs at a few hundred images/s per core; a GPU engine
        would wait on it.  With the cache, every later pass reads uint8 NCHW crops from one memory-mapped
        file and only normalises them.
        """
        self._crop_cache = Path(cache_dir) / "crops"

    def crops_key(self) -> str:
        """Content key of the crop cache: dataset digest (images, boxes, protocol), preprocessing, OpenCV."""
        return cache.key_of(
            dataset=self.digest,
            preprocessing=PREPROCESSING,
            keys=len(self.keys),
            layout=CROPS_LAYOUT,
            opencv=cv2.__version__,
        )  # its JPEG decoder and resize make the crops

    def crops(self) -> np.ndarray:
        """All protocol faces as uint8 NCHW (in ``keys`` order), memory-mapped from the crop cache.

        The file is built once (decoded in threads, written atomically), keyed by ``crops_key``, and its
        sha256 is checked once per Dataset before use; a mismatch rebuilds it.
        """
        if self._crops is None:
            if self._crop_cache is None:
                raise HarnessError("no crop cache folder set: call Dataset.use_crop_cache(cache_dir) first.")
            key = self.crops_key()
            path = self._crop_cache / f"{key[:32]}.npy"
            cache.get_or_build(path, self._write_crops, match={"key": key, "images": len(self.keys)})
            crops = np.load(path, mmap_mode="r")
            if crops.shape != (len(self.keys), 3, IMAGE_SIZE, IMAGE_SIZE) or crops.dtype != np.uint8:
                raise HarnessError(f"{path}: crop cache has shape {crops.shape} {crops.dtype}; delete it to rebuild.")
            self._crops = crops
        return self._crops

    def _write_crops(self, tmp: Path) -> dict:
        start = time.perf_counter()
        out = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(len(self.keys), 3, IMAGE_SIZE, IMAGE_SIZE)
        )
        reserve(tmp, "the crop cache")  # a sparse file on a full disk would end in SIGBUS mid-write
        self._fill(out)
        return {"seconds": round(time.perf_counter() - start, 3)}  # the memmap is closed: the file is whole

    def _fill(self, out: np.memmap) -> None:
        def put(i: int) -> None:
            out[i] = self.load(i).transpose(2, 0, 1)

        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for f in [pool.submit(put, i) for i in range(len(self.keys))]:
                f.result()
        out.flush()

    def batch(self, indices: Sequence[int]) -> np.ndarray:
        """Preprocessed NCHW float32 batch of the given images (from the crop cache when one is set)."""
        if self._crop_cache is not None:
            return normalize_chw(self.crops()[np.asarray(indices, dtype=np.intp)])
        return normalize(np.stack([self.load(i) for i in indices]))

    def batches(
        self, batch_size: int, indices: Sequence[int] | None = None, prefetch: int = 2
    ) -> Iterator[tuple[list[int], np.ndarray]]:
        """Yield ``(indices, batch)`` while the next batches are decoded in background threads.

        OpenCV releases the GIL while decoding and resizing, so loading overlaps inference.
        """
        order = list(range(len(self.keys))) if indices is None else list(indices)
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        if self._crop_cache is not None:
            self.crops()  # built (or verified) once here, not by racing prefetch threads
        with concurrent.futures.ThreadPoolExecutor(max_workers=prefetch) as pool:
            pending: list[concurrent.futures.Future[np.ndarray] | None] = [
                pool.submit(self.batch, c) for c in chunks[:prefetch]
            ]
            for k, chunk in enumerate(chunks):
                future = pending[k]
                assert future is not None  # each slot is cleared only after its batch is handed out
                batch = future.result()
                if k + prefetch < len(chunks):
                    pending.append(pool.submit(self.batch, chunks[k + prefetch]))
                pending[k] = None  # free the batch once handed out
                yield chunk, batch
