"""A real SDK upgrade, gated: the old and the new release each in its own virtual environment, on this
machine, the same data and the same model; then the upgrade report.

For ``--sdk openvino`` (default 2025.4.1 -> 2026.4.1) or ``--sdk onnxruntime`` (1.31.1 -> 1.32.0):
  1. a venv per version with this checkout (and the OpenVINO plug-in) installed against constraints.txt,
     only the SDK's pin replaced;
  2. ``facenet-harness gate --backend <sdk> --precisions <...> --out <work>/<sdk>-<version>`` in each
     (the shared artifact cache holds the prepared model; the run archive keeps each run's embeddings);
  3. ``facenet-harness compare-runs OLD NEW --out <work>/<sdk>-upgrade``: the report, printed.

Usage: python benchmarks/sdk_upgrade.py --sdk openvino [--old 2025.4.1 --new 2026.4.1] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = {
    "openvino": ("2025.4.1", "2026.4.1", "fp32,int8", "compute-b8,compute-b64"),
    "onnxruntime": ("1.31.1", "1.32.0", "fp32,int8", "compute-b8,compute-b64"),
}
# what is released with each SDK version and upgraded with it (NNCF follows OpenVINO's releases)
COMPANIONS = {  # openvino 2025.4.1 requires numpy<2.3, nncf 2.19 numpy<2.4
    ("openvino", "2025.4.1"): {"nncf": "2.19.0", "numpy": "2.2.6"},
    ("openvino", "2026.4.1"): {"nncf": "3.4.0"},
}


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=False, **kw)


def venv_for(work: Path, sdk: str, version: str) -> Path:
    venv = work / f"venv-{sdk}-{version}"
    if (venv / ".installed").exists():
        return venv
    constraints = (ROOT / "constraints.txt").read_text()
    pinned = constraints
    for name, pin in {sdk: version, **COMPANIONS.get((sdk, version), {})}.items():
        pinned = re.sub(rf"(?m)^{name}==.*$", f"{name}=={pin}", pinned)
        if f"{name}=={pin}" not in pinned:
            pinned += f"\n{name}=={pin}\n"
    cfile = work / f"constraints-{sdk}-{version}.txt"
    cfile.write_text(pinned)
    sh([sys.executable, "-m", "venv", str(venv)]).check_returncode()
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-c", str(cfile)]
    sh([*pip, "-e", str(ROOT), "-e", str(ROOT / "plugins" / "openvino")]).check_returncode()
    (venv / ".installed").touch()
    return venv


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sdk", choices=sorted(DEFAULTS), default="openvino")
    p.add_argument("--old")
    p.add_argument("--new")
    p.add_argument("--precisions")
    p.add_argument("--perf-cases")
    p.add_argument("--work", type=Path, default=ROOT / "upgrade-runs")
    args = p.parse_args()
    old, new, precisions, cases = DEFAULTS[args.sdk]
    old, new = args.old or old, args.new or new
    precisions, cases = args.precisions or precisions, args.perf_cases or cases
    args.work.mkdir(parents=True, exist_ok=True)
    shared = ROOT.parent / "shared"
    if not os.environ.get("LFW_DIR") and (shared / "lfw").is_dir():  # as make does
        os.environ.update(
            LFW_DIR=str(shared / "lfw"),
            LFW_PAIRS=str(shared / "lfw_pairs.txt"),
            LFW_BOXES=str(shared / "lfw_mtcnn_boxes.tsv"),
        )
    started = time.monotonic()
    outs = []
    for version in (old, new):
        venv = venv_for(args.work, args.sdk, version)
        out = args.work / f"{args.sdk}-{version}"
        sh(
            [
                str(venv / "bin" / "facenet-harness"),
                "gate",
                "--backend",
                args.sdk,
                "--precisions",
                precisions,
                "--perf-cases",
                cases,
                "--out",
                str(out),
            ],
            env={**os.environ},
        )  # its exit code is its verdict; the report below reads it
        outs.append(out)
    venv = venv_for(args.work, args.sdk, new)
    sh(
        [
            str(venv / "bin" / "facenet-harness"),
            "compare-runs",
            str(outs[0]),
            str(outs[1]),
            "--out",
            str(args.work / f"{args.sdk}-upgrade"),
        ]
    )
    print(f"done in {(time.monotonic() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
