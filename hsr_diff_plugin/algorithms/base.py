"""Shared plumbing for the hsrdiff algorithms: naming, grouping, icon, help, layers, progress, errors."""

from __future__ import annotations

import contextlib
import logging
import os

from qgis.core import QgsProcessingAlgorithm, QgsProcessingException

from ..provider_icon import ICON_PATH

DEGRADATION_OPTIONS = [
    ("estimate", "Estimate from the pair (sub-pixel offset and PSF width)"),
    ("model", "Nominal (as the model was trained: centred Gaussian)"),
]
"""The ``DEGRADATION`` parameter's choices, in the order of ``core.jobs.common.DEGRADATIONS``."""


class HsrDiffAlgorithm(QgsProcessingAlgorithm):
    """Subclasses set ``NAME``, ``DISPLAY``, ``GROUP``, ``GROUP_ID`` and ``HELP`` and implement ``initAlgorithm``/``execute``.

    ``processAlgorithm`` calls ``execute(parameters, context, feedback)`` and turns the core's
    ``ValueError``s (bad input: the message names the layer; ``RasterError`` for an output that
    cannot be written, a full disk or an output another run writes), ``OSError``s and
    cancellations into ``QgsProcessingException``s with that one message, so the toolbox, the
    modeler and ``qgis_process`` show it without a traceback.
    """

    NAME = ""
    DISPLAY = ""
    GROUP = ""
    GROUP_ID = ""
    HELP = ""

    def name(self):
        return self.NAME

    def displayName(self):  # noqa: N802 (QGIS API name)
        return self.DISPLAY

    def group(self):
        return self.GROUP

    def groupId(self):  # noqa: N802 (QGIS API name)
        return self.GROUP_ID

    def shortHelpString(self):  # noqa: N802 (QGIS API name)
        return self.HELP

    def icon(self):
        from qgis.PyQt.QtGui import QIcon

        return QIcon(ICON_PATH)

    def svgIconPath(self):  # noqa: N802 (QGIS API name)
        return ICON_PATH

    def createInstance(self):  # noqa: N802 (QGIS API name)
        return type(self)()

    # ------------------------------------------------------------------ helpers for subclasses

    def layer_path(self, parameters, name: str, context) -> tuple[str, str]:
        """``(file path, layer name)`` of a raster parameter; refuses layers GDAL cannot read as files."""
        layer = self.parameterAsRasterLayer(parameters, name, context)
        if layer is None:
            raise QgsProcessingException(f"Parameter {name}: no raster layer given")
        if layer.providerType() != "gdal":
            raise QgsProcessingException(f"Layer '{layer.name()}' is a {layer.providerType()} layer; save it as a GeoTIFF first")
        path = layer.source().split("|")[0]
        if not (os.path.exists(path) or path.startswith("/vsi")):
            raise QgsProcessingException(f"Layer '{layer.name()}': its source {path} is not a file")
        return path, layer.name()

    @staticmethod
    def progress(feedback):
        """A :class:`core.progress.Progress` that drives ``feedback`` and honours its cancel button."""
        from core.progress import Progress

        def report(fraction: float, message: str) -> None:
            feedback.setProgress(100.0 * fraction)
            if message:
                feedback.setProgressText(message)

        return Progress(report, feedback.isCanceled)

    @staticmethod
    @contextlib.contextmanager
    def log_to(feedback, logger: str = "hsr_diff"):
        """Forward the core's INFO records (output size, estimated time, ...) to ``feedback.pushInfo`` meanwhile.

        Warnings are not forwarded: the algorithms push the result's notes themselves.
        """

        class _Feedback(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if record.levelno < logging.WARNING:
                    feedback.pushInfo(record.getMessage())

        lg = logging.getLogger(logger)
        handler, level = _Feedback(logging.INFO), lg.level
        lg.addHandler(handler)
        if lg.getEffectiveLevel() > logging.INFO:
            lg.setLevel(logging.INFO)
        try:
            yield
        finally:
            lg.removeHandler(handler)
            lg.setLevel(level)

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API name)
        from core.progress import Cancelled

        from ..dependencies import MissingDependency

        try:
            return self.execute(parameters, context, feedback)
        except Cancelled as exc:
            raise QgsProcessingException("Cancelled by the user; no output was written") from exc
        except QgsProcessingException:
            raise
        except (ValueError, OSError, MissingDependency) as exc:
            raise QgsProcessingException(str(exc)) from exc

    def execute(self, parameters, context, feedback) -> dict:
        raise NotImplementedError
