"""The plugin object QGIS creates: it only registers the Processing provider."""

from qgis.core import QgsApplication

from .provider import HsrDiffProvider


class HsrDiffPlugin:
    """Registers the ``hsrdiff`` provider in ``initProcessing`` so ``qgis_process`` sees it too.

    ``iface`` is kept but never touched at load time (it is ``None`` under ``qgis_process``).
    """

    def __init__(self, iface):
        self.iface = iface
        self.provider = None

    def initProcessing(self):  # noqa: N802 (QGIS API name)
        if self.provider is None:
            self.provider = HsrDiffProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802 (QGIS API name)
        self.initProcessing()

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
