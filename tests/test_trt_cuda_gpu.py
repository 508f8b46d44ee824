"""The runner's CUDA path on a real GPU: device buffers, copies, stream and events of ``trt_engine.Cuda``.

The SDK is the contract fake of ``test_trt_contract`` (no TensorRT/IxRT needed), but memory, copies,
the stream and the events are real CUDA through cuda-python or pycuda, and the fake engine's
'compute' is a device-to-device copy of each row's first 512 values. Skips, with the reason, without
a CUDA binding or a GPU.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from harness.core.errors import HarnessError
from harness.engines import EngineContext
from harness.engines import cuda as cuda_mod
from harness.engines import tensorrt as trt_engine

from .test_trt_contract import ROW_IN, ROW_OUT, Rec, expected, fake_sdk, info, rows


@pytest.fixture(scope="module")
def real_cuda():
    try:
        cuda = cuda_mod.Cuda()  # EngineUnavailable (a HarnessError) with the reason when there is no device
        cuda.device()
    except HarnessError as e:
        pytest.skip(str(e))
    with cuda:  # pycuda: the retained primary context is popped and released afterwards
        yield cuda


def device_copy(cuda):
    """Copy n rows' first 512 floats from src to dst on the GPU (the fake engine's 'compute')."""
    impl = cuda.impl
    if isinstance(impl, cuda_mod._CudaPython):
        rt = impl.rt

        def copy(dst, src, n, stream):
            impl._check(
                rt.cudaMemcpy2DAsync(
                    dst,
                    ROW_OUT * 4,
                    src,
                    ROW_IN * 4,
                    ROW_OUT * 4,
                    n,
                    rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice,
                    stream,
                )
            )
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


def gpu_sdk(fixture, rec, gpu, batch):
    sdk = fake_sdk(fixture, rec, gpu, batch=batch)
    engine_cls = sdk.Runtime(None).deserialize_cuda_engine(b"").__class__
    context_cls = engine_cls().create_execution_context().__class__
    stream = {}

    def compute(self, n, src, dst):
        gpu.copy(dst, src, n, stream["s"])

    context_cls._compute = compute
    return sdk, stream


@pytest.mark.parametrize(
    "fixture, batch, engine_cls",
    [
        ("11.x", 64, trt_engine.TensorRTEngine),
        ("10.x", None, trt_engine.TensorRTEngine),
        ("8.6", None, trt_engine.IxRTEngine),
    ],
)
def test_runner_moves_real_device_memory(real_cuda, fixture, batch, engine_cls, tmp_path):
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"fake onnx")
    rec = Rec()
    gpu = GpuFakeCuda(real_cuda)
    sdk, stream = gpu_sdk(fixture, rec, gpu, batch)
    engine = engine_cls(  # the dynamic profile (IxRT's static default needs a real ONNX: test_trt_contract.py)
        info(onnx_file, batch), "fp32", EngineContext(tmp_path / "cache"), sdk=sdk, cuda=gpu, static_batch=0
    )
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
    engine.close()


def test_in_place_execution_on_the_device(real_cuda, tmp_path):
    """The compute-only view: upload once, execute repeatedly, read back what the last execution left."""
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"fake onnx")
    gpu = GpuFakeCuda(real_cuda)
    sdk, stream = gpu_sdk("10.x", Rec(), gpu, 64)
    engine = trt_engine.TensorRTEngine(
        info(onnx_file, 64), "fp32", EngineContext(tmp_path / "cache"), sdk=sdk, cuda=gpu
    )
    stream["s"] = engine.stream
    x = rows(8, 4)
    engine.load_in_place(x)
    for _ in range(3):
        engine.execute_in_place()
    np.testing.assert_array_equal(engine.fetch_in_place()[:8], expected(x))
    engine.close()


def test_pinned_buffers_are_page_locked(real_cuda):
    arr = real_cuda.pinned((4, 512), np.float32)
    arr[:] = 1.0
    impl = real_cuda.impl
    if isinstance(impl, cuda_mod._CudaPython):
        attrs = impl._check(impl.rt.cudaPointerGetAttributes(arr.ctypes.data))
        assert int(attrs.type) == int(impl.rt.cudaMemoryType.cudaMemoryTypeHost)  # pinned, not pageable
    else:
        assert type(arr.base).__name__ == "PagelockedHostAllocation"
    real_cuda.free_pinned(arr)


def test_engine_lifecycle_exits_cleanly(real_cuda, tmp_path):
    """A fresh process opens, runs and closes an engine on the GPU and exits 0 (no pycuda abort at exit)."""
    script = textwrap.dedent(f"""
        import numpy as np
        from harness.engines import EngineContext, tensorrt as trt_engine
        from harness.engines import cuda as cuda_mod
        from tests.test_trt_cuda_gpu import GpuFakeCuda, gpu_sdk
        from tests.test_trt_contract import Rec, info, rows, expected
        from pathlib import Path
        onnx = Path({str(tmp_path / "m.onnx")!r}); onnx.write_bytes(b"fake onnx")
        with cuda_mod.Cuda() as real:
            gpu = GpuFakeCuda(real)
            sdk, stream = gpu_sdk("11.x", Rec(), gpu, 64)
            with trt_engine.TensorRTEngine(info(onnx, 64), "fp32", EngineContext(Path({str(tmp_path / "c")!r})),
                                           sdk=sdk, cuda=gpu) as engine:
                stream["s"] = engine.stream
                x = rows(8)
                assert np.array_equal(engine.run(x), expected(x))
        print("closed")
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.returncode == 0 and "closed" in proc.stdout, proc.stderr[-2000:]
    assert "abort" not in proc.stderr.lower() and "context" not in proc.stderr.lower(), proc.stderr[-2000:]
