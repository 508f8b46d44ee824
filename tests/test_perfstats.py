"""The statistical perf decision on synthetic series whose truth is known (harness.perfstats)."""
import numpy as np
import pytest

from harness import perfstats
from harness.verdicts import Verdict


def series(median, n=60, cv=0.02, seed=0):
    return median * (1 + np.random.default_rng(seed).normal(0, cv, n))


def test_same_distribution_passes():
    d = perfstats.decide(series(100, seed=1), series(100, seed=2), 0.10)
    assert d.verdict is Verdict.PASS and d.ci[0] <= 1.0 <= d.ci[1] + 0.02


def test_real_slowdown_beyond_tolerance_fails():
    d = perfstats.decide(series(100 / 1.4, seed=1), series(100, seed=2), 0.10)
    assert d.verdict is Verdict.FAIL and d.ci[1] < 0.9 and d.ratio == pytest.approx(1 / 1.4, rel=0.03)


def test_small_slowdown_within_tolerance_passes():
    d = perfstats.decide(series(95, seed=1), series(100, seed=2), 0.10)
    assert d.verdict is Verdict.PASS


def test_slowdown_near_the_floor_is_inconclusive():
    d = perfstats.decide(series(90, cv=0.08, seed=1), series(100, cv=0.08, seed=2), 0.10)
    assert d.verdict is Verdict.INCONCLUSIVE and d.ci[0] < 0.9 < d.ci[1] and "straddles" in d.why


def test_a_slower_machine_is_not_blamed_on_the_engine():
    """The whole machine at 60% speed: the engine and the canary slow alike; never FAIL for that."""
    base, base_canary = series(100, seed=1), series(500, seed=2)
    load = 0.6
    cur, cur_canary = series(100 * load, seed=3), series(500 * load, seed=4)
    raw = perfstats.decide(cur, base, 0.10)
    assert raw.verdict is Verdict.FAIL  # without the canary this would be red on noise
    d = perfstats.decide(cur, base, 0.10, cur_canary, base_canary)
    assert d.verdict is Verdict.INCONCLUSIVE and "not once normalised by the canary" in d.why
    assert d.normalised_ratio == pytest.approx(1.0, abs=0.03) and d.canary_ratio == pytest.approx(0.6, abs=0.02)


def test_a_faster_canary_does_not_make_a_fail():
    """Same engine speed, the canary 15% faster than when recorded (seen between processes): PASS."""
    d = perfstats.decide(series(100, seed=1), series(100, seed=2), 0.10, series(575, seed=3), series(500, seed=4))
    assert d.verdict is Verdict.PASS and d.normalised_ratio < 0.9


def test_engine_slowdown_is_not_hidden_by_the_canary():
    base, base_canary = series(100, seed=1), series(500, seed=2)
    cur, cur_canary = series(100 / 1.4, seed=3), series(500, seed=4)  # the machine as fast as before
    d = perfstats.decide(cur, base, 0.10, cur_canary, base_canary)
    assert d.verdict is Verdict.FAIL


def test_two_levels_are_unstable_and_inconclusive():
    cur = np.concatenate([series(100, n=30, seed=1), series(80, n=30, seed=2)])  # a neighbour arrived halfway
    st = perfstats.stability(cur)
    assert not st.stable and "two levels" in st.why
    d = perfstats.decide(cur, series(100, seed=3), 0.10, stable=st)
    assert d.verdict is Verdict.INCONCLUSIVE and d.why.startswith("unstable measurement")
    # the same two levels on the canary too: normalised, the series is steady
    canary = np.concatenate([series(500, n=30, seed=4), series(400, n=30, seed=5)])
    assert perfstats.stability(cur, canary).stable


def test_steady_series_is_stable_and_too_short_is_not():
    assert perfstats.stability(series(100)).stable
    assert not perfstats.stability([100.0, 101.0]).stable  # fewer than 3 blocks cannot show two levels


def test_a_point_baseline_is_compared_with_the_samples():
    """The seed figures of another deployment have no samples: the interval comes from this run alone."""
    d = perfstats.decide(series(8825.8 * 0.97, seed=1), [8825.8], 0.05)
    assert d.verdict is Verdict.PASS and d.ratio == pytest.approx(0.97, rel=0.02)


def test_thin_keeps_pairs_aligned():
    a, b = perfstats.thin(np.arange(1000.0), np.arange(1000.0) * 2, limit=50)
    assert len(a) == 50 and a[0] == 0 and a[-1] == 999 and b == [2 * v for v in a]
