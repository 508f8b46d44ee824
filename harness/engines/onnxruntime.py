"""onnxruntime on the CPU. FP32 is the reference every other engine is compared with; FP16 and INT8
are onnxruntime's own reduced-precision paths: engines under test on machines without a GPU."""
from __future__ import annotations

import dataclasses
import importlib.util

from .. import cache
from .. import precision as precision_
from ..environment import cpu_name
from ..errors import HarnessError
from .base import Availability, Engine, Option

CALIBRATION_OPTIONS = (
    Option("calib_size", int, precision_.Calibration.size, "INT8 calibration images, outside the protocol"),
    Option("calib_seed", int, precision_.Calibration.seed, "seed of the calibration image draw"),
    Option("calib_method", str, precision_.Calibration.method, "INT8 calibrator",
           ("MinMax", "Entropy", "Percentile", "Distribution")),
)


def calibration_from(settings: dict, fmt: str) -> precision_.Calibration:
    return precision_.Calibration(settings["calib_size"], settings["calib_seed"], settings["calib_method"], fmt)


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    precisions = ("fp32", "fp16", "int8")
    options = (
        Option("threads", int, 0, "intra-op threads (0: onnxruntime's default, one per core)"),
        *CALIBRATION_OPTIONS,
        Option("int8_format", str, precision_.DEFAULT_INT8_FORMAT,
               "quantized model form (chosen by measurement, see harness/precision.py)",
               tuple(sorted(precision_.INT8_FORMATS))),
    )

    @classmethod
    def availability(cls) -> Availability:
        if importlib.util.find_spec("onnxruntime") is None:
            return Availability(False, "onnxruntime is not installed (pip install onnxruntime)")
        return Availability(True)

    def __init__(self, model, precision="fp32", context=None, **options):
        super().__init__(model, precision, context, **options)
        import onnxruntime as ort

        self._version = ort.__version__
        self.calibration = None
        cache_dir = cache.cache_root(self.context.cache_dir)
        if precision == "fp32":
            self.engine_path = model.path
        elif precision == "fp16":
            self.engine_path = precision_.fp16_model(model, cache_dir)
        else:
            if self.context.dataset is None:
                raise HarnessError("INT8 needs calibration images: give the LFW dataset (LFW_DIR) to calibrate on.")
            self.calibration = calibration_from(self.settings, self.settings["int8_format"])
            self.engine_path = precision_.int8_model(model, self.context.dataset, cache_dir, self.calibration)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.settings["threads"]:
            opts.intra_op_num_threads = self.settings["threads"]
        try:
            self.session = ort.InferenceSession(str(self.engine_path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise HarnessError(f"{self.engine_path}: onnxruntime cannot load it ({e}).") from None
        self._engine_sha = cache.sha256_file(self.engine_path) if precision != "fp32" else model.sha256

    def _run(self, batch):
        return self.session.run([self.model.output_name], {self.model.input_name: batch})[0]

    def describe(self) -> dict:
        d = {"backend": self.name, "version": self._version, "device": cpu_name(),
             "provider": "CPUExecutionProvider", "precision": self.precision, "engine_sha256": self._engine_sha}
        if self.settings["threads"]:
            d["threads"] = self.settings["threads"]
        if self.calibration:
            d["calibration"] = dataclasses.asdict(self.calibration)
        return d

    def close(self) -> None:
        self.session = None
        super().close()
