"""Degradation protocols (core/sensor/protocols.py): each named protocol against the LR it must give on crafted
images, the kernel of our convention that reproduces it, the SRF perturbation, radiometry, noise and the
training draws."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.raster_io import read_raster
from core.sensor import default_msi_bands, degrade_spatial, degrade_spectral, gaussian_psf, sigma_for_scale, spectral_response
from core.sensor.protocols import PROTOCOLS, TRAINING_RANGES, Degradation, protocol, random_degradation

SCALES = (3, 4, 8)


def ramp(size: int = 64) -> np.ndarray:
    """``(2, size, size)``: ``y + 2x`` and ``3y - x`` (HR px): a Gaussian or box footprint returns the ramp at its centre."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return np.stack([y + 2 * x, 3 * y - x])


def interior(lr: np.ndarray, n: int = 2) -> np.ndarray:
    return lr[:, n:-n, n:-n]


@pytest.fixture(scope="module")
def enmap(shared_data):
    """A real 48 x 48 EnMAP crop (good bands only) and its band wavelengths / widths."""
    cube, meta = read_raster(shared_data / "enmap_potsdam_southeast.tif")
    good = meta.good_bands & np.isfinite(cube[:, 64:112, 0:48]).all(axis=(1, 2))
    return cube[good, 64:112, 0:48], meta.wavelengths[good], meta.fwhm[good]


def test_named_protocols_are_there():
    assert {"exact", "odd-phase", "odd-phase-minus", "psf-wide", "psf-narrow", "shift-0.5", "box-psf", "noisy-35db",
            "srf-shift", "gain-offset"} <= set(PROTOCOLS)
    assert protocol("odd-phase", 4) == Degradation(parity="odd", phase=2)
    with pytest.raises(ValueError, match="unknown degradation protocol 'odd'"):
        protocol("odd", 4)


@pytest.mark.parametrize("scale", SCALES)
def test_exact_is_degrade_spatial(scale, enmap):
    cube = enmap[0][:20]
    d = protocol("exact", scale)
    np.testing.assert_allclose(d.spatial(cube, scale), degrade_spatial(cube, scale, gaussian_psf(scale)), rtol=0, atol=1e-6 * cube.max())
    np.testing.assert_array_equal(d.true_psf(scale).kernel, gaussian_psf(scale))
    assert d.true_psf(scale).shift == (0.0, 0.0)


@pytest.mark.parametrize("scale, name, offset", [(4, "odd-phase", 0.5), (4, "odd-phase-minus", -0.5), (8, "odd-phase", 0.5),
                                                 (8, "odd-phase-minus", -0.5), (3, "odd-phase", 0.0), (3, "odd-phase-minus", 0.0),
                                                 (4, "shift-0.5", 0.5), (3, "shift-0.5", 0.5), (4, "exact", 0.0)])
def test_footprint_centre_on_a_ramp(scale, name, offset):
    """On a linear ramp an LR pixel is the ramp at its footprint's centre: block centre + the protocol's offset
    (to the truncation of the shifted kernel: its centroid is within 0.005 HR px of the nominal centre)."""
    hr = ramp()
    lr = protocol(name, scale).spatial(hr, scale)
    n = lr.shape[1]
    c = np.arange(n) * scale + (scale - 1) / 2 + offset
    yy, xx = np.meshgrid(c, c, indexing="ij")
    expected = np.stack([yy + 2 * xx, 3 * yy - xx])
    np.testing.assert_allclose(interior(lr), interior(expected), atol=0.02)
    assert protocol(name, scale).true_psf(scale).shift == (offset, offset)


@pytest.mark.parametrize("scale", (4, 8))
def test_odd_phase_is_our_convention_shifted_half_a_pixel(scale, enmap):
    """The literal odd kernel at ``scale // 2`` equals gaussian_psf(shift=+0.5) to the kernels' truncation (~1e-3),
    and at ``(scale - 1) // 2`` shift=-0.5; both are far from the centred pair."""
    cube = enmap[0][:12]
    peak = float(cube.max())
    for name, s in (("odd-phase", 0.5), ("odd-phase-minus", -0.5)):
        lr = protocol(name, scale).spatial(cube, scale)
        ours = degrade_spatial(cube, scale, gaussian_psf(scale, shift=(s, s)))
        assert np.abs(lr - ours).max() < 1e-3 * peak, name
        centred = degrade_spatial(cube, scale)
        assert np.abs(lr - centred).max() > 10 * np.abs(lr - ours).max(), name


@pytest.mark.parametrize("scale", SCALES)
def test_odd_kernel_on_an_impulse(scale):
    """An impulse on a sampled pixel returns the odd kernel itself: (2r+1) taps, r = ceil(3 sigma), centred there."""
    sigma = sigma_for_scale(scale)
    r = math.ceil(3 * sigma)
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    g /= g.sum()
    p = scale // 2
    n = 40 // scale
    hr = np.zeros((1, n * scale, n * scale), np.float32)
    i0 = n // 2
    hr[0, i0 * scale + p, i0 * scale + p] = 1.0
    lr = protocol("odd-phase", scale).spatial(hr, scale)[0]
    expected = np.zeros((n, n))
    for di in range(-(r // scale), r // scale + 1):
        for dj in range(-(r // scale), r // scale + 1):
            expected[i0 + di, i0 + dj] = g[r - di * scale] * g[r - dj * scale]
    np.testing.assert_allclose(lr, expected, atol=1e-7)


@pytest.mark.parametrize("scale", SCALES)
def test_box_psf_is_the_block_mean(scale, enmap):
    cube = enmap[0][:10]
    n = cube.shape[1] // scale
    block = cube[:, :n * scale, :n * scale].reshape(cube.shape[0], n, scale, n, scale).mean(axis=(2, 4))
    np.testing.assert_allclose(protocol("box-psf", scale).spatial(cube, scale), block, rtol=1e-6)
    # the odd-kernel box at phase 0 covers the same block less half a pixel at each end (pixel-integrated box)
    odd = Degradation(psf="box", parity="odd", phase=0).true_psf(scale)
    assert odd.shift == ((1 - scale) / 2, (1 - scale) / 2) and odd.sigma is None and odd.width == scale


@pytest.mark.parametrize("scale", SCALES)
def test_width_protocols_are_gaussian_psf_of_that_sigma(scale, enmap):
    cube = enmap[0][:10]
    for name, f in (("psf-wide", 1.3), ("psf-narrow", 0.75)):
        d = protocol(name, scale)
        assert d.sigma(scale) == pytest.approx(f * sigma_for_scale(scale))
        np.testing.assert_allclose(d.spatial(cube, scale), degrade_spatial(cube, scale, gaussian_psf(scale, f * sigma_for_scale(scale))),
                                   atol=1e-6 * cube.max())
    shifted = protocol("shift-0.5", scale)
    np.testing.assert_allclose(shifted.spatial(cube, scale), degrade_spatial(cube, scale, gaussian_psf(scale, shift=(0.5, 0.5))),
                               atol=1e-6 * cube.max())


def test_true_psf_reproduces_every_protocol_and_random_draws(enmap):
    """The kernel of our convention that true_psf() gives makes the same LR-HSI, edges included, for every protocol."""
    cube = enmap[0][:6]
    rng = np.random.default_rng(3)
    for scale in SCALES:
        degs = [f(scale) for f in PROTOCOLS.values()] + [random_degradation(rng, scale) for _ in range(12)]
        for d in degs:
            t = d.true_psf(scale)
            assert t.kernel.shape[0] % 2 == scale % 2 and t.kernel.shape[0] >= scale
            assert t.kernel.sum() == pytest.approx(1.0)
            np.testing.assert_allclose(degrade_spatial(cube, scale, t.kernel), d.spatial(cube, scale), atol=2e-6 * cube.max(),
                                       err_msg=d.describe(scale))


def test_random_degradation_draws_the_training_ranges(enmap):
    rng = np.random.default_rng(7)
    cube, wl, fwhm = enmap
    seen = {"psf": set(), "parity": set(), "phase": set()}
    scale = 4
    for _ in range(300):
        d = random_degradation(rng, scale, msi_bands=10)
        seen["psf"].add(d.psf)
        seen["parity"].add(d.parity)
        seen["phase"].add(d.phase)
        lo, hi = TRAINING_RANGES["width"]
        assert 0.7 == lo and hi == 1.4 and lo <= d.width <= hi
        assert all(-0.75 <= s <= 0.75 for s in d.shift)
        assert 0 <= d.phase < scale
        for key in ("srf_shift_nm", "srf_width", "gain", "offset"):
            lo, hi = TRAINING_RANGES[key]
            values = getattr(d, key)
            assert len(values) == 10 and all(lo <= v <= hi for v in values), key
        assert max(abs(v) for v in d.srf_shift_nm) <= 5.0 and all(0.8 <= v <= 1.2 for v in d.srf_width)
        assert 30.0 <= d.snr_db <= 50.0
    assert seen == {"psf": {"gaussian", "box"}, "parity": {"centred", "odd"}, "phase": {0, 1, 2, 3}}
    # every draw makes a pair, SRF perturbation included
    for _ in range(5):
        d = random_degradation(rng, scale)
        lr, msi = d.apply(cube[:, :32, :32], scale, "sentinel2", wl, fwhm, bands=default_msi_bands("sentinel2"), rng=rng)
        assert lr.shape == (cube.shape[0], 8, 8) and msi.shape == (10, 32, 32)
        assert np.isfinite(lr).all() and np.isfinite(msi).all()


def test_noise_hits_the_snr(enmap):
    cube, wl, fwhm = enmap
    srf = spectral_response("sentinel2", wl, fwhm, bands=default_msi_bands("sentinel2"))
    clean_lr, clean_msi = protocol("exact", 4).apply(cube, 4, srf)
    noisy_lr, noisy_msi = protocol("noisy-35db", 4).apply(cube, 4, srf, rng=np.random.default_rng(5))
    for clean, noisy in ((clean_lr, noisy_lr), (clean_msi, noisy_msi)):
        c, e = clean.astype(np.float64), (noisy - clean).astype(np.float64)
        snr = 10 * np.log10((c ** 2).mean(axis=(1, 2)) / (e ** 2).mean(axis=(1, 2)))
        assert abs(snr.mean() - 35.0) < 0.5
        assert abs(10 * np.log10((c ** 2).sum() / (e ** 2).sum()) - 35.0) < 0.5
    again, _ = protocol("noisy-35db", 4).apply(cube, 4, srf, rng=5)
    np.testing.assert_array_equal(again, noisy_lr)


def test_srf_shift_moves_the_band_centres(enmap):
    cube, wl, fwhm = enmap
    bands = default_msi_bands("sentinel2")
    nominal = spectral_response("sentinel2", wl, fwhm, bands=bands)
    shifted = protocol("srf-shift", 4).response("sentinel2", wl, fwhm, bands=bands)
    assert shifted.sensor == "sentinel2" and shifted.band_names == nominal.band_names
    np.testing.assert_allclose(shifted.matrix.sum(axis=1), 1.0)
    moved = shifted.matrix @ wl - nominal.matrix @ wl
    clear = [i for i, b in enumerate(bands) if b in ("B02", "B03", "B04", "B05", "B8A", "B11", "B12")]
    np.testing.assert_allclose(moved[clear], 5.0, atol=0.3)
    # the pair made with the sensor name uses that shifted response
    _, msi = protocol("srf-shift", 4).apply(cube, 4, "sentinel2", wl, fwhm, bands=bands)
    np.testing.assert_allclose(msi, degrade_spectral(cube, shifted), rtol=1e-5)
    # widths: x1.2 about the centroid widens each band (minus the HSI bands' own width), the centre stays
    wide = Degradation(srf_width=1.2).response("sentinel2", wl, fwhm, bands=bands)

    def spread(r):
        c = r.matrix @ wl
        return np.sqrt(r.matrix @ wl ** 2 - c ** 2)

    ratio = spread(wide) / spread(nominal)
    assert np.all(ratio[clear] > 1.1) and np.all(ratio[clear] < 1.21)
    np.testing.assert_allclose((wide.matrix @ wl)[clear], (nominal.matrix @ wl)[clear], atol=0.2)


def test_gain_offset_on_the_msi_only(enmap):
    cube, wl, fwhm = enmap
    srf = spectral_response("sentinel2", wl, fwhm, bands=default_msi_bands("sentinel2"))
    lr0, msi0 = protocol("exact", 4).apply(cube, 4, srf)
    d = protocol("gain-offset", 4)
    lr, msi = d.apply(cube, 4, srf)
    np.testing.assert_array_equal(lr, lr0)
    gain = np.resize(d.gain, 10)
    offset = np.resize(d.offset, 10) * msi0.reshape(10, -1).mean(axis=1)
    np.testing.assert_allclose(msi, msi0 * gain[:, None, None] + offset[:, None, None], rtol=1e-5, atol=1e-6 * msi0.max())
    assert len(set(np.round(gain, 3))) == 5


def test_bad_degradations_are_refused(enmap):
    with pytest.raises(ValueError, match="psf must be one of"):
        Degradation(psf="disk")
    with pytest.raises(ValueError, match="parity"):
        Degradation(parity="even")
    with pytest.raises(ValueError, match="width"):
        Degradation(width=0)
    with pytest.raises(ValueError, match="shift must be"):
        Degradation(shift=(0.5,))
    with pytest.raises(ValueError, match="gain must be > 0"):
        Degradation(gain=(1.0, -1.0))
    with pytest.raises(ValueError, match="phase 4 must be below the scale 4"):
        Degradation(parity="odd", phase=4).spatial(enmap[0][:2], 4)
    bad = enmap[0][:2].copy()
    bad[0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        protocol("exact", 4).spatial(bad, 4)
    with pytest.raises(ValueError, match="needs the HSI band wavelengths"):
        protocol("exact", 4).apply(enmap[0], 4, "sentinel2")


def test_cross_protocol_benchmark(tmp_path):
    """bench/quality.py --protocol: true, estimated and nominal runs per method, the estimate sees the odd phase's
    half pixel, the summary's worst cells, and the written tables."""
    import json

    from bench.quality import knowledge_gain, main, run_protocols, summarise
    from bench.scenes import Scene

    scene = Scene("enmap_test", "enmap_potsdam_southeast.tif", (64, 112), (0, 48), "sentinel2", held_out=True)
    rows = run_protocols(["bicubic", "mtf_glp_hs"], [4], [scene], ["exact", "odd-phase"], False, None, log=lambda *a: None)
    got = {(r["protocol"], r["method"], r["knowledge"]): r for r in rows}
    assert len(rows) == 12 and {k[2] for k in got} == {"true", "estimated", "nominal"}
    assert got[("odd-phase", "mtf_glp_hs", "true")]["given"].startswith("true: dy +0.500 dx +0.500")
    est = got[("odd-phase", "mtf_glp_hs", "estimated")]["given"]
    dy, dx = (float(est.split(w)[1].split()[0]) for w in (" dy ", " dx "))
    assert abs(dy - 0.5) < 0.1 and abs(dx - 0.5) < 0.1, est
    # the exact pair's estimate snaps to the nominal PSF: the same fusion as the true PSF's
    assert got[("exact", "mtf_glp_hs", "estimated")]["psnr"] == got[("exact", "mtf_glp_hs", "true")]["psnr"]
    # on the odd-phase pair the estimate buys MTF-GLP-HS several dB over the centred PSF, close to the truth
    odd = {k: got[("odd-phase", "mtf_glp_hs", k)]["psnr"] for k in ("true", "estimated", "nominal")}
    assert odd["estimated"] > odd["nominal"] + 3 and odd["true"] > odd["estimated"] - 1, odd
    gain = knowledge_gain(rows, "estimated", "nominal")
    assert gain[("mtf_glp_hs", "odd-phase")] == [pytest.approx(odd["estimated"] - odd["nominal"])]
    summary = {(s["method"], s["knowledge"]): s for s in summarise(rows)}
    assert summary[("mtf_glp_hs", "true")]["worst_psnr_margin"] == 0.0
    assert summary[("bicubic", "estimated")]["worst_psnr_margin"] < -10
    assert summary[("bicubic", "nominal")]["worst_psnr_cell"].startswith("enmap_test x4 ")

    out = tmp_path / "qp"
    assert main(["--methods", "bicubic,mtf_glp_hs", "--scales", "4", "--scenes", "enmap_southeast_holdout",
                 "--protocol", "exact,box-psf", "--out", str(out)]) == 0
    info = json.loads(out.with_suffix(".json").read_text())
    assert {r["protocol"] for r in info["results"]} == {"exact", "box-psf"} and len(info["results"]) == 12
    assert info["protocols"]["box-psf"]["4"]["true_psf"].endswith("box 4.00 HR px")
    md = out.with_suffix(".md").read_text()
    assert "## Worst cells" in md and "| mtf_glp_hs | estimated | all | 2 |" in md
