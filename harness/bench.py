"""Throughput measurement core, shared by ``facenet-harness bench`` and the pytest-benchmark tests.

A case is a view at a batch size:
  * ``compute``: the engine call on a batch already preprocessed in memory (real LFW crops, never
    zeros);
  * ``pipeline``: decode + crop + preprocess + infer, overlapped as the accuracy gate runs it (for
    GPU engines the view that includes host<->device copies).
Each measurement warms up for a fixed time, then times single steps until both a minimum
duration and a minimum number of rounds are reached; throughput is images / total timed seconds,
latency percentiles are per step.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable

import numpy as np

from . import accuracy
from .engines import Capability, Engine
from .data import Dataset
from .environment import cpu_count

BATCHES = (1, 8, 64)
PIPELINE_BATCHES_PER_STEP = 2


@dataclasses.dataclass(frozen=True)
class Case:
    view: str  # "compute" or "pipeline"
    batch: int

    @property
    def name(self) -> str:
        return f"{self.view}-b{self.batch}"


CASES = tuple(Case("compute", b) for b in BATCHES) + (Case("pipeline", 64),)


@dataclasses.dataclass(frozen=True)
class Settings:
    warmup_s: float = 2.0
    min_duration_s: float = 6.0
    min_rounds: int = 5


@dataclasses.dataclass
class Measurement:
    case: Case
    images_per_step: int
    latencies: np.ndarray  # seconds per step
    last_output: Any = None  # what the last timed step computed
    indices: list[int] = dataclasses.field(default_factory=list)  # the protocol images one step handles

    @property
    def fps(self) -> float:
        return self.images_per_step * len(self.latencies) / float(np.sum(self.latencies))

    @property
    def cv(self) -> float:
        """Coefficient of variation of the step time."""
        return float(np.std(self.latencies) / np.mean(self.latencies))

    def summary(self) -> dict:
        ms = self.latencies * 1e3
        return {"case": self.case.name, "view": self.case.view, "batch": self.case.batch, "fps": self.fps,
                "rounds": len(self.latencies), "images_per_step": self.images_per_step,
                "latency_ms": {"median": float(np.median(ms)), "p90": float(np.percentile(ms, 90)),
                               "p99": float(np.percentile(ms, 99)), "mean": float(np.mean(ms))},
                "cv": self.cv}


def probe_batch_indices(dataset: Dataset, batch: int, offset: int = 0) -> list[int]:
    """``batch`` protocol images spread over the dataset (deterministic)."""
    n = len(dataset.keys)
    return [(offset + i * (n // batch)) % n for i in range(batch)]


def make_step(engine: Engine, dataset: Dataset, case: Case) -> tuple[Callable[[], Any], int, list[int]]:
    """The callable timed for a case, the images one call handles, and which images those are."""
    if case.view == "compute":
        indices = probe_batch_indices(dataset, case.batch)
        batch = dataset.batch(indices)
        if Capability.COMPUTE_ONLY in engine.capabilities:  # data already on the device, execution alone
            engine.load_in_place(batch)
            return engine.execute_in_place, case.batch, indices
        return (lambda: engine.run(batch)), case.batch, indices
    if case.view == "pipeline":
        indices = probe_batch_indices(dataset, case.batch * PIPELINE_BATCHES_PER_STEP, offset=1)

        def step():
            return accuracy.embed(engine, dataset, case.batch, indices=indices)[indices]

        return step, len(indices), indices
    raise ValueError(f"unknown view {case.view!r}")


def rounds_for(step: Callable[[], Any], settings: Settings) -> int:
    """Warm up for ``warmup_s`` (at least one call) and size the timed rounds to the minimum duration."""
    start = time.perf_counter()
    calls = 0
    while calls == 0 or time.perf_counter() - start < settings.warmup_s:
        step()
        calls += 1
    per_call = (time.perf_counter() - start) / calls
    return max(settings.min_rounds, math.ceil(settings.min_duration_s / per_call))


def measure(engine: Engine, dataset: Dataset, case: Case, settings: Settings = Settings(),
            timer: Callable[[Callable[[], Any], int], list[float]] | None = None) -> Measurement:
    """Warm up, then time ``rounds`` steps; ``timer(step, rounds)`` may delegate the timing (pytest-benchmark)."""
    step, images, indices = make_step(engine, dataset, case)
    rounds = rounds_for(step, settings)
    box = {}

    def recorded():
        box["out"] = step()

    latencies = (timer or _time_steps)(recorded, rounds)
    out = box.get("out")
    if out is None and Capability.COMPUTE_ONLY in engine.capabilities:  # what the timed in-place executions computed
        out = engine.fetch_in_place()[:images]
    return Measurement(case, images, np.asarray(latencies, float), out, indices)


def _time_steps(step: Callable[[], Any], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        step()
        out.append(time.perf_counter() - start)
    return out


def fingerprint(engine: Engine) -> dict:
    """What a throughput figure depends on: engine, its version, precision, device and cores."""
    d = engine.describe()
    fp = {"backend": d["backend"], "precision": d["precision"], "version": d["version"], "device": d["device"]}
    if d.get("provider") == "CPUExecutionProvider":
        fp["cpu_count"] = cpu_count()
    for extra in ("driver", "compute_capability"):
        if extra in d:
            fp[extra] = d[extra]
    return fp


def pytest_benchmark_timer(benchmark) -> Callable[[Callable[[], Any], int], list[float]]:
    """A ``timer`` for ``measure`` that lets pytest-benchmark time the rounds (so --benchmark-compare and
    --benchmark-save see them) and hands back its per-round data."""

    def timer(step, rounds):
        benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=0)
        return list(benchmark.stats.stats.data)

    return timer
