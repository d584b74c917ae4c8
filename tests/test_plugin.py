"""The plugin loads in real QGIS: qgis_process, the Processing framework, and the packaged zip."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from qgis_helpers import ROOT, enable_plugin, qgis_env, qgis_process, run_algorithm


def test_qgis_process_lists_provider(tmp_path):
    env = qgis_env(tmp_path)
    enable_plugin(env)
    out = qgis_process(["list"], env).stdout
    assert "HSR-Diff" in out and "hsrdiff:checkdependencies" in out
    result = run_algorithm("hsrdiff:checkdependencies", {}, env)
    assert "numpy: 1." in result["results"]["REPORT"]


def test_processing_run_check_dependencies(qgis_app):
    import onnxruntime
    import processing

    result = processing.run("hsrdiff:checkdependencies", {})
    report = result["REPORT"]
    assert "osgeo.gdal: 3." in report
    assert f"onnxruntime: {onnxruntime.__version__}" in report and "CPUExecutionProvider" in report
    assert "MISSING" not in report


def test_missing_dependency_names_the_pip_command():
    from hsr_diff_plugin.dependencies import MissingDependency, require

    try:
        require("numpy", "no_such_module_xyz", purpose="Training")
    except MissingDependency as exc:
        msg = str(exc)
    else:
        raise AssertionError("require() accepted a missing module")
    assert "Training needs the Python package(s) no_such_module_xyz" in msg
    assert '-m pip install --user' in msg and '"numpy<2"' in msg


def test_package_zip_installs_and_loads(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "build.py"), "package"], check=True, cwd=ROOT, capture_output=True)
    zips = sorted((ROOT / "dist").glob("hsr_diff_plugin-*.zip"))
    assert zips, "build.py package wrote no zip"
    with zipfile.ZipFile(zips[-1]) as zf:
        names = zf.namelist()
        assert {n.split("/")[0] for n in names} == {"hsr_diff_plugin"}
        assert "hsr_diff_plugin/metadata.txt" in names
        assert "hsr_diff_plugin/core/__init__.py" in names and any(n.startswith("hsr_diff_plugin/export/") for n in names)
        assert not any("__pycache__" in n or "/tests/" in n or ".venv" in n for n in names)
        meta = zf.read("hsr_diff_plugin/metadata.txt").decode()
        plugins = tmp_path / "plugins"
        zf.extractall(plugins)
    for field in ("name=", "qgisMinimumVersion=3.22", "description=", "about=", "version=", "author=", "email=",
                  "repository=", "tracker=", "hasProcessingProvider=yes", "tags=", "category=Raster"):
        assert field in meta, field
    # A fresh profile with only the unzipped plugin: it loads, and its core comes from the zip.
    env = qgis_env(tmp_path / "profile", plugin_path=plugins)
    enable_plugin(env)
    result = run_algorithm("hsrdiff:checkdependencies", {}, env)
    assert str(plugins / "hsr_diff_plugin" / "core") in result["results"]["REPORT"]
