"""OpenVINO engine plug-in for facenet-harness (entry point ``facenet_harness.engines: openvino``)."""

from facenet_harness_openvino.engine import OpenVINOEngine

__all__ = ["OpenVINOEngine"]
