"""Throughput measurement core, shared by ``facenet-harness bench``, the gate and the pytest-benchmark tests.

A case is a view at a batch size:
  * ``compute``: the engine call on a batch already preprocessed in memory (real LFW crops, never
    zeros); engines with ``Capability.COMPUTE_ONLY`` time execution alone on data already on the device;
  * ``pipeline``: a continuous decode -> crop -> preprocess -> infer stream in steady state (what a
    deployment sustains): background threads keep decoding the next batches while the engine runs.
Each measurement warms up for a fixed time, then times single steps until both a minimum duration and
a minimum number of rounds are reached. The timed steps form ``perfstats.MAX_BLOCKS`` consecutive
blocks; on CPU engines a burst of a fixed canary workload (a float32 GEMM in numpy) runs before each
block, outside the engine's clock: its rate is reported beside the ratio as context, never judged
(``harness.checks.perfstats`` says why). An unstable series (spread, two levels, or other processes using the
CPUs meanwhile) is measured again, up to ``Settings.max_attempts`` and within ``Settings.budget_s``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from harness.checks import perfstats
from harness.core.results import Breakdown, Case, Measurement, Settings
from harness.engines import Capability, Engine
from harness.lfw.data import Dataset
from harness.store import environment

BATCHES = (1, 8, 64)
PIPELINE_POOL_BATCHES = 4  # the stream cycles over this many different batches of protocol images
PIPELINE_PREFETCH = 2
CANARY_SIZE = 512  # a 512^3 float32 GEMM: about 1 ms on this 2-core VM
CANARY_BURST = 9  # runs per block; their median is the block's canary rate


CASES = tuple(Case("compute", b) for b in BATCHES) + (Case("pipeline", 64),)


class Canary:
    """A fixed CPU workload whose rate (runs/s) tracks how much of the machine this process gets."""

    def __init__(self, size: int = CANARY_SIZE):
        rng = np.random.default_rng(0)
        self.a = rng.standard_normal((size, size)).astype(np.float32)
        self.b = rng.standard_normal((size, size)).astype(np.float32)

    def __call__(self) -> float:
        """Run once; seconds it took."""
        start = time.perf_counter()
        np.matmul(self.a, self.b)
        return time.perf_counter() - start

    def burst(self, runs: int = CANARY_BURST) -> float:
        """Median seconds of ``runs`` back-to-back runs (the block's canary value)."""
        return float(np.median([self() for _ in range(runs)]))


class LoadMonitor:
    """How much of the machine *other* processes (and the hypervisor: steal time) used while we measured:
    system-wide busy CPU time from /proc/stat minus this process's own CPU time, as a fraction of all
    CPUs over the wall time. None where /proc/stat is unreadable."""

    def __init__(self):
        self.start = self._read()

    @staticmethod
    def _read():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        busy = sum(fields[:8]) - idle  # user nice system irq softirq steal (guest time is inside user)
        own = os.times()
        return time.perf_counter(), busy / os.sysconf("SC_CLK_TCK"), own.user + own.system

    def others_share(self) -> float | None:
        end = self._read()
        if self.start is None or end is None:
            return None
        wall = end[0] - self.start[0]
        others = (end[1] - self.start[1]) - (end[2] - self.start[2])
        return max(0.0, others / max(wall * (os.cpu_count() or 1), 1e-9))


def canary_applies(engine: Engine) -> bool:
    """The canary speaks for CPU engines only: a GPU engine's speed does not follow the host's load."""
    return getattr(engine, "device_kind", "cpu") == "cpu"


def probe_batch_indices(dataset: Dataset, batch: int, offset: int = 0) -> list[int]:
    """``batch`` protocol images spread over the dataset (deterministic)."""
    n = len(dataset.keys)
    return [(offset + i * (n // batch)) % n for i in range(batch)]


def breakdown(engine: Engine, dataset: Dataset, case: Case, runs: int = 3) -> Breakdown:
    """The stage split of one batch of ``case``: host preprocessing (a batch of protocol faces made ready
    for the engine, as the pipeline view does) and the engine's own stages (``Engine.profile``)."""
    indices = probe_batch_indices(dataset, case.batch)
    dataset.batch(indices)  # warm (and build the crop cache, if one is set)
    start = time.perf_counter()
    for _ in range(runs):
        batch = dataset.batch(indices)
    host_ms = (time.perf_counter() - start) * 1e3 / runs
    stages, source = engine.profile(batch, runs)
    return Breakdown(case.name, case.batch, source, {"host preprocessing": host_ms, **stages})


class Step:
    """One timed unit of a case: ``step()`` runs it; ``indices`` are the images the last call handled."""

    def __init__(self, fn: Callable[[], Any], images: int, indices: list[int]):
        self.fn, self.images, self.indices = fn, images, indices

    def __call__(self):
        return self.fn()

    def close(self) -> None:
        pass


class PipelineStream(Step):
    """decode -> crop -> preprocess in background threads, infer in the caller, continuously."""

    def __init__(self, engine: Engine, dataset: Dataset, batch: int, prefetch: int = PIPELINE_PREFETCH):
        pool = probe_batch_indices(dataset, batch * PIPELINE_POOL_BATCHES, offset=1)
        self.chunks = [pool[i : i + batch] for i in range(0, len(pool), batch)]
        self.engine, self.dataset = engine, dataset
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=prefetch)
        self.next = 0
        self.pending: collections.deque = collections.deque()
        for _ in range(prefetch):
            self._submit()
        super().__init__(self._step, batch, self.chunks[0])

    def _submit(self):
        chunk = self.chunks[self.next % len(self.chunks)]
        self.next += 1
        self.pending.append((chunk, self.executor.submit(self.dataset.batch, chunk)))

    def _step(self):
        chunk, future = self.pending.popleft()
        batch = future.result()
        self._submit()
        self.indices = chunk
        return self.engine.run(batch)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def make_step(engine: Engine, dataset: Dataset, case: Case) -> Step:
    """The callable timed for a case."""
    if case.view == "compute":
        indices = probe_batch_indices(dataset, case.batch)
        batch = dataset.batch(indices)
        if Capability.COMPUTE_ONLY in engine.capabilities:  # data already on the device, execution alone
            engine.load_in_place(batch)
            return Step(engine.execute_in_place, case.batch, indices)
        return Step(lambda: engine.run(batch), case.batch, indices)
    if case.view == "pipeline":
        return PipelineStream(engine, dataset, case.batch)
    raise ValueError(f"unknown view {case.view!r}")


def rounds_for(step: Callable[[], Any], settings: Settings, canary: Canary | None = None) -> int:
    """Warm up for ``warmup_s`` (at least one call) and size the timed rounds to the minimum duration."""
    if canary:
        canary.burst()
    start = time.perf_counter()
    calls = 0
    while calls == 0 or time.perf_counter() - start < settings.warmup_s:
        step()
        calls += 1
    per_call = (time.perf_counter() - start) / calls
    return max(settings.min_rounds, math.ceil(settings.min_duration_s / per_call))


Timer = Callable[[Callable[[], Any], int, Callable[[], Any] | None, Callable[[], float]], list[float]]


def block_starts(rounds: int) -> list[int]:
    """First round of each block (the same cut ``perfstats.block_values`` makes)."""
    return [int(b[0]) for b in np.array_split(np.arange(rounds), perfstats.blocks_for(rounds))]


def measure(
    engine: Engine, dataset: Dataset, case: Case, settings: Settings | None = None, timer: Timer | None = None
) -> Measurement:
    """Warm up, then time ``rounds`` steps in blocks, a canary burst before each block (CPU engines);
    again while the series is unstable, up to ``settings.max_attempts``. ``timer(step, rounds, setup)``
    may delegate the first attempt's timing (pytest-benchmark times a fixture once per test)."""
    settings = settings or Settings()
    step = make_step(engine, dataset, case)
    canary = Canary() if settings.canary and canary_applies(engine) else None
    box = {}

    def recorded():
        box["out"] = step()
        box["indices"] = list(step.indices)

    try:
        began = time.perf_counter()
        rounds = rounds_for(step, settings, canary)
        starts = block_starts(rounds)
        for attempt in range(1, settings.max_attempts + 1):
            per_block: list[float] = []
            counter = [0]

            def setup(counter=counter, per_block=per_block):
                if counter[0] in starts:
                    per_block.append(canary.burst())
                counter[0] += 1

            run = timer if attempt == 1 and timer else _time_steps
            monitor = LoadMonitor()
            attempt_start = time.perf_counter()
            latencies = np.asarray(run(recorded, rounds, setup if canary else None, engine.clock), float)
            load = monitor.others_share()
            now = time.perf_counter()
            canary_arr = np.repeat(per_block, np.diff(starts + [len(latencies)])) if canary else None
            m = Measurement(case, step.images, latencies, canary_arr, attempts=attempt, load=load)
            m.stability = perfstats.stability(m.samples, load=load)
            if m.stability.stable:
                break
            spent, last = now - began, now - attempt_start
            if attempt < settings.max_attempts and spent + last > settings.budget_s:
                m.stability = dataclasses.replace(
                    m.stability,
                    why=f"{m.stability.why}; not measured again: {spent:.0f} s of the case's "
                    f"{settings.budget_s:.0f} s budget spent after {attempt} measurement(s)",
                )
                break
    finally:
        step.close()
    m.last_output = box.get("out")
    if m.last_output is None and Capability.COMPUTE_ONLY in engine.capabilities:  # the timed in-place executions
        m.last_output = engine.fetch_in_place()[: step.images]
    m.indices = box.get("indices", step.indices)
    if Capability.TIMING_SPLIT in engine.capabilities:  # now: the next case's calls overwrite engine.timings
        m.split_ms = dict(engine.timings)
    return m


def _time_steps(
    step: Callable[[], Any],
    rounds: int,
    setup: Callable[[], Any] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Seconds of each of ``rounds`` steps by ``clock`` (the engine's: an isolated engine's stops while
    a call is in transit)."""
    out = []
    for _ in range(rounds):
        if setup:
            setup()
        start = clock()
        step()
        out.append(clock() - start)
    return out


def identity(engine: Engine) -> dict:
    """What a throughput figure is *of*: engine family, precision, model, the engine's declared settings
    (threads, INT8 format and calibration, profile), and the device (CPU: vendor,
    family/model/stepping, kernel-relevant ISA features, cores; GPU: name and compute capability).
    A baseline is only ever compared with a run of the same identity."""
    d = engine.describe()
    ident = {
        "backend": d["backend"],
        "precision": d["precision"],
        "model_sha256": engine.model.sha256,
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(engine.settings.items())},
    }
    if canary_applies(engine):
        ident["cpu"] = environment.cpu_identity()
    else:
        ident["gpu"] = d.get("device")
        ident["compute_capability"] = d.get("compute_capability")
    return ident


def stack(engine: Engine) -> dict:
    """The software a throughput figure was measured with: recorded with a baseline and compared (a
    driver or SDK upgrade is what the gate judges), never part of the match."""
    d = engine.describe()
    env = environment.fingerprint()
    out = {
        "runtime": f"{d['backend']} {d.get('version')}",
        "harness": env.get("harness"),
        "python": env["python"],
        "numpy": env["numpy"],
    }
    for key in ("driver", "cuda_driver_api", "api", "provider", "threads", "cudnn"):
        if d.get(key) is not None:
            out[key] = str(d[key])
    fingerprint = getattr(engine, "device_fingerprint", None)
    if callable(fingerprint) and not canary_applies(engine):  # a GPU's maximum clocks (nvidia-smi), where known
        clocks = fingerprint().get("max_clocks_mhz")
        if clocks is not None:
            out["max_clocks_mhz"] = str(clocks)
    return out


def pytest_benchmark_timer(benchmark) -> Timer:
    """A timer for ``measure`` that lets pytest-benchmark time the rounds (so --benchmark-compare and
    --benchmark-save see them; the canary runs in its untimed setup) and hands back its per-round data."""

    def timer(step, rounds, setup=None, clock=time.perf_counter):
        if not getattr(benchmark, "enabled", True):  # --benchmark-disable, or xdist: time it ourselves
            return _time_steps(step, rounds, setup, clock)
        if clock is not time.perf_counter:  # an isolated engine: pytest-benchmark times by its clock too
            benchmark._timer = clock  # what --benchmark-timer sets (pytest-benchmark 5: BenchmarkFixture)
        benchmark.pedantic(step, setup=setup, rounds=rounds, iterations=1, warmup_rounds=0)
        return list(benchmark.stats.stats.data)

    return timer
