"""Dependency self-check: what the plugin's Python has, and the exact command for what it lacks.

Inference needs numpy, GDAL and onnxruntime; training needs torch too. numpy 2 is never
suggested: Debian's and OSGeo4W's GDAL and QGIS bindings are built against numpy 1.
"""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig
from dataclasses import dataclass

# Pins that keep QGIS's numpy 1 in place.
PIP_SPECS = {
    "onnxruntime": "onnxruntime-gpu",
    "torch": "torch==2.13.0",
    "onnx": "onnx",
    "safetensors": "safetensors",
}


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


def pip_command(*modules: str) -> str:
    """The exact pip command for QGIS's own Python, numpy held below 2."""
    specs = " ".join(f'"{PIP_SPECS.get(m, m)}"' for m in modules)
    # Debian 12+ marks its Python as externally managed (PEP 668); QGIS cannot use a venv.
    managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
    extra = " --break-system-packages" if managed else ""
    return f'"{qgis_python()}" -m pip install --user{extra} {specs} "numpy<2"'


def probe(module: str) -> Dependency:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken binary build
        return Dependency(module, None, f"{type(exc).__name__}: {exc}")
    version = getattr(mod, "__version__", None) or getattr(mod, "VERSION", None) or "unknown"
    detail = ""
    if module == "onnxruntime":
        detail = f"device {mod.get_device()}, providers {', '.join(mod.get_available_providers())}"
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


class MissingDependency(RuntimeError):
    """Raised by :func:`require` with the exact install command in its message."""


def require(*modules: str, purpose: str) -> None:
    missing = [m for m in modules if not probe(m).present]
    if missing:
        raise MissingDependency(
            f"{purpose} needs the Python package(s) {', '.join(missing)}, which QGIS's Python lacks. "
            f"Install them with:\n  {pip_command(*missing)}"
        )
