"""Engines as plug-ins and the pytest plugin as an SDK team uses them: an engine package installed
with an entry point (a dist-info folder on sys.path, as pip would leave it) appears in
``facenet-harness engines``, is gated by the CLI and is parametrised by the pytest plugin, with no
change to the harness."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import engines
from harness.core.errors import HarnessError

ENGINE = '''
import importlib.util
import os
import time

from harness.engines import Availability, Engine, Option


class DummyEngine(Engine):
    """onnxruntime behind another name: a third-party engine in its own package."""

    name = "dummy"
    precisions = ("fp32",)
    options = (Option("threads", int, 1, "intra-op threads"),)

    @classmethod
    def availability(cls):
        return Availability(importlib.util.find_spec("onnxruntime") is not None, "needs onnxruntime")

    def __init__(self, model, precision="fp32", context=None, **options):
        super().__init__(model, precision, context, **options)
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.settings["threads"]
        self.session = ort.InferenceSession(str(model.path), opts, providers=["CPUExecutionProvider"])

    def _run(self, batch):
        start = time.perf_counter()
        out = self.session.run(None, {self.model.input_name: batch})[0]
        # a regression inside "the SDK", invisible to the harness: each batch takes this many times longer
        time.sleep((float(os.environ.get("DUMMY_SLOWDOWN", "1")) - 1) * (time.perf_counter() - start))
        return out

    def describe(self):
        return {"backend": self.name, "version": "0.1", "device": "cpu", "precision": self.precision}
'''


def install_fake_dist(site: Path, name: str, entry_points: str, module: str | None = None, code: str = ""):
    """What pip leaves for a package with entry points: the module and a dist-info folder."""
    if module:
        (site / module).mkdir(parents=True)
        (site / module / "__init__.py").write_text(code)
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


@pytest.fixture
def plugin_site(tmp_path):
    site = tmp_path / "site"
    install_fake_dist(
        site,
        "dummy-facenet-engine",
        "[facenet_harness.engines]\ndummy = dummy_engine:DummyEngine\n",
        "dummy_engine",
        ENGINE,
    )
    install_fake_dist(site, "broken-facenet-engine", "[facenet_harness.engines]\nbroken = not_there.engine:Broken\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site)] + sys.path)}
    return site, env


def run(args, env, cwd, timeout=600):
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def cli_cmd():
    return [sys.executable, "-m", "harness"]


def test_installed_engine_is_listed_and_a_broken_one_says_why(plugin_site, tmp_path):
    _, env = plugin_site
    proc = run(cli_cmd() + ["engines"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line and not line.startswith(" ")}
    assert "dummy-facenet-engine 0.1" in lines["dummy"] and " yes " in lines["dummy"]
    assert "option threads=1: intra-op threads" in proc.stdout
    assert " no " in lines["broken"] and "cannot load not_there.engine:Broken" in lines["broken"]
    assert {"onnxruntime", "tensorrt", "ixrt"} <= set(lines)


def test_installed_engine_is_gated_by_the_cli(plugin_site, tmp_path, facenet_lfw):
    _, env = plugin_site
    out = tmp_path / "conf.json"
    proc = run(
        cli_cmd() + ["conformance", "--backend", "dummy", "--engine-option", "threads=2", "--json", str(out)],
        env,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["verdict"] == "PASS" and doc["engine"]["backend"] == "dummy"
    proc = run(cli_cmd() + ["conformance", "--backend", "broken"], env, tmp_path)
    assert proc.returncode == 2 and "cannot load not_there.engine:Broken" in proc.stderr


def test_installed_engine_is_parametrised_by_the_pytest_plugin(plugin_site, tmp_path, facenet_lfw):
    _, env = plugin_site
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "test_ours.py").write_text(
        textwrap.dedent("""
        import pytest

        @pytest.mark.conformance
        def test_conforms(facenet_engine, facenet_gate):
            result = facenet_gate.conformance(facenet_engine)
            assert result, result
            print("ENGINE", facenet_engine.describe()["backend"], result.verdict)

        @pytest.mark.conformance
        @pytest.mark.facenet_select(precisions=["int8"])
        def test_int8_only(facenet_engine):
            raise AssertionError("--facenet-precision fp32 leaves no int8 engine: this must not run")
    """)
    )
    proc = run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-s",
            "-m",
            "conformance",
            "--facenet-backend",
            "dummy,onnxruntime",
            "--facenet-precision",
            "fp32",
        ],
        env,
        tmp_path / "proj",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert (
        "test_conforms[dummy-fp32] ENGINE dummy PASS" in proc.stdout.replace("\n", " ")
        or "ENGINE dummy PASS" in proc.stdout
    )
    assert "2 passed, 1 skipped" in proc.stdout
    proc = run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--facenet-backend", "nope"], env, tmp_path / "proj"
    )
    assert proc.returncode == 4 and "--facenet-backend nope: unknown engine" in proc.stderr


def test_registry_refuses_what_is_not_an_engine(tmp_path, monkeypatch):
    site = tmp_path / "site"
    install_fake_dist(
        site,
        "odd-engine",
        "[facenet_harness.engines]\nodd = odd_engine:NotAnEngine\n",
        "odd_engine",
        "class NotAnEngine:\n    name = 'odd'\n",
    )
    install_fake_dist(site, "shadow-engine", "[facenet_harness.engines]\n", None)
    install_fake_dist(
        site,
        "raising-engine",
        "[facenet_harness.engines]\nraising = raising_engine:Raising\n",
        "raising_engine",
        "from harness.engines import Engine\n\n"
        "class Raising(Engine):\n    name = 'raising'\n    precisions = ('fp32',)\n\n"
        "    @classmethod\n    def availability(cls):\n        raise RuntimeError('no device')\n",
    )
    monkeypatch.syspath_prepend(str(site))
    items = {it.name: it for it in engines.catalogue()}
    assert not items["raising"].available and "raised RuntimeError: no device" in items["raising"].why
    assert not items["odd"].available and "not a subclass" in items["odd"].why
    with pytest.raises(HarnessError, match="odd_engine:NotAnEngine is not a subclass of harness.engines.Engine"):
        engines.engine_class("odd")
    with pytest.raises(HarnessError, match="unknown engine 'nope'"):
        engines.engine_class("nope")
    assert engines.entries()["onnxruntime"].source == "built-in"


def test_engine_options_are_declared_and_checked(facenet_reference_model):
    cls = engines.engine_class("onnxruntime")
    assert cls.resolve_options({})["threads"] == 0
    assert cls.resolve_options({"threads": "3"})["threads"] == 3
    with pytest.raises(HarnessError, match="has no option turbo"):
        cls.resolve_options({"turbo": 1})
    with pytest.raises(HarnessError, match="option int8_format='bogus'; choose one of"):
        cls.resolve_options({"int8_format": "bogus"})
    with engines.create("onnxruntime", facenet_reference_model, "fp32") as engine:
        assert not engine.closed
    assert engine.closed


def test_bench_exits_1_on_a_real_slowdown(plugin_site, tmp_path, facenet_lfw):
    """A baseline saved on this machine, then the same engine 1.4x slower (nothing else changed): FAIL, exit 1."""
    _, env = plugin_site
    common = cli_cmd() + [
        "bench",
        "--backend",
        "dummy",
        "--cases",
        "compute-b8",
        "--warmup",
        "0.5",
        "--min-duration",
        "3",
        "--min-rounds",
        "12",
        "--baselines",
        str(tmp_path / "mine"),
    ]
    saved = run(common + ["--save-baseline", "before the regression"], env, tmp_path)
    if saved.returncode == 4 and "not recorded (unstable" in saved.stderr + saved.stdout:
        pytest.skip(
            "the machine was too busy to record a baseline (it says so, exit 4): "
            + (saved.stderr + saved.stdout).strip().splitlines()[-1]
        )
    assert saved.returncode == 0 and "recorded as the baseline" in saved.stdout, saved.stdout + saved.stderr
    slow = run(common + ["--json", str(tmp_path / "slow.json")], {**env, "DUMMY_SLOWDOWN": "1.4"}, tmp_path)
    doc = json.loads((tmp_path / "slow.json").read_text())
    row = doc["rows"][0]
    if doc["verdict"] == "INCONCLUSIVE":  # only when the machine was loaded or unstable meanwhile, and it says so
        assert slow.returncode == 4 and row["why"].startswith("unstable measurement"), row["why"]
        return
    assert slow.returncode == 1 and doc["verdict"] == "FAIL", slow.stdout + slow.stderr
    assert row["ratio"] < 0.85
