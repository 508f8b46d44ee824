"""The TensorRT/IxRT builder and runner against recording fakes of both API generations.

The fakes pin the API contract (call sequence, flags, shapes, buffer sizes, error paths); they
compute nothing FaceNet-like and are never presented as an engine. Where the SDK and a GPU exist,
the conformance, accuracy and perf tests run the real engines through the same code.
"""
import json
import re
import subprocess
import sys
import types
import zipfile

import numpy as np
import pytest

from harness import cache
from harness.engines import EngineContext
from harness.engines import tensorrt as trt_engine
from harness.errors import HarnessError
from harness.model import ModelInfo

ROW_IN, ROW_OUT = 3 * 160 * 160, 512


class Enum:
    def __init__(self, name):
        self.name = name

    def __int__(self):
        return 0

    def __repr__(self):
        return self.name


class Rec:
    def __init__(self):
        self.calls = []

    def __call__(self, obj, method, *args):
        self.calls.append((obj, method) + args)

    def methods(self):
        return [(o, m) for o, m, *_ in self.calls]


class FakeCuda:
    """Device memory as numpy byte arrays behind integer 'pointers'."""

    def __init__(self, rec, device=None):
        self.rec, self.mem, self.next = rec, {}, 4096
        self.info = device or {"device": "Fake GPU", "driver": "12040", "compute_capability": "9.0"}

    def device(self):
        return dict(self.info)

    def alloc(self, nbytes):
        ptr = self.next
        self.next += int(nbytes) + 4096
        self.mem[ptr] = np.zeros(int(nbytes), np.uint8)
        self.rec("cuda", "alloc", int(nbytes))
        return ptr

    def ptr(self, buf):
        return buf

    def stream(self):
        return "stream0"

    def stream_handle(self, stream):
        return 77

    def htod(self, buf, host, stream):
        assert host.nbytes <= self.mem[buf].nbytes, "host->device copy overflows the device buffer"
        self.mem[buf][: host.nbytes] = np.frombuffer(host.tobytes(), np.uint8)
        self.rec("cuda", "htod", host.nbytes)

    def dtoh(self, host, buf, stream):
        assert host.nbytes <= self.mem[buf].nbytes
        host.reshape(-1).view(np.uint8)[:] = self.mem[buf][: host.nbytes]
        self.rec("cuda", "dtoh", host.nbytes)

    def sync(self, stream):
        self.rec("cuda", "sync")

    def event(self):
        return object()

    def record(self, event, stream):
        pass

    def elapsed_ms(self, a, b):
        return 0.25

    def pinned(self, shape, dtype):
        return np.empty(shape, dtype)

    def free(self, buf):
        self.rec("cuda", "free", self.mem.pop(buf).nbytes)

    def free_stream(self, stream):
        self.rec("cuda", "free_stream")


def fake_sdk(generation, rec, cuda, *, batch=None, parse_errors=(), build_none=False):
    """A tensorrt-like module of one API generation. The 'engine' copies each input row's first 512
    values to the output row: enough to see rows, shapes and buffers go where they should."""
    sdk = types.ModuleType("tensorrt")
    sdk.__file__ = "/nonexistent/tensorrt/__init__.py"
    sdk.__version__ = "10.13.0" if generation == "tensor" else "4.2.0"
    sdk.Logger = type("Logger", (), {"WARNING": Enum("WARNING"), "__init__": lambda self, s: rec("trt", "Logger", s)})
    sdk.BuilderFlag = types.SimpleNamespace(FP16=Enum("FP16"), INT8=Enum("INT8"))
    sdk.MemoryPoolType = types.SimpleNamespace(WORKSPACE=Enum("WORKSPACE"))
    sdk.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=Enum("EXPLICIT_BATCH"))
    in_shape = (batch or -1, 3, 160, 160)

    class Network:
        def get_input(self, i):
            rec("network", "get_input", i)
            return types.SimpleNamespace(name="input", shape=in_shape)

    class Parser:
        def __init__(self, network, logger):
            rec("trt", "OnnxParser")

        def parse(self, data):
            rec("parser", "parse", len(data))
            return not parse_errors

        @property
        def num_errors(self):
            rec("parser", "num_errors")
            return len(parse_errors)

        def get_error(self, i):
            rec("parser", "get_error", i)
            return parse_errors[i]

    class Config:
        def set_flag(self, flag):
            rec("config", "set_flag", flag.name)

        def add_optimization_profile(self, p):
            rec("config", "add_optimization_profile")

        def __setattr__(self, k, v):
            rec("config", f"set {k}", v)
            object.__setattr__(self, k, v)

    if generation == "tensor":
        Config.set_memory_pool_limit = lambda self, pool, size: rec("config", "set_memory_pool_limit", pool.name, size)

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            rec("profile", "set_shape", name, lo, opt, hi)

    class Builder:
        def __init__(self, logger):
            rec("trt", "Builder")

        def create_network(self, flags):
            rec("builder", "create_network", flags)
            return Network()

        def create_builder_config(self):
            rec("builder", "create_builder_config")
            return Config()

        def create_optimization_profile(self):
            rec("builder", "create_optimization_profile")
            return Profile()

        def build_serialized_network(self, network, config):
            rec("builder", "build_serialized_network")
            return None if build_none else b"PLAN" + generation.encode()

    class Context:
        def __init__(self):
            self.shape, self.addr = None, {}

        def _compute(self, n, src, dst):
            x = cuda.mem[src].view(np.float32)[: n * ROW_IN].reshape(n, ROW_IN)
            cuda.mem[dst].view(np.float32)[: n * ROW_OUT] = x[:, :ROW_OUT].reshape(-1)

        # named-tensor API
        def set_input_shape(self, name, shape):
            rec("context", "set_input_shape", name, tuple(shape))
            self.shape = tuple(shape)

        def set_tensor_address(self, name, ptr):
            rec("context", "set_tensor_address", name)
            self.addr[name] = ptr

        def execute_async_v3(self, stream):
            rec("context", "execute_async_v3", stream)
            self._compute(self.shape[0], self.addr["input"], self.addr["embeddings"])
            return True

        # binding API
        def set_binding_shape(self, i, shape):
            rec("context", "set_binding_shape", i, tuple(shape))
            self.shape = tuple(shape)

        def execute_v2(self, bindings):
            rec("context", "execute_v2", len(bindings))
            self._compute(self.shape[0] if self.shape else batch, bindings[0], bindings[1])
            return True

    dt = Enum("DataType.FLOAT")
    if generation == "tensor":
        Engine = type("Engine", (), {
            "num_io_tensors": 2,
            "get_tensor_name": lambda self, i: ["input", "embeddings"][i],
            "get_tensor_mode": lambda self, n: Enum("TensorIOMode.INPUT" if n == "input" else "TensorIOMode.OUTPUT"),
            "get_tensor_shape": lambda self, n: in_shape if n == "input" else (batch or -1, 512),
            "get_tensor_dtype": lambda self, n: dt,
            "create_execution_context": lambda self: Context()})
    else:
        Engine = type("Engine", (), {
            "num_bindings": 2,
            "get_binding_name": lambda self, i: ["input", "embeddings"][i],
            "binding_is_input": lambda self, i: i == 0,
            "get_binding_shape": lambda self, i: in_shape if i == 0 else (batch or -1, 512),
            "get_binding_dtype": lambda self, i: dt,
            "create_execution_context": lambda self: Context()})

    class Runtime:
        def __init__(self, logger):
            rec("trt", "Runtime")

        def deserialize_cuda_engine(self, plan):
            rec("runtime", "deserialize_cuda_engine", plan)
            return Engine()

    sdk.Builder, sdk.OnnxParser, sdk.Runtime = Builder, Parser, Runtime
    return sdk


@pytest.fixture
def onnx_file(tmp_path):
    p = tmp_path / "facenet.onnx"
    p.write_bytes(b"fake onnx bytes: the fake parser only counts them")
    return p


def info(path, batch):
    return ModelInfo(path, cache.sha256_file(path), "input", "embeddings", batch, None, None, True)


def make(generation, onnx_file, tmp_path, batch=None, device=None, parse_errors=(), build_none=False, **options):
    rec = Rec()
    cuda = FakeCuda(rec, device)
    sdk = fake_sdk(generation, rec, cuda, batch=batch, parse_errors=parse_errors, build_none=build_none)
    engine = trt_engine.TensorRTEngine(info(onnx_file, batch), "fp16", EngineContext(tmp_path / "cache"), sdk=sdk,
                                       cuda=cuda, **options)
    return engine, rec


def rows(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 160, 160)).astype(np.float32)


def expected(x):
    return x.reshape(len(x), -1)[:, :512]


def test_named_tensor_api_static_batch(onnx_file, tmp_path):
    engine, rec = make("tensor", onnx_file, tmp_path, batch=64)
    assert engine.api == "tensor"
    m = rec.methods()
    build = m[m.index(("trt", "Builder")):m.index(("builder", "build_serialized_network")) + 1]
    assert build == [("trt", "Builder"), ("builder", "create_network"), ("trt", "OnnxParser"), ("parser", "parse"),
                     ("builder", "create_builder_config"), ("config", "set_memory_pool_limit"),
                     ("config", "set_flag"), ("network", "get_input"), ("builder", "build_serialized_network")]
    assert ("config", "set_memory_pool_limit", "WORKSPACE", 1 << 30) in rec.calls
    assert ("config", "set_flag", "FP16") in rec.calls and ("config", "set_flag", "INT8") not in rec.calls
    assert ("builder", "create_optimization_profile") not in m  # a static engine needs no profile
    assert [c for c in rec.calls if c[1] == "alloc"] == [("cuda", "alloc", 64 * ROW_IN * 4),
                                                         ("cuda", "alloc", 64 * ROW_OUT * 4)]
    first, second = rows(64, 1), rows(5, 2)
    np.testing.assert_array_equal(engine.run(first), expected(first))
    rec.calls.clear()
    out = engine.run(second)  # a partial batch after a full one: no stale rows
    np.testing.assert_array_equal(out, expected(second))
    assert ("context", "set_input_shape", "input", (64, 3, 160, 160)) in rec.calls
    assert ("context", "execute_async_v3", 77) in rec.calls
    assert {c[2] for c in rec.calls if c[1] == "set_tensor_address"} == {"input", "embeddings"}
    assert engine.timings == {"h2d_ms": 0.25, "compute_ms": 0.25, "d2h_ms": 0.25}


def test_binding_api_dynamic_batch(onnx_file, tmp_path):
    engine, rec = make("binding", onnx_file, tmp_path)
    assert engine.api == "binding"
    assert ("profile", "set_shape", "input", (1, 3, 160, 160), (64, 3, 160, 160), (64, 3, 160, 160)) in rec.calls
    assert ("config", "set max_workspace_size", 1 << 30) in rec.calls  # no memory pools in this generation
    x = rows(70, 3)  # more than the profile's max: split into 64 + 6
    np.testing.assert_array_equal(engine.run(x), expected(x))
    shapes = [c[3] for c in rec.calls if c[1] == "set_binding_shape"]
    assert shapes == [(64, 3, 160, 160), (6, 3, 160, 160)]
    assert [c for c in rec.calls if c[1] == "execute_v2"] == [("context", "execute_v2", 2)] * 2
    assert [c[2] for c in rec.calls if c[1] == "htod"] == [64 * ROW_IN * 4, 6 * ROW_IN * 4]


def test_parser_errors_are_all_reported(onnx_file, tmp_path):
    with pytest.raises(HarnessError, match=r"2 error\(s\):\n  Unsupported op Foo\n  bad shape") as err:
        make("tensor", onnx_file, tmp_path, parse_errors=("Unsupported op Foo", "bad shape"))
    assert str(onnx_file) in str(err.value)


def test_failed_build_is_refused(onnx_file, tmp_path):
    with pytest.raises(HarnessError, match="engine build returned nothing"):
        make("tensor", onnx_file, tmp_path, build_none=True)
    assert not list((tmp_path / "cache" / "engines").glob("*.plan"))


def test_engine_cache_is_keyed_by_driver_and_sdk(onnx_file, tmp_path):
    _, rec = make("tensor", onnx_file, tmp_path, batch=64)
    assert ("builder", "build_serialized_network") in rec.methods()
    _, rec = make("tensor", onnx_file, tmp_path, batch=64)
    assert ("builder", "build_serialized_network") not in rec.methods()  # reused
    upgraded = {"device": "Fake GPU", "driver": "12050", "compute_capability": "9.0"}
    _, rec = make("tensor", onnx_file, tmp_path, batch=64, device=upgraded)
    assert ("builder", "build_serialized_network") in rec.methods()  # a driver upgrade rebuilds
    plans = list((tmp_path / "cache" / "engines").glob("*.plan"))
    assert len(plans) == 2
    plans[0].write_bytes(b"corrupt")  # a damaged plan is rebuilt, not loaded
    for device in (None, upgraded):
        make("tensor", onnx_file, tmp_path, batch=64, device=device)
    assert all(json.loads(p.with_suffix(".json").read_text())["sha256"] == cache.sha256_file(p) for p in plans)


@pytest.fixture
def sdk_import(monkeypatch, tmp_path):
    """A site folder for a throw-away 'tensorrt' package; sys.modules is restored afterwards."""
    saved = {k: sys.modules.pop(k) for k in ("tensorrt", "ixrt") if k in sys.modules}
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield tmp_path / "site"
    for k in ("tensorrt", "ixrt"):
        sys.modules.pop(k, None)
    sys.modules.update(saved)


def test_ixrt_plugin_library_is_required(sdk_import):
    pkg = sdk_import / "tensorrt"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("Builder = object\n")
    with pytest.raises(HarnessError, match="libixrt_plugin.so: the IxRT plugin library is missing"):
        trt_engine.load_sdk("ixrt")
    (pkg / "lib").mkdir()
    (pkg / "lib" / "libixrt_plugin.so").write_bytes(b"not a shared object")
    with pytest.raises(HarnessError, match="cannot load the IxRT plugin library"):
        trt_engine.load_sdk("ixrt")
    assert trt_engine.load_sdk("tensorrt").Builder is object  # TensorRT needs no plugin library


def test_type_stubs_alone_are_not_an_sdk(sdk_import):
    (sdk_import / "tensorrt").mkdir(parents=True)
    (sdk_import / "tensorrt" / "__init__.pyi").write_text("class Builder: ...\n")
    with pytest.raises(HarnessError, match="only a namespace or type stubs"):
        trt_engine.load_sdk("tensorrt")


def test_unavailable_sdk_names_what_is_missing():
    avail = trt_engine.TensorRTEngine.availability()
    if avail:
        pytest.skip("TensorRT is installed here")
    assert ("tensorrt" in avail.why and "install" in avail.why) or "no CUDA Python binding" in avail.why


STUBS = "tensorrt-stubs==10.13.0.35.1"


@pytest.fixture(scope="module")
def stubs(cache_dir, tmp_path_factory, facenet_unavailable):
    """Class name -> member names of TensorRT 10's Python API, from the PyPI package tensorrt-stubs."""
    folder = cache_dir / "stubs"
    wheels = list(folder.glob("tensorrt_stubs-*.whl"))
    if not wheels:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(folder), STUBS],
                              capture_output=True, text=True)
        wheels = list(folder.glob("tensorrt_stubs-*.whl"))
        if not wheels:
            facenet_unavailable(f"cannot download {STUBS}: {proc.stderr.strip()[-300:]}")
    # The stubs are not all valid Python (a default before a non-default argument), so read them by line.
    members, current = {"module": set()}, None
    with zipfile.ZipFile(wheels[0]) as z:
        for name in ("tensorrt/__init__.pyi", "tensorrt_bindings/tensorrt.pyi"):
            for line in z.read(name).decode().splitlines():
                top = re.match(r"(?:class|def)\s+(\w+)|(\w+)\s*:", line)
                if top:
                    current = top.group(1) if line.startswith("class") else None
                    members["module"].add(top.group(1) or top.group(2))
                    if current:
                        members.setdefault(current, set())
                    continue
                inner = re.match(r"    (?:def\s+(\w+)|(\w+)\s*:)", line)
                if inner and current:
                    members[current].add(inner.group(1) or inner.group(2))
    return members


def test_named_tensor_path_uses_only_tensorrt_10_api(stubs):
    missing = [f"{cls}.{attr}" for cls, attrs in trt_engine.NAMED_TENSOR_API.items() for attr in attrs
               if attr not in stubs.get(cls, ())]
    assert not missing, f"not in {STUBS}: {missing}"


def test_fake_records_only_declared_api(onnx_file, tmp_path):
    """What the runner called on the named-tensor fake is declared in NAMED_TENSOR_API (so the stubs check covers it)."""
    engine, rec = make("tensor", onnx_file, tmp_path)
    engine.run(rows(3))
    declared = {a for attrs in trt_engine.NAMED_TENSOR_API.values() for a in attrs}
    objects = {"builder", "parser", "network", "config", "profile", "runtime", "context"}
    used = {m.replace("set ", "") for o, m in rec.methods() if o in objects}
    assert used <= declared, used - declared


def test_compute_view_times_execution_alone(onnx_file, tmp_path, facenet_lfw):
    """The compute-only view uploads once, then times executions without copies (as the deployment's FPS)."""
    from harness import bench

    engine, rec = make("tensor", onnx_file, tmp_path, batch=64)
    case = bench.Case("compute", 8)
    m = bench.measure(engine, facenet_lfw, case, bench.Settings(warmup_s=0.0, min_duration_s=0.0, min_rounds=3, max_attempts=1))
    assert len(m.latencies) == 3
    htod = [c for c in rec.calls if c[1] == "htod"]
    executes = [c for c in rec.calls if c[1] == "execute_async_v3"]
    assert len(htod) == 1 and len(executes) == 1 + 3  # one upload; one warm-up call (it sizes the rounds), 3 timed
    np.testing.assert_array_equal(m.last_output, expected(facenet_lfw.batch(m.indices)))  # TEST01 on the device result


def test_close_frees_device_memory_and_refuses_further_runs(onnx_file, tmp_path):
    engine, rec = make("tensor", onnx_file, tmp_path, batch=64)
    with engine:
        engine.run(rows(2))
    freed = [c for c in rec.calls if c[1] == "free"]
    assert sorted(c[2] for c in freed) == sorted([64 * ROW_IN * 4, 64 * ROW_OUT * 4])
    assert ("cuda", "free_stream") in rec.calls
    engine.close()  # idempotent: nothing freed twice
    assert len([c for c in rec.calls if c[1] == "free"]) == 2
    with pytest.raises(HarnessError, match="the engine was closed"):
        engine.run(rows(1))


def test_binding_path_waits_for_the_copy_before_execute_v2(onnx_file, tmp_path):
    engine, rec = make("binding", onnx_file, tmp_path)
    engine.run(rows(3))
    m = rec.methods()
    assert m.index(("cuda", "sync")) < m.index(("context", "execute_v2"))  # execute_v2 is not on our stream


def test_unknown_engine_option_is_refused(onnx_file, tmp_path):
    with pytest.raises(HarnessError, match="engine 'tensorrt' has no option int8_format"):
        make("tensor", onnx_file, tmp_path, int8_format="qop-u8s8")
