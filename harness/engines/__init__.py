"""The engine registry: the built-in engines plus every engine installed under the entry-point group
``facenet_harness.engines``, loaded lazily (a listing imports an engine's module, never its SDK).

A third-party package makes its engine known with, in its pyproject.toml::

    [project.entry-points."facenet_harness.engines"]
    myengine = "my_package.engine:MyEngine"    # a subclass of harness.engines.Engine

and it then appears in ``facenet-harness engines``, in ``--backend myengine`` and in the pytest
plugin's parametrisation, with no change to the harness.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
from collections.abc import Callable

from harness.core.errors import HarnessError
from harness.engines.base import Availability, Capability, Engine, EngineContext, EngineUnavailable, Option
from harness.engines.isolation import ISOLATIONS, Deadlines, IsolatedEngine, isolated_class

__all__ = [
    "Availability",
    "Capability",
    "Engine",
    "EngineContext",
    "EngineUnavailable",
    "Option",
    "Deadlines",
    "IsolatedEngine",
    "ISOLATIONS",
    "Planned",
    "launch",
    "load_target",
    "ENTRY_POINT_GROUP",
    "EngineEntry",
    "CatalogueItem",
    "entries",
    "engine_class",
    "catalogue",
    "create",
    "parse_options",
]

ENTRY_POINT_GROUP = "facenet_harness.engines"
BUILTINS = {
    "onnxruntime": "harness.engines.onnxruntime:OnnxRuntimeEngine",
    "tensorrt": "harness.engines.tensorrt:TensorRTEngine",
    "ixrt": "harness.engines.tensorrt:IxRTEngine",
    "torch": "harness.engines.torch:TorchEngine",
}


@dataclasses.dataclass(frozen=True)
class EngineEntry:
    name: str
    target: str  # "module:Class"
    source: str  # "built-in" or "<distribution> <version>"

    def load(self) -> type[Engine]:
        obj = load_target(self.target, f"engine {self.name!r} ({self.source})")
        if getattr(obj, "name", None) != self.name:
            raise HarnessError(
                f"engine {self.name!r} ({self.source}): {self.target}.name is "
                f"{getattr(obj, 'name', None)!r}; it must equal the entry-point name."
            )
        return obj


def load_target(target: str, what: str = "engine") -> type[Engine]:
    """The Engine subclass ``module:Class`` names; HarnessError saying why when it cannot be loaded."""
    module, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as e:  # a broken plug-in must not take the harness down
        raise HarnessError(f"{what}: cannot load {target} ({type(e).__name__}: {e}).") from None
    if not (isinstance(obj, type) and issubclass(obj, Engine)):
        raise HarnessError(f"{what}: {target} is not a subclass of harness.engines.Engine.")
    return obj


def entries() -> dict[str, EngineEntry]:
    """Every engine known: built-ins first, then installed plug-ins (which may not shadow a built-in)."""
    out = {name: EngineEntry(name, target, "built-in") for name, target in BUILTINS.items()}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        source = f"{dist.metadata['Name']} {dist.version}" if dist is not None else "entry point"
        if ep.name in BUILTINS:
            if ep.value != BUILTINS[ep.name]:
                raise HarnessError(
                    f"{source} registers an engine named {ep.name!r}, a built-in engine's name; "
                    "rename it in its entry points."
                )
            continue  # the harness's own distribution may list its built-ins too
        if ep.name in out and out[ep.name].target != ep.value:
            raise HarnessError(
                f"two installed packages register the engine {ep.name!r}: {out[ep.name].source} "
                f"and {source}; uninstall one."
            )
        out[ep.name] = EngineEntry(ep.name, ep.value, source)
    return out


def engine_class(name: str) -> type[Engine]:
    known = entries()
    if name not in known:
        raise HarnessError(
            f"unknown engine {name!r}; known: {', '.join(known)} (list them with 'facenet-harness engines')."
        )
    return known[name].load()


@dataclasses.dataclass(frozen=True)
class CatalogueItem:
    name: str
    precisions: tuple[str, ...]
    available: bool
    why: str
    source: str
    options: tuple[Option, ...] = ()
    capabilities: Capability = Capability.NONE
    unavailable_precisions: tuple[tuple[str, str], ...] = ()  # (precision, why) this machine cannot run


def catalogue() -> list[CatalogueItem]:
    """Each known engine, whether it can run here and why not; an engine that fails to load is listed too."""
    out = []
    for entry in entries().values():
        try:
            cls = entry.load()
            avail = _availability(cls)
        except HarnessError as e:
            out.append(CatalogueItem(entry.name, (), False, str(e), entry.source))
            continue
        out.append(
            CatalogueItem(
                entry.name,
                tuple(cls.precisions),
                avail.ok,
                avail.why,
                entry.source,
                tuple(cls.options),
                cls.capabilities,
                _unavailable_precisions(cls) if avail.ok else (),
            )
        )
    return out


def _unavailable_precisions(cls: type[Engine]) -> tuple[tuple[str, str], ...]:
    """The precisions of an available engine that this machine cannot run with its default options, and why."""
    out = []
    defaults = cls.resolve_options({})
    for precision in cls.precisions:
        try:
            avail = cls.precision_availability(precision, defaults)
        except Exception as e:  # a plug-in's check must not take the listing down
            avail = Availability(False, f"its precision check raised {type(e).__name__}: {e}")
        if not avail:
            out.append((precision, avail.why))
    return tuple(out)


def parse_options(items, flag: str) -> dict[str, str]:
    """``NAME=VALUE`` strings (a repeatable command-line flag) as engine options; the engine converts
    and checks the values (``Engine.resolve_options``)."""
    opts = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise HarnessError(f"{flag} {item!r}: expected NAME=VALUE.")
        opts[name.strip().replace("-", "_")] = value
    return opts


def _availability(cls: type[Engine]) -> Availability:
    """``cls.availability()``, with a plug-in's own exception or bare bool turned into an Availability."""
    try:
        avail = cls.availability()
    except Exception as e:  # a plug-in's check must not take the harness down
        return Availability(False, f"its availability check raised {type(e).__name__}: {e}")
    return avail if isinstance(avail, Availability) else Availability(bool(avail), getattr(avail, "why", ""))


def create(name: str, model, precision: str, context: EngineContext | None = None, **options) -> Engine:
    """The engine ``name`` for ``model`` at ``precision``, in this process; EngineUnavailable when it cannot
    run here."""
    cls = engine_class(name)
    avail = _availability(cls)
    if not avail:
        raise EngineUnavailable(f"engine {name!r} is not available here: {avail.why}")
    return cls(model, precision, context, **options)


def launch(
    name: str,
    model,
    precision: str,
    context: EngineContext | None = None,
    options: dict | None = None,
    isolation: str = "process",
    deadlines: Deadlines | None = None,
) -> Engine:
    """The engine under test: built in its own worker process (``isolation="process"``, the default;
    ``harness.engines.isolation``) or in this one (``"none"``, for debugging). Availability, the precision
    and the options are checked here first, so a user error is one before any process starts."""
    if isolation not in ISOLATIONS:
        raise HarnessError(f"isolation {isolation!r}: choose one of {', '.join(ISOLATIONS)}.")
    if isolation == "none":
        return create(name, model, precision, context, **(options or {}))
    entry = entries().get(name)
    cls = engine_class(name)
    assert entry is not None
    avail = _availability(cls)
    if not avail:
        raise EngineUnavailable(f"engine {name!r} is not available here: {avail.why}")
    return isolated_class(cls)(entry.target, model, precision, context, deadlines, **(options or {}))


@dataclasses.dataclass(frozen=True)
class Planned:
    """An engine the gate builds when it reaches it (so a build that crashes or hangs is that row's FAIL)."""

    name: str
    precision: str
    build: Callable[[], Engine]
