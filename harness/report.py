"""Rendering of the gate's typed results: console text, Markdown, JSON, JUnit XML and ROC curves.

Nothing here decides anything: verdicts come from ``harness.gate`` and ``harness.store.baselines``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.core import results as r_
from harness.core.errors import HarnessError
from harness.core.results import (
    AccuracyResult,
    ConformanceResult,
    Diagnosis,
    Evaluation,
    GateReport,
    GateRow,
    PerfResult,
    PerfRow,
    QuantizeResult,
    SoakResult,
    UpgradeReport,
    to_json,
)
from harness.core.verdicts import Check, Verdict
from harness.store import cache, runs


def write_json(path: str | Path, result) -> Path:
    path = Path(path)
    doc = result.to_json() if hasattr(result, "to_json") else to_json(result)
    cache.atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return path


def text(result) -> str:
    """The console text of any result."""
    return RENDERERS[type(result)](result)


def quantize_text(r: QuantizeResult) -> str:
    c = r.calibration
    lines = [
        f"wrote {r.path} (sha256 {r.sha256}): symmetric INT8 QDQ for TensorRT/IxRT, calibrated ({c.method}) "
        f"on {c.size} LFW images outside the protocol, seed {c.seed}"
    ]
    lines += [f"  TensorRT Q/DQ rule broken: {v}" for v in r.violations]
    if not r.violations:
        lines.append("TensorRT Q/DQ rules: PASS (zero points int8 0, weights per output channel, biases float)")
    lines += [text(x) for x in (r.conformance, r.accuracy) if x is not None]
    checked = "Q/DQ rules" + (", conformance and LFW accuracy on the CPU" if r.accuracy is not None else " only")
    lines.append(f"quantize --for tensorrt: {r.verdict} ({checked})")
    return "\n".join(lines)


def soak_text(r: SoakResult) -> str:
    eng = r.engine
    rates = r.window_images_per_second
    mem = (
        "resident memory not readable here"
        if r.rss_end_mib is None
        else f"resident memory {r.rss_warm_mib or 0:.0f} MiB after warm-up -> {r.rss_end_mib:.0f} MiB at the end "
        f"(peak {r.rss_peak_mib:.0f}; slope {r.rss_slope_mib_per_minute or 0:+.1f} MiB/min)"
    )
    lines = [
        f"FaceNet soak: {r.workers} x {eng.get('backend')} {eng.get('precision')} on {eng.get('device')}, "
        f"{r.seconds:.0f} s, batch {r.batch_size}",
        f"  outputs   {r.checked_outputs} checked against the reference ({r.images} images, "
        f"every probe batch at least {r.rotations_min}x per worker), {r.mismatches} beyond the tolerance; "
        f"largest change of an output from the same worker's first: {r.max_change_vs_first_output:.3g}",
        f"  memory    {mem}",
        "  rate      "
        + (
            f"{min(rates):.1f}-{max(rates):.1f} images/s over {len(rates)} windows of "
            f"{r.window_seconds:.1f} s; last/first {r.throughput_drift:.3f}, CV {r.throughput_cv:.1%}"
            if rates and r.throughput_drift is not None
            else "no window after the warm-up"
        ),
    ]
    lines += [
        f"  mismatch  worker {m.worker} call {m.call} batch {m.batch} at {m.seconds:.1f} s: {m.detail}"
        for m in r.first_mismatches
    ]
    lines.append(f"  verdict   {r.verdict}" + (f": {'; '.join(r.reasons)}" if r.reasons else ""))
    return "\n".join(lines)


def _check_text(checks: list[Check], metric: str) -> str:
    for c in checks:
        if c.metric == metric:
            return f"(gate {c.bound_text()}: {c.verdict})"
    return ""


def accuracy_text(r: AccuracyResult) -> str:
    eng, ds, m, t = r.engine, r.dataset, r.metrics, r.timing
    timing = (
        "embeddings from cache"
        if t["cached"]
        else f"{t['seconds']:.1f} s, {t['images_per_second']:.1f} images/s at batch {t['batch_size']}"
    )
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
        lines.append(
            f"  vs ref    accuracy {r.accuracy_delta:+.5f} "
            + _check_text(r.checks, "accuracy_delta_vs_reference")
            + f", {r.flipped_decisions} of {ds.pairs} decisions flipped at the engine's fold thresholds "
            f"(reference {r.reference_model.path}, sha256 {r.reference_model.sha256[:16]})"
        )
        lines += [f"  flipped   {_flipped_text(f)}" for f in (r.flipped_pairs or [])[:5]]
    lines.append(f"VERDICT: {r.verdict}")
    if r.verdict is Verdict.NO_BASELINE:
        lines.append(
            f"  no accuracy baseline for dataset digest {ds.digest} in {r.baselines}; after checking this "
            "run, record it with --save-baseline 'description' (baselines/README.md)."
        )
    return "\n".join(lines)


def _flipped_text(f) -> str:
    return (
        f"{f.first} vs {f.second} ({'same' if f.same else 'different'}, fold {f.fold}): distance "
        f"{f.reference_distance:.4f} -> {f.engine_distance:.4f} across {f.threshold:.3f}, engine "
        f"{'right' if f.engine_correct else 'wrong'}"
    )


def conformance_text(r: ConformanceResult) -> str:
    s, t = r.stats, r.tolerance
    label = f"{r.engine['backend']} {r.engine['precision']} vs the fp32 reference ({r.reference})"
    lines = [
        f"conformance {label}: {'PASS' if r.passed else 'FAIL: ' + '; '.join(r.failures)}",
        f"  cosine   min {s['min_cosine']:.6f} (>= {t.min_cosine})  p1 {s['p1_cosine']:.6f}  "
        f"mean {s['mean_cosine']:.6f} (>= {t.mean_cosine})",
        f"  abs err  max {s['max_abs']:.3e}  mean {s['mean_abs']:.3e}  p99 {s['p99_abs']:.3e}  (atol {t.atol:g})",
        f"  rel err  max {s['max_rel']:.3e}  mean {s['mean_rel']:.3e}  p99 {s['p99_rel']:.3e}  (rtol {t.rtol:g})",
        f"  elements failing atol AND rtol: {s['element_failures']}   NaN/Inf: {s['nonfinite']}",
        "  worst samples: " + ", ".join(f"{k} ({c:.5f})" for k, c in r.worst),
    ]
    if getattr(r, "first_divergence", None) is not None:
        lines += ["  " + line for line in diagnosis_text(r.first_divergence).splitlines()]
    lines.append(f"VERDICT: {r.verdict}")
    return "\n".join(lines)


def _layer_line(s) -> str:
    return (
        f"{s.node} ({s.op_type}, {s.tensor}): error {s.error:.4g}, cosine {s.cosine:.6f}, max abs {s.max_abs:.3g}, "
        f"max rel {s.max_rel:.3g}, inputs {s.input_error:.4g}, adds {s.contribution:+.4g}"
    )


def diagnosis_text(d) -> str:
    """The first diverging layer (harness.checks.diagnose.Diagnosis) and the layers adding the most error."""
    lines = [f"first divergence ({d.precision}, {len(d.samples)} worst probe images): {d.status}: {d.why}"]
    if d.tolerance is not None:
        lines.append(
            f"  per-layer tolerance: relative error <= {d.tolerance.max_error:.4g} ({d.tolerance.basis}); "
            f"{d.mapping.get('compared')} layers compared, matched by {d.mapping.get('by')}; "
            f"{len(d.mapping.get('hidden', []))} of {d.mapping.get('reference_tensors')} reference tensors "
            "hidden by the engine's fusions"
        )
    if d.diverged:
        lines.append(
            f"  node {d.node} ({d.op_type}), tensor {d.tensor}: cosine {d.cosine:.6f}, relative error "
            f"{d.error:.4g}, max abs {d.max_abs:.3g}, max rel {d.max_rel:.3g}"
        )
        lines += ["  input  " + _layer_line(s) for s in d.inputs]
        lines += ["  after  " + _layer_line(s) for s in d.after]
    if d.ranking:
        lines.append("  layers by error contribution:")
        lines += [f"    {i}. " + _layer_line(s) for i, s in enumerate(d.ranking, 1)]
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
    return (
        f"  {row.case:14s} {row.fps:10.1f} {lat['median']:10.2f} {lat['p90']:8.2f} {row.cv:6.1%}  "
        f"{_baseline_text(row.baseline):28s} {_ci(row.ratio, row.ratio_ci):24s} "
        f"{_ci(row.normalised_ratio, row.normalised_ci):24s} {row.verdict}\n"
        f"  {'':14s} why: {row.why}"
        + "".join(
            f"\n  {'':14s} stage {d.stage}: {_ms(d.baseline_ms)} -> {_ms(d.now_ms)} ms per batch"
            for d in row.stage_deltas[:3]
        )
    )


def perf_text(r: PerfResult) -> str:
    ident = r.identity
    device = ident.get("gpu") or (ident.get("cpu") or {}).get("name")
    lines = [
        f"FaceNet throughput: {r.stack.get('runtime')} {ident['precision']} on {device}"
        + (f" x{ident['cpu']['cores']}" if "cpu" in ident else ""),
        f"  {'case':14s} {'images/s':>10s} {'median ms':>10s} {'p90 ms':>8s} {'cv':>6s}  {'baseline':28s} "
        f"{'ratio [95% CI]':24s} {'canary-normalised':24s} verdict",
    ]
    lines += [_perf_row_text(row) for row in r.rows]
    lines.append(f"VERDICT: {r.verdict}")
    return "\n".join(lines)


# --- the gate report: Markdown, JUnit XML and ROC curves -----------------------------------------


def _row_markdown(row: GateRow) -> list[str]:
    a, c, p = row.accuracy, row.conformance, row.perf
    lines = [f"## {row.backend} {row.precision}: {row.verdict}", ""]
    if row.fault:
        lines += [f"**Engine fault** {row.fault}", ""]
    if a is None:
        return lines
    m = a.metrics
    lines += ["| check | value | threshold | verdict |", "| --- | --- | --- | --- |"]
    for chk in a.checks:
        lines.append(f"| {chk.metric} | {chk.value:.5f} | {chk.bound_text()} | {chk.verdict} |")
    if a.verdict is Verdict.NO_BASELINE:
        lines.append("| accuracy | - | no baseline for this dataset | NO BASELINE |")
    lines.append(f"| accuracy +- std | {m['accuracy_mean']:.5f} +- {m['accuracy_std']:.5f} | | |")
    lines.append(f"| AUC / EER | {m['auc']:.5f} / {m['eer']:.4f} | | |")
    lines.append(f"| VAL @ FAR | {m['val']:.5f} +- {m['val_std']:.5f} @ {m['far']:.5f} | | |")
    if a.flipped_decisions is not None:
        sheet = (
            f" ([worst {min(a.flipped_decisions, SHEET_PAIRS)}]({Path(a.flipped_png).name}))" if a.flipped_png else ""
        )
        lines.append(
            f"| flipped decisions vs reference | {a.flipped_decisions} of {a.dataset.pairs}{sheet} | "
            "engine's fold thresholds | |"
        )
    if c is not None:
        s, t = c.stats, c.tolerance
        lines.append(
            f"| min / mean cosine | {s['min_cosine']:.6f} / {s['mean_cosine']:.6f} | "
            f">= {t.min_cosine} / {t.mean_cosine} | {c.verdict} |"
        )
    lines.append("")
    d = c.first_divergence if c is not None else None
    if d is not None:
        lines += [f"**First divergence**: {d.status}: {d.why}", ""]
        if d.diverged or d.ranking:
            lines += [
                "| layer | op | tensor | relative error | cosine | max abs | max rel | inputs' error | adds |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            ]
            shown = (
                (
                    [(f"**{d.node}** (first)", s) for s in d.layers if s.node == d.node and s.tensor == d.tensor]
                    + [(f"{s.node} (after)", s) for s in d.after]
                )
                if d.diverged
                else [(f"{s.node} (adds #{i})", s) for i, s in enumerate(d.ranking, 1)]
            )
            for label, layer in shown:
                lines.append(
                    f"| {label} | {layer.op_type} | `{layer.tensor}` | {layer.error:.4g} | {layer.cosine:.6f} "
                    f"| {layer.max_abs:.3g} | {layer.max_rel:.3g} | {layer.input_error:.4g} "
                    f"| {layer.contribution:+.4g} |"
                )
            lines.append("")
    if p is not None:
        lines += [
            "| perf case | images/s | CV | baseline (stack, recorded) | ratio [95% CI] | canary-normalised [95% CI] "
            "| verdict | why |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in p.rows:
            lines.append(
                f"| {r.case} | {r.fps:.1f} | {r.cv:.1%} | {_baseline_text(r.baseline)} | "
                f"{_ci(r.ratio, r.ratio_ci)} | {_ci(r.normalised_ratio, r.normalised_ci)} | {r.verdict} | "
                f"{r.why} |"
            )
        lines.append("")
        for r in p.rows:
            lines += _stage_markdown(r)
    return lines


STAGES_SHOWN = 10  # stage rows in the Markdown, the largest increases first


def _stage_markdown(row) -> list[str]:
    """A FAIL row's stage split against the baseline's (milliseconds per batch), the largest increase first."""
    if row.breakdown is None:
        return []
    lines = [
        f"**{row.case}: where a batch's time goes** ({row.breakdown.source}; ms per batch of {row.breakdown.batch})",
        "",
        "| stage | baseline ms | now ms | added ms | ratio |",
        "| --- | --- | --- | --- | --- |",
    ]
    if not row.stage_deltas:
        shown = list(row.breakdown.stages_ms.items())
        lines += [f"| {k} | - | {v:.3f} | | |" for k, v in shown[:STAGES_SHOWN]]
        more = len(shown) - STAGES_SHOWN
    else:
        lines += [
            f"| {d.stage} | {_ms(d.baseline_ms)} | {_ms(d.now_ms)} | {d.added_ms:+.3f} | "
            f"{'-' if d.ratio is None else f'{d.ratio:.2f}x'} |"
            for d in row.stage_deltas[:STAGES_SHOWN]
        ]
        more = len(row.stage_deltas) - STAGES_SHOWN
    if more > 0:
        lines.append(f"| ({more} more stages in gate.json) | | | | |")
    return lines + [""]


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def gate_markdown(gate: GateReport) -> str:
    env = gate.environment
    lines = [
        f"# FaceNet gate: {gate.verdict}" + ("" if gate.complete else " (INCOMPLETE)"),
        "",
        *([] if gate.complete else [f"**This run is not complete: {gate.status.rstrip('.')}.**", ""]),
        f"Environment: {env['cpu']} x{env['cpu_count']}, Python {env['python']}, onnxruntime {env['onnxruntime']}, "
        f"numpy {env['numpy']}, {env['platform']}  ",
        f"Model: `{gate.model.path}` (sha256 {gate.model.sha256[:16]})  ",
        f"Reference: `{gate.reference_model.path}` (sha256 {gate.reference_model.sha256[:16]}), onnxruntime fp32  ",
        f"Dataset: {gate.dataset.images} images, {gate.dataset.pairs} pairs, {gate.dataset.form}, "
        f"digest {gate.dataset.digest[:16]}",
        "",
    ]
    for row in gate.rows:
        lines += _row_markdown(row)
    if gate.roc_png:
        lines.append(f"ROC curves: `{gate.roc_png}`")
    return "\n".join(lines) + "\n"


def gate_junit(gate: GateReport) -> str:
    """JUnit XML: one testcase per check, so CI systems show what failed."""
    from xml.etree import ElementTree as ET

    suite = ET.Element("testsuite", name="facenet-harness gate")
    counts = {"tests": 0, "failures": 0, "skipped": 0}
    for row in gate.rows:
        cls = f"{row.backend}.{row.precision}"
        items = []
        if row.fault:
            items.append(("engine", Verdict.FAIL, f"engine fault {row.fault}"))
        if row.accuracy is not None:
            items.append(("accuracy", row.accuracy.verdict, "; ".join(map(str, row.accuracy.checks)) or "no baseline"))
        if row.conformance is not None:
            items.append(("conformance", row.conformance.verdict, "; ".join(row.conformance.failures) or "ok"))
        for r in row.perf.rows if row.perf is not None else []:
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
    if not gate.complete:  # a CI system must not read a partial run as a green one
        case = ET.SubElement(suite, "testcase", classname="gate", name="complete")
        kind = "failure" if gate.verdict is Verdict.FAIL else "error"
        ET.SubElement(case, kind, message=gate.status)
        counts["tests"] += 1
        counts[f"{kind}s"] = counts.get(f"{kind}s", 0) + 1
    for k, v in counts.items():
        suite.set(k, str(v))
    return ET.tostring(suite, encoding="unicode")


def roc_png(path: Path, curves: list[tuple[str, Evaluation]]) -> Path:
    """Fold-averaged ROC of each engine (facenet's grid), overlaid; the first curve is the reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    for i, (label, ev) in enumerate(curves):
        ax.plot(
            ev.fpr,
            ev.tpr,
            lw=2.5 if i == 0 else 1.4,
            ls="-" if i == 0 else "--",
            label=f"{label} (AUC {ev.auc:.5f}, acc {ev.accuracy_mean:.4f})",
        )
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


SHEET_PAIRS = 16  # flipped pairs on a contact sheet, worst first
SHEET_COLUMNS = 4
SHEET_CELL = (340, 230)  # pixels per pair: two 160x160 crops side by side under three lines of text
SHEET_TEXT = 66  # height of the text band above the crops


def contact_sheet_layout(n: int) -> tuple[int, int, list[tuple[int, int]]]:
    """Width, height and the top-left pixel of each of ``n`` pairs' crops (first crop; the second follows)."""
    cols = max(1, min(n, SHEET_COLUMNS))
    rows = max(1, -(-n // cols))
    w, h = SHEET_CELL
    return cols * w, rows * h, [((k % cols) * w + (w - 320) // 2, (k // cols) * h + SHEET_TEXT) for k in range(n)]


def flipped_png(path: Path, pairs, dataset, limit: int = SHEET_PAIRS) -> Path:
    """A contact sheet of the worst flipped pairs (``accuracy.FlippedPair``): each pair's two crops, as the
    engine saw them (``Dataset.load``, before normalisation), with both distances and the threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    pairs = list(pairs)[:limit]
    index = {k: i for i, k in enumerate(dataset.keys)}
    width, height, where = contact_sheet_layout(len(pairs))
    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100, facecolor="white")
    for k, (f, (x, y)) in enumerate(zip(pairs, where, strict=True)):
        faces = np.concatenate([dataset.load(index[f.first]), dataset.load(index[f.second])], axis=1)
        fig.figimage(faces, xo=x, yo=height - y - faces.shape[0], origin="upper")  # pixel for pixel
        lines = [
            f"#{k + 1} {f.first.split('/')[-1]}  |  {f.second.split('/')[-1]}",
            f"{'same person' if f.same else 'different people'}, fold {f.fold}, threshold {f.threshold:.3f}",
            f"reference {f.reference_distance:.4f} -> engine {f.engine_distance:.4f} "
            f"({'engine right' if f.engine_correct else 'engine wrong'})",
        ]
        for j, line in enumerate(lines):
            fig.text(
                (x + 2) / width,
                1 - (y - SHEET_TEXT + 6 + 19 * j) / height,
                line,
                fontsize=7,
                va="top",
                color="black" if j < 2 else ("darkgreen" if f.engine_correct else "firebrick"),
            )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with cache.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, facecolor="white")
    plt.close(fig)
    return path


REPORT_FILES = ("gate.json", "gate.md", "gate.xml", "roc.png")


def check_writable(folder: Path, what: str, option: str) -> None:
    """HarnessError (exit 2) now, before a long run, when ``folder`` cannot take the file(s)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise HarnessError(f"{folder}: cannot write {what} there ({e.strerror or e}); pass {option}.") from None


def check_json_target(path: Path) -> None:
    if path.is_dir():
        raise HarnessError(f"{path}: is a folder; --json takes a file name (e.g. {path / 'gate.json'}).")
    check_writable(path.parent, "the JSON report", "--json FILE")


def start_gate(out: Path) -> None:
    """Before a gate runs: ``out`` must be writable (checked now, not after the run), and the report of an
    earlier run is removed, so nothing in ``out`` can be read as this run's until this run writes it."""
    out = Path(out)
    check_writable(out, "the gate report", "--out DIR")
    for stale in [*(out / n for n in REPORT_FILES), *out.glob("flipped-*.png")]:
        stale.unlink(missing_ok=True)
    runs.clear(out)


def write_progress(gate: GateReport, out: Path) -> None:
    """gate.json, gate.md and gate.xml of a run so far (``complete`` False), each replaced atomically."""
    out = Path(out)
    write_json(out / "gate.json", gate)
    cache.atomic_write_text(out / "gate.md", gate_markdown(gate))
    cache.atomic_write_text(out / "gate.xml", gate_junit(gate))
    runs.write(out, gate)  # the run archive so far (complete False), for compare-runs


def write_gate(gate: GateReport, out: Path, curves: list[tuple[str, Evaluation]], dataset=None) -> dict[str, Path]:
    """gate.md, gate.json, gate.xml and roc.png in ``out``; given the ``dataset``, a contact sheet of the
    worst flipped pairs of each engine that has any (flipped-<backend>-<precision>.png), linked from gate.md."""
    out = Path(out)
    gate.roc_png = str(roc_png(out / "roc.png", curves))
    for row in gate.rows:
        if dataset is not None and row.accuracy is not None and row.accuracy.flipped_pairs:
            row.accuracy.flipped_png = str(
                flipped_png(out / f"flipped-{row.backend}-{row.precision}.png", row.accuracy.flipped_pairs, dataset)
            )
    paths = {
        "json": write_json(out / "gate.json", gate),
        "xml": out / "gate.xml",
        "md": out / "gate.md",
        "roc": Path(gate.roc_png),
    }
    cache.atomic_write_text(paths["xml"], gate_junit(gate))
    cache.atomic_write_text(paths["md"], gate_markdown(gate))
    paths["run"] = runs.write(out, gate)
    return paths


def _fmt(x, spec: str, none: str = "-") -> str:
    return none if x is None else format(x, spec)


def upgrade_markdown(u: UpgradeReport) -> str:
    """The upgrade report: old and new side by side, each against the reference and against each other."""
    lines = [
        f"# Upgrade report: {u.verdict}",
        "",
        f"Old run: `{u.old}` ({u.old_created})  ",
        f"New run: `{u.new}` ({u.new_created})",
        "",
        "Software that changed (environment): " + ("; ".join(u.software_changes) or "nothing"),
        "",
        "| engine | verdict old -> new | accuracy old -> new | delta new-old [95% CI] | cosine old/new min / mean "
        "| decisions changed (now right / now wrong) | throughput new/old [95% CI] |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in u.rows:
        ci = row.accuracy_delta_ci
        delta = (
            "-"
            if row.accuracy_delta is None
            else f"{row.accuracy_delta:+.5f}" + (f" [{ci[0]:+.5f}, {ci[1]:+.5f}]" if ci else "")
        )
        cosine = (
            "-"
            if row.min_cosine is None
            else f"{row.min_cosine:.6f} / {row.mean_cosine:.6f}" + (" (bit-identical)" if row.identical else "")
        )
        flips = (
            "-"
            if row.decisions_changed is None
            else f"{row.decisions_changed} of {row.pairs} ({row.now_right} / {row.now_wrong})"
        )
        tput = (
            "; ".join(
                f"{t['case']} {t['ratio']:.3f} [{t['ci'][0]:.3f}, {t['ci'][1]:.3f}]"
                if t.get("ratio") is not None
                else f"{t['case']} {t['old_fps']:.1f} -> {t['new_fps']:.1f} images/s (other device)"
                for t in row.throughput
            )
            or "-"
        )
        lines.append(
            f"| {row.key} | {row.old_verdict} -> {row.new_verdict} | {_fmt(row.old_accuracy, '.5f')} -> "
            f"{_fmt(row.new_accuracy, '.5f')} | {delta} | {cosine} | {flips} | {tput} |"
        )
    lines.append("")
    for row in u.rows:
        said = [f"software: {'; '.join(row.software_changes) or 'nothing changed'}"]
        if row.worst_image and row.min_cosine is not None and not row.identical:
            said.append(f"the image that moved most: {row.worst_image} (cosine {row.min_cosine:.6f})")
        said += row.notes
        lines.append(f"- **{row.key}**: " + "; ".join(said))
    for k in u.only_old:
        lines.append(f"- **{k}**: only in the old run")
    for k in u.only_new:
        lines.append(f"- **{k}**: only in the new run")
    lines += [f"- {n}" for n in u.notes]
    return "\n".join(lines) + "\n"


RENDERERS: dict[type, Callable[[Any], str]] = {
    Diagnosis: diagnosis_text,
    AccuracyResult: accuracy_text,
    ConformanceResult: conformance_text,
    PerfResult: perf_text,
    GateReport: gate_markdown,
    GateRow: lambda r: "\n".join(_row_markdown(r)),
    PerfRow: _perf_row_text,
    SoakResult: soak_text,
    QuantizeResult: quantize_text,
    UpgradeReport: upgrade_markdown,
}
r_.use_renderer(text)  # str() of any result renders it as above
