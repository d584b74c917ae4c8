#!/usr/bin/env bash
# Screenshot of the Super-resolve dialog in a real QGIS desktop on a virtual screen (needs xvfb).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=$(mktemp -d)
export XDG_DATA_HOME=$profile XDG_CONFIG_HOME=$profile XDG_RUNTIME_DIR=$profile QGIS_PLUGINPATH=$PWD
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export HSRDIFF_ALG=${HSRDIFF_ALG:-hsrdiff:superresolve} HSRDIFF_SHOT=${HSRDIFF_SHOT:-$PWD/docs/img/superresolve_dialog.png}
QT_QPA_PLATFORM=offscreen qgis_process.bin plugins enable hsr_diff_plugin >/dev/null
QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1400x860x24" timeout 120 qgis --nologo --noversioncheck --code tools/screenshot_dialog.py
rm -rf "$profile"
