"""Point spread functions (PSFs) of the spatial degradation model (numpy only).

A PSF is a ``(k, k)`` kernel, summing to 1, with ``k >= scale`` and ``k % 2 == scale % 2`` so that
reflect-padding by ``(k - scale) // 2`` and correlating with stride ``scale`` centres each kernel on
its ``scale x scale`` HR block (see ``docs/ARCHITECTURE.md``, sensor-model conventions).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["FWHM_TO_SIGMA", "PSF_SHAPES", "sigma_for_scale", "gaussian_psf", "box_taps", "box_psf", "psf_kernel", "as_psf",
           "halo"]

# sigma = FWHM / (2 sqrt(2 ln 2)) = FWHM / 2.3548
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))

PSF_SHAPES = ("gaussian", "box")
"""The PSF families: a Gaussian (width: its standard deviation ``sigma``) and a pixel-integrated box (width: its
side), both in HR pixels."""


def sigma_for_scale(scale: int) -> float:
    """Default Gaussian PSF standard deviation in HR pixels: FWHM equal to ``scale`` HR pixels."""
    _check_scale(scale)
    return float(scale) * FWHM_TO_SIGMA


def gaussian_psf(scale: int, sigma: float | None = None, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Isotropic Gaussian PSF, float64 ``(k, k)`` summing to 1.

    ``sigma`` is in HR pixels (default :func:`sigma_for_scale`). The kernel is the Gaussian sampled
    at pixel centres (as MATLAB's ``fspecial('gaussian')``), centred at ``(k - 1) / 2 + shift``, with
    the smallest ``k >= max(scale, 6 sigma + 2 max|shift|)`` whose parity is that of ``scale`` (support
    about +-3 sigma around the shifted centre). ``shift = (dy, dx)`` in HR pixels moves each LR pixel's
    footprint off the centre of its HR block (down and right for positive values): a sub-pixel
    misregistration between the LR and the HR grid.
    """
    _check_scale(scale)
    if sigma is None:
        sigma = sigma_for_scale(scale)
    sigma = float(sigma)
    if not sigma > 0:
        raise ValueError(f"PSF sigma must be > 0 HR pixels, got {sigma}")
    dy, dx = (float(v) for v in shift)
    k = max(int(scale), int(math.ceil(6.0 * sigma + 2.0 * max(abs(dy), abs(dx)) - 1e-9)))
    if k % 2 != scale % 2:
        k += 1
    x = np.arange(k, dtype=np.float64) - (k - 1) / 2.0
    gy = np.exp(-0.5 * ((x - dy) / sigma) ** 2)
    gx = np.exp(-0.5 * ((x - dx) / sigma) ** 2)
    return np.outer(gy / gy.sum(), gx / gx.sum())


def box_taps(x: np.ndarray, side: float) -> np.ndarray:
    """1-D taps of a box of ``side`` HR pixels centred at 0, integrated over each pixel: tap ``i`` is the overlap of
    the pixel ``[x_i - 0.5, x_i + 0.5]`` with ``[-side / 2, side / 2]`` (``x``: the pixels' centres, HR px), summing
    to 1. A box of side ``scale`` on a block of ``scale`` pixels is the block mean."""
    half = float(side) / 2.0
    w = np.clip(np.minimum(x + 0.5, half) - np.maximum(x - 0.5, -half), 0.0, None)
    return w / w.sum()


def box_psf(scale: int, side: float | None = None, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Pixel-integrated box PSF of ``side`` HR pixels (default ``scale``: the LR pixel's footprint), float64
    ``(k, k)`` summing to 1, centred at ``(k - 1) / 2 + shift`` (as :func:`gaussian_psf`), with the smallest
    ``k >= max(scale, side + 2 max|shift|)`` of the scale's parity."""
    _check_scale(scale)
    side = float(scale if side is None else side)
    if not side > 0:
        raise ValueError(f"box PSF side must be > 0 HR pixels, got {side}")
    dy, dx = (float(v) for v in shift)
    k = max(int(scale), int(math.ceil(side + 2.0 * max(abs(dy), abs(dx)) - 1e-9)))
    k += (k - scale) % 2
    x = np.arange(k, dtype=np.float64) - (k - 1) / 2.0
    return np.outer(box_taps(x - dy, side), box_taps(x - dx, side))


def psf_kernel(shape: str, scale: int, width: float, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The kernel of a PSF family of :data:`PSF_SHAPES`: ``gaussian`` with ``sigma = width`` or ``box`` with
    ``side = width`` (HR pixels), footprint offset ``shift = (dy, dx)`` HR pixels."""
    if shape == "gaussian":
        return gaussian_psf(scale, width, shift)
    if shape == "box":
        return box_psf(scale, width, shift)
    raise ValueError(f"unknown PSF shape {shape!r}; choose one of {', '.join(PSF_SHAPES)}")


def as_psf(psf: np.ndarray | float | None, scale: int) -> np.ndarray:
    """Validate a PSF argument: ``None`` (default Gaussian), a sigma in HR pixels, or a kernel.

    Returns a float64 ``(k, k)`` kernel normalised to sum 1; raises ``ValueError`` if the kernel
    breaks the size/parity convention.
    """
    _check_scale(scale)
    if psf is None:
        return gaussian_psf(scale)
    if np.isscalar(psf):
        return gaussian_psf(scale, float(psf))
    k = np.asarray(psf, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"PSF must be a square 2-D kernel, got shape {k.shape}")
    n = k.shape[0]
    if n < scale or n % 2 != scale % 2:
        raise ValueError(f"PSF size {n} must be >= scale {scale} and have the parity of the scale")
    total = k.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("PSF must have a positive, finite sum")
    return k / total


def halo(scale: int, psf: np.ndarray | float | None = None) -> int:
    """HR pixels of context each side of an HR block that the PSF reads: ``(k - scale) // 2``."""
    return (as_psf(psf, scale).shape[0] - scale) // 2


def _check_scale(scale: int) -> None:
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
