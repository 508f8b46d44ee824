"""Throughput, in two parts.

``pytest -m perf``: every selected engine and case timed by pytest-benchmark (``--benchmark-autosave``
keeps the run, ``--benchmark-compare`` compares with the last saved one) and judged statistically
against the baseline of the same identity (``harness.checks.perfstats``). A baseline recorded on another
machine is reported, never asserted (a CI host is not the host that recorded it).

The rest asserts what one run can prove on any machine, each by interleaved measurements in the same
process: the harness adds no overhead to a bare session loop, INT8 is faster than FP32, batch 64 is not
slower per image than batch 1, and the comparison mechanism passes a baseline recorded in the same run
and fails the same engine made 1.4x slower.
"""

import json
import time
import warnings

import numpy as np
import pytest

from harness import engines
from harness.checks import accuracy, throughput
from harness.core.verdicts import Verdict
from harness.engines import Engine
from harness.gate import Gate
from harness.store import environment
from harness.store.baselines import BaselineStore, identity_matches, stack_changes

SETTINGS = throughput.Settings()
QUICK = throughput.Settings(warmup_s=0.5, min_duration_s=2.0, min_rounds=10)


@pytest.mark.perf
@pytest.mark.parametrize("case", throughput.CASES, ids=[c.name for c in throughput.CASES])
def test_throughput(facenet_engine, facenet_gate, facenet_lfw, facenet_store, case, benchmark, request):
    benchmark.group = case.name
    save = request.config.getoption("facenet_save_perf_baseline")
    # Nothing to judge against on this machine (a CPU kind without a baseline): a short measurement still
    # records the figure and checks what was computed while timed, without the full budget for nothing.
    baseline, _ = facenet_store.perf_baseline(throughput.identity(facenet_engine), case.name)
    settings = SETTINGS if save or baseline is not None else QUICK
    result = facenet_gate.perf(
        facenet_engine, [case], settings, timer=throughput.pytest_benchmark_timer(benchmark), save_baseline=save
    )
    row = result.rows[0]
    benchmark.extra_info.update(
        {
            "fps": row.fps,
            "batch": case.batch,
            "view": case.view,
            "latency_ms": row.latency_ms,
            "cv": row.cv,
            "identity": result.identity,
            "stack": result.stack,
            "verdict": row.verdict.value,
            "why": row.why,
            "ratio": row.ratio,
            "normalised_ratio": row.normalised_ratio,
            **({"split_ms": row.split_ms} if row.split_ms else {}),
        }
    )
    # TEST01: what the engine computed while being timed equals the accuracy path's embeddings
    m = row.measurement
    expected = accuracy.embed(facenet_engine, facenet_lfw, 64, indices=m.indices)[m.indices]
    atol = facenet_store.precision_tolerance(facenet_engine.precision)["atol"]
    assert np.abs(np.asarray(m.last_output) - expected).max() <= atol
    print(f"{case.name}: {row.fps:.1f} images/s, {row.verdict}: {row.why}")
    if save:
        return  # a recording run (make perf-baseline): measured, checked and saved
    if row.verdict is Verdict.NO_BASELINE:
        pytest.skip(row.why)
    if row.verdict is Verdict.FAIL:
        if row.baseline.get("host") != environment.machine_id():
            warnings.warn(
                f"{facenet_engine.label} {case.name}: FAIL against a baseline recorded on another host "
                f"({row.why}); not asserted here",
                stacklevel=1,
            )
            return
        pytest.fail(f"{case.name}: {row.fps:.1f} images/s: {row.why}")


class Slowed(Engine):
    """The same engine with its inference made ``factor`` times slower, nothing else changed: same
    identity, same stack. After each batch it adds (factor - 1) times what the batch took, either busy on
    the CPU (``mode="spin"``, the default: what a driver that costs more host work does) or asleep
    (``mode="sleep"``: what waiting on a device does; on a CPU engine the runtime's worker threads park
    meanwhile and wake up late, so the slowdown comes out larger than asked)."""

    def __init__(self, inner: Engine, factor: float, mode: str = "spin"):
        if mode not in ("spin", "sleep"):
            raise ValueError(f"mode {mode!r}: 'spin' or 'sleep'")
        self.inner, self.factor, self.mode = inner, factor, mode
        self.name, self.precisions, self.device_kind = inner.name, inner.precisions, inner.device_kind
        super().__init__(inner.model, inner.precision, inner.context)
        self.settings = dict(inner.settings)  # the same configuration: the same perf identity

    def _run(self, batch):
        start = time.perf_counter()
        out = self.inner.run(batch)
        extra = (self.factor - 1) * (time.perf_counter() - start)
        if self.mode == "sleep":
            time.sleep(extra)
        else:
            end = time.perf_counter() + extra
            while time.perf_counter() < end:
                pass
        return out

    def describe(self):
        return self.inner.describe()

    def clock(self):
        return self.inner.clock()  # an isolated inner engine's clock leaves its transit out; the added time counts


def _interleaved(a, b, pairs: int) -> float:
    """Median over ``pairs`` of time(a) / time(b), the two run alternately."""
    ratios = []
    for _ in range(pairs):
        t0 = time.perf_counter()
        a()
        t1 = time.perf_counter()
        b()
        t2 = time.perf_counter()
        ratios.append((t1 - t0) / (t2 - t1))
    return float(np.median(ratios))


def test_harness_call_adds_no_overhead_to_a_bare_session(facenet_reference, facenet_lfw):
    batch = facenet_lfw.batch(throughput.probe_batch_indices(facenet_lfw, 8))
    session, name = facenet_reference.session, facenet_reference.model.input_name

    def bare():
        session.run(None, {name: batch})

    def harness():
        facenet_reference.run(batch)

    for _ in range(3):
        bare(), harness()
    ratio = _interleaved(harness, bare, 40)
    print(f"harness / bare session time: {ratio:.3f}")
    assert ratio <= 1.05


def test_int8_is_faster_than_fp32_here(facenet_engines, facenet_lfw):
    batch = facenet_lfw.batch(throughput.probe_batch_indices(facenet_lfw, 8))
    fp32, int8 = facenet_engines("onnxruntime", "fp32"), facenet_engines("onnxruntime", "int8")
    for _ in range(3):
        fp32.run(batch), int8.run(batch)
    ratio = _interleaved(lambda: fp32.run(batch), lambda: int8.run(batch), 30)
    print(f"fp32 / int8 time on a batch of 8: {ratio:.2f}x ({environment.cpu_identity()['isa']})")
    assert ratio > 1.0


def test_batch_64_is_not_slower_per_image_than_batch_1(facenet_reference, facenet_lfw):
    b64 = facenet_lfw.batch(throughput.probe_batch_indices(facenet_lfw, 64))
    b1 = b64[:1]
    facenet_reference.run(b64), facenet_reference.run(b1)

    def sixty_four_singles():
        for i in range(64):
            facenet_reference.run(b64[i : i + 1])

    ratio = _interleaved(sixty_four_singles, lambda: facenet_reference.run(b64), 8)
    print(f"64 x batch-1 / one batch-64 time: {ratio:.2f}x")
    assert ratio >= 1.0


@pytest.fixture
def own_gate(facenet_gate, tmp_path):
    return Gate(
        facenet_gate.dataset,
        facenet_gate.reference,
        store=BaselineStore(tmp_path / "mine"),
        cache_dir=facenet_gate.cache_dir,
        log=None,
        progress=False,
    )


def undecidable(row) -> bool:
    """The measurement itself said it cannot decide (a loaded or unstable machine), with the reason."""
    return row.verdict is Verdict.INCONCLUSIVE and row.why.startswith("unstable measurement")


def test_comparison_passes_itself_and_fails_a_real_slowdown(facenet_reference, own_gate):
    """A baseline recorded in this run judges the next measurement (PASS, or INCONCLUSIVE when the
    machine is too noisy to decide; never FAIL), and the same engine 1.4x slower FAILs (or, on a machine
    loaded meanwhile, is INCONCLUSIVE with that reason; never PASS)."""
    case = [throughput.Case("compute", 8)]
    first = own_gate.perf(facenet_reference, case, QUICK, save_baseline="this test")
    assert first.rows[0].verdict is Verdict.NO_BASELINE, first.rows[0].why
    if "recorded as the baseline" not in first.rows[0].why:  # unstable: rightly not saved, nothing to judge
        assert first.rows[0].stability, first.rows[0].why
        pytest.skip(f"the machine was too busy to record a baseline: {first.rows[0].stability}")
    again = own_gate.perf(facenet_reference, case, QUICK)
    print("same engine:", again.rows[0].why)
    assert again.rows[0].verdict in (Verdict.PASS, Verdict.INCONCLUSIVE), again.rows[0].why
    slow = own_gate.perf(Slowed(facenet_reference, 1.4), case, QUICK)
    row = slow.rows[0]
    print("1.4x slower:", row.why)
    assert row.verdict is Verdict.FAIL or undecidable(row), row.why
    # slower beyond the 0.90 floor. One-sided: Slowed's waits also let the runtime's threads park, so the
    # real slowdown exceeds the 1.4x asked (benchmarks/perf_verdicts.py measured 0.52-0.66 on Zen 4, quiet)
    if row.verdict is Verdict.FAIL:
        assert row.ratio < 0.85, row.why


def test_a_driver_upgrade_is_compared_not_skipped(own_gate, facenet_reference):
    """Same device, another SDK/driver in the engine's stack: the old baseline applies and the change is shown."""
    case = throughput.Case("compute", 1)
    result = own_gate.perf(facenet_reference, [case], QUICK, save_baseline="driver A")
    ident, stack = result.identity, result.stack
    path = own_gate.store.writable() / "perf.json"
    doc = json.loads(path.read_text())
    if case.name not in doc["entries"][0]["results"]:
        pytest.skip(f"the machine was too busy to record a baseline: {result.rows[0].stability}")
    doc["entries"][0]["stack"] = {**stack, "runtime": "onnxruntime 1.31.0", "driver": "535.54"}
    path.write_text(json.dumps(doc))
    baseline, why = own_gate.store.perf_baseline(ident, case.name)
    assert baseline is not None, why
    upgraded = own_gate.perf(facenet_reference, [case], QUICK)
    row = upgraded.rows[0]
    assert row.verdict is not Verdict.NO_BASELINE
    assert any(c.startswith("runtime: onnxruntime 1.31.0 -> onnxruntime ") for c in row.stack_changes)
    assert any(c.startswith("driver: 535.54 -> ") for c in row.stack_changes)
    assert "software changed since the baseline" in row.why


def test_identity_policy():
    here = {
        "backend": "ixrt",
        "precision": "fp16",
        "model_sha256": "abc",
        "gpu": "Iluvatar MR-V100",
        "compute_capability": "7.1",
    }
    seed = {"backend": "ixrt", "precision": "fp16", "gpu": "Iluvatar MR-V100"}
    assert identity_matches(seed, here)  # the seed figures reach a real MR-V100 on any driver
    assert not identity_matches({**seed, "gpu": "Iluvatar BI-V150"}, here)
    cpu = {"backend": "onnxruntime", "precision": "fp32", "cpu": {"family": "25", "isa": ["avx2"], "cores": 2}}
    assert not identity_matches(cpu, {**cpu, "cpu": {"family": "26", "isa": ["avx2"], "cores": 2}})
    assert not identity_matches(cpu, {**cpu, "cpu": {"family": "25", "isa": ["avx2", "avx512_vnni"], "cores": 2}})
    assert stack_changes({"runtime": "ixrt 4.2.0", "driver": "1"}, {"runtime": "ixrt 4.3.0", "driver": "1"}) == [
        "runtime: ixrt 4.2.0 -> ixrt 4.3.0"
    ]


def test_seed_mr_v100_figures_are_reachable(facenet_store):
    here = {
        "backend": "ixrt",
        "precision": "int8",
        "model_sha256": "any",
        "gpu": "Iluvatar MR-V100",
        "compute_capability": "7.1",
    }
    baseline, why = facenet_store.perf_baseline(here, "compute-b64")
    assert baseline is not None and baseline["fps"] == 14274.306 and baseline["tolerance"] == 0.05, why
    assert baseline["unmatched"] == ["compute_capability", "model_sha256"]


def test_pytest_benchmark_timer_falls_back_when_disabled():
    """--benchmark-disable (or xdist) leaves pytest-benchmark without stats: the harness times the rounds."""
    calls = []

    class Disabled:
        enabled = False

        def pedantic(self, *a, **k):
            raise AssertionError("pedantic must not be used when disabled")

    times = throughput.pytest_benchmark_timer(Disabled())(
        lambda: calls.append("step"), 4, lambda: calls.append("setup")
    )
    assert len(times) == 4 and calls == ["setup", "step"] * 4


def test_a_perf_fail_says_which_stage_slowed(facenet_reference, own_gate):
    """The baseline records where a batch's time goes; a FAIL row compares each stage with it."""
    case = [throughput.Case("compute", 8)]
    first = own_gate.perf(Slowed(facenet_reference, 1.0), case, QUICK, save_baseline="this test").rows[0]
    recorded = json.loads((own_gate.store.writable() / "perf.json").read_text())["entries"][0]["results"]
    if "compute-b8" not in recorded:
        pytest.skip(f"the baseline was not recorded: {first.stability}")
    split = recorded["compute-b8"]["breakdown"]
    assert set(split["stages_ms"]) == {"host preprocessing", "engine call"} and split["batch"] == 8
    row = own_gate.perf(Slowed(facenet_reference, 1.4), case, QUICK).rows[0]
    if undecidable(row):
        pytest.skip(f"machine too noisy to decide: {row.why}")
    assert row.verdict is Verdict.FAIL, row.why
    top = row.stage_deltas[0]
    assert top.stage == "engine call" and top.ratio > 1.2, row.stage_deltas
    host = next(d for d in row.stage_deltas if d.stage == "host preprocessing")
    assert host.added_ms < top.added_ms / 4
    assert "slowed most: engine call" in row.why


def test_onnxruntime_profile_names_the_operator_that_got_slower(facenet_gate, facenet_reference, tmp_path):
    """One 3x3 convolution replaced by the same convolution as a zero-padded 7x7 (same outputs, ~5x the
    work): the breakdown against the original's names that node as the one that added the most time."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(facenet_reference.model.path)
    inits = {i.name: i for i in m.graph.initializer}
    conv = next(
        n
        for n in m.graph.node
        if n.op_type == "Conv"
        and numpy_helper.to_array(inits[n.input[1]]).shape[2:] == (3, 3)
        and all(a.name != "pads" or list(a.ints) == [1, 1, 1, 1] for a in n.attribute)
        and any(a.name == "pads" for a in n.attribute)
    )
    w = numpy_helper.to_array(inits[conv.input[1]])
    inits[conv.input[1]].CopyFrom(numpy_helper.from_array(np.pad(w, ((0, 0), (0, 0), (2, 2), (2, 2))), conv.input[1]))
    for a in conv.attribute:
        if a.name == "pads":
            a.ints[:] = [3, 3, 3, 3]
        if a.name == "kernel_shape":
            a.ints[:] = [7, 7]
    path = tmp_path / "slow-conv.onnx"
    onnx.save(m, path)
    from harness import model as model_

    case = throughput.Case("compute", 8)
    base = throughput.breakdown(facenet_reference, facenet_gate.dataset, case)
    assert sum(v for k, v in base.stages_ms.items() if k != "host preprocessing") > 0
    assert max(base.stages_ms, key=base.stages_ms.get).startswith(("Conv ", "other Conv"))
    with engines.create("onnxruntime", model_.inspect(path), "fp32", facenet_gate.engine_context()) as slow:
        deltas = throughput.breakdown(slow, facenet_gate.dataset, case).against(base.to_record())
    assert deltas[0].stage.startswith("Conv ") and deltas[0].ratio > 2, deltas[:3]
    # onnxruntime names a fused Conv+Relu after the Relu's output: the same layer scope as the conv's
    assert f" {conv.name.rsplit('/', 2)[0]}/" in deltas[0].stage, (conv.name, deltas[0])


def test_stage_split_is_in_the_gate_markdown():
    from harness import report

    split = throughput.Breakdown("compute-b8", 8, "test", {"host preprocessing": 1.0, "engine call": 70.0})
    deltas = split.against({"stages_ms": {"host preprocessing": 1.0, "engine call": 50.0}})
    assert [d.stage for d in deltas] == ["engine call", "host preprocessing"]
    assert deltas[0].added_ms == pytest.approx(20.0) and deltas[0].ratio == pytest.approx(1.4)

    class Row:  # the fields of PerfRow the stage table reads
        case, breakdown, stage_deltas = "compute-b8", split, deltas

    md = "\n".join(report._stage_markdown(Row))
    assert "| engine call | 50.000 | 70.000 | +20.000 | 1.40x |" in md
    assert split.against(None) == [] and split.against({}) == []
