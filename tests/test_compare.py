"""The comparison rule: cosine per sample, Polygraphy's atol-AND-rtol per element, NaN/Inf always failing."""

import numpy as np
import pytest

from harness.checks.conformance import Tolerance, compare

TOL = Tolerance(atol=1e-3, rtol=1e-2, min_cosine=0.999, mean_cosine=0.9999)
KEYS = [f"P/P_{i:04d}" for i in range(4)]


def unit_rows(n=4, d=512, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_identical_embeddings_pass():
    ref = unit_rows()
    result = compare(ref, ref.copy(), KEYS, TOL)
    assert result.passed and result.stats["min_cosine"] == pytest.approx(1.0)
    assert result.stats["max_abs"] == 0.0


def test_element_fails_only_beyond_atol_and_rtol():
    ref = unit_rows()
    ref[0, 0] = 1.0  # a large element: its relative error stays small
    cand = ref.copy()
    cand[0, 0] += 5e-3  # abs 5e-3 > atol, rel 5e-3 < rtol: passes the element rule
    assert compare(ref, cand, KEYS, TOL).element_failures == 0
    cand[1, 1] = ref[1, 1] + 2e-3 * np.sign(ref[1, 1])  # abs 2e-3 > atol and rel >> rtol (elements ~0.04)
    result = compare(ref, cand, KEYS, TOL)
    assert result.element_failures == 1 and not result.passed
    assert "1 elements beyond atol=0.001 and rtol=0.01" in result.failures


def test_nan_and_inf_always_fail():
    ref = unit_rows()
    cand = ref.copy()
    cand[2, 5] = np.nan
    cand[3, 0] = np.inf
    result = compare(ref, cand, KEYS, Tolerance(atol=1e9, rtol=1e9, min_cosine=-2, mean_cosine=-2))
    assert result.nonfinite == 2 and not result.passed
    assert result.cosine[2] == -1.0 and result.cosine[3] == -1.0
    assert sorted(k for k, _ in result.worst(2)) == [KEYS[2], KEYS[3]]


def test_cosine_gates_and_table_name_the_worst_samples():
    ref = unit_rows()
    cand = ref.copy()
    cand[1] = unit_rows(1, seed=9)[0]  # an unrelated embedding: cosine near 0
    result = compare(ref, cand, KEYS, Tolerance(atol=10, rtol=10, min_cosine=0.999, mean_cosine=0.9))
    assert any(f.startswith("min cosine") for f in result.failures)
    assert any(f.startswith("mean cosine") for f in result.failures)
    assert result.worst(1)[0][0] == KEYS[1]


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        compare(unit_rows(4), unit_rows(3), KEYS, TOL)
