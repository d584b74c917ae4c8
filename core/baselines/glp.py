"""MTF-GLP-HS: MTF-matched generalised Laplacian pyramid with hypersharpening (numpy).

B. Aiazzi, L. Alparone, S. Baronti, A. Garzelli, M. Selva, "MTF-tailored multiscale fusion of
high-resolution MS and Pan imagery", PE&RS 72(5):591-596, 2006; G. Vivone et al., "A critical
comparison among pansharpening algorithms", IEEE TGRS 53(5), 2015; hypersharpening from
M. Selva et al., "Hypersharpening: a first approach on SIM-GA data", IEEE JSTARS 8(6), 2015; as
used for HS-MS fusion in Yokoya, Grohnfeldt, Chanussot, IEEE GRSM 5(2), 2017 (``MTF_GLP_wrapper.m``,
mode 2: one synthetic pan per HS band from a least-squares combination of the MS bands).
"""

from __future__ import annotations

import numpy as np

from ..resample import upsample
from ..sensor.degrade import degrade_spatial
from .bicubic import prepare_inputs

__all__ = ["mtf_glp_hs"]


def mtf_glp_hs(lr_hsi: np.ndarray, hr_msi: np.ndarray, scale: int, srf=None, psf=None, valid=None,
               **opts) -> np.ndarray:
    """Fuse ``lr_hsi`` ``(bands, r, c)`` and ``hr_msi`` ``(msi_bands, r*scale, c*scale)`` by MTF-GLP-HS.

    For HS band ``b``: the synthetic pan ``P_b = [MSI, 1] @ x_b``, ``x_b`` the least-squares fit of the
    LR band on the MSI degraded to the LR grid; its low-pass ``P_b^L = upsample(degrade(P_b))``, the
    degradation using ``psf`` (the MTF-matched filter; default Gaussian with FWHM = ``scale``, which
    is the toolbox's ``GaussKernel``); ``out_b = HS_up_b + g_b (P_b - P_b^L)`` with the regression gain
    ``g_b = cov(HS_up_b, P_b^L) / var(P_b^L)``. ``srf`` is not used.

    Memory: about four float32 ``(bands, r*scale, c*scale)`` cubes. Returns float32, NaN-free.
    """
    x = prepare_inputs(lr_hsi, hr_msi, scale, valid)
    lv, hv = x.lr_valid.reshape(-1), x.hr_valid.reshape(-1)
    ms_lr = degrade_spatial(x.msi, scale, psf)
    design = np.vstack([ms_lr.reshape(ms_lr.shape[0], -1)[:, lv], np.ones(lv.sum())]).T.astype(np.float64)
    target = x.lr.reshape(x.lr.shape[0], -1)[:, lv].T.astype(np.float64)
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)  # (msi_bands + 1, bands)

    msi = x.msi.reshape(x.msi.shape[0], -1)
    pan = (coef[:-1].T.astype(np.float32) @ msi + coef[-1][:, None].astype(np.float32)).reshape(-1, *x.msi.shape[1:])
    pan_low = upsample(degrade_spatial(pan, scale, psf), scale)
    up = upsample(x.lr, scale)

    n = pan.shape[0]
    u = up.reshape(n, -1)[:, hv].astype(np.float64)
    lo = pan_low.reshape(n, -1)[:, hv].astype(np.float64)
    u -= u.mean(axis=1, keepdims=True)
    lo -= lo.mean(axis=1, keepdims=True)
    var = np.sum(lo * lo, axis=1)
    gains = np.divide(np.sum(u * lo, axis=1), var, out=np.zeros(n), where=var > 0)
    return (up + gains[:, None, None].astype(np.float32) * (pan - pan_low)).astype(np.float32)
