"""Shared fixtures: the real data folder and one real QgsApplication with Processing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Never write .aux.xml side files next to the shared (read-only) data.
os.environ["GDAL_PAM_ENABLED"] = "NO"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout: the real scenes (see its README)."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.fail(f"real test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def qgis_app(tmp_path_factory):
    """A headless QgsApplication with the Processing framework and the hsrdiff provider loaded."""
    profile = tmp_path_factory.mktemp("qgis_profile")
    os.environ.setdefault("XDG_DATA_HOME", str(profile))
    os.environ.setdefault("XDG_CONFIG_HOME", str(profile))
    sys.path.append("/usr/share/qgis/python/plugins")
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    from hsr_diff_plugin.provider import HsrDiffProvider

    provider = HsrDiffProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    yield app
    QgsApplication.processingRegistry().removeProvider(provider)
