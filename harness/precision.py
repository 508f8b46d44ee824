"""Reduced-precision variants of a FaceNet ONNX for onnxruntime: FP16 and INT8 (static quantization).

Each variant is cached under a key of everything that shapes it (source model hash, recipe,
onnxruntime version, and for INT8 the calibration image list, method and format), so changing
any of them rebuilds it.  INT8 calibrates on LFW images outside the evaluation protocol.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx

from . import cache
from .data import Dataset
from .errors import HarnessError
from .model import ModelInfo

FP16_RECIPE = "ort-float16-keep-io-v1"

# INT8 formats we can build. The default was picked by measurement (benchmarks/int8_formats.py) on
# this project's 2-core AMD EPYC VM (AVX2, no VNNI), onnxruntime 1.32, batch 64 of LFW crops,
# 256 MinMax calibration images, cosine vs FP32 (FP32: 53.1 images/s):
#   qop-u8s8-rr  100.6 img/s (1.89x), cosine min 0.9979 / mean 0.9991   <- default
#   qdq-u8s8-rr   97.1 img/s (1.83x), cosine min 0.9979 / mean 0.9991
#   qop-u8s8      94.1 img/s (1.77x), cosine min 0.709 / mean 0.918: u8*s8 pairs saturate the 16-bit
#                 sums of AVX2's VPMADDUBSW; 7-bit weights ('-rr', reduce_range) avoid it
#   qdq-s8s8      51.8 img/s (0.97x), cosine min 0.708 / mean 0.918, the same saturation; its QDQ graph
#                 itself computes cosine 0.9994 with onnxruntime's graph optimisations off, so it is
#                 the form to hand to TensorRT/IxRT (explicit quantization)
# Symmetric activation ranges (CalibTensorRangeSymmetric) with s8s8 gave cosine ~0: not offered.
INT8_FORMATS = {
    "qop-u8s8-rr": {"quant_format": "QOperator", "activation": "QUInt8", "weight": "QInt8", "reduce_range": True},
    "qop-u8s8": {"quant_format": "QOperator", "activation": "QUInt8", "weight": "QInt8", "reduce_range": False},
    "qdq-u8s8-rr": {"quant_format": "QDQ", "activation": "QUInt8", "weight": "QInt8", "reduce_range": True},
    "qdq-s8s8": {"quant_format": "QDQ", "activation": "QInt8", "weight": "QInt8", "reduce_range": False},
}
DEFAULT_INT8_FORMAT = "qop-u8s8-rr"


@dataclasses.dataclass(frozen=True)
class Calibration:
    """How INT8 is calibrated: image count, seed of the draw, calibrator, quantized format."""

    size: int = 256
    seed: int = 0
    method: str = "MinMax"  # onnxruntime CalibrationMethod: MinMax, Entropy, Percentile, Distribution
    format: str = DEFAULT_INT8_FORMAT
    batch_size: int = 32

    def __post_init__(self):
        if self.format not in INT8_FORMATS:
            raise HarnessError(f"unknown INT8 format {self.format!r}; choose one of {', '.join(INT8_FORMATS)}.")
        if self.method not in ("MinMax", "Entropy", "Percentile", "Distribution"):
            raise HarnessError(f"unknown calibration method {self.method!r}; MinMax, Entropy, Percentile or Distribution.")
        if self.size < 1:
            raise HarnessError(f"calibration size must be positive, got {self.size}.")


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _cached_build(cache_dir: Path, name: str, key_parts: dict, build) -> Path:
    """The cached model for ``key_parts``, built by ``build(out_path)`` when absent or damaged."""
    path = cache_dir / "precision" / f"{name}-{cache.key_of(**key_parts)[:20]}.onnx"
    cache.get_or_build(path, build, match={"key": json.loads(json.dumps(key_parts, default=str))})
    return path


def fp16_model(source: ModelInfo, cache_dir: Path) -> Path:
    """The model with float16 weights and compute, float32 input and output kept."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    def build(out: Path):
        model = convert_float_to_float16(onnx.load(str(source.path)), keep_io_types=True)
        onnx.save(model, str(out))

    return _cached_build(cache_dir, "fp16", {"source": source.sha256, "recipe": FP16_RECIPE,
                                             "onnxruntime": _ort_version()}, build)


def int8_model(source: ModelInfo, dataset: Dataset, cache_dir: Path, calibration: Calibration) -> Path:
    """Statically quantized INT8 model, calibrated on ``calibration.size`` images outside the protocol."""
    from onnxruntime import quantization as q

    files = dataset.calibration_files(calibration.size, calibration.seed)
    # the calibration images by content (bytes and face box), so changed images rebuild the INT8 model
    image_list = cache.sha256_bytes("\n".join(
        f"{k} {cache.sha256_file(p)} {dataset.boxes.get(k) if dataset.boxes is not None else ''}"
        for k, p in files).encode())
    fmt = INT8_FORMATS[calibration.format]

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.chunks = iter([files[i:i + calibration.batch_size]
                                for i in range(0, len(files), calibration.batch_size)])

        def get_next(self):
            from .data import normalize

            chunk = next(self.chunks, None)
            if chunk is None:
                return None
            return {source.input_name: normalize(np.stack([dataset.load_file(p, k) for k, p in chunk]))}

    def build(out: Path):
        import sys

        print(f"calibrating INT8 ({calibration.format}, {calibration.method}) on {len(files)} LFW images "
              "outside the protocol ...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            prepped = Path(tmp) / "preprocessed.onnx"
            q.quant_pre_process(str(source.path), str(prepped), skip_symbolic_shape=True)
            q.quantize_static(
                str(prepped), str(out), Reader(),
                quant_format=getattr(q.QuantFormat, fmt["quant_format"]),
                activation_type=getattr(q.QuantType, fmt["activation"]),
                weight_type=getattr(q.QuantType, fmt["weight"]),
                per_channel=True,
                reduce_range=fmt["reduce_range"],
                calibrate_method=getattr(q.CalibrationMethod, calibration.method),
            )
        return {"calibration_images": [k for k, _ in files]}

    return _cached_build(cache_dir, f"int8-{calibration.format}", {
        "source": source.sha256, "images": image_list, "method": calibration.method,
        "format": calibration.format, "size": calibration.size, "seed": calibration.seed,
        "onnxruntime": _ort_version()}, build)
