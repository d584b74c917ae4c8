"""Bicubic upsampling of an LR-HSI onto the HR-MSI grid (numpy only).

This single function is the bicubic baseline, the ``lr_up`` conditioning input of the
CDFormer during training, and the same input during ONNX inference, so all three agree
to the last bit.
"""

from __future__ import annotations

import numpy as np

__all__ = ["upsample", "cubic_taps"]


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
