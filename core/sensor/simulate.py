"""Simulate an (LR-HSI, HR-MSI) pair from a reference HR-HSI (Wald's protocol, numpy only)."""

from __future__ import annotations

import numpy as np

from .degrade import degrade_spatial, degrade_spectral

__all__ = ["simulate_pair", "add_noise"]


def simulate_pair(hr_hsi: np.ndarray, scale: int, srf_matrix, psf=None, snr_db=None,
                  seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(lr_hsi, hr_msi)`` from ``hr_hsi`` ``(bands, rows, cols)``.

    ``lr_hsi = degrade_spatial(hr, scale, psf)`` ``(bands, rows//scale, cols//scale)`` and
    ``hr_msi = srf_matrix @ hr`` ``(msi_bands, rows//scale*scale, cols//scale*scale)`` (HR cropped to a
    multiple of ``scale``); ``srf_matrix`` is ``(msi_bands, bands)`` or a ``SpectralResponse``.
    ``snr_db``: ``None`` (noise-free), one SNR for both images, or ``(hsi_snr_db, msi_snr_db)``;
    white Gaussian noise with per-band power ``mean(x_b**2) / 10**(snr/10)``, drawn from ``seed``.
    Both outputs are float32.
    """
    hr = np.asarray(hr_hsi, dtype=np.float32)
    rows, cols = hr.shape[1] // scale * scale, hr.shape[2] // scale * scale
    hr = hr[:, :rows, :cols]
    lr = degrade_spatial(hr, scale, psf)
    msi = degrade_spectral(hr, srf_matrix)
    if snr_db is not None:
        snr_h, snr_m = (snr_db, snr_db) if np.isscalar(snr_db) else snr_db
        rng = np.random.default_rng(seed)
        lr = add_noise(lr, snr_h, rng)
        msi = add_noise(msi, snr_m, rng)
    return lr, msi


def add_noise(cube: np.ndarray, snr_db: float | None, rng: np.random.Generator) -> np.ndarray:
    """Add white Gaussian noise at ``snr_db`` per band (power over finite pixels); float32."""
    if snr_db is None:
        return cube
    power = np.nanmean(np.asarray(cube, dtype=np.float64) ** 2, axis=(1, 2))
    std = np.sqrt(power / 10.0 ** (float(snr_db) / 10.0))
    noise = rng.standard_normal(cube.shape) * std[:, None, None]
    return (cube + noise).astype(np.float32)
