"""OpenVINO on the CPU, as an SDK team would ship its engine: its own distribution, one entry point.

It reads the ONNX the harness gives it and compiles it for the CPU plug-in. Precisions:
  * ``fp32``: the inference precision forced to f32 (the CPU plug-in otherwise runs bf16 where the CPU
    has AMX or AVX512-BF16, and f16 where it has AVX512-FP16/AMX-FP16, unasked);
  * ``bf16`` / ``fp16``: where the CPU plug-in lists them in ``OPTIMIZATION_CAPABILITIES``, refused with
    the reason elsewhere;
  * ``int8``: the model quantized by NNCF (``nncf.quantize``, OpenVINO backend) on calibration images
    outside the protocol, cached by content.
Whatever was asked, the precision is read back from the compiled model (its ``INFERENCE_PRECISION_HINT``
and the runtime precision of every convolution of its execution graph): a compiled model that does not
run what was asked is refused, never mislabelled.
"""

from __future__ import annotations

import collections
import importlib.metadata
import importlib.util
import tempfile
from pathlib import Path

import numpy as np

from harness.core.errors import HarnessError
from harness.engines import Availability, Capability, Engine, Option
from harness.lfw.data import PREPROCESSING, normalize
from harness.model import quantize as quantize_
from harness.store import cache

HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
CAPABILITY = {"bf16": "BF16", "fp16": "FP16", "int8": "INT8", "fp32": "FP32"}
# the runtime precision a convolution of the execution graph must show for each precision asked
CONV_PRECISIONS = {
    "fp32": {"f32", "FP32"},
    "bf16": {"bf16", "BF16"},
    "fp16": {"f16", "FP16"},
    "int8": {"i8", "u8", "I8", "U8"},
}
INT8_RECIPE = (
    "nncf.quantize, OpenVINO backend, preset PERFORMANCE, fast bias correction, the L2 normalisation "
    "(ReduceL2, Divide) left in float; protocol-disjoint images"
)
# NNCF quantizes the inputs of the final ReduceL2 and Divide by default: the norm it divides by is then
# int8, and the embeddings leave the engine up to 0.5% off unit length (the contract kit's finite_normalised)
INT8_IGNORED_TYPES = ["ReduceL2", "Divide"]


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _flag(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not a yes/no value")


def _extra_config(text: str) -> dict[str, str]:
    out = {}
    for item in filter(None, (x.strip() for x in text.split(";"))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise HarnessError(f"openvino option config {item!r}: expected KEY=VALUE (separated by ';').")
        out[key.strip()] = value.strip()
    return out


class OpenVINOEngine(Engine):
    name = "openvino"
    precisions = ("fp32", "bf16", "fp16", "int8")
    capabilities = Capability.COMPUTE_ONLY
    options = (
        Option("threads", int, 0, "INFERENCE_NUM_THREADS (0: OpenVINO's default)"),
        Option("streams", int, 1, "NUM_STREAMS (the gate runs one request at a time)"),
        Option("hint", str, "LATENCY", "PERFORMANCE_HINT", ("LATENCY", "THROUGHPUT")),
        Option("model_cache", _flag, False, "OpenVINO's model cache (CACHE_DIR) under the harness cache"),
        Option("calib_size", int, quantize_.Calibration.size, "INT8 calibration images, outside the protocol"),
        Option("calib_seed", int, quantize_.Calibration.seed, "seed of the calibration image draw"),
        Option("config", str, "", "more compile properties, KEY=VALUE;KEY=VALUE (checked: what runs is read back)"),
    )

    @classmethod
    def availability(cls) -> Availability:
        if importlib.util.find_spec("openvino") is None:
            return Availability(False, "openvino is not installed (pip install facenet-harness-openvino)")
        return Availability(True)

    @classmethod
    def precision_availability(cls, precision: str, settings: dict) -> Availability:
        avail = cls.availability()
        if not avail:
            return avail
        if precision == "int8" and importlib.util.find_spec("nncf") is None:
            return Availability(False, "int8 needs NNCF (pip install nncf)")
        if precision in ("bf16", "fp16"):
            import openvino as ov

            capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            if CAPABILITY[precision] not in capabilities:
                return Availability(
                    False,
                    f"this CPU does not execute {precision} natively (OpenVINO's CPU plug-in lists "
                    f"{', '.join(capabilities)})",
                )
        return Availability(True)

    def __init__(self, model, precision="fp32", context=None, **options):
        super().__init__(model, precision, context, **options)
        avail = self.precision_availability(precision, self.settings)
        if not avail:
            raise HarnessError(f"openvino {precision}: {avail.why}")
        import openvino as ov

        self._ov = ov
        self.core = ov.Core()
        cache_dir = cache.cache_root(self.context.cache_dir)
        self.calibration = None
        if precision == "int8":
            self.calibration = quantize_.Calibration(self.settings["calib_size"], self.settings["calib_seed"])
            source = self._int8_model(cache_dir)
        else:
            source = self.core.read_model(str(model.path))
        config: dict[str, str] = {
            "INFERENCE_PRECISION_HINT": HINTS.get(precision, "f32"),  # int8: what is not quantized runs f32
            "PERFORMANCE_HINT": self.settings["hint"],
            "NUM_STREAMS": str(self.settings["streams"]),
            "EXECUTION_MODE_HINT": "ACCURACY" if precision == "fp32" else "PERFORMANCE",
        }
        if self.settings["threads"]:
            config["INFERENCE_NUM_THREADS"] = str(self.settings["threads"])
        if self.settings["model_cache"]:
            config["CACHE_DIR"] = str(cache_dir / "openvino-model-cache")
        config.update(_extra_config(self.settings["config"]))
        self.config = config
        try:
            self.compiled = self.core.compile_model(source, "CPU", config)
        except Exception as e:  # OpenVINO raises RuntimeError with its own message
            raise HarnessError(f"{model.path}: OpenVINO cannot compile it for the CPU ({e}).") from None
        self.effective = self._read_back()
        self.request = self.compiled.create_infer_request()
        self._loaded: np.ndarray | None = None

    # --- building -------------------------------------------------------------------------------------

    def _int8_model(self, cache_dir: Path):
        """The NNCF-quantized model (cached by model, calibration images, NNCF and OpenVINO versions)."""
        assert self.calibration is not None
        if self.context.dataset is None:
            raise HarnessError("openvino int8 needs the dataset for calibration images (EngineContext.dataset).")
        dataset = self.context.dataset
        files = dataset.calibration_files(self.calibration.size, self.calibration.seed)
        images = cache.sha256_bytes("\n".join(f"{k} {cache.sha256_file(p)}" for k, p in files).encode())
        key = {
            "source": self.model.sha256,
            "recipe": INT8_RECIPE,
            "images": images,
            "preprocessing": PREPROCESSING,
            "boxes": dataset.boxes is not None,
            "nncf": _version("nncf"),
            "openvino": self._ov.get_version(),
        }
        path = cache_dir / "openvino" / f"int8-{cache.key_of(**key)[:20]}.npz"

        def build(tmp: Path) -> None:
            import nncf

            batches = [files[i : i + 32] for i in range(0, len(files), 32)]

            def transform(chunk):
                return normalize(np.stack([dataset.load_file(p, k) for k, p in chunk]))

            calib = nncf.Dataset(batches, transform)
            quantized = nncf.quantize(
                self.core.read_model(str(self.model.path)),
                calib,
                preset=nncf.QuantizationPreset.PERFORMANCE,
                subset_size=len(files),
                fast_bias_correction=True,
                ignored_scope=nncf.IgnoredScope(types=INT8_IGNORED_TYPES, validate=False),
            )
            with tempfile.TemporaryDirectory(dir=tmp.parent) as d:
                xml = Path(d) / "model.xml"
                self._ov.save_model(quantized, str(xml), compress_to_fp16=False)
                with open(tmp, "wb") as f:
                    np.savez(
                        f,
                        xml=np.frombuffer(xml.read_bytes(), np.uint8),
                        bin=np.frombuffer(xml.with_suffix(".bin").read_bytes(), np.uint8),
                    )

        path.parent.mkdir(parents=True, exist_ok=True)
        cache.get_or_build(path, build, match={"key": cache.key_of(**key)})
        self.int8_path = path
        with np.load(path) as packed:
            return self.core.read_model(packed["xml"].tobytes(), self._ov.Tensor(np.array(packed["bin"])))

    def _read_back(self) -> dict:
        """What the compiled model runs: its inference precision and the runtime precisions of its
        convolutions. A precision other than the one asked is refused."""
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        convs: collections.Counter[str] = collections.Counter()
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            rt = op.get_rt_info()
            if "layerType" in rt and rt["layerType"].astype(str) == "Convolution":
                convs[rt["runtimePrecision"].astype(str)] += 1
        wanted = CONV_PRECISIONS[self.precision]
        off = {p: n for p, n in convs.items() if p not in wanted}
        # int8: most convolutions quantized (NNCF leaves some in float by design); the others: every one
        mislabelled = sum(off.values()) * 2 > sum(convs.values()) if self.precision == "int8" else bool(off)
        if not convs or mislabelled:
            raise HarnessError(
                f"openvino {self.precision}: the compiled model runs its convolutions at "
                f"{dict(convs) or 'no precision found'} (inference precision {hint}), not {self.precision}; "
                f"refused rather than reported as {self.precision} (compile properties: {self.config})."
            )
        return {"inference_precision": hint, "convolutions": dict(sorted(convs.items()))}

    # --- running --------------------------------------------------------------------------------------

    def _run(self, batch):
        self.request.infer({0: batch})
        return np.array(self.request.get_output_tensor(0).data)

    def load_in_place(self, batch: np.ndarray) -> None:
        self._loaded = np.ascontiguousarray(batch, np.float32)
        self.request.set_input_tensor(self._ov.Tensor(self._loaded, shared_memory=True))

    def execute_in_place(self) -> None:
        self.request.infer()

    def fetch_in_place(self) -> np.ndarray:
        return np.array(self.request.get_output_tensor(0).data)

    def debug_tensors(self, batch: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        """The ONNX tensors ``names`` as OpenVINO computes them: a second compilation with those tensors
        made outputs (which keeps fusions across them from happening, so it runs close to, not exactly as,
        the engine under test)."""
        source = self.core.read_model(str(self.model.path)) if self.precision != "int8" else None
        if source is None:
            raise NotImplementedError("openvino int8: the quantized graph's tensors are not named like the ONNX's")
        known = {n for op in source.get_ordered_ops() for out in op.outputs() for n in out.get_names()}
        wanted = [n for n in names if n in known]
        if not wanted:
            raise NotImplementedError("openvino: none of the ONNX tensor names survive in the read model")
        outputs = source.add_outputs(wanted)
        compiled = self.core.compile_model(source, "CPU", self.config)
        result = compiled.create_infer_request().infer({0: np.ascontiguousarray(batch, np.float32)})
        out = {}
        for name in wanted:
            out[name] = np.array(result[compiled.output(name)])
        del outputs
        return out

    def describe(self) -> dict:
        d = {
            "backend": self.name,
            "version": self._ov.get_version(),
            "device": self.core.get_property("CPU", "FULL_DEVICE_NAME"),
            "precision": self.precision,
            "execution_precision": self.effective["inference_precision"],
            "convolutions": self.effective["convolutions"],
            "hint": self.settings["hint"],
            "streams": self.settings["streams"],
            "model_sha256": self.model.sha256,
        }
        if self.settings["threads"]:
            d["threads"] = self.settings["threads"]
        if self.settings["config"]:
            d["config"] = self.settings["config"]
        if self.calibration is not None:
            d["nncf"] = _version("nncf")
            d["calibration"] = {"size": self.calibration.size, "seed": self.calibration.seed, "recipe": INT8_RECIPE}
            d["engine_sha256"] = cache.sha256_file(self.int8_path)
        return d

    def close(self) -> None:
        self.request = None
        self.compiled = None
        super().close()
