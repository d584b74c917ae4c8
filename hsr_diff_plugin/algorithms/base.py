"""Shared plumbing for the hsrdiff algorithms: naming, grouping, icon, help, tags, layers, result styling, progress, errors."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from qgis.core import (
    QgsContrastEnhancement,
    QgsMultiBandColorRenderer,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsRasterMinMaxOrigin,
    QgsRectangle,
)
from qgis.PyQt.QtCore import QCoreApplication, QUrl

from ..provider_icon import ICON_PATH


def tr(text: str) -> str:
    """``text`` in the user's language (the plugin's translation context ``HsrDiff``)."""
    return QCoreApplication.translate("HsrDiff", text)


DEGRADATION_OPTIONS = [
    ("estimate", tr("Estimate from the pair (sub-pixel offset, PSF shape and width)")),
    ("model", tr("Nominal (as the model was trained: centred Gaussian)")),
]
"""The ``DEGRADATION`` parameter's choices, in the order of ``core.jobs.common.DEGRADATIONS``."""

OUTPUT_TYPE_OPTIONS = [
    ("float32", tr("Float32 (as computed)")),
    ("int16", tr("Int16 (scaled integers, nodata -32768: reflectance in 0-1 stored x 10000)")),
]
"""The ``OUTPUT_TYPE`` parameter's choices, in the order of ``core.raster_io.OUTPUT_TYPES``."""

CHECK_OPTIONS = [
    ("best", tr("Check against MTF-GLP-HS, GSA and CNMF on the pair and write the best")),
    ("report", tr("Check and report only (always write the model's result)")),
    ("off", tr("Off")),
]
"""The ``CHECK`` parameter's choices, in the order of ``export.defaults.CHECKS``."""

CUMULATIVE_CUT = (0.02, 0.98)
"""The stretch of a loaded result: each band from its 2 % to its 98 % cumulative count (estimated on a sample)."""


def help_page(name: str) -> Path | None:
    """The HTML help page ``docs/help/<name>.html`` of an algorithm, None when it is missing.

    ``docs/`` sits inside the plugin folder in the installed zip and beside it in a source checkout.
    """
    plugin = Path(__file__).resolve().parents[1]
    for root in (plugin, plugin.parent):
        page = root / "docs" / "help" / f"{name}.html"
        if page.is_file():
            return page
    return None


def show_as_composite(layer: QgsRasterLayer, rgb) -> None:
    """Render ``layer`` as the composite ``rgb`` (a :class:`core.rendering.RgbBands`), each band stretched over
    its :data:`CUMULATIVE_CUT` (QGIS's *Cumulative count cut*, estimated on a sample of the layer)."""
    renderer = QgsMultiBandColorRenderer(layer.dataProvider(), rgb.red, rgb.green, rgb.blue)
    origin = QgsRasterMinMaxOrigin()
    origin.setLimits(QgsRasterMinMaxOrigin.CumulativeCut)
    origin.setCumulativeCutLower(CUMULATIVE_CUT[0])
    origin.setCumulativeCutUpper(CUMULATIVE_CUT[1])
    origin.setStatAccuracy(QgsRasterMinMaxOrigin.Estimated)
    renderer.setMinMaxOrigin(origin)
    layer.setRenderer(renderer)
    layer.setContrastEnhancement(QgsContrastEnhancement.StretchToMinimumMaximum, QgsRasterMinMaxOrigin.CumulativeCut,
                                 QgsRectangle(), int(QgsRasterLayer.SAMPLE_SIZE))
    layer.triggerRepaint()


class ResultStyle(QgsProcessingLayerPostProcessorInterface):
    """Shows a result layer that Processing loaded as a colour composite (:func:`show_as_composite`)."""

    _pending: list[ResultStyle] = []
    """Processing keeps only a pointer to a post-processor: each is held here until it has run."""

    def __init__(self, rgb):
        super().__init__()
        self.rgb = rgb

    @classmethod
    def create(cls, rgb) -> ResultStyle:
        style = cls(rgb)
        cls._pending.append(style)
        return style

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API name)
        try:
            if isinstance(layer, QgsRasterLayer) and layer.isValid():
                show_as_composite(layer, self.rgb)
                feedback.pushInfo(tr("{name}: shown as {label} (bands {r}, {g}, {b})").format(
                    name=layer.name(), label=tr(self.rgb.label), r=self.rgb.red, g=self.rgb.green, b=self.rgb.blue))
        finally:
            with contextlib.suppress(ValueError):
                self._pending.remove(self)


class HsrDiffAlgorithm(QgsProcessingAlgorithm):
    """Subclasses set ``NAME``, ``DISPLAY``, ``GROUP``, ``GROUP_ID``, ``HELP``, ``SHORT`` (one line) and ``TAGS`` (the words
    the toolbox search finds it by) and implement ``initAlgorithm``/``execute``. The help button opens
    ``docs/help/<NAME>.html`` (:func:`help_page`); user-visible strings go through :meth:`tr`.

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
    SHORT = ""
    TAGS: tuple[str, ...] = ()

    @staticmethod
    def tr(text: str) -> str:
        return tr(text)

    def name(self):
        return self.NAME

    def displayName(self):  # noqa: N802 (QGIS API name)
        return self.tr(self.DISPLAY)

    def group(self):
        return self.tr(self.GROUP)

    def groupId(self):  # noqa: N802 (QGIS API name)
        return self.GROUP_ID

    def shortHelpString(self):  # noqa: N802 (QGIS API name)
        return self.tr(self.HELP)

    def shortDescription(self):  # noqa: N802 (QGIS API name)
        return self.tr(self.SHORT)

    def tags(self):
        return [self.tr(t) for t in self.TAGS]

    def helpUrl(self):  # noqa: N802 (QGIS API name)
        page = help_page(self.NAME)
        return QUrl.fromLocalFile(str(page)).toString() if page is not None else ""

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
    def load_as(context, path: str, name: str) -> None:
        """When Processing loads the output ``path`` at the end of the run (the dialog, ``runAndLoadResults``), name its
        layer ``name`` (unless QGIS is set to name layers after their files) and show it as the colour composite
        :func:`core.rendering.default_rgb` picks from its wavelengths."""
        if not context.willLoadLayerOnCompletion(path):
            return
        from core.raster_io import read_meta
        from core.rendering import default_rgb

        meta = read_meta(path)
        details = context.layerToLoadOnCompletionDetails(path)
        details.name = name
        details.setPostProcessor(ResultStyle.create(default_rgb(meta.bands, meta.wavelengths, meta.good_bands)))

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
