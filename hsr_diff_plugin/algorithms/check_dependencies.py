"""Algorithm: report the Python packages the plugin uses, whether the GPU works, and how to install what is missing."""

from qgis.core import QgsProcessingOutputString

from ..dependencies import gpu_report, install_hint, report
from .base import HsrDiffAlgorithm


class CheckDependenciesAlgorithm(HsrDiffAlgorithm):
    NAME = "checkdependencies"
    DISPLAY = "Check dependencies"
    GROUP = "Tools"
    GROUP_ID = "tools"
    SHORT = "Lists the Python packages HSR-Diff needs, checks the GPU, and prints the install command for what is missing"
    TAGS = ("dependencies", "install", "pip", "setup", "requirements", "numpy", "GDAL", "onnxruntime", "ONNX Runtime", "PyTorch",
            "torch", "CUDA", "GPU")
    HELP = (
        "Reports numpy, GDAL, ONNX Runtime (version, package, execution providers) and PyTorch as "
        "QGIS's Python sees them. Super-resolution needs numpy, GDAL and onnxruntime; training "
        "needs torch as well. For each missing package it prints the exact pip command for QGIS's "
        "Python (numpy is held below 2, which QGIS's GDAL bindings need; onnxruntime-gpu only where "
        "an NVIDIA driver is installed, onnxruntime otherwise); restart QGIS after installing.<br>"
        "<b>GPU</b>: it starts a real CUDA session on a tiny graph and says whether it runs on the GPU "
        "or why not (no NVIDIA driver, a CUDA or cuDNN library missing), with the CUDA and cuDNN "
        "versions the installed onnxruntime-gpu needs (README, 'GPU set-up')."
    )
    REPORT = "REPORT"

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API name)
        self.addOutput(QgsProcessingOutputString(self.REPORT, "Dependency report"))

    def execute(self, parameters, context, feedback):
        lines = []
        missing = []
        for dep in report():
            if dep.present:
                lines.append(f"{dep.name}: {dep.version}" + (f" ({dep.detail})" if dep.detail else ""))
            else:
                lines.append(f"{dep.name}: MISSING ({dep.detail})")
                missing.append(dep.name)
        lines += gpu_report()
        if missing:
            lines.append("Install the missing packages:\n  " + install_hint(*missing))
        text = "\n".join(lines)
        for line in lines:
            feedback.pushInfo(line)
        return {self.REPORT: text}
