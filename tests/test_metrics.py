"""facenet's LFW evaluation on cases whose answer can be worked out by hand, and against scikit-learn."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from harness.lfw import metrics


def lfw_like(same_dist, diff_dist, folds=10):
    """Distances laid out like pairs.txt: each fold holds its same pairs, then its different pairs."""
    same_dist, diff_dist = np.asarray(same_dist, float), np.asarray(diff_dist, float)
    ns, nd = len(same_dist) // folds, len(diff_dist) // folds
    dist, issame = [], []
    for k in range(folds):
        dist += list(same_dist[k * ns : (k + 1) * ns]) + list(diff_dist[k * nd : (k + 1) * nd])
        issame += [True] * ns + [False] * nd
    return np.array(dist), np.array(issame)


def test_distance_is_squared_l2():
    a = np.array([[1.0, 0.0], [0.6, 0.8]])
    b = np.array([[0.0, 1.0], [0.6, 0.8]])
    np.testing.assert_allclose(metrics.distances(a, b), [2.0, 0.0])


def test_perfectly_separable_gives_perfect_scores():
    dist, issame = lfw_like([0.5] * 50, [1.5] * 50)
    ev = metrics.evaluate_distances(dist, issame)
    assert ev.accuracy_mean == 1.0 and ev.accuracy_std == 0.0
    assert ev.auc == pytest.approx(1.0)
    assert ev.eer == pytest.approx(0.0, abs=1e-9)
    # argmax takes the first best threshold on the 0.01 grid: the first one above 0.5
    np.testing.assert_allclose(ev.fold_thresholds, 0.51)


def test_one_misplaced_pair_costs_its_fold():
    same = [0.5] * 50
    same[0] = 2.0  # a same-person pair farther apart than every different-person pair, in fold 0
    dist, issame = lfw_like(same, [1.5] * 50)
    ev = metrics.evaluate_distances(dist, issame)
    # fold 0 holds 10 pairs and gets 9 right; every other fold is perfect
    np.testing.assert_allclose(ev.accuracy, [0.9] + [1.0] * 9)
    assert ev.accuracy_mean == pytest.approx(0.99)
    assert ev.accuracy_std == pytest.approx(0.03)  # population std: sqrt((0.09^2 + 9 * 0.01^2) / 10)


def test_threshold_is_chosen_on_the_other_folds():
    # Fold k's same pairs sit at 0.3 + 0.1 k; different pairs at 3.0. The best training threshold
    # for fold k is the first grid value above the largest same distance in the other folds.
    same = np.repeat(0.3 + 0.1 * np.arange(10), 5)
    dist, issame = lfw_like(same, [3.0] * 50)
    ev = metrics.evaluate_distances(dist, issame)
    expected = [1.21] * 9 + [1.11]  # the largest is 1.2 (fold 9), except when fold 9 is the test fold
    np.testing.assert_allclose(ev.fold_thresholds, expected)
    # fold 9, judged at 1.11, rejects its own same pairs (at 1.2): half of its 10 pairs are wrong
    np.testing.assert_allclose(ev.accuracy, [1.0] * 9 + [0.5])
    assert ev.accuracy_mean == pytest.approx(0.95)


@pytest.mark.parametrize("same_at, expected_val", [(2.00005, 1.0), (2.00015, 0.0)])
def test_val_threshold_interpolates_across_the_step_of_the_training_far(same_at, expected_val):
    # Each fold: 100 different pairs, one at 2.0005 and 99 at 3.5005. On the 9 training folds the FAR
    # is 0 up to the grid threshold 2.000 and 9/900 = 0.01 from 2.001 on: facenet's interp1d over the raw
    # FAR array goes from (0, 2.000), the last threshold with FAR 0, to (0.01, 2.001), the first with
    # FAR 0.01, so FAR 1e-3 gives 2.000 + 0.1 * 0.001 = 2.0001. (Interpolating between the first
    # threshold of each FAR value instead gives 0.1 * 2.001 = 0.2001 and VAL 0 for both cases.)
    diff = np.tile([2.0005] + [3.5005] * 99, 10)
    dist, issame = lfw_like([same_at] * 1000, diff)
    ev = metrics.evaluate_distances(dist, issame)
    np.testing.assert_allclose(ev.val_thresholds, 2.0001, rtol=0, atol=1e-12)
    assert ev.val == expected_val and ev.val_std == 0.0
    assert ev.far == 0.0  # the test fold's different pair at 2.0005 lies above 2.0001


def test_val_threshold_at_a_training_far_value_is_the_last_threshold_of_its_run():
    # 5 folds of 1000 different pairs, one at 2.0005 and 999 at 3.7005: on the 4 training folds the FAR
    # is exactly 4/4000 = 1e-3 for every grid threshold from 2.001 to 3.700. facenet's spline is
    # right-continuous there: the target itself maps to the run's last threshold, 3.700, so same pairs
    # at 3.6 are accepted and the test fold's pair at 2.0005 is a false accept (FAR 1/1000).
    diff = np.tile([2.0005] + [3.7005] * 999, 5)
    dist, issame = lfw_like([3.6] * 500, diff, folds=5)
    ev = metrics.evaluate_distances(dist, issame, folds=5)
    assert 4 / 4000 == metrics.FAR_TARGET  # the case really lands on the target
    np.testing.assert_allclose(ev.val_thresholds, metrics.VAL_THRESHOLDS[3700], rtol=0, atol=0)
    assert ev.val == 1.0 and ev.far == pytest.approx(1e-3, abs=1e-15)


def test_val_is_zero_when_far_target_is_unreachable():
    dist, issame = lfw_like([0.5] * 50, [4.5] * 50)  # no threshold below 4 accepts a different pair
    ev = metrics.evaluate_distances(dist, issame)
    assert ev.val == 0.0 and ev.far == 0.0


def test_auc_matches_scikit_learn_on_overlapping_scores():
    rng = np.random.default_rng(7)
    same = np.clip(rng.normal(0.9, 0.25, 3000), 0, 3.99)
    diff = np.clip(rng.normal(1.6, 0.25, 3000), 0, 3.99)
    dist, issame = lfw_like(same, diff)
    ev = metrics.evaluate_distances(dist, issame)
    reference = roc_auc_score(issame, -dist)  # a smaller distance means 'same'
    assert 0.9 < reference < 0.99  # the case is not degenerate
    assert ev.auc == pytest.approx(reference, abs=2e-3)


def test_eer_of_a_symmetric_overlap():
    # same ~ U(0, 2), different ~ U(1, 3): the ROC crosses fpr = 1 - tpr at 0.25
    same = np.linspace(0, 2, 2000, endpoint=False) + 0.0005
    diff = same + 1.0
    rng = np.random.default_rng(0)
    dist, issame = lfw_like(rng.permutation(same), rng.permutation(diff))
    ev = metrics.evaluate_distances(dist, issame)
    assert ev.eer == pytest.approx(0.25, abs=0.01)
    assert ev.auc == pytest.approx(roc_auc_score(issame, -dist), abs=2e-3)


# --- facenet's evaluation, written again here from its description, to compare every field with ---------
#
# facenet (src/lfw.py evaluate, src/facenet.py calculate_roc / calculate_val): squared L2 distances;
# KFold(10, shuffle=False) over the pairs; per fold, the training folds' accuracy at every threshold of
# arange(0, 4, 0.01), the first best one applied to the test fold, the test fold's TPR/FPR averaged over
# folds into the ROC; per fold, the training FAR at every threshold of arange(0, 4, 0.001) and
# interp1d(far_train, thresholds, kind='slinear')(1e-3) (0.0 when the FAR never reaches 1e-3) applied
# to the test fold; AUC = sklearn auc of the ROC, EER = brentq of 1 - x - interp1d(fpr, tpr)(x).
# The interpolation is written as the piecewise-linear function scipy's k=1 spline evaluated (see
# metrics.val_far_threshold), and the counts with sorted distances, not with the harness's helpers.


def _counts_below(values, thresholds):
    """How many of ``values`` lie strictly below each threshold (facenet predicts 'same' when dist < t)."""
    return np.searchsorted(np.sort(values), thresholds, side="left")


def _facenet_slinear(far, thresholds, target):
    if not far.max() >= target:
        return 0.0
    i = int(np.flatnonzero(far <= target)[-1])  # the last grid point whose FAR is at most the target
    if i + 1 == far.size:  # the target is the top FAR: the spline's last knot interval
        return float(thresholds[i]) if far[i - 1] < far[i] else 0.0  # zero length when the top FAR repeats
    # far[i] <= target < far[i + 1]: the line between these two neighbouring grid thresholds
    return float(thresholds[i] + (target - far[i]) / (far[i + 1] - far[i]) * (thresholds[i + 1] - thresholds[i]))


def facenet_evaluate(dist, issame, folds=10, far_target=1e-3):
    from scipy import interpolate, optimize
    from sklearn.metrics import auc

    roc_t, val_t = np.arange(0, 4, 0.01), np.arange(0, 4, 0.001)
    tests = np.array_split(np.arange(dist.size), folds)  # KFold's sizes: the first n % folds folds get one more
    out = {k: np.zeros(folds) for k in ("accuracy", "fold_thresholds", "val", "far", "val_thresholds")}
    tprs, fprs = np.zeros((folds, roc_t.size)), np.zeros((folds, roc_t.size))

    def rates(d, same, thresholds):
        tp = _counts_below(d[same], thresholds)
        fp = _counts_below(d[~same], thresholds)
        n_same, n_diff = same.sum(), (~same).sum()
        tpr = tp / n_same if n_same else np.zeros(thresholds.size)
        fpr = fp / n_diff if n_diff else np.zeros(thresholds.size)
        return tpr, fpr, (tp + (n_diff - fp)) / d.size

    for k, test in enumerate(tests):
        train = np.setdiff1d(np.arange(dist.size), test)
        _, _, acc_train = rates(dist[train], issame[train], roc_t)
        best = int(np.argmax(acc_train))
        tprs[k], fprs[k], acc_test = rates(dist[test], issame[test], roc_t)
        out["accuracy"][k], out["fold_thresholds"][k] = acc_test[best], roc_t[best]
        _, far_train, _ = rates(dist[train], issame[train], val_t)
        t = _facenet_slinear(far_train, val_t, far_target)
        val, far, _ = rates(dist[test], issame[test], np.array([t]))
        out["val"][k], out["far"][k], out["val_thresholds"][k] = val[0], far[0], t
    tpr, fpr = tprs.mean(0), fprs.mean(0)
    try:
        eer = optimize.brentq(lambda x: 1.0 - x - interpolate.interp1d(fpr, tpr)(x), 0.0, 1.0)
    except ValueError:
        eer = float("nan")
    return {
        **out,
        "tpr": tpr,
        "fpr": fpr,
        "auc": auc(fpr, tpr),
        "eer": eer,
        "val_mean": out["val"].mean(),
        "val_std": out["val"].std(),
        "far_mean": out["far"].mean(),
    }


def assert_same_as_facenet(ev, ref):
    pairs = {
        "accuracy": ev.accuracy,
        "fold_thresholds": ev.fold_thresholds,
        "tpr": ev.tpr,
        "fpr": ev.fpr,
        "auc": ev.auc,
        "eer": ev.eer,
        "val_mean": ev.val,
        "val_std": ev.val_std,
        "far_mean": ev.far,
        "val_thresholds": ev.val_thresholds,
    }
    for name, got in pairs.items():
        np.testing.assert_allclose(got, ref[name], rtol=0, atol=1e-12, equal_nan=True, err_msg=name)


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("seed, n_pairs", [(0, 6000), (1, 6000), (2, 5997)])
def test_evaluation_equals_facenet_on_embedding_distances(seed, n_pairs):
    # LFW-like: 512-d unit embeddings, a same pair is the first embedding plus per-pair noise, a different
    # pair two draws; noise levels spread so that the classes overlap as they do for FaceNet on LFW.
    rng = np.random.default_rng(seed)
    issame = np.zeros(n_pairs, bool)
    for start in range(0, n_pairs, 600):
        issame[start : start + 300] = True
    e1 = unit(rng.normal(size=(n_pairs, 512)))
    noise = unit(rng.normal(size=(n_pairs, 512))) * rng.uniform(0.4, 2.2, (n_pairs, 1))
    e2 = np.where(issame[:, None], unit(e1 + noise), unit(0.35 * e1 + unit(rng.normal(size=(n_pairs, 512)))))
    ev = metrics.evaluate(e1, e2, issame)
    ref = facenet_evaluate(metrics.distances(e1, e2), issame)
    assert 0.9 < ev.accuracy_mean < 0.995 and 0.3 < ev.val < 0.97  # overlapping as on LFW, not degenerate
    far_train = _counts_below(metrics.distances(e1, e2)[~issame], metrics.VAL_THRESHOLDS) / (~issame).sum()
    assert len(np.unique(far_train)) < far_train.size  # the raw FAR array interp1d gets has duplicates
    assert_same_as_facenet(ev, ref)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 10), st.integers(1, 12), st.integers(1, 30), st.data())
def test_evaluation_equals_facenet_with_tied_distances(folds, n_same, n_diff, data):
    # Distances on a 0.001 grid (many equal distances and equal FARs, some exactly on a threshold).
    grid = st.integers(0, 4000).map(lambda i: i / 1000)
    same = data.draw(st.lists(grid, min_size=n_same * folds, max_size=n_same * folds))
    diff = data.draw(st.lists(grid, min_size=n_diff * folds, max_size=n_diff * folds))
    dist, issame = lfw_like(same, diff, folds)
    assert_same_as_facenet(metrics.evaluate_distances(dist, issame, folds), facenet_evaluate(dist, issame, folds))
