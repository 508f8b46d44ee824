"""The pytest plugin (entry point ``pytest11: facenet_harness``): thin glue over ``harness.gate``.

Options, markers and fixtures, so that an SDK team can gate its engine from its own repository::

    # test_our_engine.py
    def test_accuracy(facenet_engine, facenet_gate):
        result = facenet_gate.accuracy(facenet_engine)
        assert result, result

    $ pytest --facenet-backend ours --facenet-precision fp16 -m accuracy

Fixtures: ``facenet_engine`` (the engine under test; tests using it are parametrised over the
selected backends x precisions, each engine built once per session and closed at its end),
``facenet_reference`` (the FP32 onnxruntime reference engine), ``facenet_lfw`` (the dataset),
``facenet_model`` / ``facenet_reference_model`` (the ONNX under test and the reference's),
``facenet_gate`` (a ``harness.gate.Gate``: ``.accuracy(e)``, ``.conformance(e)``, ``.perf(e, cases)``
return typed results), ``facenet_engines`` (a factory for other engines), ``facenet_store`` (the
baselines) and ``facenet_unavailable`` (skip, or fail under ``--facenet-strict``).
Nothing heavy is imported until a fixture is used.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import pytest

from harness import report  # noqa: F401 - installs the text renderer: a failing assert shows the result explained

STRICT_ENV = "FACENET_HARNESS_STRICT"
MARKERS = (
    "accuracy: full LFW evaluation of an engine against the accuracy baselines (minutes on a CPU)",
    "conformance: engine embeddings against the FP32 reference on the probe set",
    "perf: throughput measurements judged against the perf baselines (pytest-benchmark)",
    "facenet_select(backends=None, precisions=None, exclude_reference=False): narrow the facenet_engine "
    "parametrisation of one test",
)


class EngineParam(NamedTuple):
    backend: str
    precision: str

    def __str__(self) -> str:
        return f"{self.backend}-{self.precision}"


def pytest_addoption(parser):
    g = parser.getgroup("facenet", "facenet-harness: FaceNet engine conformance, accuracy and throughput gate")
    g.addoption(
        "--facenet-backend",
        help="engine(s) under test, comma-separated (default: every registered "
        "engine; those that cannot run here skip with the reason)",
    )
    g.addoption("--facenet-precision", help="precision(s) under test, comma-separated (default: all an engine offers)")
    g.addoption(
        "--facenet-onnx", help="FaceNet ONNX the engines under test are built from (default: the pinned export)"
    )
    g.addoption("--facenet-reference-onnx", help="FaceNet ONNX of the FP32 reference (default: the pinned export)")
    g.addoption(
        "--facenet-engine-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an option the engine under test declares; repeatable",
    )
    g.addoption("--facenet-batch-size", type=int, default=64, help="images per inference batch (default 64)")
    g.addoption("--lfw-dir", help="LFW images (default $LFW_DIR)")
    g.addoption("--lfw-pairs", help="LFW pairs.txt (default $LFW_PAIRS)")
    g.addoption("--lfw-boxes", help="face-box TSV for raw LFW images (default $LFW_BOXES)")
    g.addoption(
        "--facenet-baselines",
        help="your baselines folder, read over the shipped ones and written by "
        "--save-baseline (default $FACENET_HARNESS_BASELINES)",
    )
    g.addoption(
        "--facenet-save-perf-baseline",
        metavar="DESCRIPTION",
        help="record the perf cases measured in this run as the baselines of their identity (in your "
        "baselines folder; in a source checkout, its baselines/)",
    )
    g.addoption("--facenet-cache", help="artifact cache (default $FACENET_HARNESS_CACHE or ~/.cache/facenet-harness)")
    g.addoption(
        "--facenet-isolation",
        choices=("process", "none"),
        default="process",
        help="where the engine under test runs: its own worker process (default: a crash or hang fails "
        "the test, not pytest) or pytest's ('none', for debugging)",
    )
    g.addoption(
        "--facenet-call-deadline",
        type=float,
        help="floor of the isolated engine's per-call deadline in seconds (default 300)",
    )
    g.addoption(
        "--facenet-build-deadline",
        type=float,
        help="seconds the isolated engine may take to build (default 3600)",
    )
    g.addoption(
        "--facenet-strict",
        action="store_true",
        default=None,
        help=f"missing data or model fails instead of skipping (also {STRICT_ENV}=1; CI sets it)",
    )


def pytest_configure(config):
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    session = FacenetSession(config)
    config.stash[_SESSION] = session
    session.validate()


def pytest_unconfigure(config):
    session = config.stash.get(_SESSION, None)
    if session is not None:
        session.close()


def pytest_report_header(config):
    from harness.store import environment

    s = config.stash[_SESSION]
    return [
        f"facenet-harness: {environment.one_line()}; cache {s.cache_dir}; baselines {s.store.describe()}; "
        f"strict {s.strict}"
    ]


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config, machine_info):
    """The device fingerprint in pytest-benchmark's machine info (saved runs and comparisons)."""
    from harness.store import environment

    machine_info["facenet_harness"] = environment.fingerprint()


def pytest_generate_tests(metafunc):
    if "facenet_engine" not in metafunc.fixturenames:
        return
    session = metafunc.config.stash[_SESSION]
    marker = metafunc.definition.get_closest_marker("facenet_select")
    select = dict(marker.kwargs) if marker else {}
    metafunc.parametrize("facenet_engine", session.engine_params(**select), indirect=True, scope="session")


class FacenetSession:
    """The plugin's per-run state: options resolved once, dataset, models, gate and engines made lazily."""

    def __init__(self, config):
        self.config = config
        opt = config.getoption
        self.strict = bool(opt("facenet_strict")) or os.environ.get(STRICT_ENV) == "1"
        self._cache = opt("facenet_cache")
        self._baselines = opt("facenet_baselines")
        self._engines: dict = {}
        self._dataset = self._reference = self._model = self._gate = self._store = None

    def validate(self) -> None:
        """Unknown engines named on the command line are a usage error before collection."""
        chosen = self._list("facenet_backend")
        if not chosen:
            return
        from harness import engines
        from harness.core.errors import HarnessError

        try:
            known = engines.entries()
        except HarnessError as e:
            raise pytest.UsageError(str(e)) from None
        for name in chosen:
            if name not in known:
                raise pytest.UsageError(f"--facenet-backend {name}: unknown engine; known: {', '.join(known)}")
        precisions = self._list("facenet_precision")
        if precisions:
            offered = set()
            for name in chosen:
                try:
                    offered |= set(known[name].load().precisions)
                except HarnessError:
                    continue
            if offered and not set(precisions) & offered:
                raise pytest.UsageError(
                    f"--facenet-precision {','.join(precisions)}: none is offered by "
                    f"{', '.join(chosen)} (they offer {', '.join(sorted(offered))})"
                )

    def _list(self, name: str) -> list[str] | None:
        value = self.config.getoption(name)
        return [v.strip() for v in value.split(",") if v.strip()] if value else None

    @property
    def cache_dir(self):
        from harness.store import cache

        return cache.cache_root(self._cache)

    @property
    def store(self):
        from harness.store.baselines import BaselineStore

        if self._store is None:
            self._store = BaselineStore(self._baselines)
        return self._store

    def unavailable(self, reason: str):
        """Skip (a developer machine) or fail (strict: CI) for a missing prerequisite."""
        if self.strict:
            pytest.fail(f"{reason} (strict mode makes this a failure)", pytrace=False)
        pytest.skip(reason)

    def engine_params(self, backends=None, precisions=None, exclude_reference=False) -> list:
        """pytest params for each selected (backend, precision); those this machine cannot run skip with why."""
        from harness import engines
        from harness.core.errors import HarnessError

        chosen_backends = self._list("facenet_backend")
        chosen_precisions = self._list("facenet_precision")
        try:
            catalogue = {it.name: it for it in engines.catalogue()}
        except HarnessError as e:
            raise pytest.UsageError(str(e)) from None
        out = []
        for name, item in catalogue.items():
            if (chosen_backends and name not in chosen_backends) or (backends and name not in backends):
                continue
            for prec in item.precisions or ("-",):
                if (chosen_precisions and prec not in chosen_precisions) or (precisions and prec not in precisions):
                    continue
                if (
                    exclude_reference
                    and (name, prec) == ("onnxruntime", "fp32")
                    and not self.config.getoption("facenet_onnx")
                ):
                    continue
                # an engine that cannot run here skips; one named on the command line fails under strict
                explicit = self.strict and chosen_backends and name in chosen_backends
                marks = [] if item.available or explicit else [pytest.mark.skip(reason=f"{name} {prec}: {item.why}")]
                param = EngineParam(name, prec)
                out.append(pytest.param(param, marks=marks, id=str(param)))
        if not out:  # this test's own selection leaves nothing here: one visible skip, not an error
            out.append(
                pytest.param(
                    EngineParam("none", "-"),
                    id="no-engine-selected",
                    marks=[pytest.mark.skip(reason="no selected engine x precision matches this test's selection")],
                )
            )
        return out

    def dataset(self):
        from harness.core.errors import HarnessError
        from harness.lfw.data import Dataset

        if self._dataset is None:
            opt = self.config.getoption
            images = opt("lfw_dir") or os.environ.get("LFW_DIR")
            pairs = opt("lfw_pairs") or os.environ.get("LFW_PAIRS")
            boxes = opt("lfw_boxes") or os.environ.get("LFW_BOXES") or None
            if not images or not pairs:
                self.unavailable(
                    "no LFW data: pass --lfw-dir/--lfw-pairs (and --lfw-boxes for raw images) "
                    "or set LFW_DIR/LFW_PAIRS/LFW_BOXES"
                )
            try:
                self._dataset = Dataset(images, pairs, boxes)
            except HarnessError as e:
                self.unavailable(f"LFW data unusable: {e}")
        return self._dataset

    def reference_model(self):
        from harness import model
        from harness.core.errors import HarnessError

        if self._reference is None:
            path = self.config.getoption("facenet_reference_onnx")
            try:
                self._reference = model.inspect(path or model.prepare(self.cache_dir).dynamic)
            except HarnessError as e:
                self.unavailable(f"cannot prepare the FaceNet reference model: {e}")
        return self._reference

    def model(self):
        from harness import model

        if self._model is None:
            path = self.config.getoption("facenet_onnx")
            self._model = model.inspect(path) if path else self.reference_model()
        return self._model

    def gate(self):
        from harness.gate import Gate

        if self._gate is None:
            self._gate = Gate(
                self.dataset(),
                self.reference_model(),
                store=self.store,
                cache_dir=self.cache_dir,
                batch_size=self.config.getoption("facenet_batch_size"),
                progress=False,
            )
        return self._gate

    def engine_options(self, backend: str) -> dict:
        from harness import engines
        from harness.core.errors import HarnessError

        chosen = self._list("facenet_backend")
        if chosen and backend not in chosen:
            return {}  # the options are for the engine under test, not for the reference or others
        try:
            opts = engines.parse_options(self.config.getoption("facenet_engine_option"), "--facenet-engine-option")
        except HarnessError as e:
            raise pytest.UsageError(str(e)) from None
        if opts and chosen != [backend]:
            raise pytest.UsageError("--facenet-engine-option applies to one engine: give exactly one --facenet-backend")
        return opts

    def deadlines(self):
        from harness import engines

        d, opt = engines.Deadlines(), self.config.getoption
        return engines.Deadlines(
            build_s=opt("facenet_build_deadline") or d.build_s, call_s=opt("facenet_call_deadline") or d.call_s
        )

    def engine(self, backend: str, precision: str, model_info=None, isolation: str = "none", **options):
        """The engine for (backend, precision, model), built once per session; skips when it cannot run here.
        ``isolation="process"``: in its own worker process (a build that crashes or hangs fails the test)."""
        from harness import engines
        from harness.core.errors import EngineFault

        info = model_info or self.model()
        opts = {**(self.engine_options(backend) if model_info is None else {}), **options}
        key = (backend, precision, str(info.path), tuple(sorted(opts.items())), isolation)
        if key not in self._engines:
            try:
                self._engines[key] = engines.launch(
                    backend, info, precision, self.gate().engine_context(), opts, isolation, self.deadlines()
                )
            except engines.EngineUnavailable as e:
                chosen = self._list("facenet_backend") or []
                if backend in chosen:
                    self.unavailable(str(e))  # named explicitly: a failure under strict
                pytest.skip(str(e))
            except EngineFault as e:
                pytest.fail(f"{backend} {precision}: the engine could not be built: {e}", pytrace=False)
        return self._engines[key]

    def engine_under_test(self, backend: str, precision: str):
        """The parametrised engine under test, isolated as ``--facenet-isolation`` says."""
        return self.engine(backend, precision, isolation=self.config.getoption("facenet_isolation"))

    def close(self):
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()
        if self._gate is not None:
            self._gate.close()


_SESSION = pytest.StashKey[FacenetSession]()


def _session(request) -> FacenetSession:
    return request.config.stash[_SESSION]


@pytest.fixture(scope="session")
def facenet_unavailable(request):
    """``facenet_unavailable(reason)``: skip, or fail under --facenet-strict / FACENET_HARNESS_STRICT=1."""
    return _session(request).unavailable


@pytest.fixture(scope="session")
def facenet_store(request):
    return _session(request).store


@pytest.fixture(scope="session")
def facenet_lfw(request):
    return _session(request).dataset()


@pytest.fixture(scope="session")
def facenet_reference_model(request):
    return _session(request).reference_model()


@pytest.fixture(scope="session")
def facenet_model(request):
    return _session(request).model()


@pytest.fixture(scope="session")
def facenet_gate(request):
    return _session(request).gate()


@pytest.fixture(scope="session")
def facenet_reference(request):
    return _session(request).gate().reference_engine


@pytest.fixture(scope="session")
def facenet_engines(request):
    """``facenet_engines(backend, precision, model_info=None, isolation="none", **options)``: any engine, built
    once per session, in pytest's process unless ``isolation="process"``."""
    return _session(request).engine


@pytest.fixture(scope="session")
def facenet_engine(request):
    """The engine under test for this parametrisation (see --facenet-backend / --facenet-precision)."""
    if not hasattr(request, "param"):
        raise pytest.UsageError("facenet_engine is parametrised by the plugin; do not override it")
    return _session(request).engine_under_test(request.param.backend, request.param.precision)


@pytest.fixture(autouse=True)
def _facenet_fresh_worker(request):
    """A test gets a working engine under test: one whose worker crashed or hung in an earlier test (that
    test failed, saying so) is restarted in a fresh worker first."""
    if "facenet_engine" in request.fixturenames:
        engine = request.getfixturevalue("facenet_engine")
        if getattr(engine, "failure", None):
            engine.restart()
