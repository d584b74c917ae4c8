"""Estimate the spectral response and PSF width of a real LR-HSI / HR-MSI pair (no reference needed)."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass

import numpy as np

from ..pairing import check_pair
from ..progress import Progress, as_progress
from ..raster_io import read_raster
from ..sensor import estimate_srf
from ..sensor.estimate import describe_psf, estimate_registration
from .common import response_for

__all__ = ["SensorEstimate", "estimate_files", "write_srf_csv"]


@dataclass
class SensorEstimate:
    """``matrix`` ``(msi_bands, hsi_bands)`` with unit row sums, ``gain`` the row sums before that
    (radiometric gain between the images), per-band relative ``srf_residual``, the PSF ``sigma``
    in HR pixels (the standard deviation of the PSF, of ``psf_shape`` ``gaussian`` or ``box``, a box of side
    ``box_side``) and its relative ``psf_residual``; ``scale`` from the pair's geometry; ``dy``, ``dx``
    the registration offset in HR pixels (:func:`core.sensor.estimate.estimate_registration`) and
    ``psf_residual_centred`` the misfit with no offset and the nominal width."""

    matrix: np.ndarray
    gain: np.ndarray
    srf_residual: np.ndarray
    sigma: float
    psf_residual: float
    scale: int
    msi_band_names: list[str]
    wavelengths: np.ndarray | None
    dy: float = 0.0
    dx: float = 0.0
    psf_residual_centred: float = float("nan")
    psf_shape: str = "gaussian"
    box_side: float | None = None

    def describe(self) -> str:
        """The PSF and offset in words (:func:`core.sensor.estimate.describe_psf`)."""
        return describe_psf(self.dy, self.dx, self.psf_shape, self.sigma, self.box_side)


def estimate_files(
    lr_path: str | os.PathLike,
    msi_path: str | os.PathLike,
    sensor_hint: str | None = None,
    srf_csv_out: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> SensorEstimate:
    """Estimate the registration offset and PSF width, then the response (NNLS, HySure-style) through
    that PSF, on the pair's common area.

    ``sensor_hint``: a sensor name or CSV whose bands match the MSI's; the fit is then confined to
    the HSI bands each MSI band's nominal response covers, which conditions it much better.
    """
    prog = as_progress(progress)
    geo = check_pair(lr_path, msi_path)
    prog.report(0.05, f"pair checked: scale {geo.scale}")
    lr, lm = read_raster(lr_path, geo.lr_window)
    msi, mm = read_raster(msi_path, geo.msi_window)
    good = np.isfinite(lr).any(axis=(1, 2)) & lm.good_bands
    lr_good = lr[good]
    support = None
    if sensor_hint:
        nominal = response_for(sensor_hint, lm, list(mm.band_names), f"LR-HSI layer '{os.path.basename(str(lr_path))}'", good)
        if nominal.msi_bands != msi.shape[0]:
            raise ValueError(f"sensor hint {sensor_hint} has {nominal.msi_bands} bands but HR-MSI layer "
                             f"'{os.path.basename(str(msi_path))}' has {msi.shape[0]}")
        support = (nominal.matrix > 1e-3 * nominal.matrix.max(axis=1, keepdims=True))[:, good]
    valid = np.isfinite(lr_good).all(axis=0)
    prog.report(0.1, "estimating the registration offset and the PSF width")
    reg = estimate_registration(lr_good, msi, geo.scale, valid=valid)
    prog.report(0.6, "estimating the spectral response (NNLS)")
    raw, srf_res = estimate_srf(lr_good, msi, geo.scale, psf=reg.psf(geo.scale), valid=valid, support=support)
    gain = raw.sum(axis=1)
    if np.any(gain <= 0):
        bad = [mm.band_names[i] for i in np.flatnonzero(gain <= 0)]
        raise ValueError(f"HR-MSI band(s) {', '.join(bad)} cannot be explained by the LR-HSI bands (zero response)")
    matrix = np.zeros((raw.shape[0], lr.shape[0]))
    matrix[:, good] = raw / gain[:, None]
    est = SensorEstimate(matrix, gain, srf_res, reg.sigma, reg.residual, geo.scale, list(mm.band_names), lm.wavelengths,
                         reg.dy, reg.dx, reg.residual_centred, reg.shape, reg.side)
    if srf_csv_out:
        write_srf_csv(est, srf_csv_out)
    prog.report(1.0, reg.describe())
    return est


def write_srf_csv(est: SensorEstimate, path: str | os.PathLike) -> None:
    """The response as ``wavelength_nm, band1, ...`` rows, one per HSI band (loadable as a user response CSV)."""
    wl = est.wavelengths if est.wavelengths is not None else np.arange(1, est.matrix.shape[1] + 1, dtype=float)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["wavelength_nm", *est.msi_band_names])
        for j in np.argsort(wl):
            w.writerow([f"{wl[j]:.3f}", *(f"{v:.6g}" for v in est.matrix[:, j])])
