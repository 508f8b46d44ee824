"""The project's catalogue of deliberately broken engines: what a broken driver or SDK does to a process.

``FaultEngine`` is onnxruntime fp32/fp16 that misbehaves as its options say: ``fault`` is what it does,
``at_call`` on which inference call (0: while it is built), ``precision`` which of its precisions is
broken (the others are healthy, so one gate run shows a broken row beside a judged one). Registered by
the tests as the engine ``faulty`` (``harness.engines.BUILTINS``: the worker process loads it by its
``module:Class``).
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading

import numpy as np

from harness.engines import Option
from harness.engines.onnxruntime import OnnxRuntimeEngine

FAULTS = ("none", "segfault", "abort", "hang", "sys_exit", "os_exit", "device_error", "memory_error", "nan")
TARGET = "tests.fault_engines:FaultEngine"


def misbehave(fault: str) -> None:
    """Do what a broken engine does (returns for "none" and "nan": the caller spoils the output)."""
    if fault == "segfault":
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    elif fault == "abort":
        os.abort()  # SIGABRT, as a failed assertion in a vendor library
    elif fault == "hang":
        threading.Event().wait()  # never returns
    elif fault == "sys_exit":
        sys.exit(3)  # a fatal-error handler that exits with the code this tool means "no baseline"
    elif fault == "os_exit":
        os._exit(3)  # C exit() from inside the library: no exception, the process is gone
    elif fault == "device_error":
        raise RuntimeError("CUDA error 700: an illegal memory access was encountered")
    elif fault == "memory_error":
        raise MemoryError()


class FaultEngine(OnnxRuntimeEngine):
    name = "faulty"
    precisions = ("fp32", "fp16")
    options = OnnxRuntimeEngine.options + (
        Option("fault", str, "none", "what the engine does wrong", FAULTS),
        Option("at_call", int, 1, "on which inference call (0: while it is built)"),
        Option("broken", str, "fp32", "which precision is broken (the others are healthy)"),
    )

    def __init__(self, model, precision, context=None, **options):
        super().__init__(model, precision, context, **options)
        self.calls = 0
        if self.settings["at_call"] == 0 and self._broken():
            misbehave(self.settings["fault"])

    def _broken(self) -> bool:
        return self.precision == self.settings["broken"]

    def _run(self, batch):
        self.calls += 1
        out = super()._run(batch)
        if self._broken() and self.calls >= self.settings["at_call"] > 0:
            misbehave(self.settings["fault"])
            if self.settings["fault"] == "nan":
                out = np.array(out)
                out[0, 0] = np.nan
        return out
