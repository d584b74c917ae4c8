"""The streamed MTF-GLP-HS base (core.baselines.glp.GLPStream): windows equal the whole image, memory stays bounded."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from core.baselines import mtf_glp_hs, prepare_inputs
from core.baselines.glp import GLPStream
from core.conditioning import base_image, streamed_base
from core.progress import Cancelled
from core.raster_io import read_raster
from core.resample import upsample
from core.sensor import degrade_spatial, gaussian_psf, simulate_pair, spectral_response
from export.superresolve import superresolve
from export.testing import contract_model, make_enmap_pair, make_metadata

S = 4


def _reader(cube):
    return lambda r0, c0, rows, cols: cube[:, r0:r0 + rows, c0:c0 + cols]


@pytest.fixture(scope="module")
def cave(shared_data):
    cube, meta = read_raster(shared_data / "cave_balloons.tif")
    ref = cube[:, 100:292, 60:252]
    lr, msi = simulate_pair(ref, S, spectral_response("nikon_d700", meta.wavelengths, meta.fwhm).matrix)
    return lr, msi


def _reference_glp(lr, msi, scale, psf):
    """MTF-GLP-HS written out literally: one synthetic pan per HS band, its own pyramid, regression gains."""
    x = prepare_inputs(lr, msi, scale)
    ms_lr = degrade_spatial(x.msi, scale, psf).reshape(x.msi.shape[0], -1).T
    design = np.hstack([ms_lr, np.ones((ms_lr.shape[0], 1))]).astype(np.float64)
    coef = np.linalg.lstsq(design, x.lr.reshape(x.lr.shape[0], -1).T.astype(np.float64), rcond=None)[0]
    pan = np.einsum("mb,mrc->brc", coef[:-1], x.msi) + coef[-1][:, None, None]
    low = upsample(degrade_spatial(pan, scale, psf), scale)
    up = upsample(x.lr, scale)
    u, lo = up.reshape(len(up), -1), low.reshape(len(low), -1)
    u, lo = u - u.mean(axis=1, keepdims=True), lo - lo.mean(axis=1, keepdims=True)
    gains = (u * lo).sum(axis=1) / (lo * lo).sum(axis=1)
    return up + gains[:, None, None] * (pan - low)


def _tiled(stream, rows, cols, th, tw):
    out = np.zeros((len(stream.params.gains), rows, cols), np.float32)
    for r in range(0, rows, th):
        for c in range(0, cols, tw):
            h, w = min(th, rows - r), min(tw, cols - c)
            out[:, r:r + h, c:c + w] = stream.window(r, c, h, w)
    return out


def test_whole_image_glp_is_the_textbook_formula(cave):
    lr, msi = cave
    psf = gaussian_psf(S, 1.2)
    ref = _reference_glp(lr, msi, S, psf)
    np.testing.assert_allclose(mtf_glp_hs(lr, msi, S, psf=psf), ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_windows_equal_the_whole_image(cave):
    """Tolerance: 1e-6 of the data range (float32 rounding); fitted on every block, any window layout."""
    lr, msi = cave
    whole = base_image(lr, msi, S, "mtf_glp_hs", 1.2)
    stream = streamed_base("mtf_glp_hs", _reader(lr), _reader(msi), lr.shape[1:], S, 1.2)
    assert stream.params.blocks == (1, 1)
    small = GLPStream(_reader(lr), _reader(msi), lr.shape[1:], S, gaussian_psf(S, 1.2))
    small.fit(block=8)
    assert small.params.blocks[0] == small.params.blocks[1] > 20
    tol = 1e-6 * np.abs(whole).max()
    for s in (stream, small):
        for th, tw in ((40, 56), (13, 29), tuple(msi.shape[1:])):
            np.testing.assert_allclose(_tiled(s, *msi.shape[1:], th, tw), whole, rtol=0, atol=tol)


def test_a_fit_on_a_sample_of_blocks_stays_close(cave):
    lr, msi = cave
    whole = base_image(lr, msi, S, "mtf_glp_hs", 1.2)
    stream = GLPStream(_reader(lr), _reader(msi), lr.shape[1:], S, gaussian_psf(S, 1.2))
    stream.fit(block=8, max_fit_lr_pixels=10 * 64)
    assert stream.params.blocks == (10, 30)
    err = _tiled(stream, *msi.shape[1:], 64, 64) - whole
    assert np.sqrt(np.mean(err ** 2)) < 0.01 * np.sqrt(np.mean(whole ** 2))


def test_windows_next_to_nodata_differ_only_near_it(cave):
    lr, msi = (a.copy() for a in cave)
    msi[:, 60:76, 80:100] = np.nan
    lr[:, 30, 5] = np.nan
    whole = mtf_glp_hs(lr, msi, S, psf=gaussian_psf(S, 1.2))
    stream = streamed_base("mtf_glp_hs", _reader(lr), _reader(msi), lr.shape[1:], S, 1.2)
    diff = np.abs(_tiled(stream, *msi.shape[1:], 32, 32) - whole).max(axis=0)
    assert np.isfinite(diff).all()
    far = np.ones(diff.shape, bool)
    far[60 - 24:76 + 24, 80 - 24:100 + 24] = False
    far[30 * S - 24:31 * S + 24, 5 * S - 24:6 * S + 24] = False
    assert diff[far].max() < 1e-5 * np.abs(whole).max()


def _peak_bytes(side: int) -> int:
    rng = np.random.default_rng(0)
    lr = rng.random((64, side // S, side // S), dtype=np.float32)
    msi = rng.random((4, side, side), dtype=np.float32)
    tracemalloc.start()
    try:
        stream = streamed_base("mtf_glp_hs", _reader(lr), _reader(msi), lr.shape[1:], S, None)
        for r, c in ((0, 0), (side // 2, side // 4), (side - 128, side - 128)):
            stream.window(r, c, 128, 128)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_follows_the_window_not_the_area():
    """Fit and windows on 64 bands: the peak is the same at 640^2 and 1280^2 (4x the area), well under one cube."""
    small, large = _peak_bytes(640), _peak_bytes(1280)
    cube = 64 * 1280 * 1280 * 4
    assert large < 1.2 * small and large < 0.5 * cube, f"peaks {small / 1e6:.0f} / {large / 1e6:.0f} MB"


def test_the_fit_reports_progress_and_can_be_cancelled(cave):
    lr, msi = cave
    seen = []
    stream = GLPStream(_reader(lr), _reader(msi), lr.shape[1:], S)
    stream.fit(block=8, progress=lambda f, m: seen.append((f, m)))
    assert len(seen) == 30 and seen[-1][0] == 1.0 and "fitting MTF-GLP-HS" in seen[0][1]

    def stop(f, m):
        if f > 0.3:
            raise Cancelled("cancelled by the user")

    with pytest.raises(Cancelled):
        GLPStream(_reader(lr), _reader(msi), lr.shape[1:], S).fit(block=8, progress=stop)


# ---------------------------------------------------------------------- through super-resolve, on GeoTIFFs


@pytest.fixture(scope="module")
def glp_pair(tmp_path_factory, shared_data):
    bands = list(range(0, 224, 20))
    p = make_enmap_pair(tmp_path_factory.mktemp("pair"), shared_data, bands=bands, scale=S, msi_bands=4)
    from core.normalization import BandNormalization

    md = make_metadata(len(bands), 4, scale=S, base="mtf_glp_hs", psf_sigma=1.5,
                       hsi_normalization=BandNormalization.fit(np.nan_to_num(p["lr_array"])),
                       msi_normalization=BandNormalization.fit(np.nan_to_num(p["msi_array"])))
    # k = 0: the model returns its conditioning input, so the output is the base itself.
    model = contract_model(tmp_path_factory.mktemp("m") / "glp.onnx", md, k_noisy=0.0, k_msi=0.0)
    return p, model


def test_super_resolve_writes_the_streamed_base_with_progress_in_every_phase(glp_pair, tmp_path):
    p, model = glp_pair
    seen = []
    res = superresolve(p["lr"], p["msi"], model, tmp_path / "sr.tif", steps=2, tile=24, overlap=8, threads=1,
                       progress=lambda f, m: seen.append((f, m)), degradation="model")
    out, _ = read_raster(res.out_path)
    lr, _ = read_raster(p["lr"])
    msi, _ = read_raster(p["msi"])
    c0 = (lr.shape[2] * S - msi.shape[2]) // S  # the MSI starts LR columns to the east
    lr = lr[:, :msi.shape[1] // S, c0:c0 + msi.shape[2] // S]
    whole = base_image(lr, msi, S, "mtf_glp_hs", 1.5)
    ok = np.isfinite(out)
    assert ok.mean() > 0.9
    near = np.zeros(out.shape[1:], bool)  # within the filters' reach of nodata, fills may differ
    bad = ~np.isfinite(msi).all(axis=0) | np.repeat(np.repeat(~np.isfinite(lr).all(axis=0), S, 0), S, 1)
    for r, c in zip(*np.nonzero(bad), strict=True):
        near[max(r - 24, 0):r + 24, max(c - 24, 0):c + 24] = True
    sel = ok & ~near[None]
    np.testing.assert_allclose(out[sel], whole[sel], rtol=0, atol=1e-4 * np.nanmax(np.abs(whole)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    messages = " | ".join(m for _, m in seen)
    assert "checking the inputs" in messages and "fitting MTF-GLP-HS" in messages and "tile" in messages


def test_an_empty_lr_band_becomes_nodata_instead_of_refusing(glp_pair, tmp_path):
    from core.raster_io import write_raster

    p, model = glp_pair
    lr, meta = read_raster(p["lr"])
    lr[2] = np.nan
    path = write_raster(tmp_path / "lr_dead_band.tif", lr, meta)
    res = superresolve(path, p["msi"], model, tmp_path / "sr.tif", steps=1, tile=32, overlap=8, threads=1)
    out, _ = read_raster(res.out_path)
    assert np.isnan(out[2]).all() and np.isfinite(out[[0, 1, 3]]).mean() > 0.9
    assert any("band(s) 3 have no valid pixel" in n and "lr_dead_band.tif" in n for n in res.notes)


def test_an_empty_layer_is_refused_by_name(glp_pair, tmp_path):
    from core.raster_io import write_raster
    from export.superresolve import InputMismatch

    p, model = glp_pair
    msi, meta = read_raster(p["msi"])
    path = write_raster(tmp_path / "msi_empty.tif", np.full_like(msi, np.nan), meta)
    with pytest.raises(InputMismatch, match="HR-MSI layer 'msi_empty.tif' has no valid pixel"):
        superresolve(p["lr"], path, model, tmp_path / "sr.tif", steps=1, threads=1)
    assert not (tmp_path / "sr.tif").exists()


def test_super_resolve_estimates_the_degradation_of_a_misregistered_pair(shared_data, tmp_path):
    """The base-only model (k = 0) on a pair 0.75 / -0.5 HR px off: the estimated PSF's base is several dB closer to
    the reference than the nominal one, and the log and the file's metadata say what was estimated."""
    from core.metrics import psnr
    from core.normalization import BandNormalization
    from export.testing import make_shifted_pair

    p = make_shifted_pair(tmp_path, shared_data, 4, (0.75, -0.5))
    lr, _ = read_raster(p["lr"])
    msi, _ = read_raster(p["msi"])
    md = make_metadata(lr.shape[0], msi.shape[0], scale=S, base="mtf_glp_hs", psf_sigma=4 / 2.3548,
                       hsi_normalization=BandNormalization.fit(lr), msi_normalization=BandNormalization.fit(msi))
    model = contract_model(tmp_path / "glp.onnx", md, k_noisy=0.0, k_msi=0.0)
    score, meta = {}, {}
    for deg in ("model", "estimate"):
        res = superresolve(p["lr"], p["msi"], model, tmp_path / f"{deg}.tif", steps=1, threads=1, degradation=deg,
                           check="off")  # the model's own result (with "best" the check replaces the nominal one)
        from osgeo import gdal

        out, _ = read_raster(res.out_path)
        score[deg] = psnr(p["hr"][p["good"]], out[p["good"]])
        meta[deg] = gdal.Open(res.out_path).GetMetadataItem("hsr_diff_degradation") or ""
    assert score["estimate"] > score["model"] + 3, score
    assert meta["model"] == "model" and meta["estimate"].startswith("estimated: offset dy +0.")


def test_super_resolve_denoises_a_noisy_lr_hsi_and_leaves_a_clean_one(shared_data, tmp_path):
    """The base-only model on a pair whose LR-HSI carries 30 dB of white noise: with the estimated degradation the
    LR-HSI is denoised (the output's metadata says so, with its SNR) and the result is closer to the reference than
    with the nominal degradation, which reads the LR-HSI as it is; the clean LR-HSI is not denoised."""
    import re

    from osgeo import gdal

    from core.metrics import psnr
    from core.normalization import BandNormalization
    from core.raster_io import write_raster
    from export.testing import make_shifted_pair

    p = make_shifted_pair(tmp_path, shared_data, 4, (0.0, 0.0))
    lr, meta = read_raster(p["lr"])
    msi, _ = read_raster(p["msi"])
    sd = np.abs(lr.mean(axis=(1, 2))) / 10 ** (30 / 20)
    noisy = (lr + np.random.default_rng(0).standard_normal(lr.shape) * sd[:, None, None]).astype(np.float32)
    noisy_path = write_raster(tmp_path / "lr_noisy.tif", noisy, meta)
    md = make_metadata(lr.shape[0], msi.shape[0], scale=S, base="mtf_glp_hs", psf_sigma=4 / 2.3548,
                       hsi_normalization=BandNormalization.fit(lr), msi_normalization=BandNormalization.fit(msi))
    model = contract_model(tmp_path / "glp.onnx", md, k_noisy=0.0, k_msi=0.0)
    score, said = {}, {}
    for name, path, deg in (("denoised", noisy_path, "estimate"), ("raw", noisy_path, "model"), ("clean", p["lr"], "estimate")):
        res = superresolve(path, p["msi"], model, tmp_path / f"{name}.tif", steps=1, threads=1, degradation=deg, check="off")
        out, _ = read_raster(res.out_path)
        score[name] = psnr(p["hr"][p["good"]], out[p["good"]])
        said[name] = gdal.Open(res.out_path).GetMetadataItem("hsr_diff_lr_denoise") or ""
    assert score["denoised"] > score["raw"] + 1.0, score
    got = re.match(r"LR-HSI SNR ([0-9.]+) dB \(estimated\): denoised in its signal subspace", said["denoised"])
    assert got and 28 < float(got.group(1)) < 32, said
    assert said["raw"] == "none" and said["clean"] == "none", said
