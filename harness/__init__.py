"""facenet-harness: conformance, accuracy and performance gate for FaceNet inference engines.

    from harness import Gate, Verdict

``Gate`` (``harness.gate``) runs the checks and returns typed results (``harness.core.results``);
``harness.engines`` is the engine registry and contract; ``harness.testing`` the engine authors' kit.
The names are loaded on first use, so ``import harness`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.core.verdicts import Verdict
    from harness.gate import Gate

__all__ = ["Gate", "Verdict"]


def __getattr__(name: str) -> Any:
    if name == "Gate":
        from harness import report  # noqa: F401 - installs the text renderer: str(result) explains it
        from harness.gate import Gate

        return Gate
    if name == "Verdict":
        from harness.core.verdicts import Verdict

        return Verdict
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
