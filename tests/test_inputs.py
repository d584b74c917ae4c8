"""The one input check (``export.inputs``) through the Python API and the Processing algorithm, on real GeoTIFFs.

MSI bands by name (any case), by wavelength, or by position with a warning; LR-HSI and HR-MSI units
against the model's normalisation (0-1, x 10000, int16 with a GDAL scale, a DN offset), refused with the
numbers when ambiguous; a 224-band LR-HSI without wavelengths takes the model's.
"""

from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal

from core.normalization import BandNormalization
from core.raster_io import read_meta, read_raster, write_raster
from export.bundled import choose_model, model_fits
from export.inputs import InputMismatch
from export.superresolve import superresolve
from export.testing import contract_model, make_enmap_pair, make_metadata

BANDS = list(range(0, 224, 10)) + [130]
C, M, S = len(BANDS), 4, 4
NAMES = ["B02", "B03", "B04", "B08"]
SHUFFLE = [2, 0, 3, 1]  # file band k holds the model's band SHUFFLE[k]
RUN = dict(steps=2, seed=1, tile=48, overlap=8, threads=1)


def _groups(meta) -> list[np.ndarray]:
    """The HSI bands each MSI band of :func:`export.testing.make_enmap_pair` averages."""
    good = np.flatnonzero(meta.good_bands)
    return np.array_split(good[: len(good) // M * M], M)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, shared_data):
    return make_enmap_pair(tmp_path_factory.mktemp("pair"), shared_data, bands=BANDS, scale=S, msi_bands=M)


@pytest.fixture(scope="module")
def srf(pair):
    srf = np.zeros((M, C))
    for m, g in enumerate(_groups(pair["meta"])):
        srf[m, g] = 1.0 / len(g)
    return srf


@pytest.fixture(scope="module")
def centres(pair, srf):
    return srf @ pair["meta"].wavelengths


def _msi_norm(msi: np.ndarray) -> BandNormalization:
    return BandNormalization.fit(np.nan_to_num(msi), valid=np.isfinite(msi).all(axis=0))


@pytest.fixture(scope="module")
def model(tmp_path_factory, pair, srf):
    """A per-pixel contract model whose normalisation is fitted on the pair (reflectance x 10000)."""
    md = make_metadata(C, M, scale=S, hsi_normalization=BandNormalization.fit(np.nan_to_num(pair["lr_array"])),
                       msi_normalization=_msi_norm(pair["msi_array"]), wavelengths_nm=pair["meta"].wavelengths,
                       msi_band_names=NAMES, srf=srf)
    return contract_model(tmp_path_factory.mktemp("m") / "contract.onnx", md)


def _msi(folder, name, pair, order=range(M), names=None, wavelengths=None, add=0.0):
    """The pair's HR-MSI with its bands in ``order`` (model band of each file band), optionally named or offset."""
    msi = pair["msi_array"][list(order)] + np.float32(add)
    lm = pair["meta"]
    return write_raster(folder / name, msi, None, geotransform=pair["geotransform"], crs_wkt=lm.crs_wkt, nodata=-9999.0,
                        band_names=names, wavelengths=wavelengths)


@pytest.fixture(scope="module")
def ordered(tmp_path_factory, pair, model):
    """The MSI in the model's order and names, and the output of a run on it."""
    d = tmp_path_factory.mktemp("ordered")
    msi = _msi(d, "msi.tif", pair, names=NAMES)
    res = superresolve(pair["lr"], msi, model, d / "sr.tif", **RUN)
    assert res.notes == [n for n in res.notes if "HR-MSI" not in n]  # nothing to say about the MSI bands
    return {"msi": msi, "out": read_raster(res.out_path)[0], "notes": res.notes}


def _run(pair, msi, model, out, lr=None):
    res = superresolve(lr or pair["lr"], msi, model, out, **RUN)
    return read_raster(res.out_path)[0], res.notes


def test_shuffled_named_msi_bands_are_put_in_the_model_order(pair, model, ordered, tmp_path):
    msi = _msi(tmp_path, "msi_shuffled.tif", pair, SHUFFLE, names=[NAMES[j] for j in SHUFFLE])
    out, notes = _run(pair, msi, model, tmp_path / "sr.tif")
    np.testing.assert_array_equal(out, ordered["out"])
    assert any(n.startswith("HR-MSI layer 'msi_shuffled.tif': bands matched to the model's by name: B02 = band 2, "
                            "B03 = band 4, B04 = band 1, B08 = band 3") for n in notes), notes
    # The same file without names is taken by position, with a warning, and the result differs.
    msi = _msi(tmp_path, "msi_unnamed.tif", pair, SHUFFLE)
    out, notes = _run(pair, msi, model, tmp_path / "sr_unnamed.tif")
    assert not np.allclose(out, ordered["out"], equal_nan=True)
    assert any("HR-MSI layer 'msi_unnamed.tif': its bands have neither names nor wavelengths, so they are taken in order "
               "as the model's (band 1 = B02, band 2 = B03, band 3 = B04, band 4 = B08)" in n for n in notes), notes


@pytest.mark.parametrize("names", [["b02", "b03", "b04", "b08"], ["b02", "B 03", "b_04", "B08"]])
def test_names_match_whatever_the_case(pair, model, ordered, tmp_path, names):
    msi = _msi(tmp_path, "msi_lower.tif", pair, SHUFFLE, names=[names[j] for j in SHUFFLE])
    out, notes = _run(pair, msi, model, tmp_path / "sr.tif")
    np.testing.assert_array_equal(out, ordered["out"])
    assert any("matched to the model's by name" in n for n in notes) and not any("taken in order" in n for n in notes)


def test_unnamed_bands_with_wavelengths_are_matched_by_wavelength(pair, model, ordered, centres, tmp_path):
    msi = _msi(tmp_path, "msi_wl.tif", pair, SHUFFLE, wavelengths=np.round(centres[SHUFFLE] + 3.0))
    out, notes = _run(pair, msi, model, tmp_path / "sr.tif")
    np.testing.assert_array_equal(out, ordered["out"])
    assert any("HR-MSI layer 'msi_wl.tif': bands matched to the model's by wavelength: B02 = band 2" in n for n in notes), notes


def test_unnamed_bands_without_wavelengths_go_by_position_with_a_warning(pair, model, ordered, tmp_path):
    msi = _msi(tmp_path, "msi_plain.tif", pair)
    out, notes = _run(pair, msi, model, tmp_path / "sr.tif")
    np.testing.assert_array_equal(out, ordered["out"])
    assert sum("HR-MSI layer 'msi_plain.tif': its bands have neither names nor wavelengths" in n for n in notes) == 1


def test_a_wider_msi_gives_the_model_its_bands_by_name(pair, model, ordered, tmp_path):
    extra = np.concatenate([pair["msi_array"][:1] * np.float32(0.5), pair["msi_array"][SHUFFLE]])
    msi = write_raster(tmp_path / "msi5.tif", extra, None, geotransform=pair["geotransform"], crs_wkt=pair["meta"].crs_wkt,
                       nodata=-9999.0, band_names=["B01"] + [NAMES[j] for j in SHUFFLE])
    out, notes = _run(pair, msi, model, tmp_path / "sr.tif")
    np.testing.assert_array_equal(out, ordered["out"])
    assert any("(1 of its 5 bands unused)" in n for n in notes), notes


def test_bands_named_elsewhere_are_not_taken_by_position(pair, model, tmp_path):
    msi = _msi(tmp_path, "msi_mixed.tif", pair, names=["B03", "B02", "red", "nir"])
    with pytest.raises(InputMismatch, match=r"HR-MSI layer 'msi_mixed\.tif' has bands B03, B02, red, nir but the model "
                                            r"'contract\.onnx' takes B02, B03, B04, B08: its band 1 \(B03\) is the model's "
                                            r"band 2, its band 2 \(B02\) is the model's band 1"):
        superresolve(pair["lr"], msi, model, tmp_path / "sr.tif", **RUN)
    assert not (tmp_path / "sr.tif").exists()


def test_model_choice_uses_the_same_matching(pair, model, tmp_path):
    """A bundled model is chosen for bands in another order and case; one that fits by name beats one by position."""
    from export.metadata import read_metadata

    md = read_metadata(model)
    d = tmp_path / "models"
    d.mkdir()
    contract_model(d / "a_positional.onnx", make_metadata(C, M, scale=S, msi_band_names=["X1", "X2", "X3", "X4"]))
    contract_model(d / "b_named.onnx", md)
    msi = _msi(tmp_path, "msi.tif", pair, SHUFFLE, names=[NAMES[j].lower() for j in SHUFFLE])
    assert choose_model(pair["lr"], msi, None, d)[0].name == "b_named.onnx"
    assert choose_model(pair["lr"], msi, d / "b_named.onnx")[0].name == "b_named.onnx"
    assert model_fits(md, C, M, S, ["b04", "b02", "b08", "b03"]) is None
    assert model_fits(md, C, M, S, ["B03", "B02", "red", "nir"]) == "MSI bands B03, B02, red, nir given, the model takes B02, B03, B04, B08"
    assert model_fits(md, C, M + 1, S, ["B01", *NAMES]) is None
    assert model_fits(md, C, M - 1, S) == f"MSI bands: {M - 1} given, the model takes {M}"
    assert model_fits(md, C, M, S + 1) == f"scale: the pair has {S + 1}, the model was trained for {S}"


def test_lr_in_reflectance_0_1_is_rescaled_for_a_model_on_x10000(pair, model, ordered, tmp_path):
    lr, meta = read_raster(pair["lr"])
    path = write_raster(tmp_path / "lr01.tif", lr / np.float32(10000), meta)
    out, notes = _run(pair, ordered["msi"], model, tmp_path / "sr.tif", lr=path)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ordered["out"]))
    np.testing.assert_allclose(out * 10000, ordered["out"], rtol=1e-5, atol=1e-2)
    assert any(n.startswith("LR-HSI layer 'lr01.tif': its values reach 0.18") and "trained on values up to 18" in n
               and "taken as reflectance 0-1 against the model's x 10000, multiplied by 10000 for the model; the output is "
               "written in the layer's units" in n for n in notes), notes


def _int16_with_scale(src, dst, scale: float = 1e-4, nodata: int = -32768):
    """``src`` (reflectance x 10000, NaN = nodata) as int16 with GDAL band scale ``scale`` (reflectance = value x scale),
    as EnMAP L2A ships."""
    a, meta = read_raster(src)
    ds = gdal.Open(str(src))
    out = gdal.GetDriverByName("GTiff").Create(str(dst), meta.cols, meta.rows, meta.bands, gdal.GDT_Int16)
    out.SetGeoTransform(meta.geotransform)
    out.SetProjection(meta.crs_wkt)
    for k in range(meta.bands):
        band = out.GetRasterBand(k + 1)
        band.SetMetadata(ds.GetRasterBand(k + 1).GetMetadata())
        band.SetNoDataValue(nodata)
        band.SetScale(scale)
        band.SetOffset(0.0)
        band.WriteArray(np.where(np.isfinite(a[k]), np.rint(np.nan_to_num(a[k])), nodata).astype(np.int16))
    out = None
    return dst


def test_int16_with_a_gdal_scale_is_read_as_reflectance_and_rescaled(pair, model, ordered, tmp_path):
    lr, meta = read_raster(pair["lr"])
    rounded = write_raster(tmp_path / "lr_rounded.tif", np.rint(lr), meta)  # the same values, as int16 holds them
    ref, _ = _run(pair, ordered["msi"], model, tmp_path / "ref.tif", lr=rounded)
    path = _int16_with_scale(rounded, tmp_path / "lr_int16.tif")
    m = read_meta(path)
    assert m.dtype == "Int16" and m.scales[0] == pytest.approx(1e-4)
    np.testing.assert_allclose(read_raster(path)[0] * 10000, read_raster(rounded)[0], rtol=1e-6)
    out, notes = _run(pair, ordered["msi"], model, tmp_path / "sr.tif", lr=path)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_allclose(out * 10000, ref, rtol=1e-5, atol=1e-2)
    assert any(n.startswith("LR-HSI layer 'lr_int16.tif'") and "multiplied by 10000" in n for n in notes), notes


def test_msi_with_a_dn_offset_of_1000_has_it_removed(pair, model, ordered, tmp_path):
    msi = _msi(tmp_path, "msi_l2a.tif", pair, names=NAMES, add=1000.0)
    out, notes = _run(pair, msi, model, tmp_path / "sr.tif")
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ordered["out"]))
    np.testing.assert_allclose(out, ordered["out"], rtol=1e-5, atol=1e-2)
    assert any(n.startswith("HR-MSI layer 'msi_l2a.tif': no value below 12") and "a DN offset of 1000" in n and "removed" in n
               for n in notes), notes


def test_ambiguous_units_are_refused_with_the_numbers(pair, model, ordered, tmp_path):
    lr, meta = read_raster(pair["lr"])
    path = write_raster(tmp_path / "lr_percent.tif", lr / np.float32(100), meta)  # reflectance in percent
    with pytest.raises(InputMismatch, match=r"LR-HSI layer 'lr_percent\.tif' is not in the units of the model 'contract\.onnx': "
                                            r"its values reach 18\.7 \(99th percentile, median over its bands\) where the model "
                                            r"'contract\.onnx' was trained on values up to 1868, 0\.01 times as much"):
        superresolve(path, ordered["msi"], model, tmp_path / "sr.tif", **RUN)
    assert not (tmp_path / "sr.tif").exists()


def test_lr_of_the_full_sensor_without_wavelengths_takes_the_model_ones(shared_data, tmp_path):
    """224 EnMAP bands with no wavelength metadata and a model on their 218 good bands: no crash, the model's wavelengths."""
    p = make_enmap_pair(tmp_path, shared_data, bands=list(range(224)), scale=S, msi_bands=M)
    meta = p["meta"]
    good = np.flatnonzero(meta.good_bands)
    assert len(good) == 218
    lm = read_meta(p["lr"])
    lr = write_raster(tmp_path / "lr_nowl.tif", p["lr_array"], None, geotransform=lm.geotransform, crs_wkt=lm.crs_wkt,
                      nodata=-32768.0)
    assert read_meta(lr).wavelengths is None and read_meta(lr).bad_bands is None
    md = make_metadata(218, M, scale=S, hsi_normalization=BandNormalization.fit(np.nan_to_num(p["lr_array"][good])),
                       msi_normalization=_msi_norm(p["msi_array"]), wavelengths_nm=meta.wavelengths[good],
                       fwhm_nm=meta.fwhm[good], msi_band_names=[f"MSI {i + 1}" for i in range(M)], input_bands=224,
                       band_indices=good.tolist())
    model = contract_model(tmp_path / "enmap218.onnx", md)
    res = superresolve(lr, p["msi"], model, tmp_path / "sr.tif", **RUN)
    out, om = read_raster(res.out_path)
    assert out.shape[0] == 224 and np.isnan(out[~meta.good_bands]).all() and np.isfinite(out[good]).mean() > 0.9
    np.testing.assert_allclose(om.wavelengths[good], meta.wavelengths[good], atol=1e-3)
    np.testing.assert_allclose(om.fwhm[good], meta.fwhm[good], atol=1e-3)
    skipped = np.flatnonzero(~meta.good_bands)
    assert skipped.tolist() == list(range(129, 135))
    wl = om.wavelengths[128:136]  # the six bands the model skips sit evenly between their neighbours (1391 and 1462 nm)
    np.testing.assert_allclose(np.diff(wl), (wl[-1] - wl[0]) / 7, rtol=1e-4)
    np.testing.assert_array_equal(om.bad_bands, ~meta.good_bands)
    assert any(n.startswith("LR-HSI layer 'lr_nowl.tif' has no band wavelengths: the output carries those of the model "
                            "'enmap218.onnx' (418.") and "its band(s) 130-135, which the model does not use" in n
               for n in res.notes), res.notes


def test_processing_algorithm_logs_the_rescale_and_names_the_refused_layer(qgis_app, pair, model, ordered, tmp_path):
    import processing
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    class Warnings(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.lines = []

        def pushWarning(self, warning):  # noqa: N802 (QGIS API name)
            super().pushWarning(warning)
            self.lines.append(warning)

    lr, meta = read_raster(pair["lr"])
    lr01 = write_raster(tmp_path / "lr01.tif", lr / np.float32(10000), meta)
    fb = Warnings()
    res = processing.run("hsrdiff:superresolve", {"LR_HSI": str(lr01), "HR_MSI": str(ordered["msi"]), "MODEL": str(model),
                                                  "STEPS": 1, "OUTPUT": str(tmp_path / "sr.tif")}, feedback=fb)
    assert read_meta(res["OUTPUT"]).shape == (C, 64, 92)
    assert any(w.startswith("LR-HSI layer 'lr01': its values reach") and "multiplied by 10000" in w for w in fb.lines), fb.lines
    percent = write_raster(tmp_path / "lr_percent.tif", lr / np.float32(100), meta)
    with pytest.raises(QgsProcessingException, match=r"LR-HSI layer 'lr_percent' is not in the units of the model 'contract\.onnx'"):
        processing.run("hsrdiff:superresolve", {"LR_HSI": str(percent), "HR_MSI": str(ordered["msi"]), "MODEL": str(model),
                                                "STEPS": 1, "OUTPUT": str(tmp_path / "refused.tif")})
    assert not (tmp_path / "refused.tif").exists()
