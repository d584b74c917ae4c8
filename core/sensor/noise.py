"""Noise of a hyperspectral cube, estimated from the cube alone (numpy).

Sensor noise is nearly independent from band to band while the signal is not: a band regressed on
its spectral neighbours leaves the noise (and whatever of the signal the neighbours do not explain)
in the residual. This is the regression step of HySime (Bioucas-Dias and Nascimento, 2008), on
every other band, or on a few neighbours either side when a small crop (a few hundred pixels of a
few hundred bands) would over-fit that regression. Spatial texture does not enter: a spatial estimator
(e.g. the median absolute deviation of the finest wavelet band) reads sharp detail as noise.

:func:`fit_denoiser` turns the estimate into a spectral denoiser of the LR-HSI (noise-whitened
principal components, shrunk by their Wiener gains above the Marchenko-Pastur edge), which
Super-resolve applies when the estimated SNR is below :data:`DENOISE_BELOW_DB`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DENOISE_BELOW_DB", "SpectralDenoiser", "band_noise_std", "fit_denoiser", "snr_db"]


PIXELS_PER_REGRESSOR = 10
"""With at least this many pixels per other band, each band is regressed on every other band (HySime's own
regression); with fewer, on its spectral neighbours only."""


def band_noise_std(cube: np.ndarray, neighbours: int = 3) -> np.ndarray:
    """The noise standard deviation of each band of ``cube`` ``(C, rows, cols)``, in its units, ``(C,)`` float64.

    Each band is regressed (least squares with an intercept) on every other band when the cube has
    :data:`PIXELS_PER_REGRESSOR` pixels per other band, else on the ``neighbours`` bands on either side
    (fewer at the ends of the spectrum). The residual's variance, with the degrees of freedom the fit used
    taken out, holds the band's noise plus its neighbours' noise carried by the fit (``sum_j coef_j^2``
    times theirs, noise independent between bands), taken to be the band's own: the estimate is that
    variance over ``1 + sum_j coef_j^2``. It is an upper bound on a cube without noise (the part of the
    signal its neighbours do not explain) and 0 for a cube with fewer than 2 bands. NaN pixels (in any
    band) are left out; ``ValueError`` when fewer pixels remain than the fit has unknowns.
    """
    cube = np.asarray(cube, dtype=np.float64)
    if cube.ndim != 3:
        raise ValueError(f"expected (bands, rows, cols), got shape {cube.shape}")
    c = cube.shape[0]
    x = cube.reshape(c, -1)
    x = x[:, np.isfinite(x).all(axis=0)]
    out = np.zeros(c)
    if c < 2:
        return out
    n = x.shape[1]
    if n < 3:
        raise ValueError(f"{n} valid pixels are too few to estimate the noise")
    live = np.flatnonzero(x.std(axis=1) > 0)  # a constant band has no noise to read, and no use as a regressor
    if len(live) < 2:
        return out
    x = x[live]
    c = len(live)
    if (c - 1) * PIXELS_PER_REGRESSOR <= n:
        # Every other band: the regression of band i leaves rss_i / n = 1 / P_ii, its coefficients are
        # -P_ij / P_ii, with P the inverse of the bands' covariance.
        d = x - x.mean(axis=1, keepdims=True)
        prec = np.linalg.pinv(d @ d.T / n, hermitian=True)
        diag = np.diag(prec)
        carried = (np.sum(prec ** 2, axis=1) - diag ** 2) / diag ** 2
        var = n / (n - c) / diag
    else:
        var, carried = np.zeros(c), np.zeros(c)
        for i in range(c):
            others = [j for j in range(max(0, i - neighbours), min(c, i + neighbours + 1)) if j != i]
            p = len(others) + 1
            if n <= p:
                raise ValueError(f"{n} valid pixels are too few to estimate the noise from {p} regressors")
            a = np.column_stack([x[others].T, np.ones(n)])
            coef, *_ = np.linalg.lstsq(a, x[i], rcond=None)
            r = x[i] - a @ coef
            var[i], carried[i] = r @ r / (n - p), np.sum(coef[:-1] ** 2)
    out[live] = np.sqrt(np.clip(var, 0.0, None) / (1.0 + carried))
    return out


DENOISE_BELOW_DB = 48.0
"""The LR-HSI is denoised when its estimated SNR (:func:`snr_db`) is below this. Set on pairs the benchmark never
scores (``bench/experiments/lr_denoise.py``): MTF-GLP-HS on the denoised LR-HSI gained at every SNR of 50 dB and
below and lost up to 0.34 dB on noise-free pairs, whose estimates read 51.5 dB and above."""


def snr_db(cube: np.ndarray, noise_std: np.ndarray) -> float:
    """The cube's SNR in dB: the median over bands of ``20 log10(|band mean| / noise std)`` (bands with no noise
    estimate left out; inf when none has one)."""
    mean = np.abs(np.nanmean(np.asarray(cube, np.float64).reshape(cube.shape[0], -1), axis=1))
    ok = noise_std > 0
    if not ok.any():
        return float("inf")
    return float(np.median(20.0 * np.log10(np.maximum(mean[ok], 1e-30) / noise_std[ok])))


@dataclass
class SpectralDenoiser:
    """A per-pixel linear map of the spectrum that removes the noise a cube's signal subspace does not explain.

    ``denoised = mean + matrix @ (spectrum - mean)`` on the bands in ``bands`` (the others pass through).
    ``matrix = S V diag(g) V^T S^-1``: ``S`` the bands' noise standard deviations, ``V`` the eigenvectors of the
    noise-whitened covariance with eigenvalues ``lam``; ``g = 1 - 1 / lam`` (the Wiener gain of a component whose
    noise variance is 1) above the Marchenko-Pastur edge ``(1 + sqrt(C / N))^2`` of ``C`` bands over ``N``
    pixels, which white noise alone reaches, and 0 below it.
    """

    bands: np.ndarray  # (C,) bool
    mean: np.ndarray  # (k,) the mean spectrum of the bands in ``bands``
    matrix: np.ndarray  # (k, k)
    snr_db: float
    rank: int  # components kept

    def apply(self, cube: np.ndarray) -> np.ndarray:
        """``cube`` ``(C, rows, cols)`` denoised, float32; a pixel with NaN in any of ``bands`` is left as it is."""
        out = np.array(cube, np.float32)
        sub = out[self.bands].reshape(int(self.bands.sum()), -1)  # a copy (boolean indexing)
        ok = np.isfinite(sub).all(axis=0)
        sub[:, ok] = self.mean[:, None] + self.matrix @ (sub[:, ok] - self.mean[:, None])
        out[self.bands] = sub.reshape((-1, *out.shape[1:]))
        return out

    def describe(self) -> str:
        return (f"LR-HSI SNR {self.snr_db:.1f} dB (estimated): denoised in its signal subspace ({self.rank} of "
                f"{int(self.bands.sum())} components kept, Marchenko-Pastur threshold, Wiener gains)")


def fit_denoiser(cube: np.ndarray, bands: np.ndarray | None = None,
                 below_db: float = DENOISE_BELOW_DB) -> tuple[SpectralDenoiser | None, float]:
    """``(denoiser, snr)``: the :class:`SpectralDenoiser` of ``cube`` ``(C, rows, cols)`` (its pixels free of NaN in
    ``bands``, default all) and its estimated SNR in dB, or ``(None, snr)`` when the SNR is at least ``below_db``
    or fewer than 2 bands remain. ``ValueError`` when too few pixels are free of NaN (:func:`band_noise_std`)."""
    cube = np.asarray(cube, np.float64)
    bands = np.ones(cube.shape[0], bool) if bands is None else np.asarray(bands, bool)
    if bands.sum() < 2:
        return None, float("inf")
    x = cube[bands].reshape(int(bands.sum()), -1)
    x = x[:, np.isfinite(x).all(axis=0)]
    sd = band_noise_std(x[:, :, None])
    snr = snr_db(x[:, :, None], sd)
    if not snr < below_db:
        return None, snr
    c, n = x.shape
    sd = np.maximum(sd, 1e-6 * np.maximum(np.abs(x).max(axis=1), 1e-30))  # a band with no noise read is kept whole
    mean = x.mean(axis=1)
    y = (x - mean[:, None]) / sd[:, None]
    lam, v = np.linalg.eigh(y @ y.T / n)
    keep = lam > (1.0 + np.sqrt(c / n)) ** 2
    g = np.where(keep, 1.0 - 1.0 / np.where(keep, lam, 1.0), 0.0)
    matrix = (sd[:, None] * v) @ (g[:, None] * v.T) / sd[None, :]
    return SpectralDenoiser(bands, mean, matrix, snr, int(keep.sum())), snr
