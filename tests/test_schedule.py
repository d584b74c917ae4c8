"""The shared noise schedule, normalisation and bicubic upsampling (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from core.normalization import BandNormalization
from core.resample import upsample
from core.schedule import NoiseSchedule, sampling_plan


def test_schedule_shape_and_endpoints():
    s = NoiseSchedule()
    g = s.gammas
    assert g.shape == (2001,) and g[0] == 1.0
    assert np.all(np.diff(g) < 0) and 1e-5 < g[-1] < 1e-4
    levels = s.sample_training_levels(np.random.default_rng(0), 10000)
    assert levels.dtype == np.float32 and levels.min() >= 0 and levels.max() <= 1
    assert NoiseSchedule.from_dict(s.to_dict()) == s


def test_full_ancestral_plan_is_the_paper_update():
    s = NoiseSchedule(steps=50)
    plan = sampling_plan(s, 50, "ancestral")
    g, b = s.gammas, s.betas
    for step, t in zip(plan, range(50, 0, -1), strict=True):
        # Paper / DDPM posterior: mean = sqrt(g_{t-1}) b_t / (1 - g_t) x0 + sqrt(a_t) (1 - g_{t-1}) / (1 - g_t) x_t
        assert step.noise_level == pytest.approx(np.sqrt(g[t]))
        assert step.c_x0 == pytest.approx(np.sqrt(g[t - 1]) * b[t - 1] / (1 - g[t]))
        assert step.c_xt == pytest.approx(np.sqrt(1 - b[t - 1]) * (1 - g[t - 1]) / (1 - g[t]))
        assert step.sigma == pytest.approx(np.sqrt(b[t - 1] * (1 - g[t - 1]) / (1 - g[t])))
    assert plan[-1].sigma == 0.0


@pytest.mark.parametrize("sampler, eta", [("ddim", 0.0), ("ancestral", 0.0)])
def test_perfect_denoiser_recovers_x0(sampler, eta):
    """With an oracle x0 prediction every plan ends exactly at x0 (the last step is noise-free)."""
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal((3, 8, 8))
    x = rng.standard_normal(x0.shape)
    for step in sampling_plan(NoiseSchedule(), 20, sampler, eta):
        x = step.c_x0 * x0 + step.c_xt * x + step.sigma * rng.standard_normal(x0.shape)
    np.testing.assert_allclose(x, x0, atol=1e-9)


def test_plan_validation():
    with pytest.raises(ValueError, match="sampler"):
        sampling_plan(NoiseSchedule(), 10, "euler")
    with pytest.raises(ValueError, match="n_steps"):
        sampling_plan(NoiseSchedule(), 0)
    ddim = sampling_plan(NoiseSchedule(), 10, "ddim", eta=0.0)
    assert len(ddim) == 10 and all(s.sigma == 0 for s in ddim)
    assert all(a.noise_level < b.noise_level for a, b in zip(ddim, ddim[1:], strict=False))


def test_normalisation_round_trip():
    rng = np.random.default_rng(2)
    cube = (rng.random((5, 20, 20)) * np.arange(1, 6)[:, None, None] * 1000).astype(np.float32)
    cube[2] = 7.0  # a constant band must not divide by zero
    norm = BandNormalization.fit(cube)
    y = norm.apply(cube)
    assert np.all(np.abs(np.percentile(y[[0, 1, 3, 4]], [1, 99], axis=(1, 2))) <= 1.0 + 1e-5)
    np.testing.assert_allclose(norm.invert(y), cube, rtol=1e-5, atol=1e-3)
    again = BandNormalization.from_dict(norm.to_dict())
    np.testing.assert_array_equal(again.offset, norm.offset)


def _reference_upsample(img: np.ndarray, s: int) -> np.ndarray:
    """Direct loop over output pixels (independent of the vectorised taps)."""

    def k(x):
        x = abs(x)
        return 1.5 * x**3 - 2.5 * x**2 + 1 if x <= 1 else (-0.5 * x**3 + 2.5 * x**2 - 4 * x + 2 if x < 2 else 0.0)

    h, w = img.shape
    out = np.zeros((h * s, w * s))
    for i in range(h * s):
        for j in range(w * s):
            y, x = (i + 0.5) / s - 0.5, (j + 0.5) / s - 0.5
            acc = wsum = 0.0
            for m in range(int(np.floor(y)) - 1, int(np.floor(y)) + 3):
                for n in range(int(np.floor(x)) - 1, int(np.floor(x)) + 3):
                    wt = k(y - m) * k(x - n)
                    acc += wt * img[min(max(m, 0), h - 1), min(max(n, 0), w - 1)]
                    wsum += wt
            out[i, j] = acc / wsum
    return out


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_upsample_matches_direct_bicubic(scale):
    img = np.random.default_rng(scale).random((2, 5, 6)).astype(np.float32)
    up = upsample(img, scale)
    assert up.shape == (2, 5 * scale, 6 * scale) and up.dtype == np.float32
    np.testing.assert_allclose(up[1], _reference_upsample(img[1], scale), atol=1e-5)


def test_upsample_reproduces_linear_ramps_and_constants():
    ramp = np.add.outer(np.arange(8.0), 2 * np.arange(8.0))[None].astype(np.float32)
    up = upsample(ramp, 4)
    i, j = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    expect = ((i + 0.5) / 4 - 0.5) + 2 * ((j + 0.5) / 4 - 0.5)
    np.testing.assert_allclose(up[0, 8:-8, 8:-8], expect[8:-8, 8:-8], atol=1e-4)
    np.testing.assert_allclose(upsample(np.full((1, 3, 3), 0.25, np.float32), 3), 0.25, atol=1e-7)
