"""Reduced-precision variants of a FaceNet ONNX: FP16 and INT8 (static quantization) for onnxruntime, and
the symmetric INT8 QDQ model TensorRT/IxRT build from (``tensorrt_int8_model``, ``check_tensorrt_qdq``).

Each variant is cached under a key of everything that shapes it (source model hash, recipe,
onnxruntime version, and for INT8 the calibration image list, method and format), so changing
any of them rebuilds it.  INT8 calibrates on LFW images outside the evaluation protocol.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import TypedDict

import numpy as np
import onnx

from harness.core.errors import HarnessError
from harness.lfw.data import Dataset
from harness.model import ModelInfo
from harness.store import cache

FP16_RECIPE = "ort-float16-keep-io-v1"


class Int8Spec(TypedDict, total=False):
    """``quantize_static`` options of one INT8 format; the enum members are named, not resolved."""

    quant_format: str  # onnxruntime QuantFormat member
    activation_type: str  # onnxruntime QuantType member
    weight_type: str  # onnxruntime QuantType member
    reduce_range: bool
    op_types_to_quantize: list[str] | None
    extra_options: dict[str, bool]


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
# Each format is the quantize_static options that make it (enum values by name), per-channel weights always.
INT8_FORMATS: dict[str, Int8Spec] = {
    "qop-u8s8-rr": {
        "quant_format": "QOperator",
        "activation_type": "QUInt8",
        "weight_type": "QInt8",
        "reduce_range": True,
    },
    "qop-u8s8": {
        "quant_format": "QOperator",
        "activation_type": "QUInt8",
        "weight_type": "QInt8",
        "reduce_range": False,
    },
    "qdq-u8s8-rr": {"quant_format": "QDQ", "activation_type": "QUInt8", "weight_type": "QInt8", "reduce_range": True},
    "qdq-s8s8": {"quant_format": "QDQ", "activation_type": "QInt8", "weight_type": "QInt8", "reduce_range": False},
    # The model TensorRT/IxRT build from (tensorrt_int8_model); onnxruntime runs it as fake-quant on the CPU.
    # TensorRT's ONNX parser takes symmetric INT8 Q/DQ only (zero point 0), weights per output channel, and
    # biases in float (it quantizes them itself). Chosen by measurement (baselines/README.md, "INT8 for
    # TensorRT"): Q/DQ on every op onnxruntime's QDQ quantizer supports (Conv, Gemm, Add, Concat, MaxPool,
    # GlobalAveragePool) came closer to FP32 than Q/DQ at Conv inputs only.
    "trt-qdq": {
        "quant_format": "QDQ",
        "activation_type": "QInt8",
        "weight_type": "QInt8",
        "reduce_range": False,
        "op_types_to_quantize": None,
        "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
    },
}
DEFAULT_INT8_FORMAT = "qop-u8s8-rr"
TRT_INT8_FORMAT = "trt-qdq"
# the calibrator when none is asked for, per format (measured: baselines/README.md, "INT8 for TensorRT")
DEFAULT_METHODS = {TRT_INT8_FORMAT: "Percentile"}


@dataclasses.dataclass(frozen=True)
class Calibration:
    """How INT8 is calibrated: image count, seed of the draw, calibrator, quantized format."""

    size: int = 256
    seed: int = 0
    # onnxruntime CalibrationMethod: MinMax, Entropy, Percentile, Distribution; None: the format's default,
    # resolved here once (DEFAULT_METHODS: MinMax for onnxruntime's own formats, Percentile for TensorRT's)
    method: str | None = None
    format: str = DEFAULT_INT8_FORMAT
    batch_size: int = 32

    def __post_init__(self):
        if self.format not in INT8_FORMATS:
            raise HarnessError(f"unknown INT8 format {self.format!r}; choose one of {', '.join(INT8_FORMATS)}.")
        if self.method not in (None, "MinMax", "Entropy", "Percentile", "Distribution"):
            raise HarnessError(
                f"unknown calibration method {self.method!r}; MinMax, Entropy, Percentile or Distribution."
            )
        if self.size < 1:
            raise HarnessError(f"calibration size must be positive, got {self.size}.")
        if self.method is None:
            object.__setattr__(self, "method", default_method(self.format))


def default_method(fmt: str) -> str:
    """The calibrator of INT8 format ``fmt`` when none is asked for (``DEFAULT_METHODS``, else MinMax)."""
    return DEFAULT_METHODS.get(fmt, "MinMax")


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

    return _cached_build(
        cache_dir, "fp16", {"source": source.sha256, "recipe": FP16_RECIPE, "onnxruntime": _ort_version()}, build
    )


def _calibration_set(dataset: Dataset, calibration: Calibration) -> tuple[list[tuple[str, Path]], str]:
    """The calibration images (outside the protocol) and a hash of their content: bytes and face box, so
    changed images rebuild the INT8 model."""
    files = dataset.calibration_files(calibration.size, calibration.seed)
    image_list = cache.sha256_bytes(
        "\n".join(
            f"{k} {cache.sha256_file(p)} {dataset.boxes.get(k) if dataset.boxes is not None else ''}" for k, p in files
        ).encode()
    )
    return files, image_list


def _calibration_reader(source: ModelInfo, dataset: Dataset, files, batch_size: int):
    """onnxruntime's CalibrationDataReader over ``files``, preprocessed as the protocol images are."""
    from onnxruntime import quantization as q

    from harness.lfw.data import normalize

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.chunks = iter([files[i : i + batch_size] for i in range(0, len(files), batch_size)])

        def get_next(self):
            chunk = next(self.chunks, None)
            if chunk is None:
                return None
            return {source.input_name: normalize(np.stack([dataset.load_file(p, k) for k, p in chunk]))}

    return Reader()


def _log(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


def _quantize_static(
    source: ModelInfo, dataset: Dataset, files, calibration: Calibration, method: str, out: Path, **options
) -> None:
    """onnxruntime's pre-processing (BN and scale folding, shapes), then ``quantize_static`` with ``options``,
    calibrated on ``files`` with ``method``; written to ``out``."""
    from onnxruntime import quantization as q

    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        prepped = Path(tmp) / "preprocessed.onnx"
        q.quant_pre_process(str(source.path), str(prepped), skip_symbolic_shape=True)
        q.quantize_static(
            str(prepped),
            str(out),
            _calibration_reader(source, dataset, files, calibration.batch_size),
            calibrate_method=getattr(q.CalibrationMethod, method),
            **options,
        )


def int8_model(source: ModelInfo, dataset: Dataset, cache_dir: Path, calibration: Calibration) -> Path:
    """Statically quantized INT8 model of ``calibration.format`` (``INT8_FORMATS``), calibrated on
    ``calibration.size`` images outside the protocol with ``calibration.method``. Cached by model sha,
    calibration images, size, seed, method, format with its options, and onnxruntime's version; the
    TensorRT form is held to TensorRT's Q/DQ rules (``check_tensorrt_qdq``) before it is published."""
    from onnxruntime import quantization as q

    files, image_list = _calibration_set(dataset, calibration)
    spec = INT8_FORMATS[calibration.format]
    options = {
        **spec,
        "quant_format": getattr(q.QuantFormat, spec["quant_format"]),
        "activation_type": getattr(q.QuantType, spec["activation_type"]),
        "weight_type": getattr(q.QuantType, spec["weight_type"]),
        "per_channel": True,
    }
    method = calibration.method
    assert method is not None  # resolved to the format's default in Calibration.__post_init__

    def build(out: Path):
        _log(f"calibrating INT8 ({calibration.format}, {method}) on {len(files)} LFW images outside the protocol ...")
        _quantize_static(source, dataset, files, calibration, method, out, **options)
        if calibration.format == TRT_INT8_FORMAT:
            violations = check_tensorrt_qdq(out)
            if violations:
                raise HarnessError(
                    f"{source.path}: the quantized model breaks TensorRT's Q/DQ rules "
                    f"({'; '.join(violations[:5])}); report this with the onnxruntime version "
                    f"{_ort_version()}."
                )
        return {"calibration_images": [k for k, _ in files]}

    return _cached_build(
        cache_dir,
        f"int8-{calibration.format}",
        {
            "source": source.sha256,
            "images": image_list,
            "method": method,
            "format": calibration.format,
            "options": spec,
            "size": calibration.size,
            "seed": calibration.seed,
            "onnxruntime": _ort_version(),
        },
        build,
    )


# --- the INT8 model for TensorRT / IxRT (explicit quantization) ------------------------------------------

# the output-channel axis of a weight, per consumer op: Conv (M, C, kH, kW), Gemm B (K, N) without transB
WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1, "MatMul": 1}


def tensorrt_int8_model(source: ModelInfo, dataset: Dataset, cache_dir: Path, calibration: Calibration) -> Path:
    """The symmetric INT8 QDQ ONNX a TensorRT/IxRT engine is built from: ``int8_model`` of the ``trt-qdq``
    format (default calibrator Percentile), which must be the calibration's format."""
    if calibration.format != TRT_INT8_FORMAT:
        raise HarnessError(
            f"tensorrt_int8_model takes Calibration(format={TRT_INT8_FORMAT!r}), got {calibration.format!r}."
        )
    return int8_model(source, dataset, cache_dir, calibration)


def _constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs by name."""
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    values[n.output[0]] = numpy_helper.to_array(a.t)
    return values


def check_tensorrt_qdq(path: str | Path) -> list[str]:
    """What keeps a QDQ ONNX from TensorRT's explicit INT8 (empty when nothing): a QuantizeLinear or
    DequantizeLinear whose zero point is missing, not int8 or not 0; a quantized Conv/Gemm/MatMul weight
    with one scale for the whole tensor or its channel axis elsewhere than the output channels; an
    int32 (quantized bias) DequantizeLinear; no Q/DQ at all."""
    try:
        model = onnx.load(str(path))
    except Exception as e:  # onnx raises DecodeError and others
        raise HarnessError(f"{path}: not a readable ONNX model ({e}).") from None
    graph = model.graph
    values = _constant_values(graph)
    producer = {o: n for n in graph.node for o in n.output}
    out = []
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq:
        return [f"{path}: no QuantizeLinear/DequantizeLinear nodes: not an explicitly quantized model"]
    for n in qdq:
        zp = values.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if zp is None:
            out.append(f"{n.op_type} {n.name}: no constant zero point (the default is uint8)")
        elif zp.dtype != np.int8:
            out.append(f"{n.op_type} {n.name}: zero point is {zp.dtype}, not int8")
        elif np.any(zp != 0):
            out.append(f"{n.op_type} {n.name}: zero point {zp.ravel()[:4].tolist()} is not 0 (asymmetric)")
        x = values.get(n.input[0])
        if n.op_type == "DequantizeLinear" and x is not None and x.dtype == np.int32:
            out.append(f"DequantizeLinear {n.name}: int32 input {n.input[0]} (a quantized bias; keep biases float)")
    for n in graph.node:
        if n.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or len(n.input) < 2:
            continue
        dq = producer.get(n.input[1])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue  # a weight left in float: TensorRT runs that layer in FP16/FP32
        q = producer.get(dq.input[0])  # DQ(int8 constant), or DQ(Q(float constant)) as ModelOpt writes them
        if dq.input[0] not in values and not (q is not None and q.op_type == "QuantizeLinear" and q.input[0] in values):
            continue  # an activation x activation product: no weight
        scale = values.get(dq.input[1])
        axis = next((onnx.helper.get_attribute_value(a) for a in dq.attribute if a.name == "axis"), 1)
        if n.op_type == "Gemm":
            trans_b = next((onnx.helper.get_attribute_value(a) for a in n.attribute if a.name == "transB"), 0)
            expected = 0 if trans_b else 1
        else:
            expected = WEIGHT_AXIS[n.op_type]
        if scale is None or scale.size <= 1:
            out.append(f"{n.op_type} {n.name}: weight {n.input[1]} is quantized per tensor, not per channel")
        elif axis != expected:
            out.append(f"{n.op_type} {n.name}: weight scales on axis {axis}, not the output-channel axis {expected}")
    return out
