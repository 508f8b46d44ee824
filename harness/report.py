"""Reports: the JSON document a run writes and the short text summary it prints."""
from __future__ import annotations

import json
from pathlib import Path

from . import cache


def write_json(path: str | Path, report: dict) -> Path:
    path = Path(path)
    cache.atomic_write_text(path, json.dumps(report, indent=2, sort_keys=True) + "\n")
    return path


def _bound(check: dict, digits: int = 5) -> str:
    """The threshold a check was judged by: a two-sided delta or a floor."""
    if "max" in check:
        return f"within +-{check['max']:.{digits}f}"
    return f">= {check['min']:.{digits}f}"


def _check_text(report: dict, metric: str) -> str:
    for c in report.get("gate", {}).get("checks", []):
        if c["metric"] == metric:
            return f"(gate {_bound(c)}: {'PASS' if c['pass'] else 'FAIL'})"
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


def bench_table(report: dict) -> str:
    fp = report["fingerprint"]
    lines = [f"FaceNet throughput: {fp['backend']} {fp['version']} {fp['precision']} on {fp['device']}"
             + (f" x{fp['cpu_count']}" if "cpu_count" in fp else ""),
             f"  {'case':14s} {'images/s':>10s} {'median ms':>10s} {'p90 ms':>8s} {'p99 ms':>8s} {'cv':>6s}  baseline"]
    for r in report["bench"]:
        lat, g = r["latency_ms"], r["gate"]
        verdict = (f"{g['baseline']:.1f} -{g['tolerance']:.0%}: {g['ratio']:.3f}x {'PASS' if g['pass'] else 'FAIL'}"
                   if g.get("pass") is not None else "none")
        lines.append(f"  {r['case']:14s} {r['fps']:10.1f} {lat['median']:10.2f} {lat['p90']:8.2f} {lat['p99']:8.2f} "
                     f"{r['cv']:6.1%}  {verdict}")
    lines.append(f"VERDICT: {report['gate']['verdict']}")
    if report["gate"]["verdict"] == "NO BASELINE":
        lines.append("  " + next(r["gate"]["why"] for r in report["bench"] if r["gate"].get("why")))
    return "\n".join(lines)


# --- the gate report: Markdown, JUnit XML and ROC curves -----------------------------------------

def _fmt_checks(checks: list[dict]) -> str:
    out = []
    for c in checks:
        out.append(f"{c['metric']} {c['value']:.4f} {_bound(c, 4)}: {'PASS' if c['pass'] else 'FAIL'}")
    return "; ".join(out)


def gate_markdown(gate: dict) -> str:
    env = gate["environment"]
    lines = [f"# FaceNet gate: {gate['verdict']}", "",
             f"Environment: {env['cpu']} x{env['cpu_count']}, Python {env['python']}, onnxruntime {env['onnxruntime']}, "
             f"numpy {env['numpy']}, {env['platform']}",
             f"Model: `{gate['model']['path']}` (sha256 {gate['model']['sha256'][:16]})  ",
             f"Dataset: {gate['dataset']['images']} images, {gate['dataset']['pairs']} pairs, {gate['dataset']['form']}, "
             f"digest {gate['dataset']['digest'][:16]}", ""]
    for row in gate["rows"]:
        a, c, p = row["accuracy"], row.get("conformance"), row.get("perf")
        lines += [f"## {row['backend']} {row['precision']}: {row['verdict']}", "",
                  "| check | value | threshold | verdict |", "| --- | --- | --- | --- |"]
        for chk in a["gate"]["checks"]:
            lines.append(f"| {chk['metric']} | {chk['value']:.5f} | {_bound(chk)} | {'PASS' if chk['pass'] else 'FAIL'} |")
        if a["gate"]["verdict"] == "NO BASELINE":
            lines.append("| accuracy | - | no baseline for this dataset | NO BASELINE |")
        lines.append(f"| accuracy +- std | {a['accuracy_mean']:.5f} +- {a['accuracy_std']:.5f} | | |")
        lines.append(f"| AUC / EER | {a['auc']:.5f} / {a['eer']:.4f} | | |")
        lines.append(f"| VAL @ FAR | {a['val']:.5f} +- {a['val_std']:.5f} @ {a['far']:.5f} | | |")
        if "flipped_decisions" in a:
            lines.append(f"| flipped decisions vs fp32 | {a['flipped_decisions']} of {a['pairs']} | | |")
        if c:
            s, t = c["conformance"], c["conformance"]["tolerance"]
            lines.append(f"| min / mean cosine | {s['min_cosine']:.6f} / {s['mean_cosine']:.6f} | "
                         f">= {t['min_cosine']} / {t['mean_cosine']} | {c['gate']['verdict']} |")
        if p:
            for r in p["bench"]:
                g = r["gate"]
                if g.get("pass") is None:
                    lines.append(f"| FPS {r['case']} | {r['fps']:.1f} | no baseline for this machine | NO BASELINE |")
                else:
                    lines.append(f"| FPS {r['case']} | {r['fps']:.1f} ({g['ratio']:.3f}x of {g['baseline']:.1f}) | "
                                 f">= {g['min']:.1f} | {'PASS' if g['pass'] else 'FAIL'} |")
        lines.append("")
    if gate.get("roc_png"):
        lines.append(f"ROC curves: `{gate['roc_png']}`")
    return "\n".join(lines) + "\n"


def gate_junit(gate: dict) -> str:
    """JUnit XML: one testcase per check, so CI systems show what failed."""
    from xml.etree import ElementTree as ET

    suite = ET.Element("testsuite", name="facenet-harness gate")
    counts = {"tests": 0, "failures": 0, "skipped": 0}
    for row in gate["rows"]:
        cls = f"{row['backend']}.{row['precision']}"
        items = [("accuracy", row["accuracy"]["gate"]["verdict"], _fmt_checks(row["accuracy"]["gate"]["checks"]))]
        if row.get("conformance"):
            conf = row["conformance"]
            items.append(("conformance", conf["gate"]["verdict"], "; ".join(conf["conformance"]["failures"]) or "ok"))
        for r in (row.get("perf") or {}).get("bench", []):
            g = r["gate"]
            verdict = "NO BASELINE" if g.get("pass") is None else "PASS" if g["pass"] else "FAIL"
            items.append((f"perf.{r['case']}", verdict, g.get("why") or f"{r['fps']:.1f} images/s, floor {g['min']:.1f}"))
        for name, verdict, message in items:
            case = ET.SubElement(suite, "testcase", classname=cls, name=name)
            counts["tests"] += 1
            if verdict == "FAIL":
                ET.SubElement(case, "failure", message=message)
                counts["failures"] += 1
            elif verdict == "NO BASELINE":
                ET.SubElement(case, "skipped", message=message)
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
