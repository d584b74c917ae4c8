"""Score a fused raster against a reference raster and write the table (CSV, HTML with a per-band chart)."""

from __future__ import annotations

import csv
import html
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import metrics
from ..pairing import align_same_grid
from ..progress import Progress, as_progress
from ..raster_io import read_meta, read_raster

__all__ = ["Assessment", "assess_files", "assess_arrays"]

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
