"""ONNX graph preparation for the TensorRT-family builders, done by pattern rather than by tensor name.

What DeepSparkInference's deploy.py does with ``sed`` on exporter-specific names, as functions
ModelProto -> ModelProto that each find their nodes by structure:
  * ``simplify``            onnx-simplifier (optional dependency, the ``passes`` extra);
  * ``cut_at_last_bn``      output the last BatchNormalization, L2-normalise on the host instead;
  * ``fold_bottleneck``     GlobalAveragePool -> Flatten -> MatMul -> BatchNormalization becomes a
                            1x1 Conv on the pool output (+ Flatten), using the BN node's own epsilon;
  * ``fold_residual_scale`` Conv -> Mul(constant) becomes one Conv with scaled weights and bias.
Every pass is checked in the tests against onnxruntime on real LFW crops.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import helper, numpy_helper

from harness.core.errors import HarnessError


class _Graph:
    """Lookup helpers over a GraphProto: producers, consumers and constant values."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.g = model.graph
        self.inits = {t.name: t for t in self.g.initializer}
        self.producer = {o: n for n in self.g.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def const(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def only_consumer(self, tensor: str) -> onnx.NodeProto | None:
        users = self.consumers.get(tensor, [])
        outputs = {o.name for o in self.g.output}
        return users[0] if len(users) == 1 and tensor not in outputs else None

    def add_init(self, name: str, value: np.ndarray) -> str:
        base, k = name, 0
        while name in self.inits or name in self.producer:
            k += 1
            name = f"{base}_{k}"
        t = numpy_helper.from_array(np.ascontiguousarray(value), name)
        self.g.initializer.append(t)
        self.inits[name] = t
        return name


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def prune(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop nodes and initializers no graph output depends on."""
    g = model.graph
    producer = {o: i for i, n in enumerate(g.node) for o in n.output}
    needed, stack = set(), [o.name for o in g.output]
    while stack:
        i = producer.get(stack.pop())
        if i is not None and i not in needed:
            needed.add(i)
            stack.extend(g.node[i].input)
    keep = [n for i, n in enumerate(g.node) if i in needed]
    used = {x for n in keep for x in n.input} | {o.name for o in g.output}
    del g.node[:]
    g.node.extend(keep)
    inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(inits)
    vis = [v for v in g.value_info if v.name in used or v.name in {o for n in keep for o in n.output}]
    del g.value_info[:]
    g.value_info.extend(vis)
    return model


def _last_bn(model: onnx.ModelProto) -> onnx.NodeProto:
    from harness.model.export import _ancestor_nodes

    g = model.graph
    nodes = sorted(_ancestor_nodes(g, g.output[0].name))
    bns = [g.node[i] for i in nodes if g.node[i].op_type == "BatchNormalization"]
    if not bns:
        raise HarnessError("the model has no BatchNormalization feeding its output; nothing to cut at.")
    return bns[-1]


def _pre_normalisation_tensor(model: onnx.ModelProto) -> str:
    """The un-normalised embedding: the last BatchNormalization's output, or (once that is folded) the
    numerator of the L2-normalising Div / the input of LpNormalization that produces the output."""
    try:
        return _last_bn(model).output[0]
    except HarnessError:
        pass
    producer = {o: n for n in model.graph.node for o in n.output}
    node = producer.get(model.graph.output[0].name)
    if node is not None and node.op_type in ("Div", "LpNormalization"):
        return node.input[0]
    raise HarnessError(
        "the model's output is neither a BatchNormalization nor an L2 normalisation of one; nothing to cut at."
    )


def cut_at_last_bn(model: onnx.ModelProto) -> onnx.ModelProto:
    """Make the un-normalised embedding (the last BatchNormalization's output) the graph output."""
    m = copy.deepcopy(model)
    tensor = _pre_normalisation_tensor(m)
    old = m.graph.output[0]
    new = helper.make_tensor_value_info(
        tensor, onnx.TensorProto.FLOAT, [d.dim_param or d.dim_value for d in old.type.tensor_type.shape.dim]
    )
    del m.graph.output[:]
    m.graph.output.append(new)
    return prune(m)


def fold_bottleneck(model: onnx.ModelProto) -> onnx.ModelProto:
    """GlobalAveragePool -> Flatten -> MatMul(W) -> BatchNormalization  =>  Conv1x1(W') -> Flatten."""
    m = copy.deepcopy(model)
    gr = _Graph(m)
    bn = _last_bn(m)
    mm = gr.producer.get(bn.input[0])
    mm_weight = gr.const(mm.input[1]) if mm is not None and mm.op_type == "MatMul" else None
    if mm is None or mm_weight is None:
        raise HarnessError("fold_bottleneck: the last BatchNormalization is not fed by a MatMul with constant weights.")
    flat = gr.producer.get(mm.input[0])
    if flat is None or flat.op_type not in ("Flatten", "Reshape"):
        raise HarnessError("fold_bottleneck: the bottleneck MatMul does not read a flattened tensor.")
    pool = gr.producer.get(flat.input[0])
    if pool is None or pool.op_type != "GlobalAveragePool":
        raise HarnessError("fold_bottleneck: the flattened tensor does not come from a GlobalAveragePool.")
    w = mm_weight.astype(np.float64)  # (in, out)
    bn_params = []
    for x in bn.input[1:5]:
        c = gr.const(x)
        if c is None:
            raise HarnessError(f"fold_bottleneck: the last BatchNormalization's parameter {x!r} is not a constant.")
        bn_params.append(c.astype(np.float64))
    scale, beta, mean, var = bn_params
    eps = float(_attr(bn, "epsilon", 1e-5))  # the node's own epsilon
    k = scale / np.sqrt(var + eps)
    weight = (w * k[None, :]).T.reshape(w.shape[1], w.shape[0], 1, 1).astype(np.float32)
    bias = (beta - mean * k).astype(np.float32)
    wname = gr.add_init("folded_bottleneck_weight", weight)
    bname = gr.add_init("folded_bottleneck_bias", bias)
    conv_out = bn.output[0] + "_conv"
    conv = helper.make_node(
        "Conv", [pool.output[0], wname, bname], [conv_out], name="folded_bottleneck_conv", kernel_shape=[1, 1]
    )
    flatten = helper.make_node("Flatten", [conv_out], [bn.output[0]], name="folded_bottleneck_flatten", axis=1)
    nodes = list(m.graph.node)
    at = nodes.index(bn)
    nodes[at : at + 1] = [conv, flatten]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return prune(m)


def fold_residual_scale(model: onnx.ModelProto) -> onnx.ModelProto:
    """Conv(W, B) -> Mul(scalar constant)  =>  Conv(s*W, s*B), for every such pair."""
    m = copy.deepcopy(model)
    gr = _Graph(m)
    rename: dict[str, str] = {}
    drop = set()
    for conv in list(m.graph.node):
        if conv.op_type != "Conv" or len(conv.input) < 3:
            continue
        mul = gr.only_consumer(conv.output[0])
        if mul is None or mul.op_type != "Mul":
            continue
        other = mul.input[1] if mul.input[0] == conv.output[0] else mul.input[0]
        s = gr.const(other)
        w, b = gr.const(conv.input[1]), gr.const(conv.input[2])
        if s is None or s.size != 1 or w is None or b is None:
            continue
        factor = float(s.reshape(()))
        conv.input[1] = gr.add_init(conv.input[1] + "_scaled", (w * factor).astype(np.float32))
        conv.input[2] = gr.add_init(conv.input[2] + "_scaled", (b * factor).astype(np.float32))
        rename[mul.output[0]] = conv.output[0]
        drop.add(id(mul))
    keep = [n for n in m.graph.node if id(n) not in drop]
    for n in keep:
        for k, x in enumerate(n.input):
            if x in rename:
                n.input[k] = rename[x]
    del m.graph.node[:]
    m.graph.node.extend(keep)
    return prune(m)


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        import onnxsim
    except ImportError:
        raise HarnessError("onnx-simplifier is not installed: pip install '.[passes]' (onnxsim).") from None
    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise HarnessError("onnx-simplifier could not validate the simplified model; skip the simplify pass.")
    return simplified


PASSES = {
    "simplify": simplify,
    "cut-at-last-bn": cut_at_last_bn,
    "fold-bottleneck": fold_bottleneck,
    "fold-residual-scale": fold_residual_scale,
}


def apply(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    for name in names:
        if name not in PASSES:
            raise HarnessError(f"unknown graph pass {name!r}; known: {', '.join(PASSES)}.")
        model = PASSES[name](model)
    onnx.checker.check_model(model)
    return model
