"""Typed verdicts: what a gate decides, and the checks it decided by."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable


class Verdict(enum.StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"  # measured, but the measurement cannot decide (too noisy)
    NO_BASELINE = "NO BASELINE"  # nothing recorded to judge against

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of(cls, ok: bool) -> Verdict:
        return cls.PASS if ok else cls.FAIL

    @classmethod
    def combine(cls, verdicts: Iterable[Verdict]) -> Verdict:
        """Several verdicts into one: any FAIL fails, then INCONCLUSIVE, then NO BASELINE; none at all is
        NO BASELINE (nothing was judged, which is not a pass)."""
        vs = set(verdicts)
        for v in (cls.FAIL, cls.INCONCLUSIVE, cls.NO_BASELINE):
            if v in vs:
                return v
        return cls.PASS if vs else cls.NO_BASELINE

    @property
    def exit_code(self) -> int:
        """The command line's exit status for this verdict (2 is kept for user errors)."""
        return {Verdict.PASS: 0, Verdict.FAIL: 1, Verdict.NO_BASELINE: 3, Verdict.INCONCLUSIVE: 4}[self]


@dataclasses.dataclass(frozen=True)
class Check:
    """One gated quantity: its value, the bound it was held to, the verdict and why."""

    metric: str
    value: float
    verdict: Verdict
    min: float | None = None
    max: float | None = None
    why: str = ""

    @classmethod
    def at_least(cls, metric: str, value: float, bound: float, why: str = "") -> Check:
        return cls(metric, value, Verdict.of(value >= bound), min=bound, why=why)

    @classmethod
    def within(cls, metric: str, value: float, limit: float, why: str = "") -> Check:
        return cls(metric, value, Verdict.of(abs(value) <= limit), min=-limit, max=limit, why=why)

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASS

    def bound_text(self, digits: int = 5) -> str:
        if self.min is not None and self.max is not None and self.min == -self.max:
            return f"within +-{self.max:.{digits}f}"
        if self.min is not None and self.max is not None:
            return f"in [{self.min:.{digits}f}, {self.max:.{digits}f}]"
        if self.min is not None:
            return f">= {self.min:.{digits}f}"
        if self.max is not None:
            return f"<= {self.max:.{digits}f}"
        return "-"

    def __str__(self) -> str:
        return f"{self.metric} {self.value:.5f} ({self.bound_text()}): {self.verdict}"
