"""Bicubic baseline, and the input checks and nodata filling shared by every baseline (numpy + scipy).

Baselines are global methods: they take the whole ``lr_hsi`` ``(bands, r, c)`` and ``hr_msi``
``(msi_bands, r*scale, c*scale)`` in memory and return a NaN-free float32 ``(bands, r*scale, c*scale)``.
Nodata: pass ``valid``, the HR-grid ``(rows, cols)`` mask (``False`` = nodata); non-finite pixels
are treated as nodata too. An LR pixel is nodata when any HR pixel of its block is. Nodata pixels
are filled with their nearest valid neighbour before fusion, so the output is finite everywhere
and callers re-apply their nodata mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt

from ..resample import upsample

__all__ = ["bicubic", "FusionInputs", "prepare_inputs", "fill_nearest", "no_valid_pixel_error"]


@dataclass(frozen=True)
class FusionInputs:
    """Checked, NaN-free inputs: ``lr`` ``(bands, r, c)``, ``msi`` ``(msi_bands, r*scale, c*scale)``
    (float32), and the validity masks ``lr_valid`` ``(r, c)`` and ``hr_valid`` ``(r*scale, c*scale)``."""

    lr: np.ndarray
    msi: np.ndarray
    lr_valid: np.ndarray
    hr_valid: np.ndarray
    scale: int


def _dead_bands(cube: np.ndarray) -> str:
    dead = np.flatnonzero(~np.isfinite(cube).any(axis=(1, 2)))
    if not len(dead) or len(dead) == cube.shape[0]:
        return ""
    listed = ", ".join(str(b + 1) for b in dead[:10]) + (", ..." if len(dead) > 10 else "")
    return f"; {len(dead)} of its {cube.shape[0]} bands have no value anywhere (band {listed}): leave them out"


def no_valid_pixel_error(lr_hsi: np.ndarray, hr_msi: np.ndarray, scale: int, valid: np.ndarray | None = None,
                         lr_name: str | None = None, msi_name: str | None = None) -> ValueError:
    """The error for a pair with no usable pixel, saying which layer is at fault.

    ``lr_hsi`` ``(bands, r, c)``, ``hr_msi`` ``(msi_bands, r*scale, c*scale)`` with NaN = nodata, and
    the optional HR-grid ``valid`` mask ``(r*scale, c*scale)``: the LR-HSI is all nodata, the HR-MSI
    is all nodata, the mask leaves nothing, or the two do not overlap in valid pixels. A pixel is valid
    when every band is finite, so a band without any value is named. ``lr_name`` / ``msi_name`` are
    the layers' names (as the user knows them) where the caller has them.
    """
    ln = f"LR-HSI layer '{lr_name}'" if lr_name else "the LR-HSI"
    mn = f"HR-MSI layer '{msi_name}'" if msi_name else "the HR-MSI"
    lr_ok = np.isfinite(lr_hsi).all(axis=0)
    msi_ok = np.isfinite(hr_msi).all(axis=0)
    if not lr_ok.any():
        return ValueError(f"{ln} is all nodata: no pixel has a value in every band{_dead_bands(lr_hsi)}")
    if not msi_ok.any():
        return ValueError(f"{mn} is all nodata: no pixel has a value in every band{_dead_bands(hr_msi)}")
    if valid is not None and not (msi_ok & np.asarray(valid, bool)[:msi_ok.shape[0], :msi_ok.shape[1]]).any():
        return ValueError(f"the validity mask leaves no valid pixel of {mn}")
    return ValueError(f"{ln} and {mn} do not overlap in valid pixels: no LR-HSI pixel with data has its whole "
                      f"{scale} x {scale} block of HR-MSI pixels valid")


def prepare_inputs(lr_hsi: np.ndarray, hr_msi: np.ndarray, scale: int, valid: np.ndarray | None = None,
                   lr_name: str | None = None, msi_name: str | None = None) -> FusionInputs:
    """Check shapes, crop the MSI to ``lr * scale``, derive validity masks and fill nodata (nearest valid pixel).

    Without a single valid LR pixel raises the ``ValueError`` of :func:`no_valid_pixel_error`,
    with the layers' names ``lr_name`` / ``msi_name`` where given.
    """
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    lr = np.asarray(lr_hsi, dtype=np.float32)
    msi = np.asarray(hr_msi, dtype=np.float32)
    if lr.ndim != 3 or msi.ndim != 3:
        raise ValueError(f"expected (bands, rows, cols) arrays, got {lr.shape} and {msi.shape}")
    rows, cols = lr.shape[1] * scale, lr.shape[2] * scale
    if msi.shape[1] < rows or msi.shape[2] < cols:
        raise ValueError(f"HR-MSI {msi.shape[1:]} is smaller than the LR-HSI {lr.shape[1:]} times {scale}")
    msi = msi[:, :rows, :cols]
    hr_valid = np.all(np.isfinite(msi), axis=0)
    if valid is not None:
        v = np.asarray(valid, dtype=bool)
        if v.shape[0] < rows or v.shape[1] < cols:
            raise ValueError(f"valid mask {v.shape} is smaller than the HR grid {(rows, cols)}")
        hr_valid &= v[:rows, :cols]
    blocks = hr_valid.reshape(lr.shape[1], scale, lr.shape[2], scale).all(axis=(1, 3))
    lr_valid = np.all(np.isfinite(lr), axis=0) & blocks
    if not lr_valid.any():
        raise no_valid_pixel_error(lr, msi, scale, valid, lr_name, msi_name)
    return FusionInputs(fill_nearest(lr, lr_valid), fill_nearest(msi, hr_valid), lr_valid, hr_valid, int(scale))


def fill_nearest(cube: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Replace the pixels where ``valid`` is False by their nearest valid pixel (all bands); float32 copy."""
    cube = np.asarray(cube, dtype=np.float32)
    if valid.all():
        return cube.copy()
    if not valid.any():
        raise ValueError("nothing valid to fill from")
    idx = distance_transform_edt(~valid, return_distances=False, return_indices=True)
    return cube[:, idx[0], idx[1]]


def bicubic(lr_hsi: np.ndarray, hr_msi: np.ndarray, scale: int, srf=None, psf=None, valid=None, **opts) -> np.ndarray:
    """LR-HSI upsampled with :func:`core.resample.upsample` (Keys bicubic); the MSI is not used.

    Memory: the input plus the float32 output ``(bands, r*scale, c*scale)``.
    """
    x = prepare_inputs(lr_hsi, hr_msi, scale, valid)
    return upsample(x.lr, scale)
