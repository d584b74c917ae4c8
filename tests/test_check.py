"""The check against classical methods (``core.referee``, ``export.check``): scored on the pair, the best written."""

from __future__ import annotations

import math

import numpy as np
import pytest
from osgeo import gdal

from core import metrics
from core.normalization import BandNormalization
from core.raster_io import read_raster
from core.referee import MIN_REDUCED_LR, Score, choose, score_candidates
from export.check import CLASSICAL
from export.superresolve import superresolve
from export.testing import contract_model, make_enmap_pair, make_metadata

BANDS = list(range(0, 224, 10)) + [130]
C, M = len(BANDS), 4


def test_choose_keeps_the_incumbent_unless_beaten_on_psnr_and_sam():
    def sc(name, psnr, sam):
        return Score(name, psnr, sam, 40.0, 40.0)

    assert choose([sc("model", 40.0, 3.0), sc("glp", 41.0, 3.2), sc("cnmf", 39.0, 2.5)]) == "model"  # no one better on both
    assert choose([sc("model", 40.0, 3.0), sc("glp", 41.0, 2.9), sc("cnmf", 42.0, 2.95)]) == "cnmf"  # best PSNR of those
    assert choose([sc("model", 40.0, 3.0), sc("glp", 40.04, 2.0)]) == "model"  # within TIE_DB: not better
    failed = Score("model", error="RuntimeError: broke")
    assert choose([failed, sc("glp", 30.0, 5.0), sc("gsa", 31.0, 6.0)]) == "gsa"


def test_score_candidates_ranks_a_real_fusion_above_bicubic(shared_data):
    from core.baselines import BASELINES
    from core.sensor import degrade_spatial, gaussian_psf

    hr, _ = read_raster(shared_data / "enmap_potsdam_southeast.tif", bands=BANDS)
    hr = np.nan_to_num(hr[:, :96, :64])
    s, psf = 2, gaussian_psf(2)
    lr = degrade_spatial(hr, s, psf)
    srf = np.zeros((M, C))  # M broad bands, each the mean of a quarter of the HSI bands
    for k in range(M):
        srf[k, k * (C // M):(k + 1) * (C // M)] = 1.0 / (C // M)
    msi = np.tensordot(srf, hr, axes=(1, 0)).astype(np.float32)
    fusers = {name: (lambda n: lambda a, b: BASELINES[n](a, b, s, srf=srf, psf=psf))(name) for name in ("bicubic", "mtf_glp_hs")}
    v = score_candidates(lr, msi, s, psf, srf, fusers, crop=(0, 0))
    glp, bic = v.score("mtf_glp_hs"), v.score("bicubic")
    assert glp.wald_psnr > bic.wald_psnr + 1.0 and glp.wald_sam < bic.wald_sam
    assert v.winner == "mtf_glp_hs"  # it beats the incumbent (the first fuser, bicubic) on both
    assert all(math.isfinite(x) for x in (glp.spatial_psnr, glp.spectral_psnr))
    assert any("<- chosen" in line and "mtf_glp_hs" in line for line in v.table())


@pytest.fixture(scope="module")
def pair2(tmp_path_factory, shared_data):
    """An EnMAP pair at scale 2 (32 x 31 LR px: big enough for the check) and a model that fuses it badly."""
    root = tmp_path_factory.mktemp("check")
    p = make_enmap_pair(root, shared_data, bands=BANDS, scale=2, msi_bands=M, lr_nodata_pixel=None, msi_nodata_box=None)
    hn = BandNormalization.fit(np.nan_to_num(p["lr_array"], nan=0.0))
    mn = BandNormalization.fit(np.nan_to_num(p["msi_array"]))
    md = make_metadata(C, M, scale=2, hsi_normalization=hn, msi_normalization=mn, wavelengths_nm=p["meta"].wavelengths,
                       msi_band_names=[f"MSI {i + 1}" for i in range(M)])
    p["model"] = contract_model(root / "bad.onnx", md, k_msi=0.5)  # bicubic plus an MSI-mean offset: worse than any fusion
    return p


def _reference(p):
    off = p["drop_lr_cols"] * p["scale"]
    return p["hr"][:, :, off:]


def test_a_model_that_loses_on_the_pair_is_replaced_by_the_winner(pair2, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="hsr_diff.export")
    kw = dict(steps=2, seed=0)
    best = superresolve(pair2["lr"], pair2["msi"], pair2["model"], tmp_path / "best.tif", uncertainty_path=tmp_path / "std.tif",
                        samples=2, **kw)
    off = superresolve(pair2["lr"], pair2["msi"], pair2["model"], tmp_path / "off.tif", check="off", **kw)
    assert best.method in CLASSICAL and off.method == "model" and off.check is None
    assert best.check.winner == best.method and best.check.score(best.method).wald_sam < best.check.score("model").wald_sam
    assert any(best.method in n and "beats the model" in n for n in best.notes)
    assert any("Wald's protocol check" in r.message for r in caplog.records)
    ref = _reference(pair2)
    a, _ = read_raster(tmp_path / "best.tif")
    b, meta = read_raster(tmp_path / "off.tif")
    good = np.isfinite(ref).all(axis=(1, 2))
    assert metrics.psnr(ref[good], a[good], border=2) > metrics.psnr(ref[good], b[good], border=2) + 1.0  # truly better
    assert metrics.sam(ref[good], a[good], border=2) < metrics.sam(ref[good], b[good], border=2)
    assert a.shape == b.shape and np.array_equal(np.isnan(a), np.isnan(b))  # same grid, bands and nodata
    ds = gdal.Open(str(tmp_path / "best.tif"))
    assert ds.GetMetadataItem("hsr_diff_method") == best.method and "model" in ds.GetMetadataItem("hsr_diff_check")
    std, _ = read_raster(tmp_path / "std.tif")
    assert np.isnan(std).all()  # a classical method has no sampling spread


def test_report_writes_the_model_and_says_what_would_win(pair2, tmp_path):
    kw = dict(steps=2, seed=0)
    rep = superresolve(pair2["lr"], pair2["msi"], pair2["model"], tmp_path / "rep.tif", check="report", **kw)
    superresolve(pair2["lr"], pair2["msi"], pair2["model"], tmp_path / "off.tif", check="off", **kw)
    assert rep.method == "model" and rep.check.winner in CLASSICAL
    assert any("check=report" in n for n in rep.notes)
    assert np.array_equal(read_raster(tmp_path / "rep.tif")[0], read_raster(tmp_path / "off.tif")[0], equal_nan=True)
    with pytest.raises(ValueError, match="unknown check 'maybe'"):
        superresolve(pair2["lr"], pair2["msi"], pair2["model"], tmp_path / "x.tif", check="maybe")
    assert not (tmp_path / "x.tif").exists()


def test_a_pair_too_small_for_the_check_keeps_the_model_with_a_warning(tmp_path, shared_data):
    p = make_enmap_pair(tmp_path, shared_data, bands=BANDS, scale=4, msi_bands=M)  # 16 x 31 LR px < 8 x 4
    hn = BandNormalization.fit(np.nan_to_num(p["lr_array"], nan=0.0))
    mn = BandNormalization.fit(np.nan_to_num(p["msi_array"]))
    md = make_metadata(C, M, scale=4, hsi_normalization=hn, msi_normalization=mn, wavelengths_nm=p["meta"].wavelengths,
                       msi_band_names=[f"MSI {i + 1}" for i in range(M)])
    model = contract_model(tmp_path / "m.onnx", md)
    res = superresolve(p["lr"], p["msi"], model, tmp_path / "out.tif", steps=1)
    assert res.method == "model" and res.check is None
    assert any("check against classical methods was skipped" in n and f"{MIN_REDUCED_LR * 4} x {MIN_REDUCED_LR * 4}" in n
               for n in res.notes)


def test_batch_writes_the_classical_winner_like_a_single_run(pair2, tmp_path):
    distributed = pytest.importorskip("distributed")
    from export.batch import Pair, run_batch

    ref = superresolve(pair2["lr"], pair2["msi"], pair2["model"], tmp_path / "ref.tif", steps=2, threads=1)
    lines = []
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        for units in ("tiles", "scene"):
            out = tmp_path / f"{units}.tif"
            res = run_batch([Pair(str(pair2["lr"]), str(pair2["msi"]), str(out))], model=pair2["model"], scheduler=client,
                            steps=2, units=units, log=lines.append)
            assert res.ok, res.summary()
            assert np.array_equal(read_raster(out)[0], read_raster(tmp_path / "ref.tif")[0], equal_nan=True)
    assert ref.method in CLASSICAL and any(f"with {ref.method} (chosen by the check" in m for m in lines)


def test_a_small_pair_is_checked_on_a_small_crop_and_a_bad_model_still_replaced(tmp_path, shared_data):
    p = make_enmap_pair(tmp_path, shared_data, bands=BANDS, scale=3, msi_bands=M, lr_nodata_pixel=None, msi_nodata_box=None)
    hn = BandNormalization.fit(np.nan_to_num(p["lr_array"], nan=0.0))
    mn = BandNormalization.fit(np.nan_to_num(p["msi_array"]))
    md = make_metadata(C, M, scale=3, hsi_normalization=hn, msi_normalization=mn, wavelengths_nm=p["meta"].wavelengths,
                       msi_band_names=[f"MSI {i + 1}" for i in range(M)])
    bad = contract_model(tmp_path / "bad.onnx", md, k_msi=0.5)
    res = superresolve(p["lr"], p["msi"], bad, tmp_path / "out.tif", steps=1)  # 42 x 20 LR px: under 8 x 3 a side
    assert any("too small for Wald's protocol" in n and "checked on a" in n for n in res.notes)
    assert res.method in CLASSICAL and res.check.crop[2] >= 4 * 3


def test_the_degraded_pair_gets_back_the_noise_of_the_lr_hsi(shared_data):
    """Wald's degradation averages the LR-HSI's noise away (to about a sixth at x2 with a sigma-0.85 PSF); the
    check adds it back, so the degraded LR-HSI is as noisy as the pair's, and a denoising method is judged on a
    pair like the user's."""
    from core.referee import _lost_noise
    from core.sensor import degrade_spatial, gaussian_psf
    from core.sensor.noise import band_noise_std

    hr, _ = read_raster(shared_data / "enmap_potsdam_southeast.tif")
    lr = hr[:, :128, :64].astype(np.float64)
    lr = lr[np.isfinite(lr).all(axis=(1, 2)) & (np.ptp(lr, axis=(1, 2)) > 0)]  # every band with data, so neighbours are close
    sd = lr.mean(axis=(1, 2)) / 10 ** (35 / 20)
    lr = (lr + np.random.default_rng(1).standard_normal(lr.shape) * sd[:, None, None]).astype(np.float32)
    s, psf = 2, gaussian_psf(2)
    low = degrade_spatial(lr, s, psf)
    bands = np.ones(lr.shape[0], bool)
    restored = low + _lost_noise(lr, bands, s, psf, low.shape)
    assert np.median(band_noise_std(low) / sd) < 0.6
    assert 0.8 < np.median(band_noise_std(restored) / sd) < 1.3
    assert np.array_equal(restored, low + _lost_noise(lr, bands, s, psf, low.shape))  # the same draw every run


def test_with_the_models_own_degradation_the_check_still_sees_a_misregistered_pair(tmp_path, shared_data):
    """``degradation=model`` on a pair 0.75 / -0.5 HR px off: the model (on the MTF-GLP-HS base, conditioned on its
    nominal centred PSF) loses several dB; the check degrades the pair by the pair's estimated PSF and hands the
    classical methods that estimate, so it writes a classical result, which is far closer to the reference."""
    from export.testing import make_shifted_pair

    p = make_shifted_pair(tmp_path, shared_data, 4)
    lr, _ = read_raster(p["lr"])
    msi, _ = read_raster(p["msi"])
    md = make_metadata(lr.shape[0], msi.shape[0], scale=4, base="mtf_glp_hs", psf_sigma=4 / 2.3548,
                       hsi_normalization=BandNormalization.fit(lr), msi_normalization=BandNormalization.fit(msi))
    model = contract_model(tmp_path / "glp.onnx", md, k_noisy=0.0, k_msi=0.0)
    score = {}
    for check in ("off", "best"):
        res = superresolve(p["lr"], p["msi"], model, tmp_path / f"{check}.tif", steps=1, threads=1, degradation="model",
                           check=check)
        out, _ = read_raster(res.out_path)
        score[check] = (metrics.psnr(p["hr"][p["good"]], out[p["good"]]), res.method)
        assert gdal.Open(res.out_path).GetMetadataItem("hsr_diff_degradation") == "model"
    assert score["off"][1] == "model" and score["best"][1] in CLASSICAL, score
    assert score["best"][0] > score["off"][0] + 3.0, score
