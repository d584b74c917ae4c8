"""Sensor products and band files as the pair preparation reads them, and GDAL warping onto a grid.

* **EnMAP L2A**: the product folder or its ``*-METADATA.XML``. Per band (``specific/bandCharacterisation/
  bandID[@number]``) the XML gives ``wavelengthCenterOfBand`` and ``FWHMOfBand`` (nm) and ``GainOfBand`` /
  ``OffsetOfBand`` (reflectance = DN * gain + offset, gain 0.0001 in L2A); bands whose
  ``product/bandStatistics/bandID`` has a zero ``stdDeviation`` hold no data (the water-vapour bands) and
  are flagged bad, as EnMAP-Box's *Import EnMAP L2A product* does. The cube is the ``*-SPECTRAL_IMAGE.*`` beside
  the XML (GeoTIFF, ENVI, JPEG 2000 or COG), nodata -32768 unless the file says otherwise.
* **Sentinel-2 L2A / L1C**: the ``.SAFE`` folder or its ``MTD_MSIL2A.xml`` / ``MTD_MSIL1C.xml``. The band files are
  the ``IMAGE_FILE`` entries of the product metadata (or, failing that, ``GRANULE/*/IMG_DATA/**/*_Bxx_*.jp2``),
  the finest resolution of each band; reflectance = (DN + ``BOA_ADD_OFFSET``) / ``BOA_QUANTIFICATION_VALUE``
  (``RADIO_ADD_OFFSET`` / ``QUANTIFICATION_VALUE`` in L1C), the offsets given per ``band_id``, whose
  physical band the ``Spectral_Information`` list names; DN 0 is nodata (``Special_Values``).
* **Plain rasters**: any GDAL raster; one multi-band file or several files. Band names come from the band
  descriptions or, for single-band files, from a ``B02`` / ``B8A``-style token in the file name; GDAL's own
  scale and offset are applied. A band file inside a Sentinel-2 product tree takes its offset and
  quantification from the product's metadata file above it.

Only this module and :mod:`core.raster_io` open files with GDAL for the preparation; everything here
returns plain values (``gain`` / ``offset`` map the raw DN that GDAL warps to the band's value).
"""

from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from osgeo import gdal, osr

from .raster_io import RasterError, describe_crs, read_meta

gdal.UseExceptions()

__all__ = [
    "ProductError",
    "Grid",
    "HsiSource",
    "MsiBand",
    "normalise_band_name",
    "read_enmap_l2a",
    "open_hsi",
    "read_sentinel2_safe",
    "open_msi",
    "native_grid",
    "warp_band",
    "same_crs",
]

ENMAP_NODATA = -32768.0
S2_BAND_IDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
"""Sentinel-2 ``band_id`` 0..12 of the product metadata, when its ``Spectral_Information`` list is missing."""
_IMAGE_EXTENSIONS = (".TIF", ".tif", ".TIFF", ".tiff", ".GEOTIFF", ".BSQ", ".bsq", ".BIL", ".BIP", ".JP2", ".jp2",
                     "_COG.tiff", "_COG.TIF", ".vrt")
_BAND_TOKEN = re.compile(r"(?:^|[_\-. ])(B(?:\d{1,2}|8A))(?=$|[_\-. ])", re.IGNORECASE)
_S2_FILE = re.compile(r"_(B(?:\d\d|8A))_(\d+)m$", re.IGNORECASE)
_S2_MTD = ("MTD_MSIL2A.xml", "MTD_MSIL1C.xml")


class ProductError(ValueError):
    """A product or band file cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Grid:
    """A north-up pixel grid: top-left corner ``(x0, y0)``, pixel width and height ``px``, ``py`` (positive, CRS
    units), ``rows`` x ``cols`` pixels, ``crs_wkt`` ("" for a local pixel grid)."""

    x0: float
    y0: float
    px: float
    py: float
    rows: int
    cols: int
    crs_wkt: str

    @property
    def geotransform(self) -> tuple[float, float, float, float, float, float]:
        return (self.x0, self.px, 0.0, self.y0, 0.0, -self.py)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)``."""
        return self.x0, self.y0 - self.rows * self.py, self.x0 + self.cols * self.px, self.y0


@dataclass(frozen=True)
class HsiSource:
    """An LR-HSI to read: the cube ``path`` and, per band, ``value = DN * gains + offsets`` (after GDAL's own
    scale and offset), ``wavelengths`` / ``fwhm`` (nm, or None), ``bad_bands`` (bool) and ``band_names``.
    ``units`` is ``"reflectance"`` (0-1) when the product says so, "" when unknown; ``kind`` and ``notes`` describe
    what was read; ``fill_value`` is the raw value that means nodata when the cube declares none (EnMAP's -32768)."""

    path: str
    kind: str
    band_names: list[str]
    gains: np.ndarray
    offsets: np.ndarray
    bad_bands: np.ndarray
    wavelengths: np.ndarray | None = None
    fwhm: np.ndarray | None = None
    units: str = ""
    notes: tuple[str, ...] = ()
    fill_value: float | None = None

    @property
    def bands(self) -> int:
        return len(self.band_names)


@dataclass(frozen=True)
class MsiBand:
    """One HR-MSI band: band ``band`` (1-based) of file ``path``, called ``name``; ``value = raw DN * gain + offset``
    (``units`` ``"reflectance"`` (0-1) when a product defines them, "" when unknown); ``nodata`` the raw nodata value;
    ``source`` says where it came from (a product or a file)."""

    name: str
    path: str
    band: int
    gain: float = 1.0
    offset: float = 0.0
    nodata: float | None = None
    units: str = ""
    source: str = ""


# --------------------------------------------------------------------------- helpers


def normalise_band_name(name: str) -> str:
    """``B2`` / ``b02`` / ``B8a`` -> ``B02`` / ``B02`` / ``B8A``; any other name is returned stripped."""
    s = str(name).strip()
    m = re.fullmatch(r"[Bb](\d{1,2}|8[Aa])", s)
    if not m:
        return s
    tok = m.group(1).upper()
    return "B8A" if tok == "8A" else f"B{int(tok):02d}"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse_xml(path: Path, what: str) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise ProductError(f"{path}: cannot read it as the {what} metadata ({exc})") from exc


def _iter(root: ET.Element, name: str) -> list[ET.Element]:
    """Every element called ``name`` (namespace ignored), in document order."""
    return [e for e in root.iter() if _local(e.tag) == name]


def _float(e: ET.Element | None, what: str, path: Path) -> float:
    try:
        return float((e.text or "").strip())
    except (AttributeError, ValueError) as exc:
        raise ProductError(f"{path}: {what} is missing or not a number") from exc


def same_crs(a: str, b: str) -> bool:
    """Whether two WKT strings name the same CRS (two empty strings: both local pixel grids)."""
    if not a or not b:
        return not a and not b
    sa, sb = osr.SpatialReference(), osr.SpatialReference()
    sa.ImportFromWkt(a)
    sb.ImportFromWkt(b)
    return bool(sa.IsSame(sb))


# --------------------------------------------------------------------------- EnMAP


def _enmap_xml(path: Path) -> Path:
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.name.upper().endswith("METADATA.XML"))
        if len(found) != 1:
            raise ProductError(f"{path}: expected one *-METADATA.XML in the EnMAP product folder, found {len(found)}")
        return found[0]
    if not path.is_file():
        raise ProductError(f"{path}: no such file or folder")
    return path


def _enmap_image(xml: Path) -> Path:
    stem = re.sub(r"-?METADATA\.XML$", "", xml.name, flags=re.IGNORECASE)
    for ext in _IMAGE_EXTENSIONS:
        p = xml.with_name(f"{stem}-SPECTRAL_IMAGE{ext}")
        if p.is_file():
            return p
    found = sorted(p for p in xml.parent.iterdir() if "SPECTRAL_IMAGE" in p.name.upper()
                   and p.suffix.lower() not in (".xml", ".hdr", ".aux", ".ovr", ".msk"))
    if not found:
        raise ProductError(f"{xml}: no *-SPECTRAL_IMAGE raster beside it (the EnMAP product's cube)")
    return found[0]


def read_enmap_l2a(path: str | os.PathLike) -> HsiSource:
    """An EnMAP L2A product (its folder or ``*-METADATA.XML``): cube, wavelengths, FWHM, gains, offsets, bad bands."""
    xml = _enmap_xml(Path(path))
    if re.search(r"L1[BC]", xml.name, re.IGNORECASE):
        raise ProductError(f"{xml}: an EnMAP L1B/L1C product holds radiance; give the L2A (surface reflectance) product")
    root = _parse_xml(xml, "EnMAP")
    chars = root.findall("specific/bandCharacterisation/bandID") or _iter(root, "bandID")
    chars = [e for e in chars if e.find("wavelengthCenterOfBand") is not None]
    if not chars:
        raise ProductError(f"{xml}: no specific/bandCharacterisation/bandID entries: not an EnMAP METADATA.XML")
    chars.sort(key=lambda e: int(e.get("number", "0")))
    wl = np.array([_float(e.find("wavelengthCenterOfBand"), f"band {e.get('number')} wavelengthCenterOfBand", xml)
                   for e in chars])
    fwhm = np.array([_float(e.find("FWHMOfBand"), f"band {e.get('number')} FWHMOfBand", xml) for e in chars])
    gains = np.array([_float(e.find("GainOfBand"), f"band {e.get('number')} GainOfBand", xml) for e in chars])
    offsets = np.array([_float(e.find("OffsetOfBand"), f"band {e.get('number')} OffsetOfBand", xml) for e in chars])
    n = len(chars)
    bad = np.zeros(n, bool)
    numbers = {int(e.get("number", "0")): k for k, e in enumerate(chars)}
    for e in root.findall("product/bandStatistics/bandID"):
        k = numbers.get(int(e.get("number", "0")))
        std = e.find("stdDeviation")
        if k is not None and std is not None and _float(std, "bandStatistics stdDeviation", xml) == 0:
            bad[k] = True
    image = _enmap_image(xml)
    meta = read_meta(image)
    if meta.bands != n:
        raise ProductError(f"{image}: {meta.bands} bands, but {xml.name} describes {n}")
    notes = [f"EnMAP L2A product {xml.name}: {n} bands {wl.min():.0f}-{wl.max():.0f} nm, reflectance = DN x "
             f"{_fmt(gains)} + {_fmt(offsets)}; {int(bad.sum())} band(s) without data flagged bad "
             f"({_band_list(np.flatnonzero(bad) + 1)})"]
    if any(s != 1.0 for s in meta.scales) or any(o != 0.0 for o in meta.offsets):
        gains, offsets = np.ones(n), np.zeros(n)
        notes.append(f"{image.name} carries its own scale/offset: used instead of the XML's gains")
    if all(v is None for v in meta.nodata):
        notes.append(f"{image.name} declares no nodata value: {ENMAP_NODATA:g} taken as nodata (EnMAP's fill value)")
    names = [f"band {k + 1} ({w:.1f} nm)" for k, w in enumerate(wl)]
    return HsiSource(str(image), "EnMAP L2A product", names, gains, offsets, bad, wl, fwhm, "reflectance", tuple(notes),
                     ENMAP_NODATA)


def _fmt(values: np.ndarray) -> str:
    u = np.unique(values)
    return f"{u[0]:g}" if u.size == 1 else f"{u.min():g}..{u.max():g} (per band)"


def _band_list(numbers) -> str:
    numbers = [int(v) for v in numbers]
    return ", ".join(str(v) for v in numbers) if numbers else "none"


def open_hsi(path: str | os.PathLike) -> HsiSource:
    """An EnMAP L2A product (folder or ``METADATA.XML``) or any hyperspectral raster (band metadata as
    :mod:`core.raster_io` reads it; units unknown)."""
    p = Path(path)
    if p.is_dir() or p.name.upper().endswith(".XML"):
        return read_enmap_l2a(p)
    try:
        meta = read_meta(p)
    except RasterError as exc:
        raise ProductError(f"LR-HSI: {exc}") from exc
    n = meta.bands
    bad = np.zeros(n, bool) if meta.bad_bands is None else np.asarray(meta.bad_bands, bool)
    return HsiSource(str(p), "raster", list(meta.band_names), np.ones(n), np.zeros(n), bad, meta.wavelengths, meta.fwhm)


# --------------------------------------------------------------------------- Sentinel-2


def _s2_mtd(path: Path) -> Path:
    if path.is_dir():
        for name in _S2_MTD:
            if (path / name).is_file():
                return path / name
        raise ProductError(f"{path}: no MTD_MSIL2A.xml or MTD_MSIL1C.xml in it: not a Sentinel-2 .SAFE folder")
    if not path.is_file():
        raise ProductError(f"{path}: no such file or folder")
    return path


@dataclass(frozen=True)
class _S2Radiometry:
    quantification: float
    offsets: dict[str, float]
    nodata: float
    level: str
    baseline: str


def _s2_radiometry(mtd: Path, root: ET.Element) -> _S2Radiometry:
    l2a = "2A" in _local(root.tag) or mtd.name.upper() == "MTD_MSIL2A.XML"
    quant = _iter(root, "BOA_QUANTIFICATION_VALUE" if l2a else "QUANTIFICATION_VALUE")
    if not quant:
        raise ProductError(f"{mtd}: no {'BOA_' if l2a else ''}QUANTIFICATION_VALUE: cannot scale the DN to reflectance")
    q = _float(quant[0], "the quantification value", mtd)
    ids = {int(e.get("bandId")): normalise_band_name(e.get("physicalBand", ""))
           for e in _iter(root, "Spectral_Information") if e.get("bandId") is not None}
    ids = ids or dict(enumerate(S2_BAND_IDS))
    offsets = {}
    for e in _iter(root, "BOA_ADD_OFFSET" if l2a else "RADIO_ADD_OFFSET"):
        band = ids.get(int(e.get("band_id", "-1")))
        if band is not None:
            offsets[band] = _float(e, f"the offset of band_id {e.get('band_id')}", mtd)
    nodata = 0.0
    for sv in _iter(root, "Special_Values"):
        text = next((c.text for c in sv if _local(c.tag) == "SPECIAL_VALUE_TEXT"), "")
        index = next((c for c in sv if _local(c.tag) == "SPECIAL_VALUE_INDEX"), None)
        if (text or "").strip().upper() == "NODATA" and index is not None:
            nodata = _float(index, "the NODATA special value", mtd)
    baseline = next((e.text.strip() for e in _iter(root, "PROCESSING_BASELINE") if e.text), "")
    return _S2Radiometry(q, offsets, nodata, "L2A (BOA reflectance)" if l2a else "L1C (TOA reflectance)", baseline)


def _s2_band_files(safe: Path, root: ET.Element) -> dict[str, list[tuple[int, Path]]]:
    """``{band: [(resolution_m, file), ...]}`` from the metadata's ``IMAGE_FILE`` list, else from the folder tree."""
    files: list[Path] = []
    for e in _iter(root, "IMAGE_FILE"):
        rel = (e.text or "").strip()
        for ext in (".jp2", ".tif", ""):
            p = safe / f"{rel}{ext}"
            if rel and p.is_file():
                files.append(p)
                break
    if not files:
        files = sorted(p for p in safe.glob("GRANULE/*/IMG_DATA/**/*") if p.is_file() and p.suffix.lower() in (".jp2", ".tif"))
    out: dict[str, list[tuple[int, Path]]] = {}
    for p in files:
        m = _S2_FILE.search(p.stem) or re.search(r"_(B(?:\d\d|8A))$", p.stem, re.IGNORECASE)
        if not m:
            continue
        band = normalise_band_name(m.group(1))
        res = int(m.group(2)) if m.re is _S2_FILE else 0
        out.setdefault(band, []).append((res, p))
    return out


def read_sentinel2_safe(path: str | os.PathLike) -> list[MsiBand]:
    """The bands of a Sentinel-2 product (``.SAFE`` folder or its ``MTD_MSIL2A.xml`` / ``MTD_MSIL1C.xml``), each at
    its finest resolution, in band order (B01..B12), with reflectance = (DN + offset) / quantification."""
    mtd = _s2_mtd(Path(path))
    root = _parse_xml(mtd, "Sentinel-2")
    rad = _s2_radiometry(mtd, root)
    files = _s2_band_files(mtd.parent, root)
    if not files:
        raise ProductError(f"{mtd.parent}: no band files (GRANULE/*/IMG_DATA/R10m/*_B02_10m.jp2 ...) in the product")
    label = f"Sentinel-2 {rad.level} {mtd.parent.name}"
    order = {b: k for k, b in enumerate(S2_BAND_IDS)}
    bands = []
    for name in sorted(files, key=lambda b: order.get(b, len(order))):
        _, p = min(files[name], key=lambda t: t[0] or 1e9)
        off = rad.offsets.get(name, 0.0)
        bands.append(MsiBand(name, str(p), 1, 1.0 / rad.quantification, off / rad.quantification, rad.nodata,
                             "reflectance", label))
    return bands


def _s2_product_above(path: Path, levels: int = 6) -> Path | None:
    """The Sentinel-2 metadata file of the product tree a band file sits in, if any."""
    for parent in list(path.resolve().parents)[:levels]:
        for name in _S2_MTD:
            if (parent / name).is_file():
                return parent / name
    return None


# --------------------------------------------------------------------------- plain rasters


def _name_from(description: str, path: Path, k: int, count: int) -> str:
    d = normalise_band_name(description)
    if re.fullmatch(r"B(\d\d|8A)", d):
        return d
    if count == 1 and (m := _BAND_TOKEN.search(path.stem)):
        return normalise_band_name(m.group(1))
    if description and not re.fullmatch(r"Band \d+", description):
        return description
    return path.stem if count == 1 else f"{path.stem} band {k + 1}"


def _raster_bands(path: Path) -> list[MsiBand]:
    meta = read_meta(path)
    mtd = _s2_product_above(path) if meta.bands == 1 else None
    rad = None
    if mtd is not None:
        try:
            rad = _s2_radiometry(mtd, _parse_xml(mtd, "Sentinel-2"))
        except ProductError:
            rad = None
    out = []
    for k in range(meta.bands):
        name = _name_from(meta.band_names[k], path, k, meta.bands)
        scale, offset, nodata = meta.scales[k], meta.offsets[k], meta.nodata[k]
        if rad is not None and re.fullmatch(r"B(\d\d|8A)", name):
            off = rad.offsets.get(name, 0.0)
            out.append(MsiBand(name, str(path), k + 1, 1.0 / rad.quantification, off / rad.quantification,
                               rad.nodata if nodata is None else nodata, "reflectance",
                               f"{path.name} (Sentinel-2 {rad.level}, metadata {mtd.parent.name}/{mtd.name})"))
        else:
            out.append(MsiBand(name, str(path), k + 1, scale, offset, nodata, "", path.name))
    return out


def open_msi(sources: str | os.PathLike | list[str | os.PathLike]) -> list[MsiBand]:
    """The bands of an HR-MSI: a Sentinel-2 ``.SAFE`` folder (or its metadata file), one multi-band raster, or
    several rasters (all bands of each, in the order given). A band name given at several pixel sizes keeps the
    finest; given twice at one size, it raises :class:`ProductError`."""
    items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    if not items:
        raise ProductError("no HR-MSI given: a Sentinel-2 .SAFE folder or one or more rasters are needed")
    bands: list[MsiBand] = []
    for item in items:
        p = Path(item)
        if p.is_dir() or p.name in _S2_MTD:
            bands += read_sentinel2_safe(p)
        else:
            try:
                bands += _raster_bands(p)
            except RasterError as exc:
                raise ProductError(f"HR-MSI: {exc}") from exc
    return _finest_of_each(bands)


def _finest_of_each(bands: list[MsiBand]) -> list[MsiBand]:
    """One band per name: of a band given at several pixel sizes (a product's R10m and R20m files), the finest."""
    kept: dict[str, tuple[float, MsiBand]] = {}
    for b in bands:
        px = read_meta(b.path).pixel_size[0]
        if b.name in kept:
            other_px, other = kept[b.name]
            if px == other_px:
                raise ProductError(f"HR-MSI band {b.name} is given twice at {px:g} ({other.path} and {b.path}); "
                                   "give each band once")
            if px > other_px:
                continue
        kept[b.name] = (px, b)
    return [kept[b.name][1] for b in bands if kept[b.name][1] is b]


# --------------------------------------------------------------------------- grids and warping


def _dataset(band: MsiBand) -> gdal.Dataset:
    try:
        return gdal.Open(band.path, gdal.GA_ReadOnly)
    except RuntimeError as exc:
        raise ProductError(f"HR-MSI band {band.name}: GDAL cannot open {band.path} ({exc})") from exc


def native_grid(band: MsiBand, crs_wkt: str) -> Grid:
    """The band's own pixel grid expressed in ``crs_wkt``: its geotransform when it is in that CRS, else the
    grid GDAL's warper suggests for it (same pixel count along the diagonal)."""
    ds = _dataset(band)
    own = ds.GetProjection() or ""
    if bool(own) != bool(crs_wkt):
        raise ProductError(f"HR-MSI band {band.name} ({Path(band.path).name}) is in {describe_crs(own)} but the LR-HSI "
                           f"in {describe_crs(crs_wkt)}; assign a CRS to the one without")
    if not same_crs(own, crs_wkt):
        ds = gdal.Warp("", ds, format="VRT", dstSRS=crs_wkt)
    gt = ds.GetGeoTransform()
    if gt[2] != 0 or gt[4] != 0 or gt[1] <= 0 or gt[5] >= 0:
        raise ProductError(f"HR-MSI band {band.name} ({Path(band.path).name}) is not on a north-up grid (geotransform {gt})")
    return Grid(gt[0], gt[3], gt[1], -gt[5], ds.RasterYSize, ds.RasterXSize, crs_wkt)


def warp_band(band: MsiBand, grid: Grid, resampling: str) -> np.ndarray:
    """float32 ``(grid.rows, grid.cols)``: the band warped onto ``grid`` with GDAL's ``resampling`` ("near",
    "average", "cubic", ...), then ``raw * gain + offset``; nodata and pixels outside the band are NaN."""
    src = gdal.Translate("", _dataset(band), format="VRT", bandList=[band.band])
    try:
        out = gdal.Warp("", src, format="MEM", outputBounds=grid.bounds, width=grid.cols, height=grid.rows,
                        dstSRS=grid.crs_wkt or None, resampleAlg=resampling, srcNodata=band.nodata, dstNodata=math.nan,
                        outputType=gdal.GDT_Float32, errorThreshold=0.0)
    except RuntimeError as exc:
        raise ProductError(f"HR-MSI band {band.name}: warping {band.path} failed ({exc})") from exc
    a = out.GetRasterBand(1).ReadAsArray().astype(np.float32)
    if band.gain != 1.0 or band.offset != 0.0:
        a = a * np.float32(band.gain) + np.float32(band.offset)
    return a
