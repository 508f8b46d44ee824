"""The upgrade report: an old gate run against a new one (``facenet-harness compare-runs OLD NEW``).

For each engine x precision both runs have: each run's own verdict against the reference (as its gate
judged it), and the two against each other:
  * the cosine between the old and the new embedding of every protocol image (min, mean, the worst image;
    whether they are bit-identical);
  * the pair decisions that changed (each run decides at its own fold thresholds, as its accuracy
    counted), and how many of those are now right or now wrong;
  * the accuracy delta, new minus old, with a 95% interval from the paired per-fold deltas (Student t);
  * the throughput ratio per perf case, new over old, with its bootstrap interval (``perfstats``), when
    both runs measured it on the same CPU (or GPU): across machines a ratio says nothing of the upgrade;
  * the software that changed between them (engine description and environment, side by side).
Both runs must be of the same data and the same reference model; the dataset (for the protocol's pairs)
must be the one they ran on.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from harness.checks import perfstats
from harness.core.errors import HarnessError
from harness.core.results import ArchivedRow, ArchivedRun, UpgradeReport, UpgradeRow
from harness.core.verdicts import Verdict
from harness.lfw import metrics
from harness.lfw.data import Dataset

IGNORED = {"device_count"}  # description keys that are not software


def software_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``key old -> new`` for every leaf that differs between two descriptions (added and removed too)."""
    out = []
    for key in sorted(set(old) | set(new)):
        if key in IGNORED:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += software_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {a if a is not None else '(none)'} -> {b if b is not None else '(none)'}")
    return out


def _decisions(emb: np.ndarray, dataset: Dataset, thresholds: list[float]) -> tuple[np.ndarray, np.ndarray]:
    index = {k: i for i, k in enumerate(dataset.keys)}
    pairs = dataset.protocol.pairs
    dist = metrics.distances(emb[[index[p.first] for p in pairs]], emb[[index[p.second] for p in pairs]])
    thr = np.asarray(thresholds)[metrics.fold_of(dist.size, dataset.protocol.folds)]
    same = dist < thr
    return same, same == np.asarray(dataset.protocol.issame)


def compare_row(old: ArchivedRow, new: ArchivedRow, dataset: Dataset | None) -> UpgradeRow:
    notes: list[str] = []
    delta = ci = min_cos = mean_cos = worst = identical = None
    changed = now_right = now_wrong = pairs = None
    old_acc = old.metrics["accuracy_mean"] if old.metrics else None
    new_acc = new.metrics["accuracy_mean"] if new.metrics else None
    if old.fold_accuracy and new.fold_accuracy:
        d = np.asarray(new.fold_accuracy) - np.asarray(old.fold_accuracy)
        delta = float(d.mean())
        half = float(stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else 0.0
        ci = (delta - half, delta + half)
    if old.embeddings is not None and new.embeddings is not None:
        if old.embeddings.shape != new.embeddings.shape:
            notes.append(f"embeddings of different shapes ({old.embeddings.shape} vs {new.embeddings.shape})")
        else:
            identical = bool(np.array_equal(old.embeddings, new.embeddings))
            cos = np.sum(old.embeddings * new.embeddings, axis=1) / np.maximum(
                np.linalg.norm(old.embeddings, axis=1) * np.linalg.norm(new.embeddings, axis=1), 1e-12
            )
            min_cos, mean_cos = float(cos.min()), float(cos.mean())
            if dataset is not None:
                worst = dataset.keys[int(np.argmin(cos))]
                if old.fold_thresholds and new.fold_thresholds:
                    same_old, right_old = _decisions(old.embeddings, dataset, old.fold_thresholds)
                    same_new, right_new = _decisions(new.embeddings, dataset, new.fold_thresholds)
                    flip = same_old != same_new
                    changed, pairs = int(flip.sum()), int(flip.size)
                    now_right = int((flip & right_new).sum())
                    now_wrong = int((flip & right_old).sum())
    else:
        why = "old" if old.embeddings is None else "new"
        notes.append(f"the {why} run has no embeddings for this row (it failed before its LFW pass)")
    throughput = []
    for case in sorted(set(old.perf) & set(new.perf)):
        a, b = old.perf[case], new.perf[case]
        same_device = (a.get("cpu"), a.get("gpu")) == (b.get("cpu"), b.get("gpu"))
        entry = {"case": case, "old_fps": a["fps"], "new_fps": b["fps"], "same_device": same_device}
        if same_device and len(a["samples"]) >= 3 and len(b["samples"]) >= 3:
            ratio, lo, hi = perfstats.ratio_ci(b["samples"], a["samples"])
            entry.update(ratio=ratio, ci=(lo, hi))
        else:
            entry.update(ratio=None, ci=None)
            if not same_device:
                notes.append(f"{case}: measured on different devices; no throughput ratio")
        throughput.append(entry)
    changes = software_changes(old.engine, new.engine) + [
        c for c in software_changes(old.stack, new.stack) if not c.startswith(("runtime ", "threads "))
    ]
    return UpgradeRow(
        new.key,
        new.verdict,
        old.verdict,
        new.verdict,
        old_acc,
        new_acc,
        delta,
        ci,
        min_cos,
        mean_cos,
        worst,
        identical,
        changed,
        now_right,
        now_wrong,
        pairs,
        throughput,
        changes,
        notes + ([f"old run: {old.fault}"] if old.fault else []) + ([f"new run: {new.fault}"] if new.fault else []),
    )


def compare(old: ArchivedRun, new: ArchivedRun, dataset: Dataset | None = None) -> UpgradeReport:
    """The upgrade report of ``new`` against ``old`` (see the module docstring)."""
    if old.dataset.get("digest") != new.dataset.get("digest"):
        raise HarnessError(
            f"{old.path} and {new.path} ran on different data (dataset digests {str(old.dataset.get('digest'))[:16]} "
            f"and {str(new.dataset.get('digest'))[:16]}): an upgrade is compared on the same data."
        )
    if old.reference_model.get("sha256") != new.reference_model.get("sha256"):
        raise HarnessError(f"{old.path} and {new.path} were judged against different reference models.")
    if dataset is not None and dataset.digest != new.dataset.get("digest"):
        raise HarnessError(
            f"the dataset given ({dataset.root}) is not the one the runs used (digest {dataset.digest[:16]}, "
            f"the runs' {str(new.dataset.get('digest'))[:16]}); point LFW_DIR/--lfw-dir at it."
        )
    notes = []
    for run, name in ((old, "old"), (new, "new")):
        if not run.complete:
            notes.append(f"the {name} run ({run.path}) is incomplete: it stopped before every row was judged")
    olds = {r.key: r for r in old.rows}
    news = {r.key: r for r in new.rows}
    rows = [compare_row(olds[k], news[k], dataset) for k in news if k in olds]
    verdict = Verdict.combine(r.new_verdict for r in rows) if rows else Verdict.INCONCLUSIVE
    if not rows:
        notes.append("the two runs have no engine x precision in common")
    env_changes = software_changes(old.environment, new.environment)
    return UpgradeReport(
        verdict,
        old.path,
        new.path,
        old.created,
        new.created,
        env_changes,
        rows,
        [k for k in olds if k not in news],
        [k for k in news if k not in olds],
        notes,
    )
