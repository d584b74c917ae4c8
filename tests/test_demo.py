"""The demo end to end on the bundled sample, with a tiny model trained and exported here on the training split.

Also: the sample lies inside the held-out region of bench/split.md, the bundled-model choice, and the
benchmark's ``hsrdiff`` rows (same code path, same pixels) agreeing with the demo.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.pairing import check_pair
from core.raster_io import read_meta, read_raster
from export.defaults import DEFAULT_STEPS

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "data"


def _load_demo():
    spec = importlib.util.spec_from_file_location("hsr_demo", ROOT / "examples" / "demo.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


demo = _load_demo()


@pytest.fixture(scope="module")
def model(tmp_path_factory, shared_data):
    """A tiny CDFormer trained for a few steps on the EnMAP training split (scale 3, Sentinel-2), exported to ONNX."""
    torch = pytest.importorskip("torch")  # the test environment has torch; a skip here is reported, not silent
    from core.train import load_config
    from core.training.trainer import Trainer
    from export.onnx_export import export_checkpoint

    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("run")
    cfg = load_config(str(ROOT / "configs" / "tiny.yaml"), [
        f"run_dir={run_dir}", "device=cpu", "threads=1",
        f"data.hsi=[{shared_data / 'enmap_potsdam_southeast.tif'}, {shared_data / 'enmap_potsdam_north.tif'}]",
        "data.scale=3", "data.srf=sentinel2", "data.val_region=[63, 0, 66]",  # bench/split.md, scale 3
        "stages=[{steps: 6, patch: 24, batch: 2}]", "log_every=0", "val.every=0", "checkpoint.every=6",
    ])
    Trainer(cfg, log=lambda *a: None).run()
    return export_checkpoint(run_dir, run_dir.parent / "tiny_enmap_s2_x3.onnx")


@pytest.fixture(scope="module")
def demo_run(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_out")
    t0 = time.perf_counter()
    result = demo.run_demo(model, out_dir=out, log=lambda *a: None, show_progress=False)
    return result, out, time.perf_counter() - t0


def test_sample_files_are_a_georeferenced_pair_from_the_held_out_region(shared_data):
    lr, msi, ref = (read_meta(SAMPLE / n) for n in (demo.LR, demo.MSI, demo.REF))
    geom = check_pair(SAMPLE / demo.LR, SAMPLE / demo.MSI)
    assert geom.scale == 3 and (geom.msi_window.height, geom.msi_window.width) == (60, 60)
    assert (lr.bands, lr.rows, lr.cols) == (218, 20, 20) and (msi.bands, msi.rows, msi.cols) == (10, 60, 60)
    assert ref.shape == (218, 60, 60) and ref.geotransform == msi.geotransform and "32633" in ref.crs_wkt
    assert list(msi.band_names) == ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
    np.testing.assert_allclose(lr.wavelengths, ref.wavelengths)
    # Where the sample sits in the source file: inside rows 64-127, cols 0-63 (the held-out square).
    src = read_meta(shared_data / "enmap_potsdam_southeast.tif")
    col0 = (ref.geotransform[0] - src.geotransform[0]) / src.geotransform[1]
    row0 = (ref.geotransform[3] - src.geotransform[3]) / src.geotransform[5]
    assert (row0, col0) == (66, 2)
    assert 64 <= row0 and row0 + ref.rows <= 128 and 0 <= col0 and col0 + ref.cols <= 64
    # ... and the pixels are the source's, valid bands only.
    cube, _ = read_raster(shared_data / "enmap_potsdam_southeast.tif")
    good = np.flatnonzero(src.good_bands)
    ref_cube, _ = read_raster(SAMPLE / demo.REF)
    np.testing.assert_array_equal(ref_cube, cube[good, 66:126, 2:62])
    total = sum((SAMPLE / n).stat().st_size for n in (demo.LR, demo.MSI, demo.REF))
    assert total < 5e6


def test_model_was_trained_on_the_training_split_only(model):
    from export.metadata import read_metadata

    data = read_metadata(model).training["data"]
    assert data["val_region"] == [63, 0, 66]
    assert Path(data["files"][0]).name == "enmap_potsdam_southeast.tif"  # val_region refers to the first file


def test_demo_end_to_end(demo_run):
    result, out, _ = demo_run
    # The super-resolved GeoTIFF sits exactly on the HR-MSI grid, with the HSI's bands.
    hr = read_meta(result.row("hsrdiff").path)
    msi = read_meta(SAMPLE / demo.MSI)
    ref = read_meta(SAMPLE / demo.REF)
    assert Path(result.row("hsrdiff").path).parent == out
    assert hr.geotransform == msi.geotransform and (hr.rows, hr.cols) == (msi.rows, msi.cols)
    assert hr.crs_wkt and check_pair(SAMPLE / demo.LR, result.row("hsrdiff").path).scale == 3  # same CRS as the inputs
    from osgeo import osr

    a, b = osr.SpatialReference(), osr.SpatialReference()
    a.ImportFromWkt(hr.crs_wkt)
    b.ImportFromWkt(msi.crs_wkt)
    assert a.IsSame(b)
    assert hr.bands == ref.bands == 218
    np.testing.assert_allclose(hr.wavelengths, ref.wavelengths)
    arr, _ = read_raster(result.row("hsrdiff").path)
    assert np.isfinite(arr).all() and arr.std() > 0
    # The table has HSR-Diff, bicubic and the classical methods, every metric finite.
    methods = [r.method for r in result.rows]
    assert methods[0] == "hsrdiff" and "bicubic" in methods and {"gsa", "mtf_glp_hs"} <= set(methods)
    for r in result.rows:
        assert all(np.isfinite(r.metrics[k]) for k in ("psnr", "ssim", "sam", "ergas")), r
        assert r.seconds > 0
    # Classical methods on this real scene are far above bicubic (a sanity check on the comparison itself).
    assert result.row("mtf_glp_hs").metrics["psnr"] > result.row("bicubic").metrics["psnr"] + 10
    for label in ("HSR-Diff", "bicubic", "GSA", "MTF-GLP-HS"):
        assert f"| {label} |" in result.table
    md = (out / "demo_table.md").read_text()
    assert result.table in md and "ddim" in md and f"{DEFAULT_STEPS} steps" in md
    # The preview is a real picture, not an empty canvas.
    import matplotlib.image as mpimg

    png = out / "demo_preview.png"
    assert result.preview_path == png and png.stat().st_size > 50_000
    img = mpimg.imread(png)[..., :3]
    assert img.shape[0] > 600 and img.shape[1] > 1200
    non_white = (img < 0.95).any(axis=2).mean()
    assert non_white > 0.15 and img.std() > 0.1


def test_benchmark_hsrdiff_rows_match_the_demo(model, demo_run):
    """bench/quality.py's hsrdiff on the held-out scene = the demo on the sample (same pixels, same code path)."""
    from bench.quality import run
    from bench.scenes import SCENES

    holdout = next(s for s in SCENES if s.name == "enmap_southeast_holdout")
    north = next(s for s in SCENES if s.name == "enmap_potsdam_north")
    assert holdout.held_out and not north.held_out
    skipped = []
    rows = run(["bicubic", "hsrdiff"], [3, 4], [holdout, north], False, str(model), log=lambda *a: None, skipped=skipped)
    got = {(r["scene"], r["scale"], r["method"]): r for r in rows}
    demo_rows = {r.method: r.metrics for r in demo_run[0].rows}
    for method in ("hsrdiff", "bicubic"):
        for k in ("psnr", "ssim", "sam", "ergas"):
            assert got[("enmap_southeast_holdout", 3, method)][k] == pytest.approx(demo_rows[method][k], rel=1e-5), (method, k)
    assert got[("enmap_southeast_holdout", 3, "hsrdiff")]["model"] == Path(model).name
    # Not on training pixels, and not at a scale the model was not trained for - each skip says why.
    assert ("enmap_potsdam_north", 3, "hsrdiff") not in got and ("enmap_southeast_holdout", 4, "hsrdiff") not in got
    reasons = {(k["scene"], k["scale"], k["method"]): k["reason"] for k in skipped}
    assert "held-out" in reasons[("enmap_potsdam_north", None, "hsrdiff")]
    assert "trained for 3" in reasons[("enmap_southeast_holdout", 4, "hsrdiff")]
    assert ("enmap_potsdam_north", 4, "bicubic") in got


def test_bundled_model_choice(model, tmp_path):
    from export.testing import contract_model, make_metadata

    lr, msi = SAMPLE / demo.LR, SAMPLE / demo.MSI
    with pytest.raises(demo.DemoError, match="no bundled model"):
        demo.choose_model(lr, msi, None, tmp_path)
    contract_model(tmp_path / "cave_x4.onnx", make_metadata(31, 3, scale=4))
    with pytest.raises(demo.DemoError, match=r"cave_x4.onnx: HSI bands: 218 bands given, the model takes 31"):
        demo.choose_model(lr, msi, None, tmp_path)
    shutil.copy(model, tmp_path / "enmap_s2_x3.onnx")
    path, md = demo.choose_model(lr, msi, None, tmp_path)
    assert path.name == "enmap_s2_x3.onnx" and (md.hsi_bands, md.msi_bands, md.scale) == (218, 10, 3)
    with pytest.raises(demo.DemoError, match="does not fit LR-HSI layer .sample_lr_hsi.tif."):
        demo.choose_model(lr, msi, tmp_path / "cave_x4.onnx")


def test_demo_cli_without_a_fitting_model_says_so(tmp_path, capsys):
    from export.testing import contract_model, make_metadata

    wrong = contract_model(tmp_path / "wrong.onnx", make_metadata(31, 3, scale=4))
    assert demo.main(["--model", str(wrong), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "does not fit LR-HSI layer" in err and "218 HSI bands, 10 MSI bands" in err
    assert demo.main(["--model", str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "out")]) == 2
    assert "no such model file" in capsys.readouterr().err
