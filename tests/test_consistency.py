"""Consistency with the LR-HSI: the adjoint of the spatial degradation and the noise-aware back-projection."""

from __future__ import annotations

import numpy as np
import pytest

from core.consistency import back_project
from core.sensor import box_psf, degrade_spatial, degrade_spatial_adjoint, gaussian_psf


@pytest.mark.parametrize("scale, psf", [(3, None), (4, None), (8, None), (4, "shifted"), (4, "box"), (4, "random")])
def test_adjoint_is_the_transpose_of_the_degradation(scale, psf):
    rng = np.random.default_rng(scale)
    kernel = {"shifted": lambda: gaussian_psf(4, shift=(0.5, -0.3)), "box": lambda: box_psf(4, shift=(0.5, 0.5)),
              "random": lambda: rng.random((6, 6))}.get(psf, lambda: psf)()
    x = rng.standard_normal((3, 7 * scale, 6 * scale))
    y = rng.standard_normal((3, 7, 6))
    forward = float((degrade_spatial(x, scale, kernel).astype(np.float64) * y).sum())
    adjoint = float((x * degrade_spatial_adjoint(y, scale, kernel)).sum())
    assert adjoint == pytest.approx(forward, rel=1e-4, abs=1e-4)
    assert degrade_spatial_adjoint(y, scale, kernel).shape == x.shape


def _scene(rng, bands=5, rows=12, cols=10, scale=4):
    yy, xx = np.mgrid[0:rows * scale, 0:cols * scale] / scale
    truth = np.stack([np.sin(yy * (0.4 + 0.1 * b)) + np.cos(xx * 0.7) + 2.0 for b in range(bands)]).astype(np.float32)
    return truth, truth + 0.2 * rng.standard_normal(truth.shape).astype(np.float32)


def test_noise_free_back_projection_gives_the_lr_hsi_back_and_nears_the_truth():
    rng = np.random.default_rng(0)
    truth, x0 = _scene(rng)
    psf = gaussian_psf(4, shift=(0.5, 0.5))
    lr = degrade_spatial(truth, 4, psf)
    x = back_project(x0, lr, 4, psf, iterations=30)
    before = np.abs(degrade_spatial(x0, 4, psf) - lr).max()
    assert np.abs(degrade_spatial(x, 4, psf) - lr).max() < 0.02 * before
    assert np.sqrt(np.mean((x - truth) ** 2)) < np.sqrt(np.mean((x0 - truth) ** 2))


def test_residual_within_the_noise_changes_nothing_and_nodata_stays_nodata():
    rng = np.random.default_rng(1)
    truth, x0 = _scene(rng)
    lr = degrade_spatial(truth, 4)
    resid = np.sqrt(np.mean((degrade_spatial(x0, 4) - lr) ** 2, axis=(1, 2)))
    np.testing.assert_array_equal(back_project(x0, lr, 4, None, noise_std=2 * resid), x0)
    moved = np.abs(back_project(x0, lr, 4, None, noise_std=0.5 * resid) - x0).mean()
    assert 0 < moved < np.abs(back_project(x0, lr, 4, None) - x0).mean()  # noise-aware: a smaller step than exact
    x0[:, :4, :4] = np.nan
    lr[2, 5, 5] = np.nan
    x = back_project(x0, lr, 4, None)
    assert np.isnan(x[:, :4, :4]).all() and np.isfinite(x[:, 4:, 4:]).all()
