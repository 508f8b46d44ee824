"""The engine interface every inference engine implements (built-in or installed as a plug-in).

An engine is built (or loaded) for one FaceNet model and one precision, runs preprocessed NCHW
float32 batches of any size, describes itself (name, version, device, precision: everything that
makes its outputs differ, so caches and reports are keyed by it) and releases what it holds in
``close()`` (or at the end of a ``with`` block).

What an engine may be configured with is declared, not guessed: ``options`` lists its settings
(name, type, default, help); an option it does not declare is an error. Optional abilities are
declared in ``capabilities``:
  * ``Capability.COMPUTE_ONLY``: ``load_in_place(batch)`` / ``execute_in_place()`` /
    ``fetch_in_place()`` time execution alone on data already on the device;
  * ``Capability.TIMING_SPLIT``: ``timings`` holds copy-in / compute / copy-out milliseconds of the
    last batch.
``device_kind`` ("cpu" or "gpu") says where it computes: a CPU engine's throughput is keyed by the
CPU's identity and normalised by a CPU canary, a GPU engine's by the GPU's name and compute capability.
``availability()`` must be cheap and must not import a heavy SDK (``importlib.util.find_spec``).
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import enum
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from harness.core.errors import EngineFault, HarnessError
from harness.model import ModelInfo


class EngineUnavailable(HarnessError):
    """The engine cannot run on this machine (no SDK, no device): a skip, not a failure, in tests."""


class Capability(enum.Flag):
    NONE = 0
    COMPUTE_ONLY = enum.auto()
    TIMING_SPLIT = enum.auto()


@dataclasses.dataclass(frozen=True)
class Availability:
    ok: bool
    why: str = ""

    def __bool__(self) -> bool:
        return self.ok


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting an engine accepts (``--engine-option name=value`` on the command line)."""

    name: str
    type: Callable[[Any], Any]
    default: Any
    help: str
    choices: tuple | None = None

    def convert(self, engine: str, value: Any) -> Any:
        try:
            v = self.type(value)
        except (TypeError, ValueError) as e:
            raise HarnessError(
                f"engine {engine!r}: option {self.name}={value!r} is not a valid "
                f"{getattr(self.type, '__name__', self.type)} ({e})."
            ) from None
        if self.choices is not None and v not in self.choices:
            raise HarnessError(
                f"engine {engine!r}: option {self.name}={v!r}; choose one of {', '.join(map(str, self.choices))}."
            )
        return v


@dataclasses.dataclass(frozen=True)
class EngineContext:
    """What the harness lends every engine: where to cache artifacts, and the dataset (INT8 calibration)."""

    cache_dir: Path | None = None
    dataset: Any = None  # harness.lfw.data.Dataset


class Engine(abc.ABC):
    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]
    options: ClassVar[tuple[Option, ...]] = ()
    capabilities: ClassVar[Capability] = Capability.NONE
    device_kind: ClassVar[str] = "cpu"  # "cpu" or "gpu": where it computes (perf identity, canary)

    @classmethod
    def availability(cls) -> Availability:
        """Whether this engine can run here, and if not why; cheap, no SDK import."""
        return Availability(True)

    @classmethod
    def precision_availability(cls, precision: str, settings: dict[str, Any]) -> Availability:
        """Whether ``precision`` can run here with these (resolved) options, and if not why. The default:
        the engine's availability; an engine whose precisions depend on the device (e.g. TF32 needs a GPU)
        says so here, so the gate can leave out what this machine cannot run instead of failing on it."""
        return cls.availability()

    @classmethod
    def resolve_options(cls, given: dict[str, Any]) -> dict[str, Any]:
        """The declared options with defaults applied; an undeclared option is a HarnessError."""
        known = {o.name: o for o in cls.options}
        unknown = sorted(set(given) - set(known))
        if unknown:
            offered = ", ".join(sorted(known)) or "none"
            raise HarnessError(f"engine {cls.name!r} has no option {', '.join(unknown)}; its options: {offered}.")
        return {
            n: (o.convert(cls.name, given[n]) if n in given and given[n] is not None else o.default)
            for n, o in known.items()
        }

    def __init__(self, model: ModelInfo, precision: str, context: EngineContext | None = None, **options):
        if precision not in self.precisions:
            raise HarnessError(
                f"engine {self.name!r} offers precisions {', '.join(self.precisions)}; got {precision!r}."
            )
        self.model = model
        self.precision = precision
        self.context = context or EngineContext()
        self.settings = self.resolve_options(options)
        self.timings: dict[str, float] = {}
        self.closed = False

    # --- what an engine implements -------------------------------------------------------------

    @abc.abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Run exactly one engine batch (already padded to the static batch size, if any)."""

    @abc.abstractmethod
    def describe(self) -> dict:
        """``backend``, ``version``, ``device``, ``precision`` and whatever else changes its outputs."""

    def close(self) -> None:
        """Release sessions, device memory, streams and contexts. Idempotent."""
        self.closed = True

    # --- optional capabilities (declared in ``capabilities``) -------------------------------------

    def load_in_place(self, batch: np.ndarray) -> None:
        raise NotImplementedError(f"{self.name} does not declare Capability.COMPUTE_ONLY")

    def execute_in_place(self) -> None:
        raise NotImplementedError(f"{self.name} does not declare Capability.COMPUTE_ONLY")

    def fetch_in_place(self) -> np.ndarray:
        raise NotImplementedError(f"{self.name} does not declare Capability.COMPUTE_ONLY")

    def debug_tensors(self, batch: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        """Intermediate tensors of running ``batch``, keyed by the names of the ONNX tensors the engine was
        built from (``harness.checks.diagnose`` compares them with the reference's, layer by layer). Return the
        ones the engine can expose; those its fusions hide are left out. An engine that cannot expose any
        raises NotImplementedError with the reason. (onnxruntime engines need not implement it: their ONNX
        graph is run with its intermediates exposed.)"""
        raise NotImplementedError(
            f"{self.name} does not expose intermediate tensors (Engine.debug_tensors is not "
            "implemented; for TensorRT 10 it would mark them with INetworkDefinition.mark_debug "
            "in a separate build and read them with an IDebugListener)"
        )

    def profile(self, batch: np.ndarray, runs: int = 3) -> tuple[dict[str, float], str]:
        """Where a batch's time goes: milliseconds per batch by stage, and how they were measured.

        The default: the copy-in / compute / copy-out split of ``Capability.TIMING_SPLIT`` engines, else
        the engine call as one stage; averaged over ``runs`` after one warm-up. Engines with a profiler
        (onnxruntime) split it further, by operator."""
        self.run(batch)
        total = 0.0
        stages: collections.Counter[str] = collections.Counter()
        for _ in range(runs):
            start = time.perf_counter()
            self.run(batch)
            total += time.perf_counter() - start
            if Capability.TIMING_SPLIT in self.capabilities:
                stages.update(self.timings)
        if stages:
            out = {k.removesuffix("_ms"): v / runs for k, v in stages.items()}
            out["host overhead"] = max(total * 1e3 / runs - sum(out.values()), 0.0)
            return out, "the engine's own copy-in/compute/copy-out timings"
        return {"engine call": total * 1e3 / runs}, "wall time of the engine call"

    # --- what the harness calls ------------------------------------------------------------------

    @property
    def label(self) -> str:
        return f"{self.name} {self.precision}"

    @property
    def implementation(self) -> str:
        """The class that computes the outputs (``module.Class``): part of every cache key of them."""
        return f"{type(self).__module__}.{type(self).__qualname__}"

    def clock(self) -> float:
        """Seconds, for timing this engine's calls (an isolated engine's clock stops while a call is in
        transit, so throughput never counts the IPC)."""
        return time.perf_counter()

    def executed_graph(self) -> tuple[Path, int] | None:
        """The ONNX file this engine executes as written, and the onnxruntime graph optimisation level
        it runs it at, when it runs an ONNX graph itself (``harness.checks.diagnose`` then reruns that
        graph with its intermediates exposed); None for an SDK that compiles its own."""
        return None

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Embeddings (N,512) float32 of a preprocessed (N,3,160,160) batch of any N.

        Static-batch engines are padded here, with fresh zeros, so a partial last batch never returns
        rows of an earlier one. A graph cut before its L2 normalisation is normalised here.
        """
        if self.closed:
            raise HarnessError(f"{self.label}: the engine was closed; create a new one.")
        n = len(batch)
        static = self.model.batch
        if static is None:
            out = np.asarray(self._call(np.ascontiguousarray(batch, np.float32)), np.float32)
        else:
            chunks = []
            for start in range(0, n, static):
                chunk = batch[start : start + static]
                padded = np.zeros((static,) + chunk.shape[1:], np.float32)
                padded[: len(chunk)] = chunk
                chunks.append(np.asarray(self._call(padded), np.float32)[: len(chunk)])
            out = np.concatenate(chunks) if chunks else np.zeros((0, 512), np.float32)
        if not self.model.normalized:
            out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def _call(self, batch: np.ndarray) -> np.ndarray:
        """``_run``, with anything the engine raises turned into an ``EngineFault`` that says so."""
        try:
            return self._run(batch)
        except EngineFault:
            raise
        except HarnessError as e:
            raise EngineFault(f"{self.label}: {e}") from e
        except Exception as e:  # noqa: BLE001 - the engine under test is expected to misbehave
            raise EngineFault(f"{self.label}: the engine raised {type(e).__name__}: {e}") from e

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label} {self.model.path}>"
