"""CNMF: coupled non-negative matrix factorisation unmixing (numpy).

N. Yokoya, T. Yairi, A. Iwasaki, "Coupled nonnegative matrix factorization unmixing for
hyperspectral and multispectral data fusion", IEEE TGRS 50(2):528-537, 2012; the loop follows
Yokoya's reference code (``CNMF_fusion.m``/``CNMF_init.m``/``CNMF_ite.m``, as in the comparisons of
Yokoya, Grohnfeldt, Chanussot, IEEE GRSM 5(2), 2017) with two simplifications: endmembers are
initialised by the successive projection algorithm (SPA, Araujo et al. 2001) instead of VCA, and
the number of endmembers is fixed (default 30) instead of estimated by virtual dimensionality.
"""

from __future__ import annotations

import numpy as np

from ..resample import upsample
from ..sensor.degrade import degrade_spatial
from ..sensor.estimate import estimate_srf
from .bicubic import prepare_inputs

__all__ = ["cnmf", "spa"]

_EPS = 1e-9
_MIN_MS_BANDS = 3  # as the reference code: with <= 3 MS bands the MS endmembers stay R @ W_h


def cnmf(lr_hsi: np.ndarray, hr_msi: np.ndarray, scale: int, srf=None, psf=None, valid=None,
         endmembers: int = 30, inner: int = 100, outer: int = 1, tol: float = 1e-4, **opts) -> np.ndarray:
    """Fuse ``lr_hsi`` ``(bands, r, c)`` and ``hr_msi`` ``(msi_bands, r*scale, c*scale)`` by CNMF.

    Model: ``HSI ~= W_h H_h``, ``MSI ~= W_m H_m`` with ``W_m = R W_h`` and ``H_h = S(H_m)`` (``S`` the
    PSF blur + decimation, ``psf`` default Gaussian FWHM = ``scale``); output ``W_h H_m``.
    Steps (multiplicative updates, Lee & Seung): unmix the HSI (SPA endmembers, ``H_h`` first, then
    both factors); ``W_m = R W_h`` and ``H_m`` from the upsampled ``H_h``, unmix the MSI; then ``outer``
    times: ``H_h = S(H_m)``, re-fit ``W_h`` (and ``H_h``) on the HSI, ``W_m = R W_h`` and re-unmix the
    MSI. Each unmixing runs at most ``inner`` iterations, stopping when the cost falls by less than
    ``tol`` (relative). Abundances carry the reference code's soft sum-to-one row.
    ``srf`` is ``(msi_bands, bands)`` (or a ``SpectralResponse``) in the units linking the two images;
    ``None`` estimates it with :func:`core.sensor.estimate_srf`. Negative values are clipped to 0.

    Memory: ``H_m`` float64 ``(endmembers, r*scale*c*scale)`` plus the output cube; on a 200 x 200
    crop with 30 endmembers about 10 MB, and it runs in seconds. Returns float32, NaN-free.
    """
    x = prepare_inputs(lr_hsi, hr_msi, scale, valid)
    if srf is None:
        r_mat, _ = estimate_srf(x.lr, x.msi, scale, psf, valid=x.lr_valid)
    else:
        r_mat = np.asarray(getattr(srf, "matrix", srf), dtype=np.float64)
    bands, lr_rows, lr_cols = x.lr.shape
    msi_bands, rows, cols = x.msi.shape
    if r_mat.shape != (msi_bands, bands):
        raise ValueError(f"srf {r_mat.shape} does not match ({msi_bands}, {bands})")

    # One common scale factor keeps MSI = R @ HSI true and the sum-to-one weight meaningful.
    norm = float(max(np.percentile(x.lr, 99.9), np.percentile(x.msi, 99.9), _EPS))
    y_h = np.clip(x.lr.reshape(bands, -1).astype(np.float64) / norm, 0, None)
    y_m = np.clip(x.msi.reshape(msi_bands, -1).astype(np.float64) / norm, 0, None)
    p = int(min(endmembers, bands, y_h.shape[1]))
    delta = 2.0 * np.sqrt(max(y_m.mean(), _EPS) / 0.7455) / msi_bands**3  # reference code's sum2one

    w_h = np.maximum(y_h[:, spa(y_h, p)], _EPS)
    h_h = np.full((p, y_h.shape[1]), 1.0 / p)
    h_h = _unmix(y_h, w_h, h_h, delta, inner, tol, update_w=False)[1]
    w_h, h_h = _unmix(y_h, w_h, h_h, delta, inner, tol, update_w=True)

    h_m = np.maximum(upsample(h_h.reshape(p, lr_rows, lr_cols).astype(np.float32), scale), _EPS)
    h_m = h_m.reshape(p, -1).astype(np.float64)
    w_m = np.maximum(r_mat @ w_h, _EPS)
    h_m = _unmix(y_m, w_m, h_m, delta, inner, tol, update_w=False)[1]
    w_m, h_m = _unmix(y_m, w_m, h_m, delta, inner, tol, update_w=msi_bands > _MIN_MS_BANDS)

    for _ in range(outer):
        h_h = degrade_spatial(h_m.reshape(p, rows, cols).astype(np.float32), scale, psf).reshape(p, -1).astype(np.float64)
        h_h = np.maximum(h_h, _EPS)
        w_h = _unmix(y_h, w_h, h_h, delta, inner, tol, update_w=True, update_h=False)[0]
        w_h, h_h = _unmix(y_h, w_h, h_h, delta, inner, tol, update_w=True, update_h=bands > _MIN_MS_BANDS)
        w_m = np.maximum(r_mat @ w_h, _EPS)
        h_m = _unmix(y_m, w_m, h_m, delta, inner, tol, update_w=False)[1]

    out = (w_h @ h_m) * norm
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).reshape(bands, rows, cols).astype(np.float32)


def spa(data: np.ndarray, p: int) -> np.ndarray:
    """Successive projection algorithm: indices of ``p`` columns of ``data`` ``(bands, pixels)``
    spanning its cone (largest residual norm, then project it out)."""
    res = data.astype(np.float64, copy=True)
    idx = []
    for _ in range(p):
        norms = np.einsum("ij,ij->j", res, res)
        j = int(np.argmax(norms))
        if norms[j] <= 0:
            break
        idx.append(j)
        u = res[:, j] / np.sqrt(norms[j])
        res -= np.outer(u, u @ res)
    while len(idx) < p:  # rank-deficient data: repeat pixels rather than fail
        idx.append(idx[len(idx) % max(len(idx), 1)] if idx else 0)
    return np.asarray(idx)


def _unmix(y: np.ndarray, w: np.ndarray, h: np.ndarray, delta: float, iters: int, tol: float,
           update_w: bool = True, update_h: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Multiplicative NMF updates of ``y ~= w h``; ``h`` also fits a row ``delta * 1`` (soft sum-to-one)."""
    w, h = w.copy(), h.copy()
    ones = np.full((1, y.shape[1]), delta)
    cost0 = None
    for _ in range(iters):
        if update_h:
            wa = np.vstack([w, np.full((1, w.shape[1]), delta)])
            h *= (wa.T @ np.vstack([y, ones])) / np.maximum(wa.T @ wa @ h, _EPS)
        if update_w:
            hh = h @ h.T
            w *= (y @ h.T) / np.maximum(w @ hh, _EPS)
        cost = float(np.sum((y - w @ h) ** 2))
        if cost0 is not None and (cost0 - cost) <= tol * cost:
            break
        cost0 = cost
    return w, h
