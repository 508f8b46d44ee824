"""Soak: several engine instances at once, every output checked; the CPU engines in a short form.

The defective engines below are the real onnxruntime engine with one deploy bug added each (a buffer
shared between instances, memory kept per call): the soak must find each, and pass the clean engine.
"""

import json
import threading

import numpy as np
import pytest

from harness import cli, engines
from harness.checks import soak
from harness.core.verdicts import Verdict
from harness.engines.onnxruntime import OnnxRuntimeEngine

pytestmark = pytest.mark.conformance


def make(gate, cls=None, precision="fp32"):
    if cls is None:
        return lambda: engines.create("onnxruntime", gate.reference, precision, gate.engine_context())
    return lambda: cls(gate.reference, precision, gate.engine_context())


class SharedOutput(OnnxRuntimeEngine):
    """Every instance uses one module-level output buffer: cleared when a call starts, accumulated into
    when it ends (as a kernel writing C += A.B would). Right alone; wrong as soon as two calls overlap."""

    shared = np.zeros((64, 512), np.float32)

    def _run(self, batch):
        SharedOutput.shared[: len(batch)] = 0
        out = super()._run(batch)
        SharedOutput.shared[: len(out)] += out
        return SharedOutput.shared[: len(out)].copy()


class Leaky(OnnxRuntimeEngine):
    """Keeps 128 MiB of scratch per call, released only at close()."""

    kept: list = []
    lock = threading.Lock()

    def _run(self, batch):
        with Leaky.lock:
            Leaky.kept.append(np.ones(32 * 2**20, np.float32))  # written, so resident
        return super()._run(batch)

    def close(self):
        Leaky.kept.clear()
        super().close()


def test_clean_engines_soak_green(facenet_gate):
    r = soak.soak(facenet_gate, make(facenet_gate, precision="int8"), workers=2, seconds=4, min_rotations=3)
    assert r.verdict is Verdict.PASS, soak_reason(r)
    assert r.mismatches == 0 and r.first_mismatches == []
    assert r.checked_outputs == r.calls > 0 and r.rotations_min >= 1
    assert r.images >= r.calls
    assert r.max_change_vs_first_output == 0.0  # onnxruntime on the CPU repeats itself exactly
    assert r.engine["precision"] == "int8" and r.workers == 2
    assert r.rss_end_mib is None or r.rss_growth_mib is not None


def test_a_buffer_shared_between_instances_fails(facenet_gate):
    r = soak.soak(facenet_gate, make(facenet_gate, SharedOutput, "int8"), workers=2, seconds=4, min_rotations=3)
    assert r.verdict is Verdict.FAIL
    assert r.mismatches > 0 and r.first_mismatches
    m = r.first_mismatches[0]
    assert m.worker in (0, 1) and m.batch >= 0 and "cosine" in m.detail
    # alone, the same engine is right: the finding is the overlap, not the engine's arithmetic
    alone = soak.soak(facenet_gate, make(facenet_gate, SharedOutput, "int8"), workers=1, seconds=2, min_rotations=2)
    assert alone.mismatches == 0, soak_reason(alone)


def test_memory_kept_per_call_fails(facenet_gate):
    r = soak.soak(facenet_gate, make(facenet_gate, Leaky, "int8"), workers=2, seconds=4, min_rotations=3)
    assert r.mismatches == 0
    if r.rss_end_mib is None:
        pytest.skip("resident memory is not readable on this platform (/proc/self/statm)")
    assert r.verdict is Verdict.FAIL, (soak_reason(r), r.rss_warm_mib, r.rss_end_mib)
    assert any("resident memory grew" in why for why in r.reasons)
    assert r.rss_growth_mib > soak.LEAK_MIB
    assert Leaky.kept == []  # every engine was closed


@pytest.mark.parametrize(
    "error, shown",
    [(RuntimeError("device lost"), "RuntimeError: device lost"), (SystemExit(3), "SystemExit: 3")],
    ids=["raises", "sys.exit"],
)
def test_a_worker_error_is_a_finding_with_its_place(facenet_gate, error, shown):
    """An engine that raises, or exits the way a vendor library's fatal-error handler may (``sys.exit``,
    which a thread would otherwise swallow), fails the soak with what it did."""

    class Breaks(OnnxRuntimeEngine):
        calls = 0

        def _run(self, batch):
            Breaks.calls += 1
            if Breaks.calls == 3:
                raise error
            return super()._run(batch)

    r = soak.soak(facenet_gate, make(facenet_gate, Breaks, "int8"), workers=2, seconds=2, min_rotations=2)
    assert r.verdict is Verdict.FAIL
    assert any(shown in m.detail for m in r.first_mismatches), r.first_mismatches


def test_soak_command_writes_its_report(tmp_path, capsys):
    out = tmp_path / "soak.json"
    rc = cli.main(
        [
            "soak",
            "--precision",
            "int8",
            "--minutes",
            "0.05",
            "--workers",
            "2",
            "--min-rotations",
            "2",
            "--json",
            str(out),
        ]
    )
    data = json.loads(out.read_text())
    text = capsys.readouterr().out
    assert (rc, data["verdict"]) == (0, "PASS"), text
    assert data["workers"] == 2 and data["checked_outputs"] > 0 and data["mismatches"] == 0
    assert "FaceNet soak: 2 x onnxruntime int8" in text and "verdict" in text


def test_each_engine_lives_on_its_own_thread(facenet_gate):
    """Made, run and closed on one worker thread each (a pycuda context is current on the thread that
    pushed it; closing pops that thread's stack), never on the caller's."""
    seen = []

    class Tracked(OnnxRuntimeEngine):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.threads = {("made", threading.get_ident())}
            seen.append(self.threads)

        def _run(self, batch):
            self.threads.add(("ran", threading.get_ident()))
            return super()._run(batch)

        def close(self):
            self.threads.add(("closed", threading.get_ident()))
            super().close()

    r = soak.soak(facenet_gate, make(facenet_gate, Tracked, "int8"), workers=2, seconds=1, min_rotations=1)
    assert r.mismatches == 0, soak_reason(r)
    assert len(seen) == 2
    idents = [{t for _, t in s} for s in seen]
    assert all(len(i) == 1 for i in idents) and idents[0] != idents[1]
    assert threading.get_ident() not in idents[0] | idents[1]
    assert all({what for what, _ in s} == {"made", "ran", "closed"} for s in seen)


def test_an_engine_that_cannot_be_made_is_an_error_not_a_finding(facenet_gate):
    def broken():
        raise engines.EngineUnavailable("no such SDK here")

    with pytest.raises(engines.EngineUnavailable, match="no such SDK"):
        soak.soak(facenet_gate, broken, workers=2, seconds=3)
    assert not [t for t in threading.enumerate() if t.name.startswith("soak-")]


def test_bad_arguments_are_refused(facenet_gate):
    with pytest.raises(soak.HarnessError, match="at least 1 worker"):
        soak.soak(facenet_gate, make(facenet_gate), workers=0, seconds=1)


def soak_reason(r) -> str:
    return f"{r.verdict}: {r.reasons}; {r.first_mismatches[:2]}"
