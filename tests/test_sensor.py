"""Sensor model: PSF, spatial/spectral degradation, response curves, simulation and estimation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import correlate1d

from core.raster_io import read_raster
from core.sensor import (
    SpectralResponse,
    add_noise,
    box_psf,
    default_msi_bands,
    degrade_spatial,
    degrade_spatial_window,
    degrade_spectral,
    estimate_psf_sigma,
    estimate_srf,
    gaussian_psf,
    halo,
    halo_window,
    list_sensors,
    load_srf_csv,
    sigma_for_scale,
    simulate_pair,
    spectral_response,
)
from core.sensor.estimate import estimate_registration
from core.sensor.protocols import Degradation
from core.sensor.srf import SRF_DIR


@pytest.fixture(scope="module")
def enmap(shared_data):
    """EnMAP Potsdam crop without its bad bands (reflectance x 1e4 -> 0..1), and its metadata."""
    cube, meta = read_raster(shared_data / "enmap_potsdam_southeast.tif")
    good = meta.good_bands
    return cube[good] / 10000.0, meta.wavelengths[good], meta.fwhm[good], meta


@pytest.fixture(scope="module")
def s2(enmap):
    _, wl, fwhm, _ = enmap
    return spectral_response("sentinel2", wl, fwhm, bands=default_msi_bands("sentinel2"))


def _reference_degrade(cube: np.ndarray, scale: int, psf: np.ndarray) -> np.ndarray:
    """The ARCHITECTURE.md formula written out literally (slow, float64)."""
    k = psf.shape[0]
    p = (k - scale) // 2
    rows, cols = cube.shape[1] // scale * scale, cube.shape[2] // scale * scale
    pad = np.pad(cube[:, :rows, :cols].astype(np.float64), ((0, 0), (p, p), (p, p)), mode="reflect")
    out = np.zeros((cube.shape[0], rows // scale, cols // scale))
    for i in range(rows // scale):
        for j in range(cols // scale):
            out[:, i, j] = np.sum(pad[:, i * scale:i * scale + k, j * scale:j * scale + k] * psf, axis=(1, 2))
    return out


# --------------------------------------------------------------------------- PSF


@pytest.mark.parametrize("scale", [1, 2, 3, 4, 5, 8, 16])
def test_gaussian_psf_convention(scale):
    k = gaussian_psf(scale)
    assert k.shape[0] == k.shape[1] >= scale
    assert k.shape[0] % 2 == scale % 2
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.allclose(k, k.T) and np.allclose(k, k[::-1, ::-1])
    sigma = sigma_for_scale(scale)
    assert sigma == pytest.approx(scale / (2 * math.sqrt(2 * math.log(2))))
    # support about +-3 sigma: the kernel spans at least 6 sigma and at most 6 sigma + 2 px
    assert 6 * sigma - 1e-9 <= k.shape[0] <= max(scale, 6 * sigma + 2)
    # the sampled kernel has the requested width (1-D second moment)
    x = np.arange(k.shape[0]) - (k.shape[0] - 1) / 2
    if scale >= 2:
        assert math.sqrt(np.sum(k.sum(axis=1) * x**2)) == pytest.approx(sigma, rel=0.03)


def test_psf_rejects_bad_kernels():
    with pytest.raises(ValueError):
        degrade_spatial(np.zeros((1, 8, 8), np.float32), 4, np.ones((5, 5)))  # wrong parity
    with pytest.raises(ValueError):
        gaussian_psf(4, sigma=0.0)
    assert halo(4) == (gaussian_psf(4).shape[0] - 4) // 2


# --------------------------------------------------------------------------- spatial degradation


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_degrade_matches_the_written_formula(scale):
    rng = np.random.default_rng(scale)
    cube = rng.random((2, 5 * scale + 1, 5 * scale - 1)).astype(np.float32)
    for psf in (gaussian_psf(scale), gaussian_psf(scale, 0.7 * scale), rng.random((scale + 2, scale + 2))):
        psf = psf / psf.sum()
        got = degrade_spatial(cube, scale, psf)
        assert got.shape == (2, 5, 4) and got.dtype == np.float32
        np.testing.assert_allclose(got, _reference_degrade(cube, scale, psf), rtol=1e-5, atol=1e-6)


def test_degrade_constant_symmetry_and_energy(enmap):
    cube = enmap[0][:20, :, :61]  # 61 cols: cropped to a multiple of the scale
    for scale in (4, 8):
        lr = degrade_spatial(cube, scale)
        assert lr.shape == (20, 128 // scale, 61 // scale)
        const = np.full((3, 24, 40), 7.5, np.float32)
        np.testing.assert_allclose(degrade_spatial(const, scale), 7.5, rtol=1e-6)
        # kernel centred on its block: degrading a flipped image flips the result
        c = cube[:, :, :56]
        lr = degrade_spatial(c, scale)
        np.testing.assert_allclose(degrade_spatial(c[:, ::-1, ::-1], scale), lr[:, ::-1, ::-1], rtol=1e-5, atol=1e-6)
        # energy: a box PSF conserves it exactly, the Gaussian up to the edge reflection
        box = np.ones((scale, scale)) / scale**2
        assert degrade_spatial(c, scale, box).sum() * scale**2 == pytest.approx(c.sum(), rel=1e-5)
        assert lr.sum() * scale**2 == pytest.approx(c.sum(), rel=1e-2)


def test_windowed_degradation_is_identical(enmap):
    cube = enmap[0][:8]
    scale = 4
    psf = gaussian_psf(scale)
    full = degrade_spatial(cube, scale, psf)
    n_r, n_c = full.shape[1:]
    for lr_r0, lr_c0, lr_rows, lr_cols in [(0, 0, 5, 4), (3, 2, 7, 5), (n_r - 6, n_c - 3, 6, 3), (0, 0, n_r, n_c), (10, 0, 1, 1)]:
        w = halo_window(lr_r0, lr_c0, lr_rows, lr_cols, scale, cube.shape[1:], psf)
        block = cube[:, w.row0:w.row0 + w.rows, w.col0:w.col0 + w.cols]
        got = degrade_spatial_window(block, scale, psf, w.pad)
        np.testing.assert_array_equal(got, full[:, lr_r0:lr_r0 + lr_rows, lr_c0:lr_c0 + lr_cols])
    with pytest.raises(ValueError):
        halo_window(n_r - 1, 0, 2, 1, scale, cube.shape[1:], psf)


# --------------------------------------------------------------------------- spectral response


def test_spectral_response_rows_and_bands(enmap, s2):
    _, wl, fwhm, meta = enmap
    assert set(list_sensors()) >= {"sentinel2", "landsat8", "nikon_d700", "ikonos"}
    assert s2.band_names == ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
    assert s2.matrix.shape == (10, wl.size) and s2.sensor == "sentinel2"
    np.testing.assert_allclose(s2.matrix.sum(axis=1), 1.0, atol=1e-12)
    assert (s2.matrix >= 0).all()
    # each band's weight sits where its curve is: B04 (red, ~665 nm) peaks between 650 and 680 nm
    assert 650 < wl[np.argmax(s2.matrix[2])] < 680
    for name in ("landsat8", "ikonos"):
        r = spectral_response(name, wl, fwhm, bands=default_msi_bands(name))
        np.testing.assert_allclose(r.matrix.sum(axis=1), 1.0, atol=1e-12)
    assert SpectralResponse.from_dict(s2.to_dict()).band_names == s2.band_names


def test_uncovered_band_is_a_clear_error(enmap):
    _, _, _, meta = enmap
    with pytest.raises(ValueError, match=r"B10.*418-2446 nm.*bad bands"):
        spectral_response("sentinel2", meta.wavelengths, meta.fwhm, valid_bands=meta.good_bands)
    # the bad bands get zero weight when kept in the cube
    r = spectral_response("sentinel2", meta.wavelengths, meta.fwhm, bands=["B11", "B12"], valid_bands=meta.good_bands)
    assert np.all(r.matrix[:, ~meta.good_bands] == 0)
    casi_wl = np.linspace(368, 1043, 72)
    with pytest.raises(ValueError, match="B11"):
        spectral_response("sentinel2", casi_wl, bands=default_msi_bands("sentinel2"))
    with pytest.raises(ValueError, match="no band"):
        spectral_response("sentinel2", casi_wl, bands=["B99"])


def test_nikon_on_cave_matches_the_published_matrix(tmp_path):
    wl = np.arange(400, 701, 10.0)
    r = spectral_response("nikon_d700", wl)
    grid, names, curves = load_srf_csv("nikon_d700")
    assert names == ("blue", "green", "red") and np.array_equal(grid, wl)
    published = curves / curves.sum(axis=1, keepdims=True)
    for i in range(3):
        assert np.corrcoef(r.matrix[i], published[i])[0, 1] > 0.99
    # a CSV path works as well and gives the same matrix
    path = tmp_path / "my_camera.csv"
    path.write_text((SRF_DIR / "nikon_d700.csv").read_text())
    by_path = spectral_response(str(path), wl)
    assert by_path.sensor == "my_camera"
    np.testing.assert_allclose(by_path.matrix, r.matrix)


def test_degrade_spectral_ignores_zero_weight_bands():
    rng = np.random.default_rng(0)
    cube = rng.random((5, 6, 7)).astype(np.float32)
    m = rng.random((2, 5))
    m[:, 3] = 0.0
    cube_nan = cube.copy()
    cube_nan[3] = np.nan
    out = degrade_spectral(cube_nan, m)
    assert out.shape == (2, 6, 7) and out.dtype == np.float32
    np.testing.assert_allclose(out, np.einsum("mb,brc->mrc", m, cube), rtol=1e-5)


# --------------------------------------------------------------------------- simulation and estimation


def test_simulate_pair_shapes_and_noise(enmap, s2):
    hr = enmap[0][:, :125, :62]
    lr, msi = simulate_pair(hr, 4, s2.matrix)
    assert lr.shape == (hr.shape[0], 31, 15) and msi.shape == (10, 124, 60)
    assert lr.dtype == msi.dtype == np.float32
    a = simulate_pair(hr, 4, s2, snr_db=30, seed=1)
    b = simulate_pair(hr, 4, s2, snr_db=30, seed=1)
    np.testing.assert_array_equal(a[1], b[1])
    noise = a[1] - msi
    snr = 10 * np.log10(np.mean(msi.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
    assert snr == pytest.approx(30, abs=0.5)


def test_estimation_recovers_srf_and_sigma(enmap, s2):
    """Noise-free: the SRF to 1e-2 (L1 per row) and sigma to 1 %; at 40 dB SNR: sigma to 3 % and
    the MSI predicted by the estimated SRF to 1 % (the matrix itself is then ill-determined)."""
    hr = enmap[0]
    scale = 4
    lr, msi = simulate_pair(hr, scale, s2.matrix)
    est, res = estimate_srf(lr, msi, scale)
    assert est.shape == s2.matrix.shape and res.max() < 1e-4
    assert np.abs(est - s2.matrix).sum(axis=1).max() < 1e-2
    for sigma_true in (sigma_for_scale(scale), 0.6 * scale):
        lr_s, msi_s = simulate_pair(hr, scale, s2.matrix, psf=gaussian_psf(scale, sigma_true))
        sigma, _ = estimate_psf_sigma(lr_s, msi_s, scale, s2.matrix)
        assert sigma == pytest.approx(sigma_true, rel=0.01)

    lr_n, msi_n = simulate_pair(hr, scale, s2.matrix, snr_db=40, seed=3)
    sigma, res = estimate_psf_sigma(lr_n, msi_n, scale, s2.matrix)
    assert sigma == pytest.approx(sigma_for_scale(scale), rel=0.03)
    support = s2.matrix > 1e-3 * s2.matrix.max(axis=1, keepdims=True)
    est, _ = estimate_srf(lr_n, msi_n, scale, support=support)
    pred, true = degrade_spectral(hr, est), degrade_spectral(hr, s2.matrix)
    assert np.linalg.norm(pred - true) / np.linalg.norm(true) < 0.01


def test_band_resampling_matrix_reproduces_smooth_spectra_and_refuses_extrapolation():
    from core.sensor import band_resampling_matrix

    src = np.arange(366.0, 1044.0, 9.5)  # a CASI-like band set
    dst = np.arange(400.0, 701.0, 10.0)  # CAVE's 31 bands
    w = band_resampling_matrix(src, dst, src_fwhm=np.full(src.size, 9.5), dst_fwhm=np.full(dst.size, 10.0))
    assert w.shape == (31, src.size) and np.allclose(w.sum(axis=1), 1.0) and (w >= 0).all()
    for spectrum in (lambda x: 0.1 + 1e-3 * (x - 400.0), lambda x: 0.3 + 0.1 * np.sin(x / 40.0)):
        np.testing.assert_allclose(w @ spectrum(src), spectrum(dst), rtol=0.02)
    bad = (src > 500) & (src < 560)
    wb = band_resampling_matrix(src, dst, valid_bands=~bad)
    assert np.all(wb[:, bad] == 0) and np.allclose(wb.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="outside the source bands"):
        band_resampling_matrix(np.arange(418.0, 2450.0, 8.0), dst)  # EnMAP starts at 418 nm: no 400-410 nm
    # two spectrometers listed out of order with an overlap (as AVIRIS near 660 nm): widths from sorted spacing
    src2 = np.concatenate([np.arange(366.0, 668.0, 9.7), np.arange(655.5, 1000.0, 9.8)])
    w2 = band_resampling_matrix(src2, dst)
    np.testing.assert_allclose(w2 @ (0.3 + 0.1 * np.sin(src2 / 40.0)), 0.3 + 0.1 * np.sin(dst / 40.0), rtol=0.02)
    assert np.count_nonzero(w2[dst == 660.0] > 0.05) >= 3  # the 660 nm band draws on several neighbours, not one


# ---------------------------------------------------------------------- registration offset and PSF width


@pytest.fixture(scope="module")
def chart(shared_data):
    cube, meta = read_raster(shared_data / "cave_chart_toy.tif")
    return np.nan_to_num(cube)[:, :192, :192], spectral_response("nikon_d700", meta.wavelengths, meta.fwhm)


@pytest.mark.parametrize("scale, shift, sigma", [(4, (0.0, 0.0), None), (4, (0.5, 0.5), None), (4, (-1.3, 0.7), 1.2),
                                                 (3, (0.4, -0.2), 1.5), (8, (1.7, -1.1), None), (4, (2.0, -2.0), None)])
@pytest.mark.parametrize("snr", [None, 35])
def test_registration_offset_and_width_are_recovered(chart, scale, shift, sigma, snr):
    """Noise-free, the fit is exact at the true PSF (the MSI lies in the HSI's span): offset within 0.005 HR px and
    width within 0.2 % (regressing the LR-HSI on the MSI instead missed by 0.01 px and 0.5-0.8 % here). At 35 dB
    within 0.05 px (the issue's bar is 0.1) and 1 %."""

    cube, srf = chart
    lr = add_noise(degrade_spatial(cube, scale, gaussian_psf(scale, sigma, shift)), snr, np.random.default_rng(0))
    est = estimate_registration(lr, degrade_spectral(cube, srf), scale)
    tol, width_tol = (0.005, 0.002) if snr is None else (0.05, 0.01)
    assert abs(est.dy - shift[0]) < tol and abs(est.dx - shift[1]) < tol, est
    true_sigma = sigma if sigma is not None else sigma_for_scale(scale)
    assert est.shape == "gaussian" and est.side is None
    assert abs(est.sigma - true_sigma) < width_tol * true_sigma
    assert est.residual <= est.residual_centred


@pytest.mark.parametrize("scale, shift, side", [(4, (0.0, 0.0), 4.0), (4, (0.5, -0.5), 4.0), (3, (0.3, 0.0), 3.9),
                                                (8, (-1.0, 0.5), 8.0)])
@pytest.mark.parametrize("snr", [None, 35])
def test_a_box_psf_is_told_from_a_gaussian_and_measured(chart, scale, shift, side, snr):
    """A pixel-integrated box (the block mean of the box-psf protocol, and wider) is classed a box, with its side
    within 3 % and its offset within the registration bar; the Gaussian it beats would cost MTF-GLP-HS dB."""

    cube, srf = chart
    kernel = box_psf(scale, side, shift)
    lr = add_noise(degrade_spatial(cube, scale, kernel), snr, np.random.default_rng(0))
    est = estimate_registration(lr, degrade_spectral(cube, srf), scale)
    tol = 0.05 if snr is None else 0.1
    assert est.shape == "box", est
    assert abs(est.side - side) < 0.03 * side and abs(est.sigma - est.side / np.sqrt(12)) < 1e-9
    assert abs(est.dy - shift[0]) < tol and abs(est.dx - shift[1]) < tol, est
    assert est.psf(scale).shape[0] % 2 == scale % 2
    gauss = estimate_registration(lr, degrade_spectral(cube, srf), scale, shapes=("gaussian",))
    assert gauss.shape == "gaussian" and est.residual < gauss.residual


def test_box_psf_is_the_protocols_block_mean():
    """One definition of the box: ``box_psf(scale)`` degrades exactly as the box-psf protocol and the block mean."""

    cube = np.random.default_rng(1).random((2, 24, 24))
    for scale in (3, 4):
        mean = cube.reshape(2, 24 // scale, scale, 24 // scale, scale).mean(axis=(2, 4))
        np.testing.assert_allclose(degrade_spatial(cube, scale, box_psf(scale)), mean, atol=1e-6)
        np.testing.assert_allclose(Degradation(psf="box").spatial(cube, scale), mean, atol=1e-6)
        t = Degradation(psf="box", width=1.3, shift=(0.4, -0.2)).true_psf(scale)
        np.testing.assert_allclose(degrade_spatial(cube, scale, t.kernel),
                                   degrade_spatial(cube, scale, box_psf(scale, 1.3 * scale, (0.4, -0.2))), atol=1e-6)


@pytest.mark.parametrize("scale, expected", [(4, 0.5), (3, 0.0)])
def test_registration_sees_the_odd_kernel_decimation_phase(chart, scale, expected):
    """The other common protocol (odd Gaussian kernel, sampled at phase scale // 2) is an offset of half an HR pixel
    at even scales and none at odd ones."""

    cube, srf = chart
    sigma = sigma_for_scale(scale)
    k = 2 * int(np.ceil(3 * sigma)) + 1
    x = np.arange(k) - k // 2
    g = np.exp(-0.5 * (x / sigma) ** 2)
    g /= g.sum()
    blur = correlate1d(correlate1d(cube, g, axis=1, mode="reflect"), g, axis=2, mode="reflect")
    lr = blur[:, scale // 2::scale, scale // 2::scale]
    est = estimate_registration(lr, degrade_spectral(cube, srf), scale)
    assert abs(est.dy - expected) < 0.05 and abs(est.dx - expected) < 0.05, est


def test_registration_of_a_real_pair_is_stable_across_crops(shared_data):
    """Paris Hyperion + ALI (both 30 m; Hyperion degraded x3, Wald's protocol): the sensors' own offset is the same
    on every crop, and an offset added on purpose is recovered on top of it."""

    hs, _ = read_raster(shared_data / "paris_hyperion.tif")
    ms, _ = read_raster(shared_data / "paris_ali.tif")
    hs = np.nan_to_num(hs)
    crops = [(0, 0, 72), (0, 0, 48), (24, 24, 48), (0, 24, 48), (24, 0, 48)]
    found = {}
    for shift in ((0.0, 0.0), (0.5, -0.5)):
        lr = degrade_spatial(hs, 3, gaussian_psf(3, None, shift))
        found[shift] = np.array([[e.dy, e.dx] for e in (estimate_registration(lr[:, r // 3:(r + n) // 3, c // 3:(c + n) // 3],
                                                                               ms[:, r:r + n, c:c + n], 3)
                                                         for r, c, n in crops)])
    own = found[(0.0, 0.0)]
    assert np.ptp(own, axis=0).max() < 0.15
    assert np.abs(own.mean(axis=0)).max() > 0.3  # the pair is misregistered by about half a pixel across
    np.testing.assert_allclose(found[(0.5, -0.5)] - own, np.tile([0.5, -0.5], (len(crops), 1)), atol=0.1)


@pytest.mark.parametrize("kernel, shift", [("gaussian", (0.5, 0.5)), ("box", (0.0, 0.0)), ("gaussian", (-1.0, 0.0))])
def test_a_small_pair_at_x8_is_still_estimated(shared_data, kernel, shift):
    """EnMAP + Sentinel-2, 8 x 8 LR pixels at x8 (the benchmark's held-out square): too small for the full border
    margin, estimated on all but the outermost ring, to 0.15 HR px and the right PSF family."""

    cube, meta = read_raster(shared_data / "enmap_potsdam_southeast.tif")
    ref = np.nan_to_num(cube[meta.good_bands, 64:128, 0:64])
    srf = spectral_response("sentinel2", meta.wavelengths[meta.good_bands], meta.fwhm[meta.good_bands],
                            bands=default_msi_bands("sentinel2"))
    psf = gaussian_psf(8, None, shift) if kernel == "gaussian" else box_psf(8, 8.0, shift)
    est = estimate_registration(degrade_spatial(ref, 8, psf), degrade_spectral(ref, srf), 8)
    assert est.pixels == 36 and est.shape == kernel, est
    assert abs(est.dy - shift[0]) < 0.15 and abs(est.dx - shift[1]) < 0.15, est


def test_registration_refuses_a_pair_too_small_to_tell(chart):

    cube, srf = chart
    with pytest.raises(ValueError, match="too few valid LR pixels"):
        estimate_registration(degrade_spatial(cube[:, :24, :24], 4), degrade_spectral(cube[:, :24, :24], srf), 4)


def test_band_noise_std_tracks_added_noise_and_not_texture(shared_data):
    """Real EnMAP and CAVE cubes at LR size: 35 dB of white noise is read back per band; the clean cube reads far
    lower (its texture is not mistaken for noise)."""
    from core.sensor.noise import band_noise_std

    rng = np.random.default_rng(3)
    for name, window in (("enmap_potsdam_southeast.tif", (slice(0, 64), slice(0, 32))),
                         ("cave_chart_toy.tif", (slice(0, 192), slice(0, 192)))):
        cube, _ = read_raster(shared_data / name)
        cube = np.nan_to_num(cube[:, window[0], window[1]]).astype(np.float64)
        cube = cube[np.ptp(cube, axis=(1, 2)) > 0]
        if name.startswith("cave"):
            cube = degrade_spatial(cube, 4).astype(np.float64)  # 48 x 48 LR px
        sd = cube.mean(axis=(1, 2)) / 10 ** (35 / 20)
        noisy = cube + rng.standard_normal(cube.shape) * sd[:, None, None]
        ratio = band_noise_std(noisy) / sd
        assert 0.9 < np.median(ratio) < 1.2, (name, np.median(ratio))
        assert np.median(band_noise_std(cube) / sd) < 0.4, name
    with pytest.raises(ValueError, match="too few"):
        band_noise_std(np.ones((8, 2, 3)) + rng.standard_normal((8, 2, 3)))


def test_the_spectral_denoiser_removes_noise_and_leaves_a_clean_cube_alone(shared_data):
    from core.sensor.noise import DENOISE_BELOW_DB, fit_denoiser

    cube, _ = read_raster(shared_data / "enmap_potsdam_southeast.tif")
    clean = degrade_spatial(np.nan_to_num(cube[:, :96, :63]), 3).astype(np.float64)  # 32 x 21 LR px at x3
    good = np.ptp(clean, axis=(1, 2)) > 0
    sd = np.abs(clean.mean(axis=(1, 2))) / 10 ** (35 / 20)
    noisy = (clean + np.random.default_rng(0).standard_normal(clean.shape) * sd[:, None, None]).astype(np.float32)
    den, snr = fit_denoiser(noisy, good)
    assert 33 < snr < 37 and den is not None and 5 < den.rank < 60
    out = den.apply(noisy)
    err = lambda a: np.sqrt(np.mean((a[good] - clean[good]) ** 2))  # noqa: E731
    assert err(out) < 0.5 * err(noisy)  # more than 6 dB closer to the clean cube
    assert np.array_equal(out[~good], noisy[~good])  # bands left out pass through
    holed = noisy.copy()
    holed[5, 2, 3] = np.nan
    got = den.apply(holed)
    assert np.isnan(got[5, 2, 3]) and np.array_equal(got[:, 2, 3][np.arange(len(good)) != 5], holed[:, 2, 3][np.arange(len(good)) != 5])
    den_clean, snr_clean = fit_denoiser(clean.astype(np.float32), good)
    assert den_clean is None and snr_clean >= DENOISE_BELOW_DB
