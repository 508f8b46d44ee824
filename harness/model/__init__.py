"""Model preparation: the pinned weights (``weights``), the frozen-graph reader (``tfgraph``), the network
(``network``), the ONNX export and inspection (``export``: re-exported here), deploy-time graph passes
(``graph_passes``) and the FP16 / INT8 variants (``quantize``)."""

from harness.model.export import (
    EMBEDDING_SIZE,
    IMAGE_SIZE,
    INPUT_NAME,
    OPSET,
    OUTPUT_NAME,
    RECIPE,
    STATIC_BATCH,
    ModelInfo,
    PreparedModel,
    count_macs,
    inspect,
    prepare,
    with_static_batch,
)

__all__ = [
    "EMBEDDING_SIZE",
    "IMAGE_SIZE",
    "INPUT_NAME",
    "OPSET",
    "OUTPUT_NAME",
    "RECIPE",
    "STATIC_BATCH",
    "ModelInfo",
    "PreparedModel",
    "count_macs",
    "inspect",
    "prepare",
    "with_static_batch",
]
