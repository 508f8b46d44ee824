"""The environment fingerprint printed in reports and pytest's header: what ran, where."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import sys


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (platform.processor() is often empty on Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask, not the host's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def fingerprint() -> dict:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": cpu_count(),
        **{name: _version(dist) for name, dist in (
            ("harness", "facenet-harness"), ("numpy", "numpy"), ("onnx", "onnx"), ("onnxruntime", "onnxruntime"),
            ("opencv", "opencv-python-headless"), ("scikit_learn", "scikit-learn"))},
    }


def one_line(fp: dict | None = None) -> str:
    fp = fp or fingerprint()
    return (f"{fp['cpu']} x{fp['cpu_count']}, Python {fp['python']}, onnxruntime {fp['onnxruntime']}, "
            f"numpy {fp['numpy']}")
