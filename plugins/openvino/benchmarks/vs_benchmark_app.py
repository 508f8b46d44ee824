"""The OpenVINO engine's throughput, as the harness measures it, against onnxruntime's (one run, the two
alternated) and against OpenVINO's own ``benchmark_app`` on the same model, batch, precision and
configuration (sync API, one stream, one request, the LATENCY hint: how the harness runs it).

Usage: python plugins/openvino/benchmarks/vs_benchmark_app.py [--precision fp32] [--batches 8,64] [--repeats 3]
"""

from __future__ import annotations

# ruff: noqa: E402 - the imports below follow the sys.path set-up for running from a checkout
import argparse
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from harness import engines, model
from harness.checks import throughput
from harness.core.results import Case, Settings
from harness.lfw import data
from harness.store import cache

HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def benchmark_app(onnx: Path, batch: int, precision: str, seconds: int) -> float:
    exe = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    cmd = [exe, "-m", str(onnx), "-d", "CPU", "-api", "sync", "-hint", "latency", "-nstreams", "1", "-nireq", "1"]
    cmd += ["-shape", f"[{batch},3,160,160]", "-t", str(seconds)]
    if precision in HINT:
        cmd += ["-infer_precision", HINT[precision]]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    found = re.search(r"Throughput:\s+([\d.]+)\s+FPS", out)
    if not found:
        raise SystemExit(f"benchmark_app printed no throughput:\n{out[-2000:]}")
    return float(found.group(1))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--precision", default="fp32")
    p.add_argument("--batches", default="8,64")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=int, default=15, help="benchmark_app's -t")
    args = p.parse_args()
    cache_dir = cache.cache_root()
    ds = data.Dataset(*data.locate(ROOT.parent / "shared"))
    ds.use_crop_cache(cache_dir)
    info = model.inspect(model.prepare(cache_dir).dynamic)
    ctx = engines.EngineContext(cache_dir, ds)
    settings = Settings(warmup_s=2.0, min_duration_s=10.0, max_attempts=1)
    ov = engines.launch("openvino", info, args.precision, ctx, isolation="none")
    ort = engines.launch("onnxruntime", info, args.precision, ctx, isolation="none")
    try:
        print(
            f"openvino {ov.describe()['version']} {args.precision} ({ov.describe()['convolutions']}); "
            f"onnxruntime {ort.describe()['version']}",
            flush=True,
        )
        for batch in (int(b) for b in args.batches.split(",")):
            case = Case("compute", batch)
            fps: dict[str, list[float]] = {"openvino": [], "onnxruntime": [], "benchmark_app": []}
            for r in range(args.repeats):
                for name, eng in (("openvino", ov), ("onnxruntime", ort))[:: 1 if r % 2 == 0 else -1]:
                    fps[name].append(throughput.measure(eng, ds, case, settings).fps)
                fps["benchmark_app"].append(benchmark_app(info.path, batch, args.precision, args.seconds))
            med = {k: statistics.median(v) for k, v in fps.items()}
            print(
                f"batch {batch}: harness openvino {med['openvino']:.1f}, onnxruntime {med['onnxruntime']:.1f} "
                f"images/s (openvino/onnxruntime {med['openvino'] / med['onnxruntime']:.3f}); benchmark_app "
                f"{med['benchmark_app']:.1f} FPS (harness/benchmark_app {med['openvino'] / med['benchmark_app']:.3f}); "
                f"runs: {fps}",
                flush=True,
            )
    finally:
        ov.close()
        ort.close()


if __name__ == "__main__":
    main()
