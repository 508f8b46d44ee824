"""The torch engine (harness/engines/torch.py) beyond what every engine gets through the plugin's
parametrisation (contract kit, conformance, accuracy): per-call numerics flags that never leak, precision
availability with reasons, the float32 head of reduced precisions, the model it accepts, the compute-only
view, and benchmarks/gpu_check.py's pack and run on the CPU. The CUDA-only test skips without a GPU."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness import engines
from harness.checks import throughput
from harness.core.errors import HarnessError
from harness.engines import EngineUnavailable
from harness.store import environment

torch = pytest.importorskip("torch")
from harness.engines import torch as torch_engine  # noqa: E402 - only once torch is known to import

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def faces(facenet_lfw):
    return facenet_lfw.batch(throughput.probe_batch_indices(facenet_lfw, 6))


@pytest.fixture(scope="module")
def fp32(facenet_engines):
    return facenet_engines("torch", "fp32", device="cpu")


def _state():
    return torch_engine._tf32_state(torch)


def test_registered_with_its_precisions_and_options():
    item = next(it for it in engines.catalogue() if it.name == "torch")
    assert item.available and item.precisions == ("fp32", "tf32", "fp16", "bf16")
    assert {o.name for o in item.options} == {"device", "cuda_graphs", "channels_last", "threads"}


def test_numerics_are_set_for_the_call_and_restored():
    outside = _state()
    with torch_engine.numerics(tf32=True):
        on = _state()
        with torch_engine.numerics(tf32=False):
            off = _state()
        assert _state() == on
    assert _state() == outside
    assert on != off
    if on[0] == "new":
        assert on[1:3] == ("tf32", "tf32") and off[1:3] == ("ieee", "ieee")
    else:
        assert on[1:4] == (True, True, "high") and off[1:4] == (False, False, "highest")


def test_an_fp32_engine_runs_with_tf32_off_whatever_the_process_set(fp32, faces):
    """Another engine (or the caller) left TF32 on: the fp32 engine turns it off for its own call only."""
    seen = []
    handle = fp32.module.register_forward_pre_hook(lambda m, args: seen.append(_state()))
    try:
        with torch_engine.numerics(tf32=True):
            before = _state()
            fp32.run(faces[:2])
            after = _state()
    finally:
        handle.remove()
    assert seen and seen[0] == torch_engine._wanted_state(torch, tf32=False, benchmark=False)
    assert after == before != seen[0]


def test_tf32_is_refused_on_the_cpu_and_fp16_only_with_native_kernels():
    why = torch_engine.precision_availability("tf32", "cpu")
    assert not why and "TF32" in why.why
    native = bool(environment.cpu_flags() & set(torch_engine.CPU_NATIVE["fp16"]))
    assert bool(torch_engine.precision_availability("fp16", "cpu")) is native
    assert bool(torch_engine.precision_availability("fp32", "cpu"))


@pytest.mark.accuracy
def test_the_gate_leaves_out_what_this_machine_cannot_run(tmp_path, capsys):
    """``gate --backend torch`` with no --precisions: every precision that can run here, the others named
    with the reason; one named explicitly that cannot run is an error (exit 2), not a silent skip."""
    from harness import cli

    runnable = [
        p
        for p in torch_engine.TorchEngine.precisions
        if torch_engine.TorchEngine.precision_availability(p, {"device": "auto"})
    ]
    rc = cli.main(
        ["gate", "--backend", "torch", "--perf-cases", "", "--out", str(tmp_path), "--json", str(tmp_path / "g.json")]
    )
    err = capsys.readouterr().err
    rows = json.loads((tmp_path / "g.json").read_text())["rows"]
    assert [r["precision"] for r in rows] == runnable and rc == 0
    for p in set(torch_engine.TorchEngine.precisions) - set(runnable):
        assert f"leaving out torch {p}: " in err
    if "tf32" not in runnable:
        assert (
            cli.main(["gate", "--backend", "torch", "--precisions", "tf32", "--perf-cases", "", "--out", str(tmp_path)])
            == 2
        )


def test_an_unavailable_precision_is_an_engine_unavailable_with_the_reason(facenet_model):
    with pytest.raises(EngineUnavailable, match="TF32"):
        engines.create("torch", facenet_model, "tf32", device="cpu")


def test_options_are_checked(facenet_model):
    with pytest.raises(HarnessError, match="cuda_graphs"):
        engines.create("torch", facenet_model, "fp32", cuda_graphs="maybe")
    with pytest.raises(HarnessError, match="device"):
        engines.create("torch", facenet_model, "fp32", device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(EngineUnavailable, match="no GPU"):
            engines.create("torch", facenet_model, "fp32", device="cuda")


def test_refuses_an_onnx_that_is_not_the_pinned_export(facenet_model, tmp_path):
    import onnx

    m = onnx.load(str(facenet_model.path))
    onnx.helper.set_model_props(m, {"edited": "yes"})
    other = tmp_path / "other.onnx"
    onnx.save(m, str(other))
    from harness import model

    with pytest.raises(HarnessError, match="other.onnx"):
        engines.create("torch", model.inspect(other), "fp32", device="cpu")


def test_bf16_runs_its_head_in_float32(facenet_engines, faces, fp32):
    if not torch_engine.precision_availability("bf16", "cpu"):
        pytest.skip(torch_engine.precision_availability("bf16", "cpu").why)
    bf16 = facenet_engines("torch", "bf16", device="cpu")
    assert bf16.module.stem[0].conv.weight.dtype == torch.bfloat16
    assert bf16.module.bottleneck.weight.dtype == torch.float32 and bf16.module.last_bn.weight.dtype == torch.float32
    out = bf16.run(faces)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)  # a bf16 normalisation is ~1e-3 off
    cos = np.sum(out * fp32.run(faces), axis=1)
    assert 0.999 < cos.min() < 1 - 1e-7  # close to fp32, and really computed in bf16


def test_compute_only_view_gives_the_run_embeddings(fp32, faces):
    fp32.load_in_place(faces)
    fp32.execute_in_place()
    assert set(fp32.timings) == {"compute_ms"} and fp32.timings["compute_ms"] > 0
    np.testing.assert_allclose(fp32.fetch_in_place(), fp32.run(faces), atol=1e-6)
    assert set(fp32.timings) == {"compute_ms"}  # a CPU run has no copies to time


def test_describes_what_changes_its_outputs(fp32):
    d = fp32.describe()
    assert d["backend"] == "torch" and d["version"] == torch.__version__ and d["tf32"] is False
    assert d["precision"] == "fp32" and d["torch_device"] == "cpu" and d["channels_last"] is True
    ident = throughput.identity(fp32)
    assert "cpu" in ident and ident["settings"]["device"] == "cpu"
    assert throughput.stack(fp32)["runtime"] == f"torch {torch.__version__}"


def test_gpu_check_normalises_like_the_harness(facenet_lfw):
    from harness.lfw import data

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    u8 = np.random.default_rng(0).integers(0, 256, (3, 3, 160, 160), dtype=np.uint8)
    norm = gpu_check._normaliser({"preprocessing": data.PREPROCESSING})
    assert np.array_equal(norm(u8), data.normalize_chw(u8))


def test_gpu_check_packs_and_runs_on_the_cpu(tmp_path, facenet_lfw, facenet_reference_model):
    script = ROOT / "benchmarks" / "gpu_check.py"
    pack, out = tmp_path / "pack", tmp_path / "out"
    subprocess.run(
        [sys.executable, str(script), "--pack", str(pack), "--limit", "2"],
        check=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    meta = json.loads((pack / "meta.json").read_text())
    assert meta["model_sha256"] == facenet_reference_model.sha256 and meta["probe_images"] == 2
    assert meta["pairs"] == 2 * 2 * facenet_lfw.protocol.folds
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            "--run",
            str(pack),
            "--device",
            "cpu",
            "--precisions",
            "fp32,tf32",
            "--seconds",
            "0.2",
            "--perf-batch",
            "2",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    row = report["precisions"]["fp32"]
    assert row["conformance"]["verdict"] == "PASS" and row["conformance"]["max_abs"] <= 1e-5
    assert row["lfw"]["pairs"] == meta["pairs"] and row["lfw"]["flipped_vs_reference"] == 0
    assert row["perf"]["fps"] > 0 and len(row["perf"]["fps_blocks"]) == 8
    assert "TF32" in report["precisions"]["tf32"]["skipped"]
    assert np.load(out / "probe-fp32.npy").shape == (2, 512)


@pytest.fixture(scope="module")
def cuda_model(facenet_model):
    if not torch.cuda.is_available():
        pytest.skip(f"PyTorch {torch.__version__} sees no GPU")
    return facenet_model


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_graphs_equal_eager_and_are_timed_by_events(cuda_model, facenet_engines, faces, facenet_store, precision):
    graphs = facenet_engines("torch", precision, cuda_model, device="cuda", cuda_graphs=True)
    eager = facenet_engines("torch", precision, cuda_model, device="cuda", cuda_graphs=False)
    atol = facenet_store.precision_tolerance(precision)["atol"]
    a, b = graphs.run(faces), eager.run(faces)
    assert np.abs(a - b).max() <= atol
    assert set(graphs.timings) == {"h2d_ms", "compute_ms", "d2h_ms"} and graphs.timings["compute_ms"] > 0
    assert graphs.device_kind == "gpu" and "compute_capability" in graphs.describe()
    assert throughput.stack(graphs)["driver"]


def test_numerics_are_shared_by_threads_that_want_the_same_and_never_mixed():
    """Two threads of fp32 engines hold TF32 off together; a thread wanting TF32 on waits until they have
    left; and the flags every holder sees inside its block are its own."""
    import threading
    import time

    outside = _state()
    seen, errors = [], []
    inside = threading.Barrier(2)

    def hold(tf32, wait_for_peer):
        try:
            with torch_engine.numerics(tf32=tf32):
                if wait_for_peer:
                    inside.wait(timeout=10)  # both fp32 threads inside at once: shared, not serialised
                for _ in range(20):
                    seen.append((tf32, _state()))
                    time.sleep(0.001)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=hold, args=(False, True)) for _ in range(2)]
    threads.append(threading.Thread(target=hold, args=(True, False)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors and not any(t.is_alive() for t in threads)
    for tf32, state in seen:
        assert state == torch_engine._wanted_state(torch, tf32=tf32, benchmark=False), (tf32, state)
    assert {tf32 for tf32, _ in seen} == {True, False}
    assert _state() == outside


def test_a_cuda_graph_input_captured_in_inference_mode_takes_the_compute_views_copy():
    """Issue 18.1: ``_run`` captures a batch size's CUDA graph inside inference mode, and ``load_in_place``
    (the compute-only view) later copies into the same static input outside it. PyTorch refuses an in-place
    update of an inference tensor there; the engine's static inputs and every copy into them go through
    ``static_input`` / ``copy_into``, which work in either order (the graph capture itself needs a GPU:
    benchmarks/gpu_check.py runs that order, probe embeddings at batch 64 then compute-b64)."""
    static = torch_engine.static_input(torch, 2, "cpu")
    assert static.is_inference()
    host = torch.ones_like(static)
    with pytest.raises(RuntimeError, match="Inplace update to inference tensor outside InferenceMode"):
        static.copy_(host)  # what load_in_place did
    torch_engine.copy_into(torch, static, host)  # outside inference mode: load_in_place
    assert torch.equal(static, host)
    with torch.inference_mode():
        torch_engine.copy_into(torch, static, host * 2)  # inside it: _run
    assert torch.equal(static, host * 2)
