"""Spread of repeated throughput measurements with the default bench settings.

Runs ``throughput.measure`` for one case ``--runs`` times in one process (each with its own warm-up)
and prints the FPS of each run, the mean and the coefficient of variation (std / mean).
Usage: ``.venv/bin/python benchmarks/repeatability.py --precision fp32 --case compute-b64 --runs 5``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from harness import engines, model
from harness.checks import throughput
from harness.lfw import data
from harness.store import cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--case", default="compute-b64")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--min-duration", type=float, default=throughput.Settings.min_duration_s)
    ap.add_argument("--warmup", type=float, default=throughput.Settings.warmup_s)
    args = ap.parse_args()
    case = next(c for c in throughput.CASES if c.name == args.case)
    cache_dir = cache.cache_root()
    ds = data.Dataset(*data.locate(Path(__file__).resolve().parents[2] / "shared"))
    info = model.inspect(model.prepare(cache_dir).dynamic)
    engine = engines.create("onnxruntime", info, args.precision, engines.EngineContext(cache_dir, ds))
    settings = throughput.Settings(args.warmup, args.min_duration)
    fps = [throughput.measure(engine, ds, case, settings).fps for _ in range(args.runs)]
    print(
        json.dumps(
            {
                "precision": args.precision,
                "case": case.name,
                "settings": vars(settings),
                "fps": fps,
                "mean": float(np.mean(fps)),
                "cv": float(np.std(fps) / np.mean(fps)),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
