"""The result on a noisy pair: the model's result averaged with CNMF's, weighted by the LR-HSI's SNR (numpy).

Noise on the pair costs the model more than it costs CNMF: CNMF writes every pixel as a non-negative mix of a
few endmembers taken from the LR-HSI, so noise outside their span never reaches its result, while the network
carries the HR-MSI's noise into the spectra it details. The two errors are far from the same, so their weighted
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

from .sensor.noise import DENOISE_BELOW_DB

__all__ = ["PARTNER", "blend", "model_weight"]

PARTNER = "cnmf"
"""The classical method (a name of :data:`core.baselines.BASELINES`) the model's result is averaged with."""

WEIGHT_LINE = ((26.0, 0.3), (DENOISE_BELOW_DB, 0.9))
"""``((snr_db, weight), (snr_db, weight))``: the model's weight is linear in the LR-HSI's estimated SNR between
these two points (0.027 per dB), held at the first's weight below it (``bench/experiments/noise_blend.py``'s fit)."""


def model_weight(snr_db: float) -> float:
    """The model's share (0.3-0.9, or 1) of the result for an LR-HSI of ``snr_db`` estimated SNR
    (:func:`core.sensor.noise.snr_db`); 1 (the model alone) at :data:`DENOISE_BELOW_DB` and above, and for NaN."""
    if not snr_db < DENOISE_BELOW_DB:
        return 1.0
    (x0, w0), (x1, w1) = WEIGHT_LINE
    return float(np.interp(snr_db, [x0, x1], [w0, w1]))


def blend(model: np.ndarray, partner: np.ndarray, weight: float) -> np.ndarray:
    """``weight * model + (1 - weight) * partner``, float32, same shape; the model's value where ``partner`` is
    NaN (outside the partner's valid pixels) and NaN where ``model`` is."""
    model = np.asarray(model, np.float32)
    partner = np.asarray(partner, np.float32)
    if model.shape != partner.shape:
        raise ValueError(f"blend: model {model.shape} and partner {partner.shape} differ in shape")
    out = weight * model + (1.0 - weight) * partner
    return np.where(np.isfinite(partner), out, model).astype(np.float32, copy=False)
