"""Soak: several instances of one engine run at once for a while, every output checked.

What a short conformance run cannot show: races between instances (shared buffers, streams, a global
setting one instance changes under another), state that goes stale after many calls, memory that grows
with every batch, and throughput that sags as a device heats up.  ``soak`` starts ``workers`` threads,
each with its own engine (on a GPU: its own buffers and stream), cycling through the conformance probe
batches (each worker starting at a different batch) until the time is up.  Every output is compared
with the reference embeddings of those images under the precision's conformance tolerance.

Verdict:
  FAIL         any output beyond the tolerance, any worker error, or resident memory that grew after
               the warm-up by more than ``LEAK_MIB`` MiB and ``LEAK_FRACTION`` of the warm size;
  INCONCLUSIVE a worker completed no full rotation of the probe batches in the time given (too short
               to have checked every batch once);
  PASS         otherwise.
Throughput per window and its drift (last window over first) are reported, never judged: on a shared
machine they follow the neighbours as much as the engine (see harness/perfstats.py for perf verdicts).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
import traceback
from typing import Callable, Sequence

import numpy as np

from . import compare, environment
from .engines import Engine
from .errors import HarnessError
from .gate import DatasetRef, Gate, ModelRef, _Result
from .verdicts import Verdict

LEAK_MIB = 64.0
LEAK_FRACTION = 0.10
WINDOWS = 10  # throughput windows after the warm-up, at most
SAMPLE_SECONDS = 0.25
MAX_REPORTED = 10


def rss_mib() -> float | None:
    """This process's resident memory in MiB (Linux /proc), None where it cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """One output beyond the tolerance (or a worker's error)."""

    worker: int
    call: int  # the worker's call number, from 0
    batch: int  # index of the probe batch
    seconds: float  # since the soak started
    detail: str  # the comparison's failures, or the error


@dataclasses.dataclass(eq=False)
class SoakResult(_Result):
    engine: dict  # Engine.describe() of worker 0
    model: ModelRef
    dataset: DatasetRef
    verdict: Verdict
    reasons: list[str]
    workers: int
    seconds: float
    batch_size: int
    calls: int
    images: int
    checked_outputs: int
    mismatches: int
    first_mismatches: list[Mismatch]  # at most MAX_REPORTED, in time order
    rotations_min: int  # the fewest full passes over the probe batches any worker made
    window_seconds: float
    window_images_per_second: list[float]  # all workers together, after the warm-up
    throughput_drift: float | None  # last window / first window
    throughput_cv: float | None
    rss_warm_mib: float | None  # after every worker's first rotation
    rss_end_mib: float | None
    rss_peak_mib: float | None
    rss_growth_mib: float | None
    rss_slope_mib_per_minute: float | None
    max_change_vs_first_output: float  # largest |difference| of an output from the same worker's first one
    environment: dict

    def __repr__(self) -> str:
        return (f"<SoakResult {self.engine['backend']} {self.engine['precision']} x{self.workers}: {self.verdict}, "
                f"{self.checked_outputs} outputs checked, {self.mismatches} beyond tolerance>")


class _Worker(threading.Thread):
    def __init__(self, wid: int, engine: Engine, batches, references, keys, tol, deadline, start):
        super().__init__(name=f"soak-{wid}", daemon=True)
        self.wid, self.engine, self.batches, self.references, self.keys, self.tol = wid, engine, batches, references, keys, tol
        self.deadline, self.t0 = deadline, start
        self.done: list[tuple[float, int]] = []  # (seconds since start, images) per call
        self.rotations = 0
        self.mismatches: list[Mismatch] = []
        self.mismatch_count = 0
        self.max_change = 0.0
        self.warm = threading.Event()

    def run(self) -> None:
        calls = 0
        first: dict[int, np.ndarray] = {}
        n = len(self.batches)
        try:
            while time.perf_counter() < self.deadline:
                b = (self.wid + calls) % n
                out = self.engine.run(self.batches[b])
                now = time.perf_counter() - self.t0
                self.done.append((now, len(out)))
                result = compare.compare(self.references[b], out, self.keys[b], self.tol)
                if not result.passed:
                    self._mismatch(calls, b, now, "; ".join(result.failures))
                if b in first:
                    self.max_change = max(self.max_change, float(np.max(np.abs(out - first[b]))))
                else:
                    first[b] = np.array(out, copy=True)
                calls += 1
                if calls % n == 0:
                    self.rotations += 1
                    self.warm.set()
        except Exception as e:  # noqa: BLE001 - a worker's error is a soak finding, reported with its place
            where = traceback.extract_tb(e.__traceback__)[-1]
            self._mismatch(calls, -1, time.perf_counter() - self.t0,
                           f"{type(e).__name__}: {e} ({os.path.basename(where.filename)}:{where.lineno})")
        finally:
            self.warm.set()

    def _mismatch(self, call: int, batch: int, seconds: float, detail: str) -> None:
        self.mismatch_count += 1
        if len(self.mismatches) < MAX_REPORTED:
            self.mismatches.append(Mismatch(self.wid, call, batch, round(seconds, 3), detail))


def soak(gate: Gate, make: Callable[[], Engine], *, workers: int = 2, seconds: float = 60.0,
         batch_size: int | None = None, log: Callable[[str], None] | None = None) -> SoakResult:
    """Run ``workers`` engines from ``make()`` at once for ``seconds`` on the probe set; see the module doc.

    The engines are made (built, calibrated, loaded) one after another before the clock starts, and all
    closed at the end; only running them overlaps.
    """
    if workers < 1 or seconds <= 0:
        raise HarnessError(f"soak needs at least 1 worker and a positive duration, got {workers} and {seconds} s.")
    with contextlib.ExitStack() as stack:
        engines = [stack.enter_context(make()) for _ in range(workers)]
        return _soak(gate, engines, seconds, batch_size, log or gate.log)


def _soak(gate: Gate, engines: Sequence[Engine], seconds: float, batch_size: int | None, log) -> SoakResult:
    bs = batch_size or gate.batch_size
    indices = gate.probe_indices()
    reference, _ = gate.reference_probe(indices)
    chunks = [list(range(i, min(i + bs, len(indices)))) for i in range(0, len(indices), bs)]
    batches = [gate.dataset.batch([indices[j] for j in c]) for c in chunks]
    references = [reference[c] for c in chunks]
    keys = [[gate.dataset.keys[indices[j]] for j in c] for c in chunks]
    tol = compare.Tolerance.from_dict(gate.store.precision_tolerance(engines[0].precision))

    samples: list[tuple[float, float]] = []
    start = time.perf_counter()
    deadline = start + seconds
    threads = [_Worker(w, e, batches, references, keys, tol, deadline, start) for w, e in enumerate(engines)]
    log(f"soak: {len(engines)} x {engines[0].label} over {len(batches)} probe batches of <= {bs} for {seconds:g} s")
    for t in threads:
        t.start()
    warm_at = None
    while any(t.is_alive() for t in threads):
        rss = rss_mib()
        now = time.perf_counter() - start
        if rss is not None:
            samples.append((now, rss))
        if warm_at is None and all(t.warm.is_set() for t in threads):
            warm_at = now
        time.sleep(SAMPLE_SECONDS)
    for t in threads:
        t.join()
    end = time.perf_counter() - start
    return _result(gate, engines[0], threads, samples, warm_at, end, bs)


def _result(gate: Gate, engine: Engine, threads: Sequence[_Worker], samples, warm_at, end: float, bs: int
            ) -> SoakResult:
    mismatches = sorted((m for t in threads for m in t.mismatches), key=lambda m: m.seconds)
    count = sum(t.mismatch_count for t in threads)
    done = sorted(d for t in threads for d in t.done)
    rotations = min(t.rotations for t in threads)
    warm = warm_at if warm_at is not None else end
    # throughput windows over the post-warm-up time: up to WINDOWS, with at least 4 calls each on average
    times = np.array([d[0] for d in done])
    images = np.array([d[1] for d in done])
    windows = min(WINDOWS, int(np.count_nonzero(times >= warm)) // 4)
    width = (end - warm) / windows if windows else 0.0
    rates = []
    if windows >= 2:
        for k in range(windows):
            lo, hi = warm + k * width, warm + (k + 1) * width
            rates.append(float(images[(times >= lo) & (times < hi)].sum() / width))
    drift = rates[-1] / rates[0] if len(rates) > 1 and rates[0] > 0 else None
    cv = float(np.std(rates) / np.mean(rates)) if rates and np.mean(rates) > 0 else None

    rss_warm = rss_end = rss_peak = growth = slope = None
    if samples:
        ts = np.array([s[0] for s in samples])
        rs = np.array([s[1] for s in samples])
        after = ts >= warm
        rss_peak, rss_end = float(rs.max()), float(rs[-1])
        if after.any():
            rss_warm = float(rs[after][0])
            growth = rss_end - rss_warm
            if after.sum() >= 3 and np.ptp(ts[after]) > 0:
                slope = float(np.polyfit(ts[after], rs[after], 1)[0] * 60)

    reasons = []
    if count:
        reasons.append(f"{count} outputs or calls failed (first: worker {mismatches[0].worker}, "
                       f"call {mismatches[0].call}: {mismatches[0].detail})")
    if growth is not None and rss_warm is not None and growth > max(LEAK_MIB, LEAK_FRACTION * rss_warm):
        reasons.append(f"resident memory grew {growth:.0f} MiB after the warm-up ({rss_warm:.0f} -> {rss_end:.0f} "
                       f"MiB; limit max({LEAK_MIB:.0f} MiB, {LEAK_FRACTION:.0%}))")
    if reasons:
        verdict = Verdict.FAIL
    elif rotations < 1:
        verdict = Verdict.INCONCLUSIVE
        reasons.append("a worker did not run every probe batch once in the time given; soak longer")
    else:
        verdict = Verdict.PASS
    return SoakResult(
        engine=engine.describe(), model=ModelRef.of(engine.model), dataset=DatasetRef.of(gate.dataset),
        verdict=verdict, reasons=reasons, workers=len(threads), seconds=round(end, 3), batch_size=bs,
        calls=len(done), images=int(sum(d[1] for d in done)), checked_outputs=len(done), mismatches=count,
        first_mismatches=mismatches, rotations_min=rotations, window_seconds=round(width, 3),
        window_images_per_second=[round(r, 2) for r in rates], throughput_drift=drift, throughput_cv=cv,
        rss_warm_mib=rss_warm, rss_end_mib=rss_end, rss_peak_mib=rss_peak, rss_growth_mib=growth,
        rss_slope_mib_per_minute=slope, max_change_vs_first_output=max(t.max_change for t in threads),
        environment=environment.fingerprint())
