"""The ``hsrdiff`` Processing provider."""

import configparser
import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import algorithm_classes
from .algorithms.base import tr
from .provider_icon import ICON_PATH

METADATA = os.path.join(os.path.dirname(__file__), "metadata.txt")


def plugin_version() -> str:
    """The ``version`` of the plugin's ``metadata.txt`` ("" when it cannot be read)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(METADATA, encoding="utf-8")
    return parser.get("general", "version", fallback="")


class HsrDiffProvider(QgsProcessingProvider):
    def id(self):
        return "hsrdiff"

    def name(self):
        return "HSR-Diff"

    def longName(self):  # noqa: N802 (QGIS API name)
        return tr("HSR-Diff hyperspectral super-resolution") + f" {self.versionInfo()}"

    def versionInfo(self):  # noqa: N802 (QGIS API name)
        return plugin_version()

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
