"""The GPU as it really is: a real CUDA session decides, Device = CUDA without one is one message, install hints are PyPI's."""

from __future__ import annotations

import os
import re
import site

import onnxruntime as ort
import pytest
from qgis.core import QgsProcessingException
from qgis_helpers import ROOT, enable_plugin, qgis_env, qgis_process

from core.jobs.simulate import simulate_files
from core.raster_io import Window, read_raster, write_raster
from export.providers import (
    ProviderError,
    _ort_errors,
    _ort_log,
    _output_of,
    create_session,
    cuda_requirements,
    gpu_status,
    nvidia_driver,
    ort_build,
)
from export.sampler import update_model_bytes
from hsr_diff_plugin.dependencies import MissingDependency, gpu_report, install_hint, pip_command, require

ENMAP = "enmap_potsdam_southeast.tif"
GPU = gpu_status("cuda").usable
no_gpu_only = pytest.mark.skipif(GPU, reason="a usable CUDA GPU is here; this checks the machine without one")


@pytest.fixture(scope="module")
def pair(shared_data, tmp_path_factory):
    """A real EnMAP crop (224 bands, 48 x 48) and its Sentinel-2 pair at scale 3."""
    d = tmp_path_factory.mktemp("gpu_pair")
    hr, meta = read_raster(shared_data / ENMAP)
    write_raster(d / "hr.tif", hr[:, :48, :48], meta, geotransform=meta.window_geotransform(Window(0, 0, 48, 48)))
    simulate_files(d / "hr.tif", d / "lr.tif", d / "msi.tif", "sentinel2", 3)
    return d / "lr.tif", d / "msi.tif"


def _cuda_session_providers() -> list[str]:
    """The providers of a plain ONNX Runtime session asked for CUDA only (it falls back to the CPU silently)."""
    return ort.InferenceSession(update_model_bytes(), providers=["CUDAExecutionProvider"]).get_providers()


def test_gpu_status_is_what_a_real_cuda_session_does():
    status = gpu_status("cuda")
    assert status.usable == (_cuda_session_providers()[0] == "CUDAExecutionProvider")
    assert status.usable == (status.reason == "")
    if not nvidia_driver():
        assert not status.usable and "no NVIDIA driver" in status.reason
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert not status.usable and "build without the CUDAExecutionProvider" in status.reason


@no_gpu_only
def test_onnxruntime_errors_are_read_from_its_own_log(capfd):
    def probe():
        with _ort_log(3):
            return ort.InferenceSession(update_model_bytes(), providers=["CUDAExecutionProvider"]).get_providers()

    got, output = _output_of(probe)
    assert got == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        errors = _ort_errors(output)
        assert errors and any("providers_cuda" in e for e in errors), output
        assert not any("\x1b" in e or ".cc:" in e for e in errors)
    # File descriptor 2 is the test's again afterwards.
    os.write(2, b"after the probe\n")
    assert "after the probe" in capfd.readouterr().err


def test_cuda_requirements():
    package, version, built = ort_build()
    assert version == ort.__version__
    if package == "onnxruntime-gpu":
        assert built and cuda_requirements() == (built.split(".")[0], "9")
    assert cuda_requirements("1.18.1", "") == ("11", "8")
    assert cuda_requirements("1.20.1", "12.4") == ("12", "9")
    assert cuda_requirements("1.22.0", "") == ("12", "9")
    assert cuda_requirements("1.31.1", "13.0") == ("13", "9")


@no_gpu_only
def test_device_cuda_without_gpu_is_one_clear_error():
    with pytest.raises(ProviderError) as err:
        create_session(update_model_bytes(), "cuda", threads=1)
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    assert msg.startswith("Device CUDA: ") and gpu_status("cuda").reason in msg
    assert "Choose Device = CPU or Auto" in msg and "restart QGIS" in msg and "GPU set-up" in msg
    if ort_build()[0] == "onnxruntime-gpu":
        cuda, cudnn = cuda_requirements()
        assert f"CUDA {cuda}.x and cuDNN {cudnn}.x" in msg
    sess, info = create_session(update_model_bytes(), "cuda", allow_fallback=True, threads=1)
    assert sess.get_providers() == ["CPUExecutionProvider"] and info.fell_back
    assert any(gpu_status("cuda").reason in n for n in info.notes)


@no_gpu_only
def test_processing_device_cuda_without_gpu(qgis_app, pair, tmp_path):
    import processing

    lr, msi = pair
    out = tmp_path / "sharp.tif"
    with pytest.raises(QgsProcessingException, match=r"^Device CUDA: .*Choose Device = CPU or Auto"):
        processing.run("hsrdiff:superresolve", {"LR_HSI": str(lr), "HR_MSI": str(msi), "DEVICE": 2, "STEPS": 2, "OUTPUT": str(out)})
    assert os.listdir(tmp_path) == []


@no_gpu_only
def test_qgis_process_device_cuda_without_gpu_shows_no_traceback(pair, tmp_path):
    lr, msi = pair
    env = qgis_env(tmp_path / "profile", pythonpath=os.pathsep.join([str(ROOT), *site.getsitepackages()]))
    enable_plugin(env)
    out = tmp_path / "sharp.tif"
    r = qgis_process(["run", "hsrdiff:superresolve", "--", f"LR_HSI={lr}", f"HR_MSI={msi}", "DEVICE=2", "STEPS=2", f"OUTPUT={out}"], env)
    text = r.stdout + r.stderr
    assert r.returncode != 0 and "ERROR:\tDevice CUDA: device 'cuda' was requested" in text, text
    assert "Traceback" not in text and not out.exists()


def test_check_dependencies_reports_the_real_gpu(qgis_app):
    import processing

    report = processing.run("hsrdiff:checkdependencies", {})["REPORT"]
    assert "device GPU" not in report
    package, version, _ = ort_build()
    assert f"onnxruntime: {version} (package {package}" in report
    assert ("GPU (CUDA): usable" in report) == GPU and ("GPU (CUDA): not usable - " in report) != GPU
    if not GPU:
        assert f"GPU (CUDA): not usable - {gpu_status('cuda').reason}." in report
    if package == "onnxruntime-gpu":
        cuda, cudnn = cuda_requirements()
        assert f"{package} {version} needs CUDA {cuda}.x and cuDNN {cudnn}.x" in report
    assert gpu_report()[0] in report


def _requirement_names() -> set[str]:
    """The PyPI project names of requirements.txt (what `build.py setup` installs from PyPI)."""
    names = set()
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(re.split(r"[<>=!~\[ ]", line)[0].lower())
    return names


def test_install_hints_name_pypi_packages_only():
    cmd = pip_command("onnxruntime", "numpy", "scipy", "torch", "onnx", "safetensors", "osgeo.gdal", "hsr-diff core")
    specs = re.findall(r'"([^"]+)"', cmd)[1:]  # the first quoted string is the interpreter
    names = {re.split(r"[<>=!~\[]", s)[0].lower() for s in specs}
    assert names == {"onnxruntime-gpu" if nvidia_driver() else "onnxruntime", "numpy", "scipy", "torch", "onnx", "safetensors"}
    assert names <= _requirement_names() | {"numpy", "onnxruntime"}
    assert specs.count("numpy<2") == 1 and "numpy" not in specs
    assert "-m pip install --user" in cmd and "osgeo" not in cmd and "core" not in cmd
    hint = install_hint("osgeo.gdal", "onnxruntime")
    assert hint.endswith("Restart QGIS afterwards.") and "python3-gdal" in hint and hint.count("pip install") == 1
    assert "pip" not in install_hint("osgeo.gdal")
    with pytest.raises(MissingDependency, match="Restart QGIS afterwards") as err:
        require("numpy", "no_such_module_xyz", "osgeo.gdal", purpose="Training")
    assert "no_such_module_xyz" in str(err.value) and "osgeo" not in str(err.value)
