"""Helpers shared by the file-level jobs."""

from __future__ import annotations

import os

import numpy as np

from ..raster_io import RasterMeta
from ..sensor import SpectralResponse, default_msi_bands, list_sensors, load_srf_csv, spectral_response

__all__ = ["response_for"]


def response_for(
    sensor: str | os.PathLike,
    hsi: RasterMeta,
    msi_band_names: list[str] | None = None,
    hsi_name: str = "HR-HSI",
    bands_mask: np.ndarray | None = None,
) -> SpectralResponse:
    """The ``sensor`` response resampled onto the HSI's good bands.

    MSI bands: ``msi_band_names`` when they are all bands of the sensor (e.g. read from an MSI
    file), else the sensor's default land bands for a named sensor, else every band of a CSV.
    ``bands_mask`` restricts the HSI bands further (``(hsi_bands,)`` bool).
    """
    if hsi.wavelengths is None:
        raise ValueError(f"{hsi_name} has no wavelength metadata, so the {sensor} response cannot be resampled onto "
                         "its bands; add wavelengths (nm) to the band metadata")
    _, names, _ = load_srf_csv(sensor)
    bands = None
    if msi_band_names and all(n in names for n in msi_band_names):
        bands = list(msi_band_names)
    elif str(sensor) in list_sensors():
        bands = list(default_msi_bands(str(sensor)))
    valid = hsi.good_bands if bands_mask is None else hsi.good_bands & bands_mask
    return spectral_response(sensor, hsi.wavelengths, hsi.fwhm, bands=bands, valid_bands=valid)


def hr_valid_mask(lr: np.ndarray, msi: np.ndarray, scale: int) -> np.ndarray:
    """``(rows, cols)`` HR-grid mask: the MSI pixel is finite and so is its LR pixel (all given bands)."""
    lr_ok = np.isfinite(lr).all(axis=0)
    lr_ok = np.repeat(np.repeat(lr_ok, scale, axis=0), scale, axis=1)
    return lr_ok & np.isfinite(msi).all(axis=0)
