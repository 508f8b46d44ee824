"""Where an engine's embeddings start to differ: the first diverging layer, and each layer's share of the error.

The reference (FP32 onnxruntime) and the engine under test run the same few probe images with every
intermediate tensor exposed; each reference tensor that has a counterpart in the engine is compared, in
the reference graph's topological order, and the first whose error exceeds the precision's per-layer
tolerance is named with its op type, its inputs' agreement and the layers after it. Every compared layer
also gets its *error contribution*: its own error minus the worst error of its inputs, so a quantized
engine's layers can be ranked by how much error each one adds.

How intermediates are exposed:
  * onnxruntime engines run an ONNX graph as written (FP32, the FP16 variant, the INT8 QOperator or QDQ
    variant, a user's ONNX): a copy gets a graph output for every node output. FP16 tensors are cast to
    float64 for the comparison; an INT8 QOperator tensor ``T_quantized`` is dequantized with the scale and
    zero point its QLinear consumers read it with; QDQ graphs keep their float tensors under the
    reference's names.
  * other engines implement ``Engine.debug_tensors`` (the SDK's debug or marked outputs); one that does
    not is reported as not supported, with the engine's reason.

How tensors are matched: by name (the harness's FP16/INT8 variants and graph passes keep the exporter's
names), with two graph patterns on top:
  * a fused activation: when a reference tensor's only consumer is an activation (Conv -> Relu) whose
    output the engine does not have, the engine's tensor of that name holds the activated value
    (onnxruntime's quantization pre-processing and TensorRT fuse Conv+Relu), so it is compared with the
    activation's output;
  * deploy passes (``harness.model.graph_passes``): when the engine's ONNX shows a folded residual scale, a folded
    bottleneck or a cut before the L2 normalisation, the same passes are applied to the reference
    (they are exact to 1e-5), so the transformed tensors are compared with their own counterparts.
An engine ONNX whose tensors are named otherwise (another exporter) cannot be mapped; the diagnosis says so.

The per-layer measure and its tolerance (``LayerTolerance``): the relative L2 error of a layer's output,
``||engine - reference|| / ||reference||`` per image, worst image. It sees both a direction change and a
change of scale (a convolution whose weights were scaled keeps a cosine near 1 but not its error). For
the final unit-norm embedding it equals ``sqrt(2 (1 - cosine))``, so the precision's embedding budget
(``min_cosine`` in baselines/tolerances.json) is the error ``e = sqrt(2 (1 - min_cosine))`` (fp32
0.0045, fp16 0.014, int8 0.100). Intermediate layers of a healthy reduced-precision engine err more than
its embedding (errors partly average out in the pooled embedding), so the per-layer tolerance is
``LAYER_FACTOR * e``. Measured with ``facenet-harness diagnose`` on the 8 worst of the 256 probe images of
this project's LFW copy (onnxruntime 1.32 CPU): the shipped fp16 engine's worst layer errs by 0.0048
(tolerance 0.057), the shipped int8 (qop-u8s8-rr) engine's by 0.112 (tolerance 0.400, 186 of 339 tensors
matched, 131 through a fused Relu, 22 hidden by fusions); an FP32 ONNX with one mid-network convolution's
weights scaled by 1.5 errs by 0.89 at that convolution (tolerance 0.018) with its input exact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypedDict

import numpy as np
import onnx
from onnx import numpy_helper

from harness.checks import conformance
from harness.core.errors import HarnessError
from harness.core.results import Diagnosis, LayerStat, LayerTolerance, Status
from harness.model import graph_passes

DEFAULT_SAMPLES = 8  # the worst probe images of the comparison
RUN_BATCH = 4  # images per run with every intermediate exposed (memory: all tensors of the batch at once)
AFTER = 5  # layers shown after the first diverging one
RANKED = 10  # layers listed by error contribution
# Per-layer tolerance = LAYER_FACTOR x the embedding's error budget. Measured worst layer error over the
# budget (module docstring): fp16 0.0048 / 0.0141 = 0.34, int8 0.112 / 0.100 = 1.1; so 4 leaves a healthy
# int8 engine a margin of 3.6x, while a convolution scaled by 1.5 (0.89) is beyond it at every precision.
LAYER_FACTOR = 4.0
ACTIVATIONS = ("Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "Tanh", "PRelu")
MIN_MATCHED = 0.5  # below this share of reference tensors with a counterpart, the graphs are not the same network


def layer_tolerance(precision: str, tolerance: conformance.Tolerance, factor: float = LAYER_FACTOR) -> LayerTolerance:
    """A layer's tolerance from the embedding's: ``factor`` x the L2 error the min-cosine budget allows."""
    budget = float(np.sqrt(2.0 * (1.0 - tolerance.min_cosine)))
    return LayerTolerance(
        factor * budget,
        precision,
        f"{factor:g} x sqrt(2 (1 - min_cosine {tolerance.min_cosine})) = {factor:g} x {budget:.4g}",
    )


def not_supported(precision: str, why: str, samples: Sequence[str] = ()) -> Diagnosis:
    return Diagnosis(Status.NOT_SUPPORTED, why, precision, None, list(samples))


# --- exposing intermediates of an ONNX graph -------------------------------------------------------------


def expose_all(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every node output (Constant nodes aside) as a graph output."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    present = {o.name for o in m.graph.output}
    for node in m.graph.node:
        if node.op_type == "Constant":
            continue
        for name in node.output:
            if name and name not in present:
                m.graph.output.append(onnx.ValueInfoProto(name=name))
                present.add(name)
    return m


class OnnxRunner:
    """Runs an ONNX graph with all its intermediates exposed (onnxruntime, CPU)."""

    def __init__(self, model: onnx.ModelProto, label: str, optimization=None):
        """``optimization``: the engine's graph optimisation level (a fake-quant QDQ engine runs with them
        off, and so must its diagnosis); default all on."""
        import onnxruntime as ort

        exposed = expose_all(model)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if optimization is None
            else ort.GraphOptimizationLevel(int(optimization))
        )
        try:
            self.session = ort.InferenceSession(exposed.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise HarnessError(f"{label}: onnxruntime cannot run it with its intermediates exposed ({e}).") from None
        first = self.session.get_inputs()[0]
        self.input = first.name
        self.static = first.shape[0] if isinstance(first.shape[0], int) else None  # a static batch ONNX
        self.names = [o.name for o in self.session.get_outputs()]

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        n = len(batch)
        if self.static is not None and n != self.static:
            if n > self.static:
                raise HarnessError(f"diagnosis batch {n} exceeds the model's static batch {self.static}")
            padded = np.zeros((self.static,) + batch.shape[1:], batch.dtype)
            padded[:n] = batch
            batch = padded
        out = dict(zip(self.names, self.session.run(self.names, {self.input: batch}), strict=True))
        if self.static is not None and n != self.static:  # every FaceNet tensor leads with the batch
            out = {k: v[:n] if v.ndim and v.shape[0] == self.static else v for k, v in out.items()}
        return out


# --- matching the engine's tensors to the reference's ------------------------------------------------------


def detect_passes(reference: onnx.ModelProto, candidate: onnx.ModelProto) -> list[str]:
    """The ``graph_passes`` the candidate shows signs of (by the patterns the passes leave)."""
    ref_inits = {t.name for t in reference.graph.initializer}
    cand_inits = {t.name for t in candidate.graph.initializer}
    cand_nodes = {n.name for n in candidate.graph.node}
    found = []
    if any(n.endswith("_scaled") and n[: -len("_scaled")] in ref_inits for n in cand_inits - ref_inits):
        found.append("fold-residual-scale")
    if "folded_bottleneck_conv" in cand_nodes and "folded_bottleneck_conv" not in {
        n.name for n in reference.graph.node
    }:
        found.append("fold-bottleneck")

    def normalises(m: onnx.ModelProto) -> bool:  # through the Casts of an FP16 graph's float32 output
        producer = {o: n for n in m.graph.node for o in n.output}
        node = producer.get(m.graph.output[0].name)
        while node is not None and node.op_type in ("Cast", "Identity"):
            node = producer.get(node.input[0])
        return node is not None and node.op_type in ("Div", "LpNormalization")

    if normalises(reference) and not normalises(candidate):
        found.append("cut-at-last-bn")
    return found  # in the order 'facenet-harness passes' applies them by default


@dataclasses.dataclass(frozen=True)
class _Pair:
    index: int
    node: str
    op_type: str
    tensor: str  # reference
    engine_tensor: str
    mapped: str
    inputs: tuple[str, ...]  # the reference tensors the layer reads
    dequant: tuple[str, str] | None = None  # (scale, zero point) initializers of a QOperator tensor


def _quantized_params(model: onnx.ModelProto) -> dict[str, tuple[str, str]]:
    """For each uint8/int8 tensor of a QOperator graph, the (scale, zero point) its consumers read it with:
    QLinear ops and DequantizeLinear take each quantized input as a (tensor, scale, zero point) triple."""
    inits = {t.name for t in model.graph.initializer}
    out: dict[str, tuple[str, str]] = {}
    for node in model.graph.node:
        if not (node.op_type.startswith("QLinear") or node.op_type in ("QGemm", "DequantizeLinear")):
            continue
        ins = list(node.input)
        for i in range(len(ins) - 2):
            if ins[i] and ins[i] not in inits and ins[i + 1] in inits and ins[i + 2] in inits:
                out.setdefault(ins[i], (ins[i + 1], ins[i + 2]))
    # a MaxPool (or another pass-through op) on quantized data keeps its input's scale, both ways
    for node in model.graph.node:
        if node.op_type in ("MaxPool", "Flatten", "Reshape"):
            x, y = node.input[0], node.output[0]
            if x in out or y in out:
                out.setdefault(y, out.get(x) or out[y])
                out.setdefault(x, out[y])
    return out


def match(
    reference: onnx.ModelProto, candidate: onnx.ModelProto, candidate_names: set[str] | None = None
) -> tuple[list[_Pair], dict]:
    """Pairs of (reference tensor, engine tensor) in the reference's topological order, and how they were found."""
    cand_tensors = {o for n in candidate.graph.node for o in n.output if o}
    available = cand_tensors if candidate_names is None else set(candidate_names)
    quant = _quantized_params(candidate)
    float_of_quant = {t[: -len("_quantized")]: t for t in available if t.endswith("_quantized") and t in quant}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in reference.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    ref_outputs = {o.name for o in reference.graph.output}

    def engine_name(t: str) -> tuple[str, tuple[str, str] | None] | None:
        if t in available:
            return t, quant.get(t) if t in quant and t.endswith("_quantized") else None
        if t in float_of_quant:
            q = float_of_quant[t]
            return q, quant[q]
        return None

    pairs, hidden, considered = [], [], 0
    fused_into: dict[str, _Pair] = {}
    for index, node in enumerate(reference.graph.node):
        if node.op_type in ("Constant", "Shape"):
            continue
        for t in node.output:
            if not t or t in fused_into:
                continue
            considered += 1
            found = engine_name(t)
            if found is None:
                hidden.append(t)
                continue
            name, dq = found
            users = consumers.get(t, [])
            act = users[0] if len(users) == 1 and t not in ref_outputs and users[0].op_type in ACTIVATIONS else None
            if act is not None and engine_name(act.output[0]) is None:
                # the engine fused the activation: its tensor ``t`` holds the activated value
                pair = _Pair(
                    index,
                    node.name,
                    f"{node.op_type}+{act.op_type}",
                    act.output[0],
                    name,
                    f"fused {act.op_type}" + (", dequantized" if dq else ""),
                    tuple(node.input),
                    dq,
                )
                fused_into[act.output[0]] = pair
                considered += 1
            else:
                pair = _Pair(
                    index, node.name, node.op_type, t, name, "dequantized" if dq else "name", tuple(node.input), dq
                )
            pairs.append(pair)
    info = {
        "compared": len(pairs),
        "reference_tensors": considered,
        "hidden": hidden,
        "fused": sum(p.mapped.startswith("fused") for p in pairs),
        "dequantized": sum(p.dequant is not None for p in pairs),
    }
    return pairs, info


# --- comparing ----------------------------------------------------------------------------------------


class _Accumulator:
    """Worst-image statistics of one pair over the runs."""

    def __init__(self):
        self.cosine, self.error, self.max_abs, self.max_rel, self.nonfinite = 1.0, 0.0, 0.0, 0.0, 0
        self.compared = False

    def add(self, ref: np.ndarray, cand: np.ndarray, keys: list[str], tol: conformance.Tolerance) -> None:
        n = len(ref)
        r, c = ref.reshape(n, -1), cand.reshape(n, -1)
        res = conformance.compare(r, c, keys, tol)
        norms = np.linalg.norm(r.astype(np.float64), axis=1)
        diff = np.sqrt(np.sum(res.abs_err**2, axis=1))
        with np.errstate(divide="ignore", invalid="ignore"):  # an all-zero reference: exact or infinitely wrong
            err = np.where(norms > 0, diff / norms, np.where(diff == 0, 0.0, np.inf))
        cosine = np.where((norms == 0) & (diff == 0), 1.0, res.cosine)
        self.cosine = min(self.cosine, float(np.min(cosine)))
        self.error = max(self.error, float(np.max(err)) if not res.nonfinite else float("inf"))
        self.max_abs = max(self.max_abs, float(np.max(res.abs_err)))
        self.max_rel = max(self.max_rel, float(np.max(res.rel_err)))
        self.nonfinite += res.nonfinite
        self.compared = True


def _float(x: np.ndarray, dequant: tuple[str, str] | None, inits: dict[str, np.ndarray]) -> np.ndarray:
    if dequant is None:
        return np.asarray(x, np.float64)
    scale, zero = inits[dequant[0]].astype(np.float64), inits[dequant[1]].astype(np.float64)
    if scale.size > 1:  # per-channel (axis 1)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (x.astype(np.float64) - zero) * scale


def compare_layers(
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    run_candidate: Callable,
    images: np.ndarray,
    keys: Sequence[str],
    tolerance: LayerTolerance,
    precision: str,
    candidate_names: set[str] | None = None,
    batch: int = RUN_BATCH,
    label: str = "",
) -> Diagnosis:
    """Run both graphs on ``images`` and compare every matched tensor; the core of ``diagnose``.

    ``run_candidate(batch)`` returns the engine's tensors by name (an ``OnnxRunner`` or an engine's
    ``debug_tensors``); ``candidate`` is the ONNX graph whose names they carry.
    """
    keys = list(keys)
    passes = detect_passes(reference, candidate)
    if passes:
        reference = graph_passes.apply(reference, passes)
    pairs, info = match(reference, candidate, candidate_names)
    info["passes"] = passes
    info["by"] = "name" + (f", after applying {', '.join(passes)} to the reference" if passes else "")
    covered = info["reference_tensors"] - len(info["hidden"])
    if not pairs or covered < MIN_MATCHED * info["reference_tensors"]:
        return not_supported(
            precision,
            f"only {covered} of {info['reference_tensors']} reference tensors have a "
            f"counterpart in {label or 'the engine'} by name or by the known patterns (fused "
            "activations, graph_passes); its tensors are named otherwise (another exporter?), so "
            "layers cannot be matched",
            keys,
        )
    ref_runner = OnnxRunner(reference, "the reference")
    inits = {t.name: numpy_helper.to_array(t) for t in candidate.graph.initializer}
    acc = {p: _Accumulator() for p in pairs}
    shape_mismatch = set()
    dummy = conformance.Tolerance(np.inf, np.inf, -1.0, -1.0)  # thresholds are this module's, not compare's
    for start in range(0, len(images), batch):
        x = np.ascontiguousarray(images[start : start + batch], np.float32)
        ref_t, cand_t = ref_runner(x), run_candidate(x)
        for p in pairs:
            if p.engine_tensor not in cand_t or p.tensor not in ref_t:
                continue
            r = np.asarray(ref_t[p.tensor])
            if r.dtype.kind != "f":
                continue
            c = _float(cand_t[p.engine_tensor], p.dequant, inits)
            if c.shape != r.shape:
                shape_mismatch.add(p.tensor)
                continue
            acc[p].add(r, c, keys[start : start + batch], dummy)
        del ref_t, cand_t
    compared = [p for p in pairs if acc[p].compared]
    info["compared"] = len(compared)
    info["shape_mismatch"] = sorted(shape_mismatch)
    stats = _stats(reference, compared, acc, tolerance)
    return _diagnosis(stats, tolerance, precision, keys, info)


def _stats(reference: onnx.ModelProto, pairs: list[_Pair], acc: dict, tolerance: LayerTolerance) -> list[LayerStat]:
    producer = {o: n for n in reference.graph.node for o in n.output}
    error_of = {p.tensor: acc[p].error for p in pairs}
    by_node = {p.node: p for p in pairs}
    memo: dict[str, float] = {}

    def upstream(tensor: str, depth: int = 0) -> float:
        """The error at ``tensor``: its own if compared, else the worst of its producer's inputs."""
        if tensor in error_of:
            return error_of[tensor]
        if tensor in memo:
            return memo[tensor]
        node = producer.get(tensor)
        if node is None or depth > 200:  # graph input or initializer: exact
            return 0.0
        fused = by_node.get(node.name)
        value = (
            error_of[fused.tensor]
            if fused is not None
            else max((upstream(i, depth + 1) for i in node.input if i), default=0.0)
        )
        memo[tensor] = value
        return value

    out = []
    for p in pairs:
        a = acc[p]
        inp = max((upstream(i) for i in p.inputs if i), default=0.0)
        out.append(
            LayerStat(
                p.index,
                p.node,
                p.op_type,
                p.tensor,
                p.engine_tensor,
                p.mapped,
                a.cosine,
                a.error,
                a.max_abs,
                a.max_rel,
                a.nonfinite,
                [i for i in p.inputs if i in producer],
                inp,
                a.error - inp,
                bool(a.nonfinite) or not a.error <= tolerance.max_error,
            )
        )
    return out


class _DiagnosisCommon(TypedDict):
    """The ``Diagnosis`` fields every verdict of ``_diagnosis`` shares."""

    precision: str
    tolerance: LayerTolerance
    samples: list[str]
    ranking: list[LayerStat]
    layers: list[LayerStat]
    mapping: dict


def _diagnosis(
    stats: list[LayerStat], tolerance: LayerTolerance, precision: str, keys: list[str], info: dict
) -> Diagnosis:
    ranking = sorted(stats, key=lambda s: -s.contribution if np.isfinite(s.contribution) else -np.inf)[:RANKED]
    common = _DiagnosisCommon(
        precision=precision, tolerance=tolerance, samples=keys, ranking=ranking, layers=stats, mapping=info
    )
    if not stats:
        return not_supported(
            precision,
            f"no layer could be compared ({len(info.get('shape_mismatch', []))} "
            "matched tensors differ in shape from the reference's)",
            keys,
        )
    first = next((s for s in stats if s.diverged), None)
    if first is None:
        worst = max(stats, key=lambda s: s.error)
        return Diagnosis(
            Status.WITHIN_TOLERANCE,
            f"every one of {len(stats)} compared layers is within relative "
            f"error {tolerance.max_error:.4g}; the worst is {worst.node} ({worst.error:.4g})",
            **common,
        )
    at = stats.index(first)
    by_tensor = {s.tensor: s for s in stats}
    ins = [by_tensor[t] for t in first.inputs if t in by_tensor]
    why = (
        f"{first.node} ({first.op_type}) is the first layer beyond relative error {tolerance.max_error:.4g}: "
        f"{first.error:.4g}"
        + (f", its inputs agree to {first.input_error:.4g}" if first.input_error <= tolerance.max_error else "")
    )
    return Diagnosis(
        Status.DIVERGED,
        why,
        node=first.node,
        op_type=first.op_type,
        tensor=first.tensor,
        engine_tensor=first.engine_tensor,
        cosine=first.cosine,
        error=first.error,
        max_abs=first.max_abs,
        max_rel=first.max_rel,
        inputs=ins,
        after=stats[at + 1 : at + 1 + AFTER],
        **common,
    )


# --- an engine against the reference -------------------------------------------------------------------


def engine_graph(engine) -> tuple[Path, int] | None:
    """The ONNX graph an engine executes as written (onnxruntime: its FP32, FP16 or INT8 model) and its
    graph optimisation level, else None (``Engine.executed_graph``)."""
    return engine.executed_graph()


def diagnose(
    engine,
    reference_onnx: str | Path,
    images: np.ndarray,
    keys: Sequence[str],
    tolerance: LayerTolerance,
    batch: int = RUN_BATCH,
) -> Diagnosis:
    """The first layer where ``engine`` departs from the FP32 reference ONNX on ``images`` (preprocessed
    NCHW), and every matched layer's error and contribution (see the module docstring)."""
    reference = onnx.load(str(reference_onnx))
    executed = engine_graph(engine)
    runner: Callable[[np.ndarray], dict[str, np.ndarray]]
    if executed is not None:
        graph, level = executed
        candidate = onnx.load(str(graph))
        runner, names = OnnxRunner(candidate, str(graph), level), None
    else:  # an SDK engine: its debug tensors, named after the ONNX it was built from
        graph = Path(engine.model.path)
        candidate = onnx.load(str(graph))
        wanted = [o for n in candidate.graph.node for o in n.output if o]
        try:
            names = set(engine.debug_tensors(np.ascontiguousarray(images[:1], np.float32), wanted))
        except NotImplementedError as e:
            return dataclasses.replace(
                not_supported(engine.precision, f"not supported by this engine: {e}", keys),
                reference_model=str(reference_onnx),
                engine_model=str(graph),
            )

        def debug_runner(x: np.ndarray) -> dict[str, np.ndarray]:
            return engine.debug_tensors(x, wanted)

        runner = debug_runner

    result = compare_layers(
        reference, candidate, runner, images, keys, tolerance, engine.precision, names, batch, label=str(graph)
    )
    return dataclasses.replace(result, reference_model=str(reference_onnx), engine_model=str(graph))
