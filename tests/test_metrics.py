"""facenet's LFW evaluation on cases whose answer can be worked out by hand, and against scikit-learn."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from harness import metrics


def lfw_like(same_dist, diff_dist, folds=10):
    """Distances laid out like pairs.txt: each fold holds its same pairs, then its different pairs."""
    same_dist, diff_dist = np.asarray(same_dist, float), np.asarray(diff_dist, float)
    ns, nd = len(same_dist) // folds, len(diff_dist) // folds
    dist, issame = [], []
    for k in range(folds):
        dist += list(same_dist[k * ns:(k + 1) * ns]) + list(diff_dist[k * nd:(k + 1) * nd])
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


@pytest.mark.parametrize("same_at, expected_val", [(0.19, 1.0), (0.21, 0.0)])
def test_val_threshold_interpolates_between_unique_training_fars(same_at, expected_val):
    # Each fold: 100 different pairs, one at 2.0 and 99 at 3.5. On the 9 training folds the FAR is 0
    # (first reached at threshold 0.0), then 9/900 = 0.01 (first at 2.001), then 1 (first at 3.501).
    # FAR 1e-3 interpolates to 0.1 * 2.001 = 0.2001: same pairs at 0.19 are accepted, at 0.21 not.
    diff = np.tile([2.0] + [3.5] * 99, 10)
    dist, issame = lfw_like([same_at] * 1000, diff)
    ev = metrics.evaluate_distances(dist, issame)
    assert ev.val == expected_val and ev.val_std == 0.0
    assert ev.far == 0.0


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
