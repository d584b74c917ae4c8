"""Dependency self-check: what the plugin's Python has, and the exact command for what it lacks.

Inference needs numpy, GDAL and onnxruntime; training needs torch too. numpy 2 is never
suggested: Debian's and OSGeo4W's GDAL and QGIS bindings are built against numpy 1. Every
suggested name is a PyPI package; GDAL's bindings and the plugin's own ``core`` are not pip's to
install and get their own hint. The GPU is reported from a real CUDA session
(:func:`export.providers.gpu_status`), not from ``onnxruntime.get_device()``, which says "GPU"
for the onnxruntime-gpu package on any machine.
"""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig
from dataclasses import dataclass

# The PyPI requirement for each module; pins keep QGIS's numpy 1 in place.
PIP_SPECS = {
    "numpy": "numpy<2",
    "scipy": "scipy",
    "torch": "torch==2.13.0",
    "onnx": "onnx",
    "safetensors": "safetensors",
}
# Modules pip must not install into QGIS's Python.
NOT_FROM_PIP = {
    "osgeo.gdal": "GDAL's Python bindings come with QGIS: reinstall QGIS with them (Debian/Ubuntu: apt install python3-gdal; "
                  "OSGeo4W: the gdal and python3-gdal packages of the OSGeo4W installer)",
    "hsr-diff core": "the plugin's core package is missing: reinstall the plugin from its zip",
}
RESTART = "Restart QGIS afterwards."


@dataclass
class Dependency:
    name: str
    version: str | None
    detail: str = ""

    @property
    def present(self) -> bool:
        return self.version is not None


def qgis_python() -> str:
    """The interpreter of the Python QGIS embeds (inside QGIS ``sys.executable`` is the QGIS binary)."""
    for cand in (
        os.path.join(sys.exec_prefix, "bin", f"python{sys.version_info.major}.{sys.version_info.minor}"),
        os.path.join(sys.exec_prefix, "python.exe"),  # OSGeo4W / Windows installers
        os.path.join(sys.exec_prefix, "bin", "python3"),
    ):
        if os.path.isfile(cand):
            return cand
    return sys.executable if os.path.basename(sys.executable).lower().startswith("python") else "python3"


def onnxruntime_package() -> str:
    """``onnxruntime-gpu`` where an NVIDIA GPU driver is installed, else ``onnxruntime`` (the CPU package)."""
    from export.providers import nvidia_driver

    return "onnxruntime-gpu" if nvidia_driver() else "onnxruntime"


def pip_spec(module: str) -> str:
    """The PyPI requirement that provides ``module`` (for modules not in :data:`NOT_FROM_PIP`)."""
    return onnxruntime_package() if module == "onnxruntime" else PIP_SPECS.get(module, module)


def _pip(action: str) -> str:
    """``pip <action>`` for QGIS's Python: the OSGeo4W Shell's ``python`` on Windows, else the interpreter's full path.

    Debian 12+ marks its Python as externally managed (PEP 668) and QGIS cannot use a venv, so
    there pip needs ``--break-system-packages``.
    """
    if sys.platform == "win32":
        return f"in the OSGeo4W Shell (Start menu, next to QGIS; as administrator for an all-users install): python -m pip {action}"
    managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
    return f'"{qgis_python()}" -m pip {action}' + (" --break-system-packages" if managed else "")


def pip_command(*modules: str) -> str:
    """The exact pip command that installs ``modules`` into QGIS's own Python, numpy held below 2.

    Windows (OSGeo4W, the QGIS installers): ``python -m pip install ...`` in the OSGeo4W Shell,
    which sets up QGIS's Python. Elsewhere the interpreter's full path with ``--user``.
    """
    specs = [pip_spec(m) for m in modules if m not in NOT_FROM_PIP]
    specs = " ".join(f'"{s}"' for s in dict.fromkeys([*specs, PIP_SPECS["numpy"]]))
    return f"{_pip('install')} {specs}" if sys.platform == "win32" else f"{_pip('install --user')} {specs}"


def install_hint(*modules: str) -> str:
    """How to get ``modules`` into QGIS's Python: the pip command for the PyPI ones, a line for each other, then restart."""
    lines = [NOT_FROM_PIP[m] for m in modules if m in NOT_FROM_PIP]
    if any(m not in NOT_FROM_PIP for m in modules):
        lines.insert(0, pip_command(*modules))
    return "\n  ".join([*lines, RESTART])


def probe(module: str) -> Dependency:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken binary build
        return Dependency(module, None, f"{type(exc).__name__}: {exc}")
    version = getattr(mod, "__version__", None) or getattr(mod, "VERSION", None) or "unknown"
    detail = ""
    if module == "onnxruntime":
        from export.providers import ort_build

        package, _, cuda = ort_build()
        built = f", built for CUDA {cuda}" if cuda else ""
        detail = f"package {package}{built}; providers {', '.join(mod.get_available_providers())}"
    elif module == "osgeo.gdal":
        version = mod.__version__
    elif module == "torch":
        detail = f"CUDA available: {mod.cuda.is_available()}"
    return Dependency(module, str(version), detail)


def report() -> list[Dependency]:
    """numpy, GDAL, onnxruntime, scipy (for GLP-based models), torch, onnx, safetensors, and where core was loaded from."""
    deps = [probe(m) for m in ("numpy", "osgeo.gdal", "onnxruntime", "scipy", "torch", "onnx", "safetensors")]
    core = probe("core")
    if core.present:
        core.detail = os.path.dirname(importlib.import_module("core").__file__)
    return deps + [Dependency("hsr-diff core", core.version, core.detail)]


def gpu_report() -> list[str]:
    """Whether super-resolution can run on the GPU here, from a real CUDA session, and what the GPU needs.

    The first line is ``GPU (CUDA): usable ...`` or ``GPU (CUDA): not usable - <reason>``; the
    others say what the installed onnxruntime needs (CUDA and cuDNN versions) or which package to
    install instead, with the command.
    """
    if not probe("onnxruntime").present:
        return ["GPU (CUDA): not checked, onnxruntime is missing"]
    from export.providers import cuda_requirements, gpu_setup_hint, gpu_status, nvidia_driver, ort_build

    package, version, _ = ort_build()
    status = gpu_status("cuda")
    if package == "onnxruntime-gpu":
        cuda, cudnn = cuda_requirements()
        needs = f"{package} {version} needs CUDA {cuda}.x and cuDNN {cudnn}.x (and an NVIDIA driver that supports CUDA {cuda})"
    else:
        needs = f"{package} {version} is the CPU package"
    if status.usable:
        return [f"GPU (CUDA): usable - a CUDA session started; Device = Auto runs on it. {needs}."]
    lines = [f"GPU (CUDA): not usable - {status.reason}. Super-resolution runs on the CPU (Device = Auto or CPU).", needs + "."]
    if package == "onnxruntime-gpu" and nvidia_driver():
        lines.append(f"For the GPU: {gpu_setup_hint()}.")
    elif package != "onnxruntime-gpu" and nvidia_driver():
        lines.append("For the GPU, replace onnxruntime with onnxruntime-gpu (both provide the module onnxruntime):\n  "
                     f"{_pip('uninstall -y')} onnxruntime\n  {install_hint('onnxruntime')}")
    return lines


class MissingDependency(RuntimeError):
    """Raised by :func:`require` with the exact install command in its message."""


def require(*modules: str, purpose: str) -> None:
    missing = [m for m in modules if not probe(m).present]
    if missing:
        raise MissingDependency(
            f"{purpose} needs the Python package(s) {', '.join(missing)}, which QGIS's Python lacks. "
            f"Install them with:\n  {install_hint(*missing)}"
        )
