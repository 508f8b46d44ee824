"""How the statistical perf verdict behaves on this machine, quiet and loaded.

Records a baseline (quiet), then measures the same engine again quiet, with one core kept busy by
another process, and made 1.4x slower (quiet and loaded), printing per run the raw ratio, the
canary-normalised ratio with its 95% CI, the CV and the verdict. Usage:

    python benchmarks/perf_verdicts.py --precision fp32 --cases compute-b8,compute-b64 --repeats 2
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import bench, cache, data, engines, model  # noqa: E402
from harness.baselines import BaselineStore  # noqa: E402
from harness.gate import Gate  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_perf import Slowed  # noqa: E402


def burn():
    while True:
        pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--precision", default="fp32")
    p.add_argument("--cases", default="compute-b8,compute-b64")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    cache_dir = cache.cache_root()
    ds = data.Dataset(*data.locate(Path(__file__).resolve().parents[2] / "shared"))
    info = model.inspect(model.prepare(cache_dir).dynamic)
    cases = [c for c in bench.CASES if c.name in args.cases.split(",")]
    with tempfile.TemporaryDirectory() as tmp, \
            engines.create("onnxruntime", info, args.precision, engines.EngineContext(cache_dir, ds)) as engine:
        gate = Gate(ds, info, store=BaselineStore(tmp), cache_dir=cache_dir, log=None, progress=False)
        gate.perf(engine, cases, save_baseline="perf_verdicts.py, quiet")
        print(f"{'condition':22s} {'case':12s} {'fps':>7s} {'raw':>6s} {'normalised [95% CI]':>24s} {'cv':>6s} "
              f"{'tries':>5s} {'others':>6s}  verdict")
        for label, eng, loaded in (("quiet", engine, False), ("one core busy", engine, True),
                                   ("1.4x slower, quiet", Slowed(engine, 1.4), False),
                                   ("1.4x slower, busy", Slowed(engine, 1.4), True)):
            for _ in range(args.repeats):
                burner = multiprocessing.Process(target=burn, daemon=True) if loaded else None
                if burner:
                    burner.start()
                    time.sleep(1)
                try:
                    result = gate.perf(eng, cases)
                finally:
                    if burner:
                        burner.terminate()
                        burner.join()
                for r in result.rows:
                    ci = r.normalised_ci or r.ratio_ci
                    norm = r.normalised_ratio if r.normalised_ratio is not None else r.ratio
                    print(f"{label:22s} {r.case:12s} {r.fps:7.1f} {r.ratio:6.3f} {norm:8.3f} [{ci[0]:.3f}, {ci[1]:.3f}] "
                          f"{r.cv:6.1%} {r.attempts:5d} {r.load if r.load is not None else float('nan'):6.1%}  {r.verdict}" + (f" ({r.stability})" if r.stability else ""))


if __name__ == "__main__":
    main()
