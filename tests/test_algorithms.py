"""Every hsrdiff algorithm through the real Processing framework (processing.run) on real data."""

from __future__ import annotations

import numpy as np
import pytest
from qgis.core import QgsProcessingException

from core.metrics import psnr
from core.raster_io import read_meta, read_raster

ENMAP = "enmap_potsdam_southeast.tif"


def run(alg: str, params: dict) -> dict:
    import processing

    return processing.run(f"hsrdiff:{alg}", params)


@pytest.fixture(scope="module")
def simulated(qgis_app, shared_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("alg")
    out = run("simulate", {"HR_HSI": str(shared_data / ENMAP), "SENSOR": 0, "SCALE": 4, "SIGMA": 0,
                           "LR_HSI": str(d / "lr.tif"), "HR_MSI": str(d / "msi.tif")})
    return d, out


def test_provider_lists_algorithms(qgis_app):
    from qgis.core import QgsApplication

    provider = QgsApplication.processingRegistry().providerById("hsrdiff")
    names = {a.name() for a in provider.algorithms()}
    assert {"simulate", "estimatesensor", "assess", "checkdependencies"} <= names
    for alg in provider.algorithms():
        assert alg.shortHelpString() and alg.group() and not alg.icon().isNull()


def test_simulate(simulated, shared_data):
    d, out = simulated
    lr, msi = read_meta(out["LR_HSI"]), read_meta(out["HR_MSI"])
    hr = read_meta(shared_data / ENMAP)
    assert lr.shape == (224, 32, 16) and msi.shape == (10, 128, 64)
    assert lr.pixel_size == (120.0, 120.0) and msi.geotransform == hr.geotransform
    np.testing.assert_allclose(lr.wavelengths, hr.wavelengths, atol=1e-3)


def test_simulate_to_temporary_output(qgis_app, shared_data):
    out = run("simulate", {"HR_HSI": str(shared_data / ENMAP), "SENSOR": 2, "MSI_BANDS": "", "SCALE": 8,
                           "LR_HSI": "TEMPORARY_OUTPUT", "HR_MSI": "TEMPORARY_OUTPUT"})
    assert read_meta(out["HR_MSI"]).band_names == ["blue", "green", "red"]


def test_estimate(simulated):
    d, out = simulated
    est = run("estimatesensor", {"LR_HSI": out["LR_HSI"], "HR_MSI": out["HR_MSI"], "SENSOR": 0,
                                 "SRF_OUT": str(d / "srf.csv")})
    assert est["SCALE"] == 4 and est["SIGMA"] == pytest.approx(4 / 2.3548, abs=0.15) and est["PSF_SHAPE"] == "gaussian"
    assert "Gaussian PSF sigma" in est["REPORT"]
    assert (d / "srf.csv").read_text().startswith("wavelength_nm,B02,B03")


def test_assess(simulated, shared_data):
    d, out = simulated
    res = run("assess", {"REFERENCE": str(shared_data / ENMAP), "RESULT": str(shared_data / ENMAP), "SCALE": 4,
                         "CSV": str(d / "q.csv"), "HTML": str(d / "q.html")})
    assert res["SAM"] == pytest.approx(0, abs=1e-6)
    assert np.isinf(res["PSNR"]) or res["PSNR"] > 100
    assert (d / "q.html").exists() and (d / "q.csv").exists()


def test_bad_inputs_name_the_layer(simulated, shared_data, tmp_path):
    d, out = simulated
    with pytest.raises(QgsProcessingException, match="B10 is not covered"):
        run("simulate", {"HR_HSI": str(shared_data / ENMAP), "SENSOR": 0, "MSI_BANDS": "B02,B10", "SCALE": 4,
                         "LR_HSI": str(tmp_path / "a.tif"), "HR_MSI": str(tmp_path / "b.tif")})
    with pytest.raises(QgsProcessingException, match="no wavelength metadata"):
        run("simulate", {"HR_HSI": str(shared_data / "hydice_dcmall.tif"), "SENSOR": 0, "SCALE": 4,
                         "LR_HSI": str(tmp_path / "a.tif"), "HR_MSI": str(tmp_path / "b.tif")})
    with pytest.raises(QgsProcessingException, match="has 224 bands but result layer 'msi.tif' has 10"):
        run("assess", {"REFERENCE": str(shared_data / ENMAP), "RESULT": out["HR_MSI"], "SCALE": 4,
                       "CSV": str(tmp_path / "q.csv")})
    assert not list(tmp_path.glob("*.tif"))


@pytest.mark.parametrize("method", [0, 1, 2, 3])
def test_classical_fusion_keeps_georeference(simulated, shared_data, method):
    d, out = simulated
    target = d / f"fused{method}.tif"
    res = run("classicalfusion", {"LR_HSI": out["LR_HSI"], "HR_MSI": out["HR_MSI"], "METHOD": method, "SENSOR": 0,
                                  "OUTPUT": str(target)})
    fused, fm = read_raster(res["OUTPUT"])
    ref, hm = read_raster(shared_data / ENMAP)
    assert fm.geotransform == hm.geotransform and fm.crs_wkt == hm.crs_wkt
    np.testing.assert_allclose(fm.wavelengths, hm.wavelengths, atol=1e-3)
    assert np.isnan(fused[~hm.good_bands]).all() and np.isfinite(fused[hm.good_bands]).all()

    g = hm.good_bands
    score = psnr(ref[g], fused[g])
    assert score > 20, score  # bicubic gives ~24 dB here, the fusion methods more


def test_classical_fusion_bad_pair(qgis_app, shared_data, simulated, tmp_path):
    d, out = simulated
    with pytest.raises(QgsProcessingException, match="pixel-size ratio 1.0000"):
        run("classicalfusion", {"LR_HSI": out["HR_MSI"], "HR_MSI": out["HR_MSI"], "METHOD": 1, "OUTPUT": str(tmp_path / "x.tif")})
    assert not (tmp_path / "x.tif").exists()
