"""QGIS plugin entry point for hsr-diff (hyperspectral super-resolution by conditional diffusion)."""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _expose_science_packages() -> None:
    """Put the folder holding ``core/`` and ``export/`` on ``sys.path``.

    In the installed zip they sit inside the plugin folder; in a source checkout loaded with
    ``QGIS_PLUGINPATH=<repo root>`` they sit beside it.
    """
    for folder in (_HERE, os.path.dirname(_HERE)):
        if os.path.isfile(os.path.join(folder, "core", "__init__.py")):
            if folder not in sys.path:
                sys.path.insert(0, folder)
            return


_expose_science_packages()


def classFactory(iface):  # noqa: N802 (QGIS API name)
    from .plugin import HsrDiffPlugin

    return HsrDiffPlugin(iface)
