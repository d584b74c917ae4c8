"""Raster I/O with GDAL: float32 ``(bands, rows, cols)`` arrays plus spectral metadata.

Reading follows EnMAP-Box's conventions for spectral metadata, in this order of precedence:

1. band-level ``IMAGERY`` domain ``CENTRAL_WAVELENGTH_UM`` / ``FWHM_UM`` (GDAL >= 3.10);
2. band-level default-domain ``wavelength`` / ``wavelength_units`` / ``fwhm`` / ``bbl`` (EnMAP-Box);
3. dataset-level ``ENVI`` domain lists ``wavelength``, ``wavelength_units``, ``fwhm``, ``bbl``.

Wavelengths are returned in nanometres (micrometres are converted; an ENVI file with
``wavelength_units = Unknown`` is taken as micrometres when every value is below 100).
Nodata pixels come back as NaN and ``RasterMeta.valid`` marks pixels where every good band
(``bbl`` = 1) is finite.

Writing goes to a hidden temporary file beside the target, renamed only when the writer is
closed without an error, so a failed or cancelled run never leaves a file that looks finished.
Every failure (a full disk, a GDAL write error, a failed rename) removes the temporary file.
A lock file ``OUT.tif.lock`` beside the target keeps two runs from writing the same output;
the lock of a run that died on this machine is taken over, with the partial files it left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
from osgeo import gdal, osr

gdal.UseExceptions()
osr.UseExceptions()

log = logging.getLogger("hsr_diff.raster_io")

__all__ = [
    "Window",
    "RasterMeta",
    "RasterError",
    "OutputLocked",
    "OutputLock",
    "RasterReader",
    "commit_all",
    "bands_with_data",
    "bounded_gdal_cache",
    "RasterWriter",
    "OUTPUT_TYPES",
    "INT16_NODATA",
    "OVERVIEW_MIN_SIZE",
    "int16_value_scale",
    "approximate_max_abs",
    "output_options",
    "read_meta",
    "read_raster",
    "write_raster",
    "iter_windows",
    "valid_mask",
    "subset_meta",
    "describe_crs",
]


class RasterError(ValueError):
    """A raster cannot be read or written; the message names the file and the problem."""


class OutputLocked(RasterError):
    """Another run is writing the same output path; the message names the lock file and its holder."""


class Window(NamedTuple):
    """A pixel window: column and row offsets, width and height (pixels)."""

    col_off: int
    row_off: int
    width: int
    height: int


@dataclass
class RasterMeta:
    """What we know about a raster besides its pixels.

    ``shape`` is ``(bands, rows, cols)``; ``geotransform`` is GDAL's 6-tuple; ``crs_wkt`` is ""
    when the file has no CRS; ``nodata`` has one entry per band (None = no nodata);
    ``wavelengths`` and ``fwhm`` are ``(bands,)`` float64 nanometres or None; ``bad_bands`` is a
    ``(bands,)`` bool array, True where ``bbl`` = 0; ``valid`` is the ``(rows, cols)`` validity mask
    of the last array read with this metadata (None until something was read).
    """

    path: str
    shape: tuple[int, int, int]
    geotransform: tuple[float, float, float, float, float, float]
    crs_wkt: str
    nodata: list[float | None]
    dtype: str
    band_names: list[str]
    wavelengths: np.ndarray | None = None
    fwhm: np.ndarray | None = None
    bad_bands: np.ndarray | None = None
    scales: list[float] = field(default_factory=list)
    offsets: list[float] = field(default_factory=list)
    valid: np.ndarray | None = None

    @property
    def bands(self) -> int:
        return self.shape[0]

    @property
    def rows(self) -> int:
        return self.shape[1]

    @property
    def cols(self) -> int:
        return self.shape[2]

    @property
    def pixel_size(self) -> tuple[float, float]:
        """Pixel width and height in CRS units (both positive)."""
        return abs(self.geotransform[1]), abs(self.geotransform[5])

    @property
    def good_bands(self) -> np.ndarray:
        """``(bands,)`` bool, True for bands not flagged bad."""
        return np.ones(self.bands, bool) if self.bad_bands is None else ~self.bad_bands

    @property
    def north_up_geotransform(self) -> tuple[float, ...]:
        """The geotransform, or a local north-up pixel grid ``(0, 1, 0, 0, 0, -1)`` for a file without one.

        GDAL reports ``(0, 1, 0, 0, 0, 1)`` for an image with no georeference (CAVE, HYDICE...),
        whose positive pixel height no GIS expects.
        """
        gt = self.geotransform
        return (0.0, 1.0, 0.0, 0.0, 0.0, -1.0) if tuple(gt) == (0.0, 1.0, 0.0, 0.0, 0.0, 1.0) else gt

    def window_geotransform(self, window: Window) -> tuple[float, ...]:
        gt = self.north_up_geotransform
        x = gt[0] + window.col_off * gt[1] + window.row_off * gt[2]
        y = gt[3] + window.col_off * gt[4] + window.row_off * gt[5]
        return (x, gt[1], gt[2], y, gt[4], gt[5])


# --------------------------------------------------------------------------- reading

_UNIT_TO_NM = {"nanometers": 1.0, "nanometer": 1.0, "nm": 1.0, "micrometers": 1000.0, "micrometer": 1000.0,
               "um": 1000.0, "µm": 1000.0, "microns": 1000.0, "millimeters": 1e6, "mm": 1e6}


def _nm_factor(wavelengths: np.ndarray, units: str | None) -> float:
    """Factor converting ``wavelengths`` (and their FWHMs) to nanometres."""
    key = (units or "").strip().lower()
    if key in _UNIT_TO_NM:
        return _UNIT_TO_NM[key]
    # Unknown units: hyperspectral wavelengths in µm are below ~3, in nm above ~300.
    return 1000.0 if np.nanmax(wavelengths) < 100 else 1.0


def _envi_list(text: str | None) -> list[str] | None:
    if not text:
        return None
    items = [s.strip() for s in text.strip().strip("{}").split(",")]
    return [s for s in items if s] or None


def _spectral_metadata(ds: gdal.Dataset) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    n = ds.RasterCount
    bands = [ds.GetRasterBand(i + 1) for i in range(n)]
    wl = fw = None
    # 1. GDAL >= 3.10 IMAGERY domain (micrometres).
    imagery = [b.GetMetadata("IMAGERY") or {} for b in bands]
    if all("CENTRAL_WAVELENGTH_UM" in m for m in imagery):
        wl = np.array([float(m["CENTRAL_WAVELENGTH_UM"]) for m in imagery]) * 1000.0
        if all("FWHM_UM" in m for m in imagery):
            fw = np.array([float(m["FWHM_UM"]) for m in imagery]) * 1000.0
    md = [b.GetMetadata() or {} for b in bands]
    # 2. EnMAP-Box band-level default domain.
    if wl is None and all("wavelength" in m for m in md):
        wl = np.array([float(m["wavelength"]) for m in md])
        factor = _nm_factor(wl, md[0].get("wavelength_units"))
        wl = wl * factor
        if all("fwhm" in m for m in md):
            fw = np.array([float(m["fwhm"]) for m in md]) * factor
    bbl = None
    if all("bbl" in m for m in md):
        bbl = np.array([float(m["bbl"]) == 0 for m in md])
    # 3. ENVI dataset-level lists.
    envi = ds.GetMetadata("ENVI") or {}
    units = envi.get("wavelength_units") or envi.get("wavelength units")
    if wl is None and (lst := _envi_list(envi.get("wavelength"))) and len(lst) == n:
        wl = np.array([float(v) for v in lst])
        wl = wl * _nm_factor(wl, units)
    if wl is not None and fw is None and (f := _envi_list(envi.get("fwhm"))) and len(f) == n:
        raw = _envi_list(envi.get("wavelength"))
        factor = _nm_factor(np.array([float(v) for v in raw]), units) if raw and len(raw) == n else 1.0
        fw = np.array([float(v) for v in f]) * factor
    if bbl is None and (b := _envi_list(envi.get("bbl"))) and len(b) == n:
        bbl = np.array([float(v) == 0 for v in b])
    return wl, fw, bbl


def _open(path: str | os.PathLike) -> gdal.Dataset:
    path = str(path)
    if not os.path.exists(path) and not path.startswith("/vsi"):
        raise RasterError(f"{path}: no such file")
    try:
        ds = gdal.Open(path, gdal.GA_ReadOnly)
    except RuntimeError as exc:
        raise RasterError(f"{path}: GDAL cannot open it as a raster ({exc})") from exc
    if ds is None or ds.RasterCount == 0:
        raise RasterError(f"{path}: not a raster with at least one band")
    return ds


def _meta_from_dataset(ds: gdal.Dataset, path: str) -> RasterMeta:
    n = ds.RasterCount
    bands = [ds.GetRasterBand(i + 1) for i in range(n)]
    wl, fw, bbl = _spectral_metadata(ds)
    names = [b.GetDescription() or f"Band {i + 1}" for i, b in enumerate(bands)]
    return RasterMeta(
        path=path,
        shape=(n, ds.RasterYSize, ds.RasterXSize),
        geotransform=tuple(ds.GetGeoTransform()),
        crs_wkt=ds.GetProjection() or "",
        nodata=[b.GetNoDataValue() for b in bands],
        dtype=gdal.GetDataTypeName(bands[0].DataType),
        band_names=names,
        wavelengths=wl,
        fwhm=fw,
        bad_bands=bbl,
        scales=[b.GetScale() if b.GetScale() is not None else 1.0 for b in bands],
        offsets=[b.GetOffset() if b.GetOffset() is not None else 0.0 for b in bands],
    )


def read_meta(path: str | os.PathLike) -> RasterMeta:
    """Metadata of a raster without reading its pixels."""
    ds = _open(path)
    return _meta_from_dataset(ds, str(path))


def valid_mask(array: np.ndarray, meta: RasterMeta | None = None) -> np.ndarray:
    """``(rows, cols)`` bool: True where every good band of ``array`` (already NaN-masked) is finite."""
    good = array if meta is None or meta.bad_bands is None else array[meta.good_bands]
    if good.shape[0] == 0:
        good = array
    return np.isfinite(good).all(axis=0)


class RasterReader:
    """Windowed reader: ``with RasterReader(path) as r: a = r.read(Window(...))``."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self._ds = _open(path)
        self.meta = _meta_from_dataset(self._ds, self.path)

    def __enter__(self) -> RasterReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._ds = None

    def read(self, window: Window | None = None, bands: list[int] | None = None) -> np.ndarray:
        """Read float32 ``(len(bands), height, width)``; nodata -> NaN, scale/offset applied.

        ``bands`` are 0-based indices (all by default). Parts of the window outside the raster
        are filled with NaN, so callers can read tiles with a halo at the edges.
        """
        m = self.meta
        w = window or Window(0, 0, m.cols, m.rows)
        idx = list(range(m.bands)) if bands is None else list(bands)
        out = np.full((len(idx), w.height, w.width), np.nan, np.float32)
        c0, r0 = max(w.col_off, 0), max(w.row_off, 0)
        c1, r1 = min(w.col_off + w.width, m.cols), min(w.row_off + w.height, m.rows)
        if c1 <= c0 or r1 <= r0:
            return out
        for k, b in enumerate(idx):
            band = self._ds.GetRasterBand(b + 1)
            a = band.ReadAsArray(c0, r0, c1 - c0, r1 - r0).astype(np.float32)
            nd = m.nodata[b]
            if nd is not None:
                a[a == np.float32(nd)] = np.nan
            if m.scales[b] != 1.0 or m.offsets[b] != 0.0:
                a = a * np.float32(m.scales[b]) + np.float32(m.offsets[b])
            out[k, r0 - w.row_off:r1 - w.row_off, c0 - w.col_off:c1 - w.col_off] = a
        return out


def read_raster(
    path: str | os.PathLike, window: Window | None = None, bands: list[int] | None = None
) -> tuple[np.ndarray, RasterMeta]:
    """Read a raster (or a window of it) as float32 ``(bands, rows, cols)`` and its metadata.

    The returned metadata's ``valid`` holds the validity mask of the returned array.
    """
    with RasterReader(path) as r:
        array = r.read(window, bands)
        meta = r.meta
    meta.valid = valid_mask(array, meta if bands is None else None)
    return array, meta


def iter_windows(rows: int, cols: int, block: int | tuple[int, int]) -> Iterator[Window]:
    """Row-major windows of at most ``block`` pixels covering a ``rows x cols`` grid."""
    bh, bw = (block, block) if isinstance(block, int) else block
    for r in range(0, rows, bh):
        for c in range(0, cols, bw):
            yield Window(c, r, min(bw, cols - c), min(bh, rows - r))


# --------------------------------------------------------------------------- writing

_NP_TO_GDAL = {"float32": gdal.GDT_Float32, "float64": gdal.GDT_Float64, "int16": gdal.GDT_Int16,
               "uint16": gdal.GDT_UInt16, "uint8": gdal.GDT_Byte, "int32": gdal.GDT_Int32}

OUTPUT_TYPES = ("float32", "int16")
"""How a result can be stored: ``float32`` (as computed) or ``int16`` (scaled integers, see :func:`output_options`)."""
INT16_NODATA = -32768
"""The nodata value of an ``int16`` output; valid values are clipped to -32767..32767."""
INT16_HEADROOM = 1.25
"""An ``int16`` output keeps room for values this many times larger than the input's largest."""
OVERVIEW_MIN_SIZE = 2048
"""Outputs with a side of at least this many pixels get internal overviews (pyramids) when committed."""


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.stem}.partial-{uuid.uuid4().hex[:8]}{path.suffix or '.tif'}")


def _aux(path: Path) -> Path:
    """GDAL's side file of ``path`` (statistics, histograms, metadata the format cannot hold)."""
    return Path(str(path) + ".aux.xml")


def _read_text(path: Path) -> str | None:
    """The text of a small file; None when it does not exist, "" when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except OSError:
        return ""


_HOST = socket.gethostname()
_UNREADABLE_LOCK_GRACE_S = 30.0  # a lock file without a pid may be one being written right now


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (True when that cannot be told)."""
    if pid <= 0:
        return False
    if os.name == "nt":
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return kernel32.GetLastError() == 5  # ERROR_ACCESS_DENIED: it exists, owned by someone else
        try:
            code = ctypes.c_ulong()
            return not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: it exists, owned by another user
    return True


def _parse_lock(text: str) -> tuple[int | None, str]:
    """``(pid, host)`` of a lock file's text; pid None when the text holds none."""
    lines = text.splitlines()
    try:
        pid = int(lines[0])
    except (IndexError, ValueError):
        return None, ""
    return pid, lines[1].strip() if len(lines) > 1 else ""


class OutputLock:
    """An exclusive claim on an output path: the file ``<output>.lock`` beside it, created atomically.

    The lock file holds the pid and host of its holder. :meth:`acquire` raises :class:`OutputLocked`
    while a live holder has it (another process, or another writer in this one); a lock whose
    process no longer runs on this host is stale and taken over. :meth:`release` removes the
    lock file if it is still this holder's.
    """

    def __init__(self, target: str | os.PathLike):
        self.target = Path(target)
        self.path = self.target.with_name(self.target.name + ".lock")
        self.held = False
        self._text = f"{os.getpid()}\n{_HOST}\n{uuid.uuid4().hex}\n"

    def live_holder(self) -> str | None:
        """The lock file's text when a live holder has it, else None (no lock file, or a stale one)."""
        text, live = self._inspect()
        return text if live else None

    def _inspect(self) -> tuple[str | None, bool]:
        """The lock file's text (None when there is none) and whether its holder is alive."""
        text = _read_text(self.path)
        if text is None:
            return None, False
        pid, host = _parse_lock(text)
        if pid is None:
            try:
                age = time.time() - self.path.stat().st_mtime
            except OSError:
                return None, False
            return text, age < _UNREADABLE_LOCK_GRACE_S
        if host != _HOST:
            return text, True  # a process on another machine cannot be checked from here
        return text, pid == os.getpid() or _pid_alive(pid)

    def acquire(self) -> OutputLock:
        """Create the lock file, taking over a stale one; raises :class:`OutputLocked` while another holds it."""
        for _ in range(10):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                text, live = self._inspect()
                if live:
                    raise OutputLocked(self._busy_message(text)) from None
                if text is not None:
                    self._take_over(text)
                continue
            except OSError as exc:
                raise RasterError(f"{self.target}: cannot create the lock file {self.path} ({exc.strerror or exc})") from exc
            try:
                try:
                    os.write(fd, self._text.encode())
                finally:
                    os.close(fd)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    self.path.unlink()
                raise RasterError(f"{self.target}: cannot write the lock file {self.path} ({exc.strerror or exc}); "
                                  "is the disk full?") from exc
            self.held = True
            return self
        raise OutputLocked(f"another run keeps taking the lock file {self.path} of {self.target}; wait for it or choose "
                           "another output")

    def _busy_message(self, holder: str) -> str:
        pid, host = _parse_lock(holder)
        who = "pid unknown" if pid is None else f"pid {pid}" + ("" if host == _HOST else f" on {host}")
        return (f"another run is writing {self.target} (lock file {self.path}, {who}); wait for it or choose another "
                "output (delete the lock file only if that run is gone)")

    def _take_over(self, text: str) -> None:
        """Remove the stale lock file whose text is ``text``, unless another run replaced it meanwhile."""
        aside = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise RasterError(f"{self.target}: cannot remove the stale lock file {self.path} ({exc.strerror or exc})") from exc
        if _read_text(aside) != text:  # another run took it between the read and the rename: give it back
            _put_back(aside, self.path)
            return
        pid, host = _parse_lock(text)
        log.info("%s: took over the stale lock of pid %s on %s", self.target, pid, host or "?")
        with contextlib.suppress(OSError):
            aside.unlink()

    def release(self) -> None:
        """Remove the lock file if this holder still has it."""
        if not self.held:
            return
        self.held = False
        if _read_text(self.path) != self._text:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("%s: cannot remove the lock file %s (%s)", self.target, self.path, exc)


def _put_back(aside: Path, path: Path) -> None:
    """Move ``aside`` back to ``path`` without overwriting a file that appeared there since."""
    try:
        if os.name == "nt":
            os.rename(aside, path)  # fails when ``path`` exists
        else:
            os.link(aside, path)  # fails when ``path`` exists
    except FileExistsError:
        pass
    except OSError:
        with contextlib.suppress(OSError):
            if not os.path.lexists(path):
                os.rename(aside, path)
    with contextlib.suppress(FileNotFoundError):
        aside.unlink()


def _remove_stale_partials(path: Path) -> list[Path]:
    """Delete the temporary files (and their ``.aux.xml``) that killed runs left for the output ``path``.

    Call it holding ``path``'s :class:`OutputLock`, so no live run writes them. A temporary name
    that another output shares (``out`` and ``out.tif`` both use ``.out.partial-*.tif``) is kept
    while that output's lock is live. Returns the removed files.
    """
    suffix = path.suffix or ".tif"
    if suffix == ".tif":
        for other in {path.with_name(path.stem), path.with_name(path.stem + suffix)} - {path}:
            if OutputLock(other).live_holder() is not None:
                return []
    pattern = re.compile(rf"\.{re.escape(path.stem)}\.partial-[0-9a-f]{{8}}{re.escape(suffix)}(?:\.aux\.xml)?")
    try:
        entries = [e for e in os.scandir(path.parent) if pattern.fullmatch(e.name) and e.is_file(follow_symlinks=False)]
    except OSError:
        return []
    removed = []
    for e in entries:
        try:
            os.unlink(e.path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("%s: cannot remove the stale partial file %s (%s)", path, e.path, exc)
            continue
        removed.append(Path(e.path))
    if removed:
        log.info("%s: removed %d partial file(s) a stopped run left: %s", path, len(removed), ", ".join(p.name for p in removed))
    return removed


class _GdalErrors:
    """Collects the failure messages GDAL reports on this thread inside a ``with`` block.

    Also catches the failure of closing a dataset, which GDAL's Python bindings print as an
    "Exception ignored" traceback instead of raising it.
    """

    def __enter__(self) -> _GdalErrors:
        self.messages: list[str] = []
        self._thread = threading.get_ident()
        self._hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        gdal.PushErrorHandler(self._handler)
        return self

    def __exit__(self, *exc) -> None:
        gdal.PopErrorHandler()
        if sys.unraisablehook == self._unraisable:
            sys.unraisablehook = self._hook

    def _handler(self, cls, _code, msg) -> None:
        text = str(msg).strip()
        if cls >= gdal.CE_Failure and text and text not in self.messages:
            self.messages.append(text)

    def _unraisable(self, unraisable) -> None:
        if isinstance(unraisable.exc_value, RuntimeError) and threading.get_ident() == self._thread:
            self._handler(gdal.CE_Failure, 0, str(unraisable.exc_value))
        else:
            self._hook(unraisable)


def _call(method, *args):
    """``method(*args)`` for a GDAL method; a raised GDAL error becomes its message as the return value.

    The error is not re-raised: its traceback would keep the dataset open past :meth:`RasterWriter.abort`.
    """
    try:
        return method(*args)
    except RuntimeError as exc:
        return str(exc) or "GDAL error"


class RasterWriter:
    """Windowed GeoTIFF writer that publishes the file only when closed without error.

    ``shape`` is ``(bands, rows, cols)``; float32 by default, tiled ``block`` x ``block`` (a multiple of
    16; writers of a tiled run pass their tile stride, so each block is written once, whole), DEFLATE with the
    floating-point predictor, BIGTIFF when the uncompressed size could pass 4 GB. Written arrays
    may hold NaN: they become ``nodata`` (NaN itself when ``nodata`` is None for a float type).
    Use as a context manager; on an exception the temporary file is deleted.

    An integer ``dtype`` stores ``round(value / value_scale)`` (``value_scale`` None = 1), clipped to the type's
    range less ``nodata``, and records ``value_scale`` as GDAL's band scale, so readers (this module, QGIS,
    GDAL tools) get the values back; NaN becomes ``nodata``, which an integer output with NaN needs.
    :attr:`clipped` counts the values the range cut. An output with a side of ``overview_min_size``
    pixels or more (None = never) gets internal AVERAGE overviews, halving down to about 256 pixels, at
    :meth:`commit`. With ``wavelengths``, the composite :func:`core.rendering.default_rgb` picks is
    recorded as the ``ENVI`` domain's ``default_bands`` (1-based red, green, blue).

    The output path is locked (:class:`OutputLock`) from construction until :meth:`commit` or
    :meth:`abort`: a second writer of the same path raises :class:`OutputLocked`. Partial files
    of this path left by a killed run are removed. Any failure (creating, writing, flushing or
    renaming; a full disk) removes the temporary file and its ``.aux.xml``, releases the lock and
    raises :class:`RasterError` naming the output.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        shape: tuple[int, int, int],
        geotransform: tuple[float, ...] | None = None,
        crs_wkt: str = "",
        nodata: float | None = None,
        band_names: list[str] | None = None,
        wavelengths: np.ndarray | list[float] | None = None,
        fwhm: np.ndarray | list[float] | None = None,
        bad_bands: np.ndarray | list[bool] | None = None,
        dtype: str = "float32",
        metadata: dict[str, str] | None = None,
        block: int = 256,
        value_scale: float | None = None,
        overview_min_size: int | None = OVERVIEW_MIN_SIZE,
    ):
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self._ds = self._tmp = self._lock = None
        bands, rows, cols = self.shape
        if self.path.is_dir():
            raise RasterError(f"{self.path}: is a folder, not a file name; give the output a file name such as "
                              f"{self.path / 'output.tif'}")
        if not self.path.parent.exists():
            raise RasterError(f"{self.path}: the output folder {self.path.parent} does not exist")
        if not os.access(self.path.parent, os.W_OK):
            raise RasterError(f"{self.path}: the output folder {self.path.parent} is not writable")
        if dtype not in _NP_TO_GDAL:
            raise RasterError(f"{self.path}: unsupported data type {dtype}")
        for key, seq in (("band_names", band_names), ("wavelengths", wavelengths), ("fwhm", fwhm), ("bad_bands", bad_bands)):
            if seq is not None and len(seq) != bands:
                raise RasterError(f"{self.path}: {len(seq)} {key} given for {bands} bands")
        self.dtype = np.dtype(dtype)
        if value_scale is not None and (self.dtype.kind not in "iu" or not value_scale > 0):
            raise RasterError(f"{self.path}: a value scale needs an integer data type and a positive scale, got {dtype} "
                              f"and {value_scale}")
        self.nodata = nodata
        self.value_scale = value_scale
        self.overview_min_size = overview_min_size
        self.clipped = 0
        self._lock = OutputLock(self.path).acquire()
        try:
            _remove_stale_partials(self.path)
            self._tmp = _temp_path(self.path)
            nbytes = bands * rows * cols * self.dtype.itemsize
            if block < 16 or block % 16:
                raise RasterError(f"{self.path}: the block size must be a multiple of 16, got {block}")
            opts = ["TILED=YES", f"BLOCKXSIZE={block}", f"BLOCKYSIZE={block}", "COMPRESS=DEFLATE",
                    f"PREDICTOR={3 if self.dtype.kind == 'f' else 2}", f"BIGTIFF={'YES' if nbytes > 3.5e9 else 'IF_SAFER'}",
                    "INTERLEAVE=BAND" if bands > 4 else "INTERLEAVE=PIXEL"]
            drv = gdal.GetDriverByName("GTiff")
            error = None
            with _GdalErrors() as errs:
                try:
                    self._ds = drv.Create(str(self._tmp), cols, rows, bands, _NP_TO_GDAL[dtype], opts)
                    if geotransform is not None:
                        self._ds.SetGeoTransform(tuple(geotransform))
                    if crs_wkt:
                        self._ds.SetProjection(crs_wkt)
                    if metadata:
                        self._ds.SetMetadata({str(k): str(v) for k, v in metadata.items()})
                    if wavelengths is not None:
                        self._ds.SetMetadataItem("default_bands", _envi_default_bands(wavelengths, bad_bands), "ENVI")
                    self._set_band_metadata(band_names, wavelengths, fwhm, bad_bands)
                except RuntimeError as exc:
                    error = str(exc)
            if error is not None:
                raise RasterError(f"{self.path}: cannot create the output ({self._detail(errs.messages, error)})")
        except BaseException:
            self.abort()
            raise

    def _set_band_metadata(self, names, wavelengths, fwhm, bad_bands) -> None:
        bands = self.shape[0]
        for i in range(bands):
            band = self._ds.GetRasterBand(i + 1)
            if self.nodata is not None:
                band.SetNoDataValue(float(self.nodata))
            elif self.dtype.kind == "f":
                band.SetNoDataValue(float("nan"))
            if names is not None:
                band.SetDescription(str(names[i]))
            if self.value_scale is not None:
                band.SetScale(float(self.value_scale))
                band.SetOffset(0.0)
            md, imagery = {}, {}
            if wavelengths is not None and np.isfinite(wavelengths[i]):
                md.update(wavelength=f"{float(wavelengths[i]):.4f}", wavelength_units="Nanometers")
                imagery["CENTRAL_WAVELENGTH_UM"] = f"{float(wavelengths[i]) / 1000:.7f}"
                if fwhm is not None and np.isfinite(fwhm[i]):
                    md["fwhm"] = f"{float(fwhm[i]):.4f}"
                    imagery["FWHM_UM"] = f"{float(fwhm[i]) / 1000:.7f}"
            if bad_bands is not None:
                md["bbl"] = "0" if bad_bands[i] else "1"
            if md:
                band.SetMetadata(md)
            if imagery:
                band.SetMetadata(imagery, "IMAGERY")

    def write(self, array: np.ndarray, window: Window | None = None, band_offset: int = 0) -> None:
        """Write ``(n, height, width)`` at ``window`` into bands ``band_offset .. band_offset + n - 1``.

        A failure aborts the writer (the temporary file is removed) and raises :class:`RasterError`.
        """
        if self._ds is None:
            raise RasterError(f"{self.path}: writer already closed")
        try:
            array = np.asarray(array)
            if array.ndim == 2:
                array = array[None]
            w = window or Window(0, 0, self.shape[2], self.shape[1])
            if array.shape[1:] != (w.height, w.width):
                raise RasterError(f"{self.path}: array {array.shape} does not fit window {tuple(w)}")
            with _GdalErrors() as errs:
                for k in range(array.shape[0]):
                    a = array[k]
                    if self.dtype.kind in "iu":
                        a = self._integers(a)
                    elif self.nodata is not None:
                        a = np.where(np.isfinite(a), a, self.nodata)
                    rc = _call(self._ds.GetRasterBand(band_offset + k + 1).WriteArray, a.astype(self.dtype, copy=False),
                               w.col_off, w.row_off)
                    if rc:
                        raise self._write_failure(errs.messages, rc)
        except BaseException:
            self.abort()
            raise

    def _integers(self, a: np.ndarray) -> np.ndarray:
        """``a`` (one band, NaN = nodata) as the integer values to store: divided by the value scale, rounded, clipped."""
        info = np.iinfo(self.dtype)
        lo, hi = int(info.min), int(info.max)
        if self.nodata == lo:
            lo += 1
        elif self.nodata == hi:
            hi -= 1
        v = a / np.float32(self.value_scale) if self.value_scale is not None else a
        finite = np.isfinite(v)
        if self.nodata is None and not finite.all():
            raise RasterError(f"{self.path}: an integer output without a nodata value cannot hold NaN")
        self.clipped += int(np.count_nonzero(finite & ((v < lo) | (v > hi))))
        return np.where(finite, np.clip(np.rint(np.where(finite, v, 0)), lo, hi), self.nodata or 0).astype(self.dtype)

    def _build_overviews(self) -> None:
        """Internal AVERAGE overviews (factors 2, 4, ... down to about 256 px) when a side reaches ``overview_min_size``."""
        rows, cols = self.shape[1:]
        if self.overview_min_size is None or max(rows, cols) < self.overview_min_size:
            return
        factors = [2]
        while max(rows, cols) // (factors[-1] * 2) >= 256:
            factors.append(factors[-1] * 2)
        log.info("%s: building overviews (1/%s)", self.path.name, ", 1/".join(map(str, factors)))
        with _GdalErrors() as errs:
            rc = _call(self._ds.BuildOverviews, "AVERAGE", factors)
        if rc or errs.messages:
            raise self._write_failure(errs.messages, rc or "building the overviews failed")

    def _detail(self, messages: list[str], rc) -> str:
        """GDAL's own causes first (those not naming the temporary file), at most two."""
        tmp = str(self._tmp)
        found = [m for m in messages if tmp not in m] or [m.replace(tmp, self.path.name) for m in messages[-1:]]
        return "; ".join(found[:2]) or (rc if isinstance(rc, str) else f"GDAL error {rc}")

    def _write_failure(self, messages: list[str], rc) -> RasterError:
        return RasterError(f"{self.path}: writing the output failed ({self._detail(messages, rc)}); the disk may be full "
                           "or the folder not writable; no output was written")

    def _close_dataset(self) -> list[str]:
        """Close the GDAL dataset (it writes what it still holds); the failures GDAL reported."""
        with _GdalErrors() as errs:
            self._ds = None
        return errs.messages

    def commit(self) -> Path:
        """Flush, close and rename the temporary file onto the target path; returns the path.

        The target's old ``.aux.xml`` (statistics of the file it replaces) is replaced by the new
        one or removed. On a failure the temporary file is removed, the lock released and
        :class:`RasterError` raised.
        """
        if self._ds is None:
            raise RasterError(f"{self.path}: writer already closed")
        try:
            with _GdalErrors() as errs:
                rc = _call(self._ds.FlushCache)
            if rc:
                raise self._write_failure(errs.messages, rc)
            self._build_overviews()
            if messages := self._close_dataset():
                raise self._write_failure(messages, "closing failed")
            self._publish()
        except BaseException:
            self.abort()
            raise
        self._lock.release()
        if self.clipped:
            log.warning("%s: %d value(s) outside the %s range were clipped", self.path, self.clipped, self.dtype.name)
        return self.path

    def _publish(self) -> None:
        tmp_aux, aux = _aux(self._tmp), _aux(self.path)
        try:
            os.replace(self._tmp, self.path)
        except OSError as exc:
            raise RasterError(f"{self.path}: cannot put the finished output in place ({exc.strerror or exc}); "
                              "no output was written") from exc
        try:
            if tmp_aux.exists():
                os.replace(tmp_aux, aux)
            elif os.path.lexists(aux):
                os.unlink(aux)
        except OSError as exc:
            raise RasterError(f"{self.path}: written, but its side file {aux} could not be replaced ({exc.strerror or exc}); "
                              "delete it: it describes an older file") from exc

    def abort(self) -> None:
        """Drop the temporary file and its ``.aux.xml`` and release the lock; the target path is left untouched."""
        try:
            if self._ds is not None:
                self._close_dataset()
        finally:
            if self._tmp is not None:
                for p in (self._tmp, _aux(self._tmp)):
                    try:
                        p.unlink()
                    except FileNotFoundError:
                        pass
                    except OSError as exc:
                        log.warning("%s: cannot remove the temporary file %s (%s)", self.path, p, exc)
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> RasterWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def __del__(self) -> None:
        if getattr(self, "_ds", None) is not None or getattr(getattr(self, "_lock", None), "held", False):
            with contextlib.suppress(Exception):
                self.abort()


def _envi_default_bands(wavelengths, bad_bands) -> str:
    """ENVI's ``default bands`` list of the composite :func:`core.rendering.default_rgb` picks, e.g. ``{48, 30, 16}``."""
    from .rendering import default_rgb

    good = None if bad_bands is None else ~np.asarray(bad_bands, bool)
    return "{" + ", ".join(map(str, default_rgb(len(wavelengths), wavelengths, good).bands)) + "}"


def int16_value_scale(max_abs: float) -> float:
    """The band scale of an ``int16`` output whose values reach ``max_abs``: 1e-4 (values x 10000) for reflectance.

    The smallest power of ten from 1e-4 up that keeps :data:`INT16_HEADROOM` times ``max_abs`` within
    32767, so data already stored x 10000 (EnMAP L2A) keep their numbers (scale 1) and radiances get
    what fits. Raises :class:`RasterError` past 1e9.
    """
    for exponent in range(-4, 10):
        scale = 10.0 ** exponent
        if max_abs * INT16_HEADROOM / scale <= 32767:
            return scale
    raise RasterError(f"values up to {max_abs:g} do not fit a 16-bit integer output; write float32")


def approximate_max_abs(reader: RasterReader, bands: list[int] | None = None) -> float:
    """The largest absolute value of ``reader``'s 0-based ``bands`` (default: its good bands), scale/offset applied.

    From GDAL's approximate minimum and maximum of each band (an overview or a sample of blocks, so it
    is cheap on any size); bands without a valid pixel are skipped; 0 when none has one.
    """
    m = reader.meta
    idx = [int(b) for b in np.flatnonzero(m.good_bands)] if bands is None else list(bands)
    top = 0.0
    with _GdalErrors():
        for b in idx:
            try:
                lo, hi = reader._ds.GetRasterBand(b + 1).ComputeRasterMinMax(True)
            except RuntimeError:  # no valid pixel in the band
                continue
            top = max(top, *(abs(v * m.scales[b] + m.offsets[b]) for v in (lo, hi)))
    return top


def output_options(output_type: str, like: RasterReader, bands: list[int] | None = None) -> dict:
    """:class:`RasterWriter` keyword arguments for an output of ``output_type`` (:data:`OUTPUT_TYPES`).

    ``float32``: none (the writer's default). ``int16``: nodata :data:`INT16_NODATA` and the value
    scale :func:`int16_value_scale` gives for values of the size of ``like``'s ``bands`` (the input
    the output is computed from; 1e-4, i.e. x 10000, for reflectance in 0-1).
    """
    if output_type == "float32":
        return {}
    if output_type == "int16":
        return dict(dtype="int16", nodata=INT16_NODATA, value_scale=int16_value_scale(approximate_max_abs(like, bands)))
    raise ValueError(f"unknown output type {output_type!r}; choose one of {', '.join(OUTPUT_TYPES)}")


def bands_with_data(read, rows: int, cols: int, progress=None, block: int = 256) -> np.ndarray:
    """``(bands,)`` bool: which bands of ``read(row0, col0, rows, cols)`` hold a finite value anywhere.

    Reads windows of ``block`` x ``block`` pixels in row-major order (memory: one window); stops
    early once every band has shown data. ``progress(fraction, message)`` is called after each window.
    """
    found = None
    windows = [(r, c) for r in range(0, rows, block) for c in range(0, cols, block)]
    for k, (r, c) in enumerate(windows):
        a = read(r, c, min(block, rows - r), min(block, cols - c))
        hit = np.isfinite(a).any(axis=(1, 2))
        found = hit if found is None else found | hit
        if progress is not None:
            progress((k + 1) / len(windows), "checking the inputs for empty bands")
        if found.all():
            break
    return found


GDAL_CACHE_BYTES = 64 * 1024 * 1024
"""GDAL's block cache during a windowed run (its default, 5 % of the RAM, would grow the process with the area)."""


@contextlib.contextmanager
def bounded_gdal_cache(max_bytes: int = GDAL_CACHE_BYTES):
    """Lower GDAL's block cache to ``max_bytes`` meanwhile (never raise it); a ``GDAL_CACHEMAX`` the user set wins.

    Windowed reads and writes touch each block once or twice, so a large cache only holds
    clean blocks that are never read again: peak memory then grows with the raster up to the
    cache size instead of following the window.
    """
    before = gdal.GetCacheMax()
    change = gdal.GetConfigOption("GDAL_CACHEMAX") is None and before > max_bytes
    if change:
        gdal.SetCacheMax(int(max_bytes))
    try:
        yield
    finally:
        if change:
            gdal.SetCacheMax(before)


def commit_all(writers: list[RasterWriter]) -> list[Path]:
    """Commit several writers as one result: when one fails, the others are aborted or removed again.

    Use for files that only make sense together (an output and its uncertainty); the writers
    are not context managers then (``abort`` them on the error paths before this call).
    """
    done: list[Path] = []
    try:
        for w in writers:
            done.append(w.commit())
    except BaseException:
        for w in writers[len(done):]:
            w.abort()
        for p in done:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        raise
    return done


def write_raster(path: str | os.PathLike, array: np.ndarray, meta: RasterMeta | None = None, **overrides) -> Path:
    """Write a whole ``(bands, rows, cols)`` array, taking georeference and spectral metadata from ``meta``.

    Keyword ``overrides`` (``geotransform``, ``crs_wkt``, ``nodata``, ``band_names``,
    ``wavelengths``, ``fwhm``, ``bad_bands``, ``dtype``, ``metadata``) replace what ``meta`` gives.
    """
    kw: dict = {}
    if meta is not None:
        nd = next((v for v in meta.nodata if v is not None), None)
        kw = dict(geotransform=meta.geotransform, crs_wkt=meta.crs_wkt, nodata=nd, band_names=meta.band_names,
                  wavelengths=meta.wavelengths, fwhm=meta.fwhm, bad_bands=meta.bad_bands)
    kw.update(overrides)
    with RasterWriter(path, array.shape, **kw) as w:
        w.write(array)
    return Path(path)


def subset_meta(meta: RasterMeta, bands: list[int] | np.ndarray) -> RasterMeta:
    """Metadata for a subset of bands (0-based indices)."""
    idx = [int(i) for i in (np.flatnonzero(bands) if np.asarray(bands).dtype == bool else bands)]

    def pick(a):
        return None if a is None else np.asarray(a)[idx]

    return replace(
        meta,
        shape=(len(idx), meta.rows, meta.cols),
        nodata=[meta.nodata[i] for i in idx],
        band_names=[meta.band_names[i] for i in idx],
        wavelengths=pick(meta.wavelengths),
        fwhm=pick(meta.fwhm),
        bad_bands=pick(meta.bad_bands),
        scales=[meta.scales[i] for i in idx],
        offsets=[meta.offsets[i] for i in idx],
    )


def describe_crs(wkt: str) -> str:
    """A short CRS label for messages (``EPSG:32633`` or the CRS name), or ``no CRS``."""
    if not wkt:
        return "no CRS"
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    code = srs.GetAuthorityCode(None)
    name = srs.GetName() or re.sub(r"\s+", " ", wkt[:40])
    return f"EPSG:{code} ({name})" if code else name
