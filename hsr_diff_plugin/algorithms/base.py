"""Shared plumbing for the hsrdiff algorithms: naming, grouping, icon and help text."""

from qgis.core import QgsProcessingAlgorithm
from qgis.PyQt.QtGui import QIcon

from ..provider_icon import ICON_PATH


class HsrDiffAlgorithm(QgsProcessingAlgorithm):
    """Subclasses set ``NAME``, ``DISPLAY``, ``GROUP``, ``GROUP_ID`` and ``HELP``."""

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
        return QIcon(ICON_PATH)

    def svgIconPath(self):  # noqa: N802 (QGIS API name)
        return ICON_PATH

    def createInstance(self):  # noqa: N802 (QGIS API name)
        return type(self)()
