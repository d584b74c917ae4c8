"""Classical fusion over georeferenced rasters: bicubic, GSA, MTF-GLP-HS, CNMF (no model needed)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from ..baselines import BASELINES
from ..pairing import check_pair
from ..progress import Progress, as_progress
from ..raster_io import RasterWriter, read_raster
from ..sensor import gaussian_psf
from .common import hr_valid_mask, response_for

__all__ = ["ClassicalResult", "fuse_classical_files", "METHODS"]

METHODS = tuple(BASELINES)


@dataclass
class ClassicalResult:
    path: str
    method: str
    scale: int
    shape: tuple[int, int, int]
    seconds: float


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
) -> ClassicalResult:
    """Fuse the pair's common area with a classical ``method`` and write a GeoTIFF on the MSI grid.

    ``sensor`` gives the spectral response (CNMF uses it; without it CNMF estimates one);
    ``sigma`` the Gaussian PSF in HR pixels (default FWHM = scale). The output keeps the HSI's
    wavelengths, band names and bad-band list and the MSI's geotransform and CRS; it is nodata
    where either input is. These methods are global: the common area must fit in memory (about
    four float32 output-sized cubes).
    """
    if method not in BASELINES:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(BASELINES)}")
    prog = as_progress(progress)
    t0 = time.perf_counter()
    geo = check_pair(lr_path, msi_path, lr_name, msi_name)
    prog.report(0.05, f"pair checked: scale {geo.scale}, common area {geo.msi_window.width} x {geo.msi_window.height} px")
    lr, lm = read_raster(lr_path, geo.lr_window)
    msi, mm = read_raster(msi_path, geo.msi_window)
    good = lm.good_bands & np.isfinite(lr).any(axis=(1, 2))
    valid = hr_valid_mask(lr[good], msi, geo.scale)
    if not valid.any():
        raise ValueError("the LR-HSI and HR-MSI have no valid pixel in common")
    srf = None
    if sensor is not None:
        srf = response_for(sensor, lm, list(mm.band_names), f"LR-HSI layer '{lr_name or os.path.basename(str(lr_path))}'",
                           good).matrix[:, good]
    psf = gaussian_psf(geo.scale, sigma) if sigma else None
    prog.report(0.15, f"fusing with {method}")
    fused = BASELINES[method](lr[good], msi, geo.scale, srf=srf, psf=psf, valid=valid)
    prog.report(0.9, "writing")
    out = np.full((lm.bands, *valid.shape), np.nan, np.float32)
    out[good] = fused
    out[:, ~valid] = np.nan
    nodata = next((v for v in lm.nodata if v is not None), None)
    with RasterWriter(out_path, out.shape, geo.geotransform, geo.crs_wkt, nodata=nodata, band_names=lm.band_names,
                      wavelengths=lm.wavelengths, fwhm=lm.fwhm, bad_bands=lm.bad_bands,
                      metadata={"hsrdiff_method": method, "hsrdiff_scale": geo.scale}) as w:
        w.write(out)
    prog.report(1.0, "done")
    return ClassicalResult(str(out_path), method, geo.scale, out.shape, time.perf_counter() - t0)
