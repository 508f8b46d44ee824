"""Extract the Python API surface of a TensorRT bindings wheel (or of cuda-bindings) into a JSON fixture.

The contract tests (tests/test_trt_contract.py) build their fake SDKs from these fixtures, so the
harness is checked against the names and signatures the real bindings have, not against guesses.

    pip download --no-deps -d ~/.cache/trt-wheels tensorrt-cu12-bindings==10.16.1.11
    python tools/extract_trt_api.py ~/.cache/trt-wheels/tensorrt_cu12_bindings-10.16.1.11-*.whl \
        --out tests/data/tensorrt_api/10.x.json
    python tools/extract_trt_api.py ~/.cache/trt-wheels/cuda_bindings-12.9.4-*.whl \
        --with ~/.cache/trt-wheels/cuda_pathfinder-*.whl --out tests/data/tensorrt_api/cuda-bindings-12.x.json

A TensorRT bindings module (``tensorrt_bindings/tensorrt.so``, pybind11) cannot be imported without
libnvinfer, but it needs only a handful of C entry points from it at import time (the rest of the
API is virtual calls on objects it never creates here). So this script compiles empty stand-ins
for the libraries it links (a C compiler and binutils' ``nm`` are needed), imports the real module
in a child process with them, and records what ``dir()``, the enums and pybind11's signatures say.
Nothing is called on the SDK. cuda-bindings imports without a GPU, so it is imported as it is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

TRT_CLASSES = [
    "Logger",
    "ILogger",
    "Builder",
    "OnnxParser",
    "Runtime",
    "IBuilderConfig",
    "INetworkDefinition",
    "ITensor",
    "IOptimizationProfile",
    "ICudaEngine",
    "IExecutionContext",
    "IHostMemory",
]
TRT_ENUMS = ["BuilderFlag", "NetworkDefinitionCreationFlag", "MemoryPoolType", "DataType", "TensorIOMode"]
CUDA_ENUMS = ["cudaMemcpyKind", "cudaError_t"]
NOT_STUBBED = re.compile(r"^(_?Py|_ITM_|__gmon_start__|__pthread_key_create|_ZGT|dl(open|sym|close|error)$|pthread_)")

# Runs in the child process: argv = kind, module file (trt) or site folder (cuda); prints JSON.
CHILD = r"""
import importlib, importlib.util, inspect, json, os, re, sys
kind, where = sys.argv[1], sys.argv[2]
classes, enums = json.loads(sys.argv[3]), json.loads(sys.argv[4])

def signatures(name, obj):
    doc = getattr(obj, "__doc__", None) or ""
    return [line.strip() for line in doc.splitlines() if re.match(r"\s*(\d+\.\s*)?" + re.escape(name) + r"\(", line)]

def enum_members(e):
    return list(getattr(e, "__members__", {}))

if kind == "trt":
    spec = importlib.util.spec_from_file_location("tensorrt", where)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = {"module": sorted(n for n in dir(mod) if not n.startswith("_")), "classes": {}, "enums": {}}
    for cname in classes:
        cls = getattr(mod, cname, None)
        if cls is None:
            continue
        members = {}
        for n in dir(cls):
            if n.startswith("_") and n != "__init__":
                continue
            raw = inspect.getattr_static(cls, n)
            if isinstance(raw, property):
                members[n] = {"kind": "property", "settable": raw.fset is not None}
            elif callable(raw) or isinstance(raw, (staticmethod, classmethod)):
                members[n] = {"kind": "method", "signatures": signatures(n, getattr(cls, n))}
            else:
                members[n] = {"kind": "attribute", "type": type(getattr(cls, n)).__name__}
        out["classes"][cname] = members
    for ename in enums:
        e = getattr(mod, ename, None)
        if e is not None:
            out["enums"][ename] = enum_members(e)
    print(json.dumps(out))
else:
    sys.path.insert(0, where)
    rt = importlib.import_module("cuda.bindings.runtime")
    funcs = {}
    for n in sorted(dir(rt)):
        f = getattr(rt, n)
        if n.startswith("cuda") and callable(f) and not isinstance(f, type):
            doc = f.__doc__ or ""
            sig = doc.strip().splitlines()[0] if doc.strip() else ""
            lines = doc.splitlines()
            returns = []
            if "Returns" in lines:  # numpydoc: unindented 'name : type' lines up to the next heading
                body = lines[lines.index("Returns") + 2:]
                for i, ln in enumerate(body):
                    if i + 1 < len(body) and re.fullmatch(r"-+", body[i + 1]):
                        break
                    if ln.strip() and not ln.startswith((" ", "\t")):
                        returns.append(ln.split(" : ")[0].strip())
            funcs[n] = {"signature": sig, "returns": returns}
    out = {"functions": funcs,
           "enums": {e: enum_members(getattr(rt, e)) for e in enums if hasattr(rt, e)}}
    print(json.dumps(out))
"""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def needed_and_undefined(so: Path) -> tuple[list[str], list[str]]:
    """The libraries the module links (DT_NEEDED) and the undefined symbols it expects from them."""
    dyn = subprocess.run(["readelf", "-d", str(so)], capture_output=True, text=True, check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dyn)
    nm = subprocess.run(["nm", "-D", "--undefined-only", str(so)], capture_output=True, text=True, check=True).stdout
    undefined = []
    for line in nm.splitlines():
        kind, _, name = line.strip().partition(" ")
        if kind == "U" and "@" not in name and not NOT_STUBBED.match(name):
            undefined.append(name)
    return needed, undefined


def stub_libraries(so: Path, folder: Path) -> None:
    """Empty stand-ins for the SDK libraries ``so`` links, each defining every symbol it expects."""
    needed, undefined = needed_and_undefined(so)
    src = folder / "stub.c"
    src.write_text("".join(f"void *{name}(void) {{ return 0; }}\n" for name in undefined))
    for lib in needed:
        if re.match(r"lib(nvinfer|nvonnxparser|nvparsers|ixrt|nvinfer_plugin)", lib):
            cc = os.environ.get("CC", "cc")
            subprocess.run(
                [cc, "-shared", "-fPIC", f"-Wl,-soname,{lib}", "-o", str(folder / lib), str(src)], check=True
            )


def extract(wheel: Path, extra: list[Path]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        for w in [wheel, *extra]:
            with zipfile.ZipFile(w) as z:
                z.extractall(site)
        with zipfile.ZipFile(wheel) as z:
            meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        name = re.search(r"^Name: (.+)$", meta, re.M).group(1).strip()
        version = re.search(r"^Version: (.+)$", meta, re.M).group(1).strip()
        so = next(site.glob("tensorrt_bindings/tensorrt*.so"), None)
        env = dict(os.environ)
        if so is not None:
            libs = Path(tmp) / "libs"
            libs.mkdir()
            stub_libraries(so, libs)
            env["LD_LIBRARY_PATH"] = f"{libs}:{env.get('LD_LIBRARY_PATH', '')}"
            argv = ["trt", str(so), json.dumps(TRT_CLASSES), json.dumps(TRT_ENUMS)]
            method = (
                "the wheel's tensorrt.so imported with empty stand-in SDK libraries; dir(), enum "
                "__members__ and pybind11 signatures recorded"
            )
        elif (site / "cuda" / "bindings").is_dir():
            argv = ["cuda", str(site), "[]", json.dumps(CUDA_ENUMS)]
            method = "cuda.bindings.runtime imported (no GPU needed); functions, docstring signatures and returns"
        else:
            raise SystemExit(f"{wheel}: neither a TensorRT bindings wheel nor cuda-bindings")
        proc = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"{wheel}: importing the bindings failed:\n{proc.stderr[-2000:]}")
        surface = json.loads(proc.stdout)
        if so is not None:  # __version__ is set by the package's __init__.py, not by the extension
            init = (so.parent / "__init__.py").read_text()
            m = re.search(r'^__version__\s*=\s*"([^"]+)"', init, re.M)
            if m:
                surface["module"] = sorted(set(surface["module"]) | {"__version__"})
                surface["version_attribute"] = m.group(1)
    return {
        "source": {
            "wheel": wheel.name,
            "sha256": sha256(wheel),
            "package": name,
            "version": version,
            "with": [{"wheel": w.name, "sha256": sha256(w)} for w in extra],
            "extracted_by": "tools/extract_trt_api.py",
            "method": method,
        },
        **surface,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wheel", type=Path)
    ap.add_argument(
        "--with",
        dest="extra",
        type=Path,
        action="append",
        default=[],
        help="another wheel the module needs at import (cuda-pathfinder for cuda-bindings)",
    )
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    data = extract(args.wheel, args.extra)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(args.out)
    print(f"{args.out}: {data['source']['package']} {data['source']['version']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
