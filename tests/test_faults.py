"""A broken engine is a FAIL of its own row, said plainly, and the gate goes on to judge the next one.

Deliberately broken engines (the engine under test is expected to misbehave): one returning NaN for one
image, one raising a device error on its third batch, one returning the wrong shape. What the engine
did becomes the row's ``fault``; the healthy engine after them is still judged. These run in-process
(the gate takes engines as given); crashes, hangs and exits of an engine in its own worker process are
``tests/test_isolation.py``'s.
"""

import numpy as np
import pytest

from harness import cli
from harness.core.errors import EngineFault
from harness.core.verdicts import Verdict
from harness.engines.onnxruntime import OnnxRuntimeEngine


class NaNRow(OnnxRuntimeEngine):
    def _run(self, batch):
        out = np.array(super()._run(batch))
        out[0, 0] = np.nan
        return out


class DeviceError(OnnxRuntimeEngine):
    calls = 0

    def _run(self, batch):
        DeviceError.calls += 1
        if DeviceError.calls == 3:
            raise RuntimeError("CUDA error 700: an illegal memory access was encountered")
        return super()._run(batch)


class WrongShape(OnnxRuntimeEngine):
    def _run(self, batch):
        return super()._run(batch)[:, :128]


def test_each_fault_fails_its_row_and_the_next_engine_is_still_judged(facenet_gate, facenet_reference):
    ctx = facenet_gate.engine_context()
    broken = [cls(facenet_gate.reference, "fp32", ctx) for cls in (NaNRow, DeviceError, WrongShape)]
    report = facenet_gate.run([*broken, facenet_reference])
    rows = report.rows
    assert [r.verdict for r in rows[:3]] == [Verdict.FAIL] * 3 and report.verdict is Verdict.FAIL
    assert "during accuracy" in rows[0].fault and "produced NaN/Inf embeddings for 1 images" in rows[0].fault
    assert "the engine raised RuntimeError: CUDA error 700" in rows[1].fault
    assert "output shape (64, 128), expected (64, 512)" in rows[2].fault
    assert rows[3].fault is None and rows[3].accuracy is not None  # the healthy one after them: judged
    assert rows[3].verdict in (Verdict.PASS, Verdict.NO_BASELINE)
    md = str(report)
    assert "**Engine fault** during accuracy" in md
    for e in broken:
        e.close()


def test_an_engine_fault_is_fail_exit_1_not_a_user_error(monkeypatch, capsys, facenet_gate):
    """NaN from the engine under `facenet-harness accuracy` exited 2 ("user error"); it is the engine's FAIL."""

    def accuracy(args):
        raise EngineFault("onnxruntime fp32: produced NaN/Inf embeddings for 1 images")

    monkeypatch.setitem(cli.COMMANDS, "accuracy", accuracy)
    assert cli.main(["accuracy"]) == cli.EXIT_FAIL == 1
    assert "FAIL: onnxruntime fp32: produced NaN/Inf" in capsys.readouterr().err


@pytest.mark.parametrize("error", [MemoryError(), ValueError("bad kernel")], ids=["MemoryError", "ValueError"])
def test_whatever_an_engine_raises_is_its_fault_naming_the_type(facenet_gate, error):
    class Raises(OnnxRuntimeEngine):
        def _run(self, batch):
            raise error

    with Raises(facenet_gate.reference, "fp32", facenet_gate.engine_context()) as engine:
        with pytest.raises(EngineFault, match=rf"onnxruntime fp32: the engine raised {type(error).__name__}"):
            engine.run(np.zeros((1, 3, 160, 160), np.float32))
