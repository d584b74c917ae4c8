"""The result on a noisy pair: the model's result averaged with CNMF's, weighted by the LR-HSI's SNR (numpy).

A noisy HR-MSI costs the model more than it costs CNMF: CNMF writes every pixel as a non-negative mix of a
few endmembers taken from the LR-HSI, so noise outside their span never reaches its result, while the network
carries the HR-MSI's noise into the spectra it details. With the HR-MSI clean the model alone is better (on the
training regions, LR-HSI at 30-35 dB and a clean HR-MSI: the average lost 0.5-1.6 dB), so the average is made only
when the HR-MSI reads noisy too (:data:`MSI_NOISY_BELOW_DB`). The two errors are far from the same, so their weighted
mean beats both. On pairs the benchmark never scores (``bench/experiments/noise_blend.py``, results in
``bench/results/noise_blend.md``: the training regions of the bundled models, white noise of 30-50 dB on both
images) the best weight of the model rose with the SNR, from 0.3-0.5 at 30 dB to 0.85-1.0 at 50 dB (SAM asks
for less of the model than PSNR); :func:`model_weight` is the line fitted to that table, which loses least against
each pair's best weight (PSNR and SAM together). Above :data:`core.sensor.noise.DENOISE_BELOW_DB` of
estimated SNR, where the LR-HSI is not denoised either, the result is the model's alone: on clean pairs the
average gave up 1-4 dB.
"""

from __future__ import annotations

import numpy as np

from .sensor.noise import DENOISE_BELOW_DB, band_noise_std, snr_db

__all__ = ["MIN_MSI_BANDS", "MSI_NOISY_BELOW_DB", "PARTNER", "blend", "model_weight", "msi_snr_db"]

PARTNER = "cnmf"
"""The classical method (a name of :data:`core.baselines.BASELINES`) the model's result is averaged with."""

WEIGHT_LINE = ((26.0, 0.3), (DENOISE_BELOW_DB, 0.9))
"""``((snr_db, weight), (snr_db, weight))``: the model's weight is linear in the LR-HSI's estimated SNR between
these two points (0.027 per dB), held at the first's weight below it (``bench/experiments/noise_blend.py``'s fit)."""


MSI_NOISY_BELOW_DB = 36.0
"""The HR-MSI counts as noisy below this SNR as :func:`core.sensor.noise.band_noise_std` reads it from its spectra
(each band regressed on the others: an upper bound on the noise, since what the other bands do not explain counts
as noise). On pairs the benchmark never scores (``bench/experiments/noise_blend.py``: 10-band Sentinel-2 responses
of four scenes) clean MSIs read 39.6-48.2 dB and MSIs with 35 dB of noise 29.6-34.1 dB."""
MIN_MSI_BANDS = 8
"""An HR-MSI with fewer bands cannot tell its noise from its signal by regression (a clean 4-band Sentinel-2 subset,
its NIR band unexplained by the visible ones, reads below :data:`MSI_NOISY_BELOW_DB`; an RGB camera 18 dB): no
average."""


def model_weight(lr_snr_db: float, msi_snr: float | None = None) -> float:
    """The model's share (0.3-0.9, or 1) of the result for an LR-HSI of ``lr_snr_db`` estimated SNR
    (:func:`core.sensor.noise.snr_db`) and an HR-MSI of ``msi_snr`` (:func:`msi_snr_db`; None: not estimated); 1 (the
    model alone) at :data:`DENOISE_BELOW_DB` and above, for NaN, and unless the HR-MSI reads below
    :data:`MSI_NOISY_BELOW_DB`."""
    if not lr_snr_db < DENOISE_BELOW_DB or msi_snr is None or not msi_snr < MSI_NOISY_BELOW_DB:
        return 1.0
    (x0, w0), (x1, w1) = WEIGHT_LINE
    return float(np.interp(lr_snr_db, [x0, x1], [w0, w1]))


def msi_snr_db(msi: np.ndarray) -> float | None:
    """The HR-MSI's SNR in dB as :data:`MSI_NOISY_BELOW_DB` reads it, from ``msi`` ``(M, rows, cols)`` (its bands
    with data; pixels with NaN left out), or None with fewer than :data:`MIN_MSI_BANDS` such bands or too few pixels."""
    msi = np.asarray(msi, np.float64)
    live = msi[np.isfinite(msi).any(axis=(1, 2))]
    if live.shape[0] < MIN_MSI_BANDS:
        return None
    try:
        return snr_db(live, band_noise_std(live))
    except ValueError:
        return None


def blend(model: np.ndarray, partner: np.ndarray, weight: float) -> np.ndarray:
    """``weight * model + (1 - weight) * partner``, float32, same shape; the model's value where ``partner`` is
    NaN (outside the partner's valid pixels) and NaN where ``model`` is."""
    model = np.asarray(model, np.float32)
    partner = np.asarray(partner, np.float32)
    if model.shape != partner.shape:
        raise ValueError(f"blend: model {model.shape} and partner {partner.shape} differ in shape")
    out = weight * model + (1.0 - weight) * partner
    return np.where(np.isfinite(partner), out, model).astype(np.float32, copy=False)
