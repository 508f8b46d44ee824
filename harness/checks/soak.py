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
machine they follow the neighbours as much as the engine (see harness/checks/perfstats.py for perf verdicts).
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from harness.checks import conformance
from harness.core.errors import HarnessError
from harness.core.results import DatasetRef, Mismatch, ModelRef, SoakResult, Tolerance
from harness.core.verdicts import Verdict
from harness.engines import Engine
from harness.store import environment

if TYPE_CHECKING:
    from harness.lfw.data import Dataset
    from harness.store.baselines import BaselineStore

LEAK_MIB = 64.0
LEAK_FRACTION = 0.10
WINDOWS = 10  # throughput windows after the warm-up, at most
SAMPLE_SECONDS = 0.25
MAX_REPORTED = 10


class Context(Protocol):
    """What the soak takes from its caller (``harness.gate.Gate`` is one): the data, the probe set and its
    reference embeddings, the tolerances, where to log."""

    dataset: Dataset
    store: BaselineStore
    batch_size: int
    log: Callable[[str], None]

    def probe_indices(self) -> list[int]: ...

    def reference_probe(self, indices: Sequence[int]) -> tuple[np.ndarray, str]: ...


def rss_mib() -> float | None:
    """This process's resident memory in MiB (Linux /proc), None where it cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


class _Worker(threading.Thread):
    """One engine, made, warmed, run and closed on this thread (a CUDA context or stream belongs to the
    thread that made it); making and warming are serialised across workers by ``setup_lock`` (one build
    or calibration at a time, and a CUDA graph captured while no other worker runs)."""

    def __init__(self, wid: int, make: Callable[[], Engine], batches, setup_lock: threading.Lock):
        super().__init__(name=f"soak-{wid}", daemon=True)
        self.wid, self.make, self.batches, self.setup_lock = wid, make, batches, setup_lock
        self.engine: Engine | None = None
        self.description: dict | None = None
        self.setup_error: BaseException | None = None
        self.ready, self.go = threading.Event(), threading.Event()
        # set by soak() before ``go``
        self.references: list[np.ndarray] | None = None
        self.keys: list[list[str]] | None = None
        self.tol: Tolerance | None = None
        self.t0 = self.deadline = 0.0
        self.cancelled = False
        self.loop_end: float | None = None  # seconds since start when this worker stopped running
        self.min_rotations = 0
        # findings
        self.done: list[tuple[float, int]] = []  # (seconds since start, images) per call
        self.rotations = 0
        self.mismatches: list[Mismatch] = []
        self.mismatch_count = 0
        self.max_change = 0.0
        self.warm = threading.Event()

    def run(self) -> None:
        try:
            with self.setup_lock:
                self.engine = self.make()
                self.description = self.engine.describe()
                for shape in {b.shape: b for b in self.batches}.values():
                    self.engine.run(shape)  # warm: every batch shape once (CUDA graphs captured here)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which raises it
            self.setup_error = e
        self.ready.set()
        self.go.wait()
        calls = 0
        try:
            if self.setup_error is None and not self.cancelled:
                calls = self._loop()
                self.loop_end = time.perf_counter() - self.t0
        except BaseException as e:  # noqa: BLE001 - any exit of a worker (SystemExit too) is a soak finding
            self._error(calls, e)
        finally:
            self.warm.set()
            if self.engine is not None:
                try:
                    self.engine.close()
                except BaseException as e:  # noqa: BLE001 - a failed release is a finding too
                    self._error(calls, e, "close: ")

    def _loop(self) -> int:
        calls = 0
        first: dict[int, np.ndarray] = {}
        n = len(self.batches)
        engine, references, keys, tol = self.engine, self.references, self.keys, self.tol
        # run() loops only once the engine is made, and soak() sets the rest before ``go``
        assert engine is not None and references is not None and keys is not None and tol is not None
        while time.perf_counter() < self.deadline or self.rotations < self.min_rotations:
            b = (self.wid + calls) % n
            out = engine.run(self.batches[b])
            now = time.perf_counter() - self.t0
            self.done.append((now, len(out)))
            result = conformance.compare(references[b], out, keys[b], tol)
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
        return calls

    def _error(self, call: int, e: BaseException, prefix: str = "") -> None:
        where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
        place = f" ({os.path.basename(where.filename)}:{where.lineno})" if where else ""
        self._mismatch(call, -1, time.perf_counter() - self.t0, f"{prefix}{type(e).__name__}: {e}{place}")

    def _mismatch(self, call: int, batch: int, seconds: float, detail: str) -> None:
        self.mismatch_count += 1
        if len(self.mismatches) < MAX_REPORTED:
            self.mismatches.append(Mismatch(self.wid, call, batch, round(seconds, 3), detail))


def soak(
    gate: Context,
    make: Callable[[], Engine],
    *,
    workers: int = 2,
    seconds: float = 60.0,
    min_rotations: int = 0,
    batch_size: int | None = None,
    log: Callable[[str], None] | None = None,
) -> SoakResult:
    """Run ``workers`` engines from ``make()`` at once for ``seconds`` on the probe set; see the module doc.

    Each worker makes its engine on its own thread, one after another (builds, calibration and CUDA graph
    capture are not timed and never overlap); the clock starts when all are warm, and each closes its engine
    on its own thread at the end. An engine that cannot be made raises here, as a plain run would.
    ``min_rotations``: each worker goes on past ``seconds`` until it has run every probe batch that many
    times (a slow or loaded machine still gets a warm-up pass and judged passes).
    """
    if workers < 1 or seconds <= 0:
        raise HarnessError(f"soak needs at least 1 worker and a positive duration, got {workers} and {seconds} s.")
    log = log or gate.log
    bs = batch_size or gate.batch_size
    indices = gate.probe_indices()
    reference, _ = gate.reference_probe(indices)
    chunks = [list(range(i, min(i + bs, len(indices)))) for i in range(0, len(indices), bs)]
    batches = [gate.dataset.batch([indices[j] for j in c]) for c in chunks]
    references = [reference[c] for c in chunks]
    keys = [[gate.dataset.keys[indices[j]] for j in c] for c in chunks]

    setup_lock = threading.Lock()
    threads = [_Worker(w, make, batches, setup_lock) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.ready.wait()
    failed = next((t.setup_error for t in threads if t.setup_error is not None), None)
    if failed is not None:
        for t in threads:
            t.cancelled = True
            t.go.set()
            t.join()
        raise failed
    engine = threads[0].engine
    assert engine is not None  # every worker made its engine: none has a setup error
    tol = Tolerance.from_dict(gate.store.precision_tolerance(engine.precision))
    log(f"soak: {workers} x {engine.label} over {len(batches)} probe batches of <= {bs} for {seconds:g} s")

    samples: list[tuple[float, float]] = []
    start = time.perf_counter()
    for t in threads:
        t.references, t.keys, t.tol, t.t0, t.deadline = references, keys, tol, start, start + seconds
        t.min_rotations = min_rotations
        t.go.set()
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
    # judged up to the first worker's last call: after that, engines closing release their memory
    ends = [t.loop_end for t in threads if t.loop_end is not None]
    end = min(ends) if ends else time.perf_counter() - start
    samples = [s for s in samples if s[0] <= end]
    return _result(gate, engine, threads, samples, warm_at, end, bs)


def _result(
    gate: Context, engine: Engine, threads: Sequence[_Worker], samples, warm_at, end: float, bs: int
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
        reasons.append(
            f"{count} outputs or calls failed (first: worker {mismatches[0].worker}, "
            f"call {mismatches[0].call}: {mismatches[0].detail})"
        )
    if growth is not None and rss_warm is not None and growth > max(LEAK_MIB, LEAK_FRACTION * rss_warm):
        reasons.append(
            f"resident memory grew {growth:.0f} MiB after the warm-up ({rss_warm:.0f} -> {rss_end:.0f} "
            f"MiB; limit max({LEAK_MIB:.0f} MiB, {LEAK_FRACTION:.0%}))"
        )
    if reasons:
        verdict = Verdict.FAIL
    elif rotations < 1:
        verdict = Verdict.INCONCLUSIVE
        reasons.append("a worker did not run every probe batch once in the time given; soak longer")
    else:
        verdict = Verdict.PASS
    description = threads[0].description
    assert description is not None  # set with the engine, before the soak started
    return SoakResult(
        engine=description,
        model=ModelRef.of(engine.model),
        dataset=DatasetRef.of(gate.dataset),
        verdict=verdict,
        reasons=reasons,
        workers=len(threads),
        seconds=round(end, 3),
        batch_size=bs,
        calls=len(done),
        images=int(sum(d[1] for d in done)),
        checked_outputs=len(done),
        mismatches=count,
        first_mismatches=mismatches,
        rotations_min=rotations,
        window_seconds=round(width, 3),
        window_images_per_second=[round(r, 2) for r in rates],
        throughput_drift=drift,
        throughput_cv=cv,
        rss_warm_mib=rss_warm,
        rss_end_mib=rss_end,
        rss_peak_mib=rss_peak,
        rss_growth_mib=growth,
        rss_slope_mib_per_minute=slope,
        max_change_vs_first_output=max(t.max_change for t in threads),
        environment=environment.fingerprint(),
    )
