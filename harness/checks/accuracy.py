"""Embedding LFW with a backend (cached) and scoring it with facenet's evaluation."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from harness.core.errors import EngineFault
from harness.core.results import FlippedPair
from harness.engines import Engine
from harness.lfw import data, metrics
from harness.lfw.data import Dataset
from harness.store import cache, environment


def embed(
    engine: Engine,
    dataset: Dataset,
    batch_size: int = 64,
    progress=None,
    indices: Sequence[int] | None = None,
    timing: dict | None = None,
) -> np.ndarray:
    """Embeddings of the protocol images (all, or ``indices``), in ``dataset.keys`` order.

    Loading of the next batches (from the crop cache, or decoding) overlaps inference of the current
    one.  ``timing``, when given, receives ``seconds`` (the pass) and ``engine_seconds`` (inside
    ``engine.run``), so a pass can show what share of it the engine was not the bottleneck.
    """
    out = np.zeros((len(dataset.keys), 512), np.float32)
    done = 0
    total = len(out) if indices is None else len(indices)
    start, in_engine = time.perf_counter(), 0.0
    batches = -(-total // batch_size)
    for number, (batch_indices, batch) in enumerate(dataset.batches(batch_size, indices), 1):
        t0 = time.perf_counter()
        try:
            emb = engine.run(batch)
        except EngineFault as e:
            raise EngineFault(
                f"{e} (batch {number} of {batches}, {len(batch_indices)} images from {dataset.keys[batch_indices[0]]})"
            ) from e
        in_engine += time.perf_counter() - t0
        if emb.shape != (len(batch_indices), 512):
            raise EngineFault(
                f"{engine.model.path}: output shape {emb.shape}, expected ({len(batch_indices)}, 512); "
                "is this a FaceNet embedding model?"
            )
        bad = ~np.isfinite(emb).all(axis=1)
        if bad.any():
            names = [dataset.keys[i] for i, b in zip(batch_indices, bad, strict=True) if b][:5]
            raise EngineFault(
                f"{engine.model.path}: {engine.name} {engine.precision} produced NaN/Inf embeddings "
                f"for {int(bad.sum())} images, e.g. {', '.join(names)}; the engine is broken."
            )
        out[batch_indices] = emb
        done += len(batch_indices)
        if progress:
            progress(done, total)
    if timing is not None:
        timing.update(seconds=time.perf_counter() - start, engine_seconds=in_engine)
    return out


def embeddings_key(engine: Engine, dataset: Dataset) -> str:
    """Everything that changes an engine's embeddings of the dataset: the model, the images and their
    preprocessing (OpenCV decodes and resizes them), what the engine says of itself, every resolved
    setting (also those a plug-in's ``describe()`` forgets), the engine's class (a subclass that describes
    itself like its parent still computes its own) and, for CPU engines, the CPU's ISA identity
    (INT8 and bf16 kernels differ between CPUs that share a marketing name)."""
    import cv2

    cpu = environment.cpu_identity() if getattr(engine, "device_kind", "cpu") == "cpu" else None
    return cache.key_of(
        model=engine.model.sha256,
        dataset=dataset.digest,
        preprocessing=data.PREPROCESSING,
        opencv=cv2.__version__,
        engine=engine.describe(),
        # a subclass computes its own; isolated or not, the same class (Engine.implementation)
        implementation=getattr(engine, "implementation", None)
        or f"{type(engine).__module__}.{type(engine).__qualname__}",
        settings={k: list(v) if isinstance(v, tuple) else v for k, v in sorted(engine.settings.items())},
        cpu=None if cpu is None else {k: cpu.get(k) for k in ("vendor", "family", "model", "stepping", "isa")},
    )


def cached_embed(
    engine: Engine, dataset: Dataset, cache_dir: Path, batch_size: int = 64, progress=None
) -> tuple[np.ndarray, dict]:
    """``embed`` with a content-keyed cache: model hash, dataset digest, preprocessing, engine and version.

    A cache file whose sha256 does not match its record (truncated, corrupted) is recomputed.
    """
    key = embeddings_key(engine, dataset)
    path = cache_dir / "embeddings" / f"{key[:32]}.npy"

    def build(tmp: Path) -> dict:
        timing: dict = {}
        emb = embed(engine, dataset, batch_size, progress, timing=timing)
        with open(tmp, "wb") as f:
            np.save(f, emb)
        seconds = timing["seconds"]
        return {
            "seconds": seconds,
            "engine_seconds": timing["engine_seconds"],
            "batch_size": batch_size,
            "images_per_second": len(emb) / seconds,
            "outside_engine_fraction": 1.0 - timing["engine_seconds"] / seconds,
        }

    record, hit = cache.get_or_build(path, build, match={"key": key})
    return np.load(path), {**record, "cached": hit}


def pair_distances(embeddings: np.ndarray, dataset: Dataset) -> np.ndarray:
    """Squared L2 distance of every protocol pair, from per-image embeddings in ``dataset.keys`` order."""
    index = {k: i for i, k in enumerate(dataset.keys)}
    pairs = dataset.protocol.pairs
    return metrics.distances(embeddings[[index[p.first] for p in pairs]], embeddings[[index[p.second] for p in pairs]])


def evaluate(embeddings: np.ndarray, dataset: Dataset) -> metrics.Evaluation:
    """facenet's LFW evaluation of per-image embeddings over the dataset's protocol."""
    return metrics.evaluate_distances(
        pair_distances(embeddings, dataset), dataset.protocol.issame, dataset.protocol.folds
    )


def flipped_pairs(
    embeddings: np.ndarray, reference: np.ndarray, dataset: Dataset, fold_thresholds: np.ndarray
) -> list[FlippedPair]:
    """The pairs whose same/different decision differs from the reference's, worst (largest shift) first.

    Both sides are judged at one threshold per pair: the engine's ``fold_thresholds`` entry for the pair's
    test fold (``Evaluation.fold_thresholds``: its accuracy-maximising threshold on the other folds, as
    facenet picks it). The engine's side is thus exactly the decision its accuracy counted, and a flip
    means the distance itself moved across that threshold, not that the threshold moved.
    """
    d_eng, d_ref = pair_distances(embeddings, dataset), pair_distances(reference, dataset)
    fold = metrics.fold_of(d_eng.size, dataset.protocol.folds)
    flipped, thr = metrics.flips(d_eng, d_ref, fold_thresholds, dataset.protocol.folds)
    same = dataset.protocol.issame
    flipped = flipped[np.argsort(-np.abs(d_eng - d_ref)[flipped], kind="stable")]
    pairs = dataset.protocol.pairs
    return [
        FlippedPair(
            int(i),
            pairs[i].first,
            pairs[i].second,
            bool(same[i]),
            float(d_ref[i]),
            float(d_eng[i]),
            int(fold[i]),
            float(thr[i]),
            bool((d_eng[i] < thr[i]) == same[i]),
        )
        for i in flipped
    ]


def progress_bar(label: str):
    """Progress of a long step on stderr: a live line on a terminal, a line per 10% in a log."""
    tty = sys.stderr.isatty()
    start = time.perf_counter()
    shown = {"decile": -1}

    def show(done: int, total: int):
        rate = done / max(time.perf_counter() - start, 1e-9)
        text = f"{label}: {done}/{total} images, {rate:.1f} img/s"
        if tty:
            sys.stderr.write(f"\r{text}" + ("\n" if done == total else ""))
        else:
            decile = 10 * done // max(total, 1)
            if decile == shown["decile"]:
                return
            shown["decile"] = decile
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    return show
