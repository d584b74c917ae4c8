"""Quality metrics against scikit-image and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from core import metrics
from core.raster_io import read_raster
from core.resample import upsample
from core.sensor import degrade_spatial


@pytest.fixture(scope="module")
def pair(shared_data):
    """A real CAVE crop and its bicubic reconstruction from 4x degradation (float64)."""
    cube, _ = read_raster(shared_data / "cave_balloons.tif")
    ref = cube[::3, 64:160, 80:176].astype(np.float64)
    est = upsample(degrade_spatial(ref, 4), 4).astype(np.float64)
    return ref, est


def test_psnr_matches_skimage(pair):
    ref, est = pair
    per_band = [peak_signal_noise_ratio(r, e, data_range=r.max()) for r, e in zip(ref, est, strict=True)]
    assert metrics.psnr(ref, est) == pytest.approx(np.mean(per_band), rel=1e-10)
    assert metrics.psnr_cube(ref, est) == pytest.approx(peak_signal_noise_ratio(ref, est, data_range=ref.max()), rel=1e-10)
    assert metrics.psnr(ref, est, data_range=2.0) == pytest.approx(
        np.mean([peak_signal_noise_ratio(r, e, data_range=2.0) for r, e in zip(ref, est, strict=True)]), rel=1e-10)


def test_ssim_matches_skimage(pair):
    ref, est = pair
    kw = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
    expected = np.mean([structural_similarity(r, e, data_range=r.max(), **kw) for r, e in zip(ref, est, strict=True)])
    assert metrics.ssim(ref, est) == pytest.approx(expected, abs=1e-7)
    assert metrics.ssim(ref.astype(np.float32), est.astype(np.float32)) == pytest.approx(expected, abs=1e-5)


def test_identical_images(pair):
    ref, _ = pair
    m = metrics.evaluate(ref, ref.copy(), scale=4)
    assert m["psnr"] == math.inf and m["psnr_cube"] == math.inf
    assert m["ssim"] == pytest.approx(1.0) and m["uiqi"] == pytest.approx(1.0) and m["cc"] == pytest.approx(1.0)
    assert m["sam"] == pytest.approx(0.0, abs=1e-5) and m["ergas"] == 0.0 and m["rmse"] == 0.0


def test_hand_computed_sam_and_ergas():
    # pixel 1: [1, 0] vs [1, 1] -> 45 deg; pixel 2: [0, 1] vs [0, 2] -> 0 deg; pixel 3: zero -> excluded
    ref = np.array([[[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]])
    est = np.array([[[1.0, 0.0, 0.0]], [[1.0, 2.0, 0.0]]])
    assert metrics.sam(ref, est) == pytest.approx(22.5)
    # ERGAS: band means 2 and 4, RMSEs 1 and 2 -> 100/4 * sqrt((1/4 + 4/16) / 2) = 12.5
    ref = np.array([[[2.0, 2.0]], [[4.0, 4.0]]])
    est = np.array([[[3.0, 1.0]], [[6.0, 2.0]]])
    assert metrics.ergas(ref, est, scale=4) == pytest.approx(12.5)
    assert metrics.rmse(ref, est) == pytest.approx(math.sqrt((1 + 1 + 4 + 4) / 4))


def test_constant_offset(pair):
    ref, _ = pair
    c = 0.05
    est = ref + c
    assert metrics.rmse(ref, est) == pytest.approx(c)
    assert metrics.cc(ref, est) == pytest.approx(1.0)
    peaks = ref.reshape(ref.shape[0], -1).max(axis=1)
    assert metrics.psnr(ref, est) == pytest.approx(np.mean(10 * np.log10(peaks**2 / c**2)))
    mu = ref.reshape(ref.shape[0], -1).mean(axis=1)
    assert metrics.ergas(ref, est, 4) == pytest.approx(25 * math.sqrt(np.mean(c**2 / mu**2)))
    assert metrics.sam(ref, est) > 0


def test_spectral_rotation_changes_sam_not_norms(pair):
    ref2 = pair[0][:2]  # two bands: every spectrum lies in the rotation plane
    theta = math.radians(10.0)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    est = np.einsum("ij,jrc->irc", rot, ref2)
    np.testing.assert_allclose(np.linalg.norm(est, axis=0), np.linalg.norm(ref2, axis=0))
    assert metrics.sam(ref2, est) == pytest.approx(10.0, abs=1e-6)
    assert metrics.rmse(ref2, est) > 0


def test_border_and_valid_mask(pair):
    ref, est = pair
    bad = est.copy()
    bad[:, :10, :] = np.nan  # nodata rows
    bad[:, 40:50, 30:45] = 1e6  # garbage, masked out below
    valid = np.ones(ref.shape[1:], bool)
    valid[40:50, 30:45] = False
    sub = (slice(None), slice(10, None), slice(None))
    for name in ("psnr", "sam", "rmse", "cc"):
        got = getattr(metrics, name)(ref, bad, valid=valid)
        mask = valid[10:]
        want = getattr(metrics, name)(ref[sub][:, mask][:, :, None], est[sub][:, mask][:, :, None])
        assert got == pytest.approx(want, rel=1e-10), name
    assert metrics.psnr(ref, est, border=4) == pytest.approx(metrics.psnr(ref[:, 4:-4, 4:-4], est[:, 4:-4, 4:-4]))
    assert np.isfinite(metrics.ssim(ref, bad, valid=valid)) and np.isfinite(metrics.uiqi(ref, bad, valid=valid))


def test_uiqi_single_window_is_the_global_q():
    rng = np.random.default_rng(1)
    x = rng.random((1, 32, 32))
    y = 0.7 * x + 0.2 * rng.random((1, 32, 32))
    a, b = x.ravel(), y.ravel()
    cov = np.mean((a - a.mean()) * (b - b.mean()))
    q = 4 * cov * a.mean() * b.mean() / ((a.var() + b.var()) * (a.mean() ** 2 + b.mean() ** 2))
    assert metrics.uiqi(x, y) == pytest.approx(q, rel=1e-8)


def test_evaluate_keys(pair):
    ref, est = pair
    m = metrics.evaluate(ref, est, scale=4, border=4)
    assert set(m) == set(metrics.METRICS)
    assert all(np.isfinite(v) for v in m.values())
    assert 20 < m["psnr"] < 60 and 0 < m["ssim"] < 1 and m["sam"] > 0


def test_paired_block_scores_reproduce_the_metrics_on_every_tile():
    """bench/experiments/paired_blocks.py bootstraps tiles from sufficient statistics; all tiles once = the metrics."""
    from bench.experiments.paired_blocks import scores, tile_sums

    rng = np.random.default_rng(3)
    ref = rng.uniform(0.1, 1.0, (5, 50, 40))
    est = ref + rng.normal(0, 0.02, ref.shape)
    ref[:, 0, 0] = 0.0  # a zero spectrum: left out of SAM, as metrics.sam does
    t = tile_sums(ref, est, 16)  # 50 x 40 px: 3 x 2 tiles that cover every pixel
    assert t["sse"].shape == (6, 5) and t["n"].sum() == 50 * 40 and t["n_angle"].sum() == 50 * 40 - 1
    peaks = ref.reshape(5, -1).max(1)
    psnr, sam, ergas = scores(t, np.arange(6), peaks, 4)
    assert psnr == pytest.approx(metrics.psnr(ref, est), abs=1e-9)
    assert sam == pytest.approx(metrics.sam(ref, est), abs=1e-9)
    assert ergas == pytest.approx(metrics.ergas(ref, est, 4), abs=1e-12)
    # a resample that repeats one tile scores that tile alone
    one = scores(t, np.array([2, 2, 2]), peaks, 4)
    assert one == pytest.approx(scores(t, np.array([2]), peaks, 4))
    assert one[0] != pytest.approx(psnr)
