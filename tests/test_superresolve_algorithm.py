"""Super-resolve and Train through the real Processing framework, qgis_process, the modeler and batch runs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from qgis.core import QgsProcessingException, QgsProcessingFeedback
from qgis_helpers import ROOT, enable_plugin, qgis_env, run_algorithm

from core.jobs.simulate import simulate_files
from core.raster_io import Window, read_meta, read_raster, write_raster

ENMAP = "enmap_potsdam_southeast.tif"
MODELS = ROOT / "models"


def run(alg: str, params: dict, feedback=None) -> dict:
    import processing

    return processing.run(f"hsrdiff:{alg}", params, feedback=feedback)


@pytest.fixture(scope="module")
def pairs(shared_data, tmp_path_factory):
    """Two real EnMAP pairs (224 bands, Sentinel-2 at scale 3), as a batch would hold them."""
    d = tmp_path_factory.mktemp("pairs")
    hr, meta = read_raster(shared_data / ENMAP)
    out = []
    for i, rows in enumerate((slice(0, 48), slice(72, 120))):
        write_raster(d / f"hr{i}.tif", hr[:, rows, :48], meta, geotransform=meta.window_geotransform(Window(0, rows.start, 48, 48)))
        simulate_files(d / f"hr{i}.tif", d / f"lr{i}.tif", d / f"msi{i}.tif", "sentinel2", 3)
        out.append((d / f"lr{i}.tif", d / f"msi{i}.tif", d / f"hr{i}.tif"))
    return d, out


class Recorder(QgsProcessingFeedback):
    """Keeps what an algorithm reports: progress values, progress texts and log lines."""

    def __init__(self):
        super().__init__()
        self.values, self.texts, self.infos, self.warnings = [], [], [], []

    def setProgress(self, progress):  # noqa: N802 (QGIS API name)
        super().setProgress(progress)
        self.values.append(progress)

    def setProgressText(self, text):  # noqa: N802 (QGIS API name)
        super().setProgressText(text)
        self.texts.append(text)

    def pushInfo(self, info):  # noqa: N802 (QGIS API name)
        super().pushInfo(info)
        self.infos.append(info)

    def pushWarning(self, warning):  # noqa: N802 (QGIS API name)
        super().pushWarning(warning)
        self.warnings.append(warning)


def test_superresolve_with_bundled_model(qgis_app, pairs):
    d, ((lr, msi, hr), _) = pairs
    fb = Recorder()
    res = run("superresolve", {"LR_HSI": str(lr), "HR_MSI": str(msi), "STEPS": 4, "OUTPUT": str(d / "sr.tif"),
                               "SAMPLES": 2, "UNCERTAINTY": str(d / "std.tif")}, feedback=fb)
    # Every phase moves the bar, in order, and the output size is logged before the tiles run.
    assert fb.values == sorted(fb.values) and fb.values[-1] == 100
    texts = " | ".join(fb.texts)
    assert texts.index("checking the inputs") < texts.index("fitting MTF-GLP-HS") < texts.index("step 1/4, tile 1/1")
    assert any(i.startswith("output: 224 bands x 48 x 48 px") for i in fb.infos)
    out, om = read_raster(res["OUTPUT"])
    mm, hm = read_meta(msi), read_meta(hr)
    assert om.geotransform == mm.geotransform and om.crs_wkt == mm.crs_wkt
    assert out.shape == (224, 48, 48)
    np.testing.assert_allclose(om.wavelengths, hm.wavelengths, atol=1e-3)
    assert np.isnan(out[~hm.good_bands]).all() and np.isfinite(out[hm.good_bands]).all()
    std, _ = read_raster(res["UNCERTAINTY"])
    assert np.nanmax(std) > 0 and np.nanmin(std) >= 0


def test_batch_of_pairs(qgis_app, pairs):
    """What the batch dialog does: one processing.run per row, each with its own output."""
    d, rows = pairs
    for i, (lr, msi, _) in enumerate(rows):
        res = run("superresolve", {"LR_HSI": str(lr), "HR_MSI": str(msi), "STEPS": 2, "OUTPUT": str(d / f"batch{i}.tif")})
        assert read_meta(res["OUTPUT"]).geotransform == read_meta(msi).geotransform
    assert read_meta(d / "batch0.tif").geotransform != read_meta(d / "batch1.tif").geotransform


def test_bad_inputs_are_named(qgis_app, pairs, tmp_path, shared_data):
    d, ((lr, msi, _), _) = pairs
    cave = MODELS / "hsrdiff_cave_x4.onnx"
    misfit = r"model 'hsrdiff_cave_x4.onnx' does not fit LR-HSI layer 'lr0' / HR-MSI layer 'msi0'.*224 bands given, the model takes 31"
    with pytest.raises(QgsProcessingException, match=misfit):
        run("superresolve", {"LR_HSI": str(lr), "HR_MSI": str(msi), "MODEL": str(cave), "OUTPUT": str(tmp_path / "a.tif")})
    (tmp_path / "corrupt.onnx").write_bytes(b"\x08\x07garbage" * 50)
    with pytest.raises(QgsProcessingException, match="corrupt.onnx"):
        run("superresolve", {"LR_HSI": str(lr), "HR_MSI": str(msi), "MODEL": str(tmp_path / "corrupt.onnx"),
                             "OUTPUT": str(tmp_path / "b.tif")})
    with pytest.raises(QgsProcessingException, match="does not exist|not writable"):
        run("superresolve", {"LR_HSI": str(lr), "HR_MSI": str(msi), "OUTPUT": str(tmp_path / "no" / "dir" / "c.tif")})
    # CRS mismatch, named: the MSI moved to another UTM zone.
    from osgeo import osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32632)
    arr, mm = read_raster(msi)
    write_raster(tmp_path / "msi_utm32.tif", arr, mm, crs_wkt=srs.ExportToWkt())
    with pytest.raises(QgsProcessingException, match="CRS mismatch: LR-HSI layer 'lr0'.*HR-MSI layer 'msi_utm32'"):
        run("superresolve", {"LR_HSI": str(lr), "HR_MSI": str(tmp_path / "msi_utm32.tif"), "OUTPUT": str(tmp_path / "d.tif")})
    assert not list(tmp_path.glob("*.tif")) or [p.name for p in tmp_path.glob("*.tif")] == ["msi_utm32.tif"]


def test_cancel_leaves_no_output(qgis_app, pairs, tmp_path):
    d, ((lr, msi, _), _) = pairs

    class CancelAfterFirstStep(QgsProcessingFeedback):
        def setProgress(self, progress):  # noqa: N802 (QGIS API name)
            super().setProgress(progress)
            if progress > 0:
                self.cancel()

    with pytest.raises(QgsProcessingException, match="Cancelled"):
        run("superresolve", {"LR_HSI": str(lr), "HR_MSI": str(msi), "STEPS": 10, "OUTPUT": str(tmp_path / "x.tif")},
            feedback=CancelAfterFirstStep())
    assert list(tmp_path.iterdir()) == []


def test_qgis_process_superresolve_and_model3(pairs, tmp_path):
    d, ((lr, msi, hr), _) = pairs
    import site

    # qgis_process runs Debian's Python: give it this venv's packages (onnxruntime) as a user would install them.
    env = qgis_env(tmp_path / "profile", pythonpath=os.pathsep.join([str(ROOT), *site.getsitepackages()]))
    enable_plugin(env)
    res = run_algorithm("hsrdiff:superresolve", {"LR_HSI": lr, "HR_MSI": msi, "STEPS": 2, "OUTPUT": tmp_path / "cli.tif"}, env)
    assert read_meta(res["results"]["OUTPUT"]).shape == (224, 48, 48)
    # The shipped graphical model: Simulate -> Super-resolve -> Assess, on a real crop.
    model3 = ROOT / "examples" / "simulate_superresolve_assess.model3"
    res = run_algorithm(str(model3), {"reference": hr, "model": MODELS / "hsrdiff_enmap_s2_x3.onnx", "scale": 3, "steps": 2,
                                      "super_resolve:sharpened": tmp_path / "m3.tif", "assess:quality_csv": tmp_path / "q.csv"}, env)
    text = (tmp_path / "q.csv").read_text()
    assert text.startswith("metric,value") and "sam" in text
    assert read_meta(tmp_path / "m3.tif").shape == (224, 48, 48), res


def test_train_then_superresolve(qgis_app, shared_data, tmp_path):
    """Train a tiny model from a reference crop (supervised), use it, then cancel a second run and resume it."""
    cube, meta = read_raster(shared_data / "cave_balloons.tif")
    write_raster(tmp_path / "ref.tif", cube[:, :64, :64], meta)
    params = {"REFERENCE": str(tmp_path / "ref.tif"), "SCALE": 4, "SENSOR": 2, "PRESET": 0, "ITERATIONS": 6, "PATCH": 32,
              "BATCH": 2, "MODEL": str(tmp_path / "m.onnx"), "CHECKPOINTS": str(tmp_path / "ckpt")}
    res = run("train", params)
    from export.metadata import read_metadata

    md = read_metadata(res["MODEL"])
    assert (md.hsi_bands, md.msi_bands, md.scale, md.preset) == (31, 3, 4, "tiny")
    assert md.training["steps"] == 6

    class CancelSoon(QgsProcessingFeedback):
        def setProgress(self, progress):  # noqa: N802 (QGIS API name)
            super().setProgress(progress)
            self.cancel()

    params2 = dict(params, MODEL=str(tmp_path / "m2.onnx"), CHECKPOINTS=str(tmp_path / "ckpt2"), ITERATIONS=400)
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        run("train", params2, feedback=CancelSoon())
    assert not (tmp_path / "m2.onnx").exists() and (tmp_path / "ckpt2" / "latest").exists()
    with pytest.raises(QgsProcessingException, match="needs the multispectral sensor"):
        run("train", dict(params, SENSOR=None, MODEL=str(tmp_path / "m3.onnx")))


def test_no_bundled_model_fits_so_one_is_trained_on_the_pair(qgis_app, tmp_path, shared_data):
    pytest.importorskip("torch")
    from export.testing import make_enmap_pair

    p = make_enmap_pair(tmp_path, shared_data, bands=list(range(0, 224, 10)) + [130], scale=2, msi_bands=4,
                        lr_nodata_pixel=None, msi_nodata_box=None)  # 24 bands at scale 2: no bundled model
    base = {"LR_HSI": str(p["lr"]), "HR_MSI": str(p["msi"]), "OUTPUT": str(tmp_path / "sr.tif")}
    with pytest.raises(QgsProcessingException, match=r"(?s)no bundled model.*ADAPT_SECONDS"):
        run("superresolve", base)
    fb = Recorder()
    res = run("superresolve", base | {"ADAPT_SECONDS": 25, "STEPS": 1, "ADAPTED_MODEL": str(tmp_path / "pair.onnx")},
              feedback=fb)
    assert any("training a model on this pair for 25 s" in w for w in fb.warnings)
    assert fb.values == sorted(fb.values) and fb.values[-1] == 100
    out, _ = read_raster(res["OUTPUT"])
    assert out.shape[0] == 24 and np.isfinite(out).any()
    if any("did not beat its MTF-GLP-HS base" in w for w in fb.warnings):  # the pair's validation said so: the base
        assert "ADAPTED_MODEL" not in res and not (tmp_path / "pair.onnx").exists()
        assert read_meta(res["OUTPUT"]).geotransform == read_meta(p["msi"]).geotransform
    else:
        assert any(i.startswith("model trained on the pair pair_model.onnx") for i in fb.infos)
        assert res["ADAPTED_MODEL"] == str(tmp_path / "pair.onnx") and (tmp_path / "pair.onnx").exists()
    assert not list(Path(tempfile.gettempdir()).glob("hsr_diff_pair_model_*"))  # the training folder is gone
