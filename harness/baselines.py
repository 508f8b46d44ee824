"""Accuracy baselines kept in ``baselines/``, per dataset digest (never in test code).

A dataset is identified by ``Dataset.digest`` (pairs file, image bytes, face boxes); its entry
holds the FP32 reference measured on it and the gates derived from that measurement.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from . import cache
from .errors import HarnessError

ENV_VAR = "FACENET_HARNESS_BASELINES"
ACCURACY_FILE = "accuracy.json"
TOLERANCES_FILE = "tolerances.json"
GOLDEN_DIR = "golden"
# Margins of the absolute gates below the measured FP32 reference, per precision (baselines/README.md).
ACCURACY_MARGIN = 0.002  # 12 of 6,000 pair decisions
AUC_MARGIN = 0.001
PRECISION_MARGINS = {"fp32": (ACCURACY_MARGIN, AUC_MARGIN), "fp16": (ACCURACY_MARGIN, AUC_MARGIN),
                     "int8": (ACCURACY_MARGIN + 0.003, AUC_MARGIN + 0.001)}


def folder(override: str | os.PathLike | None = None) -> Path:
    """``override``, else ``$FACENET_HARNESS_BASELINES``, else the repository's ``baselines/``."""
    return Path(override or os.environ.get(ENV_VAR) or Path(__file__).resolve().parents[1] / "baselines")


def load_accuracy(base: Path) -> dict:
    path = base / ACCURACY_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {"datasets": {}}
    except (OSError, ValueError) as e:
        raise HarnessError(f"{path}: unreadable accuracy baselines ({e}); restore it from git.") from None


def accuracy_gate(base: Path, digest: str, precision: str) -> dict | None:
    """The gate (``accuracy_min``, ``auc_min``) for this dataset and precision, or None."""
    entry = load_accuracy(base)["datasets"].get(digest)
    return entry["gates"].get(precision) if entry else None


def judge(summary: dict, gate: dict | None, reference: dict | None = None, max_delta: float | None = None) -> dict:
    """PASS/FAIL per gated metric, with the threshold that decided it.

    Besides the absolute gate, an engine under test is held within ``max_delta`` of the accuracy of the
    FP32 reference measured on the same data (``reference``), when given: far better is as suspect as
    worse (other data, another model), so the bound is two-sided.
    """
    if gate is None:
        return {"verdict": "NO BASELINE", "checks": []}
    checks = []
    for metric, bound in (("accuracy_mean", gate["accuracy_min"]), ("auc", gate["auc_min"])):
        checks.append({"metric": metric, "value": summary[metric], "min": bound, "pass": summary[metric] >= bound})
    if reference is not None and max_delta is not None:
        delta = summary["accuracy_mean"] - reference["accuracy_mean"]
        checks.append({"metric": "accuracy_delta_vs_fp32", "value": delta, "min": -max_delta, "max": max_delta,
                       "pass": abs(delta) <= max_delta})
    return {"verdict": "PASS" if all(c["pass"] for c in checks) else "FAIL", "checks": checks}


def tolerances(base: Path) -> dict:
    """Per-precision conformance tolerances and accuracy deltas (``tolerances.json``)."""
    path = base / TOLERANCES_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise HarnessError(f"{path}: cannot read the conformance tolerances ({e}); restore it from git.") from None


def precision_tolerance(base: Path, precision: str) -> dict:
    doc = tolerances(base)
    if precision not in doc["precisions"]:
        raise HarnessError(f"{base / TOLERANCES_FILE}: no tolerances for precision {precision!r}; "
                           f"it has {', '.join(doc['precisions'])}.")
    return doc["precisions"][precision]


def save_reference(base: Path, digest: str, description: str, summary: dict, provenance: dict) -> Path:
    """Record an FP32 reference run for a dataset and derive its gates (margins above)."""
    doc = load_accuracy(base)
    doc.setdefault("datasets", {})[digest] = {
        "description": description,
        "reference": {k: summary[k] for k in ("accuracy_mean", "accuracy_std", "auc", "val", "val_std", "far",
                                              "eer", "threshold")},
        "provenance": provenance,
        "gates": {p: {"accuracy_min": round(summary["accuracy_mean"] - acc_margin, 5),
                      "auc_min": round(summary["auc"] - auc_margin, 5)}
                  for p, (acc_margin, auc_margin) in PRECISION_MARGINS.items()},
    }
    path = base / ACCURACY_FILE
    cache.atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return path


# --- the golden store: probe-set FP32 reference embeddings, committed with their hashes -------------

def _golden_paths(base: Path, digest: str) -> tuple[Path, Path]:
    stem = base / GOLDEN_DIR / f"probe-{digest[:16]}"
    return stem.with_suffix(".json"), stem.with_suffix(".npy")


def probe_fingerprint(dataset, indices) -> dict:
    """What the probe embeddings depend on in the data: each image's bytes and its face box."""
    return {dataset.keys[i]: {"sha256": cache.sha256_file(dataset.paths[i]),
                              "box": str(dataset.boxes[dataset.keys[i]]) if dataset.boxes is not None else None}
            for i in indices}


def save_golden(base: Path, dataset, indices, embeddings, meta: dict) -> Path:
    import numpy as np

    record_path, array_path = _golden_paths(base, dataset.digest)
    with cache.atomic_path(array_path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(embeddings, np.float32))
    record = {**meta, "dataset_digest": dataset.digest, "images": probe_fingerprint(dataset, indices),
              "order": [dataset.keys[i] for i in indices], "embeddings_file": array_path.name,
              "embeddings_sha256": cache.sha256_file(array_path)}
    cache.atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
    return record_path


def load_golden(base: Path, dataset, indices, preprocessing: dict):
    """(embeddings, record) of the committed golden probe set, or (None, why not)."""
    import numpy as np

    record_path, array_path = _golden_paths(base, dataset.digest)
    if not record_path.is_file():
        return None, f"no golden probe set for dataset digest {dataset.digest[:16]} in {base / GOLDEN_DIR}"
    record = json.loads(record_path.read_text())
    if not cache.verified(array_path, record["embeddings_sha256"]):
        raise HarnessError(f"{array_path}: missing or its sha256 differs from {record_path}; restore both from git "
                           "or rebuild them with 'facenet-harness golden --save'.")
    if record["order"] != [dataset.keys[i] for i in indices]:
        return None, f"{record_path}: recorded for another probe set (size/seed)"
    if record["preprocessing"] != preprocessing:
        return None, f"{record_path}: recorded with other preprocessing {record['preprocessing']}"
    if record["images"] != probe_fingerprint(dataset, indices):
        return None, f"{record_path}: probe images or boxes differ from the ones recorded"
    return np.load(array_path), record


# --- performance baselines, keyed by device fingerprint -----------------------------------------

PERF_FILE = "perf.json"
DEFAULT_PERF_TOLERANCE = 0.20


def load_perf(base: Path) -> dict:
    path = base / PERF_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {"entries": []}
    except (OSError, ValueError) as e:
        raise HarnessError(f"{path}: unreadable performance baselines ({e}); restore it from git.") from None


def perf_baseline(base: Path, fingerprint: dict, case: str) -> tuple[dict | None, str]:
    """(baseline, '') for this exact fingerprint and case, or (None, the reason there is none)."""
    entries = load_perf(base)["entries"]
    same = [e for e in entries if e["fingerprint"] == fingerprint]
    if not same:
        near = [e["fingerprint"] for e in entries
                if e["fingerprint"].get("backend") == fingerprint.get("backend")
                and e["fingerprint"].get("precision") == fingerprint.get("precision")]
        hint = f"; baselines exist for {near}" if near else ""
        return None, (f"no performance baseline in {base / PERF_FILE} matches {fingerprint}{hint}. "
                      "Save one on this machine with 'make perf-baseline'.")
    if case not in same[0]["results"]:
        return None, f"{base / PERF_FILE}: the entry for {fingerprint} has no result for {case}"
    return same[0]["results"][case], ""


def judge_perf(fps: float, baseline: dict) -> dict:
    """FAIL when throughput is below the baseline by more than the baseline's own tolerance."""
    floor = baseline["fps"] * (1.0 - baseline["tolerance"])
    return {"metric": "fps", "value": fps, "baseline": baseline["fps"], "tolerance": baseline["tolerance"],
            "min": floor, "ratio": fps / baseline["fps"], "pass": fps >= floor}


def save_perf(base: Path, fingerprint: dict, results: dict[str, float], source: str,
              tolerance: float = DEFAULT_PERF_TOLERANCE) -> Path:
    """Record (or update) the throughput of each case for this fingerprint."""
    doc = load_perf(base)
    entries = doc.setdefault("entries", [])
    entry = next((e for e in entries if e["fingerprint"] == fingerprint), None)
    if entry is None:
        entry = {"fingerprint": fingerprint, "results": {}}
        entries.append(entry)
    entry["source"] = source
    for case, fps in results.items():
        entry["results"][case] = {"fps": round(fps, 3), "tolerance": tolerance}
    path = base / PERF_FILE
    cache.atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return path
