"""Estimate the spectral response and the PSF width from an observed pair (numpy + scipy).

Both estimators use that spatial and spectral degradation commute: with ``S`` the blur +
decimation and ``R`` the response matrix, ``S(MSI) = S(R HSI) = R S(HSI) = R LR_HSI``. This is the
relative-response estimation of HySure (Simoes et al., IEEE TGRS 2015, ``sen_resp_est``) and of
Yokoya's CNMF toolbox (``estR``), restricted here to a non-negative fit and a Gaussian PSF.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize, minimize_scalar, nnls

from .degrade import degrade_spatial, degrade_spectral
from .psf import gaussian_psf, sigma_for_scale

__all__ = ["estimate_srf", "estimate_psf_sigma", "Registration", "estimate_registration"]


def estimate_srf(lr_hsi: np.ndarray, hr_msi: np.ndarray, scale: int, psf=None, valid: np.ndarray | None = None,
                 support: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative least-squares response ``R`` with ``S(hr_msi) ~= R @ lr_hsi``.

    ``lr_hsi`` ``(hsi_bands, r, c)``, ``hr_msi`` ``(msi_bands, r*scale, c*scale)`` (extra HR rows/cols
    are cropped). ``psf``: the PSF used to bring the MSI onto the HSI grid (default Gaussian,
    FWHM = ``scale``). ``valid``: optional LR-grid ``(r, c)`` mask of pixels to fit on (non-finite
    pixels are always dropped). ``support``: optional ``(msi_bands, hsi_bands)`` bool mask of the
    HSI bands each MSI band may use (HySure's band-range constraint); it conditions the fit much
    better, since neighbouring HSI bands are nearly collinear.

    The fit is exact on noise-free data; with noise the matrix itself is poorly determined (many
    near-equivalent combinations of neighbouring bands) although ``R @ HSI`` is still predicted well.

    Returns ``(matrix, residual)``: ``matrix`` float64 ``(msi_bands, hsi_bands)`` in the MSI's units,
    i.e. its row sums are the radiometric gain between the images (1 for a simulated pair; divide
    by them for a unit-sum response), and ``residual`` ``(msi_bands,)`` the relative RMS misfit
    ``||R Y - S(M)|| / ||S(M)||`` per band.
    """
    y, m = _fit_pixels(lr_hsi, degrade_spatial(hr_msi[:, :lr_hsi.shape[1] * scale, :lr_hsi.shape[2] * scale], scale, psf),
                       valid)
    n_hsi = y.shape[0]
    a = y.T  # (pixels, hsi_bands)
    matrix = np.zeros((m.shape[0], n_hsi))
    residual = np.zeros(m.shape[0])
    for i in range(m.shape[0]):
        cols = np.arange(n_hsi) if support is None else np.flatnonzero(np.asarray(support)[i])
        x, _ = nnls(a[:, cols], m[i], maxiter=50 * n_hsi)
        matrix[i, cols] = x
        residual[i] = np.linalg.norm(a @ matrix[i] - m[i]) / max(np.linalg.norm(m[i]), 1e-30)
    return matrix, residual


def estimate_psf_sigma(lr_hsi: np.ndarray, hr_msi: np.ndarray, scale: int, srf_matrix,
                       bounds: tuple[float, float] | None = None, valid: np.ndarray | None = None) -> tuple[float, float]:
    """Gaussian PSF sigma (HR pixels) that best explains ``R @ lr_hsi`` from ``S_sigma(hr_msi)``.

    A bounded 1-D search (coarse grid, then Brent) over ``bounds`` (default ``(0.1, 1.5) * scale``).
    At each sigma a per-band gain and offset are fitted by least squares, so a radiometric
    mismatch between the sensors does not bias the width. Returns ``(sigma, residual)`` with
    ``residual`` the relative RMS misfit at the optimum. ``valid`` as in :func:`estimate_srf`.
    """
    target = degrade_spectral(lr_hsi, srf_matrix)
    hr = hr_msi[:, :lr_hsi.shape[1] * scale, :lr_hsi.shape[2] * scale]
    lo, hi = bounds if bounds is not None else (0.1 * scale, 1.5 * scale)

    def cost(sigma: float) -> float:
        deg = degrade_spatial(hr, scale, gaussian_psf(scale, sigma))
        x, t = _fit_pixels(deg, target, valid)
        err = 0.0
        for b in range(x.shape[0]):
            a = np.stack([x[b], np.ones_like(x[b])], axis=1)
            coef, *_ = np.linalg.lstsq(a, t[b], rcond=None)
            err += float(np.sum((a @ coef - t[b]) ** 2))
        return float(np.sqrt(err / max(np.sum(t**2), 1e-30)))

    grid = np.linspace(lo, hi, 15)
    costs = [cost(s) for s in grid]
    k = int(np.argmin(costs))
    a, b = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    res = minimize_scalar(cost, bounds=(a, b), method="bounded", options={"xatol": 1e-3 * sigma_for_scale(scale)})
    if res.fun <= costs[k]:
        return float(res.x), float(res.fun)
    return float(grid[k]), float(costs[k])


@dataclass(frozen=True)
class Registration:
    """The pair's spatial degradation: ``dy``, ``dx`` (HR pixels) by which each LR pixel's footprint
    sits off the centre of its HR block (down / right positive), the Gaussian PSF ``sigma`` (HR
    pixels), ``residual`` (relative RMS misfit of the LR-HSI explained by the degraded MSI at the
    optimum) and ``residual_centred`` (the same with no shift and the nominal sigma), and the
    ``pixels`` (LR) the fit used."""

    dy: float
    dx: float
    sigma: float
    residual: float
    residual_centred: float
    pixels: int

    def psf(self, scale: int) -> np.ndarray:
        """The kernel of this estimate (:func:`core.sensor.psf.gaussian_psf` with the shift)."""
        return gaussian_psf(scale, self.sigma, (self.dy, self.dx))


def estimate_registration(lr_hsi: np.ndarray, hr_msi: np.ndarray, scale: int, max_shift: float = 2.5,
                          sigma_bounds: tuple[float, float] | None = None, components: int = 8,
                          max_lr_pixels: int = 128 * 128, valid: np.ndarray | None = None) -> Registration:
    """Sub-pixel misregistration and PSF width of a pair, from the pair alone (no SRF needed).

    The LR-HSI's first ``components`` principal components are regressed (with an offset) on the
    HR-MSI degraded by a shifted Gaussian PSF (:func:`core.sensor.psf.gaussian_psf` with ``shift``);
    the shift and width that leave the smallest misfit are the estimate (variable projection: the
    spectral weights are solved exactly at each trial). A grid over shifts of +-``max_shift`` HR
    pixels (half-pixel steps) at the nominal width, then Nelder-Mead over ``(dy, dx, sigma)``.
    Inputs as :func:`estimate_srf`; a central crop of at most ``max_lr_pixels`` LR pixels is used.
    """
    lr = np.asarray(lr_hsi, np.float32)
    rows, cols = lr.shape[1:]
    side = int(np.sqrt(max_lr_pixels))
    r0, c0 = max(0, (rows - side) // 2), max(0, (cols - side) // 2)
    r1, c1 = min(rows, r0 + side), min(cols, c0 + side)
    lr = lr[:, r0:r1, c0:c1]
    hr = np.asarray(hr_msi, np.float32)[:, r0 * scale:r1 * scale, c0 * scale:c1 * scale]
    keep = np.isfinite(lr).all(axis=0)
    if valid is not None:
        keep &= np.asarray(valid, bool)[r0:r1, c0:c1]
    hr_ok = np.isfinite(hr).all(axis=0).reshape(r1 - r0, scale, c1 - c0, scale).all(axis=(1, 3))
    keep &= hr_ok
    margin = int(np.ceil(max_shift / scale)) + 1  # LR pixels whose kernel may reach the crop's reflected edge
    keep[:margin], keep[-margin:], keep[:, :margin], keep[:, -margin:] = False, False, False, False
    if keep.sum() < 4 * (hr.shape[0] + 2):
        raise ValueError(f"too few valid LR pixels ({int(keep.sum())}) to estimate the registration")
    hr = np.where(np.isfinite(hr), hr, np.float32(0))
    y = lr.reshape(lr.shape[0], -1)[:, keep.reshape(-1)].astype(np.float64)
    y -= y.mean(axis=1, keepdims=True)
    u, sv, _ = np.linalg.svd(y @ y.T)
    y = (u[:, :components].T @ y)  # (components, pixels): the LR's main spatial content
    total = float(np.sum(y ** 2)) or 1.0
    lo, hi = sigma_bounds if sigma_bounds is not None else (0.25 * scale, 1.0 * scale)
    nominal = sigma_for_scale(scale)

    def cost(p: np.ndarray) -> float:
        dy, dx, sigma = (float(v) for v in p)
        if not lo <= sigma <= hi or abs(dy) > max_shift or abs(dx) > max_shift:
            return 1.0 + abs(dy) + abs(dx)
        deg = degrade_spatial(hr, scale, gaussian_psf(scale, sigma, (dy, dx)))
        a = deg.reshape(deg.shape[0], -1)[:, keep.reshape(-1)].astype(np.float64)
        a = np.vstack([a - a.mean(axis=1, keepdims=True), np.ones(a.shape[1])])
        coef, *_ = np.linalg.lstsq(a.T, y.T, rcond=None)
        return float(np.sqrt(np.sum((a.T @ coef - y.T) ** 2) / total))

    centred = cost(np.array([0.0, 0.0, nominal]))
    steps = np.arange(-max_shift, max_shift + 1e-9, 0.5)
    grid = [(cost(np.array([dy, dx, nominal])), dy, dx) for dy in steps for dx in steps]
    _, dy0, dx0 = min(grid)
    best = None
    for s0 in (nominal, 0.6 * nominal + 0.4 * lo, 0.6 * nominal + 0.4 * hi):
        res = minimize(cost, np.array([dy0, dx0, s0]), method="Nelder-Mead",
                       options={"xatol": 2e-3, "fatol": 1e-9, "initial_simplex": np.array(
                           [[dy0, dx0, s0], [dy0 + 0.25, dx0, s0], [dy0, dx0 + 0.25, s0], [dy0, dx0, s0 * 1.15]])})
        if best is None or res.fun < best.fun:
            best = res
    dy, dx, sigma = (float(v) for v in best.x)
    return Registration(dy, dx, sigma, float(best.fun), centred, int(keep.sum()))


def _fit_pixels(a: np.ndarray, b: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Flatten two same-grid cubes to ``(bands, pixels)`` float64 over pixels finite in both and valid."""
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"grids differ: {a.shape[1:]} vs {b.shape[1:]}")
    a2 = a.reshape(a.shape[0], -1).astype(np.float64)
    b2 = b.reshape(b.shape[0], -1).astype(np.float64)
    keep = np.all(np.isfinite(a2), axis=0) & np.all(np.isfinite(b2), axis=0)
    if valid is not None:
        keep &= np.asarray(valid, dtype=bool).reshape(-1)
    if keep.sum() < 2:
        raise ValueError("fewer than two valid pixels to fit on")
    return a2[:, keep], b2[:, keep]
