"""IxRT and NVIDIA TensorRT engines: one builder and one runner for the TensorRT API family.

IxRT (Iluvatar CoreX) ships a TensorRT-compatible Python package importable as ``tensorrt`` (some
releases as ``ixrt``) and needs ``libixrt_plugin.so`` from the package's ``lib/`` folder loaded
before a build.  What the SDK offers is read from the SDK itself, never from its version string:

* builder (``sdk_typing``): *weakly typed* SDKs (IxRT, TensorRT <= 10) have ``BuilderFlag.FP16``
  and ``INT8``; the FP32 ONNX is built with those flags (INT8 from the QDQ model, FP16 fallback).
  *Strongly typed* SDKs (TensorRT 11: no FP16/INT8 builder flags, ``STRONGLY_TYPED`` always on) take
  their precision from the network's own types: FP16 is built from the FP16 ONNX (float16 inside,
  float32 I/O), INT8 from the QDQ model. Any other SDK is refused with a clear error. FP32 engines
  are built with ``BuilderFlag.TF32`` cleared on both (TF32 is on by default from Ampere on and would
  miss the fp32 tolerance).
* runner (``api_generation``): the binding API (IxRT, TensorRT <= 8: ``num_bindings``,
  ``execute_async_v2`` on the harness stream, or ``execute_v2`` after a stream sync) or the
  named-tensor API (TensorRT >= 8.5/10/11: ``num_io_tensors``, ``set_tensor_address``,
  ``execute_async_v3``). IxRT prefers the binding API, TensorRT the named-tensor API.

The API each path uses is listed in ``BUILD_API``/``RUN_API`` and checked by the contract tests
against the real bindings' surface (tests/data/tensorrt_api, made by tools/extract_trt_api.py).
Engines are cached under a key of the ONNX hash, precision, typing, TF32, batch/profile, SDK
version, device name and driver version, so a driver or SDK upgrade rebuilds instead of reusing a
stale plan. Device memory goes through pycuda when importable, else cuda-python (the ``gpu`` extra).
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib
import importlib.util
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from harness import model as model_
from harness.core.errors import HarnessError
from harness.engines.base import Availability, Capability, Engine, EngineUnavailable, Option
from harness.engines.cuda import Cuda, binding_available, probe
from harness.engines.onnxruntime import CALIBRATION_OPTIONS, calibration_from
from harness.model import quantize as quantize_
from harness.store import cache

SDK_MODULES = {"tensorrt": ("tensorrt",), "ixrt": ("tensorrt", "ixrt")}
WORKSPACE_BYTES = 1 << 30

# What each path touches on the SDK, checked against the real bindings in the contract tests.
BUILD_API = {
    "common": {
        "module": [
            "Logger",
            "Builder",
            "OnnxParser",
            "Runtime",
            "BuilderFlag",
            "NetworkDefinitionCreationFlag",
            "__version__",
        ],
        "Logger": ["WARNING"],
        "Builder": [
            "create_network",
            "create_builder_config",
            "create_optimization_profile",
            "build_serialized_network",
        ],
        "OnnxParser": ["parse", "num_errors", "get_error"],
        "INetworkDefinition": ["get_input"],
        "ITensor": ["name", "shape"],
        "IBuilderConfig": ["clear_flag", "add_optimization_profile"],
        "IOptimizationProfile": ["set_shape"],
        "BuilderFlag": ["TF32"],
        "Runtime": ["deserialize_cuda_engine"],
    },
    "weak": {"BuilderFlag": ["FP16", "INT8"]},
    "strong": {"NetworkDefinitionCreationFlag": ["STRONGLY_TYPED"]},
    "memory_pools": {
        "module": ["MemoryPoolType"],
        "MemoryPoolType": ["WORKSPACE"],
        "IBuilderConfig": ["set_memory_pool_limit"],
    },
}
RUN_API = {
    "tensor": {
        "ICudaEngine": [
            "num_io_tensors",
            "get_tensor_name",
            "get_tensor_mode",
            "get_tensor_shape",
            "get_tensor_dtype",
            "create_execution_context",
        ],
        "IExecutionContext": ["set_input_shape", "set_tensor_address", "execute_async_v3"],
    },
    "binding": {
        "ICudaEngine": [
            "num_bindings",
            "get_binding_name",
            "binding_is_input",
            "get_binding_shape",
            "get_binding_dtype",
            "create_execution_context",
        ],
        "IExecutionContext": ["set_binding_shape", "execute_async_v2"],
    },
}


def sdk_typing(trt) -> str:
    """'weak' (precision by builder flags: IxRT, TensorRT <= 10) or 'strong' (by the network's types: TensorRT 11).

    Read from the SDK's own enums; an SDK that has neither is refused (EngineUnavailable, exit 2)."""
    flags = getattr(trt, "BuilderFlag", None)
    creation = getattr(trt, "NetworkDefinitionCreationFlag", None)
    if flags is not None and hasattr(flags, "FP16") and hasattr(flags, "INT8"):
        return "weak"
    if flags is not None and creation is not None and hasattr(creation, "STRONGLY_TYPED"):
        return "strong"
    raise EngineUnavailable(
        f"{getattr(trt, '__file__', 'tensorrt')}: unknown TensorRT SDK generation (version "
        f"{getattr(trt, '__version__', 'unknown')}): it has neither BuilderFlag.FP16/INT8 (IxRT, TensorRT <= 10) nor "
        "NetworkDefinitionCreationFlag.STRONGLY_TYPED (TensorRT 11). Install a supported SDK, or extend "
        "harness/engines/tensorrt.py (sdk_typing) after checking its API with tools/extract_trt_api.py."
    )


_LOGGERS: dict[int, Any] = {}  # id(SDK module) -> its one logger
_PLUGINS_READY: set[int] = set()  # SDK modules whose plug-ins are registered


def process_logger(trt) -> Any:
    """The one ``trt.Logger`` of this process for SDK module ``trt``. TensorRT keeps the first logger a
    process gives it and ignores later ones (with a warning), so every engine, builder and runtime here
    shares one, as Polygraphy does; an engine that closes never takes the log with it."""
    logger = _LOGGERS.get(id(trt))
    if logger is None:
        logger = _LOGGERS[id(trt)] = trt.Logger(trt.Logger.WARNING)
    return logger


def init_plugins(trt, logger) -> None:
    """Register the SDK's plug-in creators (what every DeepSparkInference IxRT loader does before it builds
    or deserializes an engine); a False return is an error, not a silent engine without its plug-ins."""
    if id(trt) in _PLUGINS_READY:
        return
    init = getattr(trt, "init_libnvinfer_plugins", None)
    if init is not None and init(logger, "") is False:
        raise HarnessError("init_libnvinfer_plugins failed: the SDK's plug-in library could not be registered.")
    _PLUGINS_READY.add(id(trt))


def load_sdk(backend: str):
    """Import the SDK's Python module; for IxRT also load its plugin library. HarnessError says what is missing."""
    errors = []
    for name in SDK_MODULES[backend]:
        try:
            mod = importlib.import_module(name)
        except ImportError as e:
            errors.append(f"import {name}: {e}")
            continue
        mod_file = getattr(mod, "__file__", None)
        if mod_file is None or not hasattr(mod, "Builder"):
            errors.append(f"import {name}: only a namespace or type stubs (tensorrt-stubs?), not the SDK")
            continue
        if backend == "ixrt":
            lib = Path(mod_file).parent / "lib" / "libixrt_plugin.so"
            if not lib.is_file():
                raise HarnessError(f"{lib}: the IxRT plugin library is missing; reinstall the IxRT SDK wheel.")
            try:
                ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            except OSError as e:
                raise HarnessError(f"{lib}: cannot load the IxRT plugin library ({e}).") from None
        return mod
    raise EngineUnavailable(
        f"engine {backend!r} needs its SDK's Python package, which is not importable here "
        f"({'; '.join(errors)}). Install the {backend} wheel that matches your driver."
    )


@dataclasses.dataclass(frozen=True)
class BuildSpec:
    onnx: Path
    precision: str  # fp32, fp16, int8
    batch: int | None  # static batch of the ONNX, or None (dynamic: profile below)
    profile: tuple[int, int, int] = (1, 64, 64)  # min, opt, max batch for a dynamic ONNX
    workspace: int = WORKSPACE_BYTES
    typing: str = "weak"  # "weak": builder precision flags; "strong": the ONNX's own types

    @property
    def tf32(self) -> bool:
        """Whether FP32 layers may compute in TF32: never for an fp32 engine (the fp32 tolerance is 1e-5)."""
        return self.precision != "fp32"


def engine_key(spec: BuildSpec, sdk_version: str, device: dict) -> str:
    """Everything an engine plan depends on; a change of any part means a rebuild."""
    return cache.key_of(
        onnx=cache.sha256_file(spec.onnx),
        precision=spec.precision,
        batch=spec.batch,
        profile=None if spec.batch else spec.profile,
        workspace=spec.workspace,
        typing=spec.typing,
        tf32=spec.tf32,
        sdk=sdk_version,
        device=device.get("device"),
        driver=device.get("driver"),
        cuda_driver_api=device.get("cuda_driver_api"),
        compute_capability=device.get("compute_capability"),
    )


def build_serialized(trt, spec: BuildSpec, logger) -> bytes:
    """Parse the ONNX and build an engine plan; HarnessError with every parser error, or on an empty build."""
    builder = trt.Builder(logger)
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    if spec.typing == "weak" and hasattr(creation, "EXPLICIT_BATCH"):
        flags = 1 << int(creation.EXPLICIT_BATCH)  # required before TensorRT 10, ignored by it
    # strong typing: always on in TensorRT 11 (its STRONGLY_TYPED flag is deprecated and ignored)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(spec.onnx).read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise HarnessError(
            f"{spec.onnx}: the ONNX parser failed with {len(errors)} error(s):\n  " + "\n  ".join(errors)
        )
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace)
    else:  # older binding-API releases
        config.max_workspace_size = spec.workspace
    if not spec.tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if spec.typing == "weak" and spec.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # INT8 falls back to FP16 where a layer has no INT8 kernel
    if spec.typing == "weak" and spec.precision == "int8":
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
        raise HarnessError(
            f"{spec.onnx}: the {spec.precision} engine build returned nothing; "
            "read the SDK log above (unsupported layer, workspace too small, no INT8 scales)."
        )
    return bytes(plan)


class TensorRTEngine(Engine):
    """An engine built by the SDK under test from the FaceNet ONNX, run on the GPU."""

    name = "tensorrt"
    precisions = ("fp32", "fp16", "int8")

    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "profile",
            lambda v: tuple(int(x) for x in (v.split(",") if isinstance(v, str) else v)),
            (1, 64, 64),
            "min,opt,max batch of the optimization profile for a dynamic-batch ONNX",
        ),
        Option(
            "static_batch",
            int,
            0,
            "build a dynamic-batch ONNX at this static batch instead of with the profile (0: the ONNX's own form)",
        ),
        *CALIBRATION_OPTIONS,
    )
    capabilities = Capability.COMPUTE_ONLY | Capability.TIMING_SPLIT
    device_kind = "gpu"
    sdk_modules = SDK_MODULES["tensorrt"]
    preferred_api = "tensor"  # TensorRT's named-tensor API where the SDK has it

    @classmethod
    def availability(cls) -> Availability:
        """The SDK package and a CUDA binding are findable (the SDK is not imported) and a device answers."""
        found = [m for m in cls.sdk_modules if importlib.util.find_spec(m) is not None]
        if not found:
            return Availability(
                False,
                f"no {' or '.join(cls.sdk_modules)} Python package: install the {cls.name} "
                "SDK wheel that matches your driver",
            )
        if binding_available() is None:
            return Availability(
                False,
                "no CUDA Python binding: pip install 'facenet-harness[gpu-cu12]' or '[gpu-cu13]' (the CUDA major of "
                "your driver) or '[gpu-pycuda]'",
            )
        why = probe()
        return Availability(False, why) if why else Availability(True)

    def __init__(self, model, precision="fp16", context=None, *, sdk=None, cuda=None, **options):
        super().__init__(model, precision, context, **options)
        profile = self.settings["profile"]
        if len(profile) != 3 or not 1 <= profile[0] <= profile[1] <= profile[2]:
            raise HarnessError(
                f"engine {self.name!r}: profile {profile} must be min,opt,max batch with 1 <= min <= opt <= max."
            )
        static = self.settings["static_batch"]
        if static < 0:
            raise HarnessError(f"engine {self.name!r}: static_batch={static} must be 0 (off) or a batch size.")
        self.source_model = model  # what INT8 calibrates and FP16 converts (its own batch form)
        if static and model.batch is None:  # run() pads to it; the plan is built from a static copy
            model = self.model = dataclasses.replace(model, batch=static)
        self.trt = sdk or load_sdk(self.name)
        self.typing = sdk_typing(self.trt)  # before anything is built or allocated
        self.version = str(getattr(self.trt, "__version__", "unknown"))
        self._owns_cuda = cuda is None  # a Cuda lent by the caller is the caller's to close
        self.cuda = cuda or Cuda()
        self.buffers, self.pinned, self.events, self.stream = {}, {}, [], None
        try:
            self._open(model, precision, profile)
        except BaseException:
            self.close()
            raise

    def _open(self, model, precision, profile) -> None:
        cache_dir = cache.cache_root(self.context.cache_dir)
        self.device = self.cuda.device()
        self.logger = process_logger(self.trt)
        init_plugins(self.trt, self.logger)  # before anything is parsed, built or deserialized
        onnx_path = self._onnx_for(self.source_model, precision, cache_dir)
        if model.batch is not None and self.source_model.batch is None:
            onnx_path = model_.with_static_batch(onnx_path, model.batch, cache_dir)
        spec = BuildSpec(onnx_path, precision, model.batch, profile, typing=self.typing)
        self.tf32 = spec.tf32 and hasattr(self.trt.BuilderFlag, "TF32")
        self.plan_path = self._plan(spec, cache_dir)
        self.plan_sha256 = cache.sha256_file(self.plan_path)  # describe() is called often: hash the plan once
        runtime = self.trt.Runtime(self.logger)
        self.engine = runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
        if self.engine is None:
            raise HarnessError(
                f"{self.plan_path}: the SDK could not deserialize this engine plan; delete it to rebuild."
            )
        self.exec_context = self.engine.create_execution_context()
        self.api = api_generation(self.engine, self.exec_context, self.preferred_api)
        self.io = io_tensors(self.engine, self.api)
        self.max_batch = model.batch or profile[2]
        self.stream = self.cuda.stream()
        self.events = [self.cuda.event() for _ in range(4)]  # h2d start, h2d end, compute end, d2h end
        for t in self.io:
            self.buffers[t.name] = self.cuda.alloc(self.max_batch * t.row_bytes)
            self.pinned[t.name] = self.cuda.pinned((self.max_batch,) + tuple(t.shape[1:]), t.dtype)

    def _onnx_for(self, model, precision, cache_dir: Path) -> Path:
        """The ONNX this SDK builds for ``precision``: FP32 model + flags (weak typing) or a typed model."""
        if precision == "int8":  # explicit quantization: the symmetric QDQ model of the calibration step
            if self.context.dataset is None:
                raise HarnessError("INT8 needs calibration images: give the LFW dataset (LFW_DIR).")
            calib = calibration_from(self.settings, quantize_.TRT_INT8_FORMAT)
            return Path(quantize_.tensorrt_int8_model(model, self.context.dataset, cache_dir, calib))
        if precision == "fp16" and self.typing == "strong":  # float16 inside, float32 I/O
            return Path(quantize_.fp16_model(model, cache_dir))
        return Path(model.path)

    def close(self) -> None:
        """Release, in order: pinned host buffers, device buffers, events, the stream, the execution
        context and engine, then the CUDA context (pycuda) when the engine made it. Idempotent; safe on
        a half-built engine."""
        if self.closed:
            return
        c = getattr(self, "cuda", None)
        errors: list[str] = []

        def release(what: str, fn, *args) -> None:  # one failure (a sticky CUDA error) must not keep the rest
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - collected and raised once everything was tried
                errors.append(f"{what}: {type(e).__name__}: {e}")

        if c is not None:
            stream = getattr(self, "stream", None)
            if stream is not None:
                release("stream sync", c.sync, stream)  # nothing may still be using what is freed below
            for arr in getattr(self, "pinned", {}).values():
                release("pinned buffer", c.free_pinned, arr)
            for buf in getattr(self, "buffers", {}).values():
                release("device buffer", c.free, buf)
            for ev in getattr(self, "events", []):
                release("event", c.destroy_event, ev)
            self.pinned, self.buffers, self.events = {}, {}, []
            if stream is not None:
                release("stream", c.free_stream, stream)
                self.stream = None
        self.exec_context = self.engine = None
        if c is not None and self._owns_cuda:
            release("CUDA context", c.close)
        super().close()
        if errors:
            raise HarnessError(
                f"{self.label}: releasing the engine failed ({'; '.join(errors)}); the device may be "
                "in an error state (check the driver log)."
            )

    def _plan(self, spec: BuildSpec, cache_dir: Path) -> Path:
        key = engine_key(spec, self.version, self.device)[:24]
        path = cache_dir / "engines" / f"{self.name}-{spec.precision}-{key}.plan"

        def build(tmp: Path) -> dict:
            tmp.write_bytes(build_serialized(self.trt, spec, self.logger))
            return {
                "sdk": self.version,
                **self.device,
                "onnx": str(spec.onnx),
                "precision": spec.precision,
                "typing": spec.typing,
                "tf32": spec.tf32,
            }

        cache.get_or_build(path, build)
        return path

    def _io(self):
        return next(t for t in self.io if t.is_input), next(t for t in self.io if not t.is_input)

    def _stage(self, batch: np.ndarray) -> np.ndarray:
        """Copy ``batch`` into the pinned input buffer (host work: before the copy-in's first event)."""
        inp, _ = self._io()
        host = self.pinned[inp.name][: len(batch)]
        np.copyto(host, batch, casting="same_kind")
        return host

    def _copy_in(self, host: np.ndarray) -> tuple[int, ...]:
        """Queue the staged batch's copy to the device on the harness stream; the input shape."""
        inp, _ = self._io()
        self.cuda.htod(self.buffers[inp.name], host, self.stream)
        return (len(host),) + tuple(host.shape[1:])

    def _upload(self, batch: np.ndarray) -> tuple[int, ...]:
        return self._copy_in(self._stage(batch))

    def _download(self, n: int) -> np.ndarray:
        """Queue the copy of ``n`` output rows into the pinned output buffer (read it after a sync)."""
        _, out = self._io()
        host = self.pinned[out.name][:n]
        self.cuda.dtoh(host, self.buffers[out.name], self.stream)
        return host

    def load_in_place(self, batch: np.ndarray) -> None:
        """Upload a batch once, for the compute-only view: ``execute_in_place`` then runs the engine alone."""
        n = len(batch)
        if n > self.max_batch:
            raise HarnessError(f"batch {n} exceeds the engine's {self.max_batch}")
        if self.model.batch and n != self.model.batch:
            padded = np.zeros((self.model.batch,) + batch.shape[1:], np.float32)
            padded[:n] = batch
            batch = padded
        self._in_place_shape = self._upload(batch)
        self.cuda.sync(self.stream)

    def execute_in_place(self) -> None:
        """Run the engine on the buffers already on the device (what the deployment's FPS figures time);
        ``timings`` then holds this execution's compute time alone (nothing was copied)."""
        c, s, ev = self.cuda, self.stream, self.events
        c.record(ev[1], s)
        self._execute(self._in_place_shape)
        c.record(ev[2], s)
        c.sync(s)
        self.timings = {"compute_ms": c.elapsed_ms(ev[1], ev[2])}

    def fetch_in_place(self) -> np.ndarray:
        """The embeddings the last ``execute_in_place`` left in the output buffer (normalised like ``run``)."""
        n = self._in_place_shape[0]
        host = self._download(n)
        self.cuda.sync(self.stream)
        out = np.array(host, np.float32).reshape(n, -1)
        if not self.model.normalized:
            out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def _execute(self, shape: tuple[int, ...]) -> None:
        """Queue one execution on the harness stream, after the copy-in queued on the same stream."""
        inp, _ = self._io()
        c = self.cuda
        if self.api == "tensor":
            if self.exec_context.set_input_shape(inp.name, shape) is False:
                raise HarnessError(self._shape_refused(shape))
            for t in self.io:
                self.exec_context.set_tensor_address(t.name, c.ptr(self.buffers[t.name]))
            ok = self.exec_context.execute_async_v3(c.stream_handle(self.stream))
        else:
            if self.model.batch is None and self.exec_context.set_binding_shape(inp.index, shape) is False:
                raise HarnessError(self._shape_refused(shape))
            bindings = [c.ptr(self.buffers[t.name]) for t in sorted(self.io, key=lambda t: t.index)]
            if hasattr(self.exec_context, "execute_async_v2"):
                ok = self.exec_context.execute_async_v2(bindings, c.stream_handle(self.stream))
            else:  # execute_v2 runs on a stream of its own: the copy-in must be complete first
                c.sync(self.stream)
                ok = self.exec_context.execute_v2(bindings)
        if not ok:
            raise HarnessError(f"{self.name} {self.precision}: engine execution failed (see the SDK log).")

    def _shape_refused(self, shape: tuple[int, ...]) -> str:
        lo, _, hi = self.settings["profile"]
        return (
            f"{self.name} {self.precision}: the engine refused input shape {shape} "
            f"(its optimization profile admits batch {lo} to {hi}; --engine-option profile=MIN,OPT,MAX rebuilds it)"
        )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        if n > self.max_batch:  # the base class pads/splits static engines; a dynamic one splits here
            return np.concatenate([self._run(batch[i : i + self.max_batch]) for i in range(0, n, self.max_batch)])
        c, s, ev = self.cuda, self.stream, self.events
        host = self._stage(batch)  # the CPU's staging copy is not part of the copy-in
        c.record(ev[0], s)
        shape = self._copy_in(host)
        c.record(ev[1], s)
        self._execute(shape)
        c.record(ev[2], s)
        host = self._download(n)
        c.record(ev[3], s)
        c.sync(s)
        self.timings = {
            "h2d_ms": c.elapsed_ms(ev[0], ev[1]),
            "compute_ms": c.elapsed_ms(ev[1], ev[2]),
            "d2h_ms": c.elapsed_ms(ev[2], ev[3]),
        }
        return np.array(host, np.float32).reshape(n, -1)  # a copy: the pinned buffer is reused

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "version": self.version,
            "precision": self.precision,
            "engine_sha256": self.plan_sha256,
            "api": self.api,
            "typing": self.typing,
            "tf32": self.tf32,
            **self.device,
        }


class IxRTEngine(TensorRTEngine):
    """IxRT in the reference deployment's form by default: a dynamic ONNX is built at a static batch of 64
    (DeepSparkInference facenet/ixrt builds with BSZ=64 from a batch-64 ONNX, no optimization profile, and
    runs execute_v2), so its FPS figures are reproduced like for like; ``static_batch=0`` builds the
    dynamic profile instead."""

    name = "ixrt"
    sdk_modules = SDK_MODULES["ixrt"]
    preferred_api = "binding"  # IxRT's own samples and deployment use the TensorRT 8 binding API
    options: ClassVar[tuple[Option, ...]] = tuple(
        dataclasses.replace(o, default=64) if o.name == "static_batch" else o for o in TensorRTEngine.options
    )


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


def api_generation(engine, context, preferred: str = "tensor") -> str:
    """'tensor' (named-tensor API) or 'binding' (binding API), the preferred one where the SDK has both."""
    has = {
        "tensor": hasattr(engine, "num_io_tensors") and hasattr(context, "execute_async_v3"),
        "binding": hasattr(engine, "num_bindings")
        and (hasattr(context, "execute_async_v2") or hasattr(context, "execute_v2")),
    }
    for api in (preferred, *(a for a in has if a != preferred)):
        if has[api]:
            return api
    raise HarnessError(
        "the engine has neither num_io_tensors/execute_async_v3 nor num_bindings/execute_v2: "
        "an unknown TensorRT API; check it with tools/extract_trt_api.py."
    )


def io_tensors(engine, api: str) -> list[IOTensor]:
    out = []
    if api == "tensor":
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            mode = engine.get_tensor_mode(name)
            is_input = getattr(mode, "name", str(mode)).endswith("INPUT")
            out.append(
                IOTensor(
                    name, i, is_input, tuple(engine.get_tensor_shape(name)), _nptype(engine.get_tensor_dtype(name))
                )
            )
    else:
        for i in range(engine.num_bindings):
            out.append(
                IOTensor(
                    engine.get_binding_name(i),
                    i,
                    engine.binding_is_input(i),
                    tuple(engine.get_binding_shape(i)),
                    _nptype(engine.get_binding_dtype(i)),
                )
            )
    if sum(t.is_input for t in out) != 1 or len(out) != 2:
        raise HarnessError(
            f"the engine has I/O {[t.name for t in out]}; a FaceNet engine has one input and one output."
        )
    return out


def _nptype(dtype) -> type:
    name = getattr(dtype, "name", str(dtype)).split(".")[-1].upper()
    table = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32}
    if name not in table:
        raise HarnessError(f"unsupported engine I/O dtype {dtype}")
    return table[name]
