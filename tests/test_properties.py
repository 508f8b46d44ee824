"""Property-based checks (hypothesis) of the engines and of the metrics."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from harness.lfw import metrics

from .test_metrics import lfw_like

SETTINGS = settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
N = 20


@pytest.fixture(scope="module")
def crops(facenet_lfw):
    idx = np.linspace(0, len(facenet_lfw.keys) - 1, N).astype(int)
    return facenet_lfw.batch(idx)


@pytest.fixture(scope="module")
def engine_case(facenet_engine, facenet_store, crops):
    single = np.concatenate([facenet_engine.run(crops[i : i + 1]) for i in range(N)])
    return facenet_engine, single, facenet_store.precision_tolerance(facenet_engine.precision)["atol"]


@SETTINGS
@given(data=st.data())
def test_embedding_does_not_depend_on_batch(engine_case, crops, data):
    engine, single, atol = engine_case
    order = data.draw(st.permutations(range(N)))
    cuts = sorted(data.draw(st.sets(st.integers(1, N - 1), max_size=4)))
    out = np.zeros_like(single)
    for chunk in np.split(np.array(order), cuts):
        out[chunk] = engine.run(crops[chunk])
    assert np.abs(out - single).max() <= atol


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 0.999), min_size=10, max_size=60), st.floats(0.0, 2.9))
def test_separable_distances_give_accuracy_one(same, gap):
    # Same pairs in [0, 0.999], with each fold's largest at 0.999 (so the threshold every training set
    # picks, the first grid value above 0.999, suits every test fold); different pairs from 1.0 + gap up.
    n = len(same) // 10 * 10
    same = np.array(same[:n]).reshape(10, -1)
    same[:, 0] = 0.999
    diff = np.minimum(same.ravel() + 1.0 + gap, 3.5)  # below the last grid threshold, so the ROC reaches fpr 1
    dist, issame = lfw_like(same.ravel(), diff)
    ev = metrics.evaluate_distances(dist, issame)
    assert ev.accuracy_mean == 1.0 and ev.auc == pytest.approx(1.0)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_accuracy_invariant_to_pair_order_within_folds(seed):
    rng = np.random.default_rng(seed)
    dist, issame = lfw_like(rng.uniform(0, 2, 100), rng.uniform(0.8, 3, 100))
    base = metrics.evaluate_distances(dist, issame)
    perm = np.concatenate([rng.permutation(np.arange(k * 20, (k + 1) * 20)) for k in range(10)])
    shuffled = metrics.evaluate_distances(dist[perm], issame[perm])
    np.testing.assert_allclose(shuffled.accuracy, base.accuracy)
    assert shuffled.auc == pytest.approx(base.auc) and shuffled.val == pytest.approx(base.val)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.1, 1.5))
def test_auc_matches_scikit_learn_within_grid_error(seed, separation):
    rng = np.random.default_rng(seed)
    same = np.clip(rng.normal(1.0, 0.4, 1000), 0, 3.99)
    diff = np.clip(rng.normal(1.0 + separation, 0.4, 1000), 0, 3.99)
    dist, issame = lfw_like(same, diff)
    ev = metrics.evaluate_distances(dist, issame)
    # the fold-averaged ROC on a 0.01 grid: each step spans at most the pairs inside one grid cell
    assert ev.auc == pytest.approx(roc_auc_score(issame, -dist), abs=5e-3)
