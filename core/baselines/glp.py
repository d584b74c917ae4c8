"""MTF-GLP-HS: MTF-matched generalised Laplacian pyramid with hypersharpening (numpy), whole or streamed.

B. Aiazzi, L. Alparone, S. Baronti, A. Garzelli, M. Selva, "MTF-tailored multiscale fusion of
high-resolution MS and Pan imagery", PE&RS 72(5):591-596, 2006; G. Vivone et al., "A critical
comparison among pansharpening algorithms", IEEE TGRS 53(5), 2015; hypersharpening from
M. Selva et al., "Hypersharpening: a first approach on SIM-GA data", IEEE JSTARS 8(6), 2015; as
used for HS-MS fusion in Yokoya, Grohnfeldt, Chanussot, IEEE GRSM 5(2), 2017 (``MTF_GLP_wrapper.m``,
mode 2: one synthetic pan per HS band from a least-squares combination of the MS bands).

For HS band ``b``: the synthetic pan ``P_b = [MSI, 1] @ x_b``, ``x_b`` the least-squares fit of the
LR band on the MSI degraded to the LR grid; its low-pass ``P_b^L = upsample(degrade(P_b))``, the
degradation using ``psf`` (the MTF-matched filter; default Gaussian with FWHM = ``scale``, the
toolbox's ``GaussKernel``); ``out_b = HS_up_b + g_b (P_b - P_b^L)`` with the regression gain
``g_b = cov(HS_up_b, P_b^L) / var(P_b^L)`` over the valid HR pixels.

Degradation and bicubic upsampling are linear with unit gain, so ``P_b - P_b^L = x_b' (MSI - MSI^L)``
with ``MSI^L = upsample(degrade(MSI))`` (the constant cancels): the pyramid runs on the few MSI
bands, not on one pan per HS band. What is global - ``x_b`` and ``g_b`` - is fitted from sums
accumulated block by block (:meth:`GLPStream.fit`, blocks of about 192 HR pixels), over every block of the area or, past
``max_fit_lr_pixels``, over an evenly spread subset of them; the fusion of any HR window is then
computed from the LR pixels and MSI pixels it needs (:meth:`GLPStream.window`), so memory is
bounded by the window, not the scene. :func:`mtf_glp_hs` is the same computation with one block
and one window covering the whole area.

Nodata (NaN) follows :mod:`core.baselines.bicubic`: an LR pixel is nodata when any HR pixel of its
block is; nodata pixels are filled with their nearest valid neighbour inside the block read
(so a window's values next to nodata can differ from the whole-image ones within the filter's
reach; elsewhere they agree to float32 rounding), and with the fitted band means where a block
read has no valid pixel. Bands with no valid pixel at all (``dead``) are left out of the
validity test and filled with zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..resample import cubic_taps
from ..sensor.degrade import degrade_spatial_window, halo_window
from ..sensor.psf import as_psf
from .bicubic import fill_nearest, prepare_inputs

__all__ = ["mtf_glp_hs", "GLPFit", "GLPStream", "MAX_FIT_LR_PIXELS"]

MAX_FIT_LR_PIXELS = 512 * 512
"""LR pixels the global fit reads at most (evenly spread blocks); smaller areas are fitted whole."""

Reader = Callable[[int, int, int, int], np.ndarray]
"""``read(row0, col0, rows, cols) -> (bands, rows, cols)`` float32, NaN = nodata."""


@dataclass(frozen=True)
class GLPFit:
    """The global part of MTF-GLP-HS.

    ``coef`` ``(msi_bands, bands)``: synthetic-pan weights of each HS band (the constant term
    cancels in the detail); ``gains`` ``(bands,)``: injection gains; ``lr_mean`` ``(bands,)`` and
    ``msi_mean`` ``(msi_bands,)``: means of the valid pixels (fills for blocks with none);
    ``lr_pixels``: valid LR pixels the regression used; ``blocks``: blocks read / blocks in the area.
    """

    coef: np.ndarray
    gains: np.ndarray
    lr_mean: np.ndarray
    msi_mean: np.ndarray
    lr_pixels: int
    blocks: tuple[int, int]


@dataclass
class _Block:
    """Filled inputs over LR rows ``r0..r0+lr.shape[1]`` (cols likewise) and what derives from them."""

    r0: int
    c0: int
    lr: np.ndarray  # (bands, n_r, n_c) filled
    lr_valid: np.ndarray  # (n_r, n_c)
    ms_lr: np.ndarray  # (msi_bands, n_r, n_c): the MSI degraded onto these LR pixels
    msi: np.ndarray  # (msi_bands, rows, cols) filled, HR rows from msi_r0
    msi_valid: np.ndarray  # (rows, cols)
    msi_r0: int
    msi_c0: int


class GLPStream:
    """MTF-GLP-HS of a pair read window by window.

    ``read_lr`` / ``read_msi`` (see :data:`Reader`) read the LR-HSI on its ``lr_shape = (rows, cols)``
    grid and the HR-MSI on the ``(rows * scale, cols * scale)`` grid; ``psf`` is the MTF-matched
    filter (kernel, Gaussian sigma in HR pixels, or None for FWHM = ``scale``). ``dead_lr`` /
    ``dead_msi`` mark bands with no valid pixel (bool, optional). Call :meth:`fit` once, then
    :meth:`window` for any HR window.
    """

    def __init__(self, read_lr: Reader, read_msi: Reader, lr_shape: tuple[int, int], scale: int,
                 psf: np.ndarray | float | None = None, dead_lr: np.ndarray | None = None,
                 dead_msi: np.ndarray | None = None):
        self.read_lr, self.read_msi = read_lr, read_msi
        self.lr_shape = (int(lr_shape[0]), int(lr_shape[1]))
        self.scale = int(scale)
        self.psf = as_psf(psf, self.scale)
        self.hr_shape = (self.lr_shape[0] * self.scale, self.lr_shape[1] * self.scale)
        self.dead_lr, self.dead_msi = dead_lr, dead_msi
        self.params: GLPFit | None = None

    # ------------------------------------------------------------------ reading

    def _block(self, r0: int, c0: int, n_r: int, n_c: int) -> _Block:
        s = self.scale
        hw = halo_window(r0, c0, n_r, n_c, s, self.hr_shape, self.psf)
        msi = np.asarray(self.read_msi(hw.row0, hw.col0, hw.rows, hw.cols), np.float32)
        ok = np.isfinite(msi)
        if self.dead_msi is not None and self.dead_msi.any():
            msi = np.where(self.dead_msi[:, None, None], np.float32(0), msi)
            ok[self.dead_msi] = True
        msi_valid = ok.all(axis=0)
        fr, fc = r0 * s - hw.row0, c0 * s - hw.col0
        blocks = msi_valid[fr:fr + n_r * s, fc:fc + n_c * s].reshape(n_r, s, n_c, s).all(axis=(1, 3))
        lr = np.asarray(self.read_lr(r0, c0, n_r, n_c), np.float32)
        lok = np.isfinite(lr)
        if self.dead_lr is not None and self.dead_lr.any():
            lr = np.where(self.dead_lr[:, None, None], np.float32(0), lr)
            lok[self.dead_lr] = True
        lr_valid = lok.all(axis=0) & blocks
        msi = self._fill(msi, msi_valid, None if self.params is None else self.params.msi_mean)
        lr = self._fill(lr, lr_valid, None if self.params is None else self.params.lr_mean)
        ms_lr = degrade_spatial_window(msi, s, self.psf, hw.pad)
        return _Block(r0, c0, lr, lr_valid, ms_lr, msi, msi_valid, hw.row0, hw.col0)

    @staticmethod
    def _fill(cube: np.ndarray, valid: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
        if valid.any():
            return fill_nearest(cube, valid)
        f = np.zeros(cube.shape[0], np.float32) if mean is None else mean.astype(np.float32)
        return np.broadcast_to(f[:, None, None], cube.shape).copy()

    def _lr_range(self, start: int, n: int, axis: int) -> tuple[int, int]:
        idx, _ = cubic_taps(self.lr_shape[axis], self.scale, offset=start, n_out=n)
        return int(idx.min()), int(idx.max()) + 1

    def _hr(self, row0: int, col0: int, rows: int, cols: int):
        """``(up, msi_low, msi, hr_valid, block)`` over an HR window (bands, rows, cols) from one block read;
        ``block`` is that read (:class:`_Block`, on the LR pixels the window's bicubic taps reach)."""
        s = self.scale
        if row0 < 0 or col0 < 0 or rows < 1 or cols < 1 or row0 + rows > self.hr_shape[0] or col0 + cols > self.hr_shape[1]:
            raise ValueError(f"HR window ({row0}, {col0}, {rows}, {cols}) is outside the {self.hr_shape} grid")
        lr0, lr1 = self._lr_range(row0, rows, 0)
        lc0, lc1 = self._lr_range(col0, cols, 1)
        b = self._block(lr0, lc0, lr1 - lr0, lc1 - lc0)
        ri, rw = cubic_taps(self.lr_shape[0], s, offset=row0, n_out=rows)
        ci, cw = cubic_taps(self.lr_shape[1], s, offset=col0, n_out=cols)

        def interp(cube: np.ndarray) -> np.ndarray:
            tmp = np.einsum("brkc,rk->brc", cube[:, ri - lr0, :], rw)
            return np.einsum("brck,ck->brc", tmp[:, :, ci - lc0], cw).astype(np.float32)

        hr = (slice(row0 - b.msi_r0, row0 - b.msi_r0 + rows), slice(col0 - b.msi_c0, col0 - b.msi_c0 + cols))
        own_r = np.arange(row0, row0 + rows) // s - lr0
        own_c = np.arange(col0, col0 + cols) // s - lc0
        valid = b.msi_valid[hr] & b.lr_valid[own_r][:, own_c]
        return interp(b.lr), interp(b.ms_lr), b.msi[(slice(None), *hr)], valid, b

    # ------------------------------------------------------------------ fit and apply

    def fit(self, block: int | None = None, max_fit_lr_pixels: int = MAX_FIT_LR_PIXELS, progress=None) -> GLPFit:
        """Fit the pan weights and gains from sums over LR blocks of ``block`` pixels (default: about 192 HR
        pixels a side, so a block's working arrays stay the size of a tile's at every scale).

        ``progress(fraction, message)`` is called after each block (it may raise to cancel).
        Raises ``ValueError`` when no block has a valid LR pixel.
        """
        rows, cols = self.lr_shape
        block = max(8, 192 // self.scale) if block is None else int(block)
        grid = [(r, c) for r in range(0, rows, block) for c in range(0, cols, block)]
        n_pick = len(grid) if rows * cols <= max_fit_lr_pixels else max(1, max_fit_lr_pixels // (block * block))
        picked = [grid[i] for i in np.unique(np.linspace(0, len(grid) - 1, n_pick).round().astype(int))]
        acc = None
        for k, (r, c) in enumerate(picked):
            n_r, n_c = min(block, rows - r), min(block, cols - c)
            acc = self._accumulate(acc, r, c, n_r, n_c, *self._hr(r * self.scale, c * self.scale, n_r * self.scale,
                                                                  n_c * self.scale))
            if progress is not None:
                progress((k + 1) / len(picked), f"fitting MTF-GLP-HS, block {k + 1}/{len(picked)}")
        if acc is None:
            raise ValueError("no valid LR-HSI pixel (every LR block touches nodata)")
        self.params = acc.solve((len(picked), len(grid)))
        return self.params

    @staticmethod
    def _accumulate(acc, r: int, c: int, n_r: int, n_c: int, up, low, msi, hv, b: _Block):
        """Add LR block ``(r, c, n_r, n_c)`` to the sums, from the read of its HR footprint (:meth:`_hr`)."""
        sl = (slice(None), slice(r - b.r0, r - b.r0 + n_r), slice(c - b.c0, c - b.c0 + n_c))
        lv = b.lr_valid[sl[1:]].reshape(-1)
        if not lv.any():
            return acc
        ms_lr, lr = b.ms_lr[sl], b.lr[sl]
        design = np.vstack([ms_lr.reshape(ms_lr.shape[0], -1)[:, lv], np.ones(lv.sum())]).astype(np.float64)
        y = lr.reshape(lr.shape[0], -1)[:, lv].astype(np.float64)
        hvf = hv.reshape(-1)
        u = up.reshape(up.shape[0], -1)[:, hvf].astype(np.float64)
        lo = low.reshape(low.shape[0], -1)[:, hvf].astype(np.float64)
        if acc is None:
            acc = _Sums(y.mean(axis=1), design[:-1].mean(axis=1), design.shape[0], y.shape[0])
        acc.add(design, y, u, lo)
        return acc

    def _fuse(self, up: np.ndarray, low: np.ndarray, msi: np.ndarray) -> np.ndarray:
        p = self.params
        detail = np.tensordot(p.coef.T.astype(np.float32), msi - low, axes=(1, 0))
        return up + p.gains[:, None, None].astype(np.float32) * detail

    def window(self, row0: int, col0: int, rows: int, cols: int, with_valid: bool = False):
        """The fusion over an HR window: float32 ``(bands, rows, cols)``, NaN-free.

        With ``with_valid``, also the ``(rows, cols)`` mask of pixels whose MSI pixel and LR pixel
        (every band but the dead ones) are valid.
        """
        if self.params is None:
            raise RuntimeError("GLPStream.fit() must run before window()")
        up, low, msi, valid, _ = self._hr(row0, col0, rows, cols)
        fused = self._fuse(up, low, msi)
        return (fused, valid) if with_valid else fused

    def upsampled(self, row0: int, col0: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
        """The bicubic upsampling of the nodata-filled LR-HSI over an HR window and the validity mask
        (as :meth:`window`); needs no fit."""
        up, _, _, valid, _ = self._hr(row0, col0, rows, cols)
        return up, valid


class _Sums:
    """Float64 sums for the regression (normal equations) and the gains, centred on a first estimate."""

    def __init__(self, lr_ref: np.ndarray, msi_ref: np.ndarray, n_design: int, bands: int):
        self.lr_ref, self.msi_ref = lr_ref, msi_ref
        self.ata = np.zeros((n_design, n_design))
        self.aty = np.zeros((n_design, bands))
        self.n_lr = 0
        self.n = 0
        self.su = np.zeros(bands)
        self.sl = np.zeros(n_design - 1)
        self.sul = np.zeros((bands, n_design - 1))
        self.sll = np.zeros((n_design - 1, n_design - 1))

    def add(self, design: np.ndarray, y: np.ndarray, u: np.ndarray, lo: np.ndarray) -> None:
        """Add one block: ``design`` ``(msi_bands + 1, n)`` and ``y`` ``(bands, n)`` on valid LR pixels,
        ``u`` ``(bands, m)`` and ``lo`` ``(msi_bands, m)`` on valid HR pixels (float64, centred in place)."""
        a = design
        a[:-1] -= self.msi_ref[:, None]
        y -= self.lr_ref[:, None]
        self.ata += a @ a.T
        self.aty += a @ y.T
        self.n_lr += y.shape[1]
        u -= self.lr_ref[:, None]
        lo -= self.msi_ref[:, None]
        uc, lc = u, lo
        self.n += uc.shape[1]
        self.su += uc.sum(axis=1)
        self.sl += lc.sum(axis=1)
        self.sul += uc @ lc.T
        self.sll += lc @ lc.T

    def solve(self, blocks: tuple[int, int]) -> GLPFit:
        coef = np.linalg.lstsq(self.ata, self.aty, rcond=None)[0][:-1]  # (msi_bands, bands)
        n = max(self.n, 1)
        mu_u, mu_l = self.su / n, self.sl / n
        cov_ul = self.sul / n - np.outer(mu_u, mu_l)
        cov_ll = self.sll / n - np.outer(mu_l, mu_l)
        cov = np.einsum("bm,mb->b", cov_ul, coef)
        var = np.einsum("mb,mk,kb->b", coef, cov_ll, coef)
        gains = np.divide(cov, var, out=np.zeros_like(cov), where=var > 1e-12 * max(float(var.max()), 1e-300))
        return GLPFit(coef, gains, self.lr_ref + mu_u, self.msi_ref + mu_l, self.n_lr, blocks)


def mtf_glp_hs(lr_hsi: np.ndarray, hr_msi: np.ndarray, scale: int, srf=None, psf=None, valid=None,
               **opts) -> np.ndarray:
    """Fuse ``lr_hsi`` ``(bands, r, c)`` and ``hr_msi`` ``(msi_bands, r*scale, c*scale)`` by MTF-GLP-HS.

    The whole area at once (one block, one window of :class:`GLPStream`); ``valid`` is the HR-grid
    ``(rows, cols)`` mask (False = nodata). ``srf`` is not used. Memory: about three float32
    ``(bands, r*scale, c*scale)`` cubes. Returns float32, NaN-free.
    """
    x = prepare_inputs(lr_hsi, hr_msi, scale, valid)
    lr = np.where(x.lr_valid[None], x.lr, np.float32(np.nan))
    msi = np.where(x.hr_valid[None], x.msi, np.float32(np.nan))
    stream = GLPStream(_array_reader(lr), _array_reader(msi), lr.shape[1:], scale, psf)
    up, low, hr, hv, b = stream._hr(0, 0, *msi.shape[1:])  # one read and one pyramid serve the fit and the fusion
    acc = stream._accumulate(None, 0, 0, *lr.shape[1:], up, low, hr, hv, b)
    if acc is None:
        raise ValueError("no valid LR-HSI pixel (every LR block touches nodata)")
    stream.params = acc.solve((1, 1))
    return stream._fuse(up, low, hr)


def _array_reader(cube: np.ndarray) -> Reader:
    def read(r0: int, c0: int, rows: int, cols: int) -> np.ndarray:
        return cube[:, r0:r0 + rows, c0:c0 + cols]

    return read
