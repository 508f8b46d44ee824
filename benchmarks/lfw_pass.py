"""Where an LFW accuracy pass spends its time: in the engine call, or outside it (loading faces).

Runs ``accuracy.embed`` over the protocol images twice for one engine, in one process:
  decode  - every JPEG decoded, cropped and normalised during the pass (no crop cache);
  cached  - faces read from the crop cache (built or verified before the timed pass) and normalised.
For each it prints the wall time, the time inside ``engine.run`` and the share outside it, and the
loader's own rate (``Dataset.batches`` with no engine): what a device engine faster than that waits on.
On a CPU engine the decode threads compete with the engine for the cores, so the decode pass shows as
a slower engine call rather than as time outside it.
Usage (from the repository root, after ``make install``):

    .venv/bin/python benchmarks/lfw_pass.py --backend onnxruntime --precision int8 --images 0   # 0 = all
"""

from __future__ import annotations

import argparse
import json
import time

from harness import engines, model
from harness.checks import accuracy
from harness.engines import EngineContext
from harness.lfw.data import Dataset, locate
from harness.store import cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--images", type=int, default=0, help="how many protocol images (0 = all)")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    root = cache.cache_root()
    images, pairs, boxes = locate("../shared")
    decoded, cached = Dataset(images, pairs, boxes), Dataset(images, pairs, boxes)
    cached.use_crop_cache(root)
    cached.crops()  # build or verify outside the timed pass
    info = model.inspect(model.prepare(root).dynamic)
    n = args.images or len(decoded.keys)
    rows = {}
    for name, ds in (("decode", decoded), ("cached", cached)):
        start = time.perf_counter()
        for _ in ds.batches(args.batch_size, range(n)):
            pass
        rows[f"loader_{name}_images_per_second"] = round(n / (time.perf_counter() - start), 1)
    with engines.create(args.backend, info, args.precision, EngineContext(root, decoded)) as engine:
        engine.run(decoded.batch(range(args.batch_size)))  # warm-up
        for name, ds in (("decode", decoded), ("cached", cached)):
            t: dict = {}
            accuracy.embed(engine, ds, args.batch_size, indices=range(n), timing=t)
            rows[name] = {
                "images": n,
                "seconds": round(t["seconds"], 3),
                "engine_seconds": round(t["engine_seconds"], 3),
                "outside_engine_fraction": round(1 - t["engine_seconds"] / t["seconds"], 4),
            }
    print(json.dumps({"engine": f"{args.backend} {args.precision}", "batch_size": args.batch_size, **rows}, indent=2))


if __name__ == "__main__":
    main()
