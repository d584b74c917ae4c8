"""Helpers shared by the file-level jobs."""

from __future__ import annotations

import os
from dataclasses import replace

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


DEGRADATIONS = ("estimate", "model")
"""How a run learns the pair's spatial degradation: estimated from the pair, or the model's / nominal one."""


SNAP_SHIFT_PX = 0.02
"""Offsets below this (HR pixels, per axis) are taken as none: the estimator's error on noise-free pairs made from
scenes the benchmark never scores is at most 0.024 px, 0.005 px for nine in ten (``bench/results/registration_direction.md``),
and 0.03 px of error costs MTF-GLP-HS 0.1-0.7 dB."""
SNAP_SIGMA = 0.01
"""PSF widths within this relative distance of the nominal one are taken as the nominal one: the estimator's width
error on those pairs is at most 0.5 % noise-free and 0.84 % at 35 dB, and 1 % of error costs MTF-GLP-HS 0.05-0.2 dB."""


def estimate_degradation(read_lr, read_msi, lr_shape: tuple[int, int], scale: int, lr_name: str, msi_name: str,
                         nominal_sigma: float | None = None, max_lr: int = 128):
    """The registration offset and PSF width of a pair from a central crop of at most ``max_lr`` LR pixels a side.

    ``read_lr(row0, col0, rows, cols)`` / ``read_msi(...)`` read the LR-HSI and the HR-MSI (``scale`` times
    finer) over the common area, NaN = nodata. Returns ``(registration or None, notes)``: None with a
    note saying why when the pair is too small, flat or mostly nodata, or when the estimate lies far
    outside what a well-matched pair shows (offset over 2 HR pixels, width off by 3x: a registration
    or scale problem, naming both layers), so the caller falls back to the nominal degradation
    (``nominal_sigma``, default FWHM = ``scale``). Offsets below :data:`SNAP_SHIFT_PX` and widths within
    :data:`SNAP_SIGMA` of the nominal one are snapped to it: a filter that differs from the pair's by
    less than the estimator can tell costs more than it gains at high PSNR.
    """
    from ..sensor.estimate import BOX_SIGMA, estimate_registration
    from ..sensor.psf import sigma_for_scale

    bounds = (0.2 * scale, 1.2 * scale)
    rows, cols = (min(max_lr, n) for n in lr_shape)
    r0, c0 = (lr_shape[0] - rows) // 2, (lr_shape[1] - cols) // 2
    lr = read_lr(r0, c0, rows, cols)
    msi = read_msi(r0 * scale, c0 * scale, rows * scale, cols * scale)
    lr = lr[np.isfinite(lr).any(axis=(1, 2))]
    fallback = "the nominal degradation (centred Gaussian, FWHM = scale) is used"
    try:
        reg = estimate_registration(lr, msi, scale, max_shift=2.5, sigma_bounds=bounds)
    except (ValueError, np.linalg.LinAlgError) as exc:
        return None, [f"the degradation of '{lr_name}' / '{msi_name}' could not be estimated ({exc}); {fallback}"]
    nominal = sigma_for_scale(scale) if nominal_sigma is None else float(nominal_sigma)
    if max(abs(reg.dy), abs(reg.dx)) > 2.0 or not nominal / 3 <= reg.sigma <= 3 * nominal:
        return None, [f"the estimated degradation of '{lr_name}' / '{msi_name}' ({reg.describe()}) is far from a matched "
                      f"pair: likely a registration or scale problem between the two layers; {fallback}"]
    if reg.residual >= reg.residual_centred:
        return None, [f"estimating the degradation of '{lr_name}' / '{msi_name}' explained nothing more than the nominal "
                      f"one (relative residual {reg.residual:.4f}); {fallback}"]
    edge = []
    if not bounds[0] * 1.005 < reg.sigma < bounds[1] * 0.995:
        edge = [f"the estimated PSF of '{lr_name}' / '{msi_name}' ({reg.describe()}) sits at the edge of the widths searched "
                f"(sigma {bounds[0]:.2f}-{bounds[1]:.2f} HR px): no PSF of that family fits the pair well (relative residual "
                f"{reg.residual:.3f}); the estimate is used, but the two layers' registration, scale or sharpness may differ "
                "more than a PSF can say"]
    dy, dx = (0.0 if abs(v) < SNAP_SHIFT_PX else v for v in (reg.dy, reg.dx))
    if reg.shape == "box":  # snapped to the LR pixel's footprint, the block mean
        side = float(scale) if abs(reg.side / scale - 1) < SNAP_SIGMA else reg.side
        return replace(reg, dy=dy, dx=dx, side=side, sigma=side * BOX_SIGMA), edge
    sigma = nominal if abs(reg.sigma / nominal - 1) < SNAP_SIGMA else reg.sigma
    if dy == 0 and dx == 0 and sigma == nominal:
        return None, []
    return replace(reg, dy=dy, dx=dx, sigma=sigma), edge
