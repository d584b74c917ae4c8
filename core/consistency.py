"""Consistency with the LR-HSI: correct a fused image so that it gives the LR-HSI back through the PSF (numpy only).

A fused image ``X0`` ``(C, H, W)`` seldom satisfies ``D X0 = Y``, with ``D`` the pair's spatial degradation
(:func:`core.sensor.degrade_spatial`: PSF and decimation, the estimated one) and ``Y`` the LR-HSI. Per band, with
``X0``'s error taken as white of variance ``tau^2`` per HR pixel and the LR-HSI's noise as white of variance
``sigma^2``, the most probable image given ``Y`` is

    X = X0 + D^T (D D^T + (sigma^2 / tau^2) I)^-1 (Y - D X0)

(the range-space correction of the null-space decompositions used by diffusion samplers, made noise-aware). The
LR system is solved by conjugate gradients (:data:`ITERATIONS`). ``sigma`` comes from the LR-HSI
(:func:`core.sensor.noise.band_noise_std`); ``tau^2`` from the residual itself, ``E|Y - D X0|^2 = tau^2 sum(psf^2) +
sigma^2`` per LR pixel. On a noise-free pair the correction is the projection onto the images consistent with the
LR-HSI; where the residual is no larger than the noise, it vanishes. Every band is corrected on its own, so the
spectra change only by what the LR-HSI says.
"""

from __future__ import annotations

import numpy as np

from .sensor import as_psf, degrade_spatial, degrade_spatial_adjoint

__all__ = ["ITERATIONS", "back_project"]

ITERATIONS = 10
"""Conjugate-gradient iterations of the LR system (the result moves by less than 1e-3 of the correction beyond)."""


def back_project(x0: np.ndarray, lr: np.ndarray, scale: int, psf=None, noise_std=None,
                 iterations: int = ITERATIONS) -> np.ndarray:
    """``x0`` ``(C, rows * scale, cols * scale)`` corrected towards ``lr`` ``(C, rows, cols)`` (module docstring).

    ``psf``: the kernel from the HR onto the LR grid (a kernel, a Gaussian sigma, or None: FWHM = scale);
    ``noise_std`` ``(C,)``: the LR-HSI's noise per band in its units (None: no noise, the exact projection).
    NaN in ``x0`` stays NaN; LR pixels that are NaN, or whose footprint touches a NaN of ``x0``, constrain nothing.
    Returns float32 of ``x0``'s shape.
    """
    x0 = np.asarray(x0, np.float32)
    lr = np.asarray(lr, np.float32)
    s = int(scale)
    if x0.ndim != 3 or lr.ndim != 3 or x0.shape != (lr.shape[0], lr.shape[1] * s, lr.shape[2] * s):
        raise ValueError(f"x0 {x0.shape} is not lr {lr.shape} times scale {s}")
    kernel = as_psf(psf, s)
    bad = ~np.isfinite(x0)
    xf = np.where(bad, 0.0, x0).astype(np.float32)
    mask = np.isfinite(lr) & (degrade_spatial(bad.astype(np.float32), s, kernel) == 0)
    r = np.where(mask, np.nan_to_num(lr) - degrade_spatial(xf, s, kernel), 0.0).astype(np.float64)
    n = np.maximum(mask.sum(axis=(1, 2)), 1)
    sigma2 = np.zeros(lr.shape[0]) if noise_std is None else np.asarray(noise_std, np.float64) ** 2
    tau2 = np.maximum((r ** 2).sum(axis=(1, 2)) / n - sigma2, 0.0) / float((kernel ** 2).sum())
    if not tau2.sum() > 0:
        return x0.copy()
    lam = float(sigma2.sum() / tau2.sum())  # one ratio for every band: the correction's spectrum is the residual's

    def normal(c: np.ndarray) -> np.ndarray:  # (M D D^T M + lam) c
        d = degrade_spatial(degrade_spatial_adjoint((c * mask).astype(np.float32), s, kernel), s, kernel)
        return d * mask + lam * c

    c = np.zeros_like(r)
    res, p = r.copy(), r.copy()
    rs = (res ** 2).sum(axis=(1, 2))
    for _ in range(int(iterations)):
        q = normal(p)
        pq = (p * q).sum(axis=(1, 2))
        a = np.where(pq > 0, rs / np.where(pq > 0, pq, 1.0), 0.0)[:, None, None]
        c += a * p
        res -= a * q
        rs_new = (res ** 2).sum(axis=(1, 2))
        p = res + np.where(rs > 0, rs_new / np.where(rs > 0, rs, 1.0), 0.0)[:, None, None] * p
        rs = rs_new
    out = xf + degrade_spatial_adjoint((c * mask).astype(np.float32), s, kernel)
    out[bad] = np.nan
    return out
