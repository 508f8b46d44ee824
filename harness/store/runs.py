"""The run archive: what a gate run leaves for a later run to compare with (``compare-runs OLD NEW``).

Every ``facenet-harness gate --out DIR`` writes ``DIR/run/``: ``run.json`` (when it ran, on what data,
against which reference, with which software, and per row: the engine's description and stack, its
verdict, its LFW metrics and per-fold figures, its perf samples) and one ``<backend>-<precision>.npy``
per row with the row's embeddings of every protocol image. Arrays are written first, each atomically
and named in ``run.json`` with its sha256; ``run.json`` is written last, so a run stopped halfway leaves
no archive that reads as complete (it says ``"complete": false``). The gate removes the archive of an
earlier run in ``DIR`` before it starts.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import numpy as np

from harness.core.errors import HarnessError
from harness.core.results import ArchivedRow, ArchivedRun, GateReport, to_json
from harness.core.verdicts import Verdict
from harness.store import cache

RUN_DIR = "run"
MANIFEST = "run.json"
FORMAT = 1


def run_dir(out: str | Path) -> Path:
    return Path(out) / RUN_DIR


def clear(out: str | Path) -> None:
    """Remove an earlier run's archive from ``out`` (before a new run writes its own)."""
    d = run_dir(out)
    (d / MANIFEST).unlink(missing_ok=True)
    for stale in d.glob("*.npy"):
        stale.unlink(missing_ok=True)


def write(out: str | Path, report: GateReport) -> Path:
    """The archive of ``report`` (rows with their embeddings and perf measurements) under ``out``."""
    d = run_dir(out)
    d.mkdir(parents=True, exist_ok=True)
    rows = []
    for row in report.rows:
        acc, perf = row.accuracy, row.perf
        entry: dict[str, Any] = {
            "backend": row.backend,
            "precision": row.precision,
            "verdict": row.verdict.value,
            "fault": row.fault,
            "engine": to_json(acc.engine if acc is not None else (perf.engine if perf is not None else {})),
            "stack": to_json(perf.stack) if perf is not None else {},
            "metrics": to_json(acc.metrics) if acc is not None else None,
            "fold_accuracy": None,
            "fold_thresholds": None,
            "embeddings": None,
            "perf": {},
        }
        if acc is not None:
            entry["fold_accuracy"] = [float(x) for x in acc.evaluation.accuracy]
            entry["fold_thresholds"] = [float(x) for x in acc.evaluation.fold_thresholds]
            if acc.embeddings is not None:
                name = f"{row.backend}-{row.precision}.npy".replace("/", "_")
                with cache.atomic_path(d / name) as tmp:
                    with open(tmp, "wb") as f:
                        np.save(f, np.asarray(acc.embeddings, np.float32))
                entry["embeddings"] = {"file": name, "sha256": cache.sha256_file(d / name)}
        if perf is not None:
            for p in perf.rows:
                m = p.measurement
                entry["perf"][p.case] = {
                    "fps": p.fps,
                    "samples": [float(x) for x in m.samples],
                    "cpu": perf.identity.get("cpu"),
                    "gpu": perf.identity.get("gpu"),
                }
        rows.append(entry)
    manifest = {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "verdict": report.verdict.value,
        "complete": report.complete,
        "dataset": to_json(report.dataset),
        "reference_model": to_json(report.reference_model),
        "environment": to_json(report.environment),
        "rows": rows,
    }
    cache.atomic_write_text(d / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    return d


def load(path: str | Path) -> ArchivedRun:
    """The archived run at ``path`` (a gate's ``--out`` folder or its ``run/`` folder); HarnessError naming
    the file when it is missing, incomplete or damaged."""
    path = Path(path)
    d = path if (path / MANIFEST).is_file() else run_dir(path)
    manifest = d / MANIFEST
    if not manifest.is_file():
        raise HarnessError(
            f"{manifest}: no run archive here; give the --out folder of a 'facenet-harness gate' run "
            "(runs before the archive existed have none: run the gate again there)."
        )
    try:
        doc = json.loads(manifest.read_text())
        if doc.get("format") != FORMAT:
            raise HarnessError(f"{manifest}: run archive format {doc.get('format')!r}, this harness reads {FORMAT}.")
        rows = [_row(d, r) for r in doc["rows"]]
        return ArchivedRun(
            str(d),
            doc["created"],
            Verdict(doc["verdict"]),
            bool(doc["complete"]),
            doc["dataset"],
            doc["reference_model"],
            doc["environment"],
            rows,
        )
    except HarnessError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise HarnessError(f"{manifest}: not a run archive this harness wrote ({type(e).__name__}: {e}).") from None


def _row(d: Path, r: dict) -> ArchivedRow:
    emb = None
    if r.get("embeddings"):
        f = d / r["embeddings"]["file"]
        if not f.is_file() or cache.sha256_file(f) != r["embeddings"]["sha256"]:
            raise HarnessError(f"{f}: missing or not the array its run.json names (sha256); the archive is damaged.")
        emb = np.load(f, allow_pickle=False)
    return ArchivedRow(
        r["backend"],
        r["precision"],
        Verdict(r["verdict"]),
        r.get("fault"),
        r.get("engine") or {},
        r.get("stack") or {},
        r.get("metrics"),
        r.get("fold_accuracy"),
        r.get("fold_thresholds"),
        emb,
        r.get("perf") or {},
    )
