"""A full disk, an output path that is a folder, or a second run on the same output: one clear message, no output.

Through the CLI (``python -m export.superresolve`` in a fresh interpreter), the Processing
algorithm in this process and the real ``qgis_process``. A full disk is real: the child process
runs under a file size limit (``RLIMIT_FSIZE``), so GDAL's writes fail as they would on a full disk.
"""

from __future__ import annotations

import os
import re
import signal
import site
import subprocess
import sys

import numpy as np
import pytest
from qgis_helpers import QGIS_PROCESS, ROOT, enable_plugin, qgis_env

from core.normalization import BandNormalization
from core.raster_io import RasterWriter, read_meta
from export.testing import contract_model, make_enmap_pair, make_metadata

BANDS = list(range(0, 224, 10)) + [130]
C, M, S = len(BANDS), 4, 4
LIMIT = 64 * 1024  # bytes a file may grow to in the "full disk" child processes; the output needs several times that


@pytest.fixture(scope="module")
def pair(tmp_path_factory, shared_data):
    return make_enmap_pair(tmp_path_factory.mktemp("pair"), shared_data, bands=BANDS, scale=S, msi_bands=M)


@pytest.fixture(scope="module")
def model(tmp_path_factory, pair):
    md = make_metadata(C, M, scale=S, wavelengths_nm=pair["meta"].wavelengths, msi_band_names=[f"MSI {i + 1}" for i in range(M)],
                       hsi_normalization=BandNormalization.fit(np.nan_to_num(pair["lr_array"])),
                       msi_normalization=BandNormalization.fit(np.nan_to_num(pair["msi_array"])))
    return contract_model(tmp_path_factory.mktemp("m") / "contract.onnx", md)


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _full_disk():
    """``preexec_fn``: files of the child cannot grow past ``LIMIT``; writes past it fail (EFBIG) instead of killing it."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT if hard == resource.RLIM_INFINITY else min(LIMIT, hard), hard))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _cli(pair, model, out, full_disk: bool = False) -> subprocess.CompletedProcess:
    if full_disk and sys.platform == "win32":
        pytest.skip("needs RLIMIT_FSIZE")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "export.superresolve", "--lr", str(pair["lr"]), "--msi", str(pair["msi"]),
                           "--model", str(model), "--out", str(out), "--steps", "2", "--threads", "1", "-q"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
                          preexec_fn=_full_disk if full_disk else None)


def _one_error(stderr: str) -> str:
    """The CLI's single ``error:`` line; nothing that looks like a traceback or a GDAL error dump."""
    assert "Traceback" not in stderr and "Exception ignored" not in stderr and "ERROR 1" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def test_cli_full_disk(pair, model, tmp_path):
    out = tmp_path / "out" / "sr.tif"
    out.parent.mkdir()
    r = _cli(pair, model, out, full_disk=True)
    assert r.returncode == 1, r.stderr
    line = _one_error(r.stderr)
    assert re.fullmatch(re.escape(f"error: {out}: writing the output failed (") + r".*File too large.*\); the disk may be full "
                        "or the folder not writable; no output was written", line), line
    assert _names(out.parent) == []


def test_cli_output_is_a_folder(pair, model, tmp_path):
    out = tmp_path / "sr.tif"
    out.mkdir()
    r = _cli(pair, model, out)
    assert r.returncode == 1
    assert _one_error(r.stderr).startswith(f"error: {out}: is a folder, not a file name")
    assert _names(tmp_path) == ["sr.tif"] and _names(out) == []


def test_cli_refuses_an_output_another_run_writes(pair, model, tmp_path):
    out = tmp_path / "sr.tif"
    other = RasterWriter(out, (1, 4, 4))  # the other run: this test process
    try:
        r = _cli(pair, model, out)
    finally:
        other.abort()
    assert r.returncode == 1
    assert _one_error(r.stderr) == (f"error: another run is writing {out} (lock file {out}.lock, pid {os.getpid()}); wait for it "
                                    "or choose another output (delete the lock file only if that run is gone)")
    assert _names(tmp_path) == []
    r = _cli(pair, model, out)  # the lock is gone with the other run
    assert r.returncode == 0, r.stderr
    assert read_meta(out).shape == (C, 64, 92)


def _run(params: dict):
    import processing

    return processing.run("hsrdiff:superresolve", params)


def test_algorithm_write_errors_are_one_message(qgis_app, pair, model, tmp_path, monkeypatch):
    from osgeo import gdal
    from qgis.core import QgsProcessingException

    params = {"LR_HSI": str(pair["lr"]), "HR_MSI": str(pair["msi"]), "MODEL": str(model), "STEPS": 2,
              "OUTPUT": str(tmp_path / "sr.tif")}

    def full(self, *a, **k):
        raise RuntimeError("_tiffWriteProc:No space left on device")

    with monkeypatch.context() as m:
        m.setattr(gdal.Dataset, "FlushCache", full)
        with pytest.raises(QgsProcessingException, match=re.escape(f"{tmp_path / 'sr.tif'}: writing the output failed "
                                                                   "(_tiffWriteProc:No space left on device); the disk may be full")):
            _run(params)
    assert _names(tmp_path) == []
    (tmp_path / "sr.tif").mkdir()
    with pytest.raises(QgsProcessingException, match=re.escape(f"{tmp_path / 'sr.tif'}: is a folder")):
        _run(params)
    (tmp_path / "sr.tif").rmdir()
    other = RasterWriter(tmp_path / "sr.tif", (1, 4, 4))
    try:
        with pytest.raises(QgsProcessingException, match=re.escape(f"another run is writing {tmp_path / 'sr.tif'}")):
            _run(params)
    finally:
        other.abort()
    assert _names(tmp_path) == []


def test_qgis_process_full_disk(pair, model, tmp_path):
    env = qgis_env(tmp_path / "profile", pythonpath=os.pathsep.join([str(ROOT), *site.getsitepackages()]))
    enable_plugin(env)
    out = tmp_path / "out" / "sr.tif"
    out.parent.mkdir()
    args = ["run", "hsrdiff:superresolve", "--", f"LR_HSI={pair['lr']}", f"HR_MSI={pair['msi']}", f"MODEL={model}", "STEPS=2",
            f"OUTPUT={out}"]
    r = subprocess.run([QGIS_PROCESS, *args], env=env, capture_output=True, text=True, timeout=600, preexec_fn=_full_disk)
    text = r.stdout + r.stderr
    assert r.returncode != 0, text
    assert "Traceback" not in text and "Exception ignored" not in text and "ERROR 1" not in text, text
    # qgis_process repeats an algorithm's error (the log, then "ERROR:"): the same single message each time.
    said = {line.removeprefix("ERROR:").strip() for line in text.splitlines() if str(out) in line and "OUTPUT:" not in line}
    assert len(said) == 1, text
    assert re.fullmatch(re.escape(f"{out}: writing the output failed (") + r".*File too large.*\); the disk may be full or the "
                        "folder not writable; no output was written", said.pop()), text
    assert "ERROR:" in text and _names(out.parent) == []


def test_output_and_uncertainty_are_published_together(pair, model, tmp_path, monkeypatch):
    """When the second of the two files fails at commit, the first is removed again: no half result."""
    from core.raster_io import RasterError
    from export.superresolve import superresolve

    real = RasterWriter._publish

    def publish(self):
        if self.path.name == "std.tif":
            raise RasterError(f"{self.path}: cannot put the finished output in place (test); no output was written")
        real(self)

    monkeypatch.setattr(RasterWriter, "_publish", publish)
    with pytest.raises(RasterError, match="std.tif"):
        superresolve(pair["lr"], pair["msi"], model, tmp_path / "sr.tif", steps=1, samples=2,
                     uncertainty_path=tmp_path / "std.tif", threads=1)
    assert _names(tmp_path) == []
    monkeypatch.setattr(RasterWriter, "_publish", real)
    superresolve(pair["lr"], pair["msi"], model, tmp_path / "sr.tif", steps=1, samples=2,
                 uncertainty_path=tmp_path / "std.tif", threads=1)
    assert _names(tmp_path) == ["sr.tif", "std.tif"]
