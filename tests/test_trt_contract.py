"""The TensorRT/IxRT builder and runner against fakes built from the real bindings' API surface.

tests/data/tensorrt_api/*.json are extracted from the real wheels by tools/extract_trt_api.py:
TensorRT 8.6 (``tensorrt-bindings``; IxRT mirrors its binding API, and no IxRT wheel is on PyPI),
TensorRT 10.16 (``tensorrt-cu12-bindings``), TensorRT 11.4 (``tensorrt-cu13-bindings``) and
cuda-bindings 12.9. Every fake class here has exactly the members its real counterpart has: a
member the real bindings lack is absent (AttributeError), a call whose argument count matches none
of the real pybind11 signatures fails, and a real member the fake has no behaviour for fails when
used. The fakes pin the API contract (call sequence, flags, shapes, buffers, lifetimes); they
compute nothing FaceNet-like and are never presented as an engine.
"""

import ctypes
import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from harness.core.errors import HarnessError
from harness.engines import EngineContext, EngineUnavailable
from harness.engines import cuda as cuda_mod
from harness.engines import tensorrt as trt_engine
from harness.model import ModelInfo
from harness.store import cache

ROW_IN, ROW_OUT = 3 * 160 * 160, 512
API = Path(__file__).parent / "data" / "tensorrt_api"
TRT_FIXTURES = {"8.6": "IxRT / TensorRT 8 binding API", "10.x": "TensorRT 10", "11.x": "TensorRT 11"}


def surface(name: str) -> dict:
    return json.loads((API / f"{name}.json").read_text())


# --- fakes derived from a fixture ------------------------------------------------------------------


def _params(signature: str) -> tuple[int, int]:
    """(required, total) arguments after self of one pybind11 / Cython signature line."""
    inner = signature[signature.index("(") + 1 : signature.rindex(")")]
    parts, depth, cur = [], 0, ""
    for ch in inner:
        depth += ch in "[(<" and 1 or (ch in "])>" and -1 or 0)
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts = [p for p in parts + [cur.strip()] if p and p not in ("*", "/")]
    if parts and parts[0].split(":")[0].strip() == "self":
        parts = parts[1:]
    return sum("=" not in p for p in parts), len(parts)


def _checked(where: str, signatures: list[str], fn):
    """``fn`` refusing a call whose argument count fits none of the real signatures."""
    arities = [_params(s) for s in signatures]

    def call(*args, **kwargs):
        n = len(args) - 1 + len(kwargs)  # args[0] is self
        assert not arities or any(lo <= n <= hi for lo, hi in arities), (
            f"{where} called with {n} argument(s); the real bindings take {signatures}"
        )
        return fn(*args, **kwargs)

    return call


def _missing(where: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"{where} exists in the real bindings, but this fake gives it no behaviour")

    return fail


def real_class(api: dict, cls: str, behaviour: dict, drop=()):
    """A class with exactly the members of ``cls`` in the fixture; ``behaviour`` fills in those used."""
    members = api["classes"][cls]
    extra = set(behaviour) - set(members)
    attrs = {}
    for name, info in members.items():
        if name in drop or (name == "__init__" and name not in behaviour):
            continue  # objects the SDK itself returns: the fake constructs them without arguments
        where = f"{cls}.{name} ({api['source']['package']} {api['source']['version']})"
        impl = behaviour.get(name)
        if info["kind"] == "method":
            attrs[name] = _checked(where, info["signatures"], impl or _missing(where))
        elif info["kind"] == "property":
            getter = (
                impl
                if callable(impl)
                else (lambda v: lambda self: v)(impl)
                if impl is not None
                else (lambda w: lambda self: _missing(w)())(where)
            )

            def setter(self, value, name=name):
                self.__dict__[f"_set_{name}"] = value
                behaviour.get("__set__", lambda *a: None)(self, name, value)

            attrs[name] = property(getter, setter if info["settable"] else None)
        else:  # a class-level attribute such as Logger.WARNING
            attrs[name] = impl if impl is not None else types.SimpleNamespace(name=name)
    # behaviour for a member the real class lacks is simply not installed: using it is an AttributeError
    attrs["_fake_extra"] = sorted(extra - {"__set__"})

    def setattr_(self, name, value):
        if name not in members and name != "state":  # 'state': the fake context's own bookkeeping
            raise AttributeError(f"{cls} of {api['source']['package']} {api['source']['version']} has no {name!r}")
        object.__setattr__(self, name, value)

    attrs["__setattr__"] = setattr_
    return type(cls, (), attrs)


class Member:
    """An enum member: ``name`` and an int value, like a pybind11 enum."""

    def __init__(self, name, value):
        self.name, self.value = name, value

    def __int__(self):
        return self.value

    def __repr__(self):
        return self.name


def real_enum(api: dict, name: str, drop=()):
    return types.SimpleNamespace(**{m: Member(m, i) for i, m in enumerate(api["enums"][name]) if m not in drop})


class Rec:
    def __init__(self):
        self.calls = []

    def __call__(self, obj, method, *args):
        self.calls.append((obj, method) + args)

    def methods(self):
        return [(o, m) for o, m, *_ in self.calls]


def view(ptr: int, nbytes: int) -> np.ndarray:
    """The bytes at a (fake device or pinned host) address."""
    return np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(ptr))


class FakeCuda:
    """The harness's Cuda interface over host memory: 'device' buffers are numpy arrays at real addresses."""

    def __init__(self, rec, device=None):
        self.rec, self.mem, self.live = rec, {}, {"alloc": 0, "pinned": 0, "event": 0, "stream": 0}
        self.info = device or {"device": "Fake GPU", "driver": "12040", "compute_capability": "9.0"}
        self.closed = False

    def device(self):
        return dict(self.info)

    def alloc(self, nbytes):
        buf = np.zeros(int(nbytes), np.uint8)
        self.mem[buf.ctypes.data] = buf
        self.live["alloc"] += 1
        self.rec("cuda", "alloc", int(nbytes))
        return buf.ctypes.data

    def free(self, ptr):
        self.live["alloc"] -= 1
        self.rec("cuda", "free", self.mem.pop(ptr).nbytes)

    def ptr(self, buf):
        return buf

    def pinned(self, shape, dtype):
        self.live["pinned"] += 1
        arr = np.empty(shape, dtype)
        arr.flags.writeable = True
        self.rec("cuda", "pinned", arr.nbytes)
        return arr

    def free_pinned(self, arr):
        self.live["pinned"] -= 1
        self.rec("cuda", "free_pinned", arr.nbytes)

    def stream(self):
        self.live["stream"] += 1
        return "stream0"

    def stream_handle(self, stream):
        return 77

    def free_stream(self, stream):
        self.live["stream"] -= 1
        self.rec("cuda", "free_stream")

    def htod(self, buf, host, stream):
        assert host.nbytes <= self.mem[buf].nbytes, "host->device copy overflows the device buffer"
        self.mem[buf][: host.nbytes] = np.frombuffer(np.ascontiguousarray(host).tobytes(), np.uint8)
        self.rec("cuda", "htod", host.nbytes)

    def dtoh(self, host, buf, stream):
        assert host.nbytes <= self.mem[buf].nbytes
        assert host.flags.c_contiguous
        host.reshape(-1).view(np.uint8)[:] = self.mem[buf][: host.nbytes]
        self.rec("cuda", "dtoh", host.nbytes)

    def sync(self, stream):
        self.rec("cuda", "sync")

    def event(self):
        self.live["event"] += 1
        self.rec("cuda", "event")
        return object()

    def destroy_event(self, event):
        self.live["event"] -= 1
        self.rec("cuda", "destroy_event")

    def record(self, event, stream):
        pass

    def elapsed_ms(self, a, b):
        return 0.25

    def close(self):
        self.closed = True
        self.rec("cuda", "close")


def fake_sdk(fixture, rec, cuda, *, batch=None, parse_errors=(), build_none=False, drop=None):
    """A tensorrt module with exactly the API surface of ``fixture`` (8.6, 10.x, 11.x).

    ``drop`` ({class: [members]}) removes real members, to stand for an SDK that lacks them. The
    'engine' copies each input row's first 512 values to the output row: enough to see rows, shapes
    and buffers go where they should."""
    api = surface(fixture)
    drop = drop or {}
    in_shape = (batch or -1, 3, 160, 160)
    sdk = types.ModuleType("tensorrt")
    enums = {e: real_enum(api, e, drop.get(e, ())) for e in api["enums"]}
    tensor_mode, data_type = enums["TensorIOMode"], enums["DataType"]

    def cls(name, behaviour):
        return real_class(api, name, behaviour, drop.get(name, ()))

    Tensor = cls("ITensor", {"name": "input", "shape": in_shape})
    Network = cls("INetworkDefinition", {"get_input": lambda self, i: (rec("network", "get_input", i), Tensor())[1]})

    def parser_init(self, network, logger):
        rec("trt", "OnnxParser")

    Parser = cls(
        "OnnxParser",
        {
            "__init__": parser_init,
            "parse": lambda self, data, *a: (rec("parser", "parse", len(data)), not parse_errors)[1],
            "num_errors": lambda self: (rec("parser", "num_errors"), len(parse_errors))[1],
            "get_error": lambda self, i: (rec("parser", "get_error", i), parse_errors[i])[1],
        },
    )
    Config = cls(
        "IBuilderConfig",
        {
            "set_flag": lambda self, flag: rec("config", "set_flag", flag.name),
            "clear_flag": lambda self, flag: rec("config", "clear_flag", flag.name),
            "set_memory_pool_limit": lambda self, pool, size: rec("config", "set_memory_pool_limit", pool.name, size),
            "add_optimization_profile": lambda self, p: (rec("config", "add_optimization_profile"), 0)[1],
            "__set__": lambda self, k, v: rec("config", f"set {k}", v),
        },
    )
    Profile = cls(
        "IOptimizationProfile",
        {"set_shape": lambda self, name, lo, opt, hi: rec("profile", "set_shape", name, lo, opt, hi)},
    )

    def builder_init(self, logger):
        rec("trt", "Builder")

    Builder = cls(
        "Builder",
        {
            "__init__": builder_init,
            "create_network": lambda self, flags=0: (rec("builder", "create_network", flags), Network())[1],
            "create_builder_config": lambda self: (rec("builder", "create_builder_config"), Config())[1],
            "create_optimization_profile": lambda self: (rec("builder", "create_optimization_profile"), Profile())[1],
            "build_serialized_network": lambda self, network, config: (
                rec("builder", "build_serialized_network"),
                None if build_none else b"PLAN" + fixture.encode(),
            )[1],
        },
    )

    class State:
        shape, addr = None, {}

    def compute(self, n, src, dst):
        x = view(src, n * ROW_IN * 4).view(np.float32).reshape(n, ROW_IN)
        view(dst, n * ROW_OUT * 4).view(np.float32)[:] = x[:, :ROW_OUT].reshape(-1)

    def set_input_shape(self, name, shape):
        rec("context", "set_input_shape", name, tuple(shape))
        self.state.shape = tuple(shape)
        return True

    def set_tensor_address(self, name, ptr):
        rec("context", "set_tensor_address", name)
        self.state.addr[name] = ptr
        return True

    def execute_async_v3(self, stream_handle):
        rec("context", "execute_async_v3", stream_handle)
        self._compute(self.state.shape[0], self.state.addr["input"], self.state.addr["embeddings"])
        return True

    def set_binding_shape(self, i, shape):
        rec("context", "set_binding_shape", i, tuple(shape))
        self.state.shape = tuple(shape)
        return True

    def execute_v2(self, bindings):
        rec("context", "execute_v2", len(bindings))
        self._compute(self.state.shape[0] if self.state.shape else batch, bindings[0], bindings[1])
        return True

    def execute_async_v2(self, bindings, stream_handle, *a):
        rec("context", "execute_async_v2", len(bindings), stream_handle)
        self._compute(self.state.shape[0] if self.state.shape else batch, bindings[0], bindings[1])
        return True

    Context = cls(
        "IExecutionContext",
        {
            "set_input_shape": set_input_shape,
            "set_tensor_address": set_tensor_address,
            "execute_async_v3": execute_async_v3,
            "set_binding_shape": set_binding_shape,
            "execute_v2": execute_v2,
            "execute_async_v2": execute_async_v2,
        },
    )
    Context._compute = compute

    def new_context(self):
        ctx = Context()
        ctx.state = State()
        ctx.state.addr = {}
        return ctx

    names = ["input", "embeddings"]
    shape_of = {"input": in_shape, "embeddings": (batch or -1, 512)}
    Engine = cls(
        "ICudaEngine",
        {
            "num_io_tensors": 2,
            "num_bindings": 2,
            "get_tensor_name": lambda self, i: names[i],
            "get_tensor_mode": lambda self, n: tensor_mode.INPUT if n == "input" else tensor_mode.OUTPUT,
            "get_tensor_shape": lambda self, n: shape_of[n],
            "get_tensor_dtype": lambda self, n: data_type.FLOAT,
            "get_binding_name": lambda self, i: names[i],
            "binding_is_input": lambda self, i: i == 0,
            "get_binding_shape": lambda self, i: shape_of[names[i]],
            "get_binding_dtype": lambda self, i: data_type.FLOAT,
            "create_execution_context": new_context,
        },
    )

    def runtime_init(self, logger):
        rec("trt", "Runtime")

    Runtime = cls(
        "Runtime",
        {
            "__init__": runtime_init,
            "deserialize_cuda_engine": lambda self, plan: (rec("runtime", "deserialize_cuda_engine", plan), Engine())[
                1
            ],
        },
    )

    def logger_init(self, min_severity=None):
        rec("trt", "Logger", min_severity)

    severity = Member("WARNING", 2)
    Logger = cls("Logger", {"__init__": logger_init, "WARNING": severity})
    provided = {
        "Builder": Builder,
        "OnnxParser": Parser,
        "Runtime": Runtime,
        "Logger": Logger,
        "init_libnvinfer_plugins": lambda logger, namespace: (rec("trt", "init_libnvinfer_plugins", namespace), True)[
            1
        ],
        **enums,
        "__version__": api.get("version_attribute", api["source"]["version"]),
    }
    for name in api["module"]:
        if name in provided and name not in drop.get("module", ()):
            setattr(sdk, name, provided[name])
    sdk.__file__ = f"/nonexistent/{fixture}/tensorrt/__init__.py"
    sdk.fake_extra = {
        c.__name__: c._fake_extra
        for c in (Tensor, Network, Parser, Config, Profile, Builder, Context, Engine, Runtime, Logger)
    }
    return sdk


# --- helpers -----------------------------------------------------------------------------------------


@pytest.fixture
def onnx_file(tmp_path):
    p = tmp_path / "facenet.onnx"
    p.write_bytes(b"fake onnx bytes: the fake parser only counts them")
    return p


def info(path, batch):
    return ModelInfo(path, cache.sha256_file(path), "input", "embeddings", batch, None, None, True)


def make(
    fixture,
    onnx_file,
    tmp_path,
    batch=None,
    device=None,
    parse_errors=(),
    build_none=False,
    precision="fp16",
    engine_cls=trt_engine.TensorRTEngine,
    drop=None,
    dataset=None,
    **options,
):
    rec = Rec()
    cuda = FakeCuda(rec, device)
    sdk = fake_sdk(fixture, rec, cuda, batch=batch, parse_errors=parse_errors, build_none=build_none, drop=drop)
    engine = engine_cls(
        info(onnx_file, batch), precision, EngineContext(tmp_path / "cache", dataset), sdk=sdk, cuda=cuda, **options
    )
    return engine, rec


def rows(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 160, 160)).astype(np.float32)


def expected(x):
    return x.reshape(len(x), -1)[:, :512]


def build_calls(rec):
    m = rec.methods()
    return m[m.index(("trt", "Builder")) : m.index(("builder", "build_serialized_network")) + 1]


def flags(rec):
    return [(m, c[2]) for c in rec.calls for m in ("set_flag", "clear_flag") if c[1] == m]


# --- the fixtures themselves -------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", [*TRT_FIXTURES, "cuda-bindings-12.x"])
def test_fixtures_record_their_wheel(fixture):
    src = surface(fixture)["source"]
    assert re.fullmatch(r"[0-9a-f]{64}", src["sha256"]) and src["wheel"].endswith(".whl")
    assert src["extracted_by"] == "tools/extract_trt_api.py"


def test_what_the_sdks_really_offer():
    """The facts the builder's two paths rest on, as the real bindings state them."""
    t8, t10, t11 = (surface(f) for f in TRT_FIXTURES)
    for api in (t8, t10):
        assert {"FP16", "INT8", "TF32"} <= set(api["enums"]["BuilderFlag"])
    assert "TF32" in t11["enums"]["BuilderFlag"]  # TF32 survives in TensorRT 11, FP16/INT8/BF16 do not
    assert not {"FP16", "INT8", "BF16"} & set(t11["enums"]["BuilderFlag"])
    assert "STRONGLY_TYPED" in t11["enums"]["NetworkDefinitionCreationFlag"]
    assert "EXPLICIT_BATCH" not in t11["enums"]["NetworkDefinitionCreationFlag"]
    assert "execute_async_v2" in t8["classes"]["IExecutionContext"]  # the TensorRT 8 binding API (IxRT)
    assert (
        "num_bindings" not in t10["classes"]["ICudaEngine"]
        and "execute_async_v2" not in t11["classes"]["IExecutionContext"]
    )


@pytest.mark.parametrize(
    "fixture, typing, api", [("8.6", "weak", "binding"), ("10.x", "weak", "tensor"), ("11.x", "strong", "tensor")]
)
def test_declared_api_of_each_path_exists_in_the_real_bindings(fixture, typing, api):
    """BUILD_API / RUN_API of the path a generation takes name only members its real bindings have."""
    real = surface(fixture)
    declared = [trt_engine.BUILD_API["common"], trt_engine.BUILD_API[typing], trt_engine.RUN_API[api]]
    if fixture != "8.6" or "set_memory_pool_limit" in real["classes"]["IBuilderConfig"]:
        declared.append(trt_engine.BUILD_API["memory_pools"])
    missing = []
    for part in declared:
        for owner, names in part.items():
            have = (
                set(real["module"])
                if owner == "module"
                else (set(real["enums"][owner]) if owner in real["enums"] else set(real["classes"].get(owner, ())))
            )
            missing += [f"{owner}.{n}" for n in names if n not in have]
    assert not missing, f"not in {real['source']['wheel']}: {missing}"


@pytest.mark.parametrize("fixture", list(TRT_FIXTURES))
def test_fake_behaviour_only_for_real_members(fixture, tmp_path):
    """A behaviour written for a member the real class lacks would never be reached: none is."""
    sdk = fake_sdk(fixture, Rec(), FakeCuda(Rec()))
    expected_extra = {
        "8.6": {"IExecutionContext": [], "ICudaEngine": []},
        "10.x": {
            "IExecutionContext": ["execute_async_v2", "set_binding_shape"],
            "ICudaEngine": [
                "binding_is_input",
                "get_binding_dtype",
                "get_binding_name",
                "get_binding_shape",
                "num_bindings",
            ],
        },
        "11.x": {
            "IExecutionContext": ["execute_async_v2", "set_binding_shape"],
            "ICudaEngine": [
                "binding_is_input",
                "get_binding_dtype",
                "get_binding_name",
                "get_binding_shape",
                "num_bindings",
            ],
        },
    }[fixture]
    for cls, extra in sdk.fake_extra.items():
        assert extra == expected_extra.get(cls, []), (cls, extra)


def test_a_member_the_real_bindings_lack_fails():
    sdk = fake_sdk("11.x", Rec(), FakeCuda(Rec()))
    with pytest.raises(AttributeError):
        _ = sdk.BuilderFlag.FP16
    config = sdk.Builder(sdk.Logger()).create_builder_config()
    with pytest.raises(AttributeError):
        config.max_workspace_size = 1
    with pytest.raises(AssertionError, match="the real bindings take"):
        config.set_memory_pool_limit(sdk.MemoryPoolType.WORKSPACE)  # a wrong argument count


# --- the builder per generation ----------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_11_is_strongly_typed(onnx_file, tmp_path, precision, monkeypatch):
    """No FP16/INT8 builder flag is touched; FP16 comes from the FP16 ONNX; FP32 clears TF32."""
    fp16_onnx = tmp_path / "fp16.onnx"
    fp16_onnx.write_bytes(b"an fp16 model")
    asked = []
    monkeypatch.setattr(trt_engine.quantize_, "fp16_model", lambda m, d: asked.append(m.path) or fp16_onnx)
    engine, rec = make("11.x", onnx_file, tmp_path, batch=64, precision=precision)
    assert engine.typing == "strong" and engine.api == "tensor"
    assert ("builder", "create_network", 0) in rec.calls  # strong typing is always on; no creation flag
    if precision == "fp32":
        assert flags(rec) == [("clear_flag", "TF32")] and not asked
        assert engine.describe()["tf32"] is False
    else:
        assert flags(rec) == [] and asked == [onnx_file]
        assert ("parser", "parse", len(b"an fp16 model")) in rec.calls  # the FP16 ONNX was built
    assert engine.describe()["typing"] == "strong"
    x = rows(5, 1)
    np.testing.assert_array_equal(engine.run(x), expected(x))


@pytest.mark.parametrize("precision, expect", [("fp32", [("clear_flag", "TF32")]), ("fp16", [("set_flag", "FP16")])])
def test_tensorrt_10_keeps_builder_flags(onnx_file, tmp_path, precision, expect):
    engine, rec = make("10.x", onnx_file, tmp_path, batch=64, precision=precision)
    assert engine.typing == "weak" and engine.api == "tensor"
    assert flags(rec) == expect
    assert build_calls(rec) == [
        ("trt", "Builder"),
        ("builder", "create_network"),
        ("trt", "OnnxParser"),
        ("parser", "parse"),
        ("builder", "create_builder_config"),
        ("config", "set_memory_pool_limit"),
        (("config", "clear_flag") if precision == "fp32" else ("config", "set_flag")),
        ("network", "get_input"),
        ("builder", "build_serialized_network"),
    ]
    assert ("config", "set_memory_pool_limit", "WORKSPACE", 1 << 30) in rec.calls
    assert ("builder", "create_optimization_profile") not in rec.methods()  # a static engine needs no profile


@pytest.fixture
def int8_models(tmp_path, monkeypatch):
    """quantize.tensorrt_int8_model replaced by a recorder of its arguments (the model itself:
    tests/test_quantize.py)."""
    qdq = tmp_path / "qdq.onnx"
    qdq.write_bytes(b"a QDQ model")
    asked = []

    def tensorrt_int8_model(source, dataset, cache_dir, calibration):
        asked.append((source.path, dataset, calibration.format))
        return qdq

    monkeypatch.setattr(trt_engine.quantize_, "tensorrt_int8_model", tensorrt_int8_model)
    return asked


@pytest.mark.parametrize(
    "fixture, expect",
    [
        ("11.x", []),
        ("10.x", [("set_flag", "FP16"), ("set_flag", "INT8")]),
        ("8.6", [("set_flag", "FP16"), ("set_flag", "INT8")]),
    ],
)
def test_int8_is_built_from_the_qdq_model(onnx_file, tmp_path, int8_models, fixture, expect):
    dataset = object()
    engine, rec = make(fixture, onnx_file, tmp_path, batch=64, precision="int8", dataset=dataset)
    assert int8_models == [(onnx_file, dataset, trt_engine.quantize_.TRT_INT8_FORMAT)]
    assert ("parser", "parse", len(b"a QDQ model")) in rec.calls
    assert flags(rec) == expect


def test_int8_without_calibration_data_is_a_clear_error(onnx_file, tmp_path, int8_models):
    with pytest.raises(HarnessError, match="INT8 needs calibration images"):
        make("11.x", onnx_file, tmp_path, batch=64, precision="int8")


def test_unknown_sdk_generation_is_refused_clearly(onnx_file, tmp_path):
    """An SDK with neither builder precision flags nor strong typing: EngineUnavailable (exit 2), nothing built."""
    with pytest.raises(EngineUnavailable, match="unknown TensorRT SDK generation") as err:
        make("11.x", onnx_file, tmp_path, batch=64, drop={"NetworkDefinitionCreationFlag": ["STRONGLY_TYPED"]})
    assert "tools/extract_trt_api.py" in str(err.value)
    assert not (tmp_path / "cache" / "engines").exists()


def test_unknown_sdk_generation_exits_2_from_the_cli(monkeypatch, capsys, onnx_file, tmp_path):
    """The CLI turns it into its user-error exit (2) and a one-line message, not a traceback (exit 1)."""
    from harness import cli

    bad = {"NetworkDefinitionCreationFlag": ["STRONGLY_TYPED"]}
    monkeypatch.setitem(cli.COMMANDS, "engines", lambda args: make("11.x", onnx_file, tmp_path, drop=bad))
    assert cli.main(["engines"]) == 2
    err = capsys.readouterr().err
    assert "unknown TensorRT SDK generation" in err and "Traceback" not in err


# --- the runner ---------------------------------------------------------------------------------------


def test_named_tensor_api_static_batch(onnx_file, tmp_path):
    engine, rec = make("10.x", onnx_file, tmp_path, batch=64)
    assert [c for c in rec.calls if c[1] == "alloc"] == [
        ("cuda", "alloc", 64 * ROW_IN * 4),
        ("cuda", "alloc", 64 * ROW_OUT * 4),
    ]
    first, second = rows(64, 1), rows(5, 2)
    np.testing.assert_array_equal(engine.run(first), expected(first))
    rec.calls.clear()
    out = engine.run(second)  # a partial batch after a full one: no stale rows
    np.testing.assert_array_equal(out, expected(second))
    assert ("context", "set_input_shape", "input", (64, 3, 160, 160)) in rec.calls
    assert ("context", "execute_async_v3", 77) in rec.calls
    assert {c[2] for c in rec.calls if c[1] == "set_tensor_address"} == {"input", "embeddings"}
    assert engine.timings == {"h2d_ms": 0.25, "compute_ms": 0.25, "d2h_ms": 0.25}
    assert ("cuda", "event") not in rec.methods()  # events are made once per engine, not per batch


def test_ixrt_binding_api_on_the_harness_stream(onnx_file, tmp_path):
    """IxRT (the TensorRT 8 binding API): bindings by index, execute_async_v2 on the harness stream."""
    engine, rec = make("8.6", onnx_file, tmp_path, engine_cls=trt_engine.IxRTEngine, static_batch=0)
    assert engine.api == "binding" and engine.typing == "weak"
    assert ("profile", "set_shape", "input", (1, 3, 160, 160), (64, 3, 160, 160), (64, 3, 160, 160)) in rec.calls
    x = rows(70, 3)  # more than the profile's max: split into 64 + 6
    np.testing.assert_array_equal(engine.run(x), expected(x))
    assert [c[3] for c in rec.calls if c[1] == "set_binding_shape"] == [(64, 3, 160, 160), (6, 3, 160, 160)]
    assert [c for c in rec.calls if c[1] == "execute_async_v2"] == [("context", "execute_async_v2", 2, 77)] * 2
    assert "execute_v2" not in [c[1] for c in rec.calls]
    assert [c[2] for c in rec.calls if c[1] == "htod"] == [64 * ROW_IN * 4, 6 * ROW_IN * 4]


def test_binding_path_without_async_syncs_before_execute_v2(onnx_file, tmp_path):
    """An IxRT release without execute_async_v2: the copy-in is waited for before execute_v2."""
    engine, rec = make(
        "8.6",
        onnx_file,
        tmp_path,
        engine_cls=trt_engine.IxRTEngine,
        drop={"IExecutionContext": ["execute_async_v2"], "IBuilderConfig": ["set_memory_pool_limit"]},
        static_batch=0,
    )
    assert ("config", "set max_workspace_size", 1 << 30) in rec.calls  # no memory pools in such a release
    rec.calls.clear()
    x = rows(3)
    np.testing.assert_array_equal(engine.run(x), expected(x))
    m = rec.methods()
    assert m.index(("cuda", "htod")) < m.index(("cuda", "sync")) < m.index(("context", "execute_v2"))


def test_tensorrt_engine_on_tensorrt_8_uses_named_tensors(onnx_file, tmp_path):
    engine, _ = make("8.6", onnx_file, tmp_path, batch=64)
    assert engine.api == "tensor"


def test_parser_errors_are_all_reported(onnx_file, tmp_path):
    with pytest.raises(HarnessError, match=r"2 error\(s\):\n  Unsupported op Foo\n  bad shape") as err:
        make("11.x", onnx_file, tmp_path, parse_errors=("Unsupported op Foo", "bad shape"), precision="fp32")
    assert str(onnx_file) in str(err.value)


def test_failed_build_is_refused_and_nothing_leaks(onnx_file, tmp_path, monkeypatch):
    rec = Rec()
    cuda = FakeCuda(rec)
    monkeypatch.setattr(trt_engine, "Cuda", lambda: cuda)  # the engine makes (and so owns) its Cuda
    sdk = fake_sdk("10.x", rec, cuda, build_none=True)
    with pytest.raises(HarnessError, match="engine build returned nothing"):
        trt_engine.TensorRTEngine(info(onnx_file, None), "fp16", EngineContext(tmp_path / "cache"), sdk=sdk)
    assert not list((tmp_path / "cache" / "engines").glob("*.plan"))
    assert cuda.closed and not any(cuda.live.values())


def test_engine_cache_is_keyed_by_driver_sdk_typing_and_tf32(onnx_file, tmp_path):
    _, rec = make("10.x", onnx_file, tmp_path, batch=64)
    assert ("builder", "build_serialized_network") in rec.methods()
    _, rec = make("10.x", onnx_file, tmp_path, batch=64)
    assert ("builder", "build_serialized_network") not in rec.methods()  # reused
    upgraded = {"device": "Fake GPU", "driver": "12050", "compute_capability": "9.0"}
    _, rec = make("10.x", onnx_file, tmp_path, batch=64, device=upgraded)
    assert ("builder", "build_serialized_network") in rec.methods()  # a driver upgrade rebuilds
    plans = list((tmp_path / "cache" / "engines").glob("*.plan"))
    assert len(plans) == 2
    plans[0].write_bytes(b"corrupt")  # a damaged plan is rebuilt, not loaded
    for device in (None, upgraded):
        make("10.x", onnx_file, tmp_path, batch=64, device=device)
    assert all(json.loads(p.with_suffix(".json").read_text())["sha256"] == cache.sha256_file(p) for p in plans)
    spec = trt_engine.BuildSpec(onnx_file, "fp32", 64)
    keys = {
        trt_engine.engine_key(s, "10.16", {})
        for s in (
            spec,
            trt_engine.BuildSpec(onnx_file, "fp32", 64, typing="strong"),
            trt_engine.BuildSpec(onnx_file, "fp16", 64),
        )
    }
    assert len(keys) == 3 and not spec.tf32


def test_lent_cuda_is_left_open(onnx_file, tmp_path):
    engine, _ = make("11.x", onnx_file, tmp_path, batch=64, precision="fp32")
    engine.close()
    assert not engine.cuda.closed and not any(engine.cuda.live.values())


def test_close_releases_everything_once(onnx_file, tmp_path, monkeypatch):
    rec = Rec()
    cuda = FakeCuda(rec)
    monkeypatch.setattr(trt_engine, "Cuda", lambda: cuda)
    engine = trt_engine.TensorRTEngine(
        info(onnx_file, 64), "fp32", EngineContext(tmp_path / "cache"), sdk=fake_sdk("11.x", rec, cuda, batch=64)
    )
    with engine:
        engine.run(rows(2))
        assert all(cuda.live[k] > 0 for k in ("alloc", "pinned", "event", "stream"))
    assert cuda.live == {"alloc": 0, "pinned": 0, "event": 0, "stream": 0} and cuda.closed
    n = len(rec.calls)
    engine.close()  # idempotent: nothing released twice
    assert len(rec.calls) == n
    with pytest.raises(HarnessError, match="the engine was closed"):
        engine.run(rows(1))


def test_close_after_a_device_error_still_releases_everything(onnx_file, tmp_path, monkeypatch):
    """A sticky CUDA error makes the stream sync fail: every other resource is still released, the engine
    counts as closed, and the error is raised once, saying what failed."""
    rec = Rec()
    cuda = FakeCuda(rec)
    monkeypatch.setattr(trt_engine, "Cuda", lambda: cuda)
    engine = trt_engine.TensorRTEngine(
        info(onnx_file, 64), "fp32", EngineContext(tmp_path / "cache"), sdk=fake_sdk("11.x", rec, cuda, batch=64)
    )
    engine.run(rows(2))

    def sticky(stream):
        raise RuntimeError("cudaErrorIllegalAddress")

    monkeypatch.setattr(cuda, "sync", sticky)
    with pytest.raises(HarnessError, match="stream sync: RuntimeError: cudaErrorIllegalAddress"):
        engine.close()
    assert engine.closed and cuda.closed
    assert cuda.live == {"alloc": 0, "pinned": 0, "event": 0, "stream": 0}


def test_compute_view_times_execution_alone(onnx_file, tmp_path, facenet_lfw):
    """The compute-only view uploads once, then times executions without copies (as the deployment's FPS)."""
    from harness.checks import throughput

    engine, rec = make("10.x", onnx_file, tmp_path, batch=64)
    case = throughput.Case("compute", 8)
    m = throughput.measure(
        engine, facenet_lfw, case, throughput.Settings(warmup_s=0.0, min_duration_s=0.0, min_rounds=3, max_attempts=1)
    )
    assert len(m.latencies) == 3
    htod = [c for c in rec.calls if c[1] == "htod"]
    executes = [c for c in rec.calls if c[1] == "execute_async_v3"]
    assert len(htod) == 1 and len(executes) == 1 + 3  # one upload; one warm-up call (it sizes the rounds), 3 timed
    np.testing.assert_array_equal(m.last_output, expected(facenet_lfw.batch(m.indices)))  # TEST01 on the device result


def test_unknown_engine_option_is_refused(onnx_file, tmp_path):
    with pytest.raises(HarnessError, match="engine 'tensorrt' has no option int8_format"):
        make("10.x", onnx_file, tmp_path, int8_format="qop-u8s8")


# --- loading the SDK -----------------------------------------------------------------------------------


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


def test_gpu_less_machine_is_unavailable_with_the_reason(sdk_import, monkeypatch):
    """SDK and binding installed but no device: availability() says why (a skip), nothing raises."""
    (sdk_import / "tensorrt").mkdir(parents=True)
    (sdk_import / "tensorrt" / "__init__.py").write_text("")
    rt = fake_cudart(Rec(), device_count=0, count_error=35)  # what cuda-bindings answers without a driver
    monkeypatch.setattr(trt_engine, "binding_available", lambda: "cuda")
    monkeypatch.setattr(cuda_mod, "_import_binding", lambda: ("cuda-python", rt))
    monkeypatch.setattr(cuda_mod, "cuda_driver_api_version", lambda: None)  # no driver on this machine
    avail = trt_engine.TensorRTEngine.availability()
    assert not avail and avail.why.startswith("no usable CUDA device: cudaGetDeviceCount returned cudaError35")
    with pytest.raises(EngineUnavailable, match="cudaError35"):
        cuda_mod.Cuda()


def test_unavailable_sdk_names_what_is_missing():
    avail = trt_engine.TensorRTEngine.availability()
    if avail:
        pytest.skip("TensorRT and a GPU are present here")
    assert ("tensorrt" in avail.why and "install" in avail.why) or "CUDA" in avail.why


# --- CUDA: cuda-python (fixture-derived) and pycuda ----------------------------------------------------


class CudaError(int):
    @property
    def name(self):
        return "cudaSuccess" if self == 0 else f"cudaError{int(self)}"


def fake_cudart(rec, *, device_count=1, count_error=0):
    """cuda.bindings.runtime with exactly the functions of cuda-bindings 12.9; memory is host memory."""
    api = surface("cuda-bindings-12.x")
    host = {}

    def ret(name, *values):
        out = (CudaError(0), *values)
        assert len(out) == len(api["functions"][name]["returns"]), (name, api["functions"][name]["returns"])
        return out

    def malloc(kind):
        def alloc(size):
            buf = np.zeros(size, np.uint8)
            host[buf.ctypes.data] = buf
            rec("cudart", kind, size)
            return ret(kind, buf.ctypes.data)

        return alloc

    def free(kind):
        def release(ptr):
            host.pop(int(ptr))
            rec("cudart", kind)
            return ret(kind)

        return release

    def memcpy(dst, src, count, kind, stream):
        ctypes.memmove(int(dst), int(src), count)
        rec("cudart", "cudaMemcpyAsync", kind.name)
        return ret("cudaMemcpyAsync")

    handles = iter(range(1000, 10**6))

    def create(kind):
        return lambda: (rec("cudart", kind), ret(kind, next(handles)))[1]

    def destroy(kind):
        return lambda h: (rec("cudart", kind), ret(kind))[1]

    props = types.SimpleNamespace(name=b"Fake GPU\0\0", major=9, minor=0)
    behaviour = {
        "cudaGetDeviceCount": lambda: (rec("cudart", "cudaGetDeviceCount"), (CudaError(count_error), device_count))[1],
        "cudaGetDeviceProperties": lambda device: ret("cudaGetDeviceProperties", props),
        "cudaDriverGetVersion": lambda: ret("cudaDriverGetVersion", 12080),
        "cudaMalloc": malloc("cudaMalloc"),
        "cudaFree": free("cudaFree"),
        "cudaMallocHost": malloc("cudaMallocHost"),
        "cudaFreeHost": free("cudaFreeHost"),
        "cudaStreamCreate": create("cudaStreamCreate"),
        "cudaStreamDestroy": destroy("cudaStreamDestroy"),
        "cudaEventCreate": create("cudaEventCreate"),
        "cudaEventDestroy": destroy("cudaEventDestroy"),
        "cudaMemcpyAsync": memcpy,
        "cudaStreamSynchronize": lambda s: (rec("cudart", "cudaStreamSynchronize"), ret("cudaStreamSynchronize"))[1],
        "cudaEventRecord": lambda e, s: ret("cudaEventRecord"),
        "cudaEventElapsedTime": lambda a, b: ret("cudaEventElapsedTime", 0.5),
    }
    mod = types.ModuleType("cuda.bindings.runtime")
    for name, fn in behaviour.items():
        if name in api["functions"]:  # a function the real module lacks stays absent
            sig = api["functions"][name]["signature"]
            setattr(
                mod,
                name,
                (lambda f, w, s: lambda *a: _checked(w, [s], lambda _self, *b: f(*b))(None, *a))(fn, name, sig),
            )
    mod.cudaMemcpyKind = real_enum(api, "cudaMemcpyKind")
    mod.host = host
    return mod


def test_cuda_python_engine_lifecycle_frees_everything(onnx_file, tmp_path):
    """Through the real _CudaPython wrapper: pinned host memory via cudaMallocHost, and every cudaMalloc,
    cudaMallocHost, event and stream released by close()."""
    rec = Rec()
    rt = fake_cudart(rec)
    cuda = cuda_mod.Cuda(cuda_mod._CudaPython(rt))
    sdk = fake_sdk("11.x", rec, None, batch=None)
    engine = trt_engine.TensorRTEngine(
        info(onnx_file, None), "fp32", EngineContext(tmp_path / "cache"), sdk=sdk, cuda=cuda
    )
    assert engine.describe()["device"] == "Fake GPU" and engine.describe()["compute_capability"] == "9.0"
    x = rows(9, 5)
    np.testing.assert_array_equal(engine.run(x), expected(x))
    assert {c[2] for c in rec.calls if c[1] == "cudaMemcpyAsync"} == {
        "cudaMemcpyHostToDevice",
        "cudaMemcpyDeviceToHost",
    }
    pinned = [c[2] for c in rec.calls if c[1] == "cudaMallocHost"]
    assert pinned == [64 * ROW_IN * 4, 64 * ROW_OUT * 4]  # the staging buffers are page-locked
    assert [c[1] for c in rec.calls].count("cudaEventCreate") == 4
    engine.run(rows(3))
    assert [c[1] for c in rec.calls].count("cudaEventCreate") == 4  # once per engine
    engine.close()
    count = [c[1] for c in rec.calls].count
    for made, freed in (
        ("cudaMalloc", "cudaFree"),
        ("cudaMallocHost", "cudaFreeHost"),
        ("cudaEventCreate", "cudaEventDestroy"),
        ("cudaStreamCreate", "cudaStreamDestroy"),
    ):
        assert count(made) == count(freed) > 0, (made, freed)
    assert not rt.host


def test_cuda_python_without_a_gpu_is_unavailable_with_the_reason():
    rt = fake_cudart(Rec(), device_count=0, count_error=100)  # cudaErrorNoDevice
    why = cuda_mod.probe(("cuda-python", rt))
    assert "cudaGetDeviceCount" in why and "cudaError100" in why
    assert (
        cuda_mod.probe(("cuda-python", fake_cudart(Rec(), device_count=0)))
        == "no CUDA device: the driver reports 0 devices"
    )
    assert cuda_mod.probe(("cuda-python", fake_cudart(Rec()))) is None


class FakePycudaDriver:
    """pycuda.driver as far as the runner uses it (names checked in pycuda 2026.1's src/wrapper/wrap_cudadrv.cpp:
    Device.count/retain_primary_context, Context.push/pop/detach, pagelocked_empty, mem_alloc, Stream, Event)."""

    def __init__(self, rec, count=1):
        drv = self
        self.rec, self.stack = rec, []

        class Context:
            def push(self):
                drv.stack.append(self)
                rec("pycuda", "push")

            @staticmethod
            def pop():
                drv.stack.pop()
                rec("pycuda", "pop")

            def detach(self):
                rec("pycuda", "detach")

        class Device:
            def __init__(self, i):
                self.i = i

            @staticmethod
            def count():
                rec("pycuda", "count")
                return count

            def retain_primary_context(self):
                rec("pycuda", "retain_primary_context")
                return Context()

            def make_context(self):
                raise AssertionError("make_context pushes a new context that is never popped")

        self.Device, self.Context = Device, Context

    def init(self):
        self.rec("pycuda", "init")


def test_pycuda_probe_creates_no_context_and_close_pops_it():
    rec = Rec()
    drv = FakePycudaDriver(rec)
    assert cuda_mod.probe(("pycuda", drv)) is None
    assert ("pycuda", "retain_primary_context") not in rec.methods() and not drv.stack
    assert "0 devices" in cuda_mod.probe(("pycuda", FakePycudaDriver(Rec(), count=0)))
    with cuda_mod.Cuda(cuda_mod._Pycuda(drv)):
        assert len(drv.stack) == 1
    assert not drv.stack and rec.methods()[-2:] == [("pycuda", "pop"), ("pycuda", "detach")]


# --- what a first real GPU run would hit (issue 18) ---------------------------------------------------


def test_a_driver_too_old_for_cuda_python_names_the_extra_that_fits(monkeypatch):
    """cudaErrorInsufficientDriver (35) with a driver loaded: cuda-python 13 on a CUDA 12 driver. Not "no
    usable CUDA device" on a working GPU: the message names the driver, says it is too old for this
    cuda-python, and which extra fits. With no driver at all (libcuda missing) the same error says so."""
    rt = fake_cudart(Rec(), device_count=0, count_error=35)
    monkeypatch.setattr(cuda_mod, "cuda_driver_api_version", lambda: "CUDA driver API 12.8")
    why = cuda_mod.probe(("cuda-python", rt))
    assert "driver (CUDA driver API 12.8) is too old for cuda-python" in why and "gpu-cu12" in why
    assert "no usable CUDA device" not in why
    monkeypatch.setattr(cuda_mod, "cuda_driver_api_version", lambda: None)
    assert "no NVIDIA driver: libcuda.so.1 not found" in cuda_mod.probe(("cuda-python", rt))
    import tomllib

    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert extras["gpu-cu12"] == ["cuda-python>=12.0,<13"] and extras["gpu-cu13"] == ["cuda-python>=13.0,<14"]


def test_every_engine_shares_one_logger_and_the_plugins_are_registered_first(onnx_file, tmp_path, monkeypatch):
    """TensorRT keeps one logger per process: two engines (the gate's, a soak worker's) share it, and the
    plug-in creators are registered once, before anything is built or deserialized (IxRT's loaders do)."""
    monkeypatch.setattr(trt_engine, "_LOGGERS", {})
    monkeypatch.setattr(trt_engine, "_PLUGINS_READY", set())
    rec = Rec()
    cuda = FakeCuda(rec)
    sdk = fake_sdk("8.6", rec, cuda)
    ctx = EngineContext(tmp_path / "cache")
    a = trt_engine.IxRTEngine(info(onnx_file, None), "fp16", ctx, sdk=sdk, cuda=cuda, static_batch=0)
    b = trt_engine.IxRTEngine(info(onnx_file, None), "fp16", ctx, sdk=sdk, cuda=cuda, static_batch=0)
    assert a.logger is b.logger
    m = rec.methods()
    assert m.count(("trt", "Logger")) == 1 and m.count(("trt", "init_libnvinfer_plugins")) == 1
    assert ("trt", "init_libnvinfer_plugins", "") in rec.calls
    assert m.index(("trt", "init_libnvinfer_plugins")) < m.index(("trt", "Builder")) < m.index(("trt", "Runtime"))


@pytest.mark.parametrize(
    "fixture, cls, method",
    [("10.x", trt_engine.TensorRTEngine, "set_input_shape"), ("8.6", trt_engine.IxRTEngine, "set_binding_shape")],
)
def test_a_batch_the_engine_refuses_is_named_not_an_execution_failure(onnx_file, tmp_path, fixture, cls, method):
    engine, rec = make(fixture, onnx_file, tmp_path, engine_cls=cls, static_batch=0)
    setattr(engine.exec_context, method, lambda *a: (rec("context", method, *a), False)[1])
    with pytest.raises(HarnessError, match=r"refused input shape \(3, 3, 160, 160\).*admits batch 1 to 64"):
        engine.run(rows(3))
    assert not [c for c in rec.calls if c[1].startswith("execute")]  # refused before executing


def test_the_timing_split_is_this_calls_and_the_staging_copy_is_not_copy_in(onnx_file, tmp_path, monkeypatch):
    engine, rec = make("10.x", onnx_file, tmp_path, batch=64)
    ev = engine.events
    x = rows(64, 5)
    staged_at_start = []

    def record(event, stream):
        if event is ev[0]:
            staged_at_start.append(np.array_equal(engine.pinned["input"][:64], x))

    ms = {(0, 1): 1.0, (1, 2): 2.0, (2, 3): 3.0}
    monkeypatch.setattr(engine.cuda, "record", record)
    monkeypatch.setattr(engine.cuda, "elapsed_ms", lambda a, b: ms[(ev.index(a), ev.index(b))])
    engine.run(x)
    assert staged_at_start == [True]  # the host staging copy is done before copy-in's first event
    assert engine.timings == {"h2d_ms": 1.0, "compute_ms": 2.0, "d2h_ms": 3.0}
    ms[(1, 2)] = 7.0
    engine.load_in_place(x)
    engine.execute_in_place()
    assert engine.timings == {"compute_ms": 7.0}  # the compute-only call's own, not the last run()'s


def test_each_perf_row_shows_its_own_cases_split(onnx_file, tmp_path, monkeypatch, facenet_lfw, facenet_gate):
    """Gate.perf measures every case first and builds rows after: each row's split is taken when its case
    was measured (batch 1 and batch 8 take different times here), not the last case's for all."""
    from harness.checks import throughput

    engine, rec = make("10.x", onnx_file, tmp_path)
    ev = engine.events
    monkeypatch.setattr(
        engine.cuda, "elapsed_ms", lambda a, b: float(engine._in_place_shape[0]) if ev.index(a) == 1 else 0.5
    )
    cases = [throughput.Case("compute", 1), throughput.Case("compute", 8)]
    quick = throughput.Settings(warmup_s=0.0, min_duration_s=0.0, min_rounds=3, max_attempts=1, canary=False)
    rows_ = facenet_gate.perf(engine, cases, quick).rows
    assert [r.split_ms for r in rows_] == [{"compute_ms": 1.0}, {"compute_ms": 8.0}]


def test_the_driver_release_is_in_the_fingerprint_and_the_engine_key(monkeypatch):
    """A driver upgrade within one CUDA version (570.86.15 -> 570.124.06, both API 12080) changes the
    fingerprint's driver and the plan's cache key; without nvidia-smi/ixsmi the API version is named."""
    monkeypatch.setattr(cuda_mod, "nvidia_smi", lambda **k: {"driver_version": "570.86.15"})
    old = cuda_mod.driver_release(12080)
    assert old == {"driver": "570.86.15", "cuda_driver_api": "12080"}
    monkeypatch.setattr(cuda_mod, "nvidia_smi", lambda **k: {"driver_version": "570.124.06"})
    new = cuda_mod.driver_release(12080)
    spec = trt_engine.BuildSpec(Path(__file__), "fp16", 64)
    device = {"device": "Fake GPU", "compute_capability": "9.0"}
    assert trt_engine.engine_key(spec, "10.x", {**device, **old}) != trt_engine.engine_key(
        spec, "10.x", {**device, **new}
    )
    monkeypatch.setattr(cuda_mod, "nvidia_smi", lambda **k: {})
    assert cuda_mod.driver_release(12080)["driver"] == "unknown release (CUDA driver API 12080)"
    rt = fake_cudart(Rec())
    assert cuda_mod._CudaPython(rt).device()["cuda_driver_api"] is not None


def test_ixrt_builds_the_deployments_static_batch_64_by_default(tmp_path, facenet_reference_model):
    """Issue 18.7: DeepSparkInference's facenet/ixrt builds from a batch-64 ONNX (modify_batchsize.py,
    BSZ=64) with no optimization profile and runs execute_v2. The IxRT engine does the same from the
    dynamic export by default: a static copy (same outputs at batch 64, onnxruntime), no profile, no
    set_binding_shape, partial batches padded to 64."""
    import onnxruntime as ort

    rec = Rec()
    cuda = FakeCuda(rec)
    sdk = fake_sdk("8.6", rec, cuda, batch=64)
    src = facenet_reference_model
    assert src.batch is None
    engine = trt_engine.IxRTEngine(src, "fp32", EngineContext(tmp_path / "cache"), sdk=sdk, cuda=cuda)
    assert engine.model.batch == 64 and engine.max_batch == 64 and engine.describe()["backend"] == "ixrt"
    assert "add_optimization_profile" not in [c[1] for c in rec.calls]
    parsed = [c for c in rec.calls if c[:2] == ("parser", "parse")]
    static = next((tmp_path / "cache" / "static").glob("*.onnx"))
    assert parsed == [("parser", "parse", static.stat().st_size)]  # the static copy was built, not the source
    x = rows(5, 4)
    np.testing.assert_array_equal(engine.run(x), expected(x))
    assert not [c for c in rec.calls if c[1] == "set_binding_shape"]
    assert [c[2] for c in rec.calls if c[1] == "htod"][-1] == 64 * ROW_IN * 4  # padded to the static batch
    batch = rows(64, 5)
    dyn = ort.InferenceSession(str(src.path), providers=["CPUExecutionProvider"])
    fixed = ort.InferenceSession(str(static), providers=["CPUExecutionProvider"])
    assert fixed.get_inputs()[0].shape[0] == 64
    np.testing.assert_array_equal(fixed.run(None, {"input": batch})[0], dyn.run(None, {"input": batch})[0])
    defaults = {o.name: o.default for o in trt_engine.TensorRTEngine.options}
    assert defaults["static_batch"] == 0  # TensorRT keeps the ONNX's own form
