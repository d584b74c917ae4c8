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

:func:`gpu_status` says whether a GPU provider really starts here and, when not, why (no
NVIDIA driver, a CUDA or cuDNN library missing, as ONNX Runtime's own log says);
:func:`cuda_requirements` gives the CUDA and cuDNN versions the installed onnxruntime-gpu needs.

Threads: by default ONNX Runtime's intra-op pool gets the CPUs this process may run on
(``os.sched_getaffinity``), or ``HSR_DIFF_THREADS`` / ``OMP_NUM_THREADS`` when set.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import io
import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field

__all__ = ["DEVICES", "GpuStatus", "ProviderError", "SessionInfo", "create_session", "cuda_requirements", "default_threads",
           "gpu_provider_usable", "gpu_setup_hint", "gpu_status", "nvidia_driver", "ort_build"]

log = logging.getLogger("hsr_diff.export")

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
_PROVIDER = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
_SHORT = {v: k for k, v in _PROVIDER.items()}


class ProviderError(ValueError):
    """The requested execution provider cannot run here; the message says why and what to do.

    A ``ValueError`` (a bad ``device`` choice for this machine): the plugin shows the message
    without a traceback, the command lines print it.
    """


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
        raise ProviderError("onnxruntime is not installed; install the PyPI package onnxruntime (CPU), or "
                            "onnxruntime-gpu on a machine with an NVIDIA GPU") from exc
    return ort


def ort_build() -> tuple[str, str, str]:
    """``(package, version, CUDA version it was built for)`` of the installed onnxruntime.

    ``("onnxruntime-gpu", "1.31.1", "13.0")``; the CUDA version is ``""`` for the CPU package.
    """
    ort = _ort()
    try:
        from onnxruntime.capi import build_and_package_info as info
    except ImportError:  # pragma: no cover - builds older than the pinned one
        info = None
    return getattr(info, "package_name", "onnxruntime"), ort.__version__, getattr(info, "cuda_version", "") or ""


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def cuda_requirements(version: str | None = None, cuda_version: str | None = None) -> tuple[str, str]:
    """``(CUDA major, cuDNN major)`` that onnxruntime-gpu ``version`` needs, e.g. ``("13", "9")``.

    ``version`` / ``cuda_version`` default to the installed package's (:func:`ort_build`). The CUDA
    major comes from the package's own build information when it has one; otherwise, and for the
    cuDNN major (which no build information gives), from ONNX Runtime's requirements table: 1.19
    and later are built with CUDA 12.x and cuDNN 9.x by default, 1.15 to 1.18 with CUDA 11.8 and
    cuDNN 8.x.
    """
    if version is None:
        _, version, built = ort_build()
        cuda_version = built if cuda_version is None else cuda_version
    modern = _version_tuple(version) >= (1, 19)
    cuda = (cuda_version or "").split(".")[0] or ("12" if modern else "11")
    return cuda, "9" if modern else "8"


def gpu_setup_hint() -> str:
    """What the GPU needs, for messages: the package, driver, CUDA and cuDNN versions and the README section."""
    try:
        package, version, _ = ort_build()
    except ProviderError:
        package, version = "onnxruntime", ""
    if package != "onnxruntime-gpu":
        return ("install the PyPI package onnxruntime-gpu in place of onnxruntime (uninstall onnxruntime first), "
                "with an NVIDIA driver, CUDA and cuDNN (README, 'GPU set-up'), then restart QGIS")
    cuda, cudnn = cuda_requirements()
    return (f"onnxruntime-gpu {version} needs an NVIDIA driver, CUDA {cuda}.x and cuDNN {cudnn}.x libraries where it can load "
            "them (README, 'GPU set-up'); restart QGIS afterwards")


_DRIVER = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
"""The NVIDIA driver's CUDA library: every NVIDIA GPU driver installs it, nothing else does."""


def nvidia_driver() -> bool:
    """Whether an NVIDIA GPU driver is installed here (its CUDA library ``libcuda.so.1`` / ``nvcuda.dll`` loads)."""
    try:
        ctypes.CDLL(_DRIVER)
    except OSError:
        return False
    return True


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


@contextlib.contextmanager
def _ort_log(severity: int):
    """ONNX Runtime's default logger at ``severity`` (0 verbose .. 4 fatal) meanwhile, back to warnings after."""
    _ort().set_default_logger_severity(severity)
    try:
        yield
    finally:
        _ort().set_default_logger_severity(2)


def _preload_pip_cuda() -> None:
    """Load CUDA and cuDNN from PyPI's ``nvidia-*`` packages (``onnxruntime-gpu[cuda,cudnn]``) when they are installed.

    ONNX Runtime looks for them only when asked (``onnxruntime.preload_dlls``); it prints what it
    cannot load, which :func:`gpu_status` finds out itself.
    """
    ort = _ort()
    if hasattr(ort, "preload_dlls") and importlib.util.find_spec("nvidia") is not None:
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                ort.preload_dlls()
            except Exception as exc:  # noqa: BLE001 - the session probe reports what is missing
                log.debug("onnxruntime.preload_dlls failed: %s", exc)


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
        with _ort_log(4):
            return ort.InferenceSession(src, sess_options=so, providers=_provider_entries(device, threads))
    return ort.InferenceSession(src, sess_options=so, providers=_provider_entries(device, threads))


@dataclass(frozen=True)
class GpuStatus:
    """Whether ``device`` (``cuda`` or ``tensorrt``) really starts a session here; ``reason`` says why not ("" when it does)."""

    device: str
    usable: bool
    reason: str = ""


def _output_of(fn):
    """``(fn(), what it printed and logged meanwhile)``: ONNX Runtime logs to file descriptor 2, its Python layer prints."""
    printed = io.StringIO()
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr (a GUI process on Windows)
        with contextlib.redirect_stdout(printed):
            return fn(), printed.getvalue()
    with tempfile.TemporaryFile() as tmp:
        if sys.stderr is not None:
            sys.stderr.flush()
        os.dup2(tmp.fileno(), 2)
        try:
            with contextlib.redirect_stdout(printed):
                result = fn()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        return result, tmp.read().decode("utf-8", "replace") + printed.getvalue()


def _ort_errors(text: str) -> list[str]:
    """The error messages in ONNX Runtime's output ``text``, without time stamps, source locations or colours."""
    out = []
    for line in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines():
        m = re.search(r"\[E:onnxruntime:[^\]]*\]\s*(.*)", line) or re.match(r"EP Error:? (.*?)( when using .*)?$", line)
        if not m:
            continue
        msg = m.group(1).split(" : FAIL : ")[-1].strip()
        msg = re.sub(r"Failed to load library (\S+) with error: ", lambda f: f"cannot load {os.path.basename(f.group(1))}: ", msg)
        msg = re.sub(r"^\S+\.cc:\d+ [^)]*\) ", "", msg)
        if msg and msg not in out:
            out.append(msg)
    return out


_GPU_CACHE: dict[str, GpuStatus] = {}


def gpu_status(device: str = "cuda") -> GpuStatus:
    """Whether ``device`` (``cuda`` or ``tensorrt``) really starts here, and if not why (probed once with a tiny graph).

    ONNX Runtime falls back to the CPU without an error when a GPU provider cannot start, so the
    probe checks the created session's providers. The reason names the missing piece: the CPU
    build of onnxruntime, no NVIDIA driver, or what ONNX Runtime reported (a CUDA, cuDNN or
    TensorRT library it could not load, no CUDA-capable device).
    """
    if device not in _GPU_CACHE:
        _GPU_CACHE[device] = _probe_gpu(device)
    return _GPU_CACHE[device]


def _probe_gpu(device: str) -> GpuStatus:
    from .sampler import update_model_bytes

    name = _PROVIDER[device]
    package, version, _ = ort_build()
    if name not in _ort().get_available_providers():
        return GpuStatus(device, False, f"{package} {version} is a build without the {name}")
    if not nvidia_driver():
        return GpuStatus(device, False, f"no NVIDIA driver ({_DRIVER} does not load; no NVIDIA GPU, or its driver is not "
                                        "installed)")
    _preload_pip_cuda()

    def probe():
        with _ort_log(3):
            return _make(update_model_bytes(), device, 1, quiet=False).get_providers()

    try:
        got, output = _output_of(probe)
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable", with its message
        got, output = [], f"EP Error {type(exc).__name__}: {exc}"
    if got and got[0] == name:
        return GpuStatus(device, True)
    return GpuStatus(device, False, "; ".join(_ort_errors(output)) or f"ONNX Runtime could not start the {name}")


def gpu_provider_usable(device: str = "cuda") -> bool:
    """Whether ``device`` (``cuda`` or ``tensorrt``) really starts here (:func:`gpu_status`)."""
    return gpu_status(device).usable


def _unusable(device: str, reason: str) -> str:
    gpu = "GPU" if device == "cuda" else "GPU with TensorRT"
    return (f"Device {device.upper()}: device '{device}' was requested but no NVIDIA {gpu} can be used here: {reason}. "
            f"Choose Device = CPU or Auto (device 'cpu' or 'auto'), or set the GPU up: {gpu_setup_hint()}")


def create_session(model, device: str = "auto", allow_fallback: bool = False, threads: int | None = None):
    """An ``onnxruntime.InferenceSession`` for ``model`` (path or bytes) and its :class:`SessionInfo`.

    Raises :class:`ProviderError` when a named GPU provider cannot run and ``allow_fallback`` is
    False. The provider that actually runs is logged at INFO (WARNING when it fell back).
    """
    device = (device or "auto").lower()
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    threads = int(threads or default_threads())
    notes: list[str] = []
    if device == "auto":
        status = gpu_status("cuda")
        want = "cuda" if status.usable else "cpu"
        if want == "cpu":
            notes.append(f"no usable CUDA GPU ({status.reason}), using the CPU")
    elif device == "cpu":
        want = "cpu"
    else:
        want = device
        status = gpu_status(device)
        if not status.usable:
            if not allow_fallback:
                raise ProviderError(_unusable(device, status.reason))
            notes.append(f"'{device}' is not usable here ({status.reason}), using the CPU")
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
        raise ProviderError(_unusable(device, f"ONNX Runtime could not start the {_PROVIDER[device]} for this model"))
    if fell_back and want != "cpu":
        notes.append(f"'{device}' is not usable here, fell back to {provider}")
    info = SessionInfo(provider, list(got), device, threads, fell_back, notes)
    (log.warning if fell_back else log.info)(info.describe())
    return sess, info
