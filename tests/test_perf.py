"""Throughput gate: every available engine and case, timed by pytest-benchmark, judged by baselines/perf.json.

Run ``pytest -m perf`` (add ``--benchmark-autosave`` to keep the run, ``--benchmark-compare`` to
compare with the last saved one). ``make perf-baseline`` records this machine's figures.
"""
import numpy as np
import pytest

from harness import accuracy, baselines, bench

from conftest import engine_params

CASES = [pytest.param(*e.values, c, marks=e.marks, id=f"{e.id}-{c.name}") for e in engine_params() for c in bench.CASES]
SETTINGS = bench.Settings()


def pedantic_timer(benchmark):
    """Let pytest-benchmark time the rounds (so --benchmark-compare/-save work) and hand back its data."""

    def timer(step, rounds):
        benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=0)
        return list(benchmark.stats.stats.data)

    return timer


@pytest.mark.perf
@pytest.mark.parametrize("backend, prec, case", CASES)
def test_throughput(backend, prec, case, engines, lfw, benchmark, request):
    engine = engines(backend, prec)
    benchmark.group = f"{case.name}"
    fp = bench.fingerprint(engine)
    m = bench.measure(engine, lfw, case, SETTINGS, timer=pedantic_timer(benchmark))
    summary = m.summary()
    benchmark.extra_info.update({"fps": summary["fps"], "batch": case.batch, "view": case.view,
                                 "latency_ms": summary["latency_ms"], "cv": summary["cv"], "fingerprint": fp})
    if getattr(engine, "timings", None):  # GPU engines: copy-in / compute / copy-out of the last batch (CUDA events)
        benchmark.extra_info["split_ms"] = dict(engine.timings)
    # TEST01: what the engine computed while being timed equals the accuracy path's embeddings
    expected = accuracy.embed(engine, lfw, 64, indices=m.indices)[m.indices]
    atol = baselines.precision_tolerance(baselines.folder(), prec)["atol"]
    assert np.abs(np.asarray(m.last_output) - expected).max() <= atol
    baseline, why = baselines.perf_baseline(baselines.folder(), fp, case.name)
    if baseline is None:
        pytest.skip(why)
    verdict = baselines.judge_perf(m.fps, baseline)
    benchmark.extra_info["gate"] = verdict
    assert verdict["pass"], (f"{case.name}: {m.fps:.1f} images/s is {verdict['ratio']:.3f}x the baseline "
                             f"{baseline['fps']:.1f} (allowed down to {verdict['min']:.1f}, -{baseline['tolerance']:.0%})")


def test_perf_gate_rules():
    base = {"fps": 100.0, "tolerance": 0.1}
    assert baselines.judge_perf(95.0, base)["pass"]
    assert baselines.judge_perf(90.0, base)["pass"]
    assert not baselines.judge_perf(89.9, base)["pass"]


def test_unmatched_fingerprint_says_why(tmp_path):
    fp = {"backend": "onnxruntime", "precision": "fp32", "version": "0.0", "device": "nowhere", "cpu_count": 1}
    baseline, why = baselines.perf_baseline(baselines.folder(), fp, "compute-b64")
    assert baseline is None and "no performance baseline" in why and "make perf-baseline" in why
    baselines.save_perf(tmp_path, fp, {"compute-b64": 42.0}, "test")
    got, why = baselines.perf_baseline(tmp_path, fp, "compute-b64")
    assert got == {"fps": 42.0, "tolerance": baselines.DEFAULT_PERF_TOLERANCE} and why == ""
    missing, why = baselines.perf_baseline(tmp_path, fp, "compute-b1")
    assert missing is None and "no result for compute-b1" in why


def test_reference_ixrt_figures_are_recorded():
    entries = {(e["fingerprint"]["backend"], e["fingerprint"]["precision"]): e
               for e in baselines.load_perf(baselines.folder())["entries"]}
    assert entries["ixrt", "fp16"]["results"]["compute-b64"]["fps"] == 8825.802
    assert entries["ixrt", "int8"]["results"]["compute-b64"]["fps"] == 14274.306
