"""The typed results of every check and of the gate: plain data, below the code that makes them (the
checks, ``harness.gate``) and the code that renders them (``harness.report``), so every layer may use them.

A result is true when its verdict is PASS; ``to_json()`` gives the report's JSON; ``str()`` renders it with
the renderer the report layer installs (``use_renderer``; ``harness.report`` does on import), else ``repr``.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.core.verdicts import Check, Verdict

if TYPE_CHECKING:  # annotations only: these are made above this layer
    from harness.lfw.data import Dataset
    from harness.model.export import ModelInfo
    from harness.model.quantize import Calibration

_renderer: Callable[[Any], str] | None = None


def use_renderer(render: Callable[[Any], str]) -> None:
    """Install the function ``str()`` of a result (or a diagnosis) calls: the report layer's text renderer."""
    global _renderer
    _renderer = render


def render(obj: Any) -> str:
    return _renderer(obj) if _renderer is not None else repr(obj)


NO_JSON = {"json": False}


def to_json(obj: Any) -> Any:
    """Results as plain JSON values: dataclasses by field (minus those marked NO_JSON), enums by value."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.metadata.get("json", True)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


@dataclasses.dataclass(frozen=True)
class ModelRef:
    path: str
    sha256: str
    input: str
    output: str
    batch: int | None

    @classmethod
    def of(cls, info: ModelInfo) -> ModelRef:
        return cls(str(info.path), info.sha256, info.input_name, info.output_name, info.batch)


@dataclasses.dataclass(frozen=True)
class DatasetRef:
    digest: str
    images_dir: str
    pairs_file: str
    pairs_sha256: str
    boxes_file: str
    form: str
    folds: int
    images: int
    pairs: int

    @classmethod
    def of(cls, ds: Dataset) -> DatasetRef:
        return cls(
            ds.digest,
            str(ds.root),
            str(ds.protocol.path),
            ds.protocol.sha256,
            str(ds.boxes_path or ""),
            ds.form,
            ds.protocol.folds,
            len(ds.keys),
            len(ds.protocol.pairs),
        )


class Result:
    """Shared behaviour: true when the verdict is PASS, ``str()`` explains it, ``to_json()`` for reports."""

    verdict: Verdict

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASS

    def __bool__(self) -> bool:
        return self.passed

    def to_json(self) -> dict:
        return to_json(self)

    def __str__(self) -> str:
        return render(self)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    accuracy: np.ndarray  # per fold
    fold_thresholds: np.ndarray  # best threshold per fold (picked on the other folds)
    tpr: np.ndarray  # fold-averaged ROC over ROC_THRESHOLDS
    fpr: np.ndarray
    val: float
    val_std: float
    far: float
    auc: float
    eer: float
    val_thresholds: np.ndarray  # per fold: the threshold for FAR_TARGET, from the other folds (val_far_threshold)

    @property
    def accuracy_mean(self) -> float:
        return float(np.mean(self.accuracy))

    @property
    def accuracy_std(self) -> float:
        return float(np.std(self.accuracy))  # population std, as facenet prints it

    @property
    def threshold(self) -> float:
        return float(np.mean(self.fold_thresholds))

    def summary(self) -> dict:
        return {
            "accuracy_mean": self.accuracy_mean,
            "accuracy_std": self.accuracy_std,
            "auc": self.auc,
            "val": self.val,
            "val_std": self.val_std,
            "far": self.far,
            "eer": self.eer,
            "threshold": self.threshold,
            "fold_accuracy": [float(a) for a in self.accuracy],
            "fold_thresholds": [float(t) for t in self.fold_thresholds],
        }


@dataclasses.dataclass(frozen=True)
class FlippedPair:
    """A protocol pair the engine decides differently from the reference (``flipped_pairs``)."""

    pair: int  # index in the protocol (pairs.txt order)
    first: str  # image keys "<Person>/<Person>_NNNN"
    second: str
    same: bool  # the protocol's label: the same person
    reference_distance: float  # squared L2
    engine_distance: float
    fold: int  # the pair's test fold
    threshold: float  # the one threshold both distances were judged at (see flipped_pairs)
    engine_correct: bool  # whether the engine's decision is the right one (a flip can be a fix)

    @property
    def shift(self) -> float:
        """How far the distance moved; the pairs are sorted by it, largest (worst) first."""
        return abs(self.engine_distance - self.reference_distance)


@dataclasses.dataclass(eq=False)
class AccuracyResult(Result):
    engine: dict
    model: ModelRef
    reference_model: ModelRef
    dataset: DatasetRef
    verdict: Verdict
    checks: list[Check]
    metrics: dict  # Evaluation.summary()
    reference: dict | None  # the reference's metrics on the same data; None when the engine is the reference
    accuracy_delta: float | None
    flipped_decisions: int | None  # len(flipped_pairs)
    flipped_pairs: list[FlippedPair] | None  # worst first, each judged at the engine's fold threshold
    timing: dict
    baselines: str
    environment: dict
    evaluation: Evaluation = dataclasses.field(repr=False, metadata=NO_JSON)
    flipped_png: str | None = None  # contact sheet of the worst flipped pairs, once a report has written it
    embeddings: np.ndarray | None = dataclasses.field(default=None, repr=False, metadata=NO_JSON)  # the run archive's

    def __repr__(self) -> str:
        failing = "; ".join(str(c) for c in self.checks if not c.passed)
        return f"<AccuracyResult {self.engine['backend']} {self.engine['precision']}: {self.verdict}" + (
            f" ({failing})>" if failing else ">"
        )


@dataclasses.dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    min_cosine: float
    mean_cosine: float

    @classmethod
    def from_dict(cls, d: dict) -> Tolerance:
        return cls(float(d["atol"]), float(d["rtol"]), float(d["min_cosine"]), float(d["mean_cosine"]))


@dataclasses.dataclass
class Comparison:
    keys: list[str]
    cosine: np.ndarray  # per sample
    abs_err: np.ndarray  # per element
    rel_err: np.ndarray
    nonfinite: int
    element_failures: int
    tolerance: Tolerance

    @property
    def stats(self) -> dict:
        return {
            "samples": len(self.keys),
            "min_cosine": float(np.min(self.cosine)),
            "p1_cosine": float(np.percentile(self.cosine, 1)),
            "mean_cosine": float(np.mean(self.cosine)),
            "max_abs": float(np.max(self.abs_err)),
            "mean_abs": float(np.mean(self.abs_err)),
            "p99_abs": float(np.percentile(self.abs_err, 99)),
            "max_rel": float(np.max(self.rel_err)),
            "mean_rel": float(np.mean(self.rel_err)),
            "p99_rel": float(np.percentile(self.rel_err, 99)),
            "nonfinite": self.nonfinite,
            "element_failures": self.element_failures,
        }

    @property
    def failures(self) -> list[str]:
        """Why the comparison fails (empty when it passes)."""
        s, t = self.stats, self.tolerance
        out = []
        if self.nonfinite:
            out.append(f"{self.nonfinite} NaN/Inf values")
        if self.element_failures:
            out.append(f"{self.element_failures} elements beyond atol={t.atol:g} and rtol={t.rtol:g}")
        if s["min_cosine"] < t.min_cosine:
            out.append(f"min cosine {s['min_cosine']:.6f} < {t.min_cosine}")
        if s["mean_cosine"] < t.mean_cosine:
            out.append(f"mean cosine {s['mean_cosine']:.6f} < {t.mean_cosine}")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures

    def worst(self, n: int = 5) -> list[tuple[str, float]]:
        order = np.argsort(self.cosine)[:n]
        return [(self.keys[i], float(self.cosine[i])) for i in order]


class Status(enum.StrEnum):
    DIVERGED = "DIVERGED"
    WITHIN_TOLERANCE = "WITHIN TOLERANCE"
    NOT_SUPPORTED = "NOT SUPPORTED"

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class LayerTolerance:
    """The largest relative L2 error a layer's output may have (worst image), and where it comes from."""

    max_error: float
    precision: str
    basis: str


@dataclasses.dataclass
class LayerStat:
    """One compared layer: its reference node and tensor, the engine's tensor, and their agreement."""

    index: int  # position of the node in the reference graph's topological order
    node: str
    op_type: str  # "Conv+Relu" where the engine fused the activation
    tensor: str  # the reference tensor
    engine_tensor: str
    mapped: str  # "name", "fused Relu", "dequantized", ...
    cosine: float  # worst image
    error: float  # relative L2 error, worst image
    max_abs: float
    max_rel: float
    nonfinite: int
    inputs: list[str]  # the reference tensors it reads (computed ones; weights and graph input aside)
    input_error: float  # the worst error among its inputs (nearest compared ancestors; 0: graph input)
    contribution: float  # error - input_error
    diverged: bool


@dataclasses.dataclass
class Diagnosis:
    """The first diverging layer (``node``, ``op_type``, ``tensor`` and its stats; None when none diverged)
    and every compared layer, for one engine against the reference on a few probe images."""

    status: Status
    why: str
    precision: str
    tolerance: LayerTolerance | None
    samples: list[str]
    node: str | None = None
    op_type: str | None = None
    tensor: str | None = None
    engine_tensor: str | None = None
    cosine: float | None = None
    error: float | None = None
    max_abs: float | None = None
    max_rel: float | None = None
    inputs: list[LayerStat] = dataclasses.field(default_factory=list)  # agreement of its inputs
    after: list[LayerStat] = dataclasses.field(default_factory=list)  # the layers after it
    ranking: list[LayerStat] = dataclasses.field(default_factory=list)  # by error contribution, largest first
    layers: list[LayerStat] = dataclasses.field(default_factory=list)  # every compared layer, in order
    mapping: dict = dataclasses.field(default_factory=dict)
    reference_model: str = ""
    engine_model: str = ""

    @property
    def diverged(self) -> bool:
        return self.status is Status.DIVERGED

    def to_json(self) -> dict:
        return to_json(self)

    def __str__(self) -> str:
        return render(self)


@dataclasses.dataclass(eq=False)
class ConformanceResult(Result):
    engine: dict
    model: ModelRef
    reference_model: ModelRef
    dataset: DatasetRef
    verdict: Verdict
    reference: str  # where the FP32 reference embeddings came from (golden store or computed now)
    tolerance: Tolerance
    stats: dict
    failures: list[str]
    worst: list[tuple[str, float]]
    environment: dict
    comparison: Comparison = dataclasses.field(repr=False, metadata=NO_JSON)
    # where the engine starts to differ (harness.checks.diagnose), found when the comparison fails; None when it passes
    first_divergence: Diagnosis | None = None

    def __repr__(self) -> str:
        return f"<ConformanceResult {self.engine['backend']} {self.engine['precision']}: {self.verdict}" + (
            f" ({'; '.join(self.failures)})>" if self.failures else ">"
        )


@dataclasses.dataclass(frozen=True)
class Case:
    view: str  # "compute" or "pipeline"
    batch: int

    @property
    def name(self) -> str:
        return f"{self.view}-b{self.batch}"


@dataclasses.dataclass(frozen=True)
class Settings:
    warmup_s: float = 2.0
    min_duration_s: float = 6.0
    min_rounds: int = 5
    max_attempts: int = 3  # measure again while the series is unstable, at most this often
    budget_s: float = 40.0  # no re-measure starts once this much of the case's time is spent (warm-up included)
    canary: bool = True  # interleave the canary on CPU engines (reported beside the ratio, never judged)


@dataclasses.dataclass(frozen=True)
class Stability:
    stable: bool
    cv: float  # robust CV of the block values
    level_spread: float  # between the medians of the first and second half of the blocks
    why: str = ""


@dataclasses.dataclass
class Measurement:
    case: Case
    images_per_step: int
    latencies: np.ndarray  # seconds per timed step
    canary: np.ndarray | None  # canary seconds of each step's block (CPU engines)
    last_output: Any = None  # what the last timed step computed
    indices: list[int] = dataclasses.field(default_factory=list)  # the protocol images of that step
    attempts: int = 1
    stability: Stability | None = None
    load: float | None = None  # share of the CPUs other processes used during the timed steps
    # the engine's copy-in / compute / copy-out split of this case's last timed step (TIMING_SPLIT engines)
    split_ms: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def samples(self) -> np.ndarray:
        """Per-step throughput, images/s."""
        return self.images_per_step / self.latencies

    @property
    def canary_rates(self) -> np.ndarray | None:
        return None if self.canary is None else 1.0 / self.canary

    @property
    def fps(self) -> float:
        return self.images_per_step * len(self.latencies) / float(np.sum(self.latencies))

    @property
    def cv(self) -> float:
        """Coefficient of variation of the step time."""
        return float(np.std(self.latencies) / np.mean(self.latencies))

    def summary(self) -> dict:
        ms = self.latencies * 1e3
        canary_rates = self.canary_rates
        return {
            "case": self.case.name,
            "view": self.case.view,
            "batch": self.case.batch,
            "fps": self.fps,
            "rounds": len(self.latencies),
            "images_per_step": self.images_per_step,
            "latency_ms": {
                "median": float(np.median(ms)),
                "p90": float(np.percentile(ms, 90)),
                "p99": float(np.percentile(ms, 99)),
                "mean": float(np.mean(ms)),
            },
            "cv": self.cv,
            "attempts": self.attempts,
            "canary_per_s": None if canary_rates is None else float(np.median(canary_rates)),
            "load": self.load,
        }


@dataclasses.dataclass(frozen=True)
class StageDelta:
    """One stage of a batch's time, now against the baseline's (milliseconds per batch)."""

    stage: str
    baseline_ms: float | None  # None: the baseline's breakdown has no such stage
    now_ms: float | None  # None: this run has no such stage
    added_ms: float  # now - baseline (a missing side counts as 0)
    ratio: float | None  # now / baseline


@dataclasses.dataclass(frozen=True)
class Breakdown:
    """Where a batch of ``case`` spends its time, by stage (harness preprocessing, then ``Engine.profile``)."""

    case: str
    batch: int
    source: str
    stages_ms: dict[str, float]

    def to_record(self) -> dict:
        return {
            "source": self.source,
            "batch": self.batch,
            "stages_ms": {k: round(v, 4) for k, v in self.stages_ms.items()},
        }

    def against(self, baseline: dict | None) -> list[StageDelta]:
        """Every stage of both, the one that added the most time first (empty without a baseline)."""
        if not baseline:
            return []
        base = baseline.get("stages_ms", {})
        out = []
        for stage in dict.fromkeys([*self.stages_ms, *base]):
            b, n = base.get(stage), self.stages_ms.get(stage)
            out.append(StageDelta(stage, b, n, (n or 0.0) - (b or 0.0), n / b if b and n is not None else None))
        return sorted(out, key=lambda d: -d.added_ms)


@dataclasses.dataclass(eq=False)
class PerfRow(Result):
    case: str
    view: str
    batch: int
    fps: float  # images over the timed seconds
    median_fps: float  # median of the per-step throughputs
    rounds: int
    cv: float
    latency_ms: dict
    canary_per_s: float | None  # None: the canary does not apply (GPU engines)
    attempts: int  # measurements taken (again while unstable)
    stability: str  # why the last one was unstable, or ""
    load: float | None  # share of the CPUs other processes used while it was timed
    verdict: Verdict
    why: str
    baseline: dict | None  # fps, tolerance, source, recorded, host, stack, unmatched identity fields
    ratio: float | None  # median throughput / the baseline's
    ratio_ci: tuple[float, float] | None
    normalised_ratio: float | None  # by the canary, CPU engines
    normalised_ci: tuple[float, float] | None
    stack_changes: list[str]
    split_ms: dict
    measurement: Measurement = dataclasses.field(repr=False, metadata=NO_JSON)
    # on a FAIL: where a batch's time goes now (stages_ms) and each stage against the baseline's, the stage
    # that added the most first (empty when the baseline recorded no breakdown)
    breakdown: Breakdown | None = None
    stage_deltas: list[StageDelta] = dataclasses.field(default_factory=list)

    def __repr__(self) -> str:
        return f"<PerfRow {self.case}: {self.fps:.1f} images/s, {self.verdict} ({self.why})>"


@dataclasses.dataclass(eq=False)
class PerfResult(Result):
    engine: dict
    identity: dict
    stack: dict
    settings: Settings
    rows: list[PerfRow]
    verdict: Verdict
    environment: dict

    def __repr__(self) -> str:
        return f"<PerfResult {self.identity['backend']} {self.identity['precision']}: {self.verdict}>"


@dataclasses.dataclass(eq=False)
class QuantizeResult(Result):
    """``Gate.tensorrt_int8``: the INT8 model written for TensorRT/IxRT, its Q/DQ rule check and, when
    verified, the conformance and LFW accuracy of exactly that file on the CPU (fake quantization)."""

    path: str
    sha256: str
    calibration: Calibration
    violations: list[str]  # TensorRT Q/DQ rules it breaks (precision.check_tensorrt_qdq)
    conformance: ConformanceResult | None  # None: not verified (asked, or the rules are broken)
    accuracy: AccuracyResult | None
    verdict: Verdict

    def __repr__(self) -> str:
        return f"<QuantizeResult {self.path}: {self.verdict}>"


@dataclasses.dataclass(eq=False)
class GateRow(Result):
    backend: str
    precision: str
    verdict: Verdict
    accuracy: AccuracyResult | None  # None: the engine failed before its accuracy was measured (``fault``)
    conformance: ConformanceResult | None
    perf: PerfResult | None
    fault: str | None = None  # what the engine did and when (a FAIL), when it failed mid-row


@dataclasses.dataclass(eq=False)
class GateReport(Result):
    verdict: Verdict
    environment: dict
    model: ModelRef
    reference_model: ModelRef
    dataset: DatasetRef
    rows: list[GateRow]
    roc_png: str | None = None
    # False while the gate is still running, or when it stopped before the last row (``status`` says why);
    # an incomplete report's verdict is never PASS (FAIL if a finished row failed, else INCONCLUSIVE)
    complete: bool = True
    status: str = ""


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """One output beyond the tolerance (or a worker's error)."""

    worker: int
    call: int  # the worker's call number, from 0
    batch: int  # index of the probe batch
    seconds: float  # since the soak started
    detail: str  # the comparison's failures, or the error


@dataclasses.dataclass(eq=False)
class SoakResult(Result):
    engine: dict  # Engine.describe() of worker 0
    model: ModelRef
    dataset: DatasetRef
    verdict: Verdict
    reasons: list[str]
    workers: int
    seconds: float
    batch_size: int
    calls: int
    images: int
    checked_outputs: int
    mismatches: int
    first_mismatches: list[Mismatch]  # at most MAX_REPORTED, in time order
    rotations_min: int  # the fewest full passes over the probe batches any worker made
    window_seconds: float
    window_images_per_second: list[float]  # all workers together, after the warm-up
    throughput_drift: float | None  # last window / first window
    throughput_cv: float | None
    rss_warm_mib: float | None  # after every worker's first rotation
    rss_end_mib: float | None
    rss_peak_mib: float | None
    rss_growth_mib: float | None
    rss_slope_mib_per_minute: float | None
    max_change_vs_first_output: float  # largest |difference| of an output from the same worker's first one
    environment: dict

    def __repr__(self) -> str:
        return (
            f"<SoakResult {self.engine['backend']} {self.engine['precision']} x{self.workers}: {self.verdict}, "
            f"{self.checked_outputs} outputs checked, {self.mismatches} beyond tolerance>"
        )


# --- the run archive and the upgrade report (harness.store.runs, harness.checks.upgrade) -----------------


@dataclasses.dataclass
class ArchivedRow:
    """One gate row as a later run compares with it: what ran, its verdict, and its raw results."""

    backend: str
    precision: str
    verdict: Verdict
    fault: str | None
    engine: dict  # the engine's describe()
    stack: dict  # its software stack (throughput.stack)
    metrics: dict | None  # Evaluation.summary() of its LFW pass
    fold_accuracy: list[float] | None
    fold_thresholds: list[float] | None
    embeddings: np.ndarray | None = dataclasses.field(default=None, repr=False, metadata=NO_JSON)
    perf: dict = dataclasses.field(default_factory=dict)  # case -> {"fps", "samples", "cpu"}

    @property
    def key(self) -> str:
        return f"{self.backend} {self.precision}"


@dataclasses.dataclass
class ArchivedRun:
    path: str
    created: str
    verdict: Verdict
    complete: bool
    dataset: dict
    reference_model: dict
    environment: dict
    rows: list[ArchivedRow]


@dataclasses.dataclass
class UpgradeRow(Result):
    """One engine x precision, old run against new: each judged against the reference as its own gate
    did, and the two against each other."""

    key: str
    verdict: Verdict  # the new run's verdict for this row (its gate against the reference)
    old_verdict: Verdict
    new_verdict: Verdict
    old_accuracy: float | None
    new_accuracy: float | None
    accuracy_delta: float | None  # new - old, mean over folds
    accuracy_delta_ci: tuple[float, float] | None  # 95%, from the paired per-fold deltas
    min_cosine: float | None  # between old and new embeddings of the same image
    mean_cosine: float | None
    worst_image: str | None
    identical: bool | None  # bit-identical embeddings
    decisions_changed: int | None  # pairs decided differently (each run at its own fold thresholds)
    now_right: int | None  # of those: wrong before, right now
    now_wrong: int | None
    pairs: int | None
    throughput: list[dict]  # per case: old fps, new fps, ratio and its 95% interval, same machine or not
    software_changes: list[str]  # "onnxruntime 1.31.1 -> 1.32.0", ...
    notes: list[str]


@dataclasses.dataclass
class UpgradeReport(Result):
    verdict: Verdict  # the new run's gate verdict over the rows both runs have
    old: str
    new: str
    old_created: str
    new_created: str
    software_changes: list[str]
    rows: list[UpgradeRow]
    only_old: list[str]
    only_new: list[str]
    notes: list[str]
