"""Baselines: the committed accuracy gates, conformance tolerances, golden probe embeddings and perf figures.

Two layers are read, the first that has an item wins:
  1. the user's folder (``--baselines`` / ``FACENET_HARNESS_BASELINES``), where ``--save-baseline`` and
     ``golden --save`` write;
  2. the shipped folder: the repository's ``baselines/`` in a source checkout, the same files inside the
     installed package (``harness/_baselines``) otherwise.
Writes go to the user folder; in a source checkout without one, to the repository's ``baselines/`` (so
the result can be committed). An installed package's own files are never written.

A dataset is identified by ``Dataset.digest`` (pairs file, image bytes, face boxes); its accuracy entry
holds the FP32 reference measured on it and the gates derived from that measurement.
"""

from __future__ import annotations

import json
import os
import sysconfig
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.verdicts import Check, Verdict
from harness.store import cache

ENV_VAR = "FACENET_HARNESS_BASELINES"
ACCURACY_FILE = "accuracy.json"
TOLERANCES_FILE = "tolerances.json"
PERF_FILE = "perf.json"
GOLDEN_DIR = "golden"
# Margins of the absolute gates below the measured FP32 reference, per precision (baselines/README.md).
ACCURACY_MARGIN = 0.002  # 12 of 6,000 pair decisions
AUC_MARGIN = 0.001
PRECISION_MARGINS = {
    "fp32": (ACCURACY_MARGIN, AUC_MARGIN),
    "tf32": (ACCURACY_MARGIN, AUC_MARGIN),
    "fp16": (ACCURACY_MARGIN, AUC_MARGIN),
    "bf16": (ACCURACY_MARGIN, AUC_MARGIN),
    "int8": (ACCURACY_MARGIN + 0.003, AUC_MARGIN + 0.001),
}
DEFAULT_PERF_TOLERANCE = 0.10  # judged on the raw ratio's confidence interval (perfstats)


def shipped_folder() -> Path:
    """The baselines that came with the harness: inside the installed package, else the source checkout's."""
    package = Path(__file__).resolve().parents[1]  # harness/ (this module is harness/store/baselines.py)
    packaged = package / "_baselines"
    if (packaged / TOLERANCES_FILE).is_file():
        return packaged
    return package.parent / "baselines"


def _is_installed(path: Path) -> bool:
    roots = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    return any(r in path.resolve().parents or r == path.resolve() for r in roots)


def _read_json(path: Path, what: str, default=None):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as e:
        raise HarnessError(f"{path}: unreadable {what} ({e}); restore it from git or the package.") from None


def _reference_entry(description: str, summary: dict, provenance: dict) -> dict:
    """An accuracy.json dataset entry: the FP32 reference's figures and the gates derived from them."""
    return {
        "description": description,
        "reference": {
            k: summary[k] for k in ("accuracy_mean", "accuracy_std", "auc", "val", "val_std", "far", "eer", "threshold")
        },
        "provenance": provenance,
        "gates": {
            p: {
                "accuracy_min": round(summary["accuracy_mean"] - acc_margin, 5),
                "auc_min": round(summary["auc"] - auc_margin, 5),
            }
            for p, (acc_margin, auc_margin) in PRECISION_MARGINS.items()
        },
    }


def _accuracy_key(digest: str, model_sha256: str | None) -> str:
    return f"{digest}/{model_sha256}" if model_sha256 else digest


def _accuracy_entry(datasets: dict, digest: str, model_sha256: str | None) -> dict | None:
    """The entry keyed by dataset and reference model; else an entry keyed by the dataset alone (the older
    form) when it was recorded for this same model."""
    if model_sha256 is None:  # the dataset's entry, whichever reference it was recorded for
        return datasets.get(digest) or next((e for k, e in datasets.items() if k.startswith(f"{digest}/")), None)
    entry = datasets.get(_accuracy_key(digest, model_sha256))
    if entry is None:
        plain = datasets.get(digest)
        if plain is not None and plain.get("provenance", {}).get("model_sha256") in (None, model_sha256):
            entry = plain
    return entry


class BaselineStore:
    """The layered baselines (user folder over shipped files) and the one place writes go."""

    def __init__(self, user: str | os.PathLike | None = None, shipped: str | os.PathLike | None = None):
        chosen = user or os.environ.get(ENV_VAR) or None
        self.user = Path(chosen).expanduser() if chosen else None
        self.shipped = Path(shipped) if shipped else shipped_folder()
        if self.user is not None and self.user.exists() and not self.user.is_dir():
            raise HarnessError(f"{self.user}: the baselines folder is a file; give a folder (--baselines).")

    @property
    def layers(self) -> list[Path]:
        return [p for p in (self.user, self.shipped) if p is not None]

    def describe(self) -> str:
        return f"{self.user} over {self.shipped}" if self.user else str(self.shipped)

    def writable(self) -> Path:
        """Where new baselines are written; HarnessError when that would be inside an installed package."""
        if self.user is not None:
            self.user.mkdir(parents=True, exist_ok=True)
            return self.user
        if _is_installed(self.shipped):
            raise HarnessError(
                f"{self.shipped}: the baselines shipped with the installed package are read-only; "
                f"give your own folder with --baselines DIR or {ENV_VAR}=DIR (it then overrides them)."
            )
        return self.shipped

    # --- accuracy gates ---------------------------------------------------------------------------

    def accuracy_doc(self) -> dict:
        """Every dataset's entry, the user's overriding the shipped ones digest by digest."""
        merged: dict = {}
        for base in reversed(self.layers):
            path = base / ACCURACY_FILE
            doc = _read_json(path, "accuracy baselines", {"datasets": {}})
            datasets = doc.get("datasets") if isinstance(doc, dict) else None
            if not isinstance(datasets, dict) or not all(
                isinstance(e, dict) and isinstance(e.get("gates"), dict) for e in datasets.values()
            ):
                raise HarnessError(
                    f"{path}: not an accuracy baselines file (it needs 'datasets', each entry with 'gates'); "
                    "restore it from git, or record it again with 'facenet-harness accuracy --save-baseline'."
                )
            merged.update(datasets)
        return {"datasets": merged}

    def accuracy_entry(self, digest: str, model_sha256: str | None = None) -> dict | None:
        """The entry of this dataset *and* reference model (``model_sha256``; None: the dataset's only)."""
        return _accuracy_entry(self.accuracy_doc()["datasets"], digest, model_sha256)

    def accuracy_gate(self, digest: str, precision: str, model_sha256: str | None = None) -> dict | None:
        """The gate (``accuracy_min``, ``auc_min``) for this dataset, reference model and precision, or None."""
        entry = self.accuracy_entry(digest, model_sha256)
        return entry["gates"].get(precision) if entry else None

    def save_reference(
        self, digest: str, description: str, summary: dict, provenance: dict, replace: bool = False
    ) -> Path:
        """Record an FP32 reference run for a dataset and derive its gates (margins above). Keyed by the
        dataset and the reference model (``provenance["model_sha256"]``): saving for another reference never
        touches this one's gates, and replacing an existing entry needs ``replace``."""
        model_sha = provenance.get("model_sha256")
        path = self.writable() / ACCURACY_FILE
        with cache.locked(path):  # read, change and replace under one lock: a parallel save is never lost
            if not replace and _accuracy_entry(self.accuracy_doc()["datasets"], digest, model_sha) is not None:
                raise HarnessError(
                    f"dataset {digest[:16]} already has accuracy gates for reference model "
                    f"{str(model_sha)[:16]} (in {' or '.join(str(b / ACCURACY_FILE) for b in self.layers)}); "
                    "pass --replace-baseline to replace them."
                )
            doc = _read_json(path, "accuracy baselines", {"datasets": {}})
            datasets = doc.setdefault("datasets", {})
            if _accuracy_entry({digest: datasets[digest]} if digest in datasets else {}, digest, model_sha):
                del datasets[digest]  # an entry of the older, dataset-only form for this same reference
            datasets[_accuracy_key(digest, model_sha)] = _reference_entry(description, summary, provenance)
            cache.atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
        return path

    # --- conformance tolerances -------------------------------------------------------------------

    def tolerances(self) -> dict:
        """Per-precision conformance tolerances, accuracy deltas and the probe set (``tolerances.json``)."""
        for base in self.layers:
            doc = _read_json(base / TOLERANCES_FILE, "conformance tolerances")
            if doc is not None:
                return doc
        raise HarnessError(
            f"no {TOLERANCES_FILE} in {' or '.join(map(str, self.layers))}; reinstall facenet-harness "
            "or restore baselines/ from git."
        )

    def precision_tolerance(self, precision: str) -> dict:
        doc = self.tolerances()
        if precision not in doc["precisions"]:
            raise HarnessError(
                f"{TOLERANCES_FILE}: no tolerances for precision {precision!r}; it has {', '.join(doc['precisions'])}."
            )
        return doc["precisions"][precision]

    def accuracy_delta(self, precision: str) -> float | None:
        return self.tolerances()["accuracy_delta"].get(precision)

    # --- the golden store: probe-set FP32 reference embeddings, with their hashes ---------------------

    def save_golden(self, dataset, indices, embeddings, meta: dict) -> Path:
        """Publish a probe set's reference embeddings and their record as one unit: the array is hashed
        before it is written, under a name of its own content, and the record naming it replaces the old
        one under a lock; two saves at once each pair their own record and array, the last one wins."""
        import io

        import numpy as np

        record_path, plain = _golden_paths(self.writable(), dataset.digest, meta.get("model_sha256"))
        buf = io.BytesIO()
        np.save(buf, np.asarray(embeddings, np.float32))
        data = buf.getvalue()
        sha = cache.sha256_bytes(data)
        array_path = plain.with_name(f"{plain.stem}.{sha[:16]}.npy")
        record = {
            **meta,
            "dataset_digest": dataset.digest,
            "images": probe_fingerprint(dataset, indices),
            "order": [dataset.keys[i] for i in indices],
            "embeddings_file": array_path.name,
            "embeddings_sha256": sha,
        }
        with cache.locked(record_path):
            with cache.atomic_path(array_path) as tmp:
                tmp.write_bytes(data)
            cache.atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
            for stale in record_path.parent.glob(f"{plain.stem}.*.npy"):  # arrays no record names any more
                if stale != array_path:
                    stale.unlink(missing_ok=True)
        return record_path

    def golden(self, dataset, indices, preprocessing: dict, model_sha256: str):
        """(embeddings, record) of the first golden probe set that applies, or (None, why none does)."""
        reasons = []
        for base in self.layers:
            emb, why = _load_golden(base, dataset, indices, preprocessing, model_sha256)
            if emb is not None:
                return emb, why
            reasons.append(why)
        return None, "; ".join(reasons)

    # --- performance baselines: matched by identity, recording the software stack --------------------

    def perf_entries(self) -> list[dict]:
        out = []
        for base in self.layers:
            doc = _read_json(base / PERF_FILE, "performance baselines", {"entries": []})
            entries = doc.get("entries") if isinstance(doc, dict) else None
            if not isinstance(entries, list) or not all(
                isinstance(e, dict) and isinstance(e.get("results", {}), dict) for e in entries
            ):
                raise HarnessError(
                    f"{base / PERF_FILE}: not a performance baselines file (it needs a list 'entries' of "
                    "objects with 'identity' and 'results'); restore it from git, or record it again with "
                    "'make perf-baseline'."
                )
            for e in entries:
                if not isinstance(e.get("identity"), dict):
                    raise HarnessError(
                        f"{base / PERF_FILE}: an entry without 'identity' (an older format); record "
                        "it again with 'facenet-harness bench --save-baseline' or 'make perf-baseline'."
                    )
                out.append({**e, "file": str(base / PERF_FILE)})
        return out

    def perf_baseline(self, identity: dict, case: str) -> tuple[dict | None, str]:
        """(baseline, '') whose identity matches this run's and which has ``case``, or (None, why none does).

        The policy (baselines/README.md): every identity field the baseline records must equal this run's;
        a field the baseline does not record (the seed figures of another deployment) matches anything
        and is named in ``unmatched``. The software stack never takes part in the match: it is compared.
        """
        entries = self.perf_entries()
        same = [e for e in entries if identity_matches(e["identity"], identity)]
        if not same:
            near = [
                e["identity"]
                for e in entries
                if e["identity"].get("backend") == identity.get("backend")
                and e["identity"].get("precision") == identity.get("precision")
            ]
            hint = ""
            if near:
                hint = "; differing fields of the nearest: " + ", ".join(_differences(near[0], identity))
            return None, (
                f"no performance baseline in {self.describe()} for this engine, precision, model and "
                f"device{hint}. Record one on this machine with 'make perf-baseline' "
                "(or facenet-harness bench --save-baseline)."
            )
        # the most specific match first (most identity fields recorded)
        same.sort(key=lambda e: -len(e["identity"]))
        for e in same:
            if case in e["results"]:
                unmatched = sorted(set(identity) - set(e["identity"]))
                return {
                    **e["results"][case],
                    "identity": e["identity"],
                    "stack": e.get("stack", {}),
                    "source": e.get("source", ""),
                    "host": e.get("host"),
                    "recorded": e.get("recorded"),
                    "unmatched": unmatched,
                    "file": e["file"],
                }, ""
        return None, f"the matching baseline entry in {same[0]['file']} has no result for {case}"

    def save_perf(
        self,
        identity: dict,
        stack: dict,
        results: dict[str, dict],
        source: str,
        host: str,
        recorded: str,
        tolerance: float = DEFAULT_PERF_TOLERANCE,
    ) -> Path:
        """Record (or update) this identity's results: per case the median fps, the tolerance and the
        paired per-step samples (throughput and canary) that later runs are compared with."""
        path = self.writable() / PERF_FILE
        with cache.locked(path):  # read, change and replace under one lock: a parallel save is never lost
            doc = _read_json(path, "performance baselines", {"entries": []})
            entries = doc.setdefault("entries", [])
            entry = next((e for e in entries if e.get("identity") == identity), None)
            if entry is None:
                entry = {"identity": identity, "results": {}}
                entries.append(entry)
            entry.update(stack=stack, source=source, host=host, recorded=recorded)
            for case, r in results.items():
                entry["results"][case] = {**r, "tolerance": tolerance}
            cache.atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
        return path


def identity_matches(recorded: dict, current: dict) -> bool:
    """Every field the baseline records equals this run's (nested dicts field by field)."""
    for key, value in recorded.items():
        if key not in current:
            return False
        if isinstance(value, dict) and isinstance(current[key], dict):
            if not identity_matches(value, current[key]):
                return False
        elif value != current[key]:
            return False
    return True


def _differences(recorded: dict, current: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in recorded.items():
        cur = current.get(key)
        if isinstance(value, dict) and isinstance(cur, dict):
            out += _differences(value, cur, f"{prefix}{key}.")
        elif value != cur:
            out.append(f"{prefix}{key} {value!r} (here {cur!r})")
    return out


def stack_changes(recorded: dict, current: dict) -> list[str]:
    """'key: old -> new' for each software-stack field that differs from the baseline's."""
    return [
        f"{k}: {recorded.get(k)} -> {current.get(k)}"
        for k in sorted(set(recorded) | set(current))
        if recorded.get(k) != current.get(k)
    ]


def judge_accuracy(
    summary: dict, gate: dict | None, reference: dict | None = None, max_delta: float | None = None
) -> tuple[Verdict, list[Check]]:
    """The accuracy checks of one run and their verdict.

    Besides the absolute gate, an engine under test is held within ``max_delta`` of the accuracy of the
    FP32 reference measured on the same data (``reference``), when given: far better is as suspect as
    worse (other data, another model), so that bound is two-sided. Without an absolute gate for this data
    that delta is still judged: a failing one is a FAIL (a missing gate never hides it), a passing one
    leaves the verdict NO BASELINE.
    """
    delta = []
    if reference is not None and max_delta is not None:
        delta.append(
            Check.within(
                "accuracy_delta_vs_reference", summary["accuracy_mean"] - reference["accuracy_mean"], max_delta
            )
        )
    if gate is None:
        return (Verdict.FAIL if any(c.verdict is Verdict.FAIL for c in delta) else Verdict.NO_BASELINE), delta
    checks = [
        Check.at_least("accuracy_mean", summary["accuracy_mean"], gate["accuracy_min"]),
        Check.at_least("auc", summary["auc"], gate["auc_min"]),
        *delta,
    ]
    return Verdict.combine(c.verdict for c in checks), checks


def _golden_paths(base: Path, digest: str, model_sha256: str | None = None) -> tuple[Path, Path]:
    """The record and (older form) array of a probe set: per dataset and reference model; without a
    model, the older dataset-only name (the committed set), which names its model inside."""
    stem = base / GOLDEN_DIR / (f"probe-{digest[:16]}" + (f"-m{model_sha256[:16]}" if model_sha256 else ""))
    return stem.with_suffix(".json"), stem.with_suffix(".npy")


def probe_fingerprint(dataset, indices) -> dict:
    """What the probe embeddings depend on in the data: each image's bytes and its face box."""
    return {
        dataset.keys[i]: {
            "sha256": cache.sha256_file(dataset.paths[i]),
            "box": str(dataset.boxes[dataset.keys[i]]) if dataset.boxes is not None else None,
        }
        for i in indices
    }


def _load_golden(base: Path, dataset, indices, preprocessing: dict, model_sha256: str):
    import numpy as np

    record_path, array_path = _golden_paths(base, dataset.digest, model_sha256)
    if not record_path.is_file():  # the older dataset-only form
        record_path, array_path = _golden_paths(base, dataset.digest)
    if not record_path.is_file():
        return None, f"no golden probe set for dataset digest {dataset.digest[:16]} in {base / GOLDEN_DIR}"
    record = _read_json(record_path, "golden probe record")
    needed = ("embeddings_sha256", "order", "preprocessing", "images")
    if not isinstance(record, dict) or any(k not in record for k in needed):
        raise HarnessError(
            f"{record_path}: not a golden probe record (it needs {', '.join(needed)}); restore it from git or "
            "rebuild it with 'facenet-harness golden --save'."
        )
    array_path = record_path.parent / Path(str(record.get("embeddings_file") or array_path.name)).name
    if not cache.verified(array_path, record["embeddings_sha256"]):
        raise HarnessError(
            f"{array_path}: missing or its sha256 differs from {record_path}; restore both from git "
            "or rebuild them with 'facenet-harness golden --save'."
        )
    if record.get("model_sha256") != model_sha256:
        return (
            None,
            f"{record_path}: recorded for another reference model (sha256 {str(record.get('model_sha256'))[:16]})",
        )
    if record["order"] != [dataset.keys[i] for i in indices]:
        return None, f"{record_path}: recorded for another probe set (size/seed)"
    if record["preprocessing"] != preprocessing:
        return None, f"{record_path}: recorded with other preprocessing {record['preprocessing']}"
    if record["images"] != probe_fingerprint(dataset, indices):
        return None, f"{record_path}: probe images or boxes differ from the ones recorded"
    return np.load(array_path), {**record, "path": str(record_path)}
