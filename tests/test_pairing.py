"""The LR-HSI / HR-MSI pair check on real georeferenced EnMAP data: the good case and each bad one."""

from __future__ import annotations

import numpy as np
import pytest
from osgeo import osr

from core.pairing import PairError, check_pair
from core.raster_io import Window, read_raster, write_raster

UTM33 = 32633


def wkt(epsg: int) -> str:
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    return srs.ExportToWkt()


@pytest.fixture(scope="module")
def lr(shared_data, tmp_path_factory):
    """A real EnMAP crop (30 m) and the geotransform of the full file."""
    cube, meta = read_raster(shared_data / "enmap_potsdam_north.tif", bands=list(range(0, 224, 8)))
    path = tmp_path_factory.mktemp("pair") / "lr.tif"
    write_raster(path, cube, crs_wkt=meta.crs_wkt, geotransform=meta.geotransform)
    return path, meta.geotransform


def msi(tmp_path, gt, epsg=UTM33, shape=(4, 60, 90), name="msi.tif"):
    path = tmp_path / name
    data = np.random.default_rng(0).random(shape, dtype=np.float32)
    write_raster(path, data, geotransform=gt, crs_wkt=wkt(epsg) if epsg else "")
    return path


def test_good_pair_common_area(lr, tmp_path):
    lr_path, gt = lr
    # 10 m MSI starting 2 LR pixels right and 3 LR pixels down, 20 x 10 LR pixels large.
    mgt = (gt[0] + 60, 10.0, 0.0, gt[3] - 90, 0.0, -10.0)
    geo = check_pair(lr_path, msi(tmp_path, mgt, shape=(4, 30, 60)))
    assert geo.scale == 3
    assert geo.lr_window == Window(2, 3, 20, 10)
    assert geo.msi_window == Window(0, 0, 60, 30)
    assert geo.geotransform == mgt
    assert "UTM zone 33N" in geo.crs_wkt


def test_msi_larger_than_lr_is_cropped_to_whole_lr_pixels(lr, tmp_path):
    lr_path, gt = lr
    mgt = (gt[0] - 100, 10.0, 0.0, gt[3] + 50, 0.0, -10.0)  # starts 10 px left, 5 px above the LR
    geo = check_pair(lr_path, msi(tmp_path, mgt, shape=(4, 400, 400)))
    assert geo.lr_window.col_off == 0 and geo.lr_window.row_off == 0
    assert geo.msi_window.col_off == 10 and geo.msi_window.row_off == 5
    assert geo.msi_window.width == 3 * geo.lr_window.width


@pytest.mark.parametrize(
    "case, match",
    [
        ("crs", r"CRS mismatch: LR-HSI layer 'lr.tif' is in EPSG:32633 .* HR-MSI layer 'msi.tif' is in EPSG:32632"),
        ("nocrs", r"HR-MSI layer 'msi.tif' has no CRS"),
        ("overlap", r"do not overlap"),
        ("ratio", r"pixel-size ratio 2.5000 .* is not an integer scale factor"),
        ("xy", r"differs in x \(3.0000\) and y \(2.0000\)"),
        ("align", r"not aligned in x"),
        ("toolarge", r"pixel-size ratio 30.0000 .* between 2 and 16"),
    ],
)
def test_bad_pairs_name_the_layer_and_numbers(lr, tmp_path, case, match):
    lr_path, gt = lr
    mgt = [gt[0], 10.0, 0.0, gt[3], 0.0, -10.0]
    epsg = UTM33
    if case == "crs":
        epsg = 32632
    elif case == "nocrs":
        epsg = 0
    elif case == "overlap":
        mgt[0] += 1e5
    elif case == "ratio":
        mgt[1], mgt[5] = 12.0, -12.0
    elif case == "xy":
        mgt[5] = -15.0
    elif case == "align":
        mgt[0] += 5.0
    elif case == "toolarge":
        mgt[1], mgt[5] = 1.0, -1.0
    with pytest.raises(PairError, match=match):
        check_pair(lr_path, msi(tmp_path, tuple(mgt), epsg=epsg))


def test_local_grids_without_crs(shared_data):
    """Houston: a real LR-HSI / RGB pair on a local pixel grid, ratio 4."""
    geo = check_pair(shared_data / "houston2018_hs.tif", shared_data / "houston2018_rgb.tif")
    assert geo.scale == 4 and geo.lr_window == Window(0, 0, 128, 128) and geo.msi_window == Window(0, 0, 512, 512)
    assert geo.crs_wkt == ""


def test_custom_layer_names_in_messages(lr, tmp_path):
    lr_path, gt = lr
    with pytest.raises(PairError, match="HR-MSI layer 'Sentinel-2 10m'"):
        check_pair(lr_path, msi(tmp_path, (gt[0], 10.0, 0, gt[3], 0, -10.0), epsg=0), msi_name="Sentinel-2 10m")
