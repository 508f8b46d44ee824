"""onnxruntime on the CPU. FP32 is the reference every other engine is compared with; FP16 and INT8
are onnxruntime's own reduced-precision paths: engines under test on machines without a GPU.

``int8_format=trt-qdq`` runs the very QDQ model TensorRT/IxRT build from (``precision.tensorrt_int8_model``)
with graph optimisations off, so every QuantizeLinear/DequantizeLinear executes as the float op it
specifies (fake quantization): its conformance and accuracy are those of that graph's arithmetic, judged
before any GPU sees it. With optimisations on, onnxruntime fuses the Q/DQ pairs into its integer kernels,
whose results depend on the CPU (on the project's earlier AVX2 VM they got symmetric s8 activations
wrong; baselines/README.md, "INT8 for TensorRT / IxRT")."""

from __future__ import annotations

import collections
import dataclasses
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.core.errors import HarnessError
from harness.engines.base import Availability, Engine, Option
from harness.model import quantize as quantize_
from harness.store import cache
from harness.store.environment import cpu_name

CALIBRATION_OPTIONS = (
    Option("calib_size", int, quantize_.Calibration.size, "INT8 calibration images, outside the protocol"),
    Option("calib_seed", int, quantize_.Calibration.seed, "seed of the calibration image draw"),
    Option(
        "calib_method",
        str,
        quantize_.Calibration.method,
        "INT8 calibrator (default MinMax; Percentile for the TensorRT model)",
        ("MinMax", "Entropy", "Percentile", "Distribution"),
    ),
)


def calibration_from(settings: dict, fmt: str) -> quantize_.Calibration:
    return quantize_.Calibration(settings["calib_size"], settings["calib_seed"], settings["calib_method"], fmt)


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    precisions = ("fp32", "fp16", "int8")
    options = (
        Option("threads", int, 0, "intra-op threads (0: onnxruntime's default, one per core)"),
        *CALIBRATION_OPTIONS,
        Option(
            "int8_format",
            str,
            quantize_.DEFAULT_INT8_FORMAT,
            "quantized model form (chosen by measurement, see harness/model/quantize.py)",
            tuple(sorted(quantize_.INT8_FORMATS)),
        ),
    )

    @classmethod
    def availability(cls) -> Availability:
        if importlib.util.find_spec("onnxruntime") is None:
            return Availability(False, "onnxruntime is not installed (pip install onnxruntime)")
        return Availability(True)

    def __init__(self, model, precision="fp32", context=None, **options):
        super().__init__(model, precision, context, **options)
        import onnxruntime as ort

        calibration = calibration_from(self.settings, self.settings["int8_format"])
        # no calibrator asked for: the INT8 format's default, named in the settings (perf identities record it)
        self.settings["calib_method"] = calibration.method

        self._version = ort.__version__
        self.calibration = None
        cache_dir = cache.cache_root(self.context.cache_dir)
        if precision == "fp32":
            self.engine_path = model.path
        elif precision == "fp16":
            self.engine_path = quantize_.fp16_model(model, cache_dir)
        else:
            if self.context.dataset is None:
                raise HarnessError("INT8 needs calibration images: give the LFW dataset (LFW_DIR) to calibrate on.")
            self.calibration = calibration
            self.engine_path = quantize_.int8_model(model, self.context.dataset, cache_dir, self.calibration)
        opts = ort.SessionOptions()
        self.fake_quant = precision == "int8" and self.calibration.format == quantize_.TRT_INT8_FORMAT
        opts.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_DISABLE_ALL if self.fake_quant else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        )
        if self.settings["threads"]:
            opts.intra_op_num_threads = self.settings["threads"]
        try:
            self.session = ort.InferenceSession(str(self.engine_path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise HarnessError(f"{self.engine_path}: onnxruntime cannot load it ({e}).") from None
        self._engine_sha = cache.sha256_file(self.engine_path) if precision != "fp32" else model.sha256

    def _run(self, batch):
        return self.session.run([self.model.output_name], {self.model.input_name: batch})[0]

    def executed_graph(self):
        return Path(self.engine_path), int(self.session.get_session_options().graph_optimization_level)

    def describe(self) -> dict:
        d = {
            "backend": self.name,
            "version": self._version,
            "device": cpu_name(),
            "provider": "CPUExecutionProvider",
            "precision": self.precision,
            "engine_sha256": self._engine_sha,
        }
        if self.settings["threads"]:
            d["threads"] = self.settings["threads"]
        if self.calibration:
            d["calibration"] = dataclasses.asdict(self.calibration)
        if self.fake_quant:
            d["graph_optimization"] = "disabled: Q/DQ run as float ops (fake quantization)"
        return d

    def close(self) -> None:
        self.session = None
        super().close()

    def profile(self, batch, runs: int = 3) -> tuple[dict[str, float], str]:
        """Milliseconds per batch by operator, from onnxruntime's profiler: a second session with the same
        options and profiling on (the timed session is never profiled). Every operator ("<op type> <node>",
        fused kernels under the fused node's name), slowest first, and the session's own overhead."""
        import onnxruntime as ort

        opts = self.session.get_session_options()
        with tempfile.TemporaryDirectory(prefix="facenet-ort-profile-") as tmp:
            opts.enable_profiling = True
            opts.profile_file_prefix = str(Path(tmp) / "ort")
            session = ort.InferenceSession(str(self.engine_path), opts, providers=["CPUExecutionProvider"])
            feed = {self.model.input_name: np.ascontiguousarray(batch, np.float32)}
            session.run([self.model.output_name], feed)  # warm-up: no event of it is counted
            t0 = time.perf_counter()
            for _ in range(runs):
                session.run([self.model.output_name], feed)
            wall_ms = (time.perf_counter() - t0) * 1e3 / runs
            events = json.loads(Path(session.end_profiling()).read_text())
        runs_seen = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
        start_us = runs_seen[-runs]["ts"] if len(runs_seen) >= runs else 0
        by_node: collections.Counter = collections.Counter()
        for e in events:
            if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= start_us:
                node = e["name"].removesuffix("_kernel_time")
                by_node[f"{e.get('args', {}).get('op_name', '?')} {node}"] += e["dur"] / 1e3 / runs
        out = dict(by_node.most_common())  # every operator: a report shows the largest changes, not a cut-off
        out["session overhead"] = max(wall_ms - sum(by_node.values()), 0.0)
        return out, f"onnxruntime {self._version} profiler, per operator"
