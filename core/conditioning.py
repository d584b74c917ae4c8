"""The conditioning image the CDFormer starts from (its ``lr_up`` input and its residual base).

``bicubic``: the LR-HSI upsampled to the MSI grid (:func:`core.resample.upsample`), computed tile
by tile at inference. ``mtf_glp_hs``: the MTF-GLP-HS fusion of the pair (:mod:`core.baselines.glp`),
so the network learns corrections to a classical fusion; it is a global method, computed once on
the whole common area (the area must fit in memory, as for the classical fusion algorithm).
Training, the ONNX metadata (``base``) and inference all read this one definition.
"""

from __future__ import annotations

import numpy as np

from .resample import upsample

__all__ = ["BASES", "base_image"]

BASES = ("bicubic", "mtf_glp_hs")


def base_image(lr: np.ndarray, msi: np.ndarray, scale: int, base: str = "bicubic", psf_sigma: float | None = None,
               valid: np.ndarray | None = None) -> np.ndarray:
    """The conditioning image, float32 ``(bands, rows * scale, cols * scale)``, in physical units.

    ``lr`` ``(bands, rows, cols)`` and ``msi`` ``(msi_bands, rows * scale, cols * scale)``; NaN = nodata
    (filled by the nearest valid pixel for ``mtf_glp_hs``, by the caller for ``bicubic``).
    ``psf_sigma``: the Gaussian PSF in HR pixels the GLP filter is matched to (None = FWHM of ``scale``).
    """
    if base == "bicubic":
        return upsample(lr, scale)
    if base == "mtf_glp_hs":
        from .baselines import mtf_glp_hs
        from .sensor import gaussian_psf

        return mtf_glp_hs(lr, msi, scale, psf=gaussian_psf(scale, psf_sigma), valid=valid)
    raise ValueError(f"unknown conditioning base {base!r}; choose one of {', '.join(BASES)}")
