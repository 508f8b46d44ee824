"""The contract kit for engine authors: the checks every engine must pass, runnable from their own tests.

    from harness.testing import check_engine

    def test_our_engine_contract(facenet_engines, facenet_lfw, facenet_store):
        engine = facenet_engines("ours", "fp16")
        report = check_engine(engine, facenet_lfw, atol=facenet_store.precision_tolerance("fp16")["atol"])
        assert report, report

The checks run on real LFW crops and compare the engine with itself (the reference comparison is the
gate's job): output shape and dtype, finite L2-normalised rows, batch invariance (a row does not depend on
the batch it is in), no stale rows in a partial last batch, determinism across runs, and NaN isolation
(a NaN in one image must not change the other images' rows; whether the NaN image's own row is NaN or
finite is reported, since quantized engines can absorb a NaN pixel).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from harness.core.errors import HarnessError
from harness.core.verdicts import Verdict
from harness.engines import Engine

EMBEDDING_SIZE = 512


@dataclasses.dataclass(frozen=True)
class ContractCheck:
    name: str
    verdict: Verdict
    detail: str

    def __str__(self) -> str:
        return f"{self.verdict.value:4s} {self.name}: {self.detail}"


@dataclasses.dataclass(frozen=True)
class ContractReport:
    engine: str
    checks: tuple[ContractCheck, ...]

    @property
    def verdict(self) -> Verdict:
        return Verdict.combine(c.verdict for c in self.checks)

    def __bool__(self) -> bool:
        return self.verdict is Verdict.PASS

    def __getitem__(self, name: str) -> ContractCheck:
        return next(c for c in self.checks if c.name == name)

    def __str__(self) -> str:
        return "\n".join([f"engine contract of {self.engine}: {self.verdict}"] + [f"  {c}" for c in self.checks])

    __repr__ = __str__


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if a.size else 0.0


def check_engine(engine: Engine, dataset, atol: float, images: int = 12) -> ContractReport:
    """Run every contract check on ``engine`` with ``images`` real crops of ``dataset``; ``atol`` is the
    per-element difference an engine of this precision may show between two ways of computing a row."""
    if images < 4:
        raise HarnessError("the engine contract needs at least 4 images")
    idx = np.linspace(0, len(dataset.keys) - 1, images).astype(int)
    x = dataset.batch(idx)
    checks = []

    def add(name: str, ok: bool, detail: str):
        checks.append(ContractCheck(name, Verdict.of(ok), detail))

    full = engine.run(x)
    shape_ok = isinstance(full, np.ndarray) and full.shape == (images, EMBEDDING_SIZE) and full.dtype == np.float32
    add(
        "shape_dtype",
        shape_ok,
        f"run({x.shape}) gave {getattr(full, 'shape', None)} {getattr(full, 'dtype', None)}; "
        f"expected ({images}, {EMBEDDING_SIZE}) float32",
    )
    if not shape_ok:
        return ContractReport(engine.label, tuple(checks))
    finite = bool(np.isfinite(full).all())
    norms = np.linalg.norm(full, axis=1)
    add(
        "finite_normalised",
        finite and bool(np.all(np.abs(norms - 1) <= 1e-3)),
        f"all finite: {finite}; L2 norms in [{norms.min():.6f}, {norms.max():.6f}] (1 +- 1e-3)",
    )

    single = np.concatenate([engine.run(x[i : i + 1]) for i in range(images)])
    d = _max_diff(full, single)
    add(
        "batch_invariance",
        d <= atol,
        f"rows of one batch of {images} vs one image at a time: max |diff| {d:.2e} (<= {atol:g})",
    )

    # a full batch, then a partial one: the partial one's rows must be its own, never left over
    big = engine.run(np.concatenate([x[::-1], x]))  # its first rows are other images than the partial's
    k = max(1, images // 3)
    partial = engine.run(x[:k])
    d_partial = _max_diff(partial, single[:k])
    d_big = _max_diff(big[images:], single)
    add(
        "partial_batch",
        d_partial <= atol and d_big <= atol and partial.shape == (k, EMBEDDING_SIZE),
        f"{k} images after a batch of {2 * images}: shape {partial.shape}, max |diff| {d_partial:.2e}; "
        f"the batch of {2 * images} itself {d_big:.2e} (<= {atol:g})",
    )

    again = engine.run(x)
    d_again = _max_diff(full, again)
    add("determinism", d_again <= atol, f"the same batch twice: max |diff| {d_again:.2e} (<= {atol:g})")

    poisoned = x.copy()
    poisoned[1, :, 80, 80] = np.nan
    try:
        out = engine.run(poisoned)
    except HarnessError as e:
        add("nan_isolation", True, f"a NaN input is refused with a clear error ({e})")
    else:
        others = np.delete(np.arange(images), 1)
        d_nan = _max_diff(out[others], full[others]) if np.isfinite(out[others]).all() else float("inf")
        own = (
            "propagates to its own row (NaN/Inf)"
            if not np.isfinite(out[1]).all()
            else f"is absorbed: its own row stays finite (max |diff| {_max_diff(out[1], full[1]):.2e} "
            "from the clean image)"
        )
        add(
            "nan_isolation",
            d_nan <= atol,
            f"a NaN pixel in image 1 {own}; the other rows move by {d_nan:.2e} (<= {atol:g})",
        )
    return ContractReport(engine.label, tuple(checks))


def assert_engine_contract(engine: Engine, dataset, atol: float, images: int = 12) -> ContractReport:
    """``check_engine`` that raises AssertionError with the whole report when any check fails."""
    report = check_engine(engine, dataset, atol, images)
    if not report:
        raise AssertionError(str(report))
    return report
