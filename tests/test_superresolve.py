"""End-to-end super-resolution of real georeferenced GeoTIFFs (crops of the EnMAP Potsdam scene)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from osgeo import osr

from core.pairing import check_pair
from core.progress import Cancelled
from core.raster_io import read_raster, subset_meta, write_raster
from export.metadata import ModelFileError
from export.superresolve import InputMismatch, main, superresolve
from export.testing import contract_model, make_enmap_pair, make_metadata

ROOT = Path(__file__).resolve().parents[1]
BANDS = list(range(0, 224, 10)) + [130]  # 24 EnMAP bands, the last one (131, 1-based) all nodata
C, M, S = len(BANDS), 4, 4


@pytest.fixture(scope="module")
def pair(tmp_path_factory, shared_data):
    return make_enmap_pair(tmp_path_factory.mktemp("pair"), shared_data, bands=BANDS, scale=S, msi_bands=M)


def _norms(pair):
    from core.normalization import BandNormalization

    lr = np.nan_to_num(pair["lr_array"], nan=0.0)
    return BandNormalization.fit(lr), BandNormalization.fit(np.nan_to_num(pair["msi_array"]))


@pytest.fixture(scope="module")
def contract(tmp_path_factory, pair):
    hn, mn = _norms(pair)
    md = make_metadata(C, M, scale=S, hsi_normalization=hn, msi_normalization=mn, wavelengths_nm=pair["meta"].wavelengths)
    return contract_model(tmp_path_factory.mktemp("m") / "contract.onnx", md)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, pair):
    pytest.importorskip("torch")
    from export.testing import export_untrained

    hn, mn = _norms(pair)
    path, _ = export_untrained(tmp_path_factory.mktemp("m") / "tiny.onnx", "tiny", C, M, scale=S, hsi_norm=hn, msi_norm=mn,
                               wavelengths_nm=pair["meta"].wavelengths)
    return path


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_output_georeference_wavelengths_and_nodata(pair, tiny, tmp_path):
    out, unc = tmp_path / "sr.tif", tmp_path / "sr_std.tif"
    res = superresolve(pair["lr"], pair["msi"], tiny, out, steps=3, seed=1, samples=2, tile=32, overlap=8, device="auto",
                       uncertainty_path=unc, threads=1)
    assert res.provider == "cpu" and res.tiles > 4 and res.samples == 2
    hr, meta = read_raster(out)
    lr_meta = pair["meta"]
    # The common area: the MSI starts one LR pixel east of the LR-HSI.
    geom = check_pair(pair["lr"], pair["msi"])
    rows, cols = 64, 96 - S * pair["drop_lr_cols"]
    assert hr.shape == (C, rows, cols) == (res.bands, res.rows, res.cols)
    assert meta.geotransform == pytest.approx(pair["geotransform"])
    assert meta.geotransform == pytest.approx(geom.geotransform)
    srs = osr.SpatialReference(wkt=meta.crs_wkt)
    assert srs.GetAuthorityCode(None) == "32633"
    np.testing.assert_allclose(meta.wavelengths, lr_meta.wavelengths, atol=1e-3)
    np.testing.assert_allclose(meta.fwhm, lr_meta.fwhm, atol=1e-3)
    assert meta.band_names == lr_meta.band_names
    np.testing.assert_array_equal(meta.bad_bands, lr_meta.bad_bands)
    assert meta.nodata[0] == -32768.0
    # Nodata: band 131 (twice in BANDS) everywhere; the LR nodata pixel (2, 3) -> its 4x4 block
    # (one LR column to the west of the common area) in every band; the MSI nodata box (rows
    # 40-49, cols 60-69 of the uncropped MSI) in every band.
    nan = np.isnan(hr)
    expect = np.zeros_like(nan)
    empty = np.isnan(pair["lr_array"]).all(axis=(1, 2))
    assert np.flatnonzero(empty).tolist() == [13, 23]
    expect[empty] = True
    off = S * pair["drop_lr_cols"]
    r, c = 2, 3 - pair["drop_lr_cols"]
    expect[:, r * S:(r + 1) * S, c * S:(c + 1) * S] = True
    expect[:, 40:50, 60 - off:70 - off] = True
    np.testing.assert_array_equal(nan, expect)
    # Values are in the LR-HSI's units (reflectance x 10000) and near the input spectra.
    lr_mean = np.nanmean(pair["lr_array"][~empty], axis=(1, 2))
    np.testing.assert_allclose(np.nanmean(hr[~empty], axis=(1, 2)), lr_mean, rtol=0.25, atol=200)
    std, smeta = read_raster(unc)
    assert std.shape == hr.shape and smeta.geotransform == meta.geotransform
    np.testing.assert_array_equal(np.isnan(std), nan)
    assert np.nanmin(std) >= 0 and np.nanmean(std) > 0
    assert smeta.band_names[0].startswith("std ")
    assert _files(tmp_path) == ["sr.tif", "sr_std.tif"]


def test_tiled_file_equals_whole_file(pair, contract, tmp_path):
    kw = dict(steps=4, sampler="ancestral", seed=5, threads=1)
    superresolve(pair["lr"], pair["msi"], contract, tmp_path / "whole.tif", tile=512, overlap=0, **kw)
    superresolve(pair["lr"], pair["msi"], contract, tmp_path / "tiled.tif", tile=24, overlap=8, **kw)
    a, _ = read_raster(tmp_path / "whole.tif")
    b, _ = read_raster(tmp_path / "tiled.tif")
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    scale = np.nanmax(np.abs(a))
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-4 * scale)


def test_seeded_file_runs_are_identical(pair, tiny, tmp_path):
    kw = dict(steps=2, sampler="ddim", eta=1.0, seed=9, tile=48, overlap=16, threads=1)
    superresolve(pair["lr"], pair["msi"], tiny, tmp_path / "a.tif", **kw)
    superresolve(pair["lr"], pair["msi"], tiny, tmp_path / "b.tif", **kw)
    np.testing.assert_array_equal(read_raster(tmp_path / "a.tif")[0], read_raster(tmp_path / "b.tif")[0])


def test_band_count_mismatch_is_refused(pair, contract, tmp_path):
    lr, meta = read_raster(pair["lr"])
    write_raster(tmp_path / "lr23.tif", lr[:23], subset_meta(meta, list(range(23))))
    with pytest.raises(InputMismatch, match=r"LR-HSI layer 'lr23\.tif' has 23 bands but the model 'contract\.onnx' "
                                            r"was trained for 24 hyperspectral bands"):
        superresolve(tmp_path / "lr23.tif", pair["msi"], contract, tmp_path / "out.tif")
    msi, mmeta = read_raster(pair["msi"])
    write_raster(tmp_path / "msi3.tif", msi[:3], subset_meta(mmeta, [0, 1, 2]))
    with pytest.raises(InputMismatch, match=r"HR-MSI layer 'msi3\.tif' has 3 bands but the model 'contract\.onnx' "
                                            r"was trained for 4 multispectral bands"):
        superresolve(pair["lr"], tmp_path / "msi3.tif", contract, tmp_path / "out.tif")
    with pytest.raises(InputMismatch, match=r"LR-HSI layer 'EnMAP crop'"):
        superresolve(tmp_path / "lr23.tif", pair["msi"], contract, tmp_path / "out.tif", lr_name="EnMAP crop")
    assert not (tmp_path / "out.tif").exists()


def test_scale_mismatch_is_refused(pair, tmp_path):
    hn, mn = _norms(pair)
    md = make_metadata(C, M, scale=3, hsi_normalization=hn, msi_normalization=mn)
    model = contract_model(tmp_path / "x3.onnx", md)
    with pytest.raises(InputMismatch, match=r"scale factor of 4 but the model 'x3\.onnx' was trained for 3"):
        superresolve(pair["lr"], pair["msi"], model, tmp_path / "out.tif")
    res = superresolve(pair["lr"], pair["msi"], model, tmp_path / "out.tif", steps=1, allow_scale_mismatch=True, threads=1)
    assert any("scale factor" in n for n in res.notes)


def test_foreign_model_is_refused(pair, tmp_path):
    foreign = contract_model(tmp_path / "someone_elses.onnx", None, hsi_bands=C, msi_bands=M)
    with pytest.raises(ModelFileError, match=r"someone_elses\.onnx.*not one exported by hsr-diff"):
        superresolve(pair["lr"], pair["msi"], foreign, tmp_path / "out.tif")
    assert _files(tmp_path) == ["someone_elses.onnx"]


def test_cancel_mid_run_leaves_no_file(pair, contract, tmp_path):
    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        return calls["n"] > 7  # after a few tiles have been written

    out = tmp_path / "out" / "sr.tif"
    out.parent.mkdir()
    with pytest.raises(Cancelled):
        superresolve(pair["lr"], pair["msi"], contract, out, steps=2, tile=24, overlap=8, samples=2,
                     uncertainty_path=out.parent / "std.tif", cancel=cancel, threads=1)
    assert calls["n"] == 8
    assert _files(out.parent) == []


def test_failure_mid_run_leaves_no_finished_looking_file(pair, contract, tmp_path):
    def progress(fraction, message):
        if fraction > 0.5:
            raise RuntimeError("disk on fire")

    out = tmp_path / "sr.tif"
    out.write_bytes(b"an older result")  # an existing file is only replaced on success
    with pytest.raises(RuntimeError, match="disk on fire"):
        superresolve(pair["lr"], pair["msi"], contract, out, steps=2, tile=24, overlap=8, progress=progress, threads=1)
    assert _files(tmp_path) == ["sr.tif"] and out.read_bytes() == b"an older result"


def test_argument_errors(pair, contract, tmp_path):
    with pytest.raises(ValueError, match="samples >= 2"):
        superresolve(pair["lr"], pair["msi"], contract, tmp_path / "o.tif", uncertainty_path=tmp_path / "u.tif")
    with pytest.raises(ValueError, match="overwrite an input"):
        superresolve(pair["lr"], pair["msi"], contract, pair["msi"])
    from export.providers import ProviderError, gpu_provider_usable

    if not gpu_provider_usable("cuda"):
        with pytest.raises(ProviderError, match="'cuda' was requested"):
            superresolve(pair["lr"], pair["msi"], contract, tmp_path / "o.tif", device="cuda")
    assert _files(tmp_path) == []


def test_cli(pair, contract, tmp_path, capsys):
    out = tmp_path / "cli.tif"
    rc = main(["--lr", str(pair["lr"]), "--msi", str(pair["msi"]), "--model", str(contract), "--out", str(out), "--steps", "3",
               "--tile", "32", "--overlap", "8", "--threads", "1", "--samples", "2", "--uncertainty", str(tmp_path / "u.tif")])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "100.0%" in cap.err and "tile" in cap.err  # the progress bar
    assert f"{out}: {C} bands x 64 x 92, scale 4" in cap.out
    assert out.exists() and (tmp_path / "u.tif").exists()
    rc = main(["--lr", str(pair["lr"]), "--msi", str(pair["msi"]), "--model", str(pair["lr"]), "--out", str(tmp_path / "x.tif"),
               "-q"])
    assert rc == 1 and "not a valid ONNX model file" in capsys.readouterr().err
    # As a module, in a fresh interpreter.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "export.superresolve", "--lr", str(pair["lr"]), "--msi", str(pair["msi"]),
                        "--model", str(contract), "--out", str(tmp_path / "m.tif"), "--steps", "2", "--threads", "1"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m.tif").exists()


def test_back_projection_brings_the_result_nearer_the_lr_hsi(pair, contract, tmp_path):
    from osgeo import gdal

    from core.sensor import degrade_spatial

    kw = dict(steps=2, seed=0, threads=1, check="off")
    off = superresolve(pair["lr"], pair["msi"], contract, tmp_path / "off.tif", **kw)
    on = superresolve(pair["lr"], pair["msi"], contract, tmp_path / "on.tif", back_project=True, **kw)
    assert gdal.Open(str(on.out_path)).GetMetadataItem("hsr_diff_consistency").startswith("noise-aware back-projection")
    assert gdal.Open(str(off.out_path)).GetMetadataItem("hsr_diff_consistency") == "none"
    w = check_pair(pair["lr"], pair["msi"]).lr_window  # the LR pixels of the pair's common area, their interior
    lr = pair["lr_array"][:, w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width][:, 1:-1, 1:-1]
    misfit = []
    for res in (off, on):
        out, _ = read_raster(res.out_path)
        misfit.append(np.nanmean(np.abs(degrade_spatial(out, S)[:, 1:-1, 1:-1] - lr)))
    assert misfit[1] < 0.8 * misfit[0]
