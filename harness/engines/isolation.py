"""The engine under test in its own process: a crash, an abort, ``sys.exit``, a hang or a sticky device
error of the engine is a verdict about the engine, never the end of the harness.

``launch`` starts a fresh Python interpreter (``python -m harness.engines.worker``: spawned, never forked,
so no CUDA context, SDK state or thread of the harness is inherited), builds the engine there and hands
back an ``IsolatedEngine``: an ``Engine`` whose every call is answered by that worker. The harness keeps
the data, the reference, the judging and the reports. Batches go through a memory-mapped file in
/dev/shm (never pickled); embeddings (N x 512) come back over the worker's socket.

Faults become ``EngineFault`` with what happened and when:
  * the worker died: its signal (SIGSEGV, SIGABRT, SIGKILL from the OOM killer) or exit code, and its
    last output lines;
  * it did not answer: the build deadline, or the call deadline (``Deadlines``: a generous floor, or a
    multiple of the slowest per-image time it has shown so far); it is then killed;
  * it raised (``SystemExit`` included) or returned garbage: the exception, as in-process.
A failed worker stays failed: every later call raises the same fault at once, and the next engine gets
a fresh worker.

Time measured for throughput excludes the IPC: the worker times each engine call itself and ``clock()``
is a clock that stops while a call is in transit (``harness.checks.throughput`` times with it).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from harness.core.errors import EngineFault, HarnessError
from harness.engines.base import Engine, EngineContext, EngineUnavailable
from harness.model import ModelInfo

ISOLATIONS = ("process", "none")
TAIL_LINES = 40


@dataclasses.dataclass(frozen=True)
class Deadlines:
    """How long a worker may take before it is declared hung (seconds)."""

    build_s: float = 3600.0  # building the engine (an INT8 calibration on a slow CPU, a TensorRT build)
    call_s: float = 300.0  # the floor of every call's deadline (also the first call's: lazy initialisation)
    factor: float = 20.0  # a call may take this many times the slowest per-image time seen so far

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if not getattr(self, f.name) > 0:
                raise HarnessError(f"deadline {f.name} must be positive, got {getattr(self, f.name)}.")


def _shm_dir() -> str:
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()


def _describe_exit(rc: int | None) -> str:
    if rc is None:
        return "stopped answering"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        extra = " (killed: out of memory, or by someone)" if -rc == signal.SIGKILL else ""
        return f"died of {name}{extra}"
    return f"exited with code {rc}"


class IsolatedEngine(Engine):
    """An engine answered by its own worker process (made by ``launch``; see the module docstring)."""

    def __init__(
        self,
        target: str,
        model: ModelInfo,
        precision: str,
        context: EngineContext | None = None,
        deadlines: Deadlines | None = None,
        **options,
    ):
        super().__init__(model, precision, context, **options)  # checks the precision and the options here
        self.target = target
        self.deadlines = deadlines or Deadlines()
        self.ipc_seconds = 0.0  # wall time of calls in transit (not in the engine): the clock leaves it out
        self.calls = 0
        self.failure: str | None = None
        self._per_image_s: float | None = None
        self._lock = threading.Lock()
        self._buffer: np.memmap | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._describe: dict | None = None
        self._implementation = target.replace(":", ".")
        self._proc: subprocess.Popen | None = None
        self._start()

    # --- the worker ---------------------------------------------------------------------------------

    def _start(self) -> None:
        parent, child = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # the same harness and plug-ins
        env.setdefault("PYTHONUNBUFFERED", "1")
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "harness.engines.worker", str(child.fileno())],
                pass_fds=[child.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
            )
        finally:
            child.close()
        self._conn = Connection(parent.detach())
        self._reader = threading.Thread(target=self._relay, name=f"{self.label} worker output", daemon=True)
        self._reader.start()
        try:
            info = self._call_worker(
                "build",
                (self.target, self.model, self.precision, self.context, self.settings),
                self.deadlines.build_s,
                "build",
            )
        except BaseException:
            self.close()
            raise
        self._describe = info["describe"]
        self._implementation = info["implementation"]
        self.settings = info["settings"]

    def _relay(self) -> None:
        """The worker's stdout and stderr, passed on to ours (prefixed) and kept for fault reports."""
        assert self._proc is not None and self._proc.stdout is not None
        for raw in iter(self._proc.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            self._tail.append(line)
            with contextlib.suppress(Exception):
                print(f"[{self.label} worker] {line}", file=sys.stderr, flush=True)

    def _last_output(self) -> str:
        self._reader.join(timeout=2.0)
        noise = ("harness/engines/worker.py", "<frozen runpy>", "Extension modules:")  # the worker's own frames
        lines = [line.strip() for line in self._tail if line.strip() and not any(n in line for n in noise)]
        return ("; its last output: " + " | ".join(lines[-6:])) if lines else "; it printed nothing"

    def _kill(self) -> int | None:
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.kill()
        try:
            return self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # unkillable (stuck in the kernel, a hung driver)
            return None

    def _where_stuck(self) -> None:
        if self._proc is not None and self._proc.poll() is None and hasattr(signal, "SIGUSR1"):
            with contextlib.suppress(OSError):
                self._proc.send_signal(signal.SIGUSR1)  # the worker's faulthandler prints its threads' stacks
                time.sleep(1.0)

    def _fail(self, what: str) -> EngineFault:
        self.failure = f"{self.label}: {what}"
        return EngineFault(self.failure)

    def _call_worker(self, op: str, args: tuple, deadline: float, when: str) -> Any:
        if self.failure is not None:
            raise EngineFault(f"{self.failure} (the worker is gone; a new engine gets a new one)")
        if self.closed:
            raise HarnessError(f"{self.label}: the engine was closed; create a new one.")
        with self._lock:
            start = time.perf_counter()
            try:
                self._conn.send((op, args))
                ready = self._conn.poll(deadline)
                reply = self._conn.recv() if ready else None
            except (EOFError, OSError):
                reply = ready = None
            wall = time.perf_counter() - start
            if reply is None:
                if ready is False:  # nothing within the deadline: hung; where it is stuck, then kill it
                    self._where_stuck()
                    self._kill()
                    raise self._fail(
                        f"the engine's worker process did not answer within {deadline:.0f} s during {when} "
                        f"and was killed{self._last_output()}"
                    )
                try:
                    rc = self._proc.wait(timeout=10) if self._proc else None
                except subprocess.TimeoutExpired:
                    rc = self._kill()
                raise self._fail(f"the engine's worker process {_describe_exit(rc)} during {when}{self._last_output()}")
            status, value, info = reply
            self.ipc_seconds += max(wall - info.get("seconds", 0.0), 0.0)
            self.calls += 1
            if info.get("timings") is not None:
                self.timings = info["timings"]
        if status == "ok":
            return value
        kind, message = value
        if kind == "unavailable":
            self.close()
            raise EngineUnavailable(message)
        if kind == "harness":
            raise HarnessError(message)
        if kind == "notimplemented":
            raise NotImplementedError(message)
        said = message if message.startswith(self.label) else f"{self.label}: {message}"
        raise EngineFault(said if when == "inference" else f"{said} (during {when})")

    def _upload(self, batch: np.ndarray) -> tuple:
        """Put ``batch`` (float32, C order) in the shared buffer; what the worker needs to read it."""
        batch = np.ascontiguousarray(batch, np.float32)
        if self._buffer is None or self._buffer.nbytes < batch.nbytes:
            fd, path = tempfile.mkstemp(prefix="facenet-harness-batch-", dir=_shm_dir())
            try:
                os.ftruncate(fd, max(batch.nbytes, 1))
                self._buffer = np.memmap(path, np.uint8, "r+", shape=(max(batch.nbytes, 1),))
                self._call_worker("map", (path, self._buffer.nbytes), self.deadlines.call_s, "sharing a batch buffer")
            finally:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(path)  # both sides hold it mapped; nothing is left behind whatever happens next
        self._buffer[: batch.nbytes] = batch.reshape(-1).view(np.uint8)
        return batch.shape

    def _deadline(self, images: int) -> float:
        d = self.deadlines
        if self._per_image_s is None:
            return d.call_s
        return max(d.call_s, d.factor * self._per_image_s * max(images, 1))

    def _timed(self, op: str, images: int, args: tuple, when: str) -> Any:
        value, seconds = self._call_worker(op, args, self._deadline(images), when)
        if images:
            per = seconds / images
            self._per_image_s = per if self._per_image_s is None else max(self._per_image_s, per)
        return value

    # --- Engine ---------------------------------------------------------------------------------------

    def _run(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - run() is answered by the worker
        return self.run(batch)

    def run(self, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        shape = self._upload(batch)
        return self._timed("run", n, (shape,), "inference")

    def describe(self) -> dict:
        assert self._describe is not None
        return dict(self._describe)

    @property
    def implementation(self) -> str:
        return self._implementation

    def clock(self) -> float:
        return time.perf_counter() - self.ipc_seconds

    def load_in_place(self, batch: np.ndarray) -> None:
        shape = self._upload(batch)
        self._call_worker("load_in_place", (shape,), self._deadline(len(batch)), "loading a batch in place")

    def execute_in_place(self) -> None:
        self._timed("execute_in_place", 0, (), "an in-place execution")

    def fetch_in_place(self) -> np.ndarray:
        return self._call_worker("fetch_in_place", (), self.deadlines.call_s, "fetching in-place outputs")

    def debug_tensors(self, batch: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        shape = self._upload(batch)
        deadline = self._deadline(len(batch) * 4)
        return self._call_worker("debug_tensors", (shape, names), deadline, "reading intermediate tensors")

    def profile(self, batch: np.ndarray, runs: int = 3) -> tuple[dict[str, float], str]:
        shape = self._upload(batch)
        return self._call_worker("profile", (shape, runs), self._deadline(len(batch) * (runs + 1)), "profiling a batch")

    def executed_graph(self) -> tuple[Path, int] | None:
        return self._call_worker("executed_graph", (), self.deadlines.call_s, "naming its graph")

    def device_fingerprint(self) -> dict:
        return self._call_worker("device_fingerprint", (), self.deadlines.call_s, "reading its device")

    def restart(self) -> None:
        """A fresh worker with a freshly built engine, after this one failed (its fault was reported)."""
        self.close()
        self.closed, self.failure, self._per_image_s, self.ipc_seconds = False, None, None, 0.0
        self._tail.clear()
        self._start()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if self.failure is None and proc.poll() is None:
                with self._lock:
                    self._conn.send(("close", ()))
                    if self._conn.poll(self.deadlines.call_s):
                        self._conn.recv()
            proc.wait(timeout=self.deadlines.call_s)
        except (EOFError, OSError, subprocess.TimeoutExpired):
            pass
        finally:
            if proc.poll() is None:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=30)
            self._conn.close()
            self._buffer = None

    def __del__(self):
        with contextlib.suppress(Exception):
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()


def isolated_class(cls: type[Engine]) -> type[IsolatedEngine]:
    """``IsolatedEngine`` declaring what ``cls`` declares (name, precisions, options, capabilities, device)."""
    return type(
        f"Isolated{cls.__name__}",
        (IsolatedEngine,),
        {
            "name": cls.name,
            "precisions": tuple(cls.precisions),
            "options": tuple(cls.options),
            "capabilities": cls.capabilities,
            "device_kind": cls.device_kind,
            "__module__": __name__,
        },
    )
