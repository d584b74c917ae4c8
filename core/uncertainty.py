"""The uncertainty raster: the spread of the samples, calibrated into a standard deviation of the error (numpy).

``u = k * sqrt(std**2 + (c * a)**2)``, per pixel and band, physical units: ``std`` the standard deviation of the
samples, ``a`` the local activity of the result (the magnitude of its spatial gradient, per band, HR pixel
differences), ``k`` (``uncertainty_scale``) and ``c`` (``uncertainty_activity``) fitted per model on training
pixels (``bench/diffusion.py --fit-calibration``) and stored in its metadata. ``c`` is 0 (the spread alone)
unless the activity ranks the training errors better than the spread does: a network that barely uses its noisy
input spreads its samples by a few parts in 10^4 of the error, and where that spread says little, the error is
largest on edges and texture.
"""

from __future__ import annotations

import numpy as np

__all__ = ["local_activity", "calibrated_uncertainty"]


def local_activity(mean: np.ndarray) -> np.ndarray:
    """``|grad mean|`` per band, float32 ``(C, H, W)`` from ``(C, H, W)`` (central differences, one-sided at the
    edges); 0 where a neighbour is NaN (nodata)."""
    m = np.asarray(mean, np.float32)
    if min(m.shape[1:]) < 2:
        return np.zeros_like(m)
    gy, gx = np.gradient(m, axis=(1, 2))
    return np.nan_to_num(np.hypot(gy, gx), nan=0.0)


def calibrated_uncertainty(std: np.ndarray, mean: np.ndarray, scale: float, activity: float = 0.0) -> np.ndarray:
    """``scale * sqrt(std**2 + (activity * local_activity(mean))**2)``; ``std`` and ``mean`` ``(C, H, W)`` in the
    same physical units; ``activity = 0`` gives ``scale * std`` exactly."""
    std = np.asarray(std, np.float32)
    if activity == 0:
        return std * np.float32(scale)
    a = np.float32(activity) * local_activity(mean)
    return np.float32(scale) * np.sqrt(std * std + a * a)
