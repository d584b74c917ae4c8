"""Estimate the spectral response and the PSF width from an observed pair (numpy + scipy).

Both estimators use that spatial and spectral degradation commute: with ``S`` the blur +
decimation and ``R`` the response matrix, ``S(MSI) = S(R HSI) = R S(HSI) = R LR_HSI``. This is the
relative-response estimation of HySure (Simoes et al., IEEE TGRS 2015, ``sen_resp_est``) and of
Yokoya's CNMF toolbox (``estR``), restricted here to a non-negative fit and a Gaussian or box PSF.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize, minimize_scalar, nnls

from .degrade import degrade_spatial, degrade_spectral
from .psf import PSF_SHAPES, gaussian_psf, psf_kernel, sigma_for_scale

__all__ = ["estimate_srf", "estimate_psf_sigma", "Registration", "estimate_registration", "describe_psf",
           "search_psf", "BOX_PREFERENCE"]


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


BOX_SIGMA = 1.0 / math.sqrt(12.0)
"""Standard deviation of a box of side 1 (continuous): a box PSF of side ``w`` HR pixels has ``sigma = w / sqrt(12)``."""


@dataclass(frozen=True)
class Registration:
    """The pair's spatial degradation: ``dy``, ``dx`` (HR pixels) by which each LR pixel's footprint
    sits off the centre of its HR block (down / right positive), the PSF ``shape`` (``gaussian`` or ``box``,
    :data:`core.sensor.psf.PSF_SHAPES`), its standard deviation ``sigma`` (HR pixels; a box's is
    ``side / sqrt(12)``) and, for a box, its ``side`` (HR pixels), ``residual`` (relative RMS misfit of the
    degraded MSI explained by the LR-HSI at the optimum, each band relative to its variance) and
    ``residual_centred`` (the same with no shift and the nominal Gaussian), and the ``pixels`` (LR) the fit used."""

    dy: float
    dx: float
    sigma: float
    residual: float
    residual_centred: float
    pixels: int
    shape: str = "gaussian"
    side: float | None = None

    def psf(self, scale: int) -> np.ndarray:
        """The kernel of this estimate (:func:`core.sensor.psf.psf_kernel` with the shift)."""
        width = self.sigma if self.shape == "gaussian" else self.side
        return psf_kernel(self.shape, scale, width, (self.dy, self.dx))

    def describe(self) -> str:
        """This estimate in words (:func:`describe_psf`)."""
        return describe_psf(self.dy, self.dx, self.shape, self.sigma, self.side)


def describe_psf(dy: float, dx: float, shape: str, sigma: float, side: float | None) -> str:
    """``offset dy +0.500 dx +0.500 HR px, Gaussian PSF sigma 1.700 HR px`` (or ``box PSF side 4.000 HR px``)."""
    size = f"Gaussian PSF sigma {sigma:.3f}" if shape == "gaussian" else f"box PSF side {side:.3f}"
    return f"offset dy {dy:+.3f} dx {dx:+.3f} HR px, {size} HR px"


BOX_PREFERENCE = 1.0
"""A box PSF is chosen over the Gaussian when its misfit is below this factor times the Gaussian's: 1, the lower
misfit wins. Set on pairs the benchmark never scores (``bench/experiments/psf_shape.py``,
``bench/results/psf_shape.md``): all 120 Gaussian and 120 box pairs are classed right; 0.99 would class 7 boxes
wrong, 1.01 two Gaussians."""

SMALL_PAIR_PIXELS = 36
"""On a pair too small for the full border margin, the estimate uses every LR pixel but the outermost ring (whose
kernels read the crop's mirrored edge most) when that leaves at least this many pixels and three per unknown of
the regression: an EnMAP + Sentinel-2 pair of 8 x 8 LR pixels at x8 is then estimated to 0.15 HR px
(``tests/test_sensor.py``); an RGB pair of 6 x 6 LR pixels stays refused (errors of 0.3 px)."""


def estimate_registration(lr_hsi: np.ndarray, hr_msi: np.ndarray, scale: int, max_shift: float = 2.5,
                          sigma_bounds: tuple[float, float] | None = None, components: int = 20,
                          max_lr_pixels: int = 128 * 128, valid: np.ndarray | None = None,
                          shapes: tuple[str, ...] = PSF_SHAPES) -> Registration:
    """Sub-pixel misregistration, PSF shape and PSF width of a pair, from the pair alone (no SRF needed).

    Each band of the HR-MSI degraded by a shifted PSF (:func:`core.sensor.psf.psf_kernel` with ``shift``) is
    regressed (with an offset) on the LR-HSI's first ``components`` principal components (at most a third of
    the pixels used, less one); the shift and width that leave the smallest misfit, each band's relative to its
    variance, are the estimate (variable projection: the spectral weights are solved exactly at each trial).
    The regression runs this way round because the MSI lies in the HSI's spectral span (``MSI = R HSI``), so
    at the true PSF it is exact; regressing the LR-HSI on the MSI instead leaves what the MSI cannot explain,
    which the fit lowers by smoothing the MSI: that biases the width by +1 to +11 % and the offset by up to
    0.1 HR px (``bench/experiments/registration_direction.py``, ``bench/results/registration_direction.md``).
    A grid over shifts of +-``max_shift`` HR pixels (half-pixel steps) at the nominal
    Gaussian, then Nelder-Mead over ``(dy, dx, width)`` for each of ``shapes``: a Gaussian of ``sigma`` in
    ``sigma_bounds`` (default ``(0.25, 1.0) * scale`` HR px) and a pixel-integrated box of the same standard
    deviations (side ``sqrt(12)`` times). The box is chosen when its misfit is below :data:`BOX_PREFERENCE`
    times the Gaussian's. Inputs as :func:`estimate_srf`; a central crop of at most ``max_lr_pixels`` LR
    pixels is used, less a border of ``ceil(max_shift / scale) + 1`` LR pixels (one on small pairs:
    :data:`SMALL_PAIR_PIXELS`); ``ValueError`` when too few pixels remain.
    """
    unknown = set(shapes) - set(PSF_SHAPES)
    if unknown or not shapes:
        raise ValueError(f"PSF shapes must be some of {', '.join(PSF_SHAPES)}, got {shapes!r}")
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
    inner = _inside(keep, int(np.ceil(max_shift / scale)) + 1)  # LR pixels whose kernel stays off the reflected edge
    if inner.sum() >= 4 * (hr.shape[0] + 2):
        keep = inner
    else:
        keep = _inside(keep, 1)
        if keep.sum() < max(SMALL_PAIR_PIXELS, 3 * (hr.shape[0] + 1)):
            raise ValueError(f"too few valid LR pixels ({int(inner.sum())}) to estimate the registration")
    hr = np.where(np.isfinite(hr), hr, np.float32(0))
    y = lr.reshape(lr.shape[0], -1)[:, keep.reshape(-1)].astype(np.float64)
    y -= y.mean(axis=1, keepdims=True)
    u, _, _ = np.linalg.svd(y @ y.T)
    n = y.shape[1]
    k = min(components, y.shape[0], max(1, n // 3 - 1))
    span, _ = np.linalg.qr(np.vstack([u[:, :k].T @ y, np.ones(n)]).T)  # (pixels, k + 1): the LR-HSI's span
    lo, hi = sigma_bounds if sigma_bounds is not None else (0.25 * scale, 1.0 * scale)
    nominal = sigma_for_scale(scale)

    def cost(p: np.ndarray, shape: str = "gaussian") -> float:
        dy, dx, sigma = (float(v) for v in p)  # sigma: the PSF's standard deviation, whatever its shape
        if not lo <= sigma <= hi or abs(dy) > max_shift or abs(dx) > max_shift:
            return 1.0 + abs(dy) + abs(dx)
        width = sigma if shape == "gaussian" else sigma / BOX_SIGMA
        deg = degrade_spatial(hr, scale, psf_kernel(shape, scale, width, (dy, dx)))
        t = deg.reshape(deg.shape[0], -1)[:, keep.reshape(-1)].astype(np.float64)
        misfit = np.sum((t - (t @ span) @ span.T) ** 2, axis=1)
        spread = np.sum((t - t.mean(axis=1, keepdims=True)) ** 2, axis=1)
        return float(np.sqrt(np.mean(misfit / np.maximum(spread, 1e-30))))

    centred = cost(np.array([0.0, 0.0, nominal]))
    shape, fit = search_psf(cost, nominal, lo, hi, max_shift, shapes)
    dy, dx, sigma = (float(v) for v in fit.x)
    return Registration(dy, dx, sigma, float(fit.fun), centred, int(keep.sum()), shape,
                        None if shape == "gaussian" else sigma / BOX_SIGMA)


def search_psf(cost, nominal: float, lo: float, hi: float, max_shift: float, shapes: tuple[str, ...]):
    """``(shape, fit)``: the minimum of ``cost(np.array([dy, dx, sigma]), shape)`` (HR px; ``sigma`` the PSF's
    standard deviation) by a grid over half-pixel shifts at ``nominal``, then Nelder-Mead from three widths for each
    of ``shapes``; the box wins over the Gaussian below :data:`BOX_PREFERENCE` times its misfit. ``fit`` is scipy's
    ``OptimizeResult`` (``x = (dy, dx, sigma)``, ``fun`` the misfit)."""
    steps = np.arange(-max_shift, max_shift + 1e-9, 0.5)
    _, dy0, dx0 = min((cost(np.array([dy, dx, nominal])), dy, dx) for dy in steps for dx in steps)
    fits = {}
    for shape in shapes:
        for s0 in (nominal, 0.6 * nominal + 0.4 * lo, 0.6 * nominal + 0.4 * hi):
            res = minimize(cost, np.array([dy0, dx0, s0]), args=(shape,), method="Nelder-Mead",
                           options={"xatol": 2e-3, "fatol": 1e-9, "initial_simplex": np.array(
                               [[dy0, dx0, s0], [dy0 + 0.25, dx0, s0], [dy0, dx0 + 0.25, s0], [dy0, dx0, s0 * 1.15]])})
            if shape not in fits or res.fun < fits[shape].fun:
                fits[shape] = res
    shape = shapes[0] if len(fits) == 1 else (
        "box" if fits["box"].fun < BOX_PREFERENCE * fits["gaussian"].fun else "gaussian")
    return shape, fits[shape]


def _inside(mask: np.ndarray, margin: int) -> np.ndarray:
    """``mask`` with a border of ``margin`` pixels cleared."""
    out = np.zeros_like(mask)
    out[margin:mask.shape[0] - margin, margin:mask.shape[1] - margin] = mask[margin:mask.shape[0] - margin,
                                                                              margin:mask.shape[1] - margin]
    return out


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
