"""Prepare pair on product-structured fixtures built from a real EnMAP crop: an EnMAP L2A-like product
(int16 SPECTRAL_IMAGE + METADATA.XML) and a Sentinel-2 L2A-like .SAFE tree (JP2 band files at 10, 20 and
60 m written by GDAL's JP2OpenJPEG driver, GeoTIFF where GDAL lacks it; MTD_MSIL2A.xml with BOA_ADD_OFFSET
-1000), the LR grid declared 4 m east and 3 m south of where its pixels lie; run by the core job, real QGIS
Processing and qgis_process."""

from __future__ import annotations

import os
import site

import numpy as np
import pytest
from osgeo import gdal, osr
from qgis_helpers import ROOT, enable_plugin, qgis_env, run_algorithm

from core.jobs.prepare import phase_correlation_shift, prepare_pair
from core.pairing import check_pair
from core.products import ProductError, normalise_band_name
from core.progress import Cancelled, Progress
from core.raster_io import read_meta, read_raster, write_raster
from core.sensor import degrade_spatial, spectral_response
from core.sensor.estimate import estimate_registration
from export.bundled import choose_model
from export.metadata import read_metadata

ENMAP = "enmap_potsdam_southeast.tif"
MODEL_X3 = ROOT / "models" / "hsrdiff_enmap_s2_x3.onnx"
ENMAP_NAME = "ENMAP01-____L2A-DT0000001867_20220724T104526Z_008_V010302_20230628T165614Z"
SAFE_NAME = "S2A_MSIL2A_20220724T101601_N0400_R065_T33UUU_20220724T131520.SAFE"
GRANULE = "L2A_T33UUU_A036933_20220724T101558"
STAMP = "T33UUU_20220724T101601"
S2_RES = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20, "B08": 10, "B8A": 20,
          "B11": 20, "B12": 20}
S2_IDS = {"B1": 60, "B2": 10, "B3": 10, "B4": 10, "B5": 20, "B6": 20, "B7": 20, "B8": 10, "B8A": 20, "B9": 60, "B10": 60,
          "B11": 20, "B12": 20}  # band_id order of the product metadata, with each band's resolution
X0, Y0 = 366960.0, 5808040.0  # the truth's 10 m grid (the EnMAP crop's pixels taken as 10 m)
S2_ROWS, S2_COL0 = 114, 6  # the S2 images cover truth rows 0..113 and columns 6..59
LR_ROW0 = 6  # the LR-HSI covers truth rows 6..119, columns 0..59 (38 x 20 LR pixels)
DECLARED = (4.0, -3.0)  # metres by which the LR product's geotransform is off its pixels' true place (x, y)
BOA_OFFSET = -1000
S2_DRIVER, S2_EXT, S2_OPTIONS = (("JP2OpenJPEG", ".jp2", ["REVERSIBLE=YES", "QUALITY=100"])  # lossless JPEG 2000
                                 if gdal.GetDriverByName("JP2OpenJPEG") else ("GTiff", ".tif", []))


def _utm33() -> str:
    s = osr.SpatialReference()
    s.ImportFromEPSG(32633)
    return s.ExportToWkt()


def _write_gdal(path, array: np.ndarray, gt, driver: str, nodata=None, options=()) -> None:
    a = array if array.ndim == 3 else array[None]
    types = {np.dtype("uint16"): gdal.GDT_UInt16, np.dtype("int16"): gdal.GDT_Int16}
    mem = gdal.GetDriverByName("MEM").Create("", a.shape[2], a.shape[1], a.shape[0], types[a.dtype])
    mem.SetGeoTransform(gt)
    mem.SetProjection(_utm33())
    for k in range(a.shape[0]):
        band = mem.GetRasterBand(k + 1)
        band.WriteArray(a[k])
        if nodata is not None:
            band.SetNoDataValue(nodata)
    gdal.GetDriverByName(driver).CreateCopy(str(path), mem, options=list(options))


def _box(a: np.ndarray, f: int) -> np.ndarray:
    return a.reshape(a.shape[0] // f, f, a.shape[1] // f, f).mean(axis=(1, 3))


@pytest.fixture(scope="module")
def products(shared_data, tmp_path_factory):
    """``(root, truth)``: the EnMAP-like product folder, the SAFE, and the simulated values they hold."""
    root = tmp_path_factory.mktemp("products")
    cube, meta = read_raster(shared_data / ENMAP)
    hr = np.where(np.isfinite(cube), cube, 0.0)[:, :120, :60].astype(np.float32)
    good = meta.good_bands

    # Sentinel-2: every land band plus B01 from the real response; DN = reflectance x 10000 - BOA_ADD_OFFSET.
    srf = spectral_response("sentinel2", meta.wavelengths, meta.fwhm, bands=list(S2_RES), valid_bands=good)
    msi = np.tensordot(srf.matrix, hr[:, :S2_ROWS, S2_COL0:], axes=1).astype(np.float32)  # (11, 114, 54)
    safe = root / SAFE_NAME
    files = []
    for k, name in enumerate(srf.band_names):
        res = S2_RES[name]
        band = _box(msi[k], res // 10)
        dn = np.clip(np.round(band - BOA_OFFSET), 1, 65535).astype(np.uint16)
        corner = max(1, 30 // res)
        dn[-corner:, -corner:] = 0  # a nodata corner inside the common area
        rel = f"GRANULE/{GRANULE}/IMG_DATA/R{res}m/{STAMP}_{name}_{res}m"
        (safe / rel).parent.mkdir(parents=True, exist_ok=True)
        _write_gdal(safe / f"{rel}{S2_EXT}", dn, (X0 + S2_COL0 * 10, res, 0, Y0, 0, -res), S2_DRIVER, options=S2_OPTIONS)
        files.append(rel)
        if res == 10 and name != "B08":  # R20m holds the 10 m bands again, coarser: the finest must be chosen
            rel20 = f"GRANULE/{GRANULE}/IMG_DATA/R20m/{STAMP}_{name}_20m"
            (safe / rel20).parent.mkdir(parents=True, exist_ok=True)
            _write_gdal(safe / f"{rel20}{S2_EXT}", np.round(_box(msi[k], 2) - BOA_OFFSET).astype(np.uint16),
                        (X0 + S2_COL0 * 10, 20, 0, Y0, 0, -20), S2_DRIVER, options=S2_OPTIONS)
            files.append(rel20)
    (safe / "MTD_MSIL2A.xml").write_text(_mtd_xml(files))

    # EnMAP: the LR-HSI simulated with a centred PSF, stored as int16 reflectance x 10000, bad bands -32768.
    lr = degrade_spatial(hr[:, LR_ROW0:, :], 3)  # (224, 38, 20)
    dn = np.round(lr).astype(np.int16)
    dn[~good] = -32768
    folder = root / ENMAP_NAME
    folder.mkdir()
    true_origin = (X0, Y0 - LR_ROW0 * 10)
    declared = (true_origin[0] + DECLARED[0], true_origin[1] + DECLARED[1])
    _write_gdal(folder / f"{ENMAP_NAME}-SPECTRAL_IMAGE.TIF", dn, (declared[0], 30, 0, declared[1], 0, -30), "GTiff",
                nodata=-32768)
    (folder / f"{ENMAP_NAME}-METADATA.XML").write_text(_enmap_xml(meta, dn, good))
    truth = {"msi": dict(zip(srf.band_names, msi, strict=True)), "lr": dn.astype(np.float32), "good": good,
             "wavelengths": meta.wavelengths, "true_origin": true_origin}
    return root, truth


def _mtd_xml(files: list[str]) -> str:
    images = "".join(f"<IMAGE_FILE>{f}</IMAGE_FILE>" for f in files)
    offsets = "".join(f'<BOA_ADD_OFFSET band_id="{i}">{BOA_OFFSET}</BOA_ADD_OFFSET>' for i in range(13))
    spectral = "".join(f'<Spectral_Information bandId="{i}" physicalBand="{b}"><RESOLUTION>{r}</RESOLUTION></Spectral_Information>'
                       for i, (b, r) in enumerate(S2_IDS.items()))
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">'
            "<n1:General_Info><Product_Info><PRODUCT_TYPE>S2MSI2A</PRODUCT_TYPE><PROCESSING_LEVEL>Level-2A</PROCESSING_LEVEL>"
            "<PROCESSING_BASELINE>04.00</PROCESSING_BASELINE><Product_Organisation><Granule_List>"
            f'<Granule datastripIdentifier="DS" granuleIdentifier="{GRANULE}" imageFormat="JPEG2000">{images}</Granule>'
            "</Granule_List></Product_Organisation></Product_Info><Product_Image_Characteristics>"
            "<Special_Values><SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT><SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX></Special_Values>"
            "<Special_Values><SPECIAL_VALUE_TEXT>SATURATED</SPECIAL_VALUE_TEXT><SPECIAL_VALUE_INDEX>65535</SPECIAL_VALUE_INDEX></Special_Values>"
            '<QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>'
            '<AOT_QUANTIFICATION_VALUE unit="none">1000.0</AOT_QUANTIFICATION_VALUE></QUANTIFICATION_VALUES_LIST>'
            f"<BOA_ADD_OFFSET_VALUES_LIST>{offsets}</BOA_ADD_OFFSET_VALUES_LIST>"
            f"<Spectral_Information_List>{spectral}</Spectral_Information_List>"
            "</Product_Image_Characteristics></n1:General_Info></n1:Level-2A_User_Product>\n")


def _enmap_xml(meta, dn: np.ndarray, good: np.ndarray) -> str:
    chars = "".join(f'<bandID number="{i + 1}"><wavelengthCenterOfBand>{w:.3f}</wavelengthCenterOfBand>'
                    f"<FWHMOfBand>{f:.3f}</FWHMOfBand><GainOfBand>0.0001</GainOfBand><OffsetOfBand>0</OffsetOfBand></bandID>"
                    for i, (w, f) in enumerate(zip(meta.wavelengths, meta.fwhm, strict=True)))
    stats = "".join(f'<bandID number="{i + 1}"><mean>{dn[i].mean() if good[i] else -32768:.3f}</mean>'
                    f"<stdDeviation>{dn[i].std() if good[i] else 0:.3f}</stdDeviation></bandID>" for i in range(dn.shape[0]))
    vnir = ",".join(str(i) for i in range(1, 92))
    swir = ",".join(str(i) for i in range(92, 225))
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<level_X xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            f"<metadata><name>{ENMAP_NAME}</name></metadata><specific><bandCharacterisation>{chars}</bandCharacterisation>"
            f"<vnirProductQuality><expectedChannelsList>{vnir}</expectedChannelsList></vnirProductQuality>"
            f"<swirProductQuality><expectedChannelsList>{swir}</expectedChannelsList></swirProductQuality></specific>"
            f"<product><bandStatistics>{stats}</bandStatistics></product></level_X>\n")


# --------------------------------------------------------------------------- checks shared by the runs


def _registration(lr_path, msi_path):
    lr, lm = read_raster(lr_path)
    msi, _ = read_raster(msi_path)
    lr = lr[lm.good_bands]
    return estimate_registration(lr, msi, 3, valid=np.isfinite(lr).all(axis=0))


def _check_values(msi_path, truth, lr_true_origin: bool) -> None:
    """10 m bands copied (near) equal the simulated reflectance x 10000 to the DN rounding; 20 m bands (cubic) agree
    in mean and pattern; the nodata corner stays nodata."""
    msi, mm = read_raster(msi_path)
    rows0 = LR_ROW0  # the output grid starts at truth row 6 and column 6 (the S2 images' first column)
    for k, name in enumerate(mm.band_names):
        ref = truth["msi"][name][rows0:rows0 + msi.shape[1], :msi.shape[2]]
        out = msi[k]
        if S2_RES[name] == 10 and lr_true_origin:
            assert np.isnan(out[-3:, -3:]).all(), name
            ok = np.isfinite(out)
            assert ok.sum() == out.size - 9, name
            np.testing.assert_allclose(out[ok], ref[ok], atol=0.51, err_msg=name)
        else:
            inner = (slice(3, -6), slice(3, -6))
            a, b = out[inner], ref[inner]
            assert np.isfinite(a).all(), name
            assert abs(a.mean() / b.mean() - 1) < 0.02, (name, a.mean(), b.mean())  # an offset left would be 1000
            assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9, name


# --------------------------------------------------------------------------- the core job


def test_prepare_products_coregisters(products, tmp_path):
    root, truth = products
    order = read_metadata(MODEL_X3).msi_band_names
    res = prepare_pair(root / ENMAP_NAME, root / SAFE_NAME, tmp_path / "lr.tif", tmp_path / "msi.tif",
                       tmp_path / "report.html", band_order=order)
    # The LR grid moved back onto its pixels' true place (-0.3 HR px down, -0.4 right), snapped onto the S2 grid.
    assert res.scale == 3 and res.coarse_shift == (0, 0)
    np.testing.assert_allclose(res.shift, (-0.3, -0.4), atol=0.05)
    lm, mm = read_meta(tmp_path / "lr.tif"), read_meta(tmp_path / "msi.tif")
    x_true, y_true = truth["true_origin"]
    assert lm.geotransform[0] == pytest.approx(x_true + 2 * 30, abs=1e-6)  # two LR columns lie west of the S2 tile
    assert lm.geotransform[3] == pytest.approx(y_true, abs=1e-6)
    geo = check_pair(tmp_path / "lr.tif", tmp_path / "msi.tif")
    assert geo.scale == 3 and not geo.notes and tuple(geo.lr_window) == (0, 0, 18, 36)
    assert mm.band_names == order and mm.shape == (10, 108, 54) and lm.shape == (224, 36, 18)
    assert {p.name: p.resampling for p in res.bands} == {n: "near" if S2_RES[n] == 10 else "cubic" for n in order}
    _check_values(tmp_path / "msi.tif", truth, lr_true_origin=True)

    lr, lm = read_raster(tmp_path / "lr.tif")
    good = truth["good"]
    np.testing.assert_array_equal(lm.bad_bands, ~good)
    np.testing.assert_allclose(lm.wavelengths, truth["wavelengths"], atol=1e-3)
    assert np.isnan(lr[~good]).all()
    np.testing.assert_allclose(lr[good], truth["lr"][good][:, :36, 2:20], atol=1e-3)

    reg = _registration(tmp_path / "lr.tif", tmp_path / "msi.tif")
    assert max(abs(reg.dy), abs(reg.dx)) < 0.1, reg
    page = (tmp_path / "report.html").read_text()
    for text in ("B8A", "(DN -1000) / 10000", "cubic", "near", "-0.300 down, -0.400 right", "EPSG:32633"):
        assert text in page, text
    model, _ = choose_model(tmp_path / "lr.tif", tmp_path / "msi.tif")  # Super-resolve takes the pair
    assert model.name == MODEL_X3.name


def test_prepare_without_coregistration_keeps_the_declared_grid(products, tmp_path):
    root, truth = products
    res = prepare_pair(root / ENMAP_NAME / f"{ENMAP_NAME}-METADATA.XML", root / SAFE_NAME / "MTD_MSIL2A.xml",
                       tmp_path / "lr.tif", tmp_path / "msi.tif", coregister=False)
    assert res.shift == (0.0, 0.0) and res.msi_band_names == list(S2_RES)[1:]  # the land bands, B01 left out
    assert {p.resampling for p in res.bands} == {"cubic"}  # the declared LR grid is 0.4 / 0.3 px off the S2 grid
    assert read_meta(tmp_path / "lr.tif").geotransform[0] == pytest.approx(truth["true_origin"][0] + DECLARED[0] + 60)
    _check_values(tmp_path / "msi.tif", truth, lr_true_origin=False)


def test_prepare_refuses_bad_inputs(products, tmp_path):
    root, _ = products
    with pytest.raises(ProductError, match="HR-MSI has no band B10"):
        prepare_pair(root / ENMAP_NAME, root / SAFE_NAME, tmp_path / "lr.tif", tmp_path / "msi.tif", band_order=["B02", "B10"])
    with pytest.raises(ProductError, match="no MTD_MSIL2A.xml or MTD_MSIL1C.xml"):
        prepare_pair(root / ENMAP_NAME, root / ENMAP_NAME, tmp_path / "lr.tif", tmp_path / "msi.tif")
    assert not list(tmp_path.iterdir())


def test_cancel_while_warping_leaves_no_file(products, tmp_path):
    root, _ = products
    seen = []

    def report(fraction, message):
        seen.append(message)

    with pytest.raises(Cancelled):
        prepare_pair(root / ENMAP_NAME, root / SAFE_NAME, tmp_path / "lr.tif", tmp_path / "msi.tif", tmp_path / "r.html",
                     coregister=False, progress=Progress(report, lambda: any(m.startswith("warping B05") for m in seen)))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("given", "name"), [("B2", "B02"), ("b02", "B02"), ("B8a", "B8A"), ("B8", "B08"), ("B12", "B12"),
                                              ("red", "red")])
def test_band_names(given, name):
    assert normalise_band_name(given) == name


# --------------------------------------------------------------------------- QGIS Processing and qgis_process


def test_processing_prepares_plain_rasters(qgis_app, products, tmp_path):
    """A reflectance 0-1 float raster with wavelengths whose grid is declared 33 m east and 3 m south of its pixels
    (a whole LR pixel and a tenth: phase correlation, then the sub-pixel estimate), and the SAFE's JP2 files given
    one by one at every resolution (the finest of each band is kept; the offsets come from the MTD_MSIL2A.xml above
    them), stacked in the model's band order."""
    import processing

    root, truth = products
    good = truth["good"]
    lr = np.where(good[:, None, None], truth["lr"] / 1e4, np.nan).astype(np.float32)
    x0, y0 = truth["true_origin"]
    write_raster(tmp_path / "enmap_refl.tif", lr, None, geotransform=(x0 + 33, 30, 0, y0 - 3, 0, -30), crs_wkt=_utm33(),
                 wavelengths=truth["wavelengths"], bad_bands=~good)
    jp2 = sorted((root / SAFE_NAME).glob(f"GRANULE/*/IMG_DATA/R*/*{S2_EXT}"))[::-1]
    res = processing.run("hsrdiff:preparepair", {
        "LR_HSI": str(tmp_path / "enmap_refl.tif"), "HR_MSI": [str(p) for p in jp2], "MODEL": str(MODEL_X3),
        "LR_OUT": str(tmp_path / "lr.tif"), "MSI_OUT": str(tmp_path / "msi.tif")})
    assert res["SCALE_USED"] == 3
    assert res["DY"] == pytest.approx(-0.3, abs=0.05) and res["DX"] == pytest.approx(-3.3, abs=0.05)
    lm, mm = read_meta(res["LR_OUT"]), read_meta(res["MSI_OUT"])
    assert lm.geotransform[0] == pytest.approx(x0 + 60) and lm.geotransform[3] == pytest.approx(y0)
    assert mm.band_names == read_metadata(MODEL_X3).msi_band_names
    _check_values(res["MSI_OUT"], truth, lr_true_origin=True)
    out, _ = read_raster(res["LR_OUT"])
    np.testing.assert_allclose(out[good], truth["lr"][good][:, :36, 2:20], rtol=1e-5, atol=1e-2)  # 0-1 -> x 10000


def test_phase_correlation_sign():
    b = np.random.default_rng(0).random((40, 30))
    assert phase_correlation_shift(np.roll(b, (2, -1), axis=(0, 1)), b, 5) == (2, -1)


def test_processing_names_the_missing_input(qgis_app, products, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    root, _ = products
    with pytest.raises(QgsProcessingException, match="HR-MSI: give either the raster"):
        processing.run("hsrdiff:preparepair", {"LR_PRODUCT": str(root / ENMAP_NAME), "LR_OUT": str(tmp_path / "lr.tif"),
                                                "MSI_OUT": str(tmp_path / "msi.tif")})
    assert not list(tmp_path.iterdir())


def test_qgis_process_prepares_products(products, tmp_path):
    root, truth = products
    env = qgis_env(tmp_path / "profile", pythonpath=os.pathsep.join([str(ROOT), *site.getsitepackages()]))
    enable_plugin(env)
    res = run_algorithm("hsrdiff:preparepair", {
        "LR_PRODUCT": root / ENMAP_NAME / f"{ENMAP_NAME}-METADATA.XML", "HR_MSI_PRODUCT": root / SAFE_NAME,
        "MODEL": MODEL_X3, "COREGISTER": "false", "LR_OUT": tmp_path / "lr.tif", "MSI_OUT": tmp_path / "msi.tif",
        "REPORT": tmp_path / "r.html"}, env)
    out = res["results"]
    assert out["SCALE_USED"] == 3 and out["DY"] == 0 and out["DX"] == 0
    geo = check_pair(out["LR_OUT"], out["MSI_OUT"])
    assert geo.scale == 3 and not geo.notes
    assert read_meta(out["MSI_OUT"]).band_names == read_metadata(MODEL_X3).msi_band_names
    _check_values(out["MSI_OUT"], truth, lr_true_origin=False)
    assert "co-registration off" in (tmp_path / "r.html").read_text()
