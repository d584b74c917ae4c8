"""GSA: Gram-Schmidt adaptive component substitution, extended to HS-MS fusion (numpy).

B. Aiazzi, S. Baronti, M. Selva, "Improving component substitution pansharpening through
multivariate regression of MS+Pan data", IEEE TGRS 45(10):3230-3239, 2007; as implemented in
G. Vivone et al., "A critical comparison among pansharpening algorithms", IEEE TGRS 53(5), 2015,
and extended to hyperspectral-multispectral fusion in N. Yokoya, C. Grohnfeldt, J. Chanussot,
"Hyperspectral and multispectral data fusion: a comparative review of the recent literature",
IEEE GRSM 5(2):29-56, 2017 (``GSA_wrapper.m``): each HS band joins the MS band it correlates best
with at the LR scale, and each group is pansharpened with that MS band as the "pan".
"""

from __future__ import annotations

import numpy as np

from ..resample import upsample
from ..sensor.degrade import degrade_spatial
from .bicubic import prepare_inputs

__all__ = ["gsa"]


def gsa(lr_hsi: np.ndarray, hr_msi: np.ndarray, scale: int, srf=None, psf=None, valid=None,
        ridge: float = 1e-6, **opts) -> np.ndarray:
    """Fuse ``lr_hsi`` ``(bands, r, c)`` and ``hr_msi`` ``(msi_bands, r*scale, c*scale)`` by GSA.

    Per group with MS band ``P``: the intensity ``I = [HS_up, 1] @ alpha`` with ``alpha`` regressed
    from the LR HS bands onto ``P`` degraded to the LR grid (``psf``, default Gaussian FWHM =
    ``scale``, instead of the toolbox's bilinear resize), gains ``g_b = cov(I, HS_up_b) / var(I)``
    and ``out_b = HS_up_b + g_b (P - mean(P) - (I - mean(I)))``. ``ridge`` (relative to the mean
    regressor energy) keeps the regression well-posed when a group has more bands than LR pixels.
    ``srf`` is not used. Statistics use valid pixels only (see :mod:`core.baselines.bicubic`).

    Memory: about three float32 ``(bands, r*scale, c*scale)`` cubes. Returns float32, NaN-free.
    """
    x = prepare_inputs(lr_hsi, hr_msi, scale, valid)
    lr, msi = x.lr.astype(np.float64), x.msi
    up = upsample(x.lr, scale)
    ms_lr = degrade_spatial(msi, scale, psf).astype(np.float64)
    lv, hv = x.lr_valid.reshape(-1), x.hr_valid.reshape(-1)

    hs_pix = lr.reshape(lr.shape[0], -1)[:, lv]
    ms_pix = ms_lr.reshape(ms_lr.shape[0], -1)[:, lv]
    group = np.argmax(np.nan_to_num(_corr(hs_pix, ms_pix), nan=-2.0), axis=1)  # (bands,)

    out = np.empty_like(up)
    for k in np.unique(group):
        bands = np.flatnonzero(group == k)
        hs_lr0 = hs_pix[bands] - hs_pix[bands].mean(axis=1, keepdims=True)
        p_lr = ms_pix[k] - ms_pix[k].mean()
        design = np.vstack([hs_lr0, np.ones(hs_lr0.shape[1])]).T  # (pixels, n+1)
        alpha = _ridge(design, p_lr, ridge)
        hs_up = up[bands].reshape(len(bands), -1).astype(np.float64)
        hs_up0 = hs_up - hs_up[:, hv].mean(axis=1, keepdims=True)
        intensity = alpha[:-1] @ hs_up0 + alpha[-1]
        i0 = intensity - intensity[hv].mean()
        var_i = np.var(i0[hv])
        gains = (hs_up0[:, hv] @ i0[hv]) / hv.sum() / var_i if var_i > 0 else np.zeros(len(bands))
        pan = msi[k].reshape(-1).astype(np.float64)
        delta = pan - pan[hv].mean() - i0
        fused = hs_up + gains[:, None] * delta[None, :]
        # Final mean equalisation (Vivone's GSA): keep each band's mean that of the upsampled band.
        fused += (hs_up[:, hv].mean(axis=1) - fused[:, hv].mean(axis=1))[:, None]
        out[bands] = fused.reshape(len(bands), *up.shape[1:]).astype(np.float32)
    return out


def _corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation ``(len(a), len(b))`` between the rows of ``a`` and ``b`` (pixels on axis 1)."""
    a0 = a - a.mean(axis=1, keepdims=True)
    b0 = b - b.mean(axis=1, keepdims=True)
    na, nb = np.linalg.norm(a0, axis=1), np.linalg.norm(b0, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a0 @ b0.T) / np.outer(na, nb)


def _ridge(design: np.ndarray, target: np.ndarray, ridge: float) -> np.ndarray:
    """Least squares with a small Tikhonov term: ``(A'A + ridge * tr(A'A)/n I)^-1 A'y``."""
    gram = design.T @ design
    lam = ridge * np.trace(gram) / gram.shape[0]
    return np.linalg.solve(gram + lam * np.eye(gram.shape[0]), design.T @ target)
