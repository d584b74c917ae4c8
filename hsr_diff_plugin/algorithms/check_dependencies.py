"""Algorithm: report the Python packages the plugin uses and how to install the missing ones."""

from qgis.core import QgsProcessingOutputString

from ..dependencies import pip_command, report
from .base import HsrDiffAlgorithm


class CheckDependenciesAlgorithm(HsrDiffAlgorithm):
    NAME = "checkdependencies"
    DISPLAY = "Check dependencies"
    GROUP = "Tools"
    GROUP_ID = "tools"
    HELP = (
        "Reports numpy, GDAL, ONNX Runtime (version, build, execution providers) and PyTorch as "
        "QGIS's Python sees them. Super-resolution needs numpy, GDAL and onnxruntime; training "
        "needs torch as well. For each missing package it prints the exact pip command for QGIS's "
        "Python (numpy is held below 2, which QGIS's GDAL bindings need)."
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
        if missing:
            lines.append("Install the missing packages with:\n  " + pip_command(*missing))
        text = "\n".join(lines)
        for line in lines:
            feedback.pushInfo(line)
        return {self.REPORT: text}
