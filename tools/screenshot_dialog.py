"""Open QGIS's Processing toolbox and an hsrdiff algorithm dialog, save a screenshot, quit.

Run inside a real QGIS desktop under Xvfb (see ``tools/screenshot.sh``)::

    HSRDIFF_ALG=hsrdiff:superresolve HSRDIFF_SHOT=docs/img/superresolve_dialog.png qgis --nologo --code tools/screenshot_dialog.py
"""

import os

from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication, QDockWidget
from qgis.utils import iface

ALG = os.environ.get("HSRDIFF_ALG", "hsrdiff:superresolve")
SHOT = os.environ.get("HSRDIFF_SHOT", "docs/img/superresolve_dialog.png")
state = {}


def open_dialog():
    import processing

    win = iface.mainWindow()
    win.move(0, 0)
    win.resize(1400, 860)
    for dock in win.findChildren(QDockWidget):
        if dock.objectName() == "ProcessingToolbox":
            dock.show()
            dock.raise_()
            if hasattr(dock, "searchBox"):
                dock.searchBox.setText("HSR-Diff")
    dlg = processing.createAlgorithmDialog(ALG, {})
    dlg.resize(860, 680)
    dlg.move(300, 120)
    dlg.show()
    state["dlg"] = dlg
    QTimer.singleShot(2500, grab)


def grab():
    screen = QApplication.primaryScreen()
    screen.grabWindow(0).save(SHOT)
    print(f"saved {SHOT}")
    state["dlg"].close()
    QTimer.singleShot(200, QApplication.instance().quit)


QTimer.singleShot(4000, open_dialog)
