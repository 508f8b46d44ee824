"""Throughput gate: every selected engine and case, timed by pytest-benchmark, judged by the perf baselines.

Run ``pytest -m perf`` (add ``--benchmark-autosave`` to keep the run, ``--benchmark-compare`` to compare
with the last saved one). ``make perf-baseline`` records this machine's figures.
"""
import numpy as np
import pytest

from harness import accuracy, bench
from harness.baselines import BaselineStore, judge_perf
from harness.verdicts import Verdict

SETTINGS = bench.Settings()


@pytest.mark.perf
@pytest.mark.parametrize("case", bench.CASES, ids=[c.name for c in bench.CASES])
def test_throughput(facenet_engine, facenet_gate, facenet_lfw, facenet_store, case, benchmark):
    benchmark.group = case.name
    result = facenet_gate.perf(facenet_engine, [case], SETTINGS, timer=bench.pytest_benchmark_timer(benchmark))
    row = result.rows[0]
    benchmark.extra_info.update({"fps": row.fps, "batch": case.batch, "view": case.view, "latency_ms": row.latency_ms,
                                 "cv": row.cv, "fingerprint": result.fingerprint, "verdict": row.verdict.value,
                                 "why": row.why, **({"split_ms": row.split_ms} if row.split_ms else {})})
    # TEST01: what the engine computed while being timed equals the accuracy path's embeddings
    m = row.measurement
    expected = accuracy.embed(facenet_engine, facenet_lfw, 64, indices=m.indices)[m.indices]
    atol = facenet_store.precision_tolerance(facenet_engine.precision)["atol"]
    assert np.abs(np.asarray(m.last_output) - expected).max() <= atol
    if row.verdict is Verdict.NO_BASELINE:
        pytest.skip(row.why)
    assert row.verdict is not Verdict.FAIL, f"{case.name}: {row.fps:.1f} images/s, {row.why}"


def test_perf_gate_rules():
    base = {"fps": 100.0, "tolerance": 0.1}
    assert judge_perf(95.0, base).verdict is Verdict.PASS
    assert judge_perf(90.0, base).verdict is Verdict.PASS
    low = judge_perf(89.9, base)
    assert low.verdict is Verdict.FAIL and low.min == pytest.approx(90.0)


def test_unmatched_fingerprint_says_why(tmp_path, facenet_store):
    fp = {"backend": "onnxruntime", "precision": "fp32", "version": "0.0", "device": "nowhere", "cpu_count": 1}
    baseline, why = facenet_store.perf_baseline(fp, "compute-b64")
    assert baseline is None and "no performance baseline" in why and "make perf-baseline" in why
    mine = BaselineStore(tmp_path / "mine")
    mine.save_perf(fp, {"compute-b64": 42.0}, "test")
    got, why = mine.perf_baseline(fp, "compute-b64")
    assert got == {"fps": 42.0, "tolerance": 0.2} and why == ""
    missing, why = mine.perf_baseline(fp, "compute-b1")
    assert missing is None and "no result for compute-b1" in why


def test_perf_result_is_judged_against_a_saved_baseline(facenet_reference, facenet_gate, tmp_path):
    """The perf path end to end: a baseline saved by one run judges the next; an impossible one FAILs."""
    from harness.gate import Gate

    gate = Gate(facenet_gate.dataset, facenet_gate.reference, store=BaselineStore(tmp_path / "mine"),
                cache_dir=facenet_gate.cache_dir, log=None, progress=False)
    quick = bench.Settings(warmup_s=0.0, min_duration_s=0.2, min_rounds=2)
    case = [bench.Case("compute", 1)]
    first = gate.perf(facenet_reference, case, quick, save_baseline="this test")
    assert first.rows[0].verdict is Verdict.PASS and first.rows[0].baseline["fps"] == pytest.approx(first.rows[0].fps, rel=1e-3)
    gate.store.save_perf(first.fingerprint, {"compute-b1": first.rows[0].fps * 100}, "a figure 100x too high")
    second = gate.perf(facenet_reference, case, quick)
    assert second.verdict is Verdict.FAIL and second.rows[0].check.value < second.rows[0].check.min
