"""facenet's LFW evaluation (``facenet.evaluate`` / ``lfw.evaluate``), reproduced exactly.

Squared L2 distance of L2-normalised embeddings; 10-fold cross-validation without shuffling;
for each fold the accuracy-maximising threshold on ``arange(0, 4, 0.01)`` is picked on the
other 9 folds and applied to this one.  AUC is taken of the ROC averaged over folds; VAL at
FAR=1e-3 uses the finer grid ``arange(0, 4, 0.001)`` and facenet's ``calculate_val`` threshold
(``val_far_threshold``); EER is where that ROC crosses ``fpr = 1 - tpr``.
"""

from __future__ import annotations

import numpy as np
from scipy import interpolate, optimize
from sklearn.metrics import auc as sk_auc
from sklearn.model_selection import KFold

from harness.core.results import Evaluation

ROC_THRESHOLDS = np.arange(0, 4, 0.01)
VAL_THRESHOLDS = np.arange(0, 4, 0.001)
FAR_TARGET = 1e-3


def distances(emb1: np.ndarray, emb2: np.ndarray) -> np.ndarray:
    """Squared L2 distance per row (facenet's distance_metric=0)."""
    diff = np.asarray(emb1, np.float64) - np.asarray(emb2, np.float64)
    return np.sum(diff * diff, axis=1)


def _rates(dist: np.ndarray, issame: np.ndarray, thresholds: np.ndarray):
    """TPR, FPR and accuracy for every threshold (rows) at once; 'same' is predicted when dist < t."""
    predict = dist[None, :] < thresholds[:, None]
    tp = np.sum(predict & issame, axis=1)
    fp = np.sum(predict & ~issame, axis=1)
    tn = np.sum(~predict & ~issame, axis=1)
    fn = np.sum(~predict & issame, axis=1)
    tpr = np.where(tp + fn == 0, 0.0, tp / np.maximum(tp + fn, 1))
    fpr = np.where(fp + tn == 0, 0.0, fp / np.maximum(fp + tn, 1))
    return tpr, fpr, (tp + tn) / dist.size


def val_far_threshold(far_train: np.ndarray, thresholds: np.ndarray, far_target: float = FAR_TARGET) -> float:
    """The threshold facenet's ``calculate_val`` picks for ``far_target``: ``interp1d(far_train, thresholds,
    kind='slinear')(far_target)`` when ``max(far_train) >= far_target``, else 0.0.

    ``far_train`` (the training folds' FAR at each of the ascending ``thresholds``) is non-decreasing
    and has long runs of equal values (0 at the low thresholds, 1 at the high ones, a step per
    accepted different pair in between). Current scipy (1.17 here) refuses such duplicate x ("Expect
    x to not have duplicates"); the scipy facenet ran on (2017-2018, e.g. scipy 1.0-1.2; users report 1.8
    still accepting it, scipy issue 21550) did not: for kind='slinear' its ``make_interp_spline``
    special-cased k=1 and returned, before any duplicate check, the degree-1
    B-spline with knots ``[x0, x0, x1, ..., xn, xn]`` and coefficients ``thresholds``. That spline is
    reproduced here with ``scipy.interpolate.BSpline`` itself, so the arithmetic is scipy's own. Its
    evaluation is right-continuous over zero-length knot intervals, which gives:

    - between two consecutive distinct FARs a < b: the line from (a, the *last* threshold with FAR a)
      to (b, the *first* threshold with FAR b), i.e. between the two adjacent grid thresholds where
      the training FAR steps from a to b;
    - at a FAR equal to a run's value: the last threshold of that run (except at the top FAR when it
      repeats: the spline's last knot interval then has zero length and scipy gives 0.0; kept as is,
      and out of reach on real data, whose FAR reaches 1 below the last threshold).

    (Taking the first threshold of every run instead, as this module did before, interpolates between
    grid points far apart and picks a different threshold, VAL and FAR.) interp1d first sorts x; it
    is already sorted, and the order kept within runs is the thresholds' ascending order, as facenet
    wrote it and as a stable sort keeps it (scipy's mergesort since 1.6, scipy PR 12566). scipy 1.0-1.2
    sorted with numpy's default quicksort, which is not stable and may reorder equal FARs; that tie
    order is an artefact of numpy's partitioning, not of facenet's algorithm, and is not reproduced.
    """
    far_train, thresholds = np.asarray(far_train, np.float64), np.asarray(thresholds, np.float64)
    if not np.max(far_train) >= far_target:
        return 0.0
    knots = np.r_[far_train[0], far_train, far_train[-1]]
    return float(interpolate.BSpline.construct_fast(knots, thresholds, 1)(far_target))


def fold_splits(n: int, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """facenet's folds: ``KFold(n_splits=folds, shuffle=False)`` over the pair indices, as (train, test)."""
    return list(KFold(n_splits=folds, shuffle=False).split(np.arange(n)))


def fold_of(n: int, folds: int) -> np.ndarray:
    """The test fold of each of ``n`` pairs under ``fold_splits``."""
    out = np.empty(n, np.intp)
    for k, (_, test) in enumerate(fold_splits(n, folds)):
        out[test] = k
    return out


def flips(d_engine: np.ndarray, d_reference: np.ndarray, fold_thresholds, folds: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the pairs whose decision differs, each pair's threshold): both sides judged at the
    engine's threshold of the pair's test fold (``Evaluation.fold_thresholds``)."""
    thr = np.asarray(fold_thresholds, np.float64)[fold_of(len(d_engine), folds)]
    return np.flatnonzero((np.asarray(d_engine) < thr) != (np.asarray(d_reference) < thr)), thr


def _val_far(dist, issame, threshold):
    predict = dist < threshold
    n_same, n_diff = np.sum(issame), np.sum(~issame)
    val = np.sum(predict & issame) / n_same if n_same else 0.0
    far = np.sum(predict & ~issame) / n_diff if n_diff else 0.0
    return float(val), float(far)


def evaluate(emb1: np.ndarray, emb2: np.ndarray, issame, folds: int = 10) -> Evaluation:
    """facenet's ``evaluate`` for embeddings of the first and second image of each pair."""
    return evaluate_distances(distances(emb1, emb2), issame, folds)


def evaluate_distances(dist: np.ndarray, issame, folds: int = 10) -> Evaluation:
    dist, issame = np.asarray(dist, np.float64), np.asarray(issame, bool)
    tprs = np.zeros((folds, ROC_THRESHOLDS.size))
    fprs = np.zeros((folds, ROC_THRESHOLDS.size))
    accuracy, best = np.zeros(folds), np.zeros(folds)
    vals, fars, val_thresholds = np.zeros(folds), np.zeros(folds), np.zeros(folds)
    for k, (train, test) in enumerate(fold_splits(dist.size, folds)):
        _, _, acc_train = _rates(dist[train], issame[train], ROC_THRESHOLDS)
        i = int(np.argmax(acc_train))
        best[k] = ROC_THRESHOLDS[i]
        tprs[k], fprs[k], acc_test = _rates(dist[test], issame[test], ROC_THRESHOLDS)
        accuracy[k] = acc_test[i]
        # VAL @ FAR: the threshold giving FAR_TARGET on the training folds, applied to the test fold.
        _, far_train, _ = _rates(dist[train], issame[train], VAL_THRESHOLDS)
        val_thresholds[k] = val_far_threshold(far_train, VAL_THRESHOLDS, FAR_TARGET)
        vals[k], fars[k] = _val_far(dist[test], issame[test], val_thresholds[k])
    tpr, fpr = np.mean(tprs, 0), np.mean(fprs, 0)
    roc = interpolate.interp1d(fpr, tpr)
    try:
        eer = float(optimize.brentq(lambda x: 1.0 - x - roc(x), 0.0, 1.0))
    except ValueError:  # the ROC does not span [0, 1] (degenerate data): no crossing to find
        eer = float("nan")
    return Evaluation(
        accuracy,
        best,
        tpr,
        fpr,
        float(np.mean(vals)),
        float(np.std(vals)),
        float(np.mean(fars)),
        float(sk_auc(fpr, tpr)),
        eer,
        val_thresholds,
    )
