"""The runner's CUDA path on a real GPU: device buffers, copies, stream and events of ``trt_engine.Cuda``.

The SDK is the contract fake of ``test_trt_contract`` (no TensorRT/IxRT needed), but memory, copies,
the stream and the events are real CUDA through cuda-python or pycuda, and the fake engine's
'compute' is a device-to-device copy of each row's first 512 values. Skips without a CUDA binding
or a GPU.
"""
import numpy as np
import pytest

from harness.engines import EngineContext
from harness.engines import cuda as cuda_mod
from harness.engines import tensorrt as trt_engine
from harness.errors import HarnessError

from .test_trt_contract import ROW_IN, ROW_OUT, Rec, expected, fake_sdk, info, rows


@pytest.fixture(scope="module")
def real_cuda():
    try:
        cuda = cuda_mod.Cuda()
        cuda.device()
    except HarnessError as e:
        pytest.skip(f"no CUDA Python binding: {e}")
    except Exception as e:  # a binding without a driver or device raises its own errors
        pytest.skip(f"no usable CUDA device: {e}")
    return cuda


def device_copy(cuda):
    """Copy n rows' first 512 floats from src to dst on the GPU (the fake engine's 'compute')."""
    impl = cuda.impl
    if isinstance(impl, cuda_mod._CudaPython):
        rt = impl.rt

        def copy(dst, src, n, stream):
            impl._check(rt.cudaMemcpy2DAsync(dst, ROW_OUT * 4, src, ROW_IN * 4, ROW_OUT * 4, n,
                                             rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream))
    else:
        drv = impl.drv

        def copy(dst, src, n, stream):
            for i in range(n):
                drv.memcpy_dtod_async(int(dst) + i * ROW_OUT * 4, int(src) + i * ROW_IN * 4, ROW_OUT * 4, stream)
    return copy


class GpuFakeCuda:
    """The real Cuda object, with the fake engine's device copy available to the fake context."""

    def __init__(self, cuda):
        self.cuda, self.copy = cuda, device_copy(cuda)
        self.mem = None  # the contract fake reads host-side memory only when this is a dict

    def __getattr__(self, name):
        return getattr(self.cuda, name)


def gpu_sdk(generation, rec, gpu, batch):
    sdk = fake_sdk(generation, rec, gpu, batch=batch)
    engine_cls = sdk.Runtime(None).deserialize_cuda_engine(b"").__class__
    context_cls = engine_cls().create_execution_context().__class__
    stream = {}

    def compute(self, n, src, dst):
        gpu.copy(dst, src, n, stream["s"])

    context_cls._compute = compute
    return sdk, stream


@pytest.mark.parametrize("generation, batch", [("tensor", 64), ("tensor", None), ("binding", None)])
def test_runner_moves_real_device_memory(real_cuda, generation, batch, tmp_path):
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"fake onnx")
    rec = Rec()
    gpu = GpuFakeCuda(real_cuda)
    sdk, stream = gpu_sdk(generation, rec, gpu, batch)
    engine = trt_engine.TensorRTEngine(info(onnx_file, batch), "fp16", EngineContext(tmp_path / "cache"), sdk=sdk,
                                        cuda=gpu)
    stream["s"] = engine.stream
    assert engine.describe()["device"] == real_cuda.device()["device"]
    full, partial = rows(64, 1), rows(7, 2)
    np.testing.assert_array_equal(engine.run(full), expected(full))
    np.testing.assert_array_equal(engine.run(partial), expected(partial))  # no stale rows from the full batch
    big = rows(100, 3)
    np.testing.assert_array_equal(engine.run(big), expected(big))
    t = engine.timings
    assert set(t) == {"h2d_ms", "compute_ms", "d2h_ms"} and all(v >= 0 for v in t.values())
    assert t["h2d_ms"] > 0  # a real copy of the batch took measurable time on the stream


def test_in_place_execution_on_the_device(real_cuda, tmp_path):
    """The compute-only view: upload once, execute repeatedly, read back what the last execution left."""
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"fake onnx")
    gpu = GpuFakeCuda(real_cuda)
    sdk, stream = gpu_sdk("tensor", Rec(), gpu, 64)
    engine = trt_engine.TensorRTEngine(info(onnx_file, 64), "fp16", EngineContext(tmp_path / "cache"), sdk=sdk, cuda=gpu)
    stream["s"] = engine.stream
    x = rows(8, 4)
    engine.load_in_place(x)
    for _ in range(3):
        engine.execute_in_place()
    np.testing.assert_array_equal(engine.fetch_in_place()[:8], expected(x))
