"""Simulate an LR-HSI and an HR-MSI from a reference HR-HSI raster, window by window."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..progress import Progress, as_progress
from ..raster_io import RasterReader, RasterWriter, Window, iter_windows
from ..sensor import add_noise, as_psf, degrade_spatial_window, degrade_spectral, halo_window, list_sensors
from .common import response_for

__all__ = ["SimulationResult", "simulate_files", "msi_centres"]

@dataclass
class SimulationResult:
    lr_path: str
    msi_path: str
    scale: int
    msi_band_names: tuple[str, ...]
    lr_shape: tuple[int, int, int]
    msi_shape: tuple[int, int, int]

def msi_centres(matrix: np.ndarray, wavelengths_nm: np.ndarray) -> np.ndarray:
    """Response-weighted centre wavelength (nm) of each MSI band, ``(msi_bands,)``."""
    return np.asarray(matrix) @ np.nan_to_num(np.asarray(wavelengths_nm, dtype=np.float64))

def simulate_files(
    hr_path: str | os.PathLike,
    lr_out: str | os.PathLike,
    msi_out: str | os.PathLike,
    sensor: str | os.PathLike = "sentinel2",
    scale: int = 4,
    sigma: float | None = None,
    msi_bands: list[str] | None = None,
    snr_db: float | None = None,
    seed: int = 0,
    block: int = 128,
    progress: Progress | None = None,
) -> SimulationResult:
    """Write ``lr_out`` (HSI bands, pixels ``scale`` times larger) and ``msi_out`` (sensor bands, HR grid).

    ``sensor`` is a sensor name (``core.sensor.list_sensors()``) or a response CSV; ``sigma`` the
    Gaussian PSF width in HR pixels (default FWHM = ``scale``); ``snr_db`` optional white noise,
    its power taken per ``block`` of LR pixels. Memory is bounded by one block of ``block * scale``
    HR pixels with its halo, whatever the raster size. Nodata HR pixels make the LR pixels whose
    PSF touches them and the MSI pixels on them nodata; bad bands (``bbl`` = 0) stay nodata.
    """
    prog = as_progress(progress)
    name = os.path.basename(str(hr_path))
    if sensor is None:
        raise ValueError(f"simulating an HR-MSI from HR-HSI layer '{name}' needs the multispectral sensor's response: "
                         f"name a sensor ({', '.join(list_sensors())}) or give a response CSV")
    with RasterReader(hr_path) as reader:
        meta = reader.meta
        good = meta.good_bands
        srf = response_for(sensor, meta, msi_bands, f"HR-HSI layer '{name}'")
        psf = as_psf(sigma, scale)
        rows, cols = meta.rows // scale * scale, meta.cols // scale * scale
        if rows == 0 or cols == 0:
            raise ValueError(f"HR-HSI layer '{name}' ({meta.rows} x {meta.cols} px) is smaller than the scale {scale}")
        gt = meta.north_up_geotransform
        lr_gt = (gt[0], gt[1] * scale, 0.0, gt[3], 0.0, gt[5] * scale)
        lr_shape = (meta.bands, rows // scale, cols // scale)
        msi_shape = (srf.msi_bands, rows, cols)
        windows = list(iter_windows(lr_shape[1], lr_shape[2], block))
        block_seeds = np.random.SeedSequence(seed).spawn(len(windows))
        with (
            RasterWriter(lr_out, lr_shape, lr_gt, meta.crs_wkt, band_names=meta.band_names, wavelengths=meta.wavelengths,
                         fwhm=meta.fwhm, bad_bands=meta.bad_bands, metadata={"hsrdiff_simulated_scale": scale}) as lr_w,
            RasterWriter(msi_out, msi_shape, gt, meta.crs_wkt, band_names=list(srf.band_names),
                         wavelengths=msi_centres(srf.matrix, meta.wavelengths),
                         metadata={"hsrdiff_sensor": srf.sensor}) as msi_w,
        ):
            for i, win in enumerate(windows):
                prog.report(i / len(windows), f"simulating block {i + 1}/{len(windows)}")
                hw = halo_window(win.row_off, win.col_off, win.height, win.width, scale, (meta.rows, meta.cols), psf)

                hr = reader.read(Window(hw.col0, hw.row0, hw.cols, hw.rows))
                valid = np.isfinite(hr[good]).all(axis=0)
                hr = np.where(np.isfinite(hr), hr, 0.0).astype(np.float32)
                lr = degrade_spatial_window(hr, scale, psf, hw.pad)
                lr_valid = degrade_spatial_window(valid[None].astype(np.float32), scale, psf, hw.pad)[0] > 1 - 1e-4
                # The HR block itself, without its halo, for the MSI.
                r0, c0 = win.row_off * scale - hw.row0, win.col_off * scale - hw.col0
                core_block = hr[:, r0:r0 + win.height * scale, c0:c0 + win.width * scale]
                core_valid = valid[r0:r0 + win.height * scale, c0:c0 + win.width * scale]
                msi = degrade_spectral(core_block, srf.matrix)
                if snr_db is not None:
                    rng = np.random.default_rng(block_seeds[i])
                    lr, msi = add_noise(lr, snr_db, rng), add_noise(msi, snr_db, rng)
                lr[:, ~lr_valid] = np.nan
                lr[~good] = np.nan
                msi[:, ~core_valid] = np.nan
                lr_w.write(lr, win)
                msi_w.write(msi, Window(win.col_off * scale, win.row_off * scale, win.width * scale, win.height * scale))
    prog.report(1.0, "simulation written")
    return SimulationResult(str(lr_out), str(msi_out), scale, srf.band_names, lr_shape, msi_shape)
