"""What running the engine in its own worker process costs: the same engine in-process and isolated,
measured alternately in one run (so the machine's drift falls on both).

* Throughput (the gate's own ``throughput.measure``, perf cases as the gate times them): an isolated
  engine is timed by its clock, which excludes the transit, so the figures should agree; what the
  transit itself costs per call is printed beside them (wall time the gate waits, never measured).
* The accuracy pass (all protocol images through ``accuracy.embed``, no cache): here the transit is
  part of the wall time the user waits.

Usage: python benchmarks/isolation_overhead.py [--backend onnxruntime --precision fp32 --repeats 3]
"""

from __future__ import annotations

# ruff: noqa: E402 - the imports below follow the sys.path set-up for running from a checkout
import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import engines, model
from harness.checks import accuracy, throughput
from harness.core.results import Settings
from harness.lfw import data
from harness.store import cache

MODES = ("none", "process")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--cases", default="compute-b64,compute-b8,pipeline-b64")
    p.add_argument("--repeats", type=int, default=3, help="alternating measurements per mode and case")
    p.add_argument("--passes", type=int, default=1, help="accuracy passes per mode (0: none)")
    args = p.parse_args()
    cache_dir = cache.cache_root()
    ds = data.Dataset(*data.locate(ROOT.parent / "shared"))
    ds.use_crop_cache(cache_dir)
    info = model.inspect(model.prepare(cache_dir).dynamic)
    ctx = engines.EngineContext(cache_dir, ds)
    known = {c.name: c for c in throughput.CASES}
    cases = [known[n] for n in args.cases.split(",") if n]
    settings = Settings(warmup_s=2.0, min_duration_s=8.0, min_rounds=5, max_attempts=1)
    started = time.monotonic()
    built = {mode: engines.launch(args.backend, info, args.precision, ctx, isolation=mode) for mode in MODES}
    try:
        print(f"{args.backend} {args.precision}; isolated worker pid {built['process']._proc.pid}", flush=True)
        print(f"{'case':14s} {'in-process':>11s} {'isolated':>9s} {'ratio':>6s}  per-pair ratios; transit/call")
        for case in cases:
            fps: dict[str, list[float]] = {m: [] for m in MODES}
            transit = []
            for r in range(args.repeats):
                order = MODES if r % 2 == 0 else MODES[::-1]
                for mode in order:
                    eng = built[mode]
                    before = (getattr(eng, "ipc_seconds", 0.0), getattr(eng, "calls", 0))
                    m = throughput.measure(eng, ds, case, settings)
                    fps[mode].append(m.fps)
                    if mode == "process":
                        transit.append((eng.ipc_seconds - before[0]) / max(eng.calls - before[1], 1))
            pairs = [b / a for a, b in zip(fps["none"], fps["process"], strict=True)]
            a, b = statistics.median(fps["none"]), statistics.median(fps["process"])
            print(
                f"{case.name:14s} {a:11.1f} {b:9.1f} {b / a:6.3f}  "
                f"{', '.join(f'{x:.3f}' for x in pairs)}; {statistics.median(transit) * 1e3:.2f} ms",
                flush=True,
            )
        for i in range(args.passes):
            seconds = {}
            for mode in MODES if i % 2 == 0 else MODES[::-1]:
                timing: dict = {}
                accuracy.embed(built[mode], ds, 64, timing=timing)
                seconds[mode] = timing["seconds"]
            print(
                f"accuracy pass ({len(ds.keys)} images, batch 64): in-process {seconds['none']:.1f} s, "
                f"isolated {seconds['process']:.1f} s, ratio {seconds['process'] / seconds['none']:.3f}",
                flush=True,
            )
    finally:
        for eng in built.values():
            eng.close()
    print(f"done in {(time.monotonic() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
