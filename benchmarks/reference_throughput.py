"""How much the harness costs: the reference FP32 run against a bare onnxruntime loop, one process.

Three figures on the same batches of real LFW crops, each after a warm-up batch:
  bare      - ``InferenceSession.run`` over batches already decoded and preprocessed in memory;
  harness   - ``Backend.run`` (the harness's engine call) over those same in-memory batches;
  pipeline  - ``accuracy.embed``: decode + crop + preprocess overlapped with inference, as the
              accuracy gate runs it.
Prints images/second and the ratios to ``bare``. Usage (from the repository root, after ``make install``):

    .venv/bin/python benchmarks/reference_throughput.py --images 1280     # 0 = all 7,701 images
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from harness import engines, model
from harness.checks import accuracy
from harness.lfw import data
from harness.lfw.data import Dataset
from harness.store import cache


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1280, help="how many protocol images (0 = all)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each variant (median reported)")
    ap.add_argument("--onnx", help="model (default: the prepared dynamic-batch export)")
    args = ap.parse_args()

    info = model.inspect(args.onnx or model.prepare(cache.cache_root()).dynamic)
    dataset = Dataset(*data.locate(Path(__file__).resolve().parents[2] / "shared"))
    n = args.images or len(dataset.keys)
    indices = list(range(n))
    batches = [dataset.batch(indices[i : i + args.batch_size]) for i in range(0, n, args.batch_size)]
    engine = engines.create("onnxruntime", info, "fp32")
    session = engine.session
    feed = info.input_name

    runs = {
        "bare": lambda: [session.run(None, {feed: b}) for b in batches],
        "harness": lambda: [engine.run(b) for b in batches],
        "pipeline": lambda: accuracy.embed(engine, dataset, args.batch_size, indices=indices),
    }
    for b in batches[:2]:  # warm-up: first-run allocations and kernel selection
        engine.run(b)
    seconds = {name: [] for name in runs}
    names = list(runs)
    for r in range(args.repeats):  # rotate the order so drift (clock, cache) hits every variant alike
        for name in names[r % 3 :] + names[: r % 3]:
            seconds[name].append(timed(runs[name]))
    median = {name: float(np.median(t)) for name, t in seconds.items()}
    result = {
        "images": n,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "onnxruntime": engine.describe()["version"],
        "cpu": engine.describe()["device"],
        "images_per_second": {name: n / t for name, t in median.items()},
        "spread_percent": {name: 100 * float(np.std(t) / np.mean(t)) for name, t in seconds.items()},
        "ratio_to_bare": {name: median["bare"] / median[name] for name in ("harness", "pipeline")},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
