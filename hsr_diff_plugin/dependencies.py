"""Dependency self-check: what the plugin's Python has, and the exact command for what it lacks.

Inference needs numpy, GDAL and onnxruntime; training needs torch too. numpy 2 is never
suggested: Debian's and OSGeo4W's GDAL and QGIS bindings are built against numpy 1.
"""

from __future__ import annotations

import importlib
import sys
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


def pip_command(*modules: str) -> str:
    """The exact pip command for QGIS's own Python, numpy held below 2."""
    specs = " ".join(f'"{PIP_SPECS.get(m, m)}"' for m in modules)
    return f'"{sys.executable}" -m pip install --user {specs} "numpy<2"'


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
    return [probe(m) for m in ("numpy", "osgeo.gdal", "onnxruntime", "torch", "onnx", "safetensors")]


class MissingDependency(RuntimeError):
    """Raised by :func:`require` with the exact install command in its message."""


def require(*modules: str, purpose: str) -> None:
    missing = [m for m in modules if not probe(m).present]
    if missing:
        raise MissingDependency(
            f"{purpose} needs the Python package(s) {', '.join(missing)}, which QGIS's Python lacks. "
            f"Install them with:\n  {pip_command(*missing)}"
        )
