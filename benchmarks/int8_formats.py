"""Which INT8 form to use on this CPU: speed and fidelity of each format in ``harness.model.quantize``.

For every INT8 format (and FP32/FP16 for scale) this builds the engine (cached), runs one batch of
real LFW crops as warm-up, times ``--repeats`` batches, and compares with FP32 on those crops.
Usage: ``.venv/bin/python benchmarks/int8_formats.py [--batch-size 64] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from harness import engines, model
from harness.lfw import data
from harness.model import quantize
from harness.store import cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--calib-size", type=int, default=256)
    args = ap.parse_args()
    cache_dir = cache.cache_root()
    info = model.inspect(model.prepare(cache_dir).dynamic)
    ds = data.Dataset(*data.locate(Path(__file__).resolve().parents[2] / "shared"))
    x = ds.batch(np.linspace(0, len(ds.keys) - 1, args.batch_size).astype(int))
    reference = engines.create("onnxruntime", info, "fp32").run(x)
    variants = [("fp32", None), ("fp16", None)] + [("int8", f) for f in quantize.INT8_FORMATS]
    rows = []
    for prec, fmt in variants:
        opts = {"calib_size": args.calib_size, "int8_format": fmt} if fmt else {}
        engine = engines.create("onnxruntime", info, prec, engines.EngineContext(cache_dir, ds), **opts)
        engine.run(x)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            y = engine.run(x)
            times.append(time.perf_counter() - start)
        y = y / np.linalg.norm(y, axis=1, keepdims=True)
        cos = np.sum(y * reference, axis=1)
        rows.append(
            {
                "precision": prec,
                "format": fmt,
                "images_per_second": args.batch_size / float(np.median(times)),
                "min_cosine": float(cos.min()),
                "mean_cosine": float(cos.mean()),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    fp32 = rows[0]["images_per_second"]
    for r in rows:
        print(
            f"{r['precision']:5s} {r['format'] or '':12s} {r['images_per_second']:7.1f} img/s "
            f"({r['images_per_second'] / fp32:4.2f}x fp32)  "
            f"cosine min {r['min_cosine']:.5f} mean {r['mean_cosine']:.5f}"
        )


if __name__ == "__main__":
    main()
