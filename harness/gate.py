"""The gate as a library: accuracy, conformance and throughput of an engine under test, judged against
the FP32 reference and the baselines, returned as typed results.

``report`` renders these results (text, Markdown, JSON, JUnit, ROC); ``cli`` only parses arguments and
prints; the pytest plugin hands a ``Gate`` to tests as the ``facenet_gate`` fixture. Usage::

    with Gate(dataset, reference_model) as gate, engines.create("onnxruntime", model, "fp16", ctx) as engine:
        result = gate.accuracy(engine)
        assert result, result        # a result is true when its verdict is PASS; str() explains it

The reference is its own setting (default: the pinned FaceNet export), so an engine built from a
transformed ONNX is always compared with the untouched reference, never with itself.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from harness.checks import accuracy as accuracy_
from harness.checks import (
    conformance,
    perfstats,
    throughput,  # noqa: F401 (metrics: annotations)
)
from harness.checks import diagnose as diagnose_
from harness.core.errors import EngineFault, HarnessError
from harness.core.results import (
    AccuracyResult,
    Breakdown,
    Comparison,
    ConformanceResult,
    DatasetRef,
    Diagnosis,
    GateReport,
    GateRow,
    ModelRef,
    PerfResult,
    PerfRow,
    QuantizeResult,
    StageDelta,
)
from harness.core.verdicts import Verdict
from harness.engines import Engine, EngineContext, Planned, create
from harness.lfw import data
from harness.lfw.data import Dataset
from harness.model import ModelInfo
from harness.model import quantize as quantize_
from harness.store import cache, environment
from harness.store.baselines import BaselineStore, judge_accuracy, stack_changes


def row_verdict(acc: AccuracyResult, conf: ConformanceResult | None, perf: PerfResult | None) -> Verdict:
    """A gate row: accuracy and conformance decide; perf only adds a FAIL (a machine without a perf
    baseline, or with an inconclusive measurement, still gets its accuracy and conformance verdict)."""
    verdicts = [acc.verdict] + ([conf.verdict] if conf is not None else [])
    if perf is not None and perf.verdict is Verdict.FAIL:
        verdicts.append(Verdict.FAIL)
    return Verdict.combine(verdicts)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Gate:
    """One gating session over one dataset and one reference model (see the module docstring)."""

    def __init__(
        self,
        dataset: Dataset,
        reference: ModelInfo,
        *,
        store: BaselineStore | None = None,
        cache_dir: str | Path | None = None,
        batch_size: int = 64,
        probe_size: int | None = None,
        probe_seed: int | None = None,
        log: Callable[[str], None] | None = _log,
        progress: bool = True,
    ):
        if batch_size < 1:
            raise HarnessError(f"batch size must be positive, got {batch_size}.")
        self.dataset = dataset
        self.reference = reference
        self.store = store or BaselineStore()
        self.cache_dir = cache.cache_root(cache_dir)
        dataset.use_crop_cache(self.cache_dir)  # every LFW pass after the first is bound by the engine
        self.batch_size = batch_size
        self.probe_size = probe_size
        self.probe_seed = probe_seed
        self.log = log or (lambda msg: None)
        self.progress = progress
        self._reference_engine: Engine | None = None

    # --- lifecycle ----------------------------------------------------------------------------------

    def engine_context(self) -> EngineContext:
        return EngineContext(self.cache_dir, self.dataset)

    @property
    def reference_engine(self) -> Engine:
        """The onnxruntime FP32 engine on the reference model, made once."""
        if self._reference_engine is None:
            self._reference_engine = create("onnxruntime", self.reference, "fp32", self.engine_context())
        return self._reference_engine

    def is_reference(self, engine: Engine) -> bool:
        return (
            engine.name == "onnxruntime" and engine.precision == "fp32" and engine.model.sha256 == self.reference.sha256
        )

    def close(self) -> None:
        if self._reference_engine is not None:
            self._reference_engine.close()
            self._reference_engine = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- accuracy -----------------------------------------------------------------------------------

    def embeddings(self, engine: Engine) -> tuple[np.ndarray, dict]:
        """All protocol embeddings of an engine (content-keyed cache) and how long they took."""
        bar = accuracy_.progress_bar(f"embedding LFW ({engine.label})") if self.progress else None
        return accuracy_.cached_embed(engine, self.dataset, self.cache_dir, self.batch_size, bar)

    def accuracy(
        self, engine: Engine, save_baseline: str | None = None, replace_baseline: bool = False
    ) -> AccuracyResult:
        """Full-LFW accuracy of ``engine``; when it is not the reference, its delta and flipped decisions
        against the reference measured on the same data. ``save_baseline`` records the reference's gates
        for this dataset and reference model (``replace_baseline`` to replace existing ones)."""
        emb, timing = self.embeddings(engine)
        evaluation = accuracy_.evaluate(emb, self.dataset)
        summary = evaluation.summary()
        reference = delta = flipped = max_delta = None
        if not self.is_reference(engine):
            ref_emb, _ = self.embeddings(self.reference_engine)
            ref_eval = accuracy_.evaluate(ref_emb, self.dataset)
            reference = {
                **{k: ref_eval.summary()[k] for k in ("accuracy_mean", "accuracy_std", "auc", "threshold")},
                "model_sha256": self.reference.sha256,
            }
            max_delta = self.store.accuracy_delta(engine.precision)
            delta = summary["accuracy_mean"] - reference["accuracy_mean"]
            flipped = accuracy_.flipped_pairs(emb, ref_emb, self.dataset, evaluation.fold_thresholds)
        if save_baseline:
            if not self.is_reference(engine):
                raise HarnessError(
                    "--save-baseline records the reference (onnxruntime fp32 on the reference ONNX); run it with those."
                )
            path = self.store.save_reference(
                self.dataset.digest,
                save_baseline,
                summary,
                {
                    "engine": engine.describe(),
                    "model_sha256": engine.model.sha256,
                    "environment": environment.fingerprint(),
                },
                replace=replace_baseline,
            )
            self.log(f"saved the reference and its gates to {path}")
        gate = self.store.accuracy_gate(self.dataset.digest, engine.precision, self.reference.sha256)
        verdict, checks = judge_accuracy(summary, gate, reference, max_delta)
        return AccuracyResult(
            engine.describe(),
            ModelRef.of(engine.model),
            ModelRef.of(self.reference),
            DatasetRef.of(self.dataset),
            verdict,
            checks,
            summary,
            reference,
            delta,
            None if flipped is None else len(flipped),
            flipped,
            {k: timing[k] for k in ("seconds", "images_per_second", "batch_size", "cached")},
            self.store.describe(),
            environment.fingerprint(),
            evaluation,
            embeddings=emb,
        )

    # --- conformance --------------------------------------------------------------------------------

    def probe_indices(self) -> list[int]:
        conf = self.store.tolerances()["probe"]
        size = conf["size"] if self.probe_size is None else self.probe_size
        if size < 1:
            raise HarnessError(f"probe size must be positive, got {size}.")
        seed = conf["seed"] if self.probe_seed is None else self.probe_seed
        return conformance.probe_indices(self.dataset, size, seed)

    def reference_probe(self, indices: Sequence[int]) -> tuple[np.ndarray, str]:
        """Probe-set reference embeddings: the golden store when it applies, else computed now."""
        golden, why = self.store.golden(self.dataset, indices, data.PREPROCESSING, self.reference.sha256)
        if golden is not None:
            return golden, f"golden {why['path']} (onnxruntime {why['engine']['version']})"
        self.log(f"computing the reference for the probe set: {why}")
        emb = accuracy_.embed(self.reference_engine, self.dataset, self.batch_size, indices=indices)[list(indices)]
        return emb, "computed now (onnxruntime fp32 on the reference model)"

    def conformance(self, engine: Engine, diagnose: bool = True) -> ConformanceResult:
        """The engine's embeddings of the probe set against the reference's, per-precision tolerances; when
        they fail (and ``diagnose``), the first diverging layer on the worst probe images."""
        indices = self.probe_indices()
        reference, source = self.reference_probe(indices)
        candidate = accuracy_.embed(engine, self.dataset, self.batch_size, indices=indices)[indices]
        tol = conformance.Tolerance.from_dict(self.store.precision_tolerance(engine.precision))
        result = conformance.compare(reference, candidate, [self.dataset.keys[i] for i in indices], tol)
        first = None
        if diagnose and not result.passed:
            self.log(f"conformance of {engine.label} failed: looking for the first diverging layer")
            first = self._diagnose(engine, result, indices)
        return ConformanceResult(
            engine.describe(),
            ModelRef.of(engine.model),
            ModelRef.of(self.reference),
            DatasetRef.of(self.dataset),
            Verdict.of(result.passed),
            source,
            tol,
            result.stats,
            result.failures,
            result.worst(),
            environment.fingerprint(),
            result,
            first,
        )

    def diagnose(self, engine: Engine, samples: int = diagnose_.DEFAULT_SAMPLES) -> Diagnosis:
        """The first diverging layer of ``engine`` and its layers' error contributions, on the ``samples``
        probe images it gets most wrong (on request, whether or not its conformance passes)."""
        result = self.conformance(engine, diagnose=False)
        return self._diagnose(engine, result.comparison, self.probe_indices(), samples)

    def _diagnose(
        self,
        engine: Engine,
        comparison: Comparison,
        indices: Sequence[int],
        samples: int = diagnose_.DEFAULT_SAMPLES,
    ) -> Diagnosis:
        worst = [indices[i] for i in np.argsort(comparison.cosine, kind="stable")[:samples]]
        keys = [self.dataset.keys[i] for i in worst]
        tol = diagnose_.layer_tolerance(engine.precision, comparison.tolerance)
        try:
            return diagnose_.diagnose(engine, self.reference.path, self.dataset.batch(worst), keys, tol)
        except Exception as e:  # noqa: BLE001 - a diagnosis that cannot run must not hide the conformance verdict
            why = str(e) if isinstance(e, HarnessError) else f"the diagnosis itself failed ({type(e).__name__}: {e})"
            return diagnose_.not_supported(engine.precision, why, keys)

    # --- the INT8 model for TensorRT / IxRT ------------------------------------------------------------

    def tensorrt_int8(
        self, source: ModelInfo, out: str | Path, calibration: quantize_.Calibration, verify: bool = True
    ) -> QuantizeResult:
        """Write the symmetric INT8 QDQ model TensorRT/IxRT build from (``precision.tensorrt_int8_model``) to
        ``out`` (atomically), check it against TensorRT's Q/DQ rules and, when ``verify``, gate exactly that
        file on the CPU: onnxruntime with every Q/DQ executed as a float op, conformance and LFW accuracy."""
        import shutil

        built = quantize_.tensorrt_int8_model(source, self.dataset, self.cache_dir, calibration)
        out = Path(out)
        with cache.atomic_path(out) as tmp:
            shutil.copyfile(built, tmp)
        sha = cache.sha256_file(out)
        violations = quantize_.check_tensorrt_qdq(out)
        conf = acc = None
        if verify and not violations:
            options = dict(
                int8_format=quantize_.TRT_INT8_FORMAT,
                calib_size=calibration.size,
                calib_seed=calibration.seed,
                calib_method=calibration.method,
            )
            with create("onnxruntime", source, "int8", self.engine_context(), **options) as engine:
                ran = engine.describe()["engine_sha256"]
                if ran != sha:
                    raise HarnessError(
                        f"{out}: the CPU engine ran another file (sha256 {ran[:16]}, written "
                        f"{sha[:16]}); remove {built} from the cache and run again."
                    )
                conf, acc = self.conformance(engine), self.accuracy(engine)
        verdict = Verdict.combine([Verdict.of(not violations)] + [r.verdict for r in (conf, acc) if r is not None])
        return QuantizeResult(str(out), sha, calibration, violations, conf, acc, verdict)

    def save_golden(self) -> Path:
        indices = self.probe_indices()
        ref = self.reference_engine
        emb = accuracy_.embed(ref, self.dataset, self.batch_size, indices=indices)[indices]
        return self.store.save_golden(
            self.dataset,
            indices,
            emb,
            {"engine": ref.describe(), "model_sha256": self.reference.sha256, "preprocessing": data.PREPROCESSING},
        )

    # --- throughput ---------------------------------------------------------------------------------

    def perf(
        self,
        engine: Engine,
        cases: Sequence[throughput.Case] = throughput.CASES,
        settings: throughput.Settings | None = None,
        timer=None,
        save_baseline: str | None = None,
    ) -> PerfResult:
        """Throughput per case, each judged against the baseline of the same identity (harness.checks.perfstats)."""
        settings = settings or throughput.Settings()
        if timer is not None and len(cases) > 1:
            raise HarnessError("a delegated timer (pytest-benchmark) times one case per call; pass one case.")
        ident, stk = throughput.identity(engine), throughput.stack(engine)
        measured = []
        for case in cases:
            try:
                m = throughput.measure(engine, self.dataset, case, settings, timer=timer)
            except EngineFault as e:
                raise EngineFault(f"{e} (perf case {case.name})") from e
            measured.append(m)
            self.log(
                f"  {engine.label} {case.name}: {m.fps:.1f} images/s (cv {m.cv:.1%}"
                + (f", {m.attempts} measurements" if m.attempts > 1 else "")
                + ")"
            )
        recorded = set()
        if save_baseline:
            results = {}
            for m in measured:
                if m.stability is not None and not m.stability.stable:
                    self.log(
                        f"  not recorded: {m.case.name} was unstable ({m.stability.why}); measure it again "
                        "on a quiet machine"
                    )
                    continue
                if m.canary is not None:
                    samples, canary = perfstats.thin(m.samples, m.canary_rates)
                else:
                    (samples,), canary = perfstats.thin(m.samples), None
                results[m.case.name] = {
                    "fps": round(m.fps, 3),
                    "samples": samples,
                    **({"canary": canary} if canary else {}),
                    "breakdown": throughput.breakdown(engine, self.dataset, m.case).to_record(),
                }
                recorded.add(m.case.name)
            path = self.store.save_perf(
                ident, stk, results, save_baseline, environment.machine_id(), datetime.date.today().isoformat()
            )
            self.log(f"saved the performance baseline to {path}")
        rows = [self._perf_row(engine, m, ident, stk, recorded=m.case.name in recorded) for m in measured]
        verdict = Verdict.combine(r.verdict for r in rows if r.verdict is not Verdict.NO_BASELINE)
        return PerfResult(engine.describe(), ident, stk, settings, rows, verdict, environment.fingerprint())

    def _perf_row(
        self, engine: Engine, m: throughput.Measurement, ident: dict, stk: dict, recorded: bool = False
    ) -> PerfRow:
        s = m.summary()
        split_ms = m.split_ms  # taken when the case was measured, not after every case
        baseline, why = self.store.perf_baseline(ident, m.case.name)
        stability = m.stability.why if m.stability and not m.stability.stable else ""
        common = dict(
            case=m.case.name,
            view=m.case.view,
            batch=m.case.batch,
            fps=m.fps,
            median_fps=float(np.median(m.samples)),
            rounds=s["rounds"],
            cv=m.cv,
            latency_ms=s["latency_ms"],
            canary_per_s=s["canary_per_s"],
            attempts=m.attempts,
            stability=stability,
            load=m.load,
            split_ms=split_ms,
            measurement=m,
        )
        if recorded:  # judged against itself it would pass with nothing judged
            baseline, why = None, "recorded as the baseline in this run: nothing to judge it against"
        if baseline is None:
            return PerfRow(
                **common,
                verdict=Verdict.NO_BASELINE,
                why=why,
                baseline=None,
                ratio=None,
                ratio_ci=None,
                normalised_ratio=None,
                normalised_ci=None,
                stack_changes=[],
            )
        base_samples = baseline.get("samples") or [baseline["fps"]]
        base_canary = baseline.get("canary")
        use_canary = base_canary is not None and m.canary is not None
        d = perfstats.decide(
            m.samples,
            base_samples,
            baseline["tolerance"],
            m.canary_rates if use_canary else None,
            base_canary if use_canary else None,
            m.stability,
        )
        changes = stack_changes(baseline["stack"], stk)
        notes = [d.why]
        if changes:
            notes.append("software changed since the baseline: " + ", ".join(changes))
        if baseline["unmatched"]:
            notes.append(f"the baseline does not record {', '.join(baseline['unmatched'])}")
        if m.canary is None:
            notes.append("no canary (GPU engine: the host's load does not set its speed)")
        elif not use_canary:
            notes.append("the baseline has no canary samples")
        public = {k: v for k, v in baseline.items() if k not in ("samples", "canary", "breakdown")}
        split: Breakdown | None = None
        deltas: list[StageDelta] | None = None
        if d.verdict is Verdict.FAIL:  # say which stage slowed
            split = throughput.breakdown(engine, self.dataset, m.case)
            deltas = split.against(baseline.get("breakdown"))
            if deltas:
                top = deltas[0]
                notes.append(
                    f"slowed most: {top.stage} (+{top.added_ms:.2f} ms per batch"
                    + (f", {top.ratio:.2f}x" if top.ratio else "")
                    + ")"
                )
            else:
                notes.append("the baseline recorded no stage breakdown to compare with (record it again)")
        return PerfRow(
            **common,
            verdict=d.verdict,
            why="; ".join(notes),
            baseline=public,
            ratio=d.ratio,
            ratio_ci=d.ci,
            normalised_ratio=d.normalised_ratio,
            normalised_ci=d.normalised_ci,
            stack_changes=changes,
            breakdown=split,
            stage_deltas=deltas or [],
        )

    # --- everything, for a list of engines -------------------------------------------------------------

    def run(
        self,
        engines: Iterable[Engine | Planned],
        perf_cases: Sequence[throughput.Case] = (),
        perf_settings: throughput.Settings | None = None,
        progress: Callable[[GateReport], None] | None = None,
        planned: int | None = None,
    ) -> GateReport:
        """Accuracy, conformance and (given cases) perf of each engine, one report. ``engines`` holds
        engines, or ``Planned`` ones that the gate builds when it reaches them and closes after their row
        (a build that crashes, raises or hangs is then that row's FAIL, and the gate goes on).
        ``progress`` receives the report so far (``complete`` False) before the first row and after every
        row, so a report on disk always says how far this run got; ``planned`` is the number of rows."""
        rows: list[GateRow] = []
        total = f" of {planned}" if planned is not None else ""
        if progress:
            progress(self.report(rows, complete=False, status=f"in progress: 0{total} rows done"))
        for item in engines:
            acc = conf = perf = None
            stage = "build"
            name, precision = item.name, item.precision
            built: Engine | None = None
            try:
                if isinstance(item, Planned):
                    self.log(f"gate: {name} {precision}: build")
                    built = item.build()
                engine = item if built is None else built
                assert isinstance(engine, Engine)
                stage = "accuracy"
                self.log(f"gate: {engine.label}: accuracy")
                acc = self.accuracy(engine)
                stage = "conformance"
                self.log(f"gate: {engine.label}: conformance")
                conf = self.conformance(engine)
                stage = "perf"
                perf = self.perf(engine, perf_cases, perf_settings) if perf_cases else None
            except EngineFault as e:  # the engine misbehaved: a FAIL of its row; the gate goes on to the next
                self.log(f"gate: {name} {precision}: FAIL during {stage}: {e}")
                fault = f"during {stage}: {e}"
                rows.append(GateRow(name, precision, Verdict.FAIL, acc, conf, perf, fault=fault))
            else:
                rows.append(GateRow(name, precision, row_verdict(acc, conf, perf), acc, conf, perf))
            finally:
                if built is not None:
                    built.close()
            if progress:
                progress(self.report(rows, complete=False, status=f"in progress: {len(rows)}{total} rows done"))
        return self.report(rows)

    def report(self, rows: list[GateRow], complete: bool = True, status: str = "") -> GateReport:
        """The gate report of ``rows``; an incomplete one is never PASS (FAIL if a row failed, else
        INCONCLUSIVE: what was not judged cannot pass)."""
        verdict = Verdict.combine(r.verdict for r in rows)
        if not complete and verdict is not Verdict.FAIL:
            verdict = Verdict.INCONCLUSIVE
        return GateReport(
            verdict,
            environment.fingerprint(),
            next((r.accuracy.model for r in rows if r.accuracy is not None), ModelRef.of(self.reference)),
            ModelRef.of(self.reference),
            DatasetRef.of(self.dataset),
            list(rows),
            complete=complete,
            status=status,
        )
