"""Quality metrics for fused hyperspectral images (numpy + scipy.ndimage): full-reference and no-reference.

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

No-reference (a real pair, no HR-HSI to compare with): the QNR of Alparone et al. (2008) as generalised to
hyperspectral-multispectral fusion (as in Vivone et al.'s pansharpening toolbox, with the MS image in
the place of the pan). :func:`block_q` is the Q index (UIQI) of every band pair of two cubes averaged
over non-overlapping blocks; :func:`d_lambda` compares the inter-band Q of the fused image with that
of the LR-HSI, :func:`d_s` the Q between each fused band and each MSI band with the same at the LR
scale, and :func:`qnr` combines them. Their inputs lie on two grids: HR ``(rows * scale, cols * scale)``
and LR ``(rows, cols)``; the caller brings the MSI onto the LR grid with the pair's PSF, and ``valid``
is an LR-grid mask (an LR pixel and its ``scale x scale`` HR pixels are scored together).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter, uniform_filter

__all__ = ["psnr", "psnr_cube", "ssim", "sam", "ergas", "rmse", "cc", "uiqi", "evaluate", "METRICS", "block_q",
           "spread_bands", "qnr_block", "d_lambda", "d_s", "qnr", "QNR_BANDS"]

_SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5  # 11-tap window, as Wang et al. and skimage
_UIQI_BLOCK = 32
QNR_BANDS = 32
"""At most this many HS bands (evenly spread) enter :func:`d_lambda`: its cost grows with their square."""


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
        out.append(_q_index(ux, uy, vx, vy, vxy)[inner].mean())
    return float(np.mean(out))


def _q_index(ux, uy, vx, vy, vxy) -> np.ndarray:
    """Q = 4 cov mu_x mu_y / ((var_x + var_y)(mu_x^2 + mu_y^2)) from the moments (arrays that broadcast).

    Where both variances are 0 it is the luminance term ``2 mu_x mu_y / (mu_x^2 + mu_y^2)``; where
    the means are 0 too, 1.
    """
    num, den_v, den_m, lum = np.broadcast_arrays(4 * vxy * ux * uy, vx + vy, ux**2 + uy**2, 2 * ux * uy)
    den = den_v * den_m
    q = np.ones(num.shape)
    both = den > 0
    q[both] = num[both] / den[both]
    only_m = (den_v <= 0) & (den_m > 0)
    q[only_m] = lum[only_m] / den_m[only_m]
    return q


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


def spread_bands(n: int, k: int = QNR_BANDS) -> np.ndarray:
    """``min(n, k)`` band indices spread evenly over ``0 .. n - 1``, first and last included: int ``(m,)``."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(int))


def qnr_block(scale: int) -> int:
    """The default QNR block side in LR pixels: about 32 HR pixels (the toolbox's ``S = 32``), at least 4."""
    return max(4, round(32 / scale))


def block_q(x, y, valid, block: int, min_fraction: float = 0.5) -> np.ndarray:
    """Q index (UIQI, Wang & Bovik 2002) of every band pair ``(x_i, y_j)``, averaged over blocks.

    ``x`` ``(bx, rows, cols)`` and ``y`` ``(by, rows, cols)`` (2-D arrays are one band); ``valid``
    ``(rows, cols)`` bool (pixels non-finite in either cube are dropped too). The image is cut into
    non-overlapping ``block x block`` tiles from the top left (the last tiles of a row or column may be
    smaller); in each tile holding at least ``min_fraction * block**2`` valid pixels, Q is computed over
    its valid pixels (population moments; :func:`uiqi`'s conventions for flat tiles), and the tiles' Q
    are averaged with equal weights, as the ``blockproc`` of Alparone et al.'s QNR. Float64 ``(bx, by)``;
    raises ``ValueError`` when no tile has enough valid pixels.
    """
    x, y = (np.asarray(a, dtype=np.float64) for a in (x, y))
    x, y = (a[None] if a.ndim == 2 else a for a in (x, y))
    if x.ndim != 3 or y.ndim != 3 or x.shape[1:] != y.shape[1:]:
        raise ValueError(f"cubes {x.shape} and {y.shape} must both be (bands, rows, cols) on one grid")
    mask = np.asarray(valid, dtype=bool) & np.isfinite(x).all(axis=0) & np.isfinite(y).all(axis=0)
    if mask.shape != x.shape[1:]:
        raise ValueError(f"valid mask {mask.shape} does not match the image {x.shape[1:]}")
    if not mask.any():
        raise ValueError("no valid pixel for the Q index")
    block = int(block)
    rows, cols = mask.shape
    n_c = -(-cols // block)
    gx, gy = x[:, mask].mean(axis=1), y[:, mask].mean(axis=1)  # moments are taken about these, for accuracy

    def tiles(a: np.ndarray) -> np.ndarray:  # (bands, h, cols) -> (n_c, bands, h * block)
        a = np.pad(a, ((0, 0), (0, 0), (0, n_c * block - cols)))
        return a.reshape(a.shape[0], a.shape[1], n_c, block).transpose(2, 0, 1, 3).reshape(n_c, a.shape[0], -1)

    out = []
    for r0 in range(0, rows, block):
        m = mask[r0:r0 + block]
        mt = tiles(m[None].astype(np.float64))[:, 0]
        n = mt.sum(axis=1)
        keep = n >= min_fraction * block * block
        if not keep.any():
            continue
        n = n[keep]
        xt = tiles(np.where(m, x[:, r0:r0 + block] - gx[:, None, None], 0.0))[keep]
        yt = tiles(np.where(m, y[:, r0:r0 + block] - gy[:, None, None], 0.0))[keep]
        sx, sy = xt.sum(axis=2) / n[:, None], yt.sum(axis=2) / n[:, None]
        vx = np.maximum((xt * xt).sum(axis=2) / n[:, None] - sx * sx, 0.0)
        vy = np.maximum((yt * yt).sum(axis=2) / n[:, None] - sy * sy, 0.0)
        vxy = np.einsum("tip,tjp->tij", xt, yt) / n[:, None, None] - sx[:, :, None] * sy[:, None, :]
        ux, uy = sx + gx, sy + gy
        out.append(_q_index(ux[:, :, None], uy[:, None, :], vx[:, :, None], vy[:, None, :], vxy))
    if not out:
        raise ValueError(f"no {block} x {block} block is at least {100 * min_fraction:.0f}% valid for the Q index")
    return np.concatenate(out).mean(axis=0)


def _two_scales(fused, lr, valid, scale: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Float64 ``fused``, ``lr`` and the LR / HR masks of the LR pixels valid with all their HR pixels."""
    fused, lr = np.asarray(fused, dtype=np.float64), np.asarray(lr, dtype=np.float64)
    s = int(scale)
    if fused.ndim != 3 or lr.ndim != 3 or fused.shape[0] != lr.shape[0] or \
            fused.shape[1:] != (lr.shape[1] * s, lr.shape[2] * s):
        raise ValueError(f"fused {fused.shape} must be the LR-HSI {lr.shape} with rows and cols times {s}")
    v = np.asarray(valid, dtype=bool) & np.isfinite(lr).all(axis=0)
    v &= np.isfinite(fused).all(axis=0).reshape(lr.shape[1], s, lr.shape[2], s).all(axis=(1, 3))
    if not v.any():
        raise ValueError("no valid LR pixel with all its HR pixels valid to score")
    return fused, lr, v, np.repeat(np.repeat(v, s, axis=0), s, axis=1)


def d_lambda(fused, lr, valid, scale: int, bands=None, block: int | None = None, p: float = 1.0) -> tuple[float, np.ndarray]:
    """QNR spectral distortion: how the fusion changed the relations between bands.

    ``D_lambda = (1 / (L (L - 1)) sum_{i != j} |Q(F_i, F_j) - Q(Y_i, Y_j)|^p)^(1/p)`` over ``L`` bands
    (Alparone et al. 2008, with the LR-HSI ``Y`` in the place of the MS image), Q by :func:`block_q`
    with blocks of ``block`` LR pixels (default :func:`qnr_block`) on ``Y`` and ``block * scale`` HR
    pixels on ``F``, so both cover the same ground. ``fused`` ``(N, rows * scale, cols * scale)``,
    ``lr`` ``(N, rows, cols)``, ``valid`` ``(rows, cols)`` LR mask. ``bands``: the indices of the ``L``
    bands (default :func:`spread_bands`: at most :data:`QNR_BANDS`). 0 is no distortion.
    Returns ``(D_lambda, per_band)``, ``per_band`` ``(L,)`` the same mean over ``j != i`` for each band.
    """
    fused, lr, v_lr, v_hr = _two_scales(fused, lr, valid, scale)
    idx = spread_bands(lr.shape[0]) if bands is None else np.asarray(bands, dtype=int)
    if idx.size < 2:
        raise ValueError("D_lambda needs at least two bands")
    b = qnr_block(scale) if block is None else int(block)
    dq = np.abs(block_q(fused[idx], fused[idx], v_hr, b * scale) - block_q(lr[idx], lr[idx], v_lr, b)) ** p
    np.fill_diagonal(dq, 0.0)
    per_band = (dq.sum(axis=1) / (idx.size - 1)) ** (1 / p)
    return float((dq.sum() / (idx.size * (idx.size - 1))) ** (1 / p)), per_band


def d_s(fused, lr, msi, msi_lr, valid, scale: int, block: int | None = None,
        q: float = 1.0) -> tuple[float, np.ndarray, np.ndarray]:
    """QNR spatial distortion: how the Q between the fused bands and the MSI differs from the same at the LR scale.

    ``D_s = (1 / (N K) sum_i sum_k |Q(F_i, M_k) - Q(Y_i, M~_k)|^q)^(1/q)`` over the ``N`` HS bands and
    ``K`` MSI bands (Alparone et al. 2008 with ``K`` MSI bands in the place of the pan; its original
    form, Q of the LR image against the degraded pan at the LR scale). ``fused`` ``(N, rows * scale,
    cols * scale)``, ``lr`` ``(N, rows, cols)``, ``msi`` ``(K, rows * scale, cols * scale)``, ``msi_lr``
    ``(K, rows, cols)`` the MSI degraded onto the LR grid with the pair's PSF; ``valid`` ``(rows, cols)``
    LR mask; blocks as :func:`d_lambda`. The two sensors need not share units: each HS band (``F_i``
    and ``Y_i``) is divided by the mean of ``Y_i`` and each MSI band (``M_k`` and ``M~_k``) by the mean of
    ``M~_k`` over the scored pixels first, so that Q's luminance and contrast terms compare structure,
    not the gap between the units. 0 is no distortion.
    Returns ``(D_s, per_hs_band (N,), per_msi_band (K,))``, the same mean over ``k`` resp. ``i``.
    """
    fused, lr, v_lr, v_hr = _two_scales(fused, lr, valid, scale)
    msi, msi_lr = np.asarray(msi, dtype=np.float64), np.asarray(msi_lr, dtype=np.float64)
    if msi.shape[1:] != fused.shape[1:] or msi_lr.shape != (msi.shape[0], *lr.shape[1:]):
        raise ValueError(f"HR-MSI {msi.shape} and its LR version {msi_lr.shape} must match the grids of {fused.shape} "
                         f"and {lr.shape}")
    v_lr &= np.isfinite(msi_lr).all(axis=0) & np.isfinite(msi).all(axis=0).reshape(
        lr.shape[1], scale, lr.shape[2], scale).all(axis=(1, 3))
    if not v_lr.any():
        raise ValueError("no valid LR pixel with all its HR pixels valid to score")
    v_hr = np.repeat(np.repeat(v_lr, scale, axis=0), scale, axis=1)

    def unit(a: np.ndarray) -> np.ndarray:
        mu = a[:, v_lr].mean(axis=1)
        return np.where(mu > 0, mu, 1.0)[:, None, None]

    hs, ms = unit(lr), unit(msi_lr)
    b = qnr_block(scale) if block is None else int(block)
    dq = np.abs(block_q(fused / hs, msi / ms, v_hr, b * scale) - block_q(lr / hs, msi_lr / ms, v_lr, b)) ** q
    return (float(dq.mean() ** (1 / q)), dq.mean(axis=1) ** (1 / q), dq.mean(axis=0) ** (1 / q))


def qnr(d_lambda_value: float, d_s_value: float, alpha: float = 1.0, beta: float = 1.0) -> float:
    """Quality with no reference, ``(1 - D_lambda)^alpha (1 - D_s)^beta``: 1 is best."""
    return float((1.0 - d_lambda_value) ** alpha * (1.0 - d_s_value) ** beta)
