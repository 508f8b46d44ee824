"""The little of CUDA the TensorRT/IxRT runner needs, over pycuda or cuda-python (the ``gpu`` extras)."""
from __future__ import annotations

import importlib.util

import numpy as np

from ..errors import HarnessError
from .base import EngineUnavailable


def binding_available() -> str | None:
    """The name of an importable CUDA Python binding, or None (checked without importing it)."""
    for name in ("pycuda", "cuda"):
        try:
            if importlib.util.find_spec(name) is not None:
                return name
        except (ImportError, ValueError):
            continue
    return None


class Cuda:
    """The little of CUDA the runner needs, over pycuda or cuda-python."""

    def __init__(self, impl=None):
        self.impl = impl or self._load()

    @staticmethod
    def _load():
        try:
            import pycuda.driver as drv

            drv.init()
            return _Pycuda(drv)
        except ImportError:
            pass
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            try:
                from cuda import cudart  # older cuda-python
            except ImportError:
                raise EngineUnavailable("no CUDA Python binding: pip install '.[gpu]' (cuda-python) or "
                                   "'.[gpu-pycuda]' (pycuda, needs the CUDA toolkit).") from None
        return _CudaPython(cudart)

    def __getattr__(self, name):
        return getattr(self.impl, name)


class _Pycuda:
    def __init__(self, drv):
        self.drv = drv
        self.ctx = drv.Device(0).make_context()

    def device(self) -> dict:
        dev = self.drv.Device(0)
        return {"device": dev.name(), "driver": str(self.drv.get_driver_version()),
                "compute_capability": ".".join(map(str, dev.compute_capability()))}

    def alloc(self, nbytes):
        return self.drv.mem_alloc(max(int(nbytes), 1))

    def ptr(self, buf) -> int:
        return int(buf)

    def stream(self):
        return self.drv.Stream()

    def stream_handle(self, stream) -> int:
        return stream.handle

    def htod(self, buf, host, stream):
        self.drv.memcpy_htod_async(buf, host, stream)

    def dtoh(self, host, buf, stream):
        self.drv.memcpy_dtoh_async(host, buf, stream)

    def sync(self, stream):
        stream.synchronize()

    def event(self):
        return self.drv.Event()

    def record(self, event, stream):
        event.record(stream)

    def elapsed_ms(self, start, end) -> float:
        return end.time_since(start)

    def pinned(self, shape, dtype):
        return self.drv.pagelocked_empty(shape, dtype)

    def free(self, buf):
        buf.free()

    def free_stream(self, stream):
        pass  # pycuda frees a Stream when it is collected


class _CudaPython:
    def __init__(self, cudart):
        self.rt = cudart

    def _check(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise HarnessError(f"CUDA call failed: {err}")
        return rest[0] if len(rest) == 1 else rest

    def device(self) -> dict:
        props = self._check(self.rt.cudaGetDeviceProperties(0))
        return {"device": props.name.decode().rstrip("\0"), "driver": str(self._check(self.rt.cudaDriverGetVersion())),
                "compute_capability": f"{props.major}.{props.minor}"}

    def alloc(self, nbytes):
        return self._check(self.rt.cudaMalloc(max(int(nbytes), 1)))

    def ptr(self, buf) -> int:
        return int(buf)

    def stream(self):
        return self._check(self.rt.cudaStreamCreate())

    def stream_handle(self, stream) -> int:
        return int(stream)

    def htod(self, buf, host, stream):
        self._check(self.rt.cudaMemcpyAsync(buf, host.ctypes.data, host.nbytes,
                                            self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))

    def dtoh(self, host, buf, stream):
        self._check(self.rt.cudaMemcpyAsync(host.ctypes.data, buf, host.nbytes,
                                            self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))

    def sync(self, stream):
        self._check(self.rt.cudaStreamSynchronize(stream))

    def event(self):
        return self._check(self.rt.cudaEventCreate())

    def record(self, event, stream):
        self._check(self.rt.cudaEventRecord(event, stream))

    def elapsed_ms(self, start, end) -> float:
        return float(self._check(self.rt.cudaEventElapsedTime(start, end)))

    def pinned(self, shape, dtype):
        return np.empty(shape, dtype)

    def free(self, buf):
        self._check(self.rt.cudaFree(buf))

    def free_stream(self, stream):
        self._check(self.rt.cudaStreamDestroy(stream))
