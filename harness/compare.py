"""Comparing an engine's embeddings with the FP32 reference (Polygraphy-style), on a fixed probe set.

Per sample: cosine similarity. Overall: min / p1 / mean cosine; max, mean and p99 of absolute and
relative element error.  An element fails when its absolute error exceeds ``atol`` AND its
relative error exceeds ``rtol`` (Polygraphy's rule); NaN or Inf anywhere always fails.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .data import Dataset


def probe_indices(dataset: Dataset, size: int = 256, seed: int = 0) -> list[int]:
    """A fixed probe set: ``size`` protocol images drawn by a seeded rule from the sorted image keys."""
    n = len(dataset.keys)
    return sorted(np.random.default_rng(seed).choice(n, min(size, n), replace=False).tolist())


@dataclasses.dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    min_cosine: float
    mean_cosine: float

    @classmethod
    def from_dict(cls, d: dict) -> "Tolerance":
        return cls(float(d["atol"]), float(d["rtol"]), float(d["min_cosine"]), float(d["mean_cosine"]))


@dataclasses.dataclass
class Comparison:
    keys: list[str]
    cosine: np.ndarray  # per sample
    abs_err: np.ndarray  # per element
    rel_err: np.ndarray
    nonfinite: int
    element_failures: int
    tolerance: Tolerance

    @property
    def stats(self) -> dict:
        return {
            "samples": len(self.keys),
            "min_cosine": float(np.min(self.cosine)),
            "p1_cosine": float(np.percentile(self.cosine, 1)),
            "mean_cosine": float(np.mean(self.cosine)),
            "max_abs": float(np.max(self.abs_err)), "mean_abs": float(np.mean(self.abs_err)),
            "p99_abs": float(np.percentile(self.abs_err, 99)),
            "max_rel": float(np.max(self.rel_err)), "mean_rel": float(np.mean(self.rel_err)),
            "p99_rel": float(np.percentile(self.rel_err, 99)),
            "nonfinite": self.nonfinite, "element_failures": self.element_failures,
        }

    @property
    def failures(self) -> list[str]:
        """Why the comparison fails (empty when it passes)."""
        s, t = self.stats, self.tolerance
        out = []
        if self.nonfinite:
            out.append(f"{self.nonfinite} NaN/Inf values")
        if self.element_failures:
            out.append(f"{self.element_failures} elements beyond atol={t.atol:g} and rtol={t.rtol:g}")
        if s["min_cosine"] < t.min_cosine:
            out.append(f"min cosine {s['min_cosine']:.6f} < {t.min_cosine}")
        if s["mean_cosine"] < t.mean_cosine:
            out.append(f"mean cosine {s['mean_cosine']:.6f} < {t.mean_cosine}")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures

    def worst(self, n: int = 5) -> list[tuple[str, float]]:
        order = np.argsort(self.cosine)[:n]
        return [(self.keys[i], float(self.cosine[i])) for i in order]


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
