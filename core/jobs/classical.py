"""Classical fusion over georeferenced rasters: bicubic, GSA, MTF-GLP-HS, CNMF (no model needed)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..baselines import BASELINES
from ..baselines.bicubic import no_valid_pixel_error
from ..pairing import check_pair
from ..progress import Progress, as_progress
from ..raster_io import RasterReader, RasterWriter, Window, bands_with_data, bounded_gdal_cache, output_options, read_meta, read_raster
from ..sensor import gaussian_psf
from .common import DEGRADATIONS, estimate_degradation, hr_valid_mask, response_for

__all__ = ["ClassicalResult", "fuse_classical_files", "METHODS", "STREAMED", "memory_needed", "available_memory"]

METHODS = tuple(BASELINES)
STREAMED = ("bicubic", "mtf_glp_hs")
"""Methods written window by window (memory follows the window); the others need the whole area in memory."""
CUBES = {"gsa": 5.0, "cnmf": 4.5}
"""Float32 output-sized cubes a global method holds at its peak (inputs, its work arrays, the output)."""
WINDOW = 512  # HR pixels per written window of a streamed method


@dataclass
class ClassicalResult:
    path: str
    method: str
    scale: int
    shape: tuple[int, int, int]
    seconds: float
    notes: list[str] = field(default_factory=list)


def fuse_classical_files(
    method: str,
    lr_path: str | os.PathLike,
    msi_path: str | os.PathLike,
    out_path: str | os.PathLike,
    sensor: str | os.PathLike | None = None,
    sigma: float | None = None,
    lr_name: str | None = None,
    msi_name: str | None = None,
    progress: Progress | None = None,
    degradation: str = "estimate",
    output_type: str = "float32",
) -> ClassicalResult:
    """Fuse the pair's common area with a classical ``method`` and write a GeoTIFF on the MSI grid.

    ``sensor`` gives the spectral response (CNMF uses it; without it CNMF estimates one);
    ``sigma`` the Gaussian PSF in HR pixels (default FWHM = scale). The output keeps the HSI's
    wavelengths, band names and bad-band list and the MSI's geotransform and CRS; it is nodata
    where either input is. Bicubic and MTF-GLP-HS are computed window by window (:data:`STREAMED`;
    memory follows the window, the GLP fit uses a bounded sample); GSA and CNMF need the whole common
    area in memory (:func:`memory_needed`) and are refused up front, with the size, when it is not available.
    ``degradation="estimate"`` (without ``sigma``) matches the PSF to the pair's estimated offset and width
    (:func:`core.jobs.common.estimate_degradation`); ``"model"`` uses the nominal Gaussian (or ``sigma``).
    The result's ``notes`` say what was used. ``output_type``: ``float32`` or ``int16`` (scaled integers,
    :func:`core.raster_io.output_options`).
    """
    if method not in BASELINES:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(BASELINES)}")
    prog = as_progress(progress)
    t0 = time.perf_counter()
    geo = check_pair(lr_path, msi_path, lr_name, msi_name)
    prog.report(0.02, f"pair checked: scale {geo.scale}, common area {geo.msi_window.width} x {geo.msi_window.height} px")
    if degradation not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {degradation!r}; choose one of {', '.join(DEGRADATIONS)}")
    with RasterReader(lr_path) as r:
        options = output_options(output_type, r)
    psf, notes = gaussian_psf(geo.scale, sigma) if sigma else None, list(geo.notes)
    if degradation == "estimate" and not sigma and method != "bicubic":
        psf, est_notes = _estimated_psf(lr_path, msi_path, geo, lr_name, msi_name)
        notes += est_notes
    if method in STREAMED:
        with bounded_gdal_cache():
            shape = _fuse_streamed(method, lr_path, msi_path, out_path, geo, psf, lr_name, msi_name, prog, options)
        prog.report(1.0, "done")
        return ClassicalResult(str(out_path), method, geo.scale, shape, time.perf_counter() - t0, notes)
    lm = read_meta(lr_path)
    need, avail = memory_needed(method, int(lm.good_bands.sum()), geo.msi_window.height, geo.msi_window.width), available_memory()
    if avail is not None and need > avail:
        raise ValueError(f"{method.upper()} holds the whole common area in memory: about {need / 1e9:.1f} GB for "
                         f"{int(lm.good_bands.sum())} bands x {geo.msi_window.width} x {geo.msi_window.height} px, but "
                         f"{avail / 1e9:.1f} GB are available; use MTF-GLP-HS or bicubic (computed window by window) "
                         "or clip the layers to a smaller area")
    lr, lm = read_raster(lr_path, geo.lr_window)
    msi, mm = read_raster(msi_path, geo.msi_window)
    good = lm.good_bands & np.isfinite(lr).any(axis=(1, 2))
    valid = hr_valid_mask(lr[good], msi, geo.scale)
    if not good.any() or not valid.any():
        raise _no_common_pixel(lr[good], msi, geo.scale, lr_name or os.path.basename(str(lr_path)),
                               msi_name or os.path.basename(str(msi_path)))
    srf = None
    if sensor is not None:
        srf = response_for(sensor, lm, list(mm.band_names), f"LR-HSI layer '{lr_name or os.path.basename(str(lr_path))}'",
                           good).matrix[:, good]
    prog.report(0.15, f"fusing with {method}")
    fused = BASELINES[method](lr[good], msi, geo.scale, srf=srf, psf=psf, valid=valid)
    prog.report(0.9, "writing")
    out = np.full((lm.bands, *valid.shape), np.nan, np.float32)
    out[good] = fused
    out[:, ~valid] = np.nan
    with _writer(out_path, out.shape, geo, lm, method, options) as w:
        w.write(out)
    prog.report(1.0, "done")
    return ClassicalResult(str(out_path), method, geo.scale, out.shape, time.perf_counter() - t0, notes)


def _estimated_psf(lr_path, msi_path, geo, lr_name, msi_name) -> tuple[np.ndarray | None, list[str]]:
    """The pair's estimated PSF kernel (None = nominal) and notes describing it."""
    lw, mw = geo.lr_window, geo.msi_window
    with RasterReader(lr_path) as lr, RasterReader(msi_path) as msi:
        good = [int(b) for b in np.flatnonzero(lr.meta.good_bands)]
        reg, notes = estimate_degradation(
            lambda r0, c0, h, w: lr.read(Window(lw.col_off + c0, lw.row_off + r0, w, h), bands=good),
            lambda r0, c0, h, w: msi.read(Window(mw.col_off + c0, mw.row_off + r0, w, h)), (lw.height, lw.width), geo.scale,
            lr_name or os.path.basename(str(lr_path)), msi_name or os.path.basename(str(msi_path)))
    if reg is None:
        return None, notes or ["estimated degradation: the nominal one (centred Gaussian, FWHM = scale)"]
    return reg.psf(geo.scale), [f"estimated degradation: {reg.describe()} (relative residual {reg.residual:.4f}, "
                                f"{reg.residual_centred:.4f} with the nominal one)"] + notes


def _no_common_pixel(lr: np.ndarray, msi: np.ndarray, scale: int, lr_name: str, msi_name: str) -> ValueError:
    """The error for a common area without a valid pixel: which layer is all nodata there, or that they do not overlap.

    ``lr`` ``(bands, r, c)`` (its good bands with data) and ``msi`` ``(msi_bands, r*scale, c*scale)``
    over the common area, NaN = nodata.
    """
    if lr.shape[0] == 0:
        return ValueError(f"LR-HSI layer '{lr_name}' is all nodata in the area it shares with HR-MSI layer '{msi_name}'")
    return ValueError(f"{no_valid_pixel_error(lr, msi, scale, None, lr_name, msi_name)} (in the area the two layers share)")


def memory_needed(method: str, bands: int, rows: int, cols: int) -> int:
    """Bytes a global ``method`` needs for ``bands`` x ``rows`` x ``cols`` output pixels (0 for a streamed one)."""
    return 0 if method in STREAMED else int(CUBES.get(method, 5.0) * bands * rows * cols * 4)


def available_memory() -> int | None:
    """Bytes of memory available to this process now (``MemAvailable``), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None


def _writer(out_path, shape, geo, lm, method: str, options: dict) -> RasterWriter:
    """The output's writer; ``options``: :func:`core.raster_io.output_options` (data type, value scale, nodata)."""
    kw = dict(nodata=next((v for v in lm.nodata if v is not None), None)) | options
    return RasterWriter(out_path, shape, geo.geotransform, geo.crs_wkt, band_names=lm.band_names, wavelengths=lm.wavelengths,
                        fwhm=lm.fwhm, bad_bands=lm.bad_bands, metadata={"hsrdiff_method": method, "hsrdiff_scale": geo.scale},
                        **kw)


def _fuse_streamed(method, lr_path, msi_path, out_path, geo, psf, lr_name, msi_name, prog, options) -> tuple[int, int, int]:
    """Bicubic or MTF-GLP-HS window by window: the global fit on a bounded sample, then windows of ``WINDOW`` px."""
    from ..baselines.glp import GLPStream

    lw, mw, s = geo.lr_window, geo.msi_window, geo.scale
    ln, mn = lr_name or os.path.basename(str(lr_path)), msi_name or os.path.basename(str(msi_path))
    with RasterReader(lr_path) as lr, RasterReader(msi_path) as msi:
        good = [int(b) for b in np.flatnonzero(lr.meta.good_bands)]

        def read_lr(r0, c0, rows, cols):
            return lr.read(Window(lw.col_off + c0, lw.row_off + r0, cols, rows), bands=good)

        def read_msi(r0, c0, rows, cols):
            return msi.read(Window(mw.col_off + c0, mw.row_off + r0, cols, rows))

        lr_ok = bands_with_data(read_lr, lw.height, lw.width, prog.sub(0.02, 0.04).report)
        msi_ok = bands_with_data(read_msi, mw.height, mw.width, prog.sub(0.04, 0.06).report)
        for ok, name, kind, other in ((lr_ok, ln, "LR-HSI", f"HR-MSI layer '{mn}'"), (msi_ok, mn, "HR-MSI", f"LR-HSI layer '{ln}'")):
            if not ok.any():
                raise ValueError(f"{kind} layer '{name}' is all nodata in the area it shares with {other}")
        disjoint = (f"LR-HSI layer '{ln}' and HR-MSI layer '{mn}' do not overlap in valid pixels: no LR-HSI pixel with "
                    f"data has its whole {s} x {s} block of HR-MSI pixels valid")
        stream = GLPStream(read_lr, read_msi, (lw.height, lw.width), s, psf, ~lr_ok, ~msi_ok)
        if method == "mtf_glp_hs":
            try:
                stream.fit(progress=prog.sub(0.06, 0.15).report)
            except ValueError as exc:  # the fit found no valid LR pixel in its blocks
                raise ValueError(disjoint) from exc
        shape = (lr.meta.bands, mw.height, mw.width)
        windows = [(r, c) for r in range(0, mw.height, WINDOW) for c in range(0, mw.width, WINDOW)]
        tiles = prog.sub(0.15, 1.0)
        any_valid = False
        with _writer(out_path, shape, geo, lr.meta, method, options) as w:
            for k, (r, c) in enumerate(windows):
                h, wd = min(WINDOW, mw.height - r), min(WINDOW, mw.width - c)
                fused, valid = stream.window(r, c, h, wd, True) if method == "mtf_glp_hs" else stream.upsampled(r, c, h, wd)
                any_valid = any_valid or bool(valid.any())
                fused[:, ~valid] = np.nan
                fused[~lr_ok] = np.nan
                out = np.full((shape[0], h, wd), np.nan, np.float32)
                out[good] = fused
                w.write(out, Window(c, r, wd, h))
                tiles.report((k + 1) / len(windows), f"{method}: window {k + 1}/{len(windows)}")
            if not any_valid:  # raised inside the writer: no all-nodata file is left
                raise ValueError(disjoint)
    return shape
