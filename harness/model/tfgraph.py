"""Read the constant tensors of a frozen TensorFlow GraphDef without TensorFlow.

The FaceNet weights ship as a frozen ``.pb``.  We only need its ``Const`` nodes, so we
describe the few TensorFlow protobuf messages involved (GraphDef, NodeDef, AttrValue,
TensorProto, TensorShapeProto) to the ``protobuf`` runtime at import time and let it do
the wire decoding.  Field numbers follow tensorflow/core/framework/*.proto.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto

# TensorFlow DataType enum values we can decode -> numpy dtype.
_TF_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64, 10: np.bool_}


def _message(file: descriptor_pb2.FileDescriptorProto, name: str, fields):
    msg = file.message_type.add(name=name)
    for number, fname, ftype, label, type_name in fields:
        f = msg.field.add(name=fname, number=number, type=ftype, label=label)
        if type_name:
            f.type_name = type_name
    return msg


def _build_messages():
    opt, rep = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    file = descriptor_pb2.FileDescriptorProto(name="harness_tf_subset.proto", package="harness_tf", syntax="proto3")
    dim = _message(file, "Dim", [(1, "size", _F.TYPE_INT64, opt, None), (2, "name", _F.TYPE_STRING, opt, None)])
    del dim
    _message(
        file,
        "TensorShapeProto",
        [
            (2, "dim", _F.TYPE_MESSAGE, rep, ".harness_tf.Dim"),
            (3, "unknown_rank", _F.TYPE_BOOL, opt, None),
        ],
    )
    _message(
        file,
        "TensorProto",
        [
            (1, "dtype", _F.TYPE_INT32, opt, None),
            (2, "tensor_shape", _F.TYPE_MESSAGE, opt, ".harness_tf.TensorShapeProto"),
            (4, "tensor_content", _F.TYPE_BYTES, opt, None),
            (5, "float_val", _F.TYPE_FLOAT, rep, None),
            (6, "double_val", _F.TYPE_DOUBLE, rep, None),
            (7, "int_val", _F.TYPE_INT32, rep, None),
            (10, "int64_val", _F.TYPE_INT64, rep, None),
            (11, "bool_val", _F.TYPE_BOOL, rep, None),
        ],
    )
    _message(
        file,
        "AttrValue",
        [
            (2, "s", _F.TYPE_BYTES, opt, None),
            (3, "i", _F.TYPE_INT64, opt, None),
            (4, "f", _F.TYPE_FLOAT, opt, None),
            (5, "b", _F.TYPE_BOOL, opt, None),
            (6, "type", _F.TYPE_INT32, opt, None),
            (7, "shape", _F.TYPE_MESSAGE, opt, ".harness_tf.TensorShapeProto"),
            (8, "tensor", _F.TYPE_MESSAGE, opt, ".harness_tf.TensorProto"),
        ],
    )
    entry = _message(
        file,
        "NodeDef",
        [
            (1, "name", _F.TYPE_STRING, opt, None),
            (2, "op", _F.TYPE_STRING, opt, None),
            (3, "input", _F.TYPE_STRING, rep, None),
            (4, "device", _F.TYPE_STRING, opt, None),
            (5, "attr", _F.TYPE_MESSAGE, rep, ".harness_tf.NodeDef.AttrEntry"),
        ],
    )
    attr_entry = entry.nested_type.add(name="AttrEntry")
    attr_entry.options.map_entry = True
    attr_entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=opt)
    attr_entry.field.add(name="value", number=2, type=_F.TYPE_MESSAGE, label=opt, type_name=".harness_tf.AttrValue")
    _message(file, "GraphDef", [(1, "node", _F.TYPE_MESSAGE, rep, ".harness_tf.NodeDef")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("harness_tf.GraphDef"))


GraphDef = _build_messages()


def _tensor_to_array(t) -> np.ndarray:
    if t.dtype not in _TF_DTYPES:
        raise ValueError(f"unsupported TensorFlow dtype enum {t.dtype}")
    dtype = _TF_DTYPES[t.dtype]
    shape = [d.size for d in t.tensor_shape.dim]
    if t.tensor_content:
        arr: np.ndarray = np.frombuffer(t.tensor_content, dtype=dtype).copy()
    else:
        vals = {
            np.float32: t.float_val,
            np.float64: t.double_val,
            np.int32: t.int_val,
            np.int64: t.int64_val,
            np.bool_: t.bool_val,
        }[dtype]
        arr = np.array(list(vals), dtype=dtype)
        n = int(np.prod(shape)) if shape else 1
        if arr.size == 1 and n != 1:  # TF stores splat constants as a single value
            arr = np.full(n, arr[0], dtype=dtype)
    return arr.reshape(shape)


def read_graph(path: Path):
    """Parse a frozen GraphDef file; returns the GraphDef message."""
    graph = GraphDef()
    graph.ParseFromString(Path(path).read_bytes())
    return graph


def read_constants(path: Path) -> dict[str, np.ndarray]:
    """All ``Const`` node values of a frozen graph, by node name."""
    return {n.name: _tensor_to_array(n.attr["value"].tensor) for n in read_graph(path).node if n.op == "Const"}
