"""facenet's LFW evaluation (``facenet.evaluate`` / ``lfw.evaluate``), reproduced exactly.

Squared L2 distance of L2-normalised embeddings; 10-fold cross-validation without shuffling;
for each fold the accuracy-maximising threshold on ``arange(0, 4, 0.01)`` is picked on the
other 9 folds and applied to this one.  AUC is taken of the ROC averaged over folds; VAL at
FAR=1e-3 uses the finer grid ``arange(0, 4, 0.001)``, interpolating the threshold linearly over
the unique training FARs; EER is where that ROC crosses ``fpr = 1 - tpr``.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import interpolate, optimize
from sklearn.metrics import auc as sk_auc
from sklearn.model_selection import KFold

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


def _val_far(dist, issame, threshold):
    predict = dist < threshold
    n_same, n_diff = np.sum(issame), np.sum(~issame)
    val = np.sum(predict & issame) / n_same if n_same else 0.0
    far = np.sum(predict & ~issame) / n_diff if n_diff else 0.0
    return float(val), float(far)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    accuracy: np.ndarray  # per fold
    fold_thresholds: np.ndarray  # best threshold per fold (picked on the other folds)
    tpr: np.ndarray  # fold-averaged ROC over ROC_THRESHOLDS
    fpr: np.ndarray
    val: float
    val_std: float
    far: float
    auc: float
    eer: float

    @property
    def accuracy_mean(self) -> float:
        return float(np.mean(self.accuracy))

    @property
    def accuracy_std(self) -> float:
        return float(np.std(self.accuracy))  # population std, as facenet prints it

    @property
    def threshold(self) -> float:
        return float(np.mean(self.fold_thresholds))

    def summary(self) -> dict:
        return {"accuracy_mean": self.accuracy_mean, "accuracy_std": self.accuracy_std, "auc": self.auc,
                "val": self.val, "val_std": self.val_std, "far": self.far, "eer": self.eer,
                "threshold": self.threshold, "fold_accuracy": [float(a) for a in self.accuracy],
                "fold_thresholds": [float(t) for t in self.fold_thresholds]}


def evaluate(emb1: np.ndarray, emb2: np.ndarray, issame, folds: int = 10) -> Evaluation:
    """facenet's ``evaluate`` for embeddings of the first and second image of each pair."""
    return evaluate_distances(distances(emb1, emb2), issame, folds)


def evaluate_distances(dist: np.ndarray, issame, folds: int = 10) -> Evaluation:
    dist, issame = np.asarray(dist, np.float64), np.asarray(issame, bool)
    kfold = KFold(n_splits=folds, shuffle=False)
    tprs = np.zeros((folds, ROC_THRESHOLDS.size))
    fprs = np.zeros((folds, ROC_THRESHOLDS.size))
    accuracy, best = np.zeros(folds), np.zeros(folds)
    vals, fars = np.zeros(folds), np.zeros(folds)
    for k, (train, test) in enumerate(kfold.split(dist)):
        _, _, acc_train = _rates(dist[train], issame[train], ROC_THRESHOLDS)
        i = int(np.argmax(acc_train))
        best[k] = ROC_THRESHOLDS[i]
        tprs[k], fprs[k], acc_test = _rates(dist[test], issame[test], ROC_THRESHOLDS)
        accuracy[k] = acc_test[i]
        # VAL @ FAR: the threshold giving FAR_TARGET on the training folds, applied to the test fold.
        _, far_train, _ = _rates(dist[train], issame[train], VAL_THRESHOLDS)
        if np.max(far_train) >= FAR_TARGET:
            far_u, first = np.unique(far_train, return_index=True)
            threshold = float(interpolate.interp1d(far_u, VAL_THRESHOLDS[first], kind="slinear")(FAR_TARGET))
        else:
            threshold = 0.0
        vals[k], fars[k] = _val_far(dist[test], issame[test], threshold)
    tpr, fpr = np.mean(tprs, 0), np.mean(fprs, 0)
    roc = interpolate.interp1d(fpr, tpr)
    try:
        eer = float(optimize.brentq(lambda x: 1.0 - x - roc(x), 0.0, 1.0))
    except ValueError:  # the ROC does not span [0, 1] (degenerate data): no crossing to find
        eer = float("nan")
    return Evaluation(accuracy, best, tpr, fpr, float(np.mean(vals)), float(np.std(vals)), float(np.mean(fars)),
                      float(sk_auc(fpr, tpr)), eer)
