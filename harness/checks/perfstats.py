"""Deciding a throughput verdict from samples, not from one number.

A measurement is a series of per-step throughputs (images/s), cut into consecutive blocks; each block
gives one value, its median throughput. The decision, after asv / pyperf / Google benchmark's
compare.py, in three parts:

1. **Stability.** When the block values vary (robust CV over ``CV_LIMIT``) or the first half of the
   run differs from the second by more than ``LEVEL_GAP`` (a busy neighbour came or went: "two
   levels", or drift), or when other processes used more than ``LOAD_LIMIT`` of the CPUs meanwhile
   (/proc/stat, steal time included), the measurement is unstable: the caller measures again within
   a time budget (``bench.Settings.budget_s``), and if it stays unstable the verdict is
   INCONCLUSIVE, with the reason.
2. **Ratio and its confidence interval.** ratio = median(current blocks) / median(baseline blocks),
   with a bootstrap 95% confidence interval (each series' blocks resampled independently). The
   canary-normalised ratio is computed and reported beside it.
3. **Verdict.** FAIL when the whole interval lies below ``1 - tolerance`` (the slowdown is both
   significant and beyond the tolerance); PASS when the whole interval lies at or above the floor;
   otherwise INCONCLUSIVE (the interval straddles the floor).

The canary (a fixed GEMM before each block, CPU engines) is measured and reported beside the raw
ratio, never judged. Reported on the AVX2-only EPYC (family 23): its rate moved 2x between recording
and judging on a quiet machine while the engine moved 7%, and with one core busy the 2-thread engine
ran at 0.50x while the canary ran at anything from 0.1x to 1x. Measured on the family-25 EPYC
(benchmarks/perf_verdicts.py), the canary's rate divided by the engine's was 0.72-1.14 quiet and
0.15-2.29 with one core busy. A witness that far from the engine cannot be allowed to veto a FAIL.
What the canary was meant to catch, a machine shared meanwhile, is caught directly: other processes'
CPU time and steal time (``LoadMonitor``) make the measurement unstable, hence INCONCLUSIVE, never FAIL.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from harness.core.results import Stability
from harness.core.verdicts import Verdict

CV_LIMIT = 0.10  # of the block values
LEVEL_GAP = 0.10  # between the first and the second half of the blocks
LOAD_LIMIT = 0.15  # share of all CPUs other processes (or the hypervisor) may use while we measure
MAX_BLOCKS = 8
BOOTSTRAP = 2000
CONFIDENCE = 0.95
MAX_BASELINE_SAMPLES = 200


def blocks_for(n: int) -> int:
    return max(1, min(MAX_BLOCKS, n))


def block_values(samples, canary=None) -> np.ndarray:
    """The series cut into consecutive blocks; per block the median throughput, divided by the median
    canary rate of the same block when given. Blocks (not single steps) are the units compared: a
    canary run of a few milliseconds is itself noisy, its block median is not, and a load that comes
    and goes shows as differing blocks."""
    x = np.asarray(samples, float)
    k = blocks_for(len(x))
    values = np.array([np.median(b) for b in np.array_split(x, k)])
    if canary is not None:
        c = np.asarray(canary, float)[: len(x)]
        values = values / np.array([np.median(b) for b in np.array_split(c, k)])
    return values


def stability(
    samples,
    cv_limit: float = CV_LIMIT,
    level_gap: float = LEVEL_GAP,
    load: float | None = None,
    load_limit: float = LOAD_LIMIT,
) -> Stability:
    """Whether a series of throughputs is steady: the block values' robust spread (1.4826 x MAD /
    median, insensitive to one odd block) under ``cv_limit``, the first half of the blocks within
    ``level_gap`` of the second half (no second level, no drift), and other processes' share of the
    CPUs meanwhile (``load``, when measured) under ``load_limit``."""
    v = block_values(samples)
    if len(v) < 3:
        return Stability(False, float("nan"), float("nan"), f"{len(samples)} samples: too few to judge stability")
    med = float(np.median(v))
    cv = float(1.4826 * np.median(np.abs(v - med)) / med)
    half = len(v) // 2
    first, second = float(np.median(v[:half])), float(np.median(v[-half:]))
    spread = max(first, second) / min(first, second) - 1.0
    reasons = []
    if load is not None and load > load_limit:
        reasons.append(f"other processes used {load:.0%} of the CPUs meanwhile (> {load_limit:.0%})")
    if cv > cv_limit:
        reasons.append(f"robust CV of the blocks {cv:.1%} > {cv_limit:.0%}")
    if spread > level_gap:
        reasons.append(f"first and second half differ by {spread:.1%} > {level_gap:.0%} (two levels or drift)")
    return Stability(not reasons, cv, spread, "; ".join(reasons))


def ratio_ci(
    current,
    baseline,
    current_canary=None,
    baseline_canary=None,
    seed: int = 0,
    draws: int = BOOTSTRAP,
    confidence: float = CONFIDENCE,
) -> tuple[float, float, float]:
    """(ratio of medians, CI low, CI high): the medians of both series' block values (canary-normalised
    when canaries are given), with a bootstrap over the blocks of each series, independently."""
    rng = np.random.default_rng(seed)
    cur = block_values(current, current_canary)
    base = block_values(baseline, baseline_canary)

    def boot(x):
        return np.median(x[rng.integers(0, len(x), (draws, len(x)))], axis=1)

    point = float(np.median(cur) / np.median(base))
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(boot(cur) / boot(base), [tail, 100 - tail])
    return point, float(lo), float(hi)


@dataclasses.dataclass(frozen=True)
class Decision:
    verdict: Verdict
    ratio: float  # median throughput ratio (of the block values), current / baseline: what is judged
    ci: tuple[float, float]  # its bootstrap confidence interval
    normalised_ratio: float | None  # canary-normalised ratio (CPU engines; reported, not judged), None without canaries
    normalised_ci: tuple[float, float] | None
    canary_ratio: float | None  # the canary's rate now / in the baseline
    floor: float  # 1 - tolerance
    why: str


def decide(
    current, baseline, tolerance: float, current_canary=None, baseline_canary=None, stable: Stability | None = None
) -> Decision:
    """The verdict on ``current`` against ``baseline`` samples (see the module docstring)."""
    floor = 1.0 - tolerance
    raw, lo, hi = ratio_ci(current, baseline)
    norm = norm_ci = canary = None
    if current_canary is not None and baseline_canary is not None:
        norm, nlo, nhi = ratio_ci(current, baseline, current_canary, baseline_canary)
        norm_ci = (nlo, nhi)
        canary = float(np.median(current_canary) / np.median(baseline_canary))
    text = f"ratio {raw:.3f} [{lo:.3f}, {hi:.3f}] vs floor {floor:.2f}"
    if norm is not None:
        text += f" (canary, reported only: {canary:.2f}x of the baseline's, canary-normalised ratio {norm:.3f})"

    def out(verdict, why):
        return Decision(verdict, raw, (lo, hi), norm, norm_ci, canary, floor, why)

    if stable is not None and not stable.stable:
        return out(Verdict.INCONCLUSIVE, f"unstable measurement: {stable.why}; {text}")
    if hi < floor:
        return out(Verdict.FAIL, f"{text}: slower beyond the tolerance, significantly")
    if lo >= floor:
        return out(Verdict.PASS, f"{text}: within tolerance")
    return out(Verdict.INCONCLUSIVE, f"{text}: the interval straddles the floor; cannot decide")


def thin(*series, limit: int = MAX_BASELINE_SAMPLES) -> list[list[float]]:
    """At most ``limit`` samples of each (equally long, paired) series, at the same evenly spaced steps:
    what a baseline keeps to compare distributions."""
    n = min(len(s) for s in series)
    idx = np.linspace(0, n - 1, min(n, limit)).astype(int)
    return [[float(f"{v:.5g}") for v in np.asarray(s, float)[idx]] for s in series]
