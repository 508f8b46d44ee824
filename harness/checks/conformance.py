"""Comparing an engine's embeddings with the FP32 reference (Polygraphy-style), on a fixed probe set.

Per sample: cosine similarity. Overall: min / p1 / mean cosine; max, mean and p99 of absolute and
relative element error.  An element fails when its absolute error exceeds ``atol`` AND its
relative error exceeds ``rtol`` (Polygraphy's rule); NaN or Inf anywhere always fails.
"""

from __future__ import annotations

import numpy as np

from harness.core.results import Comparison, Tolerance
from harness.lfw.data import Dataset


def probe_indices(dataset: Dataset, size: int = 256, seed: int = 0) -> list[int]:
    """A fixed probe set: ``size`` protocol images drawn by a seeded rule from the sorted image keys."""
    n = len(dataset.keys)
    return sorted(np.random.default_rng(seed).choice(n, min(size, n), replace=False).tolist())


def compare(reference: np.ndarray, candidate: np.ndarray, keys: list[str], tolerance: Tolerance) -> Comparison:
    reference = np.asarray(reference, np.float64)
    candidate = np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"shape {candidate.shape} differs from the reference's {reference.shape}")
    finite = np.isfinite(candidate)
    nonfinite = int(np.size(candidate) - np.count_nonzero(finite))
    cand = np.where(finite, candidate, 0.0)
    abs_err = np.abs(cand - reference)
    rel_err = abs_err / np.maximum(np.abs(reference), np.finfo(np.float32).tiny)
    norms = np.linalg.norm(cand, axis=1) * np.linalg.norm(reference, axis=1)
    cosine = np.where(norms > 0, np.sum(cand * reference, axis=1) / np.maximum(norms, 1e-30), 0.0)
    cosine[~finite.all(axis=1)] = -1.0  # a sample with NaN/Inf is as wrong as it gets
    fails = int(np.count_nonzero((abs_err > tolerance.atol) & (rel_err > tolerance.rtol)))
    return Comparison(list(keys), cosine, abs_err, rel_err, nonfinite, fails, tolerance)
