"""The worker process an engine under test runs in (``python -m harness.engines.worker FD``).

It serves one engine over the socket ``FD`` for ``harness.engines.isolation.IsolatedEngine``: requests are
``(op, args)``, answers ``(status, value, info)`` with ``info["seconds"]`` the time the engine call took
here (throughput never counts the transit) and ``info["timings"]`` the engine's own split. Batches are
read from the memory-mapped buffer the harness names (``map``). It exits when the harness closes it or
goes away (its parent's death kills it: ``PR_SET_PDEATHSIG`` on Linux, else a watch on the parent).
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import numpy as np


def _die_with_parent() -> None:
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="parent watch", daemon=True).start()


class Worker:
    def __init__(self):
        self.engine: Any = None
        self.buffer: np.memmap | None = None

    def batch(self, shape: tuple) -> np.ndarray:
        assert self.buffer is not None, "no batch buffer mapped"
        count = int(np.prod(shape))
        return self.buffer[: count * 4].view(np.float32).reshape(shape)

    def handle(self, op: str, args: tuple) -> tuple[Any, float]:
        """The answer to one request and the seconds the engine call itself took."""
        if op == "build":
            from harness.engines import _availability, load_target

            target, model, precision, context, settings = args
            cls = load_target(target)
            avail = _availability(cls)
            if not avail:
                from harness.engines.base import EngineUnavailable

                raise EngineUnavailable(f"engine {cls.name!r} is not available here: {avail.why}")
            start = time.perf_counter()
            self.engine = cls(model, precision, context, **settings)
            seconds = time.perf_counter() - start
            return {
                "describe": self.engine.describe(),
                "implementation": self.engine.implementation,
                "settings": dict(self.engine.settings),  # as the engine resolved them (defaults it derives)
            }, seconds
        if op == "map":
            path, size = args
            self.buffer = np.memmap(path, np.uint8, "r", shape=(size,))
            return None, 0.0
        engine = self.engine
        if op == "run":
            batch = self.batch(args[0])
            start = time.perf_counter()
            out = engine.run(batch)
            seconds = time.perf_counter() - start
            return (out, seconds), seconds
        if op == "load_in_place":
            engine.load_in_place(np.array(self.batch(args[0])))
            return None, 0.0
        if op == "execute_in_place":
            start = time.perf_counter()
            engine.execute_in_place()
            seconds = time.perf_counter() - start
            return (None, seconds), seconds
        if op == "fetch_in_place":
            return np.array(engine.fetch_in_place()), 0.0
        if op == "debug_tensors":
            shape, names = args
            return engine.debug_tensors(np.array(self.batch(shape)), names), 0.0
        if op == "profile":
            shape, runs = args
            start = time.perf_counter()
            out = engine.profile(np.array(self.batch(shape)), runs)
            return out, time.perf_counter() - start
        if op == "executed_graph":
            return engine.executed_graph(), 0.0
        if op == "device_fingerprint":
            fingerprint = getattr(engine, "device_fingerprint", None)
            return (fingerprint() if callable(fingerprint) else {}), 0.0
        raise ValueError(f"unknown request {op!r}")


def _error(e: BaseException) -> tuple[str, str]:
    from harness.core.errors import EngineFault, HarnessError
    from harness.engines.base import EngineUnavailable

    if isinstance(e, EngineUnavailable):
        return "unavailable", str(e)
    if isinstance(e, EngineFault):
        return "fault", str(e)
    if isinstance(e, HarnessError):
        return "harness", str(e)
    if isinstance(e, NotImplementedError):
        return "notimplemented", str(e)
    if isinstance(e, SystemExit):
        return "fault", f"the engine called sys.exit({e.code!r})"
    return "fault", f"the engine raised {type(e).__name__}" + (f": {e}" if str(e) else "")


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the harness's to handle; it then closes us
    faulthandler.enable()  # a crash prints the Python stack: the harness reports the last lines
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # where a hung engine is stuck, asked before the kill
    _die_with_parent()
    conn = Connection(int(argv[1]))
    worker = Worker()
    while True:
        try:
            op, args = conn.recv()
        except (EOFError, OSError):
            break  # the harness went away
        if op == "close":
            if worker.engine is not None:
                try:
                    worker.engine.close()
                except BaseException as e:  # noqa: BLE001 - said, then we exit anyway
                    print(f"closing the engine raised {type(e).__name__}: {e}", file=sys.stderr)
            conn.send(("ok", None, {}))
            break
        timings = None
        try:
            value, seconds = worker.handle(op, args)
            status = "ok"
        except BaseException as e:  # noqa: BLE001 - the engine under test is expected to misbehave
            value, seconds, status = _error(e), 0.0, "error"
        if worker.engine is not None:
            timings = dict(getattr(worker.engine, "timings", {}) or {})
        try:
            conn.send((status, value, {"seconds": seconds, "timings": timings}))
        except Exception as e:  # noqa: BLE001 - an answer that cannot be sent (unpicklable) is a fault
            conn.send(("error", ("fault", f"its answer could not be sent ({type(e).__name__}: {e})"), {}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
