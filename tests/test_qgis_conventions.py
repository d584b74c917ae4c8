"""QGIS conventions and results that look right: tags, short descriptions, help pages, tr(), provider version,
named true-colour result layers, int16 outputs, overviews, and the Simulate / Train parameter rules."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import QgsApplication, QgsProcessingException, QgsProject

from core.jobs.classical import fuse_classical_files
from core.jobs.simulate import simulate_files
from core.raster_io import INT16_NODATA, OVERVIEW_MIN_SIZE, RasterReader, RasterWriter, Window, read_raster, write_raster
from core.rendering import default_rgb

ROOT = Path(__file__).resolve().parents[1]
ENMAP = "enmap_potsdam_southeast.tif"


def provider():
    return QgsApplication.processingRegistry().providerById("hsrdiff")


@pytest.fixture(scope="module")
def enmap_pair(shared_data, tmp_path_factory):
    """A real EnMAP crop (224 bands, reflectance x 10000) and its simulated Sentinel-2 pair at scale 3."""
    d = tmp_path_factory.mktemp("conv")
    hr, meta = read_raster(shared_data / ENMAP)
    write_raster(d / "hr.tif", hr[:, 24:72, :48], meta, geotransform=meta.window_geotransform(Window(0, 24, 48, 48)))
    simulate_files(d / "hr.tif", d / "enmap_lr.tif", d / "s2_msi.tif", "sentinel2", 3)
    return d


@pytest.fixture(scope="module")
def cave_pair(shared_data, tmp_path_factory):
    """A real CAVE crop (31 bands, 400-700 nm, reflectance 0-1) and its RGB pair at scale 4, a nodata corner in the LR-HSI."""
    d = tmp_path_factory.mktemp("cave")
    cube, meta = read_raster(shared_data / "cave_balloons.tif")
    write_raster(d / "hr.tif", cube[:, 64:128, 64:128], meta)
    simulate_files(d / "hr.tif", d / "lr.tif", d / "msi.tif", "nikon_d700", 4)
    lr, lm = read_raster(d / "lr.tif")
    lr[:, :3, :3] = np.nan
    write_raster(d / "lr_nodata.tif", lr, lm)
    return d


# ----------------------------------------------------------------------- toolbox metadata


def test_every_algorithm_has_tags_a_short_description_and_a_shipped_help_page(qgis_app):
    algs = provider().algorithms()
    assert len(algs) >= 7
    for alg in algs:
        assert alg.tags() and all(t.strip() for t in alg.tags()), alg.id()
        short = alg.shortDescription()
        assert short and "\n" not in short and len(short) < 130 and short != alg.displayName(), alg.id()
        url = alg.helpUrl()
        assert url.startswith("file://"), (alg.id(), url)
        from qgis.PyQt.QtCore import QUrl

        page = Path(QUrl(url).toLocalFile())
        assert page.is_file() and page.name == f"{alg.name()}.html", url
        html = page.read_text(encoding="utf-8")
        # The page documents every parameter and output the algorithm has.
        names = {p.name() for p in alg.parameterDefinitions()} | {o.name() for o in alg.outputDefinitions()}
        missing = sorted(n for n in names if f"<code>{n}</code>" not in html)
        assert not missing, f"{page.name} does not document {missing}"
        assert alg.displayName() in html


def test_help_pages_link_only_to_files_that_exist():
    pages = sorted((ROOT / "docs" / "help").glob("*.html"))
    assert {p.stem for p in pages} >= {"index", "superresolve", "classicalfusion", "train", "simulate", "estimatesensor", "assess",
                                       "checkdependencies", "preparepair"}
    for page in pages:
        for target in re.findall(r'(?:href|src)="([^"#:]+)"', page.read_text(encoding="utf-8")):
            assert (page.parent / target).is_file(), f"{page.name} links to {target}, which does not exist"


def test_toolbox_search_finds_superresolve_by_its_tags(qgis_app):
    from qgis.gui import QgsProcessingToolboxProxyModel
    from qgis.PyQt.QtCore import QModelIndex

    model = QgsProcessingToolboxProxyModel(None, QgsApplication.processingRegistry())

    def found(parent=None) -> set[str]:
        parent = parent or QModelIndex()
        ids = set()
        for row in range(model.rowCount(parent)):
            index = model.index(row, 0, parent)
            alg = model.toolboxModel().algorithmForIndex(model.mapToSource(index))
            if alg is not None:
                ids.add(alg.id())
            ids |= found(index)
        return ids

    for query in ("pansharpening", "fusion", "EnMAP", "Sentinel-2", "hyperspectral"):
        model.setFilterString(query)
        assert "hsrdiff:superresolve" in found(), query
    model.setFilterString("QNR")
    assert "hsrdiff:assess" in found() and "hsrdiff:superresolve" not in found()


def test_provider_version_comes_from_metadata(qgis_app):
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "hsr_diff_plugin" / "metadata.txt", encoding="utf-8")
    version = parser.get("general", "version")
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert provider().versionInfo() == version and version in provider().longName()


def test_user_visible_strings_go_through_tr(qgis_app):
    """A translator that upper-cases the plugin's context shows which strings are translatable."""
    from qgis.PyQt.QtCore import QCoreApplication, QTranslator

    class Shout(QTranslator):
        def translate(self, context, source, disambiguation=None, n=-1):
            return source.upper() if context == "HsrDiff" else ""

    shout = Shout()
    QCoreApplication.installTranslator(shout)
    try:
        registry = QgsApplication.processingRegistry()
        for alg_id in ("superresolve", "classicalfusion", "simulate", "estimatesensor", "train"):
            alg = registry.createAlgorithmById(f"hsrdiff:{alg_id}")
            texts = [alg.displayName(), alg.group(), alg.shortDescription(), alg.shortHelpString(), *alg.tags()]
            texts += [p.description() for p in alg.parameterDefinitions()]
            assert all(t == t.upper() for t in texts), [t for t in texts if t != t.upper()]
    finally:
        QCoreApplication.removeTranslator(shout)
    assert registry.createAlgorithmById("hsrdiff:superresolve").displayName() == "Super-resolve hyperspectral image (HSR-Diff)"


def test_plugin_zip_ships_the_help_pages(qgis_app):
    subprocess.run([sys.executable, str(ROOT / "build.py"), "package"], check=True, cwd=ROOT, capture_output=True)
    zips = sorted((ROOT / "dist").glob("hsr_diff_plugin-*.zip"), key=lambda p: p.stat().st_mtime)
    with zipfile.ZipFile(zips[-1]) as zf:
        names = set(zf.namelist())
    for alg in provider().algorithms():
        assert f"hsr_diff_plugin/docs/help/{alg.name()}.html" in names
    assert {"hsr_diff_plugin/docs/help/style.css", "hsr_diff_plugin/docs/img/result_true_colour.png"} <= names


# ----------------------------------------------------------------------- which bands are red, green, blue


def test_default_rgb_enmap_true_colour(shared_data):
    meta = RasterReader(shared_data / ENMAP).meta
    rgb = default_rgb(meta.bands, meta.wavelengths, meta.good_bands)
    assert rgb.label == "true colour"
    for band, target in zip(rgb.bands, (640, 550, 470), strict=True):
        assert abs(meta.wavelengths[band - 1] - target) == np.min(np.abs(meta.wavelengths - target)) < 5


def test_default_rgb_cave_sentinel2_and_no_visible():
    cave = np.arange(400.0, 701.0, 10.0)
    assert default_rgb(31, cave).bands == (25, 16, 8)  # 640, 550, 470 nm
    s2 = [490, 560, 665, 705, 740, 783, 842, 865, 1610, 2190]
    assert default_rgb(10, s2).bands == (3, 2, 1) and default_rgb(10, s2).label == "true colour"
    # No blue band: colour infrared from the NIR, red and green bands.
    nir_red_green = np.arange(545.0, 1001.0, 20.0)
    rgb = default_rgb(nir_red_green.size, nir_red_green)
    assert rgb.label == "colour infrared" and [nir_red_green[b - 1] for b in rgb.bands] == [865, 645, 545]
    # SWIR only, no wavelengths, fewer than three bands: the first bands.
    assert default_rgb(50, np.linspace(1000, 2500, 50)).bands == (1, 2, 3)
    assert default_rgb(5).label == "bands 1-3" and default_rgb(2).bands == (1, 2, 2)
    # A bad band is never shown: the next nearest takes its place.
    good = np.ones(31, bool)
    good[24] = False
    assert default_rgb(31, cave, good).red in (24, 26)
    with pytest.raises(ValueError, match="3 wavelengths given for 4 bands"):
        default_rgb(4, [500, 600, 700])


# ----------------------------------------------------------------------- output type and overviews


def test_int16_output_round_trips(cave_pair, tmp_path):
    """The same fusion as float32 and as int16 x 10000: values / 10000 within 1e-4, nodata -32768 where nodata."""
    d = cave_pair
    fuse_classical_files("bicubic", d / "lr_nodata.tif", d / "msi.tif", tmp_path / "f.tif")
    fuse_classical_files("bicubic", d / "lr_nodata.tif", d / "msi.tif", tmp_path / "i.tif", output_type="int16")
    ref, _ = read_raster(tmp_path / "f.tif")
    ds = gdal.Open(str(tmp_path / "i.tif"))
    band = ds.GetRasterBand(1)
    assert gdal.GetDataTypeName(band.DataType) == "Int16" and band.GetScale() == pytest.approx(1e-4)
    assert band.GetNoDataValue() == INT16_NODATA
    raw = ds.ReadAsArray()
    nodata = np.isnan(ref)
    assert nodata.any() and (raw[nodata] == INT16_NODATA).all() and (raw[~nodata] != INT16_NODATA).all()
    back, meta = read_raster(tmp_path / "i.tif")  # the band scale applied on reading
    assert (np.isnan(back) == nodata).all()
    assert np.abs(back[~nodata] - ref[~nodata]).max() <= 0.5e-4 + 1e-7
    np.testing.assert_allclose(raw[~nodata] / 10000, ref[~nodata], atol=1e-4)
    np.testing.assert_allclose(meta.wavelengths, read_raster(tmp_path / "f.tif")[1].wavelengths)
    with pytest.raises(ValueError, match="unknown output type 'int8'"):
        fuse_classical_files("bicubic", d / "lr.tif", d / "msi.tif", tmp_path / "x.tif", output_type="int8")
    assert not (tmp_path / "x.tif").exists()


def test_int16_writer_scales_clips_and_needs_nodata(tmp_path):
    a = np.array([[[0.12344, -0.5, 3.5, np.nan]]], np.float32)
    with RasterWriter(tmp_path / "a.tif", a.shape, dtype="int16", nodata=INT16_NODATA, value_scale=1e-4) as w:
        w.write(a)
    assert w.clipped == 1
    raw = gdal.Open(str(tmp_path / "a.tif")).ReadAsArray()
    assert raw.tolist() == [[1234, -5000, 32767, INT16_NODATA]]
    with pytest.raises(ValueError, match="without a nodata value cannot hold NaN"):
        with RasterWriter(tmp_path / "b.tif", a.shape, dtype="int16", value_scale=1e-4) as w:
            w.write(a)
    with pytest.raises(ValueError, match="needs an integer data type"):
        RasterWriter(tmp_path / "c.tif", a.shape, value_scale=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]


def test_overviews_on_large_outputs(cave_pair, tmp_path):
    cube, meta = read_raster(cave_pair / "hr.tif")
    big = np.tile(cube[:3], (1, 3, 5))  # 192 x 320 px
    with RasterWriter(tmp_path / "big.tif", big.shape, overview_min_size=150) as w:
        w.write(big)
    with RasterWriter(tmp_path / "small.tif", big.shape) as w:
        w.write(big)
    ds = gdal.Open(str(tmp_path / "big.tif"))
    band = ds.GetRasterBand(2)
    assert band.GetOverviewCount() == 1
    ov = band.GetOverview(0).ReadAsArray()
    assert ov.shape == (96, 160)
    np.testing.assert_allclose(ov, big[1].reshape(96, 2, 160, 2).mean(axis=(1, 3)), atol=1e-6)
    small = gdal.Open(str(tmp_path / "small.tif"))
    assert big.shape[2] < OVERVIEW_MIN_SIZE and small.GetRasterBand(1).GetOverviewCount() == 0


# ----------------------------------------------------------------------- result layers in QGIS


def _loaded(name: str):
    layers = QgsProject.instance().mapLayersByName(name)
    assert len(layers) == 1, [lay.name() for lay in QgsProject.instance().mapLayers().values()]
    return layers[0]


def test_superresolve_result_opens_named_in_true_colour(qgis_app, enmap_pair):
    """What the dialog does at the end of a run (Processing's handleAlgorithmResults through runAndLoadResults)."""
    import processing

    d = enmap_pair
    QgsProject.instance().clear()
    res = processing.runAndLoadResults("hsrdiff:superresolve", {"LR_HSI": str(d / "enmap_lr.tif"), "HR_MSI": str(d / "s2_msi.tif"),
                                                                "STEPS": 2, "OUTPUT": "TEMPORARY_OUTPUT"})
    layer = _loaded("enmap_lr HSR-Diff x3")
    assert layer.source() == res["OUTPUT"]
    out, meta = read_raster(res["OUTPUT"])
    wl = meta.wavelengths
    good = meta.good_bands
    expected = [int(np.argmin(np.where(good, np.abs(wl - t), np.inf))) + 1 for t in (640, 550, 470)]
    renderer = layer.renderer()
    assert renderer.type() == "multibandcolor"
    assert [renderer.redBand(), renderer.greenBand(), renderer.blueBand()] == expected
    # Each band stretched over its 2-98 % cumulative count.
    for band, ce in zip(expected, (renderer.redContrastEnhancement(), renderer.greenContrastEnhancement(),
                                   renderer.blueContrastEnhancement()), strict=True):
        lo, hi = np.nanpercentile(out[band - 1], [2, 98])
        tol = 0.03 * (np.nanmax(out[band - 1]) - np.nanmin(out[band - 1]))
        assert abs(ce.minimumValue() - lo) < tol and abs(ce.maximumValue() - hi) < tol
    assert renderer.minMaxOrigin().limits() == renderer.minMaxOrigin().CumulativeCut
    assert gdal.Open(res["OUTPUT"]).GetMetadata("ENVI")["default_bands"] == "{{{}, {}, {}}}".format(*expected)


def test_classical_and_simulate_results_are_named_after_the_input(qgis_app, enmap_pair):
    import processing

    d = enmap_pair
    QgsProject.instance().clear()
    processing.runAndLoadResults("hsrdiff:classicalfusion", {"LR_HSI": str(d / "enmap_lr.tif"), "HR_MSI": str(d / "s2_msi.tif"),
                                                             "METHOD": 2, "OUTPUT": "TEMPORARY_OUTPUT"})
    assert _loaded("enmap_lr MTF-GLP-HS x3").renderer().type() == "multibandcolor"
    processing.runAndLoadResults("hsrdiff:simulate", {"HR_HSI": str(d / "hr.tif"), "SCALE": 4, "LR_HSI": "TEMPORARY_OUTPUT",
                                                      "HR_MSI": "TEMPORARY_OUTPUT"})
    lr = _loaded("hr simulated LR-HSI 1:4")
    msi = _loaded("hr simulated Sentinel-2 MSI")
    assert lr.renderer().type() == msi.renderer().type() == "multibandcolor"
    assert [msi.renderer().redBand(), msi.renderer().greenBand(), msi.renderer().blueBand()] == [3, 2, 1]  # B04, B03, B02


def test_superresolve_int16_output_through_processing(qgis_app, enmap_pair, tmp_path):
    """EnMAP reflectance is already stored x 10000: the int16 output keeps those numbers (scale 1), within rounding."""
    import processing

    d = enmap_pair
    common = {"LR_HSI": str(d / "enmap_lr.tif"), "HR_MSI": str(d / "s2_msi.tif"), "STEPS": 2}
    processing.run("hsrdiff:superresolve", {**common, "OUTPUT": str(tmp_path / "f.tif")})
    processing.run("hsrdiff:superresolve", {**common, "OUTPUT_TYPE": 1, "OUTPUT": str(tmp_path / "i.tif")})
    ref, _ = read_raster(tmp_path / "f.tif")
    back, _ = read_raster(tmp_path / "i.tif")
    ds = gdal.Open(str(tmp_path / "i.tif"))
    band = ds.GetRasterBand(1)
    assert gdal.GetDataTypeName(band.DataType) == "Int16" and band.GetScale() in (None, 1.0)  # GDAL omits a scale of 1
    assert (np.isnan(back) == np.isnan(ref)).all()
    assert np.nanmax(np.abs(back - ref)) <= 0.5 + 1e-3


# ----------------------------------------------------------------------- parameter rules


def test_simulate_without_sensor_uses_the_default(qgis_app, enmap_pair, tmp_path):
    import processing

    out = processing.run("hsrdiff:simulate", {"HR_HSI": str(enmap_pair / "hr.tif"), "SCALE": 3, "LR_HSI": str(tmp_path / "lr.tif"),
                                              "HR_MSI": str(tmp_path / "msi.tif")})
    assert RasterReader(out["HR_MSI"]).meta.band_names[:3] == ["B02", "B03", "B04"]
    with pytest.raises(ValueError, match="HR-HSI layer 'hr.tif' needs the multispectral sensor's response: name a sensor"):
        simulate_files(enmap_pair / "hr.tif", tmp_path / "a.tif", tmp_path / "b.tif", None, 3)
    assert not (tmp_path / "a.tif").exists()


def test_train_refuses_a_mixed_combination_before_running(qgis_app, enmap_pair, tmp_path):
    import processing

    d = enmap_pair
    base = {"SCALE": 3, "MODEL": str(tmp_path / "m.onnx"), "CHECKPOINTS": str(tmp_path / "ckpt")}
    for given in ({"REFERENCE": d / "hr.tif", "HR_MSI": d / "s2_msi.tif"}, {"LR_HSI": d / "enmap_lr.tif"}, {}):
        with pytest.raises(QgsProcessingException):
            processing.run("hsrdiff:train", {**base, **{k: str(v) for k, v in given.items()}})
    alg = QgsApplication.processingRegistry().createAlgorithmById("hsrdiff:train")
    from qgis.core import QgsProcessingContext

    ok, message = alg.checkParameterValues({**base, "REFERENCE": str(d / "hr.tif"), "HR_MSI": str(d / "s2_msi.tif")},
                                           QgsProcessingContext())
    assert not ok and message.startswith("Give either A. the reference HR-HSI alone") and "B. Real HR-MSI" in message
    assert alg.checkParameterValues({**base, "LR_HSI": str(d / "enmap_lr.tif"), "HR_MSI": str(d / "s2_msi.tif")},
                                    QgsProcessingContext())[0]
    assert not (tmp_path / "ckpt").exists()
