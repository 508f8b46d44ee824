"""IxRT and NVIDIA TensorRT engines: one builder and one runner for the TensorRT API family.

IxRT (Iluvatar CoreX) ships a TensorRT-compatible Python package importable as ``tensorrt`` (some
releases as ``ixrt``) and needs ``libixrt_plugin.so`` from the package's ``lib/`` folder loaded
before a build.  Two API generations are served and detected at run time:
  * binding API (IxRT, TensorRT <= 8): ``num_bindings``, ``binding_is_input``,
    ``get_binding_shape/dtype``, ``set_binding_shape``, ``execute_v2``;
  * named-tensor API (TensorRT 10): ``num_io_tensors``, ``get_tensor_name/mode/shape/dtype``,
    ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``.
Engines are cached under a key of the ONNX hash, precision, batch/profile, SDK version, device name
and driver version, so a driver or SDK upgrade rebuilds instead of reusing a stale plan.
Device memory goes through pycuda when importable, else cuda-python (the ``gpu`` extra).
"""
from __future__ import annotations

import ctypes
import dataclasses
import importlib
import importlib.util
from pathlib import Path

import numpy as np

from .. import cache
from .. import precision as precision_
from ..errors import HarnessError
from .base import Availability, Capability, Engine, EngineUnavailable, Option
from .cuda import Cuda, binding_available
from .onnxruntime import CALIBRATION_OPTIONS, calibration_from

SDK_MODULES = {"tensorrt": ("tensorrt",), "ixrt": ("tensorrt", "ixrt")}
WORKSPACE_BYTES = 1 << 30

# Every attribute of the named-tensor (TensorRT 10) path, checked against tensorrt-stubs in the tests.
NAMED_TENSOR_API = {
    "module": ["Logger", "Builder", "OnnxParser", "Runtime", "BuilderFlag", "MemoryPoolType",
               "NetworkDefinitionCreationFlag", "__version__"],
    "Logger": ["WARNING"],
    "BuilderFlag": ["FP16", "INT8"],
    "MemoryPoolType": ["WORKSPACE"],
    "NetworkDefinitionCreationFlag": ["EXPLICIT_BATCH"],
    "Builder": ["create_network", "create_builder_config", "create_optimization_profile", "build_serialized_network"],
    "OnnxParser": ["parse", "num_errors", "get_error"],
    "INetworkDefinition": ["get_input"],
    "ITensor": ["name", "shape"],
    "IBuilderConfig": ["set_flag", "set_memory_pool_limit", "add_optimization_profile"],
    "IOptimizationProfile": ["set_shape"],
    "Runtime": ["deserialize_cuda_engine"],
    "ICudaEngine": ["num_io_tensors", "get_tensor_name", "get_tensor_mode", "get_tensor_shape", "get_tensor_dtype",
                    "create_execution_context"],
    "IExecutionContext": ["set_input_shape", "set_tensor_address", "execute_async_v3"],
}


def load_sdk(backend: str):
    """Import the SDK's Python module; for IxRT also load its plugin library. HarnessError says what is missing."""
    errors = []
    for name in SDK_MODULES[backend]:
        try:
            mod = importlib.import_module(name)
        except ImportError as e:
            errors.append(f"import {name}: {e}")
            continue
        if getattr(mod, "__file__", None) is None or not hasattr(mod, "Builder"):
            errors.append(f"import {name}: only a namespace or type stubs (tensorrt-stubs?), not the SDK")
            continue
        if backend == "ixrt":
            lib = Path(mod.__file__).parent / "lib" / "libixrt_plugin.so"
            if not lib.is_file():
                raise HarnessError(f"{lib}: the IxRT plugin library is missing; reinstall the IxRT SDK wheel.")
            try:
                ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            except OSError as e:
                raise HarnessError(f"{lib}: cannot load the IxRT plugin library ({e}).") from None
        return mod
    raise EngineUnavailable(f"engine {backend!r} needs its SDK's Python package, which is not importable here "
                       f"({'; '.join(errors)}). Install the {backend} wheel that matches your driver.")


@dataclasses.dataclass(frozen=True)
class BuildSpec:
    onnx: Path
    precision: str  # fp32, fp16, int8
    batch: int | None  # static batch of the ONNX, or None (dynamic: profile below)
    profile: tuple[int, int, int] = (1, 64, 64)  # min, opt, max batch for a dynamic ONNX
    workspace: int = WORKSPACE_BYTES


def engine_key(spec: BuildSpec, sdk_version: str, device: dict) -> str:
    """Everything an engine plan depends on; a change of any part means a rebuild."""
    return cache.key_of(onnx=cache.sha256_file(spec.onnx), precision=spec.precision, batch=spec.batch,
                        profile=None if spec.batch else spec.profile, workspace=spec.workspace,
                        sdk=sdk_version, device=device.get("device"), driver=device.get("driver"),
                        compute_capability=device.get("compute_capability"))


def build_serialized(trt, spec: BuildSpec, logger) -> bytes:
    """Parse the ONNX and build an engine plan; HarnessError with every parser error, or on an empty build."""
    builder = trt.Builder(logger)
    flags = 0
    creation = getattr(trt, "NetworkDefinitionCreationFlag", None)
    if creation is not None and hasattr(creation, "EXPLICIT_BATCH"):
        flags = 1 << int(creation.EXPLICIT_BATCH)  # required before TensorRT 10, ignored by it
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(spec.onnx).read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise HarnessError(f"{spec.onnx}: the ONNX parser failed with {len(errors)} error(s):\n  " + "\n  ".join(errors))
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace)
    else:  # older binding-API releases
        config.max_workspace_size = spec.workspace
    if spec.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # INT8 falls back to FP16 where a layer has no INT8 kernel
    if spec.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    inp = network.get_input(0)
    if spec.batch is None:
        lo, opt, hi = spec.profile
        profile = builder.create_optimization_profile()
        c, h, w = tuple(inp.shape)[1:]
        profile.set_shape(inp.name, (lo, c, h, w), (opt, c, h, w), (hi, c, h, w))
        config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise HarnessError(f"{spec.onnx}: the {spec.precision} engine build returned nothing; "
                           "read the SDK log above (unsupported layer, workspace too small, no INT8 scales).")
    return bytes(plan)


class TensorRTEngine(Engine):
    """An engine built by the SDK under test from the FaceNet ONNX, run on the GPU."""

    name = "tensorrt"
    precisions = ("fp32", "fp16", "int8")

    options = (
        Option("profile", lambda v: tuple(int(x) for x in (v.split(",") if isinstance(v, str) else v)), (1, 64, 64),
               "min,opt,max batch of the optimization profile for a dynamic-batch ONNX"),
        *CALIBRATION_OPTIONS,
    )
    capabilities = Capability.COMPUTE_ONLY | Capability.TIMING_SPLIT
    device_kind = "gpu"
    sdk_modules = SDK_MODULES["tensorrt"]

    @classmethod
    def availability(cls) -> Availability:
        """The SDK package and a CUDA binding are findable (nothing imported); the device is checked at creation."""
        found = [m for m in cls.sdk_modules if importlib.util.find_spec(m) is not None]
        if not found:
            return Availability(False, f"no {' or '.join(cls.sdk_modules)} Python package: install the {cls.name} "
                                       "SDK wheel that matches your driver")
        if binding_available() is None:
            return Availability(False, "no CUDA Python binding: pip install 'facenet-harness[gpu]' (cuda-python) "
                                       "or '[gpu-pycuda]'")
        return Availability(True)

    def __init__(self, model, precision="fp16", context=None, *, sdk=None, cuda=None, **options):
        super().__init__(model, precision, context, **options)
        profile = self.settings["profile"]
        if len(profile) != 3 or not 1 <= profile[0] <= profile[1] <= profile[2]:
            raise HarnessError(f"engine {self.name!r}: profile {profile} must be min,opt,max batch with "
                               "1 <= min <= opt <= max.")
        cache_dir = self.context.cache_dir
        dataset = self.context.dataset
        self.trt = sdk or load_sdk(self.name)
        self.cuda = cuda or Cuda()
        self.device = self.cuda.device()
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)
        onnx_path = model.path
        if precision == "int8":  # explicit quantization: the QDQ model from the calibration step
            if dataset is None:
                raise HarnessError("INT8 needs calibration images: give the LFW dataset (LFW_DIR).")
            calib = calibration_from(self.settings, "qdq-s8s8")
            onnx_path = precision_.int8_model(model, dataset, cache.cache_root(cache_dir), calib)
        spec = BuildSpec(Path(onnx_path), precision, model.batch, profile)
        self.version = str(getattr(self.trt, "__version__", "unknown"))
        self.plan_path = self._plan(spec, cache.cache_root(cache_dir))
        self.plan_sha256 = cache.sha256_file(self.plan_path)  # describe() is called often: hash the plan once
        runtime = self.trt.Runtime(self.logger)
        self.engine = runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
        if self.engine is None:
            raise HarnessError(f"{self.plan_path}: the SDK could not deserialize this engine plan; delete it to rebuild.")
        self.exec_context = self.engine.create_execution_context()
        self.api = api_generation(self.engine)
        self.io = io_tensors(self.engine, self.api)
        self.max_batch = model.batch or profile[2]
        self.stream = self.cuda.stream()
        self.buffers = {t.name: self.cuda.alloc(self.max_batch * t.row_bytes) for t in self.io}

    def close(self) -> None:
        """Free the device buffers and the stream; drop the execution context and engine."""
        if not self.closed:
            for buf in getattr(self, "buffers", {}).values():
                self.cuda.free(buf)
            self.buffers = {}
            if getattr(self, "stream", None) is not None:
                self.cuda.free_stream(self.stream)
                self.stream = None
            self.exec_context = self.engine = None
        super().close()

    def _plan(self, spec: BuildSpec, cache_dir: Path) -> Path:
        key = engine_key(spec, self.version, self.device)[:24]
        path = cache_dir / "engines" / f"{self.name}-{spec.precision}-{key}.plan"

        def build(tmp: Path) -> dict:
            tmp.write_bytes(build_serialized(self.trt, spec, self.logger))
            return {"sdk": self.version, **self.device, "onnx": str(spec.onnx), "precision": spec.precision}

        cache.get_or_build(path, build)
        return path

    def load_in_place(self, batch: np.ndarray) -> None:
        """Upload a batch once, for the compute-only view: ``execute_in_place`` then runs the engine alone."""
        n = len(batch)
        if n > self.max_batch:
            raise HarnessError(f"batch {n} exceeds the engine's {self.max_batch}")
        if self.model.batch and n != self.model.batch:
            padded = np.zeros((self.model.batch,) + batch.shape[1:], np.float32)
            padded[:n] = batch
            batch, n = padded, self.model.batch
        inp = next(t for t in self.io if t.is_input)
        self.cuda.htod(self.buffers[inp.name], np.ascontiguousarray(batch, inp.dtype), self.stream)
        self.cuda.sync(self.stream)
        self._in_place_shape = (n,) + tuple(batch.shape[1:])

    def execute_in_place(self) -> None:
        """Run the engine on the buffers already on the device (what the deployment's FPS figures time)."""
        self._execute(self._in_place_shape)
        self.cuda.sync(self.stream)

    def fetch_in_place(self) -> np.ndarray:
        """The embeddings the last ``execute_in_place`` left in the output buffer (normalised like ``run``)."""
        out_t = next(t for t in self.io if not t.is_input)
        host = self.cuda.pinned((self._in_place_shape[0],) + tuple(out_t.shape[1:]), out_t.dtype)
        self.cuda.dtoh(host, self.buffers[out_t.name], self.stream)
        self.cuda.sync(self.stream)
        out = np.array(host, np.float32).reshape(len(host), -1)
        if not self.model.normalized:
            out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def _execute(self, shape: tuple[int, ...]) -> None:
        inp = next(t for t in self.io if t.is_input)
        c = self.cuda
        if self.api == "tensor":
            self.exec_context.set_input_shape(inp.name, shape)
            for t in self.io:
                self.exec_context.set_tensor_address(t.name, c.ptr(self.buffers[t.name]))
            ok = self.exec_context.execute_async_v3(c.stream_handle(self.stream))
        else:
            if self.model.batch is None:
                self.exec_context.set_binding_shape(inp.index, shape)
            c.sync(self.stream)  # execute_v2 runs on its own stream: the copy-in must be complete
            ok = self.exec_context.execute_v2([c.ptr(self.buffers[t.name]) for t in sorted(self.io, key=lambda t: t.index)])
        if not ok:
            raise HarnessError(f"{self.name} {self.precision}: engine execution failed (see the SDK log).")

    def _run(self, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        if n > self.max_batch:  # the base class pads/splits static engines; a dynamic one splits here
            return np.concatenate([self._run(batch[i:i + self.max_batch]) for i in range(0, n, self.max_batch)])
        inputs = [t for t in self.io if t.is_input]
        outputs = [t for t in self.io if not t.is_input]
        shape = (n,) + tuple(batch.shape[1:])
        c, s = self.cuda, self.stream
        events = [c.event() for _ in range(4)]
        c.record(events[0], s)
        host_in = np.ascontiguousarray(batch, inputs[0].dtype)
        c.htod(self.buffers[inputs[0].name], host_in, s)
        c.record(events[1], s)
        self._execute(shape)
        c.record(events[2], s)
        out = c.pinned((n,) + tuple(outputs[0].shape[1:]), outputs[0].dtype)
        c.dtoh(out, self.buffers[outputs[0].name], s)
        c.record(events[3], s)
        c.sync(s)
        self.timings = {"h2d_ms": c.elapsed_ms(events[0], events[1]), "compute_ms": c.elapsed_ms(events[1], events[2]),
                        "d2h_ms": c.elapsed_ms(events[2], events[3])}
        return np.array(out, np.float32).reshape(n, -1)

    def describe(self) -> dict:
        return {"backend": self.name, "version": self.version, "precision": self.precision,
                "engine_sha256": self.plan_sha256, "api": self.api, **self.device}


class IxRTEngine(TensorRTEngine):
    name = "ixrt"
    sdk_modules = SDK_MODULES["ixrt"]


@dataclasses.dataclass(frozen=True)
class IOTensor:
    name: str
    index: int
    is_input: bool
    shape: tuple[int, ...]  # -1 for the dynamic batch
    dtype: type

    @property
    def row_bytes(self) -> int:
        return int(np.prod([d for d in self.shape[1:]])) * np.dtype(self.dtype).itemsize


def api_generation(engine) -> str:
    if hasattr(engine, "num_io_tensors"):
        return "tensor"
    if hasattr(engine, "num_bindings"):
        return "binding"
    raise HarnessError("the engine object has neither num_io_tensors nor num_bindings: unknown TensorRT API.")


def io_tensors(engine, api: str) -> list[IOTensor]:
    out = []
    if api == "tensor":
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            mode = engine.get_tensor_mode(name)
            is_input = getattr(mode, "name", str(mode)).endswith("INPUT")
            out.append(IOTensor(name, i, is_input, tuple(engine.get_tensor_shape(name)),
                                _nptype(engine.get_tensor_dtype(name))))
    else:
        for i in range(engine.num_bindings):
            out.append(IOTensor(engine.get_binding_name(i), i, engine.binding_is_input(i),
                                tuple(engine.get_binding_shape(i)), _nptype(engine.get_binding_dtype(i))))
    if sum(t.is_input for t in out) != 1 or len(out) != 2:
        raise HarnessError(f"the engine has I/O {[t.name for t in out]}; a FaceNet engine has one input and one output.")
    return out


def _nptype(dtype) -> type:
    name = getattr(dtype, "name", str(dtype)).split(".")[-1].upper()
    table = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32}
    if name not in table:
        raise HarnessError(f"unsupported engine I/O dtype {dtype}")
    return table[name]

