"""Inference engines behind one small interface.

A backend is built (or loaded) for a model, a precision and a batch size, runs preprocessed
NCHW float32 batches, and describes itself (name, version, device, precision) so caches and
reports can be keyed by exactly what ran.  Static-batch engines are padded here, once, so the
last partial batch never returns rows of a previous batch.
"""
from __future__ import annotations

import abc
import dataclasses
from pathlib import Path
import numpy as np

from . import cache
from . import precision as precision_
from .environment import cpu_name
from .errors import HarnessError
from .model import ModelInfo


class Backend(abc.ABC):
    name: str
    precisions: tuple[str, ...]

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(usable on this machine, why not)."""
        return True, ""

    def __init__(self, model: ModelInfo, precision: str):
        if precision not in self.precisions:
            raise HarnessError(f"backend {self.name!r} offers precisions {', '.join(self.precisions)}; "
                               f"got {precision!r}.")
        self.model = model
        self.precision = precision

    @abc.abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Run exactly one engine batch (already padded to the static batch size, if any)."""

    @abc.abstractmethod
    def describe(self) -> dict:
        """Name, version, device and precision: everything that makes its outputs differ."""

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Embeddings (N,512) float32 of a preprocessed (N,3,160,160) batch of any N.

        A graph cut before its L2 normalisation (``ModelInfo.normalized`` False) is normalised here.
        """
        n = len(batch)
        static = self.model.batch
        if static is None:
            out = np.asarray(self._run(np.ascontiguousarray(batch, np.float32)), np.float32)
        else:
            chunks = []
            for start in range(0, n, static):
                chunk = batch[start:start + static]
                padded = np.zeros((static,) + chunk.shape[1:], np.float32)  # fresh zeros: no stale rows
                padded[: len(chunk)] = chunk
                chunks.append(np.asarray(self._run(padded), np.float32)[: len(chunk)])
            out = np.concatenate(chunks)
        if not self.model.normalized:
            out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


class OnnxRuntimeBackend(Backend):
    """onnxruntime on the CPU. FP32 is the reference every other engine is compared with; FP16 and
    INT8 are onnxruntime's own reduced-precision paths, engines under test on machines without a GPU."""

    name = "onnxruntime"
    precisions = ("fp32", "fp16", "int8")

    def __init__(self, model: ModelInfo, precision: str = "fp32", *, cache_dir: Path | None = None,
                 dataset=None, calibration: precision_.Calibration | None = None, threads: int | None = None):
        super().__init__(model, precision)
        import onnxruntime as ort

        self._ort = ort
        self.calibration = None
        if precision == "fp32":
            self.engine_path = model.path
        elif precision == "fp16":
            self.engine_path = precision_.fp16_model(model, cache.cache_root(cache_dir))
        else:
            if dataset is None:
                raise HarnessError("INT8 needs calibration images: give the LFW dataset (LFW_DIR) to calibrate on.")
            self.calibration = calibration or precision_.Calibration()
            self.engine_path = precision_.int8_model(model, dataset, cache.cache_root(cache_dir), self.calibration)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.engine_path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise HarnessError(f"{self.engine_path}: onnxruntime cannot load it ({e}).") from None
        self._engine_sha = cache.sha256_file(self.engine_path) if precision != "fp32" else model.sha256

    def _run(self, batch):
        return self.session.run([self.model.output_name], {self.model.input_name: batch})[0]

    def describe(self) -> dict:
        d = {"backend": self.name, "version": self._ort.__version__, "device": cpu_name(),
             "provider": "CPUExecutionProvider", "precision": self.precision, "engine_sha256": self._engine_sha}
        if self.calibration:
            d["calibration"] = dataclasses.asdict(self.calibration)
        return d


def registry() -> dict[str, type[Backend]]:
    """Every engine the harness knows, available here or not."""
    from . import trt_engine

    return {"onnxruntime": OnnxRuntimeBackend, "tensorrt": trt_engine.TensorRTBackend, "ixrt": trt_engine.IxRTBackend}


def catalogue() -> list[tuple[str, str, bool, str]]:
    """(backend, precision, available here, why not) for every engine and precision."""
    out = []
    for name, cls in registry().items():
        ok, why = cls.availability()
        out += [(name, p, ok, why) for p in cls.precisions]
    return out


def available() -> list[tuple[str, str]]:
    """Every (backend, precision) this machine can run."""
    return [(name, p) for name, p, ok, _ in catalogue() if ok]


def create(name: str, model: ModelInfo, precision: str, **options) -> Backend:
    """The backend called ``name`` for ``model`` at ``precision``; HarnessError when unavailable."""
    known = registry()
    if name not in known:
        raise HarnessError(f"unknown backend {name!r}; known: {', '.join(known)}.")
    ok, why = known[name].availability()
    if not ok:
        raise HarnessError(why)
    return known[name](model, precision, **options)
