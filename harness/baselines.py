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
# Margins below the measured FP32 reference, see baselines/README.md for the reasoning.
ACCURACY_MARGIN = 0.002  # 12 of 6,000 pair decisions
AUC_MARGIN = 0.001


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


def judge(summary: dict, gate: dict | None) -> dict:
    """PASS/FAIL per gated metric, with the threshold that decided it."""
    if gate is None:
        return {"verdict": "NO BASELINE", "checks": []}
    checks = []
    for metric, bound in (("accuracy_mean", gate["accuracy_min"]), ("auc", gate["auc_min"])):
        checks.append({"metric": metric, "value": summary[metric], "min": bound, "pass": summary[metric] >= bound})
    return {"verdict": "PASS" if all(c["pass"] for c in checks) else "FAIL", "checks": checks}


def save_reference(base: Path, digest: str, description: str, summary: dict, provenance: dict) -> Path:
    """Record an FP32 reference run for a dataset and derive its gates (margins above)."""
    doc = load_accuracy(base)
    doc.setdefault("datasets", {})[digest] = {
        "description": description,
        "reference": {k: summary[k] for k in ("accuracy_mean", "accuracy_std", "auc", "val", "val_std", "far",
                                              "eer", "threshold")},
        "provenance": provenance,
        "gates": {"fp32": {"accuracy_min": round(summary["accuracy_mean"] - ACCURACY_MARGIN, 5),
                           "auc_min": round(summary["auc"] - AUC_MARGIN, 5)}},
    }
    path = base / ACCURACY_FILE
    cache.atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return path
