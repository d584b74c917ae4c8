"""The ``hsrdiff`` Processing provider."""

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import algorithm_classes
from .provider_icon import ICON_PATH


class HsrDiffProvider(QgsProcessingProvider):
    def id(self):
        return "hsrdiff"

    def name(self):
        return "HSR-Diff"

    def longName(self):  # noqa: N802 (QGIS API name)
        return "HSR-Diff hyperspectral super-resolution"

    def icon(self):
        return QIcon(ICON_PATH)

    def svgIconPath(self):  # noqa: N802 (QGIS API name)
        return ICON_PATH

    def supportedOutputRasterLayerExtensions(self):  # noqa: N802 (QGIS API name)
        return ["tif"]

    def defaultRasterFileExtension(self):  # noqa: N802 (QGIS API name)
        return "tif"

    def loadAlgorithms(self):  # noqa: N802 (QGIS API name)
        for cls in algorithm_classes():
            self.addAlgorithm(cls())
