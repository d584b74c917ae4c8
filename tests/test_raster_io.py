"""Raster I/O on real files: spectral metadata conventions, windows, round trips, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal

from core.raster_io import RasterError, RasterReader, RasterWriter, Window, iter_windows, read_meta, read_raster, write_raster


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
