"""Choosing the ONNX Runtime execution provider, and saying which one actually ran.

``onnxruntime-gpu`` lists the CUDA and TensorRT providers in ``get_available_providers()``
whether or not a GPU, its driver, CUDA or cuDNN are there; asking for one that cannot start
makes ONNX Runtime fall back to the CPU with only a log line. So every choice here is
verified on the created session (``session.get_providers()``):

* ``"auto"``: CUDA when it really starts, else CPU (logged). TensorRT is not tried
  automatically: it builds an engine per input shape, minutes on first use; ask for it by name.
* ``"cuda"`` / ``"tensorrt"``: that provider or a :class:`ProviderError` with the reason,
  unless ``allow_fallback=True`` (then CPU, logged and reported in :class:`SessionInfo`).
* ``"cpu"``: the CPU.

Threads: by default ONNX Runtime's intra-op pool gets the CPUs this process may run on
(``os.sched_getaffinity``), or ``HSR_DIFF_THREADS`` / ``OMP_NUM_THREADS`` when set.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

__all__ = ["DEVICES", "ProviderError", "SessionInfo", "create_session", "default_threads", "gpu_provider_usable"]

log = logging.getLogger("hsr_diff.export")

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
_PROVIDER = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
_SHORT = {v: k for k, v in _PROVIDER.items()}


class ProviderError(RuntimeError):
    """The requested execution provider cannot run here; the message says why and what to do."""


@dataclass
class SessionInfo:
    """What a session runs on: ``provider`` is the short name (``cpu``, ``cuda``, ``tensorrt``)."""

    provider: str
    providers: list[str]
    requested: str
    threads: int
    fell_back: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def on_gpu(self) -> bool:
        return self.provider in ("cuda", "tensorrt")

    def describe(self) -> str:
        s = f"ONNX Runtime on {self.provider.upper()} ({', '.join(self.providers)}; {self.threads} CPU threads)"
        if self.fell_back:
            s += f" - '{self.requested}' was requested but is not usable here"
        return s


def default_threads() -> int:
    """Intra-op threads: ``HSR_DIFF_THREADS``, else ``OMP_NUM_THREADS``, else the CPUs we may use."""
    for var in ("HSR_DIFF_THREADS", "OMP_NUM_THREADS"):
        v = os.environ.get(var, "").strip()
        if v.isdigit() and int(v) > 0:
            return int(v)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ProviderError("onnxruntime is not installed; install it with `pip install onnxruntime-gpu` "
                            "(or onnxruntime)") from exc
    return ort


def _provider_entries(device: str, threads: int) -> list:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        return [("CUDAExecutionProvider", {"arena_extend_strategy": "kSameAsRequested"}), "CPUExecutionProvider"]
    if device == "tensorrt":
        cache = os.path.join(os.path.expanduser("~"), ".cache", "hsr_diff", "trt")
        os.makedirs(cache, exist_ok=True)
        return [("TensorrtExecutionProvider", {"trt_engine_cache_enable": True, "trt_engine_cache_path": cache}),
                "CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ValueError(f"device must be one of {DEVICES}, got {device!r}")


class _QuietOrt:
    """Silence ONNX Runtime's default logger while probing providers (restored to warnings after)."""

    def __enter__(self):
        _ort().set_default_logger_severity(4)

    def __exit__(self, *exc):
        _ort().set_default_logger_severity(2)


def _make(model, device: str, threads: int, quiet: bool):
    ort = _ort()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if quiet:
        so.log_severity_level = 3
    src = os.fspath(model) if isinstance(model, (str, os.PathLike)) else model
    if quiet:
        with _QuietOrt():
            return ort.InferenceSession(src, sess_options=so, providers=_provider_entries(device, threads))
    return ort.InferenceSession(src, sess_options=so, providers=_provider_entries(device, threads))


_GPU_CACHE: dict[str, bool] = {}


def gpu_provider_usable(device: str = "cuda") -> bool:
    """Whether ``device`` (``cuda`` or ``tensorrt``) really starts here (probed once with a tiny graph)."""
    if device not in _GPU_CACHE:
        from .sampler import update_model_bytes

        name = _PROVIDER[device]
        if name not in _ort().get_available_providers():
            _GPU_CACHE[device] = False
        else:
            try:
                sess = _make(update_model_bytes(), device, 1, quiet=True)
                _GPU_CACHE[device] = sess.get_providers()[0] == name
            except Exception:  # noqa: BLE001 - any failure means "not usable"
                _GPU_CACHE[device] = False
    return _GPU_CACHE[device]


def create_session(model, device: str = "auto", allow_fallback: bool = False, threads: int | None = None):
    """An ``onnxruntime.InferenceSession`` for ``model`` (path or bytes) and its :class:`SessionInfo`.

    Raises :class:`ProviderError` when a named GPU provider cannot run and ``allow_fallback`` is
    False. The provider that actually runs is logged at INFO (WARNING when it fell back).
    """
    device = (device or "auto").lower()
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    threads = int(threads or default_threads())
    ort = _ort()
    available = ort.get_available_providers()
    notes: list[str] = []
    if device == "auto":
        want = "cuda" if gpu_provider_usable("cuda") else "cpu"
        if want == "cpu":
            notes.append("no usable CUDA provider (no GPU, driver, CUDA or cuDNN), using the CPU")
    else:
        want = device
    if want != "cpu" and _PROVIDER[want] not in available:
        msg = (f"the {want.upper()} execution provider is not in this onnxruntime build (available: {', '.join(available)}); "
               "install onnxruntime-gpu")
        if not allow_fallback:
            raise ProviderError(msg)
        notes.append(msg)
        want = "cpu"
    try:
        sess = _make(model, want, threads, quiet=want != "cpu")
    except Exception as exc:
        if want == "cpu" or not allow_fallback:
            raise
        notes.append(f"{want.upper()} session failed ({type(exc).__name__}: {exc})")
        sess = _make(model, "cpu", threads, quiet=False)
    got = sess.get_providers()
    provider = _SHORT.get(got[0], got[0])
    fell_back = device != "auto" and provider != device
    if fell_back and not allow_fallback:
        raise ProviderError(f"device '{device}' was requested but ONNX Runtime could not start the {_PROVIDER[device]} "
                            f"(no GPU, or its driver/CUDA/cuDNN{'/TensorRT' if device == 'tensorrt' else ''} libraries are "
                            "missing); use device='cpu' or 'auto', or allow_fallback=True")
    if fell_back:
        notes.append(f"'{device}' is not usable here, fell back to {provider}")
    info = SessionInfo(provider, list(got), device, threads, fell_back, notes)
    (log.warning if fell_back else log.info)(info.describe())
    return sess, info
