"""File-level jobs on real data: simulation (streamed), sensor estimation, quality assessment."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from core.jobs.assess import assess_files
from core.jobs.estimate import estimate_files
from core.jobs.simulate import simulate_files
from core.progress import Cancelled, Progress
from core.raster_io import read_raster, write_raster
from core.sensor import default_msi_bands, simulate_pair, spectral_response

ENMAP = "enmap_potsdam_southeast.tif"


@pytest.fixture(scope="module")
def simulated(shared_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    res = simulate_files(shared_data / ENMAP, d / "lr.tif", d / "msi.tif", "sentinel2", 4, sigma=1.5, block=5)
    return d, res


def test_streamed_simulation_equals_whole_array(shared_data, simulated):
    d, res = simulated
    hr, hm = read_raster(shared_data / ENMAP)
    srf = spectral_response("sentinel2", hm.wavelengths, hm.fwhm, bands=list(default_msi_bands("sentinel2")),
                            valid_bands=hm.good_bands)
    lr_ref, msi_ref = simulate_pair(np.nan_to_num(hr), 4, srf.matrix, psf=1.5)
    lr, lm = read_raster(d / "lr.tif")
    msi, mm = read_raster(d / "msi.tif")
    g = hm.good_bands
    np.testing.assert_allclose(lr[g], lr_ref[g], atol=1e-3)  # reflectance x 1e4
    np.testing.assert_allclose(msi, msi_ref, atol=1e-3)
    assert np.isnan(lr[~g]).all()
    # Georeference: LR pixels 4x larger from the same origin; MSI keeps the HR grid; wavelengths kept.
    assert lm.geotransform == (hm.geotransform[0], 120.0, 0.0, hm.geotransform[3], 0.0, -120.0)
    assert mm.geotransform == hm.geotransform and mm.crs_wkt == hm.crs_wkt
    np.testing.assert_allclose(lm.wavelengths, hm.wavelengths, atol=1e-3)
    assert mm.band_names == list(res.msi_band_names) == ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
    assert 480 < mm.wavelengths[0] < 500 and 2150 < mm.wavelengths[-1] < 2250


def test_simulation_propagates_nodata_and_is_seeded(shared_data, tmp_path):
    hr, hm = read_raster(shared_data / ENMAP)
    hr[:, 40:48, 20:28] = np.nan
    write_raster(tmp_path / "hole.tif", hr, hm)
    a = simulate_files(tmp_path / "hole.tif", tmp_path / "lr1.tif", tmp_path / "m1.tif", "sentinel2", 4, snr_db=30, seed=3)
    simulate_files(tmp_path / "hole.tif", tmp_path / "lr2.tif", tmp_path / "m2.tif", "sentinel2", 4, snr_db=30, seed=3)
    lr1, _ = read_raster(a.lr_path)
    lr2, _ = read_raster(tmp_path / "lr2.tif")
    np.testing.assert_array_equal(lr1, lr2)
    m1, mm = read_raster(tmp_path / "m1.tif")
    assert np.isnan(m1[:, 40:48, 20:28]).all() and np.isfinite(m1[:, :40]).all()
    assert np.isnan(lr1[10, 10:12, 5:7]).all() and np.isfinite(lr1[10, :9]).all()


def test_simulation_cancel_leaves_nothing(shared_data, tmp_path):
    calls = []
    prog = Progress(lambda f, m: calls.append(f), cancel=lambda: len(calls) >= 2)
    with pytest.raises(Cancelled):
        simulate_files(shared_data / ENMAP, tmp_path / "lr.tif", tmp_path / "msi.tif", "sentinel2", 4, block=4, progress=prog)
    assert list(tmp_path.iterdir()) == []


def test_simulation_refuses_uncovered_band(shared_data, tmp_path):
    with pytest.raises(ValueError, match="B10 is not covered"):
        simulate_files(shared_data / ENMAP, tmp_path / "l.tif", tmp_path / "m.tif", "sentinel2", 4, msi_bands=["B02", "B10"])


def test_estimate_recovers_psf_and_response(simulated, shared_data, tmp_path):
    d, _ = simulated
    est = estimate_files(d / "lr.tif", d / "msi.tif", sensor_hint="sentinel2", srf_csv_out=tmp_path / "srf.csv")
    assert est.scale == 4
    assert est.sigma == pytest.approx(1.5, abs=0.1)
    assert np.all(est.srf_residual < 0.05)
    np.testing.assert_allclose(est.gain, 1.0, atol=0.05)
    with open(tmp_path / "srf.csv") as f:
        header = next(csv.reader(f))
    assert header[0] == "wavelength_nm" and header[1:] == est.msi_band_names


def test_assess_files_tables(shared_data, simulated, tmp_path):
    d, _ = simulated
    hr, hm = read_raster(shared_data / ENMAP)
    noisy = hr + np.random.default_rng(0).normal(0, 50, hr.shape).astype(np.float32)
    write_raster(tmp_path / "noisy.tif", noisy, hm)
    a = assess_files(shared_data / ENMAP, tmp_path / "noisy.tif", 4, csv_out=tmp_path / "q.csv", html_out=tmp_path / "q.html")
    assert a.notes and "skipped" in a.notes[0]  # the water-vapour bands
    assert 20 < a.metrics["psnr"] < 60 and a.metrics["sam"] > 0
    assert a.band_psnr.shape == (int(hm.good_bands.sum()),)
    perfect = assess_files(shared_data / ENMAP, shared_data / ENMAP, 4)
    assert perfect.metrics["sam"] == pytest.approx(0, abs=1e-6) and perfect.metrics["ergas"] == pytest.approx(0, abs=1e-9)
    text = (tmp_path / "q.html").read_text()
    assert "<svg" in text and "SAM (degrees)" in text
    rows = list(csv.reader(open(tmp_path / "q.csv")))
    assert rows[0] == ["metric", "value"] and {r[0] for r in rows[1:9]} >= {"psnr", "ssim", "sam", "ergas"}
    with pytest.raises(ValueError, match="has 224 bands but result layer 'msi.tif' has 10"):
        assess_files(shared_data / ENMAP, d / "msi.tif", 4)


@pytest.fixture(scope="module")
def nodata_pair(tmp_path_factory, shared_data):
    from export.testing import make_enmap_pair

    return make_enmap_pair(tmp_path_factory.mktemp("cpair"), shared_data, bands=list(range(0, 224, 16)), scale=4, msi_bands=4)


@pytest.mark.parametrize("method", ["bicubic", "mtf_glp_hs"])
def test_streamed_classical_fusion_equals_the_whole_image(nodata_pair, tmp_path, monkeypatch, method):
    """Windows of 32 px (the fit on every block) give the in-memory result, except within the filters' reach of nodata."""
    from core.baselines import BASELINES
    from core.jobs import classical
    from core.jobs.classical import fuse_classical_files

    monkeypatch.setattr(classical, "WINDOW", 32)
    p = nodata_pair
    res = fuse_classical_files(method, p["lr"], p["msi"], tmp_path / "f.tif", degradation="model")
    out, _ = read_raster(res.path)
    lr, _ = read_raster(p["lr"])
    msi, _ = read_raster(p["msi"])
    c0 = lr.shape[2] - msi.shape[2] // 4
    lr = lr[:, :msi.shape[1] // 4, c0:]
    whole = BASELINES[method](lr, msi, 4)
    bad = ~np.isfinite(msi).all(axis=0) | np.repeat(np.repeat(~np.isfinite(lr).all(axis=0), 4, 0), 4, 1)
    assert np.isnan(out[:, bad]).all()
    near = np.zeros(bad.shape, bool)
    for r, c in zip(*np.nonzero(bad), strict=True):
        near[max(r - 24, 0):r + 24, max(c - 24, 0):c + 24] = True
    np.testing.assert_allclose(out[:, ~near], whole[:, ~near], rtol=0, atol=1e-5 * np.abs(whole).max())


def test_global_classical_method_is_refused_up_front_when_it_cannot_fit(nodata_pair, tmp_path, monkeypatch):
    from core.jobs import classical
    from core.jobs.classical import fuse_classical_files

    monkeypatch.setattr(classical, "available_memory", lambda: 1_000_000)
    with pytest.raises(ValueError, match=r"GSA holds the whole common area in memory: about 0\.\d GB .* 0\.0 GB are available"):
        fuse_classical_files("gsa", nodata_pair["lr"], nodata_pair["msi"], tmp_path / "g.tif")
    assert list(tmp_path.iterdir()) == []
    fuse_classical_files("mtf_glp_hs", nodata_pair["lr"], nodata_pair["msi"], tmp_path / "g.tif")  # streamed: runs


def test_estimated_degradation_repairs_a_misregistered_pair(shared_data, tmp_path):
    """An LR-HSI whose footprints sit (0.75, -0.5) HR px off: MTF-GLP-HS with the estimated PSF gains several dB."""
    from core.jobs.classical import fuse_classical_files
    from core.metrics import psnr
    from export.testing import make_shifted_pair

    p = make_shifted_pair(tmp_path, shared_data, 4, (0.75, -0.5))
    lr_p, msi_p, hr, good = p["lr"], p["msi"], p["hr"], p["good"]
    scores, notes = {}, {}
    for deg in ("model", "estimate"):
        res = fuse_classical_files("mtf_glp_hs", lr_p, msi_p, tmp_path / f"{deg}.tif", degradation=deg)
        out, _ = read_raster(res.path)
        scores[deg], notes[deg] = psnr(hr[good], out[good]), " ".join(res.notes)
    assert scores["estimate"] > scores["model"] + 3, scores
    import re

    dy, dx = (float(v) for v in re.search(r"offset dy ([-+.\d]+) dx ([-+.\d]+) HR px", notes["estimate"]).groups())
    assert abs(dy - 0.75) < 0.15 and abs(dx + 0.5) < 0.15 and notes["model"] == ""  # a 32 x 16 LR px crop, 4 MSI bands
