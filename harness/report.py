"""Reports: the JSON document a run writes and the short text summary it prints."""
from __future__ import annotations

import json
from pathlib import Path

from . import cache


def write_json(path: str | Path, report: dict) -> Path:
    path = Path(path)
    cache.atomic_write_text(path, json.dumps(report, indent=2, sort_keys=True) + "\n")
    return path


def _check_text(report: dict, metric: str) -> str:
    for c in report.get("gate", {}).get("checks", []):
        if c["metric"] == metric:
            verdict = "PASS" if c["pass"] else "FAIL"
            if "max" in c:
                return f"(gate within +-{c['max']:.5f}: {verdict})"
            return f"(gate >= {c['min']:.5f}: {verdict})"
    return ""


def summary(report: dict) -> str:
    eng, ds, model, t = report["engine"], report["dataset"], report["model"], report["timing"]
    timing = ("embeddings from cache" if t["cached"] else
              f"{t['seconds']:.1f} s, {t['images_per_second']:.1f} images/s at batch {t['batch_size']}")
    lines = [
        f"FaceNet LFW accuracy: {eng['backend']} {eng['precision']} on {eng['device']}",
        f"  model     {model['path']}  (sha256 {model['sha256'][:16]})",
        f"  dataset   {report['images']} images, {report['pairs']} pairs in {ds['folds']} folds, {ds['form']}, "
        f"digest {ds['digest'][:16]}",
        f"  accuracy  {report['accuracy_mean']:.5f} +- {report['accuracy_std']:.5f}  "
        + _check_text(report, "accuracy_mean"),
        f"  AUC       {report['auc']:.5f}            " + _check_text(report, "auc"),
        f"  VAL       {report['val']:.5f} +- {report['val_std']:.5f} @ FAR={report['far']:.5f}",
        f"  EER       {report['eer']:.5f}   threshold {report['threshold']:.3f}",
        f"  time      {timing}",
        *([f"  vs fp32   accuracy {report['accuracy_delta']:+.5f} "
           + _check_text(report, "accuracy_delta_vs_fp32")
           + f", {report['flipped_decisions']} of {report['pairs']} decisions flipped at threshold "
           f"{report['reference']['threshold']:.3f}"] if "reference" in report else []),
        f"VERDICT: {report['gate']['verdict']}",
    ]
    if report["gate"]["verdict"] == "NO BASELINE":
        lines.append(f"  no accuracy baseline for dataset digest {ds['digest']} in {report['gate']['baselines']}; "
                     "after checking this run, record it with --save-baseline 'description'.")
    return "\n".join(lines)
