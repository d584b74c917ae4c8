"""Raster I/O on real files: spectral metadata conventions, windows, round trips, atomic writes, output locks."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from core.raster_io import (
    OutputLocked,
    RasterError,
    RasterReader,
    RasterWriter,
    Window,
    iter_windows,
    read_meta,
    read_raster,
    write_raster,
)

ROOT = Path(__file__).resolve().parents[1]


def test_enmap_metadata_and_nodata(shared_data):
    cube, meta = read_raster(shared_data / "enmap_potsdam_north.tif")
    assert cube.dtype == np.float32 and cube.shape == (224, 64, 96) == meta.shape
    assert meta.crs_wkt and "UTM zone 33N" in meta.crs_wkt
    assert meta.pixel_size == (30.0, 30.0)
    assert 415 < meta.wavelengths[0] < 420 and 2440 < meta.wavelengths[-1] < 2450
    assert meta.fwhm is not None and np.all((meta.fwhm > 3) & (meta.fwhm < 40))
    # Bands 130-135 (1-based) are water-vapour bands: bbl = 0 and all nodata.
    assert meta.bad_bands[129:135].all() and meta.bad_bands.sum() >= 6
    assert np.isnan(cube[129]).all() and meta.nodata[129] == -32768
    assert meta.valid.all()  # bad bands do not make pixels invalid
    assert np.isfinite(cube[meta.good_bands]).all()


def test_round_trip_keeps_every_piece_of_metadata(shared_data, tmp_path):
    cube, meta = read_raster(shared_data / "enmap_potsdam_north.tif")
    cube[:, 3, 5] = np.nan  # a nodata pixel
    out = write_raster(tmp_path / "copy.tif", cube, meta)
    back, m2 = read_raster(out)
    assert m2.geotransform == meta.geotransform
    assert m2.crs_wkt == meta.crs_wkt
    assert m2.nodata == [-32768.0] * 224
    assert m2.band_names == meta.band_names
    np.testing.assert_allclose(m2.wavelengths, meta.wavelengths, atol=1e-3)
    np.testing.assert_allclose(m2.fwhm, meta.fwhm, atol=1e-3)
    np.testing.assert_array_equal(m2.bad_bands, meta.bad_bands)
    np.testing.assert_array_equal(np.isnan(back), np.isnan(cube))
    np.testing.assert_array_equal(back[np.isfinite(back)], cube[np.isfinite(cube)])
    assert not m2.valid[3, 5] and m2.valid.sum() == 64 * 96 - 1
    # Written in both the EnMAP-Box and the GDAL >= 3.10 IMAGERY conventions, tiled and compressed.
    ds = gdal.Open(str(out))
    b = ds.GetRasterBand(10)
    assert float(b.GetMetadata("IMAGERY")["CENTRAL_WAVELENGTH_UM"]) * 1000 == pytest.approx(meta.wavelengths[9], abs=1e-3)
    assert b.GetBlockSize() == [256, 256]
    assert ds.GetMetadata("IMAGE_STRUCTURE").get("COMPRESSION") == "DEFLATE"


def test_envi_dataset_lists(shared_data):
    meta = read_meta(shared_data / "gamsberg_envi.bsq")
    assert meta.shape == (189, 25, 10)
    assert meta.wavelengths[0] == pytest.approx(426.82, abs=1e-3)
    assert meta.fwhm is not None and meta.fwhm[0] == pytest.approx(11.3871, abs=1e-3)


def test_envi_micrometres_and_bbl_converted(tmp_path):
    data = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    data.tofile(tmp_path / "um.bsq")
    (tmp_path / "um.hdr").write_text(
        "ENVI\nsamples = 5\nlines = 4\nbands = 3\nheader offset = 0\nfile type = ENVI Standard\ndata type = 4\n"
        "interleave = bsq\nbyte order = 0\nwavelength units = Micrometers\nwavelength = {0.45, 0.55, 0.65}\n"
        "fwhm = {0.01, 0.012, 0.014}\nbbl = {1, 0, 1}\n"
    )
    cube, meta = read_raster(tmp_path / "um.bsq")
    np.testing.assert_allclose(meta.wavelengths, [450, 550, 650])
    np.testing.assert_allclose(meta.fwhm, [10, 12, 14])
    np.testing.assert_array_equal(meta.bad_bands, [False, True, False])
    np.testing.assert_array_equal(cube, data)


def test_imagery_domain_and_scale_offset(tmp_path):
    path = str(tmp_path / "imagery.tif")
    ds = gdal.GetDriverByName("GTiff").Create(path, 4, 3, 2, gdal.GDT_Int16)
    for i, (wl, fw) in enumerate(((0.49, 0.065), (0.56, 0.035))):
        b = ds.GetRasterBand(i + 1)
        b.SetMetadata({"CENTRAL_WAVELENGTH_UM": str(wl), "FWHM_UM": str(fw)}, "IMAGERY")
        b.SetScale(1e-4)
        b.SetOffset(0.1)
        b.SetNoDataValue(-9999)
        b.WriteArray(np.array([[1000, 2000, -9999, 0]] * 3, np.int16))
    ds = None
    cube, meta = read_raster(path)
    np.testing.assert_allclose(meta.wavelengths, [490, 560])
    np.testing.assert_allclose(meta.fwhm, [65, 35])
    assert meta.dtype == "Int16"
    np.testing.assert_allclose(cube[0, 0], [0.2, 0.3, np.nan, 0.1], rtol=1e-6)
    assert meta.valid[:, 2].sum() == 0 and meta.valid[:, [0, 1, 3]].all()


def test_windowed_reads_and_writes(shared_data, tmp_path):
    full, meta = read_raster(shared_data / "enmap_potsdam_north.tif", bands=[10, 50, 90])
    with RasterReader(shared_data / "enmap_potsdam_north.tif") as r:
        part = r.read(Window(20, 10, 30, 15), bands=[10, 50, 90])
        np.testing.assert_array_equal(part, full[:, 10:25, 20:50])
        edge = r.read(Window(-2, 60, 6, 8), bands=[10])  # halo outside the raster -> NaN
        assert np.isnan(edge[:, :, :2]).all() and np.isnan(edge[:, 4:, :]).all()
        np.testing.assert_array_equal(edge[0, :4, 2:], full[0, 60:64, 0:4])
    wins = list(iter_windows(64, 96, 40))
    assert sum(w.width * w.height for w in wins) == 64 * 96
    with RasterWriter(tmp_path / "tiles.tif", full.shape, meta.geotransform, meta.crs_wkt) as w:
        for win in wins:
            w.write(full[:, win.row_off:win.row_off + win.height, win.col_off:win.col_off + win.width], win)
    back, _ = read_raster(tmp_path / "tiles.tif")
    np.testing.assert_array_equal(back, full)


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.tif"
    with pytest.raises(ZeroDivisionError):
        with RasterWriter(target, (2, 8, 8)) as w:
            w.write(np.zeros((2, 8, 8), np.float32))
            raise ZeroDivisionError("simulated failure mid-write")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_and_missing(tmp_path):
    with pytest.raises(RasterError, match="does not exist"):
        RasterWriter(tmp_path / "nope" / "x.tif", (1, 2, 2))
    with pytest.raises(RasterError, match="no such file"):
        read_meta(tmp_path / "missing.tif")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(RasterError, match="junk.tif"):
        read_meta(tmp_path / "junk.tif")


# --------------------------------------------------------------------------- nothing lost, nothing silent


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """A real "disk full" for this process: no file can grow past ``nbytes`` (writes fail with EFBIG)."""
    resource = pytest.importorskip("resource")
    if signal.getsignal(signal.SIGXFSZ) != signal.SIG_IGN:
        pytest.skip("SIGXFSZ is not ignored: exceeding the file size limit would kill the test process")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes if hard == resource.RLIM_INFINITY else min(nbytes, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.fixture(scope="module")
def enmap(shared_data):
    return read_raster(shared_data / "enmap_potsdam_north.tif")


def test_disk_full_removes_the_partial_file_and_keeps_the_old_output(enmap, tmp_path, capfd):
    cube, meta = enmap
    out = tmp_path / "out.tif"
    out.write_bytes(b"an older result")
    with pytest.raises(RasterError, match=re.escape(f"{out}: writing the output failed (") + r".*File too large.*\); "
                       "the disk may be full or the folder not writable; no output was written"):
        with file_size_limit(64 * 1024):
            write_raster(out, cube, meta)
    assert _names(tmp_path) == ["out.tif"] and out.read_bytes() == b"an older result"
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception ignored" not in err and "ERROR" not in err, err
    write_raster(out, cube, meta)  # the lock was released
    assert read_meta(out).shape == cube.shape


def test_gdal_write_errors_remove_the_partial_file(enmap, tmp_path, monkeypatch):
    cube, meta = enmap
    out = tmp_path / "out.tif"
    # GDAL returning an error code without raising: the writer aborts itself, even outside a ``with``.
    w = RasterWriter(out, cube.shape, meta.geotransform, meta.crs_wkt)
    with monkeypatch.context() as m:
        m.setattr(gdal.Band, "WriteArray", lambda self, *a, **k: gdal.CE_Failure)
        with pytest.raises(RasterError, match=r"out\.tif: writing the output failed \(GDAL error 3\)"):
            w.write(cube)
    assert _names(tmp_path) == []
    with pytest.raises(RasterError, match="writer already closed"):
        w.write(cube)
    # GDAL raising during WriteArray, or while flushing the block cache (where a full disk shows up: the blocks are
    # cached until then).
    for owner, method, message in ((gdal.Band, "WriteArray", "_tiffWriteProc:No space left on device"),
                                   (gdal.Dataset, "FlushCache", "TIFFAppendToStrip:Write error at scanline 0")):
        with monkeypatch.context() as m:
            def fail(self, *a, message=message, **k):
                raise RuntimeError(message)

            m.setattr(owner, method, fail)
            with pytest.raises(RasterError, match=rf"writing the output failed \({re.escape(message)}\)"):
                write_raster(out, cube, meta)
        assert _names(tmp_path) == []


def test_commit_failures_remove_the_partial_file_and_its_aux(enmap, tmp_path, monkeypatch):
    cube, meta = enmap
    out = tmp_path / "out.tif"
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst) == out:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    with pytest.raises(RasterError, match=re.escape(f"{out}: cannot put the finished output in place (No space left on device)")):
        with RasterWriter(out, cube.shape, meta.geotransform, meta.crs_wkt) as w:
            w.write(cube)
            Path(str(w._tmp) + ".aux.xml").write_text("<PAMDataset/>")
            monkeypatch.setattr(os, "replace", replace)
    monkeypatch.undo()
    assert _names(tmp_path) == []


def test_output_path_that_is_a_folder_is_refused(tmp_path):
    (tmp_path / "out.tif").mkdir()
    with pytest.raises(RasterError, match=re.escape(f"{tmp_path / 'out.tif'}: is a folder, not a file name")):
        RasterWriter(tmp_path / "out.tif", (1, 2, 2))
    assert _names(tmp_path) == ["out.tif"] and _names(tmp_path / "out.tif") == []


def test_bad_arguments_leave_nothing_and_no_lock(enmap, tmp_path):
    cube, meta = enmap
    with pytest.raises(RasterError, match="3 band_names given for 224 bands"):
        RasterWriter(tmp_path / "out.tif", cube.shape, band_names=["a", "b", "c"])
    assert _names(tmp_path) == []
    write_raster(tmp_path / "out.tif", cube[:2], None)
    assert _names(tmp_path) == ["out.tif"]


def test_stale_partials_of_this_output_are_removed(enmap, tmp_path):
    cube, meta = enmap
    stale = [".out.partial-0123abcd.tif", ".out.partial-0123abcd.tif.aux.xml", ".out.partial-89abcdef.tif"]
    kept = [".other.partial-0123abcd.tif", ".out.partial-0123abcd.vrt", ".out2.partial-0123abcd.tif", ".out.partial-xyz.tif",
            "out.partial-0123abcd.tif"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"left by a killed run")
    write_raster(tmp_path / "out.tif", cube[:3], None)
    assert _names(tmp_path) == sorted([*kept, "out.tif"])
    # ``scene`` and ``scene.tif`` share temporary names: a live run writing ``scene`` keeps its partial file.
    for name in kept:
        (tmp_path / name).unlink()
    with RasterWriter(tmp_path / "scene", cube[:3].shape) as live:
        partial = live._tmp.name
        write_raster(tmp_path / "scene.tif", cube[:3], None)
        assert partial in _names(tmp_path)
        live.write(cube[:3])
    assert _names(tmp_path) == ["out.tif", "scene", "scene.tif"]
    np.testing.assert_array_equal(read_raster(tmp_path / "scene")[0], cube[:3])


def test_stale_aux_of_the_replaced_output_is_removed(enmap, tmp_path):
    cube, meta = enmap
    out = tmp_path / "out.tif"
    write_raster(out, cube[:2], None)
    aux = tmp_path / "out.tif.aux.xml"
    aux.write_text('<PAMDataset><PAMRasterBand band="1"><Metadata><MDI key="STATISTICS_MAXIMUM">99999</MDI>'
                   "</Metadata></PAMRasterBand></PAMDataset>")
    write_raster(out, cube[2:4], None)
    assert _names(tmp_path) == ["out.tif"]
    # A side file the new output has itself replaces the old one.
    aux.write_text("<PAMDataset>old</PAMDataset>")
    with RasterWriter(out, cube[:2].shape) as w:
        w.write(cube[:2])
        Path(str(w._tmp) + ".aux.xml").write_text("<PAMDataset>new</PAMDataset>")
    assert _names(tmp_path) == ["out.tif", "out.tif.aux.xml"] and aux.read_text() == "<PAMDataset>new</PAMDataset>"


def test_two_writers_of_one_path_in_one_process(enmap, tmp_path):
    cube, meta = enmap
    out = tmp_path / "out.tif"
    first = RasterWriter(out, cube[:2].shape)
    busy = (re.escape(f"another run is writing {out} (lock file {out}.lock, pid {os.getpid()}); wait for it or choose "
                      "another output"))
    with pytest.raises(OutputLocked, match=busy):
        RasterWriter(out, cube[:2].shape)
    with pytest.raises(OutputLocked, match=busy):
        write_raster(out, cube[:2], None)
    first.write(cube[:2])
    first.commit()
    assert _names(tmp_path) == ["out.tif"]
    RasterWriter(out, cube[:2].shape).abort()  # commit and abort both release the lock
    write_raster(out, cube[2:4], None)
    np.testing.assert_array_equal(read_raster(out)[0], cube[2:4])


_HOLDER = """
import sys
import numpy as np
from core.raster_io import RasterWriter
w = RasterWriter(sys.argv[1], (1, 4, 4))
print("locked", flush=True)
sys.stdin.readline()
w.write(np.ones((1, 4, 4), np.float32))
w.commit()
"""


def test_a_second_process_is_refused(tmp_path):
    out = tmp_path / "out.tif"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLocked, match=re.escape(f"(lock file {out}.lock, pid {holder.pid})")):
            write_raster(out, np.zeros((1, 4, 4), np.float32), None)
        holder.stdin.write("go\n")
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
    assert _names(tmp_path) == ["out.tif"] and read_raster(out)[0].max() == 1


def test_stale_lock_of_a_dead_process_is_taken_over(enmap, tmp_path):
    cube, meta = enmap
    out = tmp_path / "out.tif"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid runs nothing now
    lock = tmp_path / "out.tif.lock"
    lock.write_text(f"{gone.pid}\n{socket.gethostname()}\n")
    (tmp_path / ".out.partial-deadbeef.tif").write_bytes(b"the killed run's partial output")
    write_raster(out, cube[:2], None)
    assert _names(tmp_path) == ["out.tif"]
    # A lock from another machine cannot be checked, so it holds.
    lock.write_text("4242\nsome-other-host\n")
    with pytest.raises(OutputLocked, match=re.escape("pid 4242 on some-other-host")):
        write_raster(out, cube[:2], None)
    # A lock file with no pid yet is one being written: it holds for a while, then counts as stale.
    lock.write_text("")
    with pytest.raises(OutputLocked, match="pid unknown"):
        write_raster(out, cube[:2], None)
    old = time.time() - 3600
    os.utime(lock, (old, old))
    write_raster(out, cube[2:4], None)
    assert _names(tmp_path) == ["out.tif"]


def test_gdal_cache_is_bounded_during_a_windowed_run_and_restored():
    from osgeo import gdal

    from core.raster_io import bounded_gdal_cache

    before = gdal.GetCacheMax()
    with bounded_gdal_cache(64 * 1024 * 1024):
        assert gdal.GetCacheMax() == min(before, 64 * 1024 * 1024)
    assert gdal.GetCacheMax() == before
    with bounded_gdal_cache(before * 2):  # never raised
        assert gdal.GetCacheMax() == before
