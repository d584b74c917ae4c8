"""Prepare an LR-HSI / HR-MSI pair for fusion from sensor products or rasters.

What :func:`prepare_pair` does, in order:

1. reads the LR-HSI (an EnMAP L2A product or a raster) and the HR-MSI bands (a Sentinel-2 ``.SAFE`` product,
   one multi-band raster or several rasters; :mod:`core.products`) and stacks the MSI bands in the requested
   order (a model's ``msi_band_names``), named ``B02``...;
2. turns both into reflectance x ``reflectance_scale`` (10000: the units of EnMAP L2A and of the bundled
   EnMAP models): the product's gains, offsets and Sentinel-2's ``BOA_ADD_OFFSET`` are applied, bad bands
   and nodata become NaN; a raster without units is taken as reflectance 0-1 when its 99th percentile is
   at most 2, else as reflectance x 10000 (the log says which);
3. co-registers the pair (``coregister``): a whole-LR-pixel shift by phase correlation of the two images'
   first principal components on the LR grid (the global matching of AROSICS, Scheffler et al. 2017), kept
   only when it lowers the misfit of the LR-HSI explained by the MSI, then the sub-pixel offset of
   :func:`core.sensor.estimate.estimate_registration` (the MSI degraded by a shifted PSF regressed on the
   LR's principal components), applied and estimated again until it is below
   :data:`CONVERGED_PX`. The LR-HSI keeps its pixels: its grid origin moves by the offset found (onto the
   MSI's geolocation), and a grid that ends within :data:`SNAP_PX` of the MSI's own is put exactly on it,
   so MSI bands at the target pixel size are copied instead of resampled;
4. warps every MSI band once (GDAL) onto the grid aligned with the (moved) LR grid at pixel = LR pixel /
   ``scale``, with ``average`` for bands finer than the target, ``cubic`` for coarser ones and ``near`` for
   bands already on it, over the common extent in whole LR pixels;
5. writes both rasters (both or neither) and an optional HTML report of what it did.
"""

from __future__ import annotations

import argparse
import html
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..products import (
    Grid,
    HsiSource,
    MsiBand,
    ProductError,
    native_grid,
    normalise_band_name,
    open_hsi,
    open_msi,
    same_crs,
    warp_band,
)
from ..progress import Progress, as_progress
from ..raster_io import RasterReader, RasterWriter, Window, bounded_gdal_cache, commit_all, describe_crs, iter_windows
from ..sensor import default_msi_bands, degrade_spatial, load_srf_csv
from ..sensor.estimate import estimate_registration

__all__ = ["BandPlan", "PrepareResult", "prepare_pair", "phase_correlation_shift", "render_report", "DEFAULT_REFLECTANCE_SCALE"]

DEFAULT_REFLECTANCE_SCALE = 10000.0
"""Output units: reflectance x this (EnMAP L2A's and the bundled EnMAP models' units)."""
CONVERGED_PX = 0.05
"""Co-registration stops once the offset left is below this (HR pixels, each axis)."""
SNAP_PX = 0.05
"""A co-registered grid this close (HR pixels) to an MSI band's own grid is put exactly on it."""
MAX_ROUNDS = 3
"""Corrections applied at most (each followed by a new estimate)."""
REFINE_MAX_PX = 1.0
"""The search range (HR pixels) of the estimates after the first correction: what is left is a fraction of a pixel."""
MAX_COARSE_LR_PX = 5
"""The phase correlation's search range (LR pixels, each way), AROSICS's default ``max_shift``."""
ESTIMATE_LR_PX = 128
"""The co-registration works on a central crop of at most this many LR pixels a side (as Super-resolve's estimate)."""
_FRACTION_P99 = 2.0  # a raster whose 99th percentile is at most this holds reflectance 0-1


@dataclass
class BandPlan:
    """How one MSI band was prepared: where from, its native pixel (CRS units), the resampling, the value
    conversion (``value = raw * gain + offset``, then ``* factor``)."""

    name: str
    band: MsiBand
    native: Grid
    resampling: str = ""
    factor: float = 1.0
    units_note: str = ""
    valid_fraction: float = float("nan")


@dataclass
class PrepareResult:
    """The prepared pair: both paths, the scale, the MSI band names in output order, the output grids, the
    per-band plans, the co-registration (``shift`` (down, right) in HR pixels by which the LR grid was moved,
    ``coarse_shift`` its whole-LR-pixel part, ``residual`` the offset estimated after it, ``sigma`` the PSF width
    in HR pixels; None where skipped), ``notes`` one line each for the log and ``seconds``."""

    lr_path: str
    msi_path: str
    report_path: str | None
    scale: int
    msi_band_names: list[str]
    lr_grid: Grid
    msi_grid: Grid
    bands: list[BandPlan]
    lr_source: str
    shift: tuple[float, float] = (0.0, 0.0)
    coarse_shift: tuple[int, int] = (0, 0)
    residual: tuple[float, float] | None = None
    sigma: float | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


# --------------------------------------------------------------------------- grids


def _frac(v: float) -> float:
    return v - round(v)


def _lr_grid(meta) -> Grid:
    gt = meta.north_up_geotransform
    if gt[2] != 0 or gt[4] != 0 or gt[1] <= 0 or gt[5] >= 0:
        raise ProductError(f"LR-HSI {Path(meta.path).name} is not on a north-up grid (geotransform {gt}); warp it first")
    return Grid(gt[0], gt[3], gt[1], -gt[5], meta.rows, meta.cols, meta.crs_wkt)


def _moved(lr: Grid, shift: np.ndarray, scale: int) -> Grid:
    """``lr`` with its origin moved ``shift`` = (down, right) HR pixels."""
    return Grid(lr.x0 + shift[1] * lr.px / scale, lr.y0 - shift[0] * lr.py / scale, lr.px, lr.py, lr.rows, lr.cols, lr.crs_wkt)


def _window_grid(lr: Grid, w: Window, scale: int) -> Grid:
    """The HR grid (``scale`` times finer) over LR window ``w`` of ``lr``."""
    return Grid(lr.x0 + w.col_off * lr.px, lr.y0 - w.row_off * lr.py, lr.px / scale, lr.py / scale,
                w.height * scale, w.width * scale, lr.crs_wkt)


def _common_window(lr: Grid, natives: list[Grid], lr_label: str) -> Window:
    """Whole LR pixels of ``lr`` inside every MSI band's extent."""
    left = max(n.bounds[0] for n in natives)
    bottom = max(n.bounds[1] for n in natives)
    right = min(n.bounds[2] for n in natives)
    top = min(n.bounds[3] for n in natives)
    tol = 1e-6
    c0 = max(0, math.ceil((left - lr.x0) / lr.px - tol))
    c1 = min(lr.cols, math.floor((right - lr.x0) / lr.px + tol))
    r0 = max(0, math.ceil((lr.y0 - top) / lr.py - tol))
    r1 = min(lr.rows, math.floor((lr.y0 - bottom) / lr.py + tol))
    if c1 - c0 < 1 or r1 - r0 < 1:
        raise ProductError(f"{lr_label} (extent {lr.bounds}) and the HR-MSI (common extent of its bands "
                           f"{(left, bottom, right, top)}) do not overlap by a whole LR pixel")
    return Window(c0, r0, c1 - c0, r1 - r0)


def _resampling(native: Grid, target: Grid) -> str:
    """``average`` for a band finer than the target, ``cubic`` for a coarser or offset one, ``near`` when it is on it."""
    ratio = target.px / native.px
    if ratio > 1 + 1e-6:
        return "average"
    if ratio < 1 - 1e-6 or not same_crs(native.crs_wkt, target.crs_wkt):
        return "cubic"
    on_grid = abs(_frac((target.x0 - native.x0) / native.px)) < 1e-6 and abs(_frac((native.y0 - target.y0) / native.py)) < 1e-6
    return "near" if on_grid else "cubic"


def _snap(shift: np.ndarray, lr: Grid, natives: list[Grid], scale: int) -> np.ndarray:
    """``shift`` adjusted (by less than :data:`SNAP_PX`) so the moved LR grid's HR grid lies on an MSI band's own grid."""
    hx, hy = lr.px / scale, lr.py / scale
    moved = _moved(lr, shift, scale)
    for n in natives:
        if abs(n.px / hx - 1) > 1e-6 or abs(n.py / hy - 1) > 1e-6 or not same_crs(n.crs_wkt, lr.crs_wkt):
            continue
        fx, fy = _frac((moved.x0 - n.x0) / n.px), _frac((n.y0 - moved.y0) / n.py)
        if abs(fx) < SNAP_PX and abs(fy) < SNAP_PX:
            return shift - np.array([fy, fx])
    return shift


# --------------------------------------------------------------------------- values


def _unit_factor(sample: np.ndarray, units: str, out_scale: float, what: str) -> tuple[float, str]:
    """The factor that brings ``sample`` (reflectance 0-1 when ``units`` says so) to reflectance x ``out_scale``."""
    if units == "reflectance":
        return out_scale, f"reflectance x {out_scale:g}"
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        raise ProductError(f"{what} holds no valid pixel over the common area")
    p99 = float(np.percentile(finite, 99))
    if p99 <= _FRACTION_P99:
        return out_scale, f"no units given; 99th percentile {p99:.3g}: taken as reflectance 0-1, x {out_scale:g}"
    return out_scale / 1e4, (f"no units given; 99th percentile {p99:.4g}: taken as reflectance x 10000"
                             + ("" if out_scale == 1e4 else f", x {out_scale / 1e4:g}"))


def _lr_values(raw: np.ndarray, hsi: HsiSource, nodata_value: float | None, factor: float) -> np.ndarray:
    """Raw LR-HSI values ``(bands, r, c)`` -> output units; nodata and bad bands NaN."""
    a = raw
    if nodata_value is not None:
        a = np.where(a == np.float32(nodata_value), np.float32(np.nan), a)
    a = (a * hsi.gains[:, None, None].astype(np.float32) + hsi.offsets[:, None, None].astype(np.float32)) * np.float32(factor)
    a[hsi.bad_bands] = np.nan
    return a.astype(np.float32, copy=False)


def _select(bands: list[MsiBand], order: list[str] | None) -> tuple[list[MsiBand], list[str], list[str]]:
    """The bands in output order and their output names, and notes."""
    if order:
        want = [normalise_band_name(n) for n in order]
        by_name = {b.name: b for b in bands}
        missing = [n for n in want if n not in by_name]
        if len(missing) == len(want) == len(bands):
            return bands, want, [f"HR-MSI bands named {', '.join(b.name for b in bands)}, none of the names asked for: "
                                 f"taken in the order given as {', '.join(want)}"]
        if missing:
            raise ProductError(f"HR-MSI has no band {', '.join(missing)} (band order asked for: {', '.join(want)}); "
                               f"it has {', '.join(b.name for b in bands)}")
        return [by_name[n] for n in want], want, []
    if all(b.units == "reflectance" for b in bands):
        land = [n for n in default_msi_bands("sentinel2") if any(b.name == n for b in bands)]
        if land:
            picked = [next(b for b in bands if b.name == n) for n in land]
            return picked, land, [f"Sentinel-2 land bands in the bundled models' order: {', '.join(land)}"]
    return bands, [b.name for b in bands], []


# --------------------------------------------------------------------------- co-registration


def _first_component(cube: np.ndarray) -> np.ndarray:
    """``(r, c)`` first principal component of ``(b, r, c)`` (0 where any band is non-finite)."""
    ok = np.isfinite(cube).all(axis=0)
    out = np.zeros(cube.shape[1:], np.float64)
    if ok.sum() < 2:
        return out
    x = cube[:, ok].astype(np.float64)
    x -= x.mean(axis=1, keepdims=True)
    _, vec = np.linalg.eigh(x @ x.T)
    out[ok] = vec[:, -1] @ x
    return out


def phase_correlation_shift(a: np.ndarray, b: np.ndarray, max_shift: int) -> tuple[int, int]:
    """Whole pixels ``(down, right)`` by which the content of ``a`` sits off that of ``b`` (same-shape 2-D arrays).

    The peak of the normalised cross-power spectrum (AROSICS's global matching), searched within
    ``max_shift`` pixels, on Hann-tapered, mean-free images.
    """
    rows, cols = a.shape
    taper = np.outer(np.hanning(rows), np.hanning(cols))
    fa = np.fft.fft2((a - a.mean()) * taper)
    fb = np.fft.fft2((b - b.mean()) * taper)
    cross = fa * np.conj(fb)
    corr = np.abs(np.fft.ifft2(cross / (np.abs(cross) + 1e-12 * np.abs(cross).max())))
    best, shift = -1.0, (0, 0)
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            v = corr[dy % rows, dx % cols]
            if v > best + 1e-12:
                best, shift = v, (dy, dx)
    return shift


def _misfit(lr: np.ndarray, msi: np.ndarray, scale: int, valid: np.ndarray) -> float:
    """Relative RMS misfit of the LR bands regressed (with an offset) on the MSI degraded by the nominal PSF."""
    deg = degrade_spatial(np.where(np.isfinite(msi), msi, 0), scale)
    ok = valid & _hr_ok(msi, scale)
    if ok.sum() < msi.shape[0] + 2:
        return math.inf
    y = lr[:, ok].T.astype(np.float64)
    a = np.column_stack([deg[:, ok].T.astype(np.float64), np.ones(int(ok.sum()))])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    y0 = y - y.mean(axis=0)
    return float(np.sqrt(np.sum((a @ coef - y) ** 2) / max(np.sum(y0 ** 2), 1e-30)))


def _hr_ok(msi: np.ndarray, scale: int) -> np.ndarray:
    """``(r, c)`` LR-grid mask: every MSI pixel of the block is finite in every band."""
    b, rows, cols = msi.shape
    fin = np.isfinite(msi).all(axis=0)[:rows // scale * scale, :cols // scale * scale]
    return fin.reshape(rows // scale, scale, cols // scale, scale).all(axis=(1, 3))


def _box(msi: np.ndarray, scale: int) -> np.ndarray:
    """Block means of ``msi`` on the LR grid (NaN where a block holds any nodata)."""
    b, rows, cols = msi.shape
    return msi.reshape(b, rows // scale, scale, cols // scale, scale).mean(axis=(2, 4))


@dataclass
class _Coregistration:
    shift: np.ndarray
    coarse: tuple[int, int] = (0, 0)
    residual: tuple[float, float] | None = None
    sigma: float | None = None
    notes: list[str] = field(default_factory=list)


def _coregister(crop_at, scale: int, snap, prog: Progress) -> _Coregistration:
    """The shift (down, right; HR pixels) that registers the LR-HSI with the HR-MSI.

    ``crop_at(shift)`` gives ``(lr, warp)`` for the central crop of the common area of the LR grid moved by
    ``shift``: the LR values there ``(bands, r, c)`` and ``warp(shift)``, the MSI on that crop's HR grid moved by ``shift``.
    """
    res = _Coregistration(np.zeros(2))
    lr, warp = crop_at(res.shift)
    msi = warp(res.shift)
    valid = np.isfinite(lr).all(axis=0)
    lr_pc, msi_pc = _first_component(lr), _first_component(_box(msi, scale))
    # Where the MSI's content sits relative to the LR's is where each LR pixel's footprint lies on the grid.
    k = phase_correlation_shift(msi_pc, lr_pc, max(0, min(MAX_COARSE_LR_PX, min(lr.shape[1:]) // 4)))
    if k != (0, 0):
        moved = np.array(k, float) * scale
        before, after = _misfit(lr, msi, scale, valid), _misfit(lr, warp(moved), scale, valid)
        if after < before:
            res.shift, res.coarse = moved, k
            lr, warp = crop_at(moved)
            msi, valid = warp(moved), np.isfinite(lr).all(axis=0)
            res.notes.append(f"phase correlation: the LR-HSI's pixels lie {k[0]:+d} LR px down, {k[1]:+d} LR px right of "
                             f"where its grid puts them (misfit {before:.4f} -> {after:.4f})")
        else:
            res.notes.append(f"phase correlation suggested {k[0]:+d}, {k[1]:+d} LR px, but it did not lower the misfit "
                             f"({before:.4f} -> {after:.4f}): not applied")
    max_shift = max(2.5, scale / 2 + 1.0)
    for rnd in range(MAX_ROUNDS + 1):
        prog.report(0.1 + 0.6 * rnd / (MAX_ROUNDS + 1), f"co-registration: estimating the sub-pixel offset (round {rnd + 1})")
        try:
            reg = estimate_registration(lr, msi, scale, max_shift=max_shift, sigma_bounds=(0.2 * scale, 1.2 * scale),
                                        valid=valid)
        except (ValueError, np.linalg.LinAlgError) as exc:
            res.notes.append(f"co-registration skipped: the offset could not be estimated ({exc})")
            return res
        if rnd == 0 and reg.residual >= reg.residual_centred:
            res.notes.append(f"sub-pixel offset: none found (the shifted PSF explains nothing more than the centred one, "
                             f"relative residual {reg.residual:.4f})")
            res.residual, res.sigma = (reg.dy, reg.dx), reg.sigma
            return res
        res.residual, res.sigma = (reg.dy, reg.dx), reg.sigma
        if rnd == MAX_ROUNDS or (rnd > 0 and max(abs(reg.dy), abs(reg.dx)) < CONVERGED_PX):
            break
        res.shift = snap(res.shift + np.array([reg.dy, reg.dx]))
        msi = warp(res.shift)
        max_shift = REFINE_MAX_PX
    return res


# --------------------------------------------------------------------------- the job


def prepare_pair(
    lr: str | os.PathLike,
    msi: str | os.PathLike | list[str | os.PathLike],
    lr_out: str | os.PathLike,
    msi_out: str | os.PathLike,
    report_out: str | os.PathLike | None = None,
    scale: int = 0,
    band_order: list[str] | None = None,
    reflectance_scale: float = DEFAULT_REFLECTANCE_SCALE,
    coregister: bool = True,
    progress: Progress | None = None,
) -> PrepareResult:
    """Write the LR-HSI ``lr_out`` and the HR-MSI ``msi_out`` as *Super-resolve* takes them (module docstring).

    ``lr``: an EnMAP L2A folder / ``METADATA.XML`` or a raster; ``msi``: a Sentinel-2 ``.SAFE`` folder / metadata
    file, a raster, or a list of rasters; ``scale``: HR pixels per LR pixel (0 = the nearest integer ratio of the
    LR pixel to the finest MSI band's); ``band_order``: MSI band names in output order (a model's
    ``msi_band_names``; default: a Sentinel-2 product's land bands B02..B12, else every band as given);
    ``reflectance_scale``: output units = reflectance x this. Outputs are float32, NaN = nodata; the LR-HSI keeps
    its bands (wavelengths, FWHM, ``bbl``). Raises :class:`core.products.ProductError` (a ``ValueError``) naming the
    input and the problem, before anything is written.
    """
    t0 = time.perf_counter()
    prog = as_progress(progress)
    hsi = open_hsi(lr)
    lr_label = f"LR-HSI {Path(lr).name}"
    with RasterReader(hsi.path) as reader:
        lmeta = reader.meta
        if lmeta.bands != hsi.bands:
            raise ProductError(f"{lr_label}: {lmeta.bands} bands read, {hsi.bands} described")
        lr_grid = _lr_grid(lmeta)
        nodata_value = hsi.fill_value if all(v is None for v in lmeta.nodata) else None
        bands, names, notes = _select(open_msi(msi), band_order)
        notes = list(hsi.notes) + notes
        natives = [native_grid(b, lr_grid.crs_wkt) for b in bands]
        finest = min(n.px for n in natives)
        if not scale:
            ratio = lr_grid.px / finest
            scale = round(ratio)
            notes.append(f"scale {scale}: the nearest integer ratio of the LR pixel ({lr_grid.px:g}) to the finest MSI "
                         f"band's ({finest:g}) is {ratio:.3f}")
        if not 2 <= scale <= 16:
            raise ProductError(f"scale {scale} is outside 2..16 (LR pixel {lr_grid.px:g}, finest MSI pixel {finest:g})")
        plans = [BandPlan(nm, b, n) for nm, b, n in zip(names, bands, natives, strict=True)]
        prog.report(0.02, f"{hsi.bands} HSI bands, {len(plans)} MSI bands ({', '.join(names)}), scale {scale}")

        def crop_window(shift: np.ndarray) -> Window:
            """The central crop (at most ESTIMATE_LR_PX a side) of the common area of the LR grid moved by ``shift``."""
            w = _common_window(_moved(lr_grid, shift, scale), natives, lr_label)
            cw, ch = min(ESTIMATE_LR_PX, w.width), min(ESTIMATE_LR_PX, w.height)
            return Window(w.col_off + (w.width - cw) // 2, w.row_off + (w.height - ch) // 2, cw, ch)

        def warp_onto(crop: Window, shift: np.ndarray) -> np.ndarray:
            prog.check()
            g = _window_grid(_moved(lr_grid, shift, scale), crop, scale)
            return np.stack([warp_band(p.band, g, _resampling(p.native, g)) * np.float32(p.factor) for p in plans])

        # The units, from the crop of the first common area.
        crop = crop_window(np.zeros(2))
        probe = _lr_values(reader.read(crop), hsi, nodata_value, 1.0)
        lr_factor, lr_units = _unit_factor(probe[~hsi.bad_bands], hsi.units, reflectance_scale, lr_label)
        notes.append(f"LR-HSI values: {lr_units}")
        for p in plans:
            g = _window_grid(lr_grid, crop, scale)
            p.factor, p.units_note = _unit_factor(warp_band(p.band, g, _resampling(p.native, g)), p.band.units,
                                                  reflectance_scale, f"HR-MSI band {p.name}")

        def crop_at(shift: np.ndarray):
            c = crop_window(shift)
            lr_c = _lr_values(reader.read(c), hsi, nodata_value, lr_factor)[~hsi.bad_bands]
            return lr_c[np.isfinite(lr_c).any(axis=(1, 2))], lambda s: warp_onto(c, s)

        if coregister:
            reg = _coregister(crop_at, scale, lambda s: _snap(s, lr_grid, natives, scale), prog.sub(0.05, 0.75))
            notes += reg.notes
        else:
            reg = _Coregistration(np.zeros(2))
            notes.append("co-registration off: the grids are taken as they are")
        shift = reg.shift
        moved = _moved(lr_grid, shift, scale)
        win = _common_window(moved, natives, lr_label)
        lr_out_grid = Grid(moved.x0 + win.col_off * moved.px, moved.y0 - win.row_off * moved.py, moved.px, moved.py,
                           win.height, win.width, moved.crs_wkt)
        msi_grid = _window_grid(moved, win, scale)
        for p in plans:
            p.resampling = _resampling(p.native, msi_grid)
        lr_c, warp = crop_at(shift)
        _units_check(lr_c, warp(shift), notes)

        prog.report(0.78, "writing the LR-HSI")
        md = {"hsrdiff_prepared_units": f"reflectance x {reflectance_scale:g}",
              "hsrdiff_prepared_shift_hr_px": f"{shift[0]:.4f} {shift[1]:.4f}"}
        with bounded_gdal_cache():
            lr_w = RasterWriter(lr_out, (hsi.bands, win.height, win.width), lr_out_grid.geotransform, lr_grid.crs_wkt,
                                band_names=hsi.band_names, wavelengths=hsi.wavelengths, fwhm=hsi.fwhm,
                                bad_bands=hsi.bad_bands, metadata={**md, "hsrdiff_prepared_source": hsi.kind})
            msi_w = None
            try:
                for w in iter_windows(win.height, win.width, 256):
                    prog.check()
                    src = Window(win.col_off + w.col_off, win.row_off + w.row_off, w.width, w.height)
                    lr_w.write(_lr_values(reader.read(src), hsi, nodata_value, lr_factor), w)
                msi_w = RasterWriter(msi_out, (len(plans), msi_grid.rows, msi_grid.cols), msi_grid.geotransform,
                                     lr_grid.crs_wkt, band_names=names, wavelengths=_band_centres(names), metadata=md)
                for k, p in enumerate(plans):
                    prog.report(0.8 + 0.18 * k / len(plans), f"warping {p.name} ({p.resampling})")
                    a = warp_band(p.band, msi_grid, p.resampling) * np.float32(p.factor)
                    p.valid_fraction = float(np.isfinite(a).mean())
                    msi_w.write(a, band_offset=k)
                res = PrepareResult(str(lr_out), str(msi_out), str(report_out) if report_out else None, scale, names,
                                    lr_out_grid, msi_grid, plans, f"{hsi.kind} {Path(hsi.path).name}",
                                    (float(shift[0]), float(shift[1])), reg.coarse, reg.residual, reg.sigma, notes)
                res.notes += _summary(res)
                page = render_report(res) if report_out else None
            except BaseException:
                lr_w.abort()
                if msi_w is not None:
                    msi_w.abort()
                raise
            commit_all([lr_w, msi_w])
    if page is not None:
        try:
            _write_text_atomically(Path(report_out), page)
        except OSError as exc:
            for p in (lr_out, msi_out):
                Path(p).unlink(missing_ok=True)
            raise ProductError(f"{report_out}: cannot write the report ({exc.strerror or exc}); no output was written") from exc
    res.seconds = time.perf_counter() - t0
    prog.report(1.0, f"pair prepared in {res.seconds:.1f} s")
    return res


def _band_centres(names: list[str]) -> np.ndarray | None:
    """Response-weighted centre wavelengths (nm) of Sentinel-2 bands ``names``; None unless all are Sentinel-2 bands."""
    wl, known, curves = load_srf_csv("sentinel2")
    if not all(n in known for n in names):
        return None
    return np.array([float(np.sum(wl * curves[known.index(n)]) / np.sum(curves[known.index(n)])) for n in names])


def _units_check(lr: np.ndarray, msi: np.ndarray, notes: list[str]) -> None:
    """A warning in ``notes`` when the LR-HSI's (good bands) and the HR-MSI's medians differ more than 5 times."""
    la, lb = lr[np.isfinite(lr)], msi[np.isfinite(msi)]
    if la.size and lb.size:
        ma, mb = float(np.median(la)), float(np.median(lb))
        if ma > 0 and mb > 0 and not 0.2 <= mb / ma <= 5:
            notes.append(f"WARNING: the HR-MSI's median ({mb:.4g}) is {mb / ma:.3g} times the LR-HSI's ({ma:.4g}): the two "
                         "are probably in different units")


def _conversion(p: BandPlan) -> str:
    b = p.band
    if b.units == "reflectance" and b.gain != 0:
        q, off = 1 / b.gain, b.offset / b.gain
        return f"(DN {off:+g}) / {q:g}" if off else f"DN / {q:g}"
    if b.gain != 1 or b.offset != 0:
        return f"DN x {b.gain:g} {b.offset:+g}"
    return "values as read"


def _summary(res: PrepareResult) -> list[str]:
    lines = [f"{p.name}: {Path(p.band.path).name} ({p.band.source}), pixel {p.native.px:g} -> {res.msi_grid.px:g}, "
             f"{p.resampling}; value = {_conversion(p)}, {p.units_note}" for p in res.bands]
    dy, dx = res.shift
    hx, hy = res.msi_grid.px, res.msi_grid.py
    lines.append(f"co-registration: LR-HSI grid moved {dy:+.3f} HR px down, {dx:+.3f} HR px right "
                 f"({0.0 - dy * hy:+.3f} map units in y, {0.0 + dx * hx:+.3f} in x)"
                 + ("" if res.residual is None else f"; offset left {res.residual[0]:+.3f}, {res.residual[1]:+.3f} HR px")
                 + ("" if res.sigma is None else f", PSF sigma {res.sigma:.3f} HR px"))
    for what, g in (("LR-HSI", res.lr_grid), ("HR-MSI", res.msi_grid)):
        lines.append(f"{what}: {g.cols} x {g.rows} px of {g.px:g} x {g.py:g}, origin ({g.x0:.3f}, {g.y0:.3f})")
    return lines


def _write_text_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def render_report(res: PrepareResult) -> str:
    """A small self-contained HTML page: inputs, bands, offsets removed, resampling, co-registration, grids."""
    e = html.escape

    def table(head: list[str], rows: list[list[str]]) -> str:
        th = "".join(f"<th>{e(h)}</th>" for h in head)
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table border='1' cellpadding='3' cellspacing='0'><tr>{th}</tr>{body}</table>"

    bands = table(["band", "file", "from", "native px", "resampling", "value", "units", "valid %"],
                  [[p.name, Path(p.band.path).name, p.band.source, f"{p.native.px:g}", p.resampling, _conversion(p),
                    p.units_note, f"{100 * p.valid_fraction:.1f}"] for p in res.bands])
    dy, dx = res.shift
    reg = [["whole-LR-pixel shift (phase correlation)", f"{res.coarse_shift[0]:+d} down, {res.coarse_shift[1]:+d} right (LR px)"],
           ["LR grid moved by", f"{dy:+.3f} down, {dx:+.3f} right (HR px)"],
           ["offset left after it", "-" if res.residual is None else f"{res.residual[0]:+.3f} down, {res.residual[1]:+.3f} right (HR px)"],
           ["PSF sigma", "-" if res.sigma is None else f"{res.sigma:.3f} HR px"]]
    grids = table(["raster", "file", "size (cols x rows)", "pixel", "origin (x, y)", "CRS"],
                  [[w, p, f"{g.cols} x {g.rows}", f"{g.px:g} x {g.py:g}", f"{g.x0:.3f}, {g.y0:.3f}", describe_crs(g.crs_wkt)]
                   for w, p, g in (("LR-HSI", res.lr_path, res.lr_grid), ("HR-MSI", res.msi_path, res.msi_grid))])
    notes = "".join(f"<li>{e(n)}</li>" for n in res.notes)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Prepare pair</title></head><body>"
            f"<h2>Prepare pair</h2><p>LR-HSI: {e(res.lr_source)}; scale {res.scale}; "
            f"MSI bands {e(', '.join(res.msi_band_names))}</p>"
            f"<h3>MSI bands</h3>{bands}<h3>Co-registration</h3>{table(['', ''], reg)}<h3>Output grids</h3>{grids}"
            f"<h3>Log</h3><ul>{notes}</ul></body></html>")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.jobs.prepare", description=__doc__.splitlines()[0])
    p.add_argument("--lr", required=True, help="EnMAP L2A folder / METADATA.XML, or an LR-HSI raster")
    p.add_argument("--msi", required=True, nargs="+", help="Sentinel-2 .SAFE folder, or one or more rasters")
    p.add_argument("--lr-out", required=True)
    p.add_argument("--msi-out", required=True)
    p.add_argument("--report", help="HTML report")
    p.add_argument("--scale", type=int, default=0, help="HR pixels per LR pixel (0 = the nearest integer ratio)")
    p.add_argument("--bands", help="MSI band order, comma-separated (e.g. a model's: B02,B03,...)")
    p.add_argument("--no-coregister", action="store_true")
    a = p.parse_args(argv)
    try:
        res = prepare_pair(a.lr, a.msi if len(a.msi) > 1 else a.msi[0], a.lr_out, a.msi_out, a.report, a.scale,
                           a.bands.split(",") if a.bands else None, coregister=not a.no_coregister)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(res.notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
