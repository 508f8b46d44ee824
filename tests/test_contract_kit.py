"""The engine contract kit (harness.testing) on every engine, and proof that it catches broken engines."""

import numpy as np
import pytest

from harness.core.verdicts import Verdict
from harness.engines import Engine
from harness.testing import assert_engine_contract, check_engine


def test_every_engine_meets_the_contract(facenet_engine, facenet_lfw, facenet_store):
    report = check_engine(
        facenet_engine, facenet_lfw, facenet_store.precision_tolerance(facenet_engine.precision)["atol"]
    )
    print(report)
    assert report, report


def test_static_batch_engine_meets_the_contract(prepared, facenet_engines, facenet_lfw):
    from harness import model

    engine = facenet_engines("onnxruntime", "fp32", model.inspect(prepared.static))
    report = assert_engine_contract(engine, facenet_lfw, 1e-5, images=12)
    assert report["partial_batch"].verdict is Verdict.PASS


class _Wrapped(Engine):
    """Test-only engines around the real reference session, each with one deliberate defect."""

    name = "broken"
    precisions = ("fp32",)

    def __init__(self, inner, defect):
        super().__init__(inner.model, "fp32")
        self.inner, self.defect, self.calls, self.last = inner, defect, 0, None

    def _run(self, batch):
        self.calls += 1
        out = self.inner.run(batch)
        if self.defect == "stale" and self.last is not None and len(batch) < len(self.last):
            out = self.last[: len(batch)]  # returns the rows of the previous, larger batch
        if self.defect == "nondeterministic":
            out = out + np.random.default_rng(self.calls).normal(0, 1e-3, out.shape).astype(np.float32)
        if self.defect == "batch_mixing":
            out = out + out.mean(axis=0, keepdims=True) * 1e-2  # a row depends on its batch neighbours
        if self.defect == "unnormalised":
            out = out * 2.0
        self.last = out
        return out

    def describe(self):
        return {"backend": self.name, "version": "0", "device": "cpu", "precision": "fp32"}


@pytest.mark.parametrize(
    "defect, must_fail",
    [
        ("stale", {"partial_batch"}),
        ("nondeterministic", {"determinism"}),
        ("batch_mixing", {"batch_invariance", "nan_isolation"}),
        ("unnormalised", {"finite_normalised"}),
    ],
)
def test_contract_catches_defects(defect, must_fail, facenet_reference, facenet_lfw):
    report = check_engine(_Wrapped(facenet_reference, defect), facenet_lfw, 1e-5)
    failed = {c.name for c in report.checks if c.verdict is Verdict.FAIL}
    assert not report and must_fail <= failed, str(report)
    if defect == "stale":  # a stale-row bug shows only where the rows are stale
        assert failed == {"partial_batch"}, str(report)
    with pytest.raises(AssertionError, match="engine contract of broken fp32: FAIL"):
        assert_engine_contract(_Wrapped(facenet_reference, defect), facenet_lfw, 1e-5)
