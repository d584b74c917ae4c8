"""Check that an LR-HSI and an HR-MSI form a fusable pair, and find their common area.

A pair is fusable when both are north-up, share a CRS (or both have none: local pixel grids),
overlap, their pixel sizes differ by an integer factor ``scale`` in 2..16 (the same in x and y),
and every LR pixel edge falls on an MSI pixel edge. The common area is snapped to whole LR
pixels that lie entirely inside the MSI, so it is a window in each grid.

Nothing is cut silently: a grid offset inside the alignment tolerance is snapped, and an MSI
edge that cuts an LR pixel (so that LR row or column and its MSI pixels are left out) or a
pixel-size ratio that drifts measurably over the common area is reported in
:attr:`PairGeometry.notes` and logged as a warning (logger ``hsr_diff.pairing``).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

from osgeo import osr

from .raster_io import RasterMeta, Window, describe_crs, read_meta

__all__ = ["PairError", "PairGeometry", "check_pair"]

log = logging.getLogger("hsr_diff.pairing")

MIN_SCALE, MAX_SCALE = 2, 16
ALIGN_TOL = 0.01  # grid offsets up to ALIGN_TOL + rel_tol of an MSI pixel are snapped, larger ones refused
SNAP_NOTE = 1e-6  # offsets below this fraction of an MSI pixel are floating-point noise, snapped without a note


class PairError(ValueError):
    """The two rasters cannot be fused; the message names the layer(s) and the numbers."""


@dataclass(frozen=True)
class PairGeometry:
    """The common area of a pair.

    ``lr_window`` and ``msi_window`` cover the same ground; ``msi_window`` is ``scale`` times
    larger. ``geotransform`` is the MSI-grid geotransform of the common area and ``crs_wkt``
    the shared CRS ("" for local grids). ``notes`` says what was snapped or left out of the
    overlap (one sentence each, with the numbers; empty when the grids fit exactly).
    """

    scale: int
    lr_window: Window
    msi_window: Window
    geotransform: tuple[float, ...]
    crs_wkt: str
    notes: tuple[str, ...] = ()


def _meta(x: str | os.PathLike | RasterMeta) -> RasterMeta:
    return x if isinstance(x, RasterMeta) else read_meta(x)


def _same_crs(a: str, b: str) -> bool:
    sa, sb = osr.SpatialReference(), osr.SpatialReference()
    sa.ImportFromWkt(a)
    sb.ImportFromWkt(b)
    return bool(sa.IsSame(sb))


def check_pair(
    lr: str | os.PathLike | RasterMeta,
    msi: str | os.PathLike | RasterMeta,
    lr_name: str | None = None,
    msi_name: str | None = None,
    rel_tol: float = 1e-3,
) -> PairGeometry:
    """Validate an LR-HSI / HR-MSI pair and return its common area; raises :class:`PairError`.

    ``lr_name`` / ``msi_name`` are how the layers are called in messages (file names by default).
    ``rel_tol`` is the tolerance on the pixel-size ratio and on grid alignment, relative to an
    MSI pixel. Grid offsets up to ``ALIGN_TOL + rel_tol`` of an MSI pixel are snapped; what was
    snapped or left out of the overlap is in the result's ``notes`` (and logged as warnings).
    """
    lm, mm = _meta(lr), _meta(msi)
    ln = f"LR-HSI layer '{lr_name or os.path.basename(lm.path)}'"
    mn = f"HR-MSI layer '{msi_name or os.path.basename(mm.path)}'"

    for name, m in ((ln, lm), (mn, mm)):
        gt = m.north_up_geotransform
        if gt[2] != 0 or gt[4] != 0:
            raise PairError(f"{name} is rotated (geotransform {gt}); warp it to a north-up grid first")
        if gt[1] <= 0 or gt[5] >= 0:
            raise PairError(f"{name} has an unusual geotransform {gt}: expected positive pixel width and negative height")

    if bool(lm.crs_wkt) != bool(mm.crs_wkt):
        which, other = (ln, mn) if not lm.crs_wkt else (mn, ln)
        raise PairError(f"{which} has no CRS but {other} has one ({describe_crs(lm.crs_wkt or mm.crs_wkt)}); "
                        "assign the same CRS to both")
    if lm.crs_wkt and not _same_crs(lm.crs_wkt, mm.crs_wkt):
        raise PairError(f"CRS mismatch: {ln} is in {describe_crs(lm.crs_wkt)} but {mn} is in {describe_crs(mm.crs_wkt)}; "
                        "reproject one of them so both share a CRS")

    (lx, ly), (mx, my) = lm.pixel_size, mm.pixel_size
    rx, ry = lx / mx, ly / my
    scale = round(rx)
    if abs(rx - ry) > rel_tol * max(rx, ry):
        raise PairError(f"the pixel-size ratio differs in x ({rx:.4f}) and y ({ry:.4f}): {ln} has {lx:g} x {ly:g}, "
                        f"{mn} has {mx:g} x {my:g} pixels")
    if abs(rx - scale) > rel_tol * rx or not MIN_SCALE <= scale <= MAX_SCALE:
        raise PairError(f"the pixel-size ratio {rx:.4f} ({ln}: {lx:g}, {mn}: {mx:g} map units) is not an integer scale "
                        f"factor between {MIN_SCALE} and {MAX_SCALE}; resample the HR-MSI to a pixel size of "
                        f"{lx / max(round(rx), 1):g} first")

    # Extents (left, top, right, bottom) and their intersection.
    def extent(m: RasterMeta) -> tuple[float, float, float, float]:
        gt = m.north_up_geotransform
        return gt[0], gt[3], gt[0] + m.cols * gt[1], gt[3] + m.rows * gt[5]

    la, ma = extent(lm), extent(mm)
    left, top = max(la[0], ma[0]), min(la[1], ma[1])
    right, bottom = min(la[2], ma[2]), max(la[3], ma[3])
    if right <= left or top <= bottom:
        raise PairError(f"{ln} (extent {la[0]:g}, {la[3]:g} - {la[2]:g}, {la[1]:g}) and {mn} "
                        f"(extent {ma[0]:g}, {ma[3]:g} - {ma[2]:g}, {ma[1]:g}) do not overlap")

    # Alignment: the MSI origin must sit on an MSI-pixel multiple from the LR origin; offsets
    # within the tolerance are snapped (and noted).
    tol = ALIGN_TOL + rel_tol
    notes: list[str] = []
    off_x = (ma[0] - la[0]) / mx
    off_y = (la[1] - ma[1]) / my
    for axis, off, px in (("x", off_x, mx), ("y", off_y, my)):
        frac = off - round(off)
        if abs(frac) > tol:
            raise PairError(f"the grids are not aligned in {axis}: {mn}'s origin is {off - math.floor(off):.3f} of an "
                            f"MSI pixel off {ln}'s pixel edges; resample the HR-MSI onto a grid aligned with the LR-HSI")
        if abs(frac) > SNAP_NOTE:
            notes.append(f"the grids are offset by {frac:+.4f} of an HR-MSI pixel ({frac * px:+.4g} map units) in {axis}: "
                         f"{mn}'s pixel edges were snapped to {ln}'s (tolerance {tol:g} of an HR-MSI pixel); the output "
                         "lies on the HR-MSI grid")

    # Whole LR pixels inside both rasters; an MSI edge within the tolerance of an LR edge counts as on it.
    tl = tol / scale
    c0 = math.ceil((left - la[0]) / lx - tl)
    r0 = math.ceil((la[1] - top) / ly - tl)
    c1 = math.floor((right - la[0]) / lx + tl)
    r1 = math.floor((la[1] - bottom) / ly + tl)
    if c1 - c0 < 1 or r1 - r0 < 1:
        raise PairError(f"{ln} and {mn} overlap by less than one LR pixel")
    lr_window = Window(c0, r0, c1 - c0, r1 - r0)
    mc0 = round((la[0] + c0 * lx - ma[0]) / mx)
    mr0 = round((ma[1] - (la[1] - r0 * ly)) / my)
    msi_window = Window(mc0, mr0, lr_window.width * scale, lr_window.height * scale)

    # Per axis, in MSI pixels: where the MSI window starts in the raster, where the overlap with the
    # LR extent starts and ends, and how far the MSI window's edges sit from the LR window's (positive
    # east / south), at its start and at its far end.
    x_edges = ((ma[0] + mc0 * mx - (la[0] + c0 * lx)) / mx,
               (ma[0] + (mc0 + msi_window.width) * mx - (la[0] + c1 * lx)) / mx)
    y_edges = ((la[1] - r0 * ly - (ma[1] - mr0 * my)) / my,
               (la[1] - r1 * ly - (ma[1] - (mr0 + msi_window.height) * my)) / my)
    axes = (
        ("x", "column", ("west", "east"), rx, lx, lr_window.width, mc0, mm.cols,
         max(0, round((la[0] - ma[0]) / mx)), min(mm.cols, round((la[2] - ma[0]) / mx)), x_edges),
        ("y", "row", ("north", "south"), ry, ly, lr_window.height, mr0, mm.rows,
         max(0, round((ma[1] - la[1]) / my)), min(mm.rows, round((ma[1] - la[3]) / my)), y_edges),
    )
    for axis, unit, (near, far), ratio, lr_px, n_lr, m0, m_size, ov0, ov1, (d0, d1) in axes:
        n_msi, drift = n_lr * scale, d1 - d0
        if abs(d1) > 0.5 or m0 < 0 or m0 + n_msi > m_size:
            raise PairError(f"the pixel-size ratio {ratio:.5f} is within the tolerance of {scale}, but over the "
                            f"{n_lr} LR pixels of the common area {mn}'s grid drifts {drift:+.2f} of an HR-MSI pixel "
                            f"in {axis} from {ln}'s; resample the HR-MSI to a pixel size of exactly {lr_px / scale:g}")
        if abs(drift) > tol:
            notes.append(f"the pixel-size ratio in {axis} is {ratio:.5f}, not exactly {scale}: over the {n_lr} LR pixels "
                         f"of the common area {mn}'s grid drifts {drift:+.3f} of an HR-MSI pixel from {ln}'s")
        for side, cut in ((near, m0 - ov0), (far, ov1 - (m0 + n_msi))):
            if cut > 0:
                notes.append(f"{mn}'s {side} edge cuts a {unit} of {ln} ({cut} of its {scale} HR-MSI {unit}s are covered): "
                             f"that LR {unit} and the {cut} HR-MSI {unit}(s) over it are left out, the common area is "
                             "snapped to whole LR-HSI pixels")
    for n in notes:
        log.warning(n)
    return PairGeometry(scale, lr_window, msi_window, mm.window_geotransform(msi_window), mm.crs_wkt, tuple(notes))


def align_same_grid(
    a: str | os.PathLike | RasterMeta, b: str | os.PathLike | RasterMeta, a_name: str, b_name: str, rel_tol: float = 1e-3
) -> tuple[Window, Window]:
    """Windows of two rasters on the same pixel grid that cover their common area.

    Used to score a result against a reference: both need the same pixel size and aligned
    grids (a result written on the common area of a pair sits inside the reference).
    """
    am, bm = _meta(a), _meta(b)
    ga, gb = am.north_up_geotransform, bm.north_up_geotransform
    if abs(ga[1] - gb[1]) > rel_tol * abs(ga[1]) or abs(ga[5] - gb[5]) > rel_tol * abs(ga[5]):
        raise PairError(f"{a_name} has {abs(ga[1]):g} x {abs(ga[5]):g} pixels but {b_name} has "
                        f"{abs(gb[1]):g} x {abs(gb[5]):g}: they must share a pixel grid")
    if am.crs_wkt and bm.crs_wkt and not _same_crs(am.crs_wkt, bm.crs_wkt):
        raise PairError(f"CRS mismatch: {a_name} is in {describe_crs(am.crs_wkt)} but {b_name} is in {describe_crs(bm.crs_wkt)}")
    dx, dy = (gb[0] - ga[0]) / ga[1], (gb[3] - ga[3]) / ga[5]
    if abs(dx - round(dx)) > 0.01 or abs(dy - round(dy)) > 0.01:
        raise PairError(f"the grids of {a_name} and {b_name} are not aligned (offset {dx:.3f}, {dy:.3f} pixels)")
    dx, dy = round(dx), round(dy)
    c0, r0 = max(0, dx), max(0, dy)
    c1, r1 = min(am.cols, dx + bm.cols), min(am.rows, dy + bm.rows)
    if c1 <= c0 or r1 <= r0:
        raise PairError(f"{a_name} and {b_name} do not overlap")
    return Window(c0, r0, c1 - c0, r1 - r0), Window(c0 - dx, r0 - dy, c1 - c0, r1 - r0)
