"""How often the perf verdict is right, on this machine, quiet and with a busy neighbour.

Records a baseline on the quiet machine (the gate's own ``Gate.perf(save_baseline=...)``, into a
temporary store), then judges the same engine made 1.00x, 1.03x, 1.10x, 1.15x and 1.4x slower
(``tests/test_perf.Slowed``: the time of each batch stretched, nothing else changed), ``--repeats``
times each, quiet and with one process spinning on a core beside it. Prints one line per judgement
(raw ratio and its 95% CI, the canary's rate against the baseline's, CV, others' CPU share, verdict)
and then the FAIL / INCONCLUSIVE / PASS counts per condition and slowdown, and how well the canary
tracked the engine (its rate ratio divided by the engine's at the same slowdown 1.00x).

What the gate promises (issue 19): quiet, 1.15x FAILs every time and 1.03x never FAILs; busy,
nothing FAILs wrongly (a 1.00x or 1.03x FAIL under load is a false red). Usage:

    python benchmarks/perf_verdicts.py --precision fp32 --case compute-b8 --repeats 5 [--json out.json]
"""

from __future__ import annotations

# ruff: noqa: E402 - the imports below follow the sys.path set-up for running from a checkout
import argparse
import collections
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_perf import Slowed

from harness import engines, model
from harness.checks import throughput
from harness.core.verdicts import Verdict
from harness.gate import Gate
from harness.lfw import data
from harness.store import cache
from harness.store.baselines import BaselineStore

CONDITIONS = ("quiet", "busy")


def burn():
    while True:
        pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--precision", default="fp32")
    p.add_argument("--case", default="compute-b8")
    p.add_argument("--factors", default="1.0,1.03,1.10,1.15,1.4")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--conditions", default=",".join(CONDITIONS))
    p.add_argument("--mode", default="spin", choices=("spin", "sleep"), help="how Slowed stretches a batch")
    p.add_argument("--json", type=Path, help="write every judgement here")
    args = p.parse_args()
    factors = [float(f) for f in args.factors.split(",")]
    conditions = args.conditions.split(",")
    cache_dir = cache.cache_root()
    ds = data.Dataset(*data.locate(ROOT.parent / "shared"))
    info = model.inspect(model.prepare(cache_dir).dynamic)
    case = next(c for c in throughput.CASES if c.name == args.case)
    records = []
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory() as tmp,
        engines.create("onnxruntime", info, args.precision, engines.EngineContext(cache_dir, ds)) as engine,
    ):
        gate = Gate(ds, info, store=BaselineStore(tmp), cache_dir=cache_dir, log=None, progress=False)
        for _attempt in range(3):
            first = gate.perf(engine, [case], save_baseline="perf_verdicts.py, quiet").rows[0]
            if "recorded as the baseline" in first.why:
                break
            print(f"baseline not recorded ({first.stability}); again", flush=True)
        else:
            sys.exit("could not record a stable baseline on this machine")
        base = json.loads((Path(tmp) / "perf.json").read_text())["entries"][0]["results"][case.name]
        base_canary = float(np.median(base["canary"])) if base.get("canary") else None
        print(f"baseline {case.name}: {base['fps']:.1f} images/s ({args.precision}, slowdown by {args.mode})")
        print(
            f"{'condition':9s} {'slowdown':>8s} {'fps':>7s} {'ratio [95% CI]':>22s} {'canary':>6s} {'cv':>6s} "
            f"{'tries':>5s} {'others':>6s}  verdict",
            flush=True,
        )
        for condition in conditions:
            for factor in factors:
                eng = engine if factor == 1.0 else Slowed(engine, factor, args.mode)
                for _ in range(args.repeats):
                    burner = multiprocessing.Process(target=burn, daemon=True) if condition == "busy" else None
                    if burner:
                        burner.start()
                        time.sleep(1)
                    try:
                        row = gate.perf(eng, [case]).rows[0]
                    finally:
                        if burner:
                            burner.terminate()
                            burner.join()
                    m = row.measurement
                    canary = (
                        float(np.median(m.canary_rates)) / base_canary if base_canary and m.canary is not None else None
                    )
                    rec = dict(
                        condition=condition,
                        factor=factor,
                        fps=row.fps,
                        ratio=row.ratio,
                        ci=row.ratio_ci,
                        canary_ratio=canary,
                        cv=row.cv,
                        attempts=row.attempts,
                        load=row.load,
                        verdict=row.verdict.value,
                        why=row.why,
                    )
                    records.append(rec)
                    ci = row.ratio_ci or (float("nan"), float("nan"))
                    print(
                        f"{condition:9s} {factor:8.2f} {row.fps:7.1f} {row.ratio:6.3f} [{ci[0]:.3f}, {ci[1]:.3f}] "
                        f"{canary if canary is not None else float('nan'):6.2f} {row.cv:6.1%} {row.attempts:5d} "
                        f"{row.load if row.load is not None else float('nan'):6.1%}  {row.verdict}"
                        + (f" ({row.stability})" if row.stability else ""),
                        flush=True,
                    )
    print(f"\n{len(records)} judgements in {(time.monotonic() - started) / 60:.1f} min\n")
    print(
        f"{'condition':9s} {'slowdown':>8s} {'FAIL':>5s} {'INCONC':>6s} {'PASS':>5s} {'median ratio':>12s} "
        f"{'expected':>8s}  canary/engine"
    )
    counts = collections.defaultdict(collections.Counter)
    for r in records:
        counts[(r["condition"], r["factor"])][r["verdict"]] += 1
    for condition in conditions:
        for factor in factors:
            rs = [r for r in records if r["condition"] == condition and r["factor"] == factor]
            c = counts[(condition, factor)]
            track = [r["canary_ratio"] / (r["ratio"] * factor) for r in rs if r["canary_ratio"] and r["ratio"]]
            print(
                f"{condition:9s} {factor:8.2f} {c[Verdict.FAIL.value]:5d} {c[Verdict.INCONCLUSIVE.value]:6d} "
                f"{c[Verdict.PASS.value]:5d} {np.median([r['ratio'] for r in rs]):12.3f} {1 / factor:8.3f}  "
                + (f"{np.median(track):.2f} ({min(track):.2f}-{max(track):.2f})" if track else "n/a")
            )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "case": case.name,
                    "precision": args.precision,
                    "mode": args.mode,
                    "baseline_fps": base["fps"],
                    "records": records,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
