"""No-reference quality (consistency with the pair, QNR): the metrics, the job on the real Houston pair, Processing."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from core import metrics
from core.jobs.assess import assess_noref_files
from core.jobs.classical import fuse_classical_files
from core.jobs.simulate import simulate_files
from core.raster_io import Window, read_meta, read_raster, write_raster
from core.resample import upsample
from core.sensor import degrade_spatial, gaussian_psf

SCALE = 4
HOUSTON_LR = (56, 56)  # LR row, col of the 32 x 32 crop: its RGB holds a corner of the black no-data patch
METHODS = ("bicubic", "gsa", "mtf_glp_hs")


# ---------------------------------------------------------------------------------------------- the metrics


@pytest.fixture(scope="module")
def cave(shared_data):
    """A real CAVE crop (the resolution chart, 31 bands, 128 x 128) as the true HR image, its LR-HSI (Gaussian PSF)
    and a 3-band MSI of it at both scales (float64), and the response."""
    cube, _ = read_raster(shared_data / "cave_chart_toy.tif")
    hr = cube[:, :128, :128].astype(np.float64)
    srf = np.random.default_rng(0).random((3, hr.shape[0]))
    srf /= srf.sum(axis=1, keepdims=True)
    psf = gaussian_psf(SCALE)
    lr = degrade_spatial(hr, SCALE, psf).astype(np.float64)
    msi = np.tensordot(srf, hr, axes=1)
    return hr, lr, msi, degrade_spatial(msi, SCALE, psf).astype(np.float64), srf


def test_block_q_is_the_uiqi_of_each_block():
    rng = np.random.default_rng(1)
    x, y = rng.random((2, 16, 16)) + 1.0, rng.random((3, 16, 16)) + 0.5
    y[0] = 0.7 * x[0] + 0.1 * y[0]
    q = metrics.block_q(x, y, np.ones((16, 16), bool), 16)
    assert q.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert q[i, j] == pytest.approx(metrics.uiqi(x[i], y[j], block=16), abs=1e-12)
    # masked pixels are left out of the block's moments; blocks under half valid are skipped
    valid = np.ones((16, 16), bool)
    valid[:8, :8] = False
    a, b = x[0][valid], y[0][valid]
    cov = np.mean((a - a.mean()) * (b - b.mean()))
    expected = 4 * cov * a.mean() * b.mean() / ((a.var() + b.var()) * (a.mean() ** 2 + b.mean() ** 2))
    assert metrics.block_q(x[:1], y[:1], valid, 16)[0, 0] == pytest.approx(expected, rel=1e-12)
    assert metrics.block_q(x[:1], y[:1], valid, 8)[0, 0] == pytest.approx(
        np.mean([metrics.uiqi(x[0][r:r + 8, c:c + 8], y[0][r:r + 8, c:c + 8], block=8)
                 for r, c in ((0, 8), (8, 0), (8, 8))]), abs=1e-12)
    with pytest.raises(ValueError, match="no 16 x 16 block is at least 50% valid"):
        metrics.block_q(x, y, np.arange(256).reshape(16, 16) < 100, 16)


def test_qnr_is_one_for_a_perfectly_consistent_fusion(cave):
    hr, _, _, _, srf = cave
    lr = hr.reshape(hr.shape[0], 32, SCALE, 32, SCALE).mean(axis=(2, 4))
    fused = np.kron(lr, np.ones((1, SCALE, SCALE)))  # the box-PSF pair of a piecewise-constant scene: Q is scale-invariant
    msi, msi_lr = np.tensordot(srf, fused, axes=1), np.tensordot(srf, lr, axes=1)
    valid = np.ones((32, 32), bool)
    dl, dl_band = metrics.d_lambda(fused, lr, valid, SCALE)
    ds, ds_band, ds_msi = metrics.d_s(fused, lr, msi, msi_lr, valid, SCALE)
    assert dl == pytest.approx(0, abs=1e-9) and ds == pytest.approx(0, abs=1e-9)
    assert metrics.qnr(dl, ds) == pytest.approx(1.0, abs=1e-9)
    assert dl_band.shape == (31,) and ds_band.shape == (31,) and ds_msi.shape == (3,)


def test_d_s_sees_spatial_loss_and_d_lambda_spectral_distortion(cave):
    hr, lr, msi, msi_lr, _ = cave
    valid = np.ones(lr.shape[1:], bool)
    phase = np.arange(hr.shape[2])[None, None, :] / 64 + np.arange(hr.shape[0])[:, None, None] / hr.shape[0]
    cases = {
        "true": hr,
        "bicubic": upsample(lr.astype(np.float32), SCALE).astype(np.float64),
        "blurred": gaussian_filter(hr, (0, 2, 2)),
        "spectral": hr * (1 + 0.3 * np.sin(2 * np.pi * phase)),  # a gain that moves across the bands with position
        "biased": hr * np.linspace(0.8, 1.2, hr.shape[0])[:, None, None] + 0.05 * hr.mean(),
    }
    dl = {k: metrics.d_lambda(f, lr, valid, SCALE)[0] for k, f in cases.items()}
    ds = {k: metrics.d_s(f, lr, msi, msi_lr, valid, SCALE)[0] for k, f in cases.items()}
    q = {k: metrics.qnr(dl[k], ds[k]) for k in cases}
    assert dl["true"] < 0.03 and ds["true"] < 0.02 and q["true"] > 0.95
    for k in ("bicubic", "blurred"):  # detail lost: D_s grows several-fold, D_lambda does not
        assert ds[k] > 5 * ds["true"] and dl[k] < dl["true"]
        assert dl[k] / ds[k] < 0.1
    assert dl["spectral"] > 5 * dl["true"] and dl["spectral"] / ds["spectral"] > 1  # band relations changed
    assert dl["biased"] > dl["true"]
    assert max(q, key=q.get) == "true" and all(q[k] < q["true"] - 0.03 for k in cases if k != "true")
    assert metrics.spread_bands(224).size == metrics.QNR_BANDS and metrics.spread_bands(224)[[0, -1]].tolist() == [0, 223]


# ---------------------------------------------------------------------------------------------- the job


@pytest.fixture(scope="module")
def houston(shared_data, tmp_path_factory):
    """A 32 x 32 LR px crop of the real Houston pair (ratio 4), and its bicubic, GSA and MTF-GLP-HS fusions."""
    d = tmp_path_factory.mktemp("houston")
    r0, c0 = HOUSTON_LR
    lr, lm = read_raster(shared_data / "houston2018_hs.tif", Window(c0, r0, 32, 32))
    rgb, mm = read_raster(shared_data / "houston2018_rgb.tif", Window(c0 * SCALE, r0 * SCALE, 128, 128))
    for name, cube, meta in (("lr", lr, lm), ("rgb", rgb, mm)):
        gt = list(meta.geotransform)
        gt[0], gt[3] = gt[0] + c0 * SCALE, gt[3] - r0 * SCALE  # both grids are in RGB-pixel map units
        write_raster(d / f"{name}.tif", cube, meta, geotransform=tuple(gt))
    blank = (rgb == 0).all(axis=0)
    assert 100 < blank.sum() < 1000  # the crop holds a corner of the no-data patch
    for m in METHODS:
        fuse_classical_files(m, d / "lr.tif", d / "rgb.tif", d / f"{m}.tif")
    scores = {m: assess_noref_files(d / f"{m}.tif", d / "lr.tif", d / "rgb.tif", csv_out=d / f"{m}.csv",
                                    html_out=d / f"{m}.html") for m in METHODS}
    return d, scores, int(blank.sum())


def test_noref_on_houston_ranks_the_methods(houston):
    _, a, blank = houston
    for m in METHODS:
        s = a[m].metrics
        assert 0 < s["qnr"] <= 1 and 0 <= s["d_lambda"] < 1 and 0 <= s["d_s"] < 1
        assert s["qnr"] == pytest.approx((1 - s["d_lambda"]) * (1 - s["d_s"]))
        assert a[m].hr_pixels == 128 * 128 - blank  # the black patch is out; every fused pixel is finite
        assert 0 < a[m].lr_pixels < 30 * 30  # the PSF margin and the LR pixels touching the patch are out
        assert a[m].response.startswith("estimated from the pair")  # Houston's bands have no wavelengths
        assert a[m].psf_dx < -0.5 and a[m].psf_sigma > 2  # the pair's own PSF: offset and wider than nominal
    # the MSI-driven methods agree with the RGB far better than the upsampled LR-HSI does
    for m in ("gsa", "mtf_glp_hs"):
        assert a[m].metrics["spectral_rmse"] < 0.85 * a["bicubic"].metrics["spectral_rmse"]
        assert a[m].metrics["spectral_cc"] > a["bicubic"].metrics["spectral_cc"] + 0.05
        assert np.all(a[m].spectral_rmse < a["bicubic"].spectral_rmse)
    # MTF-GLP-HS injects through the pair's PSF, so it stays consistent with the LR-HSI; GSA does not
    assert a["mtf_glp_hs"].metrics["spatial_rmse"] < 0.75 * a["gsa"].metrics["spatial_rmse"]
    # upsampling keeps the band relations: the lowest D_lambda
    assert a["bicubic"].metrics["d_lambda"] < min(a[m].metrics["d_lambda"] for m in ("gsa", "mtf_glp_hs"))


def test_noref_tables(houston):
    d, a, _ = houston
    rows = list(csv.reader(open(d / "mtf_glp_hs.csv")))
    blanks = [i for i, r in enumerate(rows) if not r]
    assert len(blanks) == 2
    head = dict(rows[1:blanks[0]])
    assert {"qnr", "d_lambda", "d_s", "spectral_rmse", "spectral_psnr", "spectral_cc", "spatial_rmse", "spatial_psnr",
            "spatial_sam", "psf_sigma_hr_px", "psf_dy_hr_px", "psf_dx_hr_px", "scale", "response"} <= set(head)
    assert float(head["qnr"]) == pytest.approx(a["mtf_glp_hs"].metrics["qnr"], rel=1e-5) and head["scale"] == "4"
    bands = rows[blanks[0] + 1:blanks[1]]
    assert bands[0] == ["band", "wavelength_nm", "spatial_rmse", "spatial_psnr_db", "d_s", "d_lambda"]
    assert [int(r[0]) for r in bands[1:]] == list(range(1, 49))
    assert sum(bool(r[5]) for r in bands[1:]) == metrics.QNR_BANDS  # D_lambda on 32 bands spread over the 48
    assert all(float(r[2]) > 0 and float(r[4]) >= 0 for r in bands[1:])
    msi = rows[blanks[1] + 1:]
    assert msi[0] == ["msi_band", "name", "spectral_rmse", "spectral_psnr_db", "spectral_cc", "d_s"]
    assert [r[1] for r in msi[1:]] == ["red", "green", "blue"]
    text = (d / "mtf_glp_hs.html").read_text()
    assert text.count("<svg") == 3 and "D_lambda (spectral distortion)" in text and "estimated from the pair" in text


def test_noref_nan_nodata_equals_black_patch(houston):
    d, a, _ = houston
    rgb, mm = read_raster(d / "rgb.tif")
    rgb[:, (rgb == 0).all(axis=0)] = np.nan
    write_raster(d / "rgb_nan.tif", rgb, mm, nodata=-1.0)
    b = assess_noref_files(d / "gsa.tif", d / "lr.tif", d / "rgb_nan.tif")
    assert b.hr_pixels == a["gsa"].hr_pixels and b.lr_pixels == a["gsa"].lr_pixels
    for k, v in a["gsa"].metrics.items():
        assert b.metrics[k] == pytest.approx(v, rel=1e-9), k


def test_noref_bad_inputs_name_the_layer(houston, tmp_path):
    d, _, _ = houston
    with pytest.raises(ValueError, match="no wavelength metadata"):
        assess_noref_files(d / "gsa.tif", d / "lr.tif", d / "rgb.tif", sensor="nikon_d700", csv_out=tmp_path / "q.csv")
    with pytest.raises(ValueError, match="result layer 'lr.tif' has 4 x 4: they must share a pixel grid"):
        assess_noref_files(d / "lr.tif", d / "lr.tif", d / "rgb.tif", csv_out=tmp_path / "q.csv")
    with pytest.raises(ValueError, match="result layer 'rgb.tif' has 3 bands but LR-HSI layer 'lr.tif' has 48"):
        assess_noref_files(d / "rgb.tif", d / "lr.tif", d / "rgb.tif")
    assert not list(tmp_path.iterdir())


def test_noref_on_a_simulated_pair_with_a_named_response(shared_data, tmp_path):
    """The true image scores as exactly consistent through the sensor's response and the pair's PSF."""
    ref = shared_data / "enmap_potsdam_southeast.tif"
    simulate_files(ref, tmp_path / "lr.tif", tmp_path / "msi.tif", "sentinel2", SCALE)
    true = assess_noref_files(ref, tmp_path / "lr.tif", tmp_path / "msi.tif", sensor="sentinel2")
    assert true.response.startswith("sentinel2") and true.psf_sigma == pytest.approx(SCALE / 2.3548, rel=1e-3)
    assert true.metrics["spatial_rmse"] < 1e-3 and true.metrics["spectral_rmse"] < 1e-2
    assert math.isinf(true.metrics["spatial_psnr"]) or true.metrics["spatial_psnr"] > 100
    assert true.metrics["spectral_cc"] == pytest.approx(1.0, abs=1e-9) and true.metrics["qnr"] > 0.9
    assert "gains" in true.notes[-1] and "B02 1," in true.notes[-1]
    assert true.bands.size == int(read_meta(ref).good_bands.sum()) < 224  # not the water-vapour bands
    fuse_classical_files("bicubic", tmp_path / "lr.tif", tmp_path / "msi.tif", tmp_path / "bicubic.tif")
    up = assess_noref_files(tmp_path / "bicubic.tif", tmp_path / "lr.tif", tmp_path / "msi.tif", sensor="sentinel2")
    assert up.metrics["spectral_rmse"] > 100 * true.metrics["spectral_rmse"] and up.metrics["spatial_psnr"] < 40
    assert up.metrics["d_s"] > 2 * true.metrics["d_s"] and up.metrics["qnr"] < true.metrics["qnr"]


# ---------------------------------------------------------------------------------------------- Processing


def test_assess_algorithm_without_reference(qgis_app, houston, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    d, a, _ = houston
    res = processing.run("hsrdiff:assess", {"RESULT": str(d / "mtf_glp_hs.tif"), "LR_HSI": str(d / "lr.tif"),
                                            "HR_MSI": str(d / "rgb.tif"), "CSV": str(tmp_path / "q.csv"),
                                            "HTML": str(tmp_path / "q.html")})
    assert res["QNR"] == pytest.approx(a["mtf_glp_hs"].metrics["qnr"], rel=1e-9)
    assert res["D_LAMBDA"] == pytest.approx(a["mtf_glp_hs"].metrics["d_lambda"], rel=1e-9)
    assert res["D_S"] == pytest.approx(a["mtf_glp_hs"].metrics["d_s"], rel=1e-9)
    assert (tmp_path / "q.csv").read_text().startswith("metric,value") and (tmp_path / "q.html").exists()
    with pytest.raises(QgsProcessingException, match="Give a reference HR-HSI, or both the LR-HSI and the HR-MSI"):
        processing.run("hsrdiff:assess", {"RESULT": str(d / "gsa.tif"), "LR_HSI": str(d / "lr.tif"),
                                          "CSV": str(tmp_path / "r.csv")})
    with pytest.raises(QgsProcessingException, match="LR-HSI layer 'lr' has no wavelength metadata"):
        processing.run("hsrdiff:assess", {"RESULT": str(d / "gsa.tif"), "LR_HSI": str(d / "lr.tif"),
                                          "HR_MSI": str(d / "rgb.tif"), "SENSOR": 2, "CSV": str(tmp_path / "r.csv")})
    assert not (tmp_path / "r.csv").exists()
