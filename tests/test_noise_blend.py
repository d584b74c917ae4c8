"""On a noisy pair the result is the model's averaged with CNMF's (``core.ensemble``), in Super-resolve and its check."""

from __future__ import annotations

import re

import numpy as np
import pytest
from osgeo import gdal

from core.ensemble import blend, model_weight
from core.metrics import psnr
from core.normalization import BandNormalization
from core.progress import Cancelled
from core.raster_io import read_raster, write_raster
from export.check import blend_weight
from export.superresolve import superresolve
from export.testing import contract_model, make_metadata, make_shifted_pair

S = 4
RUN = dict(steps=3, sampler="ancestral", seed=3, threads=1)


def test_the_models_weight_rises_with_the_snr_and_is_one_on_a_clean_pair():
    snrs = (10.0, 26.0, 30.0, 35.0, 40.0, 45.0, 47.9)
    w = [model_weight(x, 30.0) for x in snrs]
    assert all(a < b for a, b in zip(w[1:-1], w[2:], strict=True)) and w[0] == w[1] == pytest.approx(0.3)
    assert 0.35 < w[2] < 0.45 and w[-1] < 0.91
    assert model_weight(48.0, 30.0) == model_weight(60.0, 30.0) == model_weight(float("nan"), 30.0) == 1.0
    assert model_weight(35.0, 36.0) == model_weight(35.0, None) == 1.0  # a clean (or unreadable) HR-MSI: the model alone


def test_blend_keeps_the_models_value_where_the_partner_has_none():
    model = np.array([[[1.0, 2.0, np.nan]]], np.float32)
    partner = np.array([[[3.0, np.nan, 5.0]]], np.float32)
    out = blend(model, partner, 0.25)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0, :2], [2.5, 2.0])
    assert np.isnan(out[0, 0, 2])
    with pytest.raises(ValueError, match="differ in shape"):
        blend(model, partner[:, :, :2], 0.5)


def test_the_blend_is_left_out_with_a_note_when_cnmf_would_not_fit_in_memory(monkeypatch):
    import export.check as check

    monkeypatch.setattr(check, "available_memory", lambda: 16 * 10 ** 9)
    w, notes, _ = blend_weight(224, 10 ** 5, 10 ** 5, 35.0, 30.0, "lr_big.tif", "msi.tif")
    assert w == 1.0 and len(notes) == 1 and "'lr_big.tif'" in notes[0] and "GB available" in notes[0]
    w, notes, _ = blend_weight(224, 64, 64, 35.0, 30.0, "lr.tif", "msi.tif")
    assert w == pytest.approx(model_weight(35.0, 30.0)) and f"{w:.2f} x the model's" in notes[0]
    assert blend_weight(224, 64, 64, None, 30.0) == (1.0, [], [])
    assert blend_weight(224, 64, 64, 50.0, 30.0) == (1.0, [], [])
    w, notes, info = blend_weight(224, 64, 64, 35.0, 40.0, "lr.tif", "msi.tif")
    assert w == 1.0 and notes == [] and "'msi.tif' does not read noisy (40.0 dB" in info[0]


def test_the_hr_msis_noise_reading_tells_a_noisy_msi_from_a_clean_one(shared_data):
    """msi_snr_db on a 10-band Sentinel-2 response of an EnMAP crop: clean above the gate, 35 dB of noise below it;
    an RGB MSI is not read."""
    from core.ensemble import MSI_NOISY_BELOW_DB, msi_snr_db
    from core.sensor import degrade_spectral, spectral_response
    from core.sensor.simulate import add_noise

    cube, meta = read_raster(shared_data / "enmap_potsdam_southeast.tif")
    hr = np.nan_to_num(cube[:, :64, :64])
    from core.sensor import default_msi_bands

    msi = degrade_spectral(hr, spectral_response("sentinel2", meta.wavelengths, meta.fwhm, bands=list(default_msi_bands("sentinel2")),
                                                 valid_bands=meta.good_bands))
    assert msi.shape[0] >= 10
    assert msi_snr_db(msi) > MSI_NOISY_BELOW_DB + 2
    assert msi_snr_db(add_noise(msi, 35.0, np.random.default_rng(0))) < MSI_NOISY_BELOW_DB - 1
    assert msi_snr_db(msi[:7]) is None


@pytest.fixture(scope="module")
def noisy(shared_data, tmp_path_factory):
    """A centred EnMAP pair with 32 dB of white noise on both images, and a model on the MTF-GLP-HS base whose
    output also follows its noisy input (so two samples differ)."""
    root = tmp_path_factory.mktemp("noise_blend")
    from core.sensor import default_msi_bands

    p = make_shifted_pair(root, shared_data, S, (0.0, 0.0), msi_bands=default_msi_bands("sentinel2"))
    lr, meta = read_raster(p["lr"])
    msi, mmeta = read_raster(p["msi"])
    rng = np.random.default_rng(0)

    def noise(a):
        sd = np.abs(a.mean(axis=(1, 2))) / 10 ** (32 / 20)
        return (a + rng.standard_normal(a.shape) * sd[:, None, None]).astype(np.float32)

    p["lr_noisy"] = write_raster(root / "lr_noisy.tif", noise(lr), meta)
    p["msi_noisy"] = write_raster(root / "msi_noisy.tif", noise(msi), mmeta)
    md = make_metadata(lr.shape[0], msi.shape[0], scale=S, base="mtf_glp_hs", psf_sigma=4 / 2.3548,
                       hsi_normalization=BandNormalization.fit(lr), msi_normalization=BandNormalization.fit(msi))
    p["model"] = contract_model(root / "glp.onnx", md, k_noisy=0.02, k_msi=0.0)
    return p


def test_a_noisy_pair_is_averaged_with_cnmf_everywhere_the_model_is_read(noisy, tmp_path):
    """Super-resolve on the noisy pair: the output's metadata gives the model's weight for the SNR it estimated; the
    uncertainty is the model's spread times that weight; the result is closer to the reference than the model's alone
    (``blend=False``), and so is the check's score of the model, which is the same average one scale down. The
    progress names CNMF's whole-area phase, and a clean pair is not averaged."""
    runs, said, seen = {}, {}, []
    for name, on in (("blend", True), ("alone", False)):
        res = superresolve(noisy["lr_noisy"], noisy["msi_noisy"], noisy["model"], tmp_path / f"{name}.tif", samples=2,
                           uncertainty_path=tmp_path / f"{name}_std.tif", check="report", blend=on,
                           progress=lambda f, m: seen.append(m), **RUN)
        ds = gdal.Open(res.out_path)
        said[name] = (ds.GetMetadataItem("hsr_diff_blend"), ds.GetMetadataItem("hsr_diff_lr_denoise"))
        runs[name] = (read_raster(res.out_path)[0], read_raster(res.uncertainty_path)[0], res)
    assert said["alone"][0] == "none"
    snr = float(re.match(r"LR-HSI SNR ([0-9.]+) dB", said["blend"][1]).group(1))
    w = float(re.match(r"([0-9.]+) x the model's result \+ ([0-9.]+) x CNMF's", said["blend"][0]).group(1))
    assert 29 < snr < 35 and w == pytest.approx(model_weight(snr, 30.0), abs=1e-3) and w < 0.8
    (out_b, std_b, res_b), (out_a, std_a, res_a) = runs["blend"], runs["alone"]
    assert np.nanmax(std_a) > 0
    np.testing.assert_allclose(std_b, w * std_a, rtol=2e-3, atol=1e-6)  # w as the metadata rounds it
    good = noisy["good"]
    ref = noisy["hr"][good]
    assert psnr(ref, out_b[good]) > psnr(ref, out_a[good]) + 0.5
    assert res_b.check.score("model").wald_psnr > res_a.check.score("model").wald_psnr
    assert any("x CNMF's (core.ensemble)" in n for n in res_b.notes)
    assert any(m.startswith("fusing the whole area with cnmf") for m in seen)
    for name, lr_p, msi_p in (("clean", noisy["lr"], noisy["msi"]), ("lr_only", noisy["lr_noisy"], noisy["msi"])):
        res = superresolve(lr_p, msi_p, noisy["model"], tmp_path / f"{name}.tif", check="off", **RUN)
        assert gdal.Open(res.out_path).GetMetadataItem("hsr_diff_blend") == "none", name


def test_a_cancel_while_cnmf_runs_leaves_no_output(noisy, tmp_path):
    state = {"cnmf": False}

    def progress(fraction, message):
        state["cnmf"] |= message.startswith("fusing the whole area with cnmf")

    with pytest.raises(Cancelled):
        superresolve(noisy["lr_noisy"], noisy["msi_noisy"], noisy["model"], tmp_path / "out.tif", check="off",
                     progress=progress, cancel=lambda: state["cnmf"], **RUN)
    assert state["cnmf"] and list(tmp_path.iterdir()) == []
