"""The conditioning image the CDFormer starts from (its ``lr_up`` input and its residual base).

``bicubic``: the LR-HSI upsampled to the MSI grid (:func:`core.resample.upsample`), computed tile
by tile at inference. ``mtf_glp_hs``: the MTF-GLP-HS fusion of the pair (:mod:`core.baselines.glp`),
so the network learns corrections to a classical fusion. Its global part (pan weights and gains)
is fitted once on a bounded sample of the common area and each tile's base is then computed from
the pixels it needs (:func:`streamed_base`, :class:`core.baselines.glp.GLPStream`), so memory does
not grow with the area. Training (:func:`base_image` on in-memory crops), the ONNX metadata
(``base``) and inference all read this one definition.
"""

from __future__ import annotations

import numpy as np

from .resample import upsample

__all__ = ["BASES", "base_image", "streamed_base"]

BASES = ("bicubic", "mtf_glp_hs")


def base_image(lr: np.ndarray, msi: np.ndarray, scale: int, base: str = "bicubic", psf_sigma: float | None = None,
               valid: np.ndarray | None = None, psf: np.ndarray | None = None) -> np.ndarray:
    """The conditioning image, float32 ``(bands, rows * scale, cols * scale)``, in physical units.

    ``lr`` ``(bands, rows, cols)`` and ``msi`` ``(msi_bands, rows * scale, cols * scale)``; NaN = nodata
    (filled by the nearest valid pixel for ``mtf_glp_hs``, by the caller for ``bicubic``).
    ``psf_sigma``: the Gaussian PSF in HR pixels the GLP filter is matched to (None = FWHM of ``scale``);
    ``psf``: a kernel instead (e.g. an estimated, shifted one: :meth:`core.sensor.estimate.Registration.psf`).
    """
    if base == "bicubic":
        return upsample(lr, scale)
    if base == "mtf_glp_hs":
        from .baselines import mtf_glp_hs
        from .sensor import gaussian_psf

        return mtf_glp_hs(lr, msi, scale, psf=gaussian_psf(scale, psf_sigma) if psf is None else psf, valid=valid)
    raise ValueError(f"unknown conditioning base {base!r}; choose one of {', '.join(BASES)}")


def streamed_base(base: str, read_lr, read_msi, lr_shape: tuple[int, int], scale: int, psf=None,
                  dead_lr: np.ndarray | None = None, dead_msi: np.ndarray | None = None, progress=None, fit=None):
    """The conditioning base of a pair read window by window, fitted and ready; None for ``bicubic``.

    ``read_lr(row0, col0, rows, cols)`` / ``read_msi(...)`` read the LR-HSI on its ``lr_shape`` grid
    and the HR-MSI on the ``scale`` times finer grid (float32, NaN = nodata); ``dead_lr`` /
    ``dead_msi`` mark bands with no valid pixel; ``psf`` the PSF the GLP filter is matched to: a
    Gaussian sigma in HR pixels (the model's ``psf_sigma``), a kernel (e.g. an estimated, shifted one:
    :meth:`core.sensor.estimate.Registration.psf`) or None (FWHM of ``scale``). The returned object's ``window(row0, col0, rows,
    cols)`` gives the base over an HR window (float32 ``(bands, rows, cols)``, physical units), equal
    to :func:`base_image` over the whole area away from nodata (to float32 rounding when the area
    has at most :data:`core.baselines.glp.MAX_FIT_LR_PIXELS` LR pixels; larger areas fit the global
    part on an evenly spread sample of blocks). ``progress(fraction, message)`` follows the fit;
    ``fit`` (the ``params`` of an earlier stream over the same pair) skips it.
    """
    if base == "bicubic":
        return None
    if base == "mtf_glp_hs":
        from .baselines.glp import GLPStream
        from .sensor import as_psf

        stream = GLPStream(read_lr, read_msi, lr_shape, scale, as_psf(psf, scale), dead_lr, dead_msi)
        if fit is None:
            stream.fit(progress=progress)
        else:
            stream.params = fit
        return stream
    raise ValueError(f"unknown conditioning base {base!r}; choose one of {', '.join(BASES)}")
