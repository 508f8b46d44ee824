"""How close the CPU engines get to this CPU's own peak: measured GEMM peaks vs FaceNet's achieved rate.

Peaks are measured, not taken from a datasheet: onnxruntime running one large MatMul (FP32) and one
large MatMulInteger (uint8 x int8, the kernel family the INT8 model's QLinearConv uses), on all
cores, best of several runs. FaceNet's achieved rate is images/s (``facenet-harness bench``,
compute-b64) times its multiply-accumulates per image counted from the ONNX graph.
Usage: ``.venv/bin/python benchmarks/cpu_peak.py [--fp32-fps F --int8-fps F]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from harness import model
from harness.store import cache

N = 1024


def _gemm_model(path: Path, integer: bool) -> None:
    if integer:
        a = helper.make_tensor_value_info("a", TensorProto.UINT8, [N, N])
        b = helper.make_tensor_value_info("b", TensorProto.INT8, [N, N])
        y = helper.make_tensor_value_info("y", TensorProto.INT32, [N, N])
        node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
    else:
        a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [N, N])
        b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [N, N])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [N, N])
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
    m = helper.make_model(helper.make_graph([node], "gemm", [a, b], [y]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, str(path))


def peak_gmacs(integer: bool, repeats: int = 20) -> float:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gemm.onnx"
        _gemm_model(path, integer)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if integer:
        feed = {"a": rng.integers(0, 255, (N, N), dtype=np.uint8), "b": rng.integers(-127, 127, (N, N), dtype=np.int8)}
    else:
        feed = {"a": rng.standard_normal((N, N), np.float32), "b": rng.standard_normal((N, N), np.float32)}
    sess.run(None, feed)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        sess.run(None, feed)
        best = min(best, time.perf_counter() - start)
    return N**3 / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fp32-fps", type=float, help="FaceNet FP32 images/s at batch 64 (from facenet-harness bench)")
    ap.add_argument("--int8-fps", type=float, help="FaceNet INT8 images/s at batch 64")
    args = ap.parse_args()
    macs = model.count_macs(model.prepare(cache.cache_root()).dynamic)["total"]
    fp32, int8 = peak_gmacs(False), peak_gmacs(True)
    result = {"facenet_gmac_per_image": macs / 1e9, "peak_gmacs": {"fp32_matmul": fp32, "u8s8_matmulinteger": int8}}
    if args.fp32_fps:
        achieved = args.fp32_fps * macs / 1e9
        result["fp32"] = {"fps": args.fp32_fps, "gmacs": achieved, "fraction_of_peak": achieved / fp32}
    if args.int8_fps:
        achieved = args.int8_fps * macs / 1e9
        result["int8"] = {"fps": args.int8_fps, "gmacs": achieved, "fraction_of_peak": achieved / int8}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
