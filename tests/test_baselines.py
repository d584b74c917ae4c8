"""Classical baselines on real crops: shapes, quality against bicubic, nodata robustness."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from core import metrics
from core.baselines import BASELINES, bicubic, prepare_inputs
from core.raster_io import read_raster
from core.resample import upsample
from core.sensor import default_msi_bands, simulate_pair, spectral_response

CLASSICAL = [name for name in BASELINES if name != "bicubic"]


@pytest.fixture(scope="module")
def enmap_pair(shared_data):
    cube, meta = read_raster(shared_data / "enmap_potsdam_southeast.tif")
    good = meta.good_bands
    hr = cube[good, :96, :64] / 10000.0
    srf = spectral_response("sentinel2", meta.wavelengths[good], meta.fwhm[good], bands=default_msi_bands("sentinel2"))
    lr, msi = simulate_pair(hr, 4, srf.matrix)
    return hr, lr, msi, srf.matrix


@pytest.fixture(scope="module")
def cave_pair(shared_data):
    cube, meta = read_raster(shared_data / "cave_balloons.tif")
    hr = cube[:, 96:192, 64:160]
    srf = spectral_response("nikon_d700", meta.wavelengths)
    lr, msi = simulate_pair(hr, 4, srf.matrix)
    return hr, lr, msi, srf.matrix


def test_registry_and_signature():
    assert set(BASELINES) == {"bicubic", "gsa", "mtf_glp_hs", "cnmf"}
    for fn in BASELINES.values():
        params = list(inspect.signature(fn).parameters)
        assert params[:5] == ["lr_hsi", "hr_msi", "scale", "srf", "psf"] and "valid" in params
        assert fn.__doc__ and "Memory" in fn.__doc__


def test_bicubic_is_resample_upsample(enmap_pair):
    _, lr, msi, _ = enmap_pair
    np.testing.assert_array_equal(bicubic(lr, msi, 4), upsample(lr, 4))


@pytest.mark.parametrize("name", CLASSICAL)
@pytest.mark.parametrize("scene", ["enmap_pair", "cave_pair"])
def test_classical_beats_bicubic(name, scene, request):
    hr, lr, msi, srf = request.getfixturevalue(scene)
    out = BASELINES[name](lr, msi, 4, srf=srf)
    assert out.shape == hr.shape and out.dtype == np.float32 and np.isfinite(out).all()
    base = metrics.evaluate(hr, upsample(lr, 4), 4, border=4)
    got = metrics.evaluate(hr, out, 4, border=4)
    assert got["psnr"] > base["psnr"] + 3 or got["sam"] < base["sam"] - 0.5, (name, scene, got, base)


def test_cnmf_estimates_the_srf_when_not_given(cave_pair):
    hr, lr, msi, _ = cave_pair
    out = BASELINES["cnmf"](lr, msi, 4, srf=None, inner=50)
    assert metrics.psnr(hr, out, border=4) > metrics.psnr(hr, upsample(lr, 4), border=4)


@pytest.mark.parametrize("name", list(BASELINES))
def test_nodata_hole_gives_finite_output(name, enmap_pair):
    hr, _, _, srf = enmap_pair
    holed = hr.copy()
    holed[:, 30:52, 10:27] = np.nan  # a nodata hole, as read_raster returns it
    holed[:, :, -3:] = np.nan  # and a ragged edge
    lr, msi = simulate_pair(holed, 4, srf)  # the PSF spreads NaN over more LR pixels
    valid = np.isfinite(holed).all(axis=0)
    out = BASELINES[name](lr, msi, 4, srf=srf, valid=valid)
    assert out.shape == hr.shape and np.isfinite(out).all()
    out_nomask = BASELINES[name](lr, msi, 4, srf=srf)  # NaNs alone are recognised as nodata
    assert np.isfinite(out_nomask).all()
    # away from the hole the result is still a sensible reconstruction
    assert metrics.psnr(hr[:, 60:, :40], out[:, 60:, :40]) > 20


def test_prepare_inputs_masks():
    lr = np.ones((2, 4, 5), np.float32)
    msi = np.ones((3, 17, 21), np.float32)  # larger than 4 x (4, 5): cropped
    valid = np.ones((17, 21), bool)
    valid[5, 6] = False
    x = prepare_inputs(lr, msi, 4, valid)
    assert x.msi.shape == (3, 16, 20) and x.lr_valid.sum() == 19 and not x.lr_valid[1, 1]
    with pytest.raises(ValueError):
        prepare_inputs(lr, msi[:, :15], 4)


# ---------------------------------------------------------------------- which layer has no valid pixel


def test_no_valid_pixel_names_the_empty_layer(enmap_pair):
    """Real EnMAP arrays: the LR-HSI all nodata, the HR-MSI all nodata, a dead band, or no valid overlap."""
    _, lr, msi, _ = enmap_pair
    nan_lr, nan_msi = np.full_like(lr, np.nan), np.full_like(msi, np.nan)
    with pytest.raises(ValueError, match=r"^the LR-HSI is all nodata: no pixel has a value in every band$"):
        prepare_inputs(nan_lr, msi, 4)
    with pytest.raises(ValueError, match=r"^LR-HSI layer 'EnMAP L2A' is all nodata"):
        prepare_inputs(nan_lr, msi, 4, lr_name="EnMAP L2A")
    with pytest.raises(ValueError, match=r"^HR-MSI layer 'S2 10 m' is all nodata: no pixel has a value in every band$"):
        prepare_inputs(lr, nan_msi, 4, lr_name="EnMAP L2A", msi_name="S2 10 m")
    dead = lr.copy()
    dead[[2, 5]] = np.nan
    with pytest.raises(ValueError, match=rf"the LR-HSI is all nodata: .*; 2 of its {lr.shape[0]} bands have no value anywhere "
                                         r"\(band 3, 6\): leave them out"):
        prepare_inputs(dead, msi, 4)
    with pytest.raises(ValueError, match="the validity mask leaves no valid pixel of the HR-MSI"):
        prepare_inputs(lr, msi, 4, valid=np.zeros(msi.shape[1:], bool))
    west, east = lr.copy(), msi.copy()
    west[:, :, 8:] = np.nan  # LR data only west of LR column 8
    east[:, :, :32] = np.nan  # MSI data only east of it
    with pytest.raises(ValueError, match=r"^the LR-HSI and the HR-MSI do not overlap in valid pixels: no LR-HSI pixel with "
                                         r"data has its whole 4 x 4 block of HR-MSI pixels valid$"):
        prepare_inputs(west, east, 4)


@pytest.fixture(scope="module")
def geotiff_pair(tmp_path_factory, shared_data):
    """A real EnMAP pair as GeoTIFFs (the MSI starts one LR column east) and its arrays and metadata."""
    from core.raster_io import read_raster as read
    from export.testing import make_enmap_pair

    p = make_enmap_pair(tmp_path_factory.mktemp("gpair"), shared_data, bands=list(range(0, 224, 20)), scale=4, msi_bands=4)
    (lr, lm), (msi, mm) = read(p["lr"]), read(p["msi"])
    return p, lr, lm, msi, mm


@pytest.mark.parametrize("method", ["gsa", "bicubic", "mtf_glp_hs"])
@pytest.mark.parametrize("case", ["lr", "msi", "disjoint"])
def test_classical_files_name_the_layer_without_valid_pixels(geotiff_pair, tmp_path, method, case):
    """Whole-area (GSA) and window-by-window (bicubic, MTF-GLP-HS) fusion of GeoTIFFs; no file is left."""
    from core.jobs.classical import fuse_classical_files
    from core.raster_io import write_raster

    p, lr, lm, msi, mm = geotiff_pair
    lr, msi = lr.copy(), msi.copy()
    if case == "lr":
        lr[:, :, 1:] = np.nan  # only the LR column outside the common area has data
    elif case == "msi":
        msi[:] = np.nan
    else:
        lr[:, :, 13:] = np.nan  # LR data in LR columns 0..12, i.e. MSI columns 0..47 of the common area
        msi[:, :, :48] = np.nan
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_raster(inputs / "lr.tif", lr, lm)
    write_raster(inputs / "msi.tif", msi, mm)
    match = {"lr": r"^LR-HSI layer 'EnMAP L2A' is all nodata.* in the area it shares with HR-MSI layer 'S2 10 m'",
             "msi": r"^HR-MSI layer 'S2 10 m' is all nodata.* (in the area it shares with LR-HSI layer 'EnMAP L2A'|"
                    r"\(in the area the two layers share\))$",
             "disjoint": r"^LR-HSI layer 'EnMAP L2A' and HR-MSI layer 'S2 10 m' do not overlap in valid pixels"}[case]
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match=match):
        fuse_classical_files(method, inputs / "lr.tif", inputs / "msi.tif", out / "f.tif", lr_name="EnMAP L2A",
                             msi_name="S2 10 m")
    assert list(out.iterdir()) == []
