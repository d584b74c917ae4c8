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


# ---------------------------------------------------------------------- nothing cut silently


@pytest.mark.parametrize("shift", [+0.05, -0.05])
def test_offset_within_tolerance_is_snapped_and_noted(lr, tmp_path, caplog, shift):
    """An MSI grid 0.005 of an MSI pixel (5 cm) off the LR edges keeps every LR row and column."""
    lr_path, gt = lr
    # 20 x 10 LR pixels from LR pixel (2, 3), shifted east and south by ``shift`` metres.
    mgt = (gt[0] + 60 + shift, 10.0, 0.0, gt[3] - 90 - shift, 0.0, -10.0)
    with caplog.at_level("WARNING", logger="hsr_diff.pairing"):
        geo = check_pair(lr_path, msi(tmp_path, mgt, shape=(4, 30, 60)))
    assert geo.lr_window == Window(2, 3, 20, 10)
    assert geo.msi_window == Window(0, 0, 60, 30)
    assert geo.geotransform == mgt
    frac = f"{shift / 10:+.4f}"
    assert len(geo.notes) == 2
    for axis, note in zip("xy", geo.notes, strict=True):
        assert f"offset by {frac} of an HR-MSI pixel ({shift:+.4g} map units) in {axis}" in note
        assert "HR-MSI layer 'msi.tif''s pixel edges were snapped to LR-HSI layer 'lr.tif''s" in note
    assert [r.getMessage() for r in caplog.records] == list(geo.notes)


def test_exact_grids_have_no_notes(lr, tmp_path):
    lr_path, gt = lr
    geo = check_pair(lr_path, msi(tmp_path, (gt[0] + 60, 10.0, 0.0, gt[3] - 90, 0.0, -10.0), shape=(4, 30, 60)))
    assert geo.notes == ()


def test_offset_beyond_tolerance_is_refused(lr, tmp_path):
    lr_path, gt = lr
    with pytest.raises(PairError, match=r"not aligned in y: .* 0\.020 of an MSI pixel"):
        check_pair(lr_path, msi(tmp_path, (gt[0] + 60, 10.0, 0.0, gt[3] - 90 - 0.2, 0.0, -10.0), shape=(4, 30, 60)))


def test_msi_edges_cutting_lr_pixels_are_noted(lr, tmp_path):
    """An MSI starting one MSI pixel into an LR column and not a whole number of LR pixels large."""
    lr_path, gt = lr
    # West edge 1 MSI px into LR column 2 (2 of its 3 MSI columns covered); 63 x 31 MSI pixels, so the
    # east edge covers 1 of 3 MSI columns of LR column 23 and the south edge 1 of 3 MSI rows of LR row 13.
    mgt = (gt[0] + 70, 10.0, 0.0, gt[3] - 90, 0.0, -10.0)
    geo = check_pair(lr_path, msi(tmp_path, mgt, shape=(4, 31, 63)))
    assert geo.lr_window == Window(3, 3, 20, 10)
    assert geo.msi_window == Window(2, 0, 60, 30)
    assert geo.geotransform == (gt[0] + 90, 10.0, 0.0, gt[3] - 90, 0.0, -10.0)
    assert len(geo.notes) == 3
    west, east, south = geo.notes
    assert west.startswith("HR-MSI layer 'msi.tif''s west edge cuts a column of LR-HSI layer 'lr.tif' (2 of its 3 HR-MSI "
                           "columns are covered): that LR column and the 2 HR-MSI column(s) over it are left out")
    assert "east edge cuts a column" in east and "(1 of its 3 HR-MSI columns" in east
    assert "south edge cuts a row" in south and "(1 of its 3 HR-MSI rows" in south


def test_pixel_ratio_drift_is_noted_then_refused(lr, tmp_path):
    """10.009 m MSI pixels on 30 m LR pixels: within the ratio tolerance, but the grids drift apart."""
    lr_path, gt = lr
    geo = check_pair(lr_path, msi(tmp_path, (gt[0], 10.009, 0.0, gt[3], 0.0, -10.009), shape=(4, 192, 288)))
    assert geo.scale == 3 and geo.lr_window == Window(0, 0, 96, 64) and geo.msi_window == Window(0, 0, 288, 192)
    assert any("ratio in x is 2.99730, not exactly 3: over the 96 LR pixels of the common area" in n and "drifts +0.259" in n
               for n in geo.notes)
    # Over 200 LR pixels the drift exceeds half an MSI pixel.
    cube, meta = read_raster(lr_path)
    wide = write_raster(tmp_path / "wide.tif", np.tile(cube[:2], (1, 1, 3))[:, :, :200], crs_wkt=meta.crs_wkt,
                        geotransform=meta.geotransform)
    with pytest.raises(PairError, match=r"ratio 2\.99730 is within the tolerance of 3, but over the 200 LR pixels .* "
                                        r"drifts \+0\.54 of an HR-MSI pixel in x .* pixel size of exactly 10$"):
        check_pair(wide, msi(tmp_path, (gt[0], 10.009, 0.0, gt[3], 0.0, -10.009), shape=(2, 192, 600), name="m2.tif"))
