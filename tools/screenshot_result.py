"""Super-resolve the bundled sample in a real QGIS desktop, let Processing load the result, save a screenshot, quit.

The screenshot shows the result layer as QGIS opens it (its name, the true-colour composite and the stretch the
plugin gives it). Run inside a real QGIS desktop under Xvfb, set up as ``tools/screenshot.sh`` does, with
``PYTHONPATH`` holding a site-packages that has onnxruntime::

    HSRDIFF_SHOT=docs/img/result_true_colour.png qgis --nologo --noversioncheck --code tools/screenshot_result.py
"""

import os

from qgis.core import QgsProject
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import iface

SHOT = os.environ.get("HSRDIFF_SHOT", "docs/img/result_true_colour.png")
LR = os.environ.get("HSRDIFF_LR", "examples/data/sample_lr_hsi.tif")
MSI = os.environ.get("HSRDIFF_MSI", "examples/data/sample_hr_msi.tif")


def run():
    import processing

    win = iface.mainWindow()
    win.move(0, 0)
    win.resize(1400, 860)
    res = processing.runAndLoadResults("hsrdiff:superresolve", {"LR_HSI": LR, "HR_MSI": MSI, "OUTPUT": "TEMPORARY_OUTPUT"})
    layer = next(lay for lay in QgsProject.instance().mapLayers().values() if lay.source() == res["OUTPUT"])
    r = layer.renderer()
    print(f"loaded '{layer.name()}': {r.type()} bands {r.redBand()}, {r.greenBand()}, {r.blueBand()}")
    iface.setActiveLayer(layer)
    canvas = iface.mapCanvas()
    canvas.setExtent(layer.extent())
    canvas.refresh()
    QTimer.singleShot(3000, grab)


def grab():
    QApplication.primaryScreen().grabWindow(0).save(SHOT)
    print(f"saved {SHOT}")
    QTimer.singleShot(200, QApplication.instance().quit)


QTimer.singleShot(4000, run)
