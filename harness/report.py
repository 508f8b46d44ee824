"""Rendering of the gate's typed results: console text, Markdown, JSON, JUnit XML and ROC curves.

Nothing here decides anything: verdicts come from ``harness.gate`` and ``harness.baselines``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from . import cache
from .verdicts import Check, Verdict

if TYPE_CHECKING:
    from .gate import AccuracyResult, ConformanceResult, GateReport, GateRow, PerfResult


def write_json(path: str | Path, result) -> Path:
    from .gate import to_json

    path = Path(path)
    doc = result.to_json() if hasattr(result, "to_json") else to_json(result)
    cache.atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return path


def text(result) -> str:
    """The console text of any result."""
    from . import gate as g

    renderers = {g.AccuracyResult: accuracy_text, g.ConformanceResult: conformance_text, g.PerfResult: perf_text,
                 g.GateReport: gate_markdown, g.GateRow: lambda r: "\n".join(_row_markdown(r)),
                 g.PerfRow: _perf_row_text}
    return renderers[type(result)](result)


def _check_text(checks: list[Check], metric: str) -> str:
    for c in checks:
        if c.metric == metric:
            return f"(gate {c.bound_text()}: {c.verdict})"
    return ""


def accuracy_text(r: "AccuracyResult") -> str:
    eng, ds, m, t = r.engine, r.dataset, r.metrics, r.timing
    timing = ("embeddings from cache" if t["cached"] else
              f"{t['seconds']:.1f} s, {t['images_per_second']:.1f} images/s at batch {t['batch_size']}")
    lines = [
        f"FaceNet LFW accuracy: {eng['backend']} {eng['precision']} on {eng['device']}",
        f"  model     {r.model.path}  (sha256 {r.model.sha256[:16]})",
        f"  dataset   {ds.images} images, {ds.pairs} pairs in {ds.folds} folds, {ds.form}, digest {ds.digest[:16]}",
        f"  accuracy  {m['accuracy_mean']:.5f} +- {m['accuracy_std']:.5f}  " + _check_text(r.checks, "accuracy_mean"),
        f"  AUC       {m['auc']:.5f}            " + _check_text(r.checks, "auc"),
        f"  VAL       {m['val']:.5f} +- {m['val_std']:.5f} @ FAR={m['far']:.5f}",
        f"  EER       {m['eer']:.5f}   threshold {m['threshold']:.3f}",
        f"  time      {timing}",
    ]
    if r.reference is not None:
        lines.append(f"  vs ref    accuracy {r.accuracy_delta:+.5f} " + _check_text(r.checks, "accuracy_delta_vs_reference")
                     + f", {r.flipped_decisions} of {ds.pairs} decisions flipped at threshold "
                     f"{r.reference['threshold']:.3f} (reference {r.reference_model.path}, sha256 "
                     f"{r.reference_model.sha256[:16]})")
    lines.append(f"VERDICT: {r.verdict}")
    if r.verdict is Verdict.NO_BASELINE:
        lines.append(f"  no accuracy baseline for dataset digest {ds.digest} in {r.baselines}; after checking this "
                     "run, record it with --save-baseline 'description' (baselines/README.md).")
    return "\n".join(lines)


def conformance_text(r: "ConformanceResult") -> str:
    s, t = r.stats, r.tolerance
    label = f"{r.engine['backend']} {r.engine['precision']} vs the fp32 reference ({r.reference})"
    lines = [f"conformance {label}: {'PASS' if r.passed else 'FAIL: ' + '; '.join(r.failures)}",
             f"  cosine   min {s['min_cosine']:.6f} (>= {t.min_cosine})  p1 {s['p1_cosine']:.6f}  "
             f"mean {s['mean_cosine']:.6f} (>= {t.mean_cosine})",
             f"  abs err  max {s['max_abs']:.3e}  mean {s['mean_abs']:.3e}  p99 {s['p99_abs']:.3e}  (atol {t.atol:g})",
             f"  rel err  max {s['max_rel']:.3e}  mean {s['mean_rel']:.3e}  p99 {s['p99_rel']:.3e}  (rtol {t.rtol:g})",
             f"  elements failing atol AND rtol: {s['element_failures']}   NaN/Inf: {s['nonfinite']}",
             "  worst samples: " + ", ".join(f"{k} ({c:.5f})" for k, c in r.worst),
             f"VERDICT: {r.verdict}"]
    return "\n".join(lines)


def _ci(value, ci) -> str:
    return "-" if value is None else f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _baseline_text(b: dict | None) -> str:
    if not b:
        return "none"
    st = b.get("stack", {})
    return f"{b['fps']:.1f} ({st.get('runtime', '?')}, {b.get('recorded') or b.get('source', '')})"


def _perf_row_text(row) -> str:
    lat = row.latency_ms
    return (f"  {row.case:14s} {row.fps:10.1f} {lat['median']:10.2f} {lat['p90']:8.2f} {row.cv:6.1%}  "
            f"{_baseline_text(row.baseline):28s} {_ci(row.ratio, row.ratio_ci):24s} "
            f"{_ci(row.normalised_ratio, row.normalised_ci):24s} {row.verdict}\n"
            f"  {'':14s} why: {row.why}")


def perf_text(r: "PerfResult") -> str:
    ident = r.identity
    device = ident.get("gpu") or (ident.get("cpu") or {}).get("name")
    lines = [f"FaceNet throughput: {r.stack.get('runtime')} {ident['precision']} on {device}"
             + (f" x{ident['cpu']['cores']}" if "cpu" in ident else ""),
             f"  {'case':14s} {'images/s':>10s} {'median ms':>10s} {'p90 ms':>8s} {'cv':>6s}  {'baseline':28s} "
             f"{'ratio [95% CI]':24s} {'canary-normalised':24s} verdict"]
    lines += [_perf_row_text(row) for row in r.rows]
    lines.append(f"VERDICT: {r.verdict}")
    return "\n".join(lines)


# --- the gate report: Markdown, JUnit XML and ROC curves -----------------------------------------

def _row_markdown(row: "GateRow") -> list[str]:
    a, c, p = row.accuracy, row.conformance, row.perf
    m = a.metrics
    lines = [f"## {row.backend} {row.precision}: {row.verdict}", "",
             "| check | value | threshold | verdict |", "| --- | --- | --- | --- |"]
    for chk in a.checks:
        lines.append(f"| {chk.metric} | {chk.value:.5f} | {chk.bound_text()} | {chk.verdict} |")
    if a.verdict is Verdict.NO_BASELINE:
        lines.append("| accuracy | - | no baseline for this dataset | NO BASELINE |")
    lines.append(f"| accuracy +- std | {m['accuracy_mean']:.5f} +- {m['accuracy_std']:.5f} | | |")
    lines.append(f"| AUC / EER | {m['auc']:.5f} / {m['eer']:.4f} | | |")
    lines.append(f"| VAL @ FAR | {m['val']:.5f} +- {m['val_std']:.5f} @ {m['far']:.5f} | | |")
    if a.flipped_decisions is not None:
        lines.append(f"| flipped decisions vs reference | {a.flipped_decisions} of {a.dataset.pairs} | | |")
    if c is not None:
        s, t = c.stats, c.tolerance
        lines.append(f"| min / mean cosine | {s['min_cosine']:.6f} / {s['mean_cosine']:.6f} | "
                     f">= {t.min_cosine} / {t.mean_cosine} | {c.verdict} |")
    lines.append("")
    if p is not None:
        lines += ["| perf case | images/s | CV | baseline (stack, recorded) | ratio [95% CI] | canary-normalised [95% CI] "
                  "| verdict | why |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in p.rows:
            lines.append(f"| {r.case} | {r.fps:.1f} | {r.cv:.1%} | {_baseline_text(r.baseline)} | "
                         f"{_ci(r.ratio, r.ratio_ci)} | {_ci(r.normalised_ratio, r.normalised_ci)} | {r.verdict} | "
                         f"{r.why} |")
        lines.append("")
    return lines


def gate_markdown(gate: "GateReport") -> str:
    env = gate.environment
    lines = [f"# FaceNet gate: {gate.verdict}", "",
             f"Environment: {env['cpu']} x{env['cpu_count']}, Python {env['python']}, onnxruntime {env['onnxruntime']}, "
             f"numpy {env['numpy']}, {env['platform']}  ",
             f"Model: `{gate.model.path}` (sha256 {gate.model.sha256[:16]})  ",
             f"Reference: `{gate.reference_model.path}` (sha256 {gate.reference_model.sha256[:16]}), onnxruntime fp32  ",
             f"Dataset: {gate.dataset.images} images, {gate.dataset.pairs} pairs, {gate.dataset.form}, "
             f"digest {gate.dataset.digest[:16]}", ""]
    for row in gate.rows:
        lines += _row_markdown(row)
    if gate.roc_png:
        lines.append(f"ROC curves: `{gate.roc_png}`")
    return "\n".join(lines) + "\n"


def gate_junit(gate: "GateReport") -> str:
    """JUnit XML: one testcase per check, so CI systems show what failed."""
    from xml.etree import ElementTree as ET

    suite = ET.Element("testsuite", name="facenet-harness gate")
    counts = {"tests": 0, "failures": 0, "skipped": 0}
    for row in gate.rows:
        cls = f"{row.backend}.{row.precision}"
        items = [("accuracy", row.accuracy.verdict, "; ".join(map(str, row.accuracy.checks)) or "no baseline")]
        if row.conformance is not None:
            items.append(("conformance", row.conformance.verdict, "; ".join(row.conformance.failures) or "ok"))
        for r in (row.perf.rows if row.perf is not None else []):
            items.append((f"perf.{r.case}", r.verdict, f"{r.fps:.1f} images/s; {r.why}"))
        for name, verdict, message in items:
            case = ET.SubElement(suite, "testcase", classname=cls, name=name)
            counts["tests"] += 1
            if verdict is Verdict.FAIL:
                ET.SubElement(case, "failure", message=message)
                counts["failures"] += 1
            elif verdict in (Verdict.NO_BASELINE, Verdict.INCONCLUSIVE):
                ET.SubElement(case, "skipped", message=f"{verdict}: {message}")
                counts["skipped"] += 1
            else:
                ET.SubElement(case, "system-out").text = message
    for k, v in counts.items():
        suite.set(k, str(v))
    return ET.tostring(suite, encoding="unicode")


def roc_png(path: Path, curves: list[tuple[str, "object"]]) -> Path:
    """Fold-averaged ROC of each engine (facenet's grid), overlaid; the first curve is the reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    for i, (label, ev) in enumerate(curves):
        ax.plot(ev.fpr, ev.tpr, lw=2.5 if i == 0 else 1.4, ls="-" if i == 0 else "--",
                label=f"{label} (AUC {ev.auc:.5f}, acc {ev.accuracy_mean:.4f})")
    ax.set_xscale("log")
    ax.set_xlim(1e-3, 1)
    ax.set_ylim(0.8, 1.0)
    ax.set_xlabel("false accept rate (log scale)")
    ax.set_ylabel("true accept rate")
    ax.set_title("FaceNet on LFW: fold-averaged ROC")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with cache.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def write_gate(gate: "GateReport", out: Path, curves) -> dict[str, Path]:
    """gate.md, gate.json, gate.xml and roc.png in ``out``."""
    out = Path(out)
    gate.roc_png = str(roc_png(out / "roc.png", curves))
    paths = {"json": write_json(out / "gate.json", gate), "xml": out / "gate.xml", "md": out / "gate.md",
             "roc": Path(gate.roc_png)}
    cache.atomic_write_text(paths["xml"], gate_junit(gate))
    cache.atomic_write_text(paths["md"], gate_markdown(gate))
    return paths
