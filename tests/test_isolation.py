"""The gate survives what it gates: the engine under test runs in its own worker process.

Every fault of the catalogue (``tests/fault_engines.py``: segfault, abort, hang, ``sys.exit``, ``os._exit``,
a raised device error, ``MemoryError``, NaN rows, and crashes and hangs while building) goes through
``facenet-harness gate`` with two precisions in one run: exit 1, the broken row FAIL saying what happened,
the healthy row still judged, a complete report; a hang ends at its deadline. The same through pytest
with the plugin; and a gate killed with SIGKILL takes its worker with it and leaves a report that says
it is incomplete.
"""

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from xml.etree import ElementTree

import numpy as np
import pytest

from harness import cli, engines
from harness.checks import accuracy, throughput
from harness.core.errors import EngineFault
from harness.lfw.data import Dataset
from tests import fault_engines, test_data

# (fault, at_call, what the broken row's reason must say)
CATALOGUE = [
    ("segfault", 1, "worker process died of SIGSEGV during inference"),
    ("abort", 1, "worker process died of SIGABRT during inference"),
    ("hang", 1, "did not answer within 3 s during inference and was killed"),
    ("sys_exit", 1, "the engine called sys.exit(3)"),
    ("os_exit", 1, "worker process exited with code 3 during inference"),
    ("device_error", 1, "faulty fp32: the engine raised RuntimeError: CUDA error 700"),
    ("memory_error", 1, "the engine raised MemoryError"),
    ("nan", 1, "produced NaN/Inf embeddings for 1 images"),
    ("segfault", 0, "during build: faulty fp32: the engine's worker process died of SIGSEGV during build"),
    ("hang", 0, "during build: faulty fp32: the engine's worker process did not answer within 5 s during build"),
]


@pytest.fixture
def faulty(monkeypatch):
    monkeypatch.setitem(engines.BUILTINS, "faulty", fault_engines.TARGET)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return test_data.make_prealigned(tmp_path_factory.mktemp("tiny"))


def gate_args(tiny, model, cache_dir, out, *extra):
    deadlines = ("--call-deadline", "3", "--build-deadline", "5")
    return test_data.tiny_gate_args(
        tiny, model, cache_dir, out, "faulty", "fp32,fp16", "--perf-cases", "", *deadlines, *extra
    )


@pytest.mark.parametrize(("fault", "at_call", "said"), CATALOGUE, ids=[f"{f}@{a}" for f, a, _ in CATALOGUE])
def test_each_fault_is_its_rows_fail_and_the_other_precision_is_judged(
    faulty, tiny, facenet_reference_model, facenet_gate, tmp_path, capsys, fault, at_call, said
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "gate.json").write_text(json.dumps({"verdict": "PASS", "complete": True}))  # a stale PASS
    args = gate_args(tiny, facenet_reference_model, facenet_gate.cache_dir, out)
    args += ["--engine-option", f"fault={fault}", "--engine-option", f"at_call={at_call}"]
    start = time.monotonic()
    rc = cli.main(args)
    elapsed = time.monotonic() - start
    assert rc == cli.EXIT_FAIL, capsys.readouterr().err[-3000:]
    doc = json.loads((out / "gate.json").read_text())
    assert doc["complete"] is True and doc["verdict"] == "FAIL"
    broken, healthy = doc["rows"]
    assert (broken["precision"], broken["verdict"]) == ("fp32", "FAIL")
    assert said in broken["fault"], broken["fault"]
    assert healthy["precision"] == "fp16" and healthy["fault"] is None and healthy["accuracy"] is not None
    assert healthy["verdict"] in ("PASS", "NO BASELINE")
    if fault in ("segfault", "abort", "hang") and at_call:
        assert "fault_engines.py" in broken["fault"]  # the worker's last output: where it crashed or hung
    if fault == "hang":
        assert elapsed < 120  # ended by its deadline


def test_a_hung_build_frees_the_engines_process(faulty, tiny, facenet_reference_model, facenet_gate, tmp_path):
    ctx = facenet_gate.engine_context()
    deadlines = engines.Deadlines(build_s=2, call_s=2)
    with pytest.raises(EngineFault, match="did not answer within 2 s during build") as err:
        engines.launch(
            "faulty", facenet_reference_model, "fp32", ctx, {"fault": "hang", "at_call": 0}, "process", deadlines
        )
    assert "fault_engines.py" in str(err.value)


def test_isolated_engine_computes_what_the_in_process_one_does(faulty, facenet_reference_model, facenet_gate, crops):
    ctx = facenet_gate.engine_context()
    inside = engines.launch("onnxruntime", facenet_reference_model, "fp32", ctx, isolation="none")
    with engines.launch("onnxruntime", facenet_reference_model, "fp32", ctx) as isolated:
        assert isinstance(isolated, engines.IsolatedEngine) and not isinstance(inside, engines.IsolatedEngine)
        assert isolated._proc.pid != os.getpid()
        np.testing.assert_array_equal(isolated.run(crops[:5]), inside.run(crops[:5]))
        assert isolated.describe() == inside.describe()
        # the embeddings cache does not care where the engine ran: same class, same key
        assert accuracy.embeddings_key(isolated, facenet_gate.dataset) == accuracy.embeddings_key(
            inside, facenet_gate.dataset
        )
        # its graph is named for the diagnosis as in-process
        assert isolated.executed_graph() == inside.executed_graph()
        # timed by the engine's clock: the transit (20 MB into shared memory, the answer back) is left out
        before = isolated.ipc_seconds
        step = throughput.Step(lambda: isolated.run(crops[:8]), 8, list(range(8)))
        walls, clocked = [], []
        for _ in range(3):
            start = time.perf_counter()
            clocked += throughput._time_steps(step, 1, None, isolated.clock)
            walls.append(time.perf_counter() - start)
        assert isolated.ipc_seconds > before
        assert all(c < w for c, w in zip(clocked, walls, strict=True))
    assert isolated.closed and isolated._proc is None
    inside.close()


def test_the_dataset_travels_without_its_mapped_crops(facenet_lfw):
    facenet_lfw.crops()  # mapped here
    copy = pickle.loads(pickle.dumps(facenet_lfw))
    assert copy._crops is None and copy.digest == facenet_lfw.digest
    assert len(pickle.dumps(facenet_lfw)) < 10 * 2**20  # not the 590 MB of crops


def test_a_fault_through_pytest_fails_that_test_not_pytest(tiny, facenet_reference_model, facenet_gate, tmp_path):
    """With the plugin: a segfault fails the tests of the broken engine with the reason; the healthy
    precision passes; a later test of the broken engine gets a fresh worker (it segfaults anew, it is
    not told the worker is gone); a hang fails its test at the deadline."""
    images, pairs = tiny
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "conftest.py").write_text(
        f"from harness import engines\nengines.BUILTINS['faulty'] = {fault_engines.TARGET!r}\n"
    )
    (proj / "test_ours.py").write_text(
        textwrap.dedent("""
        import numpy as np

        def test_accuracy(facenet_engine, facenet_gate):
            facenet_gate.accuracy(facenet_engine)

        def test_again(facenet_engine):
            assert facenet_engine.run(np.zeros((2, 3, 160, 160), np.float32)).shape == (2, 512)
    """)
    )
    base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--facenet-backend", "faulty"]
    base += ["--lfw-dir", str(images), "--lfw-pairs", str(pairs), "--lfw-boxes", ""]
    base += [
        "--facenet-reference-onnx",
        str(facenet_reference_model.path),
        "--facenet-cache",
        str(facenet_gate.cache_dir),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    for name in ("PYTEST_ADDOPTS", "LFW_DIR", "LFW_PAIRS", "LFW_BOXES"):
        env.pop(name, None)
    for fault, said in (("segfault", "died of SIGSEGV"), ("hang", "did not answer within 3 s")):
        junit = tmp_path / f"{fault}.xml"
        args = base + [
            "--facenet-engine-option",
            f"fault={fault}",
            "--facenet-call-deadline",
            "3",
            f"--junitxml={junit}",
        ]
        proc = subprocess.run(args, cwd=proj, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 1, (proc.stdout + proc.stderr)[-3000:]
        cases = {c.get("name"): c for c in ElementTree.parse(junit).iter("testcase")}
        assert set(cases) == {f"test_{t}[faulty-{p}]" for t in ("accuracy", "again") for p in ("fp32", "fp16")}
        for name, case in cases.items():
            failure = case.find("failure")
            if "fp16" in name:
                assert failure is None, failure.get("message")
            else:  # each test of the broken engine fails for what it did, the second one in a fresh worker
                assert failure is not None and said in failure.get("message"), name
                assert "the worker is gone" not in failure.get("message")


def test_killing_the_gate_takes_its_worker_and_leaves_an_incomplete_report(
    tiny, facenet_reference_model, facenet_gate, tmp_path
):
    out = tmp_path / "out"
    site = tmp_path / "site"
    (site / "faulty_dist-0.1.dist-info").mkdir(parents=True)
    (site / "faulty_dist-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: faulty-dist\nVersion: 0.1\n"
    )
    (site / "faulty_dist-0.1.dist-info" / "entry_points.txt").write_text(
        f"[facenet_harness.engines]\nfaulty = {fault_engines.TARGET}\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site)] + [p for p in sys.path if p])}
    args = gate_args(tiny, facenet_reference_model, facenet_gate.cache_dir, out, "--call-deadline", "600")
    args += ["--engine-option", "fault=hang"]
    gate = subprocess.Popen([sys.executable, "-m", "harness", *args], env=env, stderr=subprocess.DEVNULL)
    try:
        worker = None
        for _ in range(600):  # the worker up and the engine hung in its first call
            time.sleep(0.2)
            kids = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == gate.pid]
            doc = json.loads((out / "gate.json").read_text()) if (out / "gate.json").exists() else {}
            if kids and doc.get("status", "").startswith("in progress"):
                worker = kids[0]
                time.sleep(3)
                break
        assert worker is not None, "the gate never started its worker"
    finally:
        gate.send_signal(signal.SIGKILL)
        gate.wait()
    for _ in range(50):
        if _ppid(worker) is None:
            break
        time.sleep(0.1)
    assert _ppid(worker) is None, "the worker outlived the gate"
    doc = json.loads((out / "gate.json").read_text())
    assert doc["complete"] is False and doc["verdict"] != "PASS" and doc["status"].startswith("in progress")


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else int(fields[1])


@pytest.fixture(scope="module")
def crops(facenet_lfw):
    return facenet_lfw.batch(list(range(8)))


def test_dataset_digest_is_kept_when_it_travels(tmp_path):
    images, pairs = test_data.make_prealigned(tmp_path)
    ds = Dataset(images, pairs)
    digest = ds.digest
    assert pickle.loads(pickle.dumps(ds))._digest == digest
