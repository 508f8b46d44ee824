"""The little of CUDA the TensorRT/IxRT runner needs, over pycuda or cuda-python (the ``gpu`` extras).

Everything created here is released explicitly: ``free`` (device buffers), ``free_pinned``
(page-locked host arrays), ``destroy_event``, ``free_stream`` and finally ``close`` (pycuda: pops
and releases the retained primary context, so nothing is left for pycuda to abort on at exit).
``probe()`` asks whether a device is usable without creating a context.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import shutil
import subprocess
from typing import Any

import numpy as np

from harness.core.errors import HarnessError
from harness.engines.base import EngineUnavailable


def binding_available() -> str | None:
    """The name of an importable CUDA Python binding, or None (checked without importing it)."""
    for name in ("pycuda", "cuda"):
        try:
            if importlib.util.find_spec(name) is not None:
                return name
        except (ImportError, ValueError):
            continue
    return None


def _import_binding():
    """("pycuda", pycuda.driver) or ("cuda-python", cuda runtime module); EngineUnavailable when neither imports."""
    try:
        import pycuda.driver as drv

        return "pycuda", drv
    except ImportError:
        pass
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise EngineUnavailable(
                "no CUDA Python binding: pip install 'facenet-harness[gpu-cu12]' or '[gpu-cu13]' (cuda-python "
                "for your driver's CUDA major) or '[gpu-pycuda]' (pycuda, needs the CUDA toolkit)."
            ) from None
    return "cuda-python", cudart


CUDA_ERROR_INSUFFICIENT_DRIVER = 35  # cudaErrorInsufficientDriver


def device_count_failed(err) -> str:
    """Why cudaGetDeviceCount failed, in words; for an insufficient driver, which extra fits it."""
    name = getattr(err, "name", err)
    if int(err) != CUDA_ERROR_INSUFFICIENT_DRIVER:
        return f"no usable CUDA device: cudaGetDeviceCount returned {name}"
    driver = cuda_driver_api_version()
    if driver is None:  # what the runtime answers where no driver is loaded at all
        return f"no usable CUDA device: cudaGetDeviceCount returned {name} (no NVIDIA driver: libcuda.so.1 not found)"
    try:
        version = importlib.metadata.version("cuda-python")
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    return (
        f"the NVIDIA driver ({driver}) is too old for cuda-python {version} ({name}): each cuda-python major "
        "needs a driver of its CUDA major (cuda-python 13: driver >= 580). Install the extra of your driver's "
        "CUDA: pip install 'facenet-harness[gpu-cu12]' (CUDA 12 drivers, 525-579) or '[gpu-cu13]' (>= 580)"
    )


def probe(binding=None) -> str | None:
    """Why no CUDA device is usable here, or None when one is. Creates no context (device count only)."""
    try:
        kind, mod = binding or _import_binding()
    except HarnessError as e:
        return str(e)
    try:
        if kind == "pycuda":
            mod.init()
            count = mod.Device.count()
        else:
            err, count = mod.cudaGetDeviceCount()
            if int(err) != 0:
                return device_count_failed(err)
    except Exception as e:  # a binding without a driver raises its own error types
        return f"no usable CUDA device: {type(e).__name__}: {e}"
    return None if count > 0 else "no CUDA device: the driver reports 0 devices"


SMI_TOOLS = ("nvidia-smi", "ixsmi")  # NVIDIA's, and Iluvatar CoreX's port of it (same query syntax)
SMI_FIELDS = ("driver_version", "clocks.sm", "clocks.max.sm", "clocks.mem", "clocks.max.mem", "power.limit")


def nvidia_smi(uuid: str | None = None, index: int = 0, fields: tuple[str, ...] = SMI_FIELDS) -> dict:
    """Driver release and clocks (MHz) of one GPU from nvidia-smi (or ixsmi on CoreX); {} when neither is
    installed or the query fails."""
    exe = next((e for e in map(shutil.which, SMI_TOOLS) if e), None)
    if exe is None:
        return {}
    target = f"GPU-{uuid}" if uuid and not str(uuid).startswith("GPU-") else (uuid or str(index))
    try:
        out = subprocess.run(
            [exe, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits", "-i", target],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    if out.returncode != 0 or not out.stdout.strip():
        return {}
    values = [v.strip() for v in out.stdout.strip().splitlines()[0].split(",")]
    return dict(zip(fields, values, strict=False))


def cuda_driver_api_version() -> str | None:
    """cuDriverGetVersion from libcuda (e.g. 12080), when nvidia-smi cannot name the driver release."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        v = ctypes.c_int()
        if lib.cuDriverGetVersion(ctypes.byref(v)) == 0:
            return f"CUDA driver API {v.value // 1000}.{v.value % 1000 // 10}"
    except OSError:
        pass
    return None


def driver_release(api_version: int | str | None, index: int = 0) -> dict:
    """What a driver-upgrade gate must name: the driver *release* (e.g. 570.86.15, from nvidia-smi or
    ixsmi) beside the CUDA driver API version (e.g. 12080, which stays the same across the releases of one
    CUDA version). Both go into the fingerprint and the engine cache key."""
    release = nvidia_smi(index=index, fields=("driver_version",)).get("driver_version")
    api = str(api_version) if api_version is not None else None
    return {"driver": release or f"unknown release (CUDA driver API {api})", "cuda_driver_api": api}


class Cuda:
    """The little of CUDA the runner needs, over pycuda or cuda-python."""

    def __init__(self, impl=None):
        if impl is None:
            binding = _import_binding()
            why = probe(binding)
            if why:
                raise EngineUnavailable(why)
            kind, mod = binding
            impl = _Pycuda(mod) if kind == "pycuda" else _CudaPython(mod)
        self.impl = impl

    def __getattr__(self, name):
        return getattr(self.impl, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.impl.close()


class _Pycuda:
    """pycuda on device 0's primary context (retained, pushed for the engine's life, popped in ``close``)."""

    def __init__(self, drv):
        self.drv = drv
        drv.init()
        self.ctx = drv.Device(0).retain_primary_context()
        self.ctx.push()

    def close(self):
        if self.ctx is not None:
            ctx, self.ctx = self.ctx, None
            self.drv.Context.pop()
            ctx.detach()

    def device(self) -> dict:
        dev = self.drv.Device(0)
        return {
            "device": dev.name(),
            **driver_release(self.drv.get_driver_version()),
            "compute_capability": ".".join(map(str, dev.compute_capability())),
        }

    def alloc(self, nbytes):
        return self.drv.mem_alloc(max(int(nbytes), 1))

    def free(self, buf):
        buf.free()

    def ptr(self, buf) -> int:
        return int(buf)

    def pinned(self, shape, dtype) -> np.ndarray:
        return self.drv.pagelocked_empty(shape, dtype)

    def free_pinned(self, array: np.ndarray):
        # a pagelocked array's base is pycuda's HostAllocation (untyped), which numpy's stubs cannot express
        allocation: Any = array.base
        allocation.free()

    def stream(self):
        return self.drv.Stream()

    def stream_handle(self, stream) -> int:
        return stream.handle

    def free_stream(self, stream):
        pass  # a pycuda Stream is destroyed when its last reference goes (the runner drops it before close())

    def htod(self, buf, host, stream):
        self.drv.memcpy_htod_async(buf, host, stream)

    def dtoh(self, host, buf, stream):
        self.drv.memcpy_dtoh_async(host, buf, stream)

    def sync(self, stream):
        stream.synchronize()

    def event(self):
        return self.drv.Event()

    def destroy_event(self, event):
        pass  # like Stream: destroyed with its last reference

    def record(self, event, stream):
        event.record(stream)

    def elapsed_ms(self, start, end) -> float:
        return end.time_since(start)


class _CudaPython:
    """cuda-python's runtime API (on the runtime's primary context of the current device)."""

    def __init__(self, cudart):
        self.rt = cudart
        self._pinned: dict[int, int] = {}  # array data address -> cudaMallocHost pointer

    def close(self):
        pass  # the runtime's primary context belongs to the process; every object we made is freed by its owner

    def _check(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise HarnessError(f"CUDA call failed: {getattr(err, 'name', err)}")
        return rest[0] if len(rest) == 1 else rest

    def device(self) -> dict:
        props = self._check(self.rt.cudaGetDeviceProperties(0))
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        return {
            "device": name.rstrip("\0"),
            **driver_release(self._check(self.rt.cudaDriverGetVersion())),
            "compute_capability": f"{props.major}.{props.minor}",
        }

    def alloc(self, nbytes):
        return self._check(self.rt.cudaMalloc(max(int(nbytes), 1)))

    def free(self, buf):
        self._check(self.rt.cudaFree(buf))

    def ptr(self, buf) -> int:
        return int(buf)

    def pinned(self, shape, dtype) -> np.ndarray:
        """A numpy array over page-locked host memory (cudaMallocHost); release it with ``free_pinned``."""
        dtype = np.dtype(dtype)
        nbytes = max(int(np.prod(shape)) * dtype.itemsize, 1)
        address = int(self._check(self.rt.cudaMallocHost(nbytes)))
        raw = (ctypes.c_byte * nbytes).from_address(address)
        array = np.frombuffer(raw, np.uint8)[: int(np.prod(shape)) * dtype.itemsize].view(dtype).reshape(shape)
        self._pinned[array.ctypes.data] = address
        return array

    def free_pinned(self, array: np.ndarray):
        self._check(self.rt.cudaFreeHost(self._pinned.pop(array.ctypes.data)))

    def stream(self):
        return self._check(self.rt.cudaStreamCreate())

    def stream_handle(self, stream) -> int:
        return int(stream)

    def free_stream(self, stream):
        self._check(self.rt.cudaStreamDestroy(stream))

    def htod(self, buf, host, stream):
        self._check(
            self.rt.cudaMemcpyAsync(
                buf, host.ctypes.data, host.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream
            )
        )

    def dtoh(self, host, buf, stream):
        self._check(
            self.rt.cudaMemcpyAsync(
                host.ctypes.data, buf, host.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream
            )
        )

    def sync(self, stream):
        self._check(self.rt.cudaStreamSynchronize(stream))

    def event(self):
        return self._check(self.rt.cudaEventCreate())

    def destroy_event(self, event):
        self._check(self.rt.cudaEventDestroy(event))

    def record(self, event, stream):
        self._check(self.rt.cudaEventRecord(event, stream))

    def elapsed_ms(self, start, end) -> float:
        return float(self._check(self.rt.cudaEventElapsedTime(start, end)))
