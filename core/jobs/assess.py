"""Score a fused raster and write the table (CSV, HTML with per-band charts).

Against a reference HR-HSI (:func:`assess_files`), or, for a real pair with no reference, against the
LR-HSI and HR-MSI it was made from (:func:`assess_noref_files`: consistency through the sensor model
and the QNR).
"""

from __future__ import annotations

import csv
import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import metrics
from ..pairing import align_same_grid, check_pair
from ..progress import Progress, as_progress
from ..raster_io import Window, read_meta, read_raster
from ..sensor import degrade_spatial, degrade_spectral, estimate_srf, gaussian_psf, halo, sigma_for_scale
from .common import estimate_degradation, response_for

__all__ = ["Assessment", "assess_files", "assess_arrays", "NoRefAssessment", "assess_noref_files", "assess_noref_arrays"]

LABELS = {"psnr": "PSNR (dB, mean over bands)", "psnr_cube": "PSNR (dB, whole cube)", "ssim": "SSIM",
          "sam": "SAM (degrees)", "ergas": "ERGAS", "rmse": "RMSE (data units)", "cc": "CC", "uiqi": "UIQI (Q)"}


@dataclass
class Assessment:
    """Summary metrics (``core.metrics.evaluate`` keys) and per-band PSNR/RMSE with wavelengths (nm)."""

    metrics: dict[str, float]
    band_psnr: np.ndarray
    band_rmse: np.ndarray
    wavelengths: np.ndarray | None
    scored_pixels: int
    notes: list[str] = field(default_factory=list)


def assess_arrays(ref: np.ndarray, est: np.ndarray, scale: float, border: int = 0, valid=None,
                  wavelengths: np.ndarray | None = None) -> Assessment:
    """Score ``est`` against ``ref``, both ``(bands, rows, cols)``; NaN = nodata. Bands all-NaN in ``ref`` are skipped."""
    notes = []
    keep = np.isfinite(ref).any(axis=(1, 2))
    if not keep.all():
        notes.append(f"{int((~keep).sum())} band(s) without data in the reference were skipped")
    ref, est = ref[keep], est[keep]
    wl = None if wavelengths is None else np.asarray(wavelengths)[keep]
    summary = metrics.evaluate(ref, est, scale, border=border, valid=valid)
    band_psnr = np.array([metrics.psnr(ref[b:b + 1], est[b:b + 1], border=border, valid=valid) for b in range(ref.shape[0])])
    band_rmse = np.array([metrics.rmse(ref[b:b + 1], est[b:b + 1], border=border, valid=valid) for b in range(ref.shape[0])])
    m = np.isfinite(ref).all(0) & np.isfinite(est).all(0)
    if valid is not None:
        m &= valid
    if border:
        m = m[border:-border, border:-border]
    return Assessment(summary, band_psnr, band_rmse, wl, int(m.sum()), notes)


def assess_files(
    reference: str | os.PathLike,
    result: str | os.PathLike,
    scale: float,
    border: int = 0,
    csv_out: str | os.PathLike | None = None,
    html_out: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> Assessment:
    """Score ``result`` against ``reference`` over their common area (same pixel grid required)."""
    prog = as_progress(progress)
    rn, en = f"reference layer '{os.path.basename(str(reference))}'", f"result layer '{os.path.basename(str(result))}'"
    rm, em = read_meta(reference), read_meta(result)
    if rm.bands != em.bands:
        raise ValueError(f"{rn} has {rm.bands} bands but {en} has {em.bands}: they must hold the same bands")
    rw, ew = align_same_grid(rm, em, rn, en)
    prog.report(0.1, "reading rasters")
    ref, _ = read_raster(reference, rw)
    est, _ = read_raster(result, ew)
    prog.report(0.4, "computing metrics")
    a = assess_arrays(ref, est, scale, border, wavelengths=rm.wavelengths)
    if csv_out:
        write_csv(a, csv_out)
    if html_out:
        write_html(a, html_out, title=f"{os.path.basename(str(result))} vs {os.path.basename(str(reference))}")
    prog.report(1.0, "done")
    return a


def write_csv(a: Assessment, path: str | os.PathLike) -> None:
    """``metric,value`` rows, then ``band,wavelength_nm,psnr_db,rmse`` rows after a blank line."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["metric", "value"])
        for k, v in a.metrics.items():
            w.writerow([k, f"{v:.6g}"])
        w.writerow([])
        w.writerow(["band", "wavelength_nm", "psnr_db", "rmse"])
        for i, (p, r) in enumerate(zip(a.band_psnr, a.band_rmse, strict=True)):
            wl = "" if a.wavelengths is None else f"{a.wavelengths[i]:.2f}"
            w.writerow([i + 1, wl, f"{p:.4f}", f"{r:.6g}"])


def _svg_chart(x: np.ndarray, y: np.ndarray, xlabel: str, ylabel: str, width: int = 640, height: int = 240) -> str:
    """A dependency-free line chart as inline SVG."""
    ml, mr, mt, mb = 56, 12, 12, 36
    fy = np.isfinite(y)
    x, y = x[fy], y[fy]
    if x.size == 0:
        return "<p>(no finite values to plot)</p>"
    x0, x1 = float(x.min()), float(x.max()) if x.max() > x.min() else float(x.min()) + 1
    y0, y1 = float(y.min()), float(y.max()) if y.max() > y.min() else float(y.min()) + 1
    px = ml + (x - x0) / (x1 - x0) * (width - ml - mr)
    py = mt + (1 - (y - y0) / (y1 - y0)) * (height - mt - mb)
    pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px, py, strict=True))
    ticks = "".join(
        f'<text x="{ml - 6}" y="{mt + (1 - f) * (height - mt - mb) + 4:.1f}" text-anchor="end" font-size="10">'
        f"{y0 + f * (y1 - y0):.3g}</text>" for f in (0, 0.5, 1))
    xt = "".join(
        f'<text x="{ml + f * (width - ml - mr):.1f}" y="{height - mb + 14}" text-anchor="middle" font-size="10">'
        f"{x0 + f * (x1 - x0):.4g}</text>" for f in (0, 0.25, 0.5, 0.75, 1))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
            f'<rect x="{ml}" y="{mt}" width="{width - ml - mr}" height="{height - mt - mb}" fill="none" stroke="#999"/>'
            f'<polyline points="{pts}" fill="none" stroke="#1c7ed6" stroke-width="1.5"/>{ticks}{xt}'
            f'<text x="{(width + ml) / 2}" y="{height - 4}" text-anchor="middle" font-size="11">{html.escape(xlabel)}</text>'
            f'<text x="12" y="{height / 2}" transform="rotate(-90 12 {height / 2})" text-anchor="middle" font-size="11">'
            f"{html.escape(ylabel)}</text></svg>")


def write_html(a: Assessment, path: str | os.PathLike, title: str = "Fusion quality") -> None:
    x = a.wavelengths if a.wavelengths is not None else np.arange(1, a.band_psnr.size + 1, dtype=float)
    xlabel = "wavelength (nm)" if a.wavelengths is not None else "band"
    rows = "".join(f"<tr><td>{html.escape(LABELS.get(k, k))}</td><td>{v:.4f}</td></tr>" for k, v in a.metrics.items())
    notes = "".join(f"<p><i>{html.escape(n)}</i></p>" for n in a.notes)
    Path(path).write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
        f"<h2>{html.escape(title)}</h2><p>{a.scored_pixels} pixels scored.</p>{notes}"
        f"<table border='1' cellspacing='0' cellpadding='4'><tr><th>metric</th><th>value</th></tr>{rows}</table>"
        f"<h3>PSNR per band</h3>{_svg_chart(x, a.band_psnr, xlabel, 'PSNR (dB)')}"
        f"<h3>RMSE per band</h3>{_svg_chart(x, a.band_rmse, xlabel, 'RMSE')}</body></html>",
        encoding="utf-8",
    )


NOREF_LABELS = {
    "qnr": "QNR = (1 - D_lambda)(1 - D_s)", "d_lambda": "D_lambda (spectral distortion)", "d_s": "D_s (spatial distortion)",
    "spectral_rmse": "spectral consistency: RMSE (MSI units)", "spectral_psnr": "spectral consistency: PSNR (dB, mean over MSI bands)",
    "spectral_cc": "spectral consistency: CC (mean over MSI bands)", "spatial_rmse": "spatial consistency: RMSE (LR-HSI units)",
    "spatial_psnr": "spatial consistency: PSNR (dB, mean over bands)", "spatial_sam": "spatial consistency: SAM (degrees)",
}


@dataclass
class NoRefAssessment:
    """No-reference scores of a fused HR-HSI against the LR-HSI / HR-MSI pair it was made from.

    ``metrics``: the :data:`NOREF_LABELS` keys. Per scored HS band (``bands``, 1-based band numbers in
    the files; ``wavelengths`` nm or None): ``spatial_rmse``, ``spatial_psnr`` (dB), ``d_s_band`` and
    ``d_lambda_band`` (NaN for the bands outside the D_lambda subset). Per MSI band (``msi_band_names``):
    ``spectral_rmse``, ``spectral_psnr`` (dB), ``spectral_cc``, ``d_s_msi``. ``response`` says which
    spectral response was used, ``psf_shape`` (``gaussian`` or ``box``), ``psf_sigma`` (its standard deviation),
    ``psf_dy``, ``psf_dx`` (HR pixels) the PSF;
    ``lr_pixels`` / ``hr_pixels`` how many pixels were scored on each grid.
    """

    metrics: dict[str, float]
    bands: np.ndarray
    wavelengths: np.ndarray | None
    spatial_rmse: np.ndarray
    spatial_psnr: np.ndarray
    d_s_band: np.ndarray
    d_lambda_band: np.ndarray
    msi_band_names: list[str]
    spectral_rmse: np.ndarray
    spectral_psnr: np.ndarray
    spectral_cc: np.ndarray
    d_s_msi: np.ndarray
    response: str
    psf_sigma: float
    psf_dy: float
    psf_dx: float
    scale: int
    lr_pixels: int
    hr_pixels: int
    notes: list[str] = field(default_factory=list)
    psf_shape: str = "gaussian"


def assess_noref_arrays(fused: np.ndarray, lr: np.ndarray, msi: np.ndarray, scale: int, srf: np.ndarray,
                        psf: np.ndarray, hr_valid: np.ndarray, border: int = 0) -> dict:
    """Consistency and QNR of ``fused`` ``(N, rows * scale, cols * scale)`` with its pair.

    ``lr`` ``(N, rows, cols)``, ``msi`` ``(K, rows * scale, cols * scale)`` (NaN = nodata), ``srf``
    ``(K, N)`` in MSI units per HS unit (``MSI ~= srf @ HSI``), ``psf`` the kernel from the HR onto the
    LR grid (:mod:`core.sensor.psf` conventions, sub-pixel offset included), ``hr_valid`` ``(rows *
    scale, cols * scale)`` the HR pixels to score. Spectral consistency compares ``srf @ fused`` with
    ``msi`` on ``hr_valid``; spatial consistency the fused image degraded by ``psf`` and decimated with
    ``lr``, and the QNR (:func:`core.metrics.d_lambda`, :func:`core.metrics.d_s`, the MSI degraded by
    ``psf``) uses the LR pixels whose PSF reads only valid HR pixels and lies inside the arrays and
    ``border`` HR pixels from their edge. Returns a dict of the :class:`NoRefAssessment` fields
    ``metrics``, the per-band arrays (``d_lambda_band`` on all ``N`` bands, NaN outside the subset)
    and ``lr_pixels`` / ``hr_pixels``.
    """
    s = int(scale)
    fused = np.where(hr_valid, fused, np.nan).astype(np.float32)
    msi = np.where(hr_valid, msi, np.nan).astype(np.float32)
    f_lr = degrade_spatial(fused, s, psf)
    m_lr = degrade_spatial(msi, s, psf)
    lr_valid = np.isfinite(lr).all(axis=0) & np.isfinite(f_lr).all(axis=0) & np.isfinite(m_lr).all(axis=0)
    margin = max(math.ceil(halo(s, psf) / s), math.ceil(border / s))
    if margin:
        lr_valid[:margin], lr_valid[-margin:], lr_valid[:, :margin], lr_valid[:, -margin:] = False, False, False, False
    if not lr_valid.any():
        raise ValueError("no LR pixel has its whole PSF footprint on valid pixels of the fused image and the HR-MSI")
    pred = degrade_spectral(fused, srf)
    hr_ok = hr_valid & np.isfinite(fused).all(axis=0)
    n_msi, n_hs = msi.shape[0], lr.shape[0]

    def per_band(fn, ref, est, valid, n):
        return np.array([fn(ref[b:b + 1], est[b:b + 1], valid=valid) for b in range(n)])

    spectral_rmse = per_band(metrics.rmse, msi, pred, hr_ok, n_msi)
    spectral_psnr = per_band(metrics.psnr, msi, pred, hr_ok, n_msi)
    spectral_cc = per_band(metrics.cc, msi, pred, hr_ok, n_msi)
    spatial_rmse = per_band(metrics.rmse, lr, f_lr, lr_valid, n_hs)
    spatial_psnr = per_band(metrics.psnr, lr, f_lr, lr_valid, n_hs)
    subset = metrics.spread_bands(n_hs)
    dl, dl_band = metrics.d_lambda(fused, lr, lr_valid, s, bands=subset)
    ds, ds_band, ds_msi = metrics.d_s(fused, lr, msi, m_lr, lr_valid, s)
    d_lambda_band = np.full(n_hs, np.nan)
    d_lambda_band[subset] = dl_band
    summary = {
        "qnr": metrics.qnr(dl, ds), "d_lambda": dl, "d_s": ds,
        "spectral_rmse": metrics.rmse(msi, pred, valid=hr_ok),
        "spectral_psnr": float(np.mean(spectral_psnr)), "spectral_cc": float(np.mean(spectral_cc)),
        "spatial_rmse": metrics.rmse(lr, f_lr, valid=lr_valid), "spatial_psnr": float(np.mean(spatial_psnr)),
        "spatial_sam": metrics.sam(lr, f_lr, valid=lr_valid),
    }
    return {"metrics": summary, "spatial_rmse": spatial_rmse, "spatial_psnr": spatial_psnr, "d_s_band": ds_band,
            "d_lambda_band": d_lambda_band, "spectral_rmse": spectral_rmse, "spectral_psnr": spectral_psnr,
            "spectral_cc": spectral_cc, "d_s_msi": ds_msi, "lr_pixels": int(lr_valid.sum()), "hr_pixels": int(hr_ok.sum())}


def assess_noref_files(
    result: str | os.PathLike,
    lr_hsi: str | os.PathLike,
    hr_msi: str | os.PathLike,
    sensor: str | os.PathLike | None = None,
    border: int = 0,
    csv_out: str | os.PathLike | None = None,
    html_out: str | os.PathLike | None = None,
    progress: Progress | None = None,
    result_name: str | None = None,
    lr_name: str | None = None,
    msi_name: str | None = None,
) -> NoRefAssessment:
    """Score ``result`` (on the HR-MSI's grid, the LR-HSI's bands) against the pair it was fused from, with no reference.

    The area scored is where the result covers whole LR pixels of the pair's common area
    (:func:`core.pairing.check_pair`). HR pixels are scored where the MSI is valid (finite and not 0 in
    every band, as a black no-data patch) and the result is finite. The PSF is estimated from the pair
    (:func:`core.jobs.common.estimate_degradation`: sub-pixel offset and Gaussian width, or the nominal
    one, with a note, where the estimate fails). The spectral response: ``sensor`` (a name or a CSV,
    resampled onto the LR-HSI's wavelengths, each MSI band's gain to the HSI's units fitted at the LR
    scale), or, without it, estimated from the pair by NNLS through that PSF (:func:`core.sensor.estimate_srf`).
    Metrics: :func:`assess_noref_arrays`. Holds the area in memory (the three rasters and a few copies).
    """
    prog = as_progress(progress)
    rn_ = result_name or os.path.basename(str(result))
    rn = f"result layer '{rn_}'"
    ln_, mn_ = lr_name or os.path.basename(str(lr_hsi)), msi_name or os.path.basename(str(hr_msi))
    ln, mn = f"LR-HSI layer '{ln_}'", f"HR-MSI layer '{mn_}'"
    geo = check_pair(lr_hsi, hr_msi, ln_, mn_)
    s = geo.scale
    lm, mm, em = read_meta(lr_hsi), read_meta(hr_msi), read_meta(result)
    if em.bands != lm.bands:
        raise ValueError(f"{rn} has {em.bands} bands but {ln} has {lm.bands}: the result must hold the LR-HSI's bands")
    lw, mw, rw = _noref_windows(geo, mm, em, mn, rn)
    prog.report(0.05, "reading rasters")
    lr, _ = read_raster(lr_hsi, lw)
    msi, _ = read_raster(hr_msi, mw)
    res, _ = read_raster(result, rw)
    notes = list(geo.notes)
    good = lm.good_bands & np.isfinite(lr).any(axis=(1, 2)) & np.isfinite(res).any(axis=(1, 2))
    if not good.any():
        raise ValueError(f"{rn} and {ln} share no band with data")
    if not good.all():
        notes.append(f"{int((~good).sum())} band(s) without data in the LR-HSI or the result (or marked bad) were skipped")
    lr, res = lr[good], res[good]
    blank = np.isfinite(msi).all(axis=0) & (msi == 0).all(axis=0)
    hr_valid = np.isfinite(msi).all(axis=0) & ~blank & np.isfinite(res).all(axis=0)
    if blank.any():
        notes.append(f"{int(blank.sum())} HR-MSI pixel(s) that are 0 in every band were taken as no-data")
    if not hr_valid.any():
        raise ValueError(f"{rn} and {mn} share no valid pixel")
    msi = np.where(hr_valid, msi, np.nan).astype(np.float32)
    nominal = None
    if sensor is not None:
        nominal = response_for(sensor, lm, list(mm.band_names), ln, good).matrix[:, good]
        if nominal.shape[0] != msi.shape[0]:
            raise ValueError(f"sensor {sensor} has {nominal.shape[0]} bands but {mn} has {msi.shape[0]}")
    prog.report(0.15, "estimating the PSF (sub-pixel offset and width)")
    reg, est_notes = estimate_degradation(lambda r0, c0, h, w: lr[:, r0:r0 + h, c0:c0 + w],
                                          lambda r0, c0, h, w: msi[:, r0:r0 + h, c0:c0 + w], lr.shape[1:], s, ln_, mn_)
    notes += est_notes
    sigma, dy, dx = (reg.sigma, reg.dy, reg.dx) if reg is not None else (sigma_for_scale(s), 0.0, 0.0)
    psf = reg.psf(s) if reg is not None else gaussian_psf(s)
    prog.report(0.4, "spectral response")
    srf, response = _noref_response(sensor, nominal, lr, msi, s, psf, list(mm.band_names), ln, mn, notes)
    prog.report(0.55, "computing the consistency and the QNR")
    out = assess_noref_arrays(res, lr, msi, s, srf, psf, hr_valid, border)
    wl = None if lm.wavelengths is None else np.asarray(lm.wavelengths)[good]
    a = NoRefAssessment(bands=np.flatnonzero(good) + 1, wavelengths=wl, msi_band_names=list(mm.band_names),
                        response=response, psf_sigma=sigma, psf_dy=dy, psf_dx=dx, scale=s, notes=notes,
                        psf_shape="gaussian" if reg is None else reg.shape, **out)
    if csv_out:
        write_noref_csv(a, csv_out)
    if html_out:
        write_noref_html(a, html_out, title=f"{rn_}: no-reference quality against {ln} and {mn}")
    prog.report(1.0, "done")
    return a


def _noref_windows(geo, mm, em, mn: str, rn: str) -> tuple[Window, Window, Window]:
    """LR, MSI and result windows of the whole LR pixels of the pair's common area that the result covers."""
    s, g = geo.scale, geo.msi_window
    wm, wr = align_same_grid(mm, em, mn, rn)
    r0, r1 = max(wm.row_off, g.row_off), min(wm.row_off + wm.height, g.row_off + g.height)
    c0, c1 = max(wm.col_off, g.col_off), min(wm.col_off + wm.width, g.col_off + g.width)
    lr_r0, lr_r1 = -(-(r0 - g.row_off) // s), (r1 - g.row_off) // s
    lr_c0, lr_c1 = -(-(c0 - g.col_off) // s), (c1 - g.col_off) // s
    if lr_r1 <= lr_r0 or lr_c1 <= lr_c0:
        raise ValueError(f"{rn} covers no whole LR-HSI pixel of the area the pair shares")
    lw = Window(geo.lr_window.col_off + lr_c0, geo.lr_window.row_off + lr_r0, lr_c1 - lr_c0, lr_r1 - lr_r0)
    mw = Window(g.col_off + lr_c0 * s, g.row_off + lr_r0 * s, lw.width * s, lw.height * s)
    rw = Window(mw.col_off - wm.col_off + wr.col_off, mw.row_off - wm.row_off + wr.row_off, mw.width, mw.height)
    return lw, mw, rw


def _noref_response(sensor, nominal: np.ndarray | None, lr, msi, s, psf, band_names: list[str], ln: str, mn: str,
                    notes: list[str]) -> tuple[np.ndarray, str]:
    """``(srf (K, N) in MSI units per HS unit, description)``: the ``nominal`` response of ``sensor`` (unit row
    sums) with each MSI band's gain fitted at the LR scale, or, without one, the NNLS estimate through ``psf``."""
    if nominal is None:
        raw, _ = estimate_srf(lr, msi, s, psf=psf)
        if np.any(raw.sum(axis=1) <= 0):
            bad = [band_names[i] for i in np.flatnonzero(raw.sum(axis=1) <= 0)]
            raise ValueError(f"{mn} band(s) {', '.join(bad)} cannot be explained by the bands of {ln} (zero response)")
        return raw, "estimated from the pair (NNLS through the PSF)"
    pred, obs = degrade_spectral(lr, nominal).astype(np.float64), degrade_spatial(msi, s, psf).astype(np.float64)
    ok = np.isfinite(pred).all(axis=0) & np.isfinite(obs).all(axis=0)
    gain = np.sum(pred[:, ok] * obs[:, ok], axis=1) / np.maximum(np.sum(pred[:, ok] ** 2, axis=1), 1e-30)
    notes.append("MSI band gains to the HSI's units (fitted at the LR scale): "
                 + ", ".join(f"{n} {g:.4g}" for n, g in zip(band_names, gain, strict=True)))
    return nominal * gain[:, None], f"{os.path.basename(str(sensor))} (gains fitted at the LR scale)"


def write_noref_csv(a: NoRefAssessment, path: str | os.PathLike) -> None:
    """``metric,value`` rows (the metrics, the PSF, the scale, the pixel counts, the response), then after a
    blank line ``band,wavelength_nm,spatial_rmse,spatial_psnr_db,d_s,d_lambda`` rows (per HS band; d_lambda
    empty outside its subset), then ``msi_band,name,spectral_rmse,spectral_psnr_db,spectral_cc,d_s`` rows."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["metric", "value"])
        for k, v in a.metrics.items():
            w.writerow([k, f"{v:.6g}"])
        for k, v in (("psf_sigma_hr_px", a.psf_sigma), ("psf_dy_hr_px", a.psf_dy), ("psf_dx_hr_px", a.psf_dx)):
            w.writerow([k, f"{v:.4f}"])
        w.writerows([["psf_shape", a.psf_shape], ["scale", a.scale], ["lr_pixels", a.lr_pixels], ["hr_pixels", a.hr_pixels],
                     ["response", a.response]])
        w.writerow([])
        w.writerow(["band", "wavelength_nm", "spatial_rmse", "spatial_psnr_db", "d_s", "d_lambda"])
        for i, b in enumerate(a.bands):
            wl = "" if a.wavelengths is None else f"{a.wavelengths[i]:.2f}"
            dl = "" if np.isnan(a.d_lambda_band[i]) else f"{a.d_lambda_band[i]:.6g}"
            w.writerow([int(b), wl, f"{a.spatial_rmse[i]:.6g}", f"{a.spatial_psnr[i]:.4f}", f"{a.d_s_band[i]:.6g}", dl])
        w.writerow([])
        w.writerow(["msi_band", "name", "spectral_rmse", "spectral_psnr_db", "spectral_cc", "d_s"])
        for k, name in enumerate(a.msi_band_names):
            w.writerow([k + 1, name, f"{a.spectral_rmse[k]:.6g}", f"{a.spectral_psnr[k]:.4f}", f"{a.spectral_cc[k]:.6g}",
                        f"{a.d_s_msi[k]:.6g}"])


def write_noref_html(a: NoRefAssessment, path: str | os.PathLike, title: str = "Fusion quality (no reference)") -> None:
    x = a.wavelengths if a.wavelengths is not None else a.bands.astype(float)
    xlabel = "wavelength (nm)" if a.wavelengths is not None else "band"
    rows = "".join(f"<tr><td>{html.escape(NOREF_LABELS.get(k, k))}</td><td>{v:.4f}</td></tr>" for k, v in a.metrics.items())
    msi_rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{a.spectral_rmse[k]:.4g}</td><td>{a.spectral_psnr[k]:.2f}</td>"
        f"<td>{a.spectral_cc[k]:.4f}</td><td>{a.d_s_msi[k]:.4f}</td></tr>" for k, n in enumerate(a.msi_band_names))
    notes = "".join(f"<p><i>{html.escape(n)}</i></p>" for n in a.notes)
    sub = np.isfinite(a.d_lambda_band)
    Path(path).write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
        f"<h2>{html.escape(title)}</h2><p>{a.lr_pixels} LR pixels and {a.hr_pixels} HR pixels scored, scale {a.scale}. "
        f"Spectral response: {html.escape(a.response)}. PSF: {a.psf_shape}, sigma {a.psf_sigma:.3f} HR px, offset "
        f"dy {a.psf_dy:+.3f} dx {a.psf_dx:+.3f} HR px.</p>{notes}"
        f"<table border='1' cellspacing='0' cellpadding='4'><tr><th>metric</th><th>value</th></tr>{rows}</table>"
        f"<h3>Per MSI band: the result through the response vs the HR-MSI</h3>"
        f"<table border='1' cellspacing='0' cellpadding='4'><tr><th>band</th><th>RMSE</th><th>PSNR (dB)</th><th>CC</th>"
        f"<th>D_s</th></tr>{msi_rows}</table>"
        f"<h3>Spatial consistency per band: PSNR of the result through the PSF vs the LR-HSI</h3>"
        f"{_svg_chart(x, a.spatial_psnr, xlabel, 'PSNR (dB)')}"
        f"<h3>D_s per band</h3>{_svg_chart(x, a.d_s_band, xlabel, 'D_s')}"
        f"<h3>D_lambda per band ({int(sub.sum())} bands spread over the range)</h3>"
        f"{_svg_chart(x[sub], a.d_lambda_band[sub], xlabel, 'D_lambda')}</body></html>",
        encoding="utf-8",
    )
