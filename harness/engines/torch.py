"""PyTorch on the CPU or on any GPU PyTorch sees (NVIDIA CUDA, or Iluvatar CoreX's CUDA-compatible build):
the harness's own InceptionResnetV1 with the pinned weights, in fp32, tf32, fp16 or bf16.

The network is built the way ``facenet-harness prepare`` builds the module it exports
(``InceptionResnetV1(read_constants(graph_final.pb))``), so the engine runs exactly the model the pinned
ONNX was exported from; it accepts only that export (dynamic or static batch-64), by sha256, and refuses
any other ONNX with a clear error.

Numerics per precision (``NUMERICS``):
  * ``fp32``: TF32 off for cuBLAS matmuls and cuDNN convolutions (PyTorch allows TF32 in cuDNN convolutions
    by default), ``float32_matmul_precision`` "highest", cuDNN autotuning off (the default algorithms);
  * ``tf32``: TF32 on for both (NVIDIA compute capability >= 8.0 only);
  * ``fp16`` / ``bf16``: the network cast to that type; its head (bottleneck, batch norm, L2 normalisation,
    0.9 of its 1,418 MMAC an image) runs in float32, so the embedding is normalised in float32.
The engine's I/O is float32 either way. TF32 and autotuning flags are process-wide in PyTorch: each call
holds them (``numerics``): calls wanting the same flags share them across threads, one wanting others waits,
and the caller's are restored after, so engines of different precisions in one process never run under each
other's flags (or leave theirs to the caller's code).

On CUDA, each batch size gets one captured CUDA graph (``cuda_graphs``, up to ``MAX_GRAPHS`` kept) and the
host/device copies and the execution are timed with CUDA events (``timings``). ``device_fingerprint()``
adds what ``describe()`` must not hold because it changes from call to call (current clocks).
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import json
import re
import threading
import time
from typing import Any

import numpy as np

from harness import model as model_
from harness.core.errors import HarnessError
from harness.engines.base import Availability, Capability, Engine, EngineUnavailable, Option
from harness.engines.cuda import cuda_driver_api_version, nvidia_smi
from harness.store import cache
from harness.store.environment import cpu_flags, cpu_identity, cpu_name

MAX_GRAPHS = 8  # captured CUDA graphs kept (one per batch size), least recently used dropped first
GRAPH_WARMUP = 3  # eager runs on a side stream before a capture (cuDNN autotuning, allocator)
# CPU ISA features under which PyTorch has native kernels for the type (decided by measurement: on the
# AVX-512 EPYC without AVX512-FP16 a bf16 batch of 64 ran at 0.8x fp32, an fp16 one at 0.12x, i.e. 2.2 images/s).
CPU_NATIVE = {"bf16": ("avx512_bf16", "amx_bf16", "bf16"), "fp16": ("avx512_fp16", "amx_fp16", "fphp")}


def _flag(value: Any) -> bool:
    """A boolean engine option from the command line: 1/0, true/false, on/off, yes/no."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "on", "yes"):
        return True
    if text in ("0", "false", "off", "no"):
        return False
    raise ValueError(f"{value!r} is not one of 1/0, true/false, on/off, yes/no")


_flag.__name__ = "boolean"


def _device(value: Any) -> str:
    text = str(value).strip().lower()
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise ValueError("expected auto, cpu, cuda or cuda:N")
    return text


_device.__name__ = "device"


# --- process-wide numerics flags ---------------------------------------------------------------------


def _tf32_state(torch) -> tuple:
    m, c = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(m, "fp32_precision") and hasattr(getattr(c, "conv", None), "fp32_precision"):
        # PyTorch >= 2.9: reading the legacy cudnn.allow_tf32 after the new API was used raises; use the new one
        return ("new", m.fp32_precision, c.conv.fp32_precision, c.benchmark)
    return ("legacy", m.allow_tf32, c.allow_tf32, torch.get_float32_matmul_precision(), c.benchmark)


def _set_tf32_state(torch, state: tuple) -> None:
    m, c = torch.backends.cuda.matmul, torch.backends.cudnn
    if state[0] == "new":
        m.fp32_precision, c.conv.fp32_precision, c.benchmark = state[1:]
    else:
        m.allow_tf32, c.allow_tf32, c.benchmark = state[1], state[2], state[4]
        torch.set_float32_matmul_precision(state[3])


def _wanted_state(torch, tf32: bool, benchmark: bool) -> tuple:
    if _tf32_state(torch)[0] == "new":
        mode = "tf32" if tf32 else "ieee"
        return ("new", mode, mode, benchmark)
    return ("legacy", tf32, tf32, "high" if tf32 else "highest", benchmark)


class _Numerics:
    """The process-wide numerics flags, held by the calls that want the same values.

    PyTorch's TF32 / autotuning flags and its intra-op thread count are process-wide. Calls in several
    threads that want the same values share them (the engines of a soak); a call from another thread that
    wants other values waits until the last holder has left, when the caller's values are restored. A
    thread that is the only holder may nest a call with other values (an fp32 engine called inside a
    tf32 block): they apply inside it, the outer ones after, and meanwhile no other thread joins. So no
    engine call ever runs under another's flags, and the code around the engines sees its own."""

    def __init__(self):
        self.cond = threading.Condition()
        self.holders: collections.Counter = collections.Counter()  # thread id -> calls it holds
        self.held: tuple | None = None  # (tf32 state, threads) in force while held
        self.saved: tuple | None = None  # the caller's, restored when the last holder leaves
        self.nested = 0  # same-thread calls that changed the values under an outer one

    @staticmethod
    def _apply(torch, state: tuple) -> None:
        _set_tf32_state(torch, state[0])
        if state[1] and state[1] != torch.get_num_threads():
            torch.set_num_threads(state[1])

    @contextlib.contextmanager
    def __call__(self, tf32: bool, benchmark: bool = False, threads: int = 0):
        import torch

        me = threading.get_ident()
        wanted = (_wanted_state(torch, tf32, benchmark), threads)
        with self.cond:
            while True:
                total, mine = sum(self.holders.values()), self.holders[me]
                if not total or (mine == total) or (self.held == wanted and not self.nested):
                    break
                self.cond.wait()
            previous = None
            if not total:
                self.saved = (_tf32_state(torch), torch.get_num_threads())
                self._apply(torch, wanted)
                self.held = wanted
            elif self.held != wanted:  # only this thread holds them: nest
                previous = self.held
                self._apply(torch, wanted)
                self.held = wanted
                self.nested += 1
            self.holders[me] += 1
        try:
            yield
        finally:
            with self.cond:
                self.holders[me] -= 1
                if previous is not None:
                    self._apply(torch, previous)
                    self.held = previous
                    self.nested -= 1
                elif not sum(self.holders.values()):
                    saved = self.saved
                    assert saved is not None  # saved by the first holder; cleared only here, by the last
                    self._apply(torch, saved)
                    self.held = self.saved = None
                self.cond.notify_all()


numerics = _Numerics()  # numerics(tf32, benchmark, threads): a context manager, see _Numerics


# --- the device ----------------------------------------------------------------------------------------


def static_input(torch, n: int, device) -> Any:
    """A CUDA graph's static input for batch size ``n``: always made in inference mode (an inference
    tensor), whichever caller captures the graph first (``_run`` does so inside inference mode,
    ``load_in_place`` outside it)."""
    with torch.inference_mode():
        return torch.zeros((n, 3, model_.IMAGE_SIZE, model_.IMAGE_SIZE), dtype=torch.float32, device=device)


def copy_into(torch, static, src, non_blocking: bool = False) -> None:
    """Write ``src`` into a static input in place. PyTorch allows an in-place update of an inference tensor
    only inside inference mode ("Inplace update to inference tensor outside InferenceMode is not allowed"),
    so every copy into one happens in it, from ``_run`` and from ``load_in_place`` alike."""
    with torch.inference_mode():
        static.copy_(src, non_blocking=non_blocking)


def resolve_device(torch, requested: str) -> str:
    if requested == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EngineUnavailable(
                f"device {requested}: PyTorch {torch.__version__} sees no GPU "
                "(a CPU build, or no driver); use device=cpu"
            )
        index = int(requested.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise EngineUnavailable(f"device {requested}: PyTorch sees {torch.cuda.device_count()} GPU(s)")
        return f"cuda:{index}"
    return "cpu"


def precision_availability(precision: str, device: str = "auto") -> Availability:
    """Whether ``precision`` can run on ``device`` here, and if not why (imports torch)."""
    import torch

    try:
        dev = resolve_device(torch, device)
    except EngineUnavailable as e:
        return Availability(False, str(e))
    if dev == "cpu":
        if precision == "tf32":
            return Availability(
                False,
                "TF32 is a tensor-core mode of NVIDIA GPUs (compute capability >= 8.0); "
                "PyTorch has none on the CPU: use fp32 there",
            )
        if precision in CPU_NATIVE:
            if not cpu_flags() & set(CPU_NATIVE[precision]):
                return Availability(
                    False,
                    f"this CPU has no native {precision} arithmetic "
                    f"({' / '.join(CPU_NATIVE[precision][:2])}): PyTorch emulates it "
                    "far slower than fp32 (fp16 at 0.12x measured); use fp32",
                )
        return Availability(True)
    cc = torch.cuda.get_device_capability(int(dev.partition(":")[2]))
    if precision == "tf32" and cc < (8, 0):
        return Availability(
            False,
            f"{torch.cuda.get_device_name(dev)} (compute capability {cc[0]}.{cc[1]}) has no "
            "TF32 tensor cores (8.0+); PyTorch would silently run fp32",
        )
    if precision == "bf16" and cc < (8, 0):
        return Availability(
            False,
            f"{torch.cuda.get_device_name(dev)} (compute capability {cc[0]}.{cc[1]}) has no bf16 tensor cores (8.0+)",
        )
    return Availability(True)


def pinned_exports(cache_dir) -> dict[str, str]:
    """sha256 -> kind ("dynamic"/"static") of the ONNX files ``prepare`` exported from the pinned weights."""
    prepared = model_.prepare(cache.cache_root(cache_dir))
    record = json.loads(prepared.manifest.read_text())
    return {v["sha256"]: k for k, v in record["files"].items()}


def build_module(frozen_graph):
    """The InceptionResnetV1 of ``prepare``, with the weights of the frozen graph (eval mode, float32, CPU)."""
    from harness.model.network import InceptionResnetV1
    from harness.model.tfgraph import read_constants

    return InceptionResnetV1(read_constants(frozen_graph))


class TorchEngine(Engine):
    name = "torch"
    precisions = ("fp32", "tf32", "fp16", "bf16")
    options = (
        Option("device", _device, "auto", "auto (the first GPU PyTorch sees, else the CPU), cpu, cuda or cuda:N"),
        Option("cuda_graphs", _flag, True, "replay one captured CUDA graph per batch size (CUDA only)"),
        Option(
            "channels_last",
            str,
            "auto",
            "NHWC activations: auto = on (faster on the CPU here: 1.4x at fp32 "
            "batch 64; the layout cuDNN's tensor-core convolutions use), on, off",
            ("auto", "on", "off"),
        ),
        Option("threads", int, 0, "CPU intra-op threads (0: PyTorch's default)"),
    )
    capabilities = Capability.COMPUTE_ONLY | Capability.TIMING_SPLIT
    device_kind = "cpu"  # per instance: "gpu" when it runs on CUDA

    @classmethod
    def availability(cls) -> Availability:
        if importlib.util.find_spec("torch") is None:
            return Availability(
                False,
                "PyTorch is not installed (pip install torch, or "
                "pip install 'facenet-harness[export]' for the pinned CPU build)",
            )
        return Availability(True)

    @classmethod
    def precision_availability(cls, precision: str, settings: dict) -> Availability:
        avail = cls.availability()
        return precision_availability(precision, settings["device"]) if avail else avail

    def __init__(self, model, precision="fp32", context=None, *, module=None, **options):
        """``module``: an already built InceptionResnetV1 (float32) to run instead of building one from the
        pinned weights in the cache (the GPU check script, which carries the weights itself)."""
        super().__init__(model, precision, context, **options)
        import torch

        self.torch = torch
        self.device = resolve_device(torch, self.settings["device"])
        avail = precision_availability(precision, self.device)
        if not avail:
            raise EngineUnavailable(f"engine 'torch' {precision} on {self.device}: {avail.why}")
        self.cuda = self.device.startswith("cuda")
        self.tdev = torch.device(self.device)
        self.device_kind = "gpu" if self.cuda else "cpu"
        self.graphs_on = bool(self.settings["cuda_graphs"]) and self.cuda
        self.channels_last = self.settings["channels_last"] != "off"
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
        self.tf32 = precision == "tf32"
        self.benchmark = self.cuda and precision != "fp32"  # fp32: cuDNN's default algorithms, no autotuning
        self.threads = self.settings["threads"] if not self.cuda else 0
        if module is None:
            exports = pinned_exports(self.context.cache_dir)
            if model.sha256 not in exports:
                raise HarnessError(
                    f"{model.path}: the torch engine runs the harness's own InceptionResnetV1 with "
                    "the pinned weights, so it accepts only the ONNX 'facenet-harness prepare' exported "
                    f"from them (sha256 {', '.join(s[:16] for s in exports)}); this file is "
                    f"{model.sha256[:16]}. Run it without --onnx."
                )
            from harness.model import weights

            module = build_module(weights.frozen_graph(cache.cache_root(self.context.cache_dir)))
        self.module = self._prepare(module)
        self._graphs: collections.OrderedDict = collections.OrderedDict()
        self._in_place: Any = None
        self._cpu_out = None
        # CUDA: this engine's own stream (instances run side by side, e.g. in a soak) and pinned staging
        # buffers per batch shape, reused once the previous call has synchronised
        self.stream = torch.cuda.Stream(self.tdev) if self.cuda else None
        self._pinned: dict[tuple, Any] = {}

    def _prepare(self, module):
        torch = self.torch
        module = module.eval().to(self.tdev)
        if self.dtype is not torch.float32:
            module = module.to(self.dtype)
            # the head (bottleneck, batch norm, L2 normalisation) in float32: the embedding is normalised there
            module.bottleneck.float()
            module.last_bn.float()
            module.bottleneck.register_forward_pre_hook(lambda m, args: (args[0].float(),))
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        for p in module.parameters():
            p.requires_grad_(False)
        return module

    def _numerics(self):
        return numerics(self.tf32, self.benchmark, self.threads)

    def _forward(self, x):
        """float32 NCHW on the device -> float32 (N,512) on the device."""
        torch = self.torch
        x = x.to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.module(x).float()

    # --- CUDA graphs ---------------------------------------------------------------------------------

    def _graph(self, n: int):
        """(static input, graph, static output) for batch size n, captured on first use."""
        torch = self.torch
        if n in self._graphs:
            self._graphs.move_to_end(n)
            return self._graphs[n]
        static_in = static_input(torch, n, self.tdev)
        with torch.cuda.device(self.tdev), torch.inference_mode(), self._numerics():
            side = torch.cuda.Stream(self.tdev)
            side.wait_stream(torch.cuda.current_stream(self.tdev))
            with torch.cuda.stream(side):
                for _ in range(GRAPH_WARMUP):
                    self._forward(static_in)
            torch.cuda.current_stream(self.tdev).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._forward(static_in)
        self._graphs[n] = (static_in, graph, static_out)
        while len(self._graphs) > MAX_GRAPHS:
            self._graphs.popitem(last=False)
        return self._graphs[n]

    # --- running -------------------------------------------------------------------------------------

    def _run(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        host = torch.from_numpy(batch)
        if not self.cuda:  # no copies on the CPU: the one stage is the network
            with torch.inference_mode(), self._numerics():
                t0 = time.perf_counter()
                result = self._forward(host).numpy().copy()
            self.timings = {"compute_ms": (time.perf_counter() - t0) * 1e3}
            return result
        n = len(batch)
        events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        with torch.cuda.device(self.tdev), torch.cuda.stream(self.stream), torch.inference_mode(), self._numerics():
            staged = self._staged(batch)
            if self.graphs_on:
                static_in, graph, static_out = self._graph(n)
                events[0].record()
                copy_into(torch, static_in, staged, non_blocking=True)
                events[1].record()
                graph.replay()
                events[2].record()
                result = static_out.cpu()
            else:
                events[0].record()
                x = staged.to(self.tdev, non_blocking=True)
                events[1].record()
                out = self._forward(x)
                events[2].record()
                result = out.cpu()
            events[3].record()
            events[3].synchronize()
        self.timings = {
            "h2d_ms": events[0].elapsed_time(events[1]),
            "compute_ms": events[1].elapsed_time(events[2]),
            "d2h_ms": events[2].elapsed_time(events[3]),
        }
        return result.numpy()

    def _staged(self, batch: np.ndarray):
        """The batch in this engine's pinned host buffer of its shape (a DMA-able source for the copy-in)."""
        buf = self._pinned.get(batch.shape)
        if buf is None:
            buf = self._pinned[batch.shape] = self.torch.empty(batch.shape, dtype=self.torch.float32, pin_memory=True)
        buf.numpy()[...] = batch
        return buf

    def load_in_place(self, batch: np.ndarray) -> None:
        """Put a batch on the device once (the compute-only view times ``execute_in_place`` alone)."""
        torch = self.torch
        if self.model.batch and len(batch) != self.model.batch:
            padded = np.zeros((self.model.batch,) + batch.shape[1:], np.float32)
            padded[: len(batch)] = batch
            batch = padded
        host = torch.from_numpy(np.ascontiguousarray(batch, np.float32))
        if not self.cuda:
            self._in_place = (host, None, None)
            return
        with torch.cuda.device(self.tdev), torch.cuda.stream(self.stream):
            if self.graphs_on:
                static_in, graph, static_out = self._graph(len(batch))
                copy_into(torch, static_in, host)
                self._in_place = (static_in, graph, static_out)
            else:
                self._in_place = (host.to(self.tdev), None, None)
            self.stream.synchronize()

    def execute_in_place(self) -> None:
        """Run the network on the batch already on the device and wait for it (CUDA events time it)."""
        torch = self.torch
        if self._in_place is None:
            raise HarnessError("execute_in_place before load_in_place")
        x, graph, _ = self._in_place
        if not self.cuda:
            t0 = time.perf_counter()
            with torch.inference_mode(), self._numerics():
                self._cpu_out = self._forward(x)
            self.timings = {"compute_ms": (time.perf_counter() - t0) * 1e3}
            return
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.cuda.device(self.tdev), torch.cuda.stream(self.stream), torch.inference_mode(), self._numerics():
            start.record()
            if graph is not None:
                graph.replay()
            else:
                self._cpu_out = self._forward(x)
            end.record()
            end.synchronize()
        self.timings = {"compute_ms": start.elapsed_time(end)}

    def fetch_in_place(self) -> np.ndarray:
        """The embeddings of the last ``execute_in_place``."""
        if self._in_place is None:
            raise HarnessError("fetch_in_place before load_in_place")
        out = self._in_place[2] if self._in_place[1] is not None else self._cpu_out
        if out is None:
            raise HarnessError("fetch_in_place before execute_in_place")
        return out.cpu().numpy().astype(np.float32, copy=True)

    # --- identity ------------------------------------------------------------------------------------

    def describe(self) -> dict:
        torch = self.torch
        d = {
            "backend": self.name,
            "version": torch.__version__,
            "precision": self.precision,
            "torch_device": self.device,
            "tf32": self.tf32,
            "channels_last": self.channels_last,
            "dtype": str(self.dtype).replace("torch.", ""),
            "head": "float32",
        }
        if self.cuda:
            fp = self._static_fingerprint()
            d.update(
                device=fp["name"],
                compute_capability=fp["compute_capability"],
                driver=fp["driver"],
                cuda=torch.version.cuda or getattr(torch.version, "hip", None),
                cudnn=fp["cudnn"],
                cuda_graphs=self.graphs_on,
                cudnn_benchmark=self.benchmark,
            )
        else:
            d.update(device=cpu_name(), threads=self.threads or torch.get_num_threads())
        return d

    def _static_fingerprint(self) -> dict:
        """The device's name, compute capability, driver and cuDNN: fixed for the engine's life."""
        if getattr(self, "_fingerprint", None) is None:
            torch = self.torch
            index = int(self.device.partition(":")[2] or 0)
            props = torch.cuda.get_device_properties(index)
            uuid = getattr(props, "uuid", None)
            smi = nvidia_smi(str(uuid) if uuid is not None else None, index)
            self._smi = smi
            self._fingerprint = {
                "name": props.name,
                "compute_capability": f"{props.major}.{props.minor}",
                "driver": smi.get("driver_version") or cuda_driver_api_version() or "unknown",
                "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None,
                "memory_gib": round(props.total_memory / 2**30, 1),
                "multiprocessors": props.multi_processor_count,
                "max_clocks_mhz": (
                    f"sm {smi['clocks.max.sm']}, mem {smi['clocks.max.mem']}"
                    if smi.get("clocks.max.sm")
                    else "unknown (no nvidia-smi)"
                ),
            }
        return self._fingerprint

    def device_fingerprint(self) -> dict:
        """Everything known about the device now: for CUDA name, compute capability, driver, cuDNN, memory,
        SMs, maximum and current clocks (nvidia-smi; 'unknown' without it); for the CPU its identity."""
        if not self.cuda:
            return {"cpu": cpu_identity(), "threads": self.threads or self.torch.get_num_threads()}
        fp = dict(self._static_fingerprint())
        index = int(self.device.partition(":")[2] or 0)
        uuid = getattr(self.torch.cuda.get_device_properties(index), "uuid", None)
        now = nvidia_smi(str(uuid) if uuid is not None else None, index)
        fp["clocks_mhz"] = (
            f"sm {now['clocks.sm']}, mem {now['clocks.mem']}" if now.get("clocks.sm") else "unknown (no nvidia-smi)"
        )
        fp["power_limit_w"] = now.get("power.limit", "unknown")
        return fp

    def close(self) -> None:
        if not self.closed:
            self._graphs.clear()
            self._pinned.clear()
            self._in_place = self._cpu_out = None
            self.module = self.stream = None
            if getattr(self, "cuda", False):
                self.torch.cuda.empty_cache()
        super().close()
