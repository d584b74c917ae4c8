"""Full-reference quality metrics for fused hyperspectral images (numpy + scipy.ndimage).

Every metric takes ``ref`` and ``est`` ``(bands, rows, cols)``, computes in float64, and accepts
``border`` (pixels dropped on each side before scoring, e.g. the ``scale`` px edge that the
degradation's padding touches) and ``valid``, an optional ``(rows, cols)`` bool mask of the pixels
to score (``False`` = nodata; pixels with a non-finite value in either image are always excluded).

Conventions (those of the HSR literature, e.g. Yokoya et al. 2017 and the HSR-Diff paper):

* :func:`psnr` is per band with the reference band's maximum as the peak, averaged over bands
  ("mean band PSNR"); :func:`psnr_cube` uses one MSE and one peak for the whole cube.
* :func:`ssim` is Wang et al. (2004): Gaussian window sigma 1.5 (11 taps), K1 = 0.01, K2 = 0.03,
  per band with the same peak as :func:`psnr`, averaged; it equals
  ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=peak)`` band by band.
* :func:`sam` is the mean spectral angle in degrees over pixels where both spectra are non-zero.
* :func:`ergas` is ``100 / scale * sqrt(mean_b(RMSE_b^2 / mean_b(ref)^2))``.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter, uniform_filter

__all__ = ["psnr", "psnr_cube", "ssim", "sam", "ergas", "rmse", "cc", "uiqi", "evaluate", "METRICS"]

_SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5  # 11-tap window, as Wang et al. and skimage
_UIQI_BLOCK = 32


def _prep(ref, est, border: int, valid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop ``border`` and return float64 ``ref, est`` and the ``(rows, cols)`` mask of scored pixels."""
    ref = np.asarray(ref, dtype=np.float64)
    est = np.asarray(est, dtype=np.float64)
    if ref.ndim == 2:
        ref, est = ref[None], est[None]
    if ref.shape != est.shape or ref.ndim != 3:
        raise ValueError(f"reference {ref.shape} and estimate {est.shape} must both be (bands, rows, cols)")
    mask = np.ones(ref.shape[1:], dtype=bool) if valid is None else np.asarray(valid, dtype=bool).copy()
    if mask.shape != ref.shape[1:]:
        raise ValueError(f"valid mask {mask.shape} does not match the image {ref.shape[1:]}")
    mask &= np.all(np.isfinite(ref), axis=0) & np.all(np.isfinite(est), axis=0)
    if border:
        b = int(border)
        ref, est, mask = ref[:, b:-b, b:-b], est[:, b:-b, b:-b], mask[b:-b, b:-b]
    if not mask.any():
        raise ValueError("no valid pixel left to score")
    return ref, est, mask


def _peaks(ref: np.ndarray, mask: np.ndarray, data_range) -> np.ndarray:
    """Per-band peak: ``data_range`` if given, else the band maximum (the range if the max is <= 0)."""
    if data_range is not None:
        return np.full(ref.shape[0], float(data_range))
    vals = ref[:, mask]
    peak = vals.max(axis=1)
    return np.where(peak > 0, peak, vals.max(axis=1) - vals.min(axis=1))


def psnr(ref, est, data_range: float | None = None, border: int = 0, valid=None) -> float:
    """Mean over bands of ``10 log10(peak_b^2 / MSE_b)`` in dB, ``peak_b`` = reference band max
    (or ``data_range``). Identical bands give ``inf``."""
    ref, est, mask = _prep(ref, est, border, valid)
    mse = np.mean((ref[:, mask] - est[:, mask]) ** 2, axis=1)
    peak = _peaks(ref, mask, data_range)
    with np.errstate(divide="ignore"):
        return float(np.mean(10.0 * np.log10(peak**2 / mse)))


def psnr_cube(ref, est, data_range: float | None = None, border: int = 0, valid=None) -> float:
    """Whole-cube PSNR in dB: one MSE over all bands and pixels, peak = reference max (or ``data_range``)."""
    ref, est, mask = _prep(ref, est, border, valid)
    mse = np.mean((ref[:, mask] - est[:, mask]) ** 2)
    peak = float(data_range) if data_range is not None else float(ref[:, mask].max())
    with np.errstate(divide="ignore"):
        return float(10.0 * np.log10(peak**2 / mse))


def ssim(ref, est, data_range: float | None = None, border: int = 0, valid=None) -> float:
    """Mean over bands of the mean SSIM map (Wang et al. 2004; see the module docstring).

    The map is averaged over pixels whose whole 11 x 11 window lies inside the scored area and on
    valid pixels (the 5 px margin is dropped, as skimage and MATLAB do).
    """
    ref, est, mask = _prep(ref, est, border, valid)
    inner = _full_windows(mask, 2 * int(_SSIM_TRUNCATE * _SSIM_SIGMA + 0.5) + 1)
    if not inner.any():
        raise ValueError("no pixel has a full 11 x 11 valid window for SSIM")
    peak = _peaks(ref, mask, data_range)
    x_all = np.where(mask, ref, 0.0)
    y_all = np.where(mask, est, 0.0)
    out = []
    for b in range(ref.shape[0]):
        c1, c2 = (0.01 * peak[b]) ** 2, (0.03 * peak[b]) ** 2
        f = _gauss
        x, y = x_all[b], y_all[b]
        ux, uy = f(x), f(y)
        vx = f(x * x) - ux * ux
        vy = f(y * y) - uy * uy
        vxy = f(x * y) - ux * uy
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
        out.append(s[inner].mean())
    return float(np.mean(out))


def _gauss(x: np.ndarray) -> np.ndarray:
    return gaussian_filter(x, _SSIM_SIGMA, truncate=_SSIM_TRUNCATE, mode="reflect")


def _box(x: np.ndarray, size: int) -> np.ndarray:
    return uniform_filter(x, size, mode="constant")


def _full_windows(mask: np.ndarray, size: int) -> np.ndarray:
    """Pixels whose ``size x size`` window (scipy's placement) lies on valid pixels inside the image."""
    return _box(mask.astype(np.float64), size) > 1.0 - 1e-9


def sam(ref, est, border: int = 0, valid=None) -> float:
    """Mean spectral angle in degrees; pixels where either spectrum has zero norm are excluded."""
    ref, est, mask = _prep(ref, est, border, valid)
    x, y = ref[:, mask], est[:, mask]
    nx, ny = np.linalg.norm(x, axis=0), np.linalg.norm(y, axis=0)
    keep = (nx > 0) & (ny > 0)
    if not keep.any():
        raise ValueError("no pixel with non-zero spectra for SAM")
    cos = np.sum(x[:, keep] * y[:, keep], axis=0) / (nx[keep] * ny[keep])
    return float(np.degrees(np.mean(np.arccos(np.clip(cos, -1.0, 1.0)))))


def ergas(ref, est, scale: float, border: int = 0, valid=None) -> float:
    """ERGAS (Wald 2000): ``100 / scale * sqrt(mean_b(RMSE_b^2 / mu_b^2))``, ``scale`` = LR/HR pixel size."""
    ref, est, mask = _prep(ref, est, border, valid)
    x, y = ref[:, mask], est[:, mask]
    mse = np.mean((x - y) ** 2, axis=1)
    mu2 = np.mean(x, axis=1) ** 2
    return float(100.0 / scale * np.sqrt(np.mean(mse / mu2)))


def rmse(ref, est, border: int = 0, valid=None) -> float:
    """Root mean squared error over all bands and scored pixels, in the data's units."""
    ref, est, mask = _prep(ref, est, border, valid)
    return float(np.sqrt(np.mean((ref[:, mask] - est[:, mask]) ** 2)))


def cc(ref, est, border: int = 0, valid=None) -> float:
    """Mean over bands of the Pearson correlation coefficient (constant bands give 1 if equal, else 0)."""
    ref, est, mask = _prep(ref, est, border, valid)
    x, y = ref[:, mask], est[:, mask]
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    num = np.sum(x * y, axis=1)
    den = np.sqrt(np.sum(x * x, axis=1) * np.sum(y * y, axis=1))
    same = np.all(np.isclose(x, y), axis=1)
    return float(np.mean(np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(same, 1.0, 0.0))))


def uiqi(ref, est, block: int = _UIQI_BLOCK, border: int = 0, valid=None) -> float:
    """Universal image quality index Q (Wang & Bovik 2002), mean over ``block x block`` sliding
    windows (step 1) and over bands, as in their ``img_qi.m``; windows must be fully valid."""
    ref, est, mask = _prep(ref, est, border, valid)
    block = int(min(block, *ref.shape[1:]))
    inner = _full_windows(mask, block)
    if not inner.any():
        raise ValueError(f"no fully valid {block} x {block} window for UIQI")
    out = []
    for b in range(ref.shape[0]):
        x, y = np.where(mask, ref[b], 0.0), np.where(mask, est[b], 0.0)
        ux, uy = _box(x, block), _box(y, block)
        vx = _box(x * x, block) - ux * ux
        vy = _box(y * y, block) - uy * uy
        vxy = _box(x * y, block) - ux * uy
        num = 4 * vxy * ux * uy
        den_v, den_m = vx + vy, ux**2 + uy**2
        den = den_v * den_m
        q = np.ones_like(x)
        both = den > 0
        q[both] = num[both] / den[both]
        only_m = (den_v <= 0) & (den_m > 0)
        q[only_m] = 2 * ux[only_m] * uy[only_m] / den_m[only_m]
        out.append(q[inner].mean())
    return float(np.mean(out))


def evaluate(ref, est, scale: float, border: int = 0, valid=None) -> dict[str, float]:
    """All metrics in one dict: ``psnr`` (mean band PSNR, dB), ``psnr_cube`` (dB), ``ssim``, ``sam``
    (degrees), ``ergas``, ``rmse`` (data units), ``cc``, ``uiqi``."""
    kw = {"border": border, "valid": valid}
    return {
        "psnr": psnr(ref, est, **kw),
        "psnr_cube": psnr_cube(ref, est, **kw),
        "ssim": ssim(ref, est, **kw),
        "sam": sam(ref, est, **kw),
        "ergas": ergas(ref, est, scale, **kw),
        "rmse": rmse(ref, est, **kw),
        "cc": cc(ref, est, **kw),
        "uiqi": uiqi(ref, est, **kw),
    }


METRICS = ("psnr", "psnr_cube", "ssim", "sam", "ergas", "rmse", "cc", "uiqi")
