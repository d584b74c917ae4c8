"""Bicubic upsampling of an LR-HSI onto the HR-MSI grid (numpy only).

This single function is the bicubic baseline, the ``lr_up`` conditioning input of the
CDFormer during training, and the same input during ONNX inference, so all three agree
to the last bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

__all__ = ["upsample", "cubic_taps", "upsample_window", "LRWindow"]


class LRWindow(NamedTuple):
    """A window of the LR grid, in the field order of ``core.raster_io.Window``."""

    col_off: int
    row_off: int
    width: int
    height: int


def _keys(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel (a = -0.5, as MATLAB's ``imresize`` and OpenCV)."""
    x = np.abs(x)
    return np.where(
        x <= 1,
        (a + 2) * x**3 - (a + 3) * x**2 + 1,
        np.where(x < 2, a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a, 0.0),
    )


def cubic_taps(n_in: int, scale: int, offset: int = 0, n_out: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(n_out, 4)`` into the LR axis and their weights ``(n_out, 4)``.

    HR pixel ``j`` (counted from ``offset`` on the HR grid) has its centre at LR coordinate
    ``(j + 0.5) / scale - 0.5``: LR pixel centres sit at the centres of their ``scale x scale``
    HR blocks. Taps outside the axis are clamped to the edge (replicate padding).
    """
    if n_out is None:
        n_out = n_in * scale
    pos = (np.arange(offset, offset + n_out) + 0.5) / scale - 0.5
    base = np.floor(pos).astype(np.int64)
    idx = base[:, None] + np.arange(-1, 3)[None, :]
    w = _keys(pos[:, None] - idx)
    w /= w.sum(axis=1, keepdims=True)
    return np.clip(idx, 0, n_in - 1), w.astype(np.float32)


def upsample(cube: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic upsampling of ``(bands, rows, cols)`` by an integer ``scale``.

    Returns float32 ``(bands, rows * scale, cols * scale)``. NaNs propagate to the HR pixels
    whose taps touch them, so callers mask nodata before or after as they need.
    """
    if scale < 1 or int(scale) != scale:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    cube = np.asarray(cube, dtype=np.float32)
    ri, rw = cubic_taps(cube.shape[1], scale)
    ci, cw = cubic_taps(cube.shape[2], scale)
    rows = np.einsum("brkc,rk->brc", cube[:, ri, :], rw)
    return np.einsum("brck,ck->brc", rows[:, :, ci], cw).astype(np.float32)


def upsample_window(read_lr: Callable[[LRWindow], np.ndarray], lr_rows: int, lr_cols: int, scale: int, window,
                    fill: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Window of ``core.resample.upsample(lr, scale)`` computed from the LR pixels it needs.

    ``window`` is an HR-grid window (``col_off, row_off, width, height``); ``read_lr(LRWindow)``
    returns ``(bands, h, w)`` with NaN at nodata. NaNs are replaced by ``fill`` (per band; 0 by
    default) before interpolating. Returns the upsampled window and its
    ``(bands, height, width)`` bool mask of HR pixels whose own LR pixel is nodata.
    Equals the same window of ``upsample`` over the whole LR grid (edges replicate the same way).
    """
    ri, rw = cubic_taps(lr_rows, scale, offset=window.row_off, n_out=window.height)
    ci, cw = cubic_taps(lr_cols, scale, offset=window.col_off, n_out=window.width)
    r_lo, r_hi, c_lo, c_hi = int(ri.min()), int(ri.max()) + 1, int(ci.min()), int(ci.max()) + 1
    lr = read_lr(LRWindow(c_lo, r_lo, c_hi - c_lo, r_hi - r_lo))
    bad = ~np.isfinite(lr)
    if bad.any():
        f = np.zeros(lr.shape[0], np.float32) if fill is None else np.asarray(fill, np.float32)
        lr = np.where(bad, f[:, None, None], lr)
    rows = np.einsum("brkc,rk->brc", lr[:, ri - r_lo, :], rw)
    up = np.einsum("brck,ck->brc", rows[:, :, ci - c_lo], cw).astype(np.float32)
    own_r = np.arange(window.row_off, window.row_off + window.height) // scale - r_lo
    own_c = np.arange(window.col_off, window.col_off + window.width) // scale - c_lo
    invalid = bad[:, own_r][:, :, own_c]
    return up, invalid
