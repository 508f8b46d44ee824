"""The torch engine on a GPU, in one prepared run: conformance per precision, fp16 LFW accuracy, compute-b64
throughput with its CV, the TF32-vs-FP32 finding and the device fingerprint.

Two steps, because the GPU machine has no network and no LFW:

  # here (this repository's .venv, LFW in ../shared): everything the GPU run needs, into one folder
  .venv/bin/python benchmarks/gpu_check.py --pack gpu-pack [--limit N]
  # on the GPU machine (PyTorch with CUDA, numpy and onnx; this repository, no install needed)
  python benchmarks/gpu_check.py --run gpu-pack [--json out.json] [--device cuda:0]

The pack holds the pinned network's weights (the frozen graph's constants, float32 .npz), the probe set's
uint8 crops and their golden FP32 embeddings, every protocol image's uint8 crop with the pairs, the FP32
onnxruntime reference embeddings of those crops, the tolerances and accuracy gates, and FaceNet's MACs an
image. ``--limit N`` packs N probe images and N same + N different pairs of each fold (a quick test).
The run builds ``harness.engines.torch.TorchEngine`` on the packed module, so it is the engine itself that
is checked. Embeddings are saved beside the JSON; scoring needs scipy and scikit-learn (LFW accuracy) and
OpenCV (the harness's comparison module): where they are missing the run says so, and
``--score PACK RESULT_DIR`` scores the saved embeddings here.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
BLOCKS = 8
# Dense (no sparsity) fp16 tensor-core peak, FLOP/s, from the vendors' data sheets; matched by name.
FP16_TENSOR_PEAK = {
    "H200": 989.5e12,
    "H100 SXM": 989.5e12,
    "H100 80GB HBM3": 989.5e12,
    "H100 PCIe": 756.0e12,
    "A100": 312.0e12,
    "L40S": 362.05e12,
    "V100": 125.0e12,
}


def need(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(
            f"gpu_check: missing Python package(s) {', '.join(missing)}; install them into this environment "
            "(the GPU run needs torch, numpy and onnx)."
        )


def peak_for(name: str) -> tuple[float | None, str]:
    for key, peak in FP16_TENSOR_PEAK.items():
        if key.lower() in name.lower():
            return peak, key
    return None, f"unknown: no fp16 tensor peak on record for {name!r}"


# --- pack (here) -----------------------------------------------------------------------------------


def pack(dest: Path, limit: int | None, cache_dir=None) -> dict:
    import numpy as np

    from harness import model
    from harness.checks import accuracy
    from harness.gate import Gate
    from harness.lfw import data
    from harness.lfw.data import Dataset
    from harness.model import weights
    from harness.model.tfgraph import read_constants
    from harness.store import cache
    from harness.store.baselines import BaselineStore

    lfw_dir, pairs, boxes = data.locate(ROOT.parent / "shared")
    if not lfw_dir or not pairs:
        sys.exit("gpu_check --pack: no LFW data; set LFW_DIR/LFW_PAIRS/LFW_BOXES or put it in ../shared.")
    root = cache.cache_root(cache_dir)
    prepared = model.prepare(root)
    reference = model.inspect(prepared.dynamic)
    ds = Dataset(lfw_dir, pairs, boxes)
    store = BaselineStore()
    dest.mkdir(parents=True, exist_ok=True)
    with Gate(ds, reference, store=store, cache_dir=root, log=None, progress=False) as gate:
        probe = gate.probe_indices()
        golden, source = gate.reference_probe(probe)
        pairs_ = ds.protocol.pairs
        n_pairs, folds = len(pairs_), ds.protocol.folds
        fold = n_pairs // folds
        chosen = list(range(n_pairs))
        if limit:
            probe, golden = probe[:limit], golden[:limit]
            half = fold // 2  # each fold: its same pairs, then its different pairs
            chosen = [k * fold + o + i for k in range(folds) for o in (0, half) for i in range(min(limit, half))]
        index = {key: i for i, key in enumerate(ds.keys)}
        firsts = [index[pairs_[p].first] for p in chosen]
        seconds = [index[pairs_[p].second] for p in chosen]
        images = sorted(set(firsts) | set(seconds))
        where = {img: j for j, img in enumerate(images)}

        def crops(indices):
            if not limit:
                ds.use_crop_cache(root)
                return np.ascontiguousarray(ds.crops()[np.asarray(indices, np.intp)])
            return np.stack([ds.load(i).transpose(2, 0, 1) for i in indices])

        np.save(dest / "probe_crops.npy", crops(probe))
        np.save(dest / "golden.npy", np.asarray(golden, np.float32))
        np.save(dest / "lfw_crops.npy", crops(images))
        if limit:
            ref = accuracy.embed(gate.reference_engine, ds, 64, indices=images)[images]
        else:
            ref, _ = gate.embeddings(gate.reference_engine)
        np.save(dest / "reference_lfw.npy", np.asarray(ref, np.float32) if limit else ref[images])
        np.savez(
            dest / "pairs.npz",
            first=np.array([where[i] for i in firsts]),
            second=np.array([where[i] for i in seconds]),
            issame=np.array([pairs_[p].same for p in chosen]),
            folds=folds,
        )
    consts = read_constants(weights.frozen_graph(root))
    np.savez(dest / "weights.npz", **consts)
    tol = store.tolerances()
    meta = {
        "model_sha256": reference.sha256,
        "dataset_digest": ds.digest,
        "limit": limit,
        "probe_source": source,
        "probe_images": len(probe),
        "lfw_images": len(images),
        "pairs": len(chosen),
        "preprocessing": data.PREPROCESSING,
        "tolerances": tol["precisions"],
        "accuracy_delta": tol["accuracy_delta"],
        "gates": (store.accuracy_entry(ds.digest) or {}).get("gates"),
        "gmac_per_image": model.count_macs(reference.path)["total"] / 1e9,
        "weights_sha256": cache.sha256_file(dest / "weights.npz"),
    }
    (dest / "meta.json").write_text(json.dumps(meta, indent=2))
    size = sum(p.stat().st_size for p in dest.iterdir()) / 2**20
    print(f"packed {dest}: {len(probe)} probe images, {len(images)} LFW images, {len(chosen)} pairs, {size:.0f} MiB")
    return meta


# --- run (the GPU machine) ---------------------------------------------------------------------------


def _normaliser(meta):
    """uint8 NCHW -> float32 ``(x - mean) / scale`` with the pack's constants: the arithmetic of
    ``harness.lfw.data.normalize_chw`` (bit-identical; a test checks it), so the GPU machine needs no OpenCV."""
    import numpy as np

    mean, scale = np.float32(meta["preprocessing"]["mean"]), np.float32(1.0 / meta["preprocessing"]["scale"])

    def f(u8):
        out = np.empty(u8.shape, np.float32)
        np.subtract(u8, mean, out=out, dtype=np.float32)
        out *= scale
        return out

    return f


def embed_all(engine, crops, norm, batch=64):
    import numpy as np

    return np.concatenate([engine.run(norm(crops[i : i + batch])) for i in range(0, len(crops), batch)])


def throughput(engine, crops, norm, seconds: float, batch: int = 64) -> dict:
    """compute-b64: the engine on a batch already on the device, CUDA events per execution, in BLOCKS blocks."""
    import numpy as np

    x = norm(crops[np.arange(batch) % len(crops)])
    engine.load_in_place(x)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < min(2.0, seconds / 4):  # warm-up
        engine.execute_in_place()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < 0.25:
        engine.execute_in_place()
        calls += 1
    per_block = max(1, int(calls * seconds / BLOCKS / 0.25))
    blocks, wall = [], []
    for _ in range(BLOCKS):
        ms, w0 = 0.0, time.perf_counter()
        for _ in range(per_block):
            engine.execute_in_place()
            ms += engine.timings["compute_ms"]
        wall.append(time.perf_counter() - w0)
        blocks.append(batch * per_block / (ms / 1e3))
    blocks = np.array(blocks)
    return {
        "case": f"compute-b{batch}",
        "fps": float(np.median(blocks)),
        "fps_blocks": blocks.round(1).tolist(),
        "cv": float(np.std(blocks) / np.mean(blocks)),
        "executions": per_block * BLOCKS,
        "fps_wall": float(batch * per_block * BLOCKS / sum(wall)),
        "timed_by": "CUDA events" if engine.cuda else "perf_counter (CPU)",
    }


def conformance(golden, cand, tol: dict) -> dict:
    import numpy as np

    try:
        from harness.checks import conformance
    except ImportError as e:
        return {"scored": False, "why": f"harness.checks.conformance needs {e.name}: score later with --score"}
    c = conformance.compare(golden, cand, [str(i) for i in range(len(cand))], conformance.Tolerance.from_dict(tol))
    s = c.stats
    return {
        "scored": True,
        "verdict": "PASS" if c.passed else "FAIL",
        "failures": c.failures,
        "tolerance": tol,
        **{k: s[k] for k in ("min_cosine", "mean_cosine", "max_abs", "mean_abs", "element_failures")},
        "min_cosine_vs_fp32_golden_1_minus": float(1 - np.min(c.cosine)),
    }


def lfw(emb, ref, pairs, meta, precision) -> dict:
    try:
        from harness.lfw import metrics
    except ImportError as e:
        return {"scored": False, "why": f"harness.lfw.metrics needs {e.name}: score later with --score"}

    def ev(e):
        d = metrics.distances(e[pairs["first"]], e[pairs["second"]])
        return d, metrics.evaluate_distances(d, pairs["issame"], int(pairs["folds"]))

    d, got = ev(emb)
    d_ref, r = ev(ref)
    out = {
        "scored": True,
        "pairs": int(len(d)),
        "accuracy_mean": got.accuracy_mean,
        "accuracy_std": got.accuracy_std,
        "auc": got.auc,
        "reference_accuracy": r.accuracy_mean,
        "accuracy_delta": got.accuracy_mean - r.accuracy_mean,
        "flipped_vs_reference": int(len(metrics.flips(d, d_ref, got.fold_thresholds, int(pairs["folds"]))[0])),
    }
    gate = (meta.get("gates") or {}).get(precision)
    if gate and not meta.get("limit"):
        delta = meta["accuracy_delta"].get(precision)
        ok = (
            got.accuracy_mean >= gate["accuracy_min"]
            and got.auc >= gate["auc_min"]
            and (delta is None or abs(out["accuracy_delta"]) <= delta)
        )
        out.update(gate=gate, max_delta=delta, verdict="PASS" if ok else "FAIL")
    else:
        out["verdict"] = "NO BASELINE (a --limit subset)" if meta.get("limit") else "NO BASELINE"
    return out


def run(folder: Path, device: str, precisions, seconds: float, out_dir: Path, perf_batch: int = 64) -> dict:
    need("numpy", "torch", "onnx")
    import numpy as np
    import torch

    from harness.engines import torch as torch_engine
    from harness.model import ModelInfo
    from harness.model.network import InceptionResnetV1
    from harness.store.cache import sha256_file

    meta = json.loads((folder / "meta.json").read_text())
    if sha256_file(folder / "weights.npz") != meta["weights_sha256"]:
        sys.exit(f"{folder / 'weights.npz'}: sha256 differs from meta.json; pack again.")
    out_dir.mkdir(parents=True, exist_ok=True)
    default_flags = torch_engine._tf32_state(torch)
    with np.load(folder / "weights.npz") as z:
        net = InceptionResnetV1({k: z[k] for k in z.files})
    probe, golden = np.load(folder / "probe_crops.npy"), np.load(folder / "golden.npy")
    lfw_crops, ref = np.load(folder / "lfw_crops.npy", mmap_mode="r"), np.load(folder / "reference_lfw.npy")
    pairs = dict(np.load(folder / "pairs.npz"))
    norm = _normaliser(meta)
    info = ModelInfo(folder / "weights.npz", meta["model_sha256"], "input", "embeddings", None, None, None, True)
    report = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "pack": str(folder),
        "limit": meta["limit"],
        "pytorch_default_tf32_flags": list(map(str, default_flags)),
        "precisions": {},
    }
    embeddings = {}
    for p in precisions:
        avail = torch_engine.precision_availability(p, device)
        if not avail:
            report["precisions"][p] = {"skipped": avail.why}
            continue
        t0 = time.perf_counter()
        with torch_engine.TorchEngine(info, p, module=copy.deepcopy(net), device=device) as engine:
            report.setdefault("engine", {})[p] = engine.describe()
            report["device"] = engine.device_fingerprint()
            cand = embed_all(engine, probe, norm)
            np.save(out_dir / f"probe-{p}.npy", cand)
            embeddings[p] = cand
            row = {"conformance": conformance(golden, cand, meta["tolerances"].get(p, meta["tolerances"]["fp16"]))}
            if p == "fp16" or device == "cpu":
                emb = embed_all(engine, lfw_crops, norm)
                np.save(out_dir / f"lfw-{p}.npy", emb)
                row["lfw"] = lfw(emb, ref, pairs, meta, p)
            row["perf"] = throughput(engine, probe, norm, seconds, perf_batch)
            row["seconds"] = round(time.perf_counter() - t0, 1)
        report["precisions"][p] = row
        print(f"{p}: {json.dumps(row)}", flush=True)
    if "fp32" in embeddings and "tf32" in embeddings:
        a, b = embeddings["fp32"].astype(np.float64), embeddings["tf32"].astype(np.float64)
        cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        f32, t32 = (report["precisions"][k]["conformance"] for k in ("fp32", "tf32"))
        report["tf32_vs_fp32"] = {
            "max_abs": float(np.abs(a - b).max()),
            "min_cosine": float(cos.min()),
            "mean_cosine": float(cos.mean()),
            "fp32_min_cosine_vs_golden": f32.get("min_cosine"),
            "tf32_min_cosine_vs_golden": t32.get("min_cosine"),
            "note": "PyTorch's defaults allow TF32 in cuDNN convolutions; an 'fp32' run with them is a tf32 run",
        }
    fp16 = report["precisions"].get("fp16", {}).get("perf")
    if fp16 and report.get("device", {}).get("name"):
        peak, source = peak_for(report["device"]["name"])
        achieved = fp16["fps"] * meta["gmac_per_image"] * 2e9
        report["fp16_peak"] = {
            "gmac_per_image": meta["gmac_per_image"],
            "achieved_tflops": achieved / 1e12,
            "peak_tflops": peak / 1e12 if peak else None,
            "fraction": achieved / peak if peak else None,
            "peak_source": source,
        }
    (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=2))
    return report


def score(folder: Path, results: Path) -> dict:
    """Score a run's saved embeddings here (where OpenCV, scipy and scikit-learn are installed)."""
    import numpy as np

    meta = json.loads((folder / "meta.json").read_text())
    golden, ref = np.load(folder / "golden.npy"), np.load(folder / "reference_lfw.npy")
    pairs = dict(np.load(folder / "pairs.npz"))
    out = {}
    for p in PRECISIONS:
        if (results / f"probe-{p}.npy").is_file():
            out[p] = {
                "conformance": conformance(
                    golden, np.load(results / f"probe-{p}.npy"), meta["tolerances"].get(p, meta["tolerances"]["fp16"])
                )
            }
        if (results / f"lfw-{p}.npy").is_file():
            out.setdefault(p, {})["lfw"] = lfw(np.load(results / f"lfw-{p}.npy"), ref, pairs, meta, p)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--pack", type=Path, help="write the pack into this folder (here, with LFW)")
    mode.add_argument("--run", type=Path, help="run the checks on the pack in this folder (the GPU machine)")
    mode.add_argument("--score", nargs=2, type=Path, metavar=("PACK", "RESULTS"), help="score a run's embeddings")
    ap.add_argument("--limit", type=int, help="--pack: N probe images, N same + N different pairs per fold")
    ap.add_argument("--device", default="cuda", help="--run: cuda, cuda:N or cpu (default cuda)")
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--seconds", type=float, default=8.0, help="--run: timed seconds of compute-b64 per precision")
    ap.add_argument("--perf-batch", type=int, default=64, help="--run: batch of the timed case (default 64)")
    ap.add_argument("--out", type=Path, default=Path("gpu-check-out"), help="--run: folder for the JSON and embeddings")
    args = ap.parse_args(argv)
    if args.pack:
        pack(args.pack, args.limit)
    elif args.run:
        report = run(
            args.run, args.device, [p for p in args.precisions.split(",") if p], args.seconds, args.out, args.perf_batch
        )
        print(json.dumps({k: v for k, v in report.items() if k != "engine"}, indent=2))
    else:
        print(json.dumps(score(*args.score), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
