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


# CPU features that change which kernels an inference runtime picks (and so its throughput).
KERNEL_FLAGS = frozenset(
    {
        "sse4_2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx_vnni",
        "avx512_bf16",
        "avx512_fp16",
        "amx_tile",
        "amx_int8",
        "amx_bf16",
        "asimd",
        "asimddp",
        "sve",
        "sve2",
        "i8mm",
    }
)


def _cpuinfo_first_block() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    if out:
                        break
                    continue
                key, _, value = line.partition(":")
                out.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return out


def cpu_flags() -> set[str]:
    """Every feature flag the kernel reports for the CPU (x86 ``flags``, Arm ``Features``)."""
    info = _cpuinfo_first_block()
    return set((info.get("flags") or info.get("Features") or "").split())


def cpu_identity() -> dict:
    """What makes two CPUs run the same kernels at the same speed: vendor, family/model/stepping, the
    ISA features runtimes dispatch on, and the cores this process may use (not the marketing name,
    which two very different VMs can share)."""
    info = _cpuinfo_first_block()
    return {
        "vendor": info.get("vendor_id") or info.get("CPU implementer") or platform.machine(),
        "family": info.get("cpu family") or info.get("CPU architecture"),
        "model": info.get("model") or info.get("CPU part"),
        "stepping": info.get("stepping") or info.get("CPU revision"),
        "name": cpu_name(),
        "isa": sorted(cpu_flags() & KERNEL_FLAGS),
        "cores": cpu_count(),
    }


def machine_id() -> str:
    """A stable id of this machine (``/etc/machine-id``, else the host name), to tell "recorded here"."""
    try:
        with open("/etc/machine-id") as f:
            value = f.read().strip()
            if value:
                return value
    except OSError:
        pass
    return platform.node()


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
        **{
            name: _version(dist)
            for name, dist in (
                ("harness", "facenet-harness"),
                ("numpy", "numpy"),
                ("onnx", "onnx"),
                ("onnxruntime", "onnxruntime"),
                ("opencv", "opencv-python-headless"),
                ("scikit_learn", "scikit-learn"),
            )
        },
    }


def one_line(fp: dict | None = None) -> str:
    fp = fp or fingerprint()
    return (
        f"{fp['cpu']} x{fp['cpu_count']}, Python {fp['python']}, onnxruntime {fp['onnxruntime']}, numpy {fp['numpy']}"
    )
