"""Spatial (PSF + decimation) and spectral (response matrix) degradation (numpy only).

Spatial rule (``docs/ARCHITECTURE.md``): crop HR rows/cols to a multiple of ``scale``, reflect-pad
by ``p = (k - scale) // 2`` and correlate with stride ``scale``::

    LR[b, i, j] = sum_{u,v} pad(HR)[b, i*scale + u, j*scale + v] * psf[u, v]

Large rasters are degraded window by window: LR window rows ``[i0, i0 + n)`` read HR rows
``[i0*scale - p, (i0 + n)*scale + p)``; :func:`halo_window` clips that range to the raster and
returns the reflect padding that replaces the part outside it, and :func:`degrade_spatial_window`
then gives exactly the values :func:`degrade_spatial` gives for the whole raster.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .psf import as_psf

__all__ = ["HaloWindow", "halo_window", "degrade_spatial", "degrade_spatial_adjoint", "degrade_spatial_window",
           "degrade_spectral"]


@dataclass(frozen=True)
class HaloWindow:
    """HR pixels to read for one LR window, and the reflect padding to add where the raster ends.

    ``row0, col0, rows, cols`` are in HR pixels inside the (scale-cropped) raster;
    ``pad`` is ``(top, bottom, left, right)`` in HR pixels.
    """

    row0: int
    col0: int
    rows: int
    cols: int
    pad: tuple[int, int, int, int]


def halo_window(lr_row0: int, lr_col0: int, lr_rows: int, lr_cols: int, scale: int,
                hr_shape: tuple[int, int], psf: np.ndarray | float | None = None) -> HaloWindow:
    """The HR read window (with its halo) for an LR window of an ``hr_shape = (rows, cols)`` raster."""
    p = (as_psf(psf, scale).shape[0] - scale) // 2
    hr_rows = hr_shape[0] // scale * scale
    hr_cols = hr_shape[1] // scale * scale
    if lr_row0 < 0 or lr_col0 < 0 or lr_rows < 1 or lr_cols < 1 or \
            (lr_row0 + lr_rows) * scale > hr_rows or (lr_col0 + lr_cols) * scale > hr_cols:
        raise ValueError(f"LR window ({lr_row0}, {lr_col0}, {lr_rows}, {lr_cols}) is outside the "
                         f"{hr_rows // scale} x {hr_cols // scale} LR grid")
    r0, r1 = lr_row0 * scale - p, (lr_row0 + lr_rows) * scale + p
    c0, c1 = lr_col0 * scale - p, (lr_col0 + lr_cols) * scale + p
    top, bottom = max(0, -r0), max(0, r1 - hr_rows)
    left, right = max(0, -c0), max(0, c1 - hr_cols)
    row0, col0 = max(r0, 0), max(c0, 0)
    return HaloWindow(row0, col0, min(r1, hr_rows) - row0, min(c1, hr_cols) - col0, (top, bottom, left, right))


def degrade_spatial(cube: np.ndarray, scale: int, psf: np.ndarray | float | None = None) -> np.ndarray:
    """Blur with ``psf`` and decimate by ``scale``: ``(bands, rows, cols)`` -> float32 ``(bands, rows//scale, cols//scale)``.

    ``psf`` is a kernel, a Gaussian sigma in HR pixels, or ``None`` (Gaussian, FWHM = ``scale``).
    A 2-D ``(rows, cols)`` input gives a 2-D output. NaNs spread to every LR pixel whose kernel
    touches them. Memory: the padded copy plus one LR-sized accumulator.
    """
    cube = np.asarray(cube, dtype=np.float32)
    flat = cube.ndim == 2
    if flat:
        cube = cube[None]
    if cube.ndim != 3:
        raise ValueError(f"expected (bands, rows, cols), got shape {cube.shape}")
    kernel = as_psf(psf, scale)
    rows, cols = cube.shape[1] // scale * scale, cube.shape[2] // scale * scale
    if rows == 0 or cols == 0:
        raise ValueError(f"image {cube.shape[1:]} is smaller than the scale {scale}")
    p = (kernel.shape[0] - scale) // 2
    out = degrade_spatial_window(cube[:, :rows, :cols], scale, kernel, (p, p, p, p))
    return out[0] if flat else out


def degrade_spatial_window(hr_block: np.ndarray, scale: int, psf: np.ndarray | float | None = None,
                           pad: tuple[int, int, int, int] = (0, 0, 0, 0)) -> np.ndarray:
    """Degrade an HR block read with its halo (see :func:`halo_window`); no cropping is done.

    ``hr_block`` is ``(bands, rows, cols)``; ``pad = (top, bottom, left, right)`` reflect padding is
    added first, and the padded size minus ``k`` must be a multiple of ``scale``.
    Returns float32 ``(bands, (rows + top + bottom - k) // scale + 1, ...)``.
    """
    kernel = as_psf(psf, scale)
    k = kernel.shape[0]
    block = np.asarray(hr_block, dtype=np.float32)
    if block.ndim != 3:
        raise ValueError(f"expected (bands, rows, cols), got shape {block.shape}")
    top, bottom, left, right = (int(v) for v in pad)
    if top or bottom or left or right:
        block = np.pad(block, ((0, 0), (top, bottom), (left, right)), mode="reflect")
    extra_r, extra_c = block.shape[1] - k, block.shape[2] - k
    if extra_r < 0 or extra_c < 0 or extra_r % scale or extra_c % scale:
        raise ValueError(f"padded block {block.shape[1:]} does not fit kernel {k} with stride {scale}: "
                         "read the HR window with halo_window()")
    return _correlate_stride(block, kernel, scale, extra_r // scale + 1, extra_c // scale + 1)


def _separable(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(column weights, row weights)`` whose outer product is ``kernel`` when it has rank 1 (as a Gaussian or a
    box has), else None."""
    u_, s_, vt = np.linalg.svd(kernel)
    if s_[1] > 1e-10 * s_[0]:
        return None
    col_w = (u_[:, 0] * np.sqrt(s_[0])).astype(np.float32)
    row_w = (vt[0] * np.sqrt(s_[0])).astype(np.float32)
    return (-col_w, -row_w) if col_w.sum() < 0 else (col_w, row_w)


def _correlate_stride(padded: np.ndarray, kernel: np.ndarray, scale: int, n_r: int, n_c: int) -> np.ndarray:
    """Strided correlation; two 1-D passes when the kernel is separable (rank 1), as a Gaussian is."""
    k = kernel.shape[0]
    bands = padded.shape[0]
    span_r, span_c = scale * (n_r - 1) + 1, scale * (n_c - 1) + 1
    if (sep := _separable(kernel)) is not None:
        col_w, row_w = sep
        tmp = np.zeros((bands, n_r, padded.shape[2]), dtype=np.float32)
        for u in range(k):
            tmp += col_w[u] * padded[:, u:u + span_r:scale, :]
        out = np.zeros((bands, n_r, n_c), dtype=np.float32)
        for v in range(k):
            out += row_w[v] * tmp[:, :, v:v + span_c:scale]
        return out
    w = kernel.astype(np.float32)
    out = np.zeros((bands, n_r, n_c), dtype=np.float32)
    for u in range(k):
        for v in range(k):
            if w[u, v] != 0:
                out += w[u, v] * padded[:, u:u + span_r:scale, v:v + span_c:scale]
    return out


def degrade_spatial_adjoint(lr: np.ndarray, scale: int, psf: np.ndarray | float | None = None) -> np.ndarray:
    """The adjoint (transpose) of :func:`degrade_spatial` for an HR image of ``(rows * scale, cols * scale)``:
    ``(bands, rows, cols)`` -> float32 ``(bands, rows * scale, cols * scale)``, so that
    ``<degrade_spatial(x), y> == <x, degrade_spatial_adjoint(y)>`` for every ``x`` of that size (the reflect
    padding folded back onto the pixels it copied). Needs ``rows * scale`` and ``cols * scale`` larger than the padding.
    """
    lr = np.asarray(lr, dtype=np.float32)
    if lr.ndim != 3:
        raise ValueError(f"expected (bands, rows, cols), got shape {lr.shape}")
    kernel = as_psf(psf, scale)
    k = kernel.shape[0]
    bands, n_r, n_c = lr.shape
    p = (k - scale) // 2
    rows, cols = n_r * scale, n_c * scale
    if p >= min(rows, cols):
        raise ValueError(f"an HR image of {rows} x {cols} px is too small for the {k} px PSF's padding")
    span_r, span_c = scale * (n_r - 1) + 1, scale * (n_c - 1) + 1
    padded = np.zeros((bands, rows + 2 * p, cols + 2 * p), np.float32)
    if (sep := _separable(kernel)) is not None:
        col_w, row_w = sep
        tmp = np.zeros((bands, n_r, cols + 2 * p), np.float32)
        for v in range(k):
            tmp[:, :, v:v + span_c:scale] += row_w[v] * lr
        for u in range(k):
            padded[:, u:u + span_r:scale, :] += col_w[u] * tmp
    else:
        w = kernel.astype(np.float32)
        for u in range(k):
            for v in range(k):
                if w[u, v] != 0:
                    padded[:, u:u + span_r:scale, v:v + span_c:scale] += w[u, v] * lr
    if not p:
        return padded
    out = padded[:, p:p + rows, :].copy()  # fold the reflected rows, then the columns, back onto their sources
    for i in range(p):
        out[:, p - i, :] += padded[:, i, :]
        out[:, rows - 2 - i, :] += padded[:, p + rows + i, :]
    res = out[:, :, p:p + cols].copy()
    for j in range(p):
        res[:, :, p - j] += out[:, :, j]
        res[:, :, cols - 2 - j] += out[:, :, p + cols + j]
    return res


def degrade_spectral(cube: np.ndarray, matrix) -> np.ndarray:
    """``MSI = R @ HSI`` per pixel: ``(hsi_bands, rows, cols)`` -> float32 ``(msi_bands, rows, cols)``.

    ``matrix`` is ``(msi_bands, hsi_bands)`` or a :class:`~core.sensor.srf.SpectralResponse`.
    HSI bands whose column is all zero (bad bands) are skipped, so NaN/nodata there does not leak.
    """
    r = np.asarray(getattr(matrix, "matrix", matrix), dtype=np.float64)
    cube = np.asarray(cube)
    if r.ndim != 2 or cube.ndim != 3 or r.shape[1] != cube.shape[0]:
        raise ValueError(f"response {r.shape} does not match a cube of {cube.shape[0] if cube.ndim == 3 else '?'} bands")
    used = np.flatnonzero(np.any(r != 0, axis=0))
    out = np.tensordot(r[:, used].astype(np.float32), cube[used].astype(np.float32, copy=False), axes=(1, 0))
    return out.astype(np.float32, copy=False)
