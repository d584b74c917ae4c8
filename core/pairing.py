"""Check that an LR-HSI and an HR-MSI form a fusable pair, and find their common area.

A pair is fusable when both are north-up, share a CRS (or both have none: local pixel grids),
overlap, their pixel sizes differ by an integer factor ``scale`` in 2..16 (the same in x and y),
and every LR pixel edge falls on an MSI pixel edge. The common area is snapped to whole LR
pixels that lie entirely inside the MSI, so it is a window in each grid.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from osgeo import osr

from .raster_io import RasterMeta, Window, describe_crs, read_meta

__all__ = ["PairError", "PairGeometry", "check_pair"]

MIN_SCALE, MAX_SCALE = 2, 16


class PairError(ValueError):
    """The two rasters cannot be fused; the message names the layer(s) and the numbers."""


@dataclass(frozen=True)
class PairGeometry:
    """The common area of a pair.

    ``lr_window`` and ``msi_window`` cover the same ground; ``msi_window`` is ``scale`` times
    larger. ``geotransform`` is the MSI-grid geotransform of the common area and ``crs_wkt``
    the shared CRS ("" for local grids).
    """

    scale: int
    lr_window: Window
    msi_window: Window
    geotransform: tuple[float, ...]
    crs_wkt: str


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
    MSI pixel.
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

    # Alignment: the MSI origin must sit on an MSI-pixel multiple from the LR origin.
    off_x = (ma[0] - la[0]) / mx
    off_y = (la[1] - ma[1]) / my
    for axis, off in (("x", off_x), ("y", off_y)):
        if abs(off - round(off)) > 0.01 + rel_tol:
            raise PairError(f"the grids are not aligned in {axis}: {mn}'s origin is {off - math.floor(off):.3f} of an "
                            f"MSI pixel off {ln}'s pixel edges; resample the HR-MSI onto a grid aligned with the LR-HSI")

    # Whole LR pixels inside both rasters.
    c0 = math.ceil((left - la[0]) / lx - 1e-6)
    r0 = math.ceil((la[1] - top) / ly - 1e-6)
    c1 = math.floor((right - la[0]) / lx + 1e-6)
    r1 = math.floor((la[1] - bottom) / ly + 1e-6)
    if c1 - c0 < 1 or r1 - r0 < 1:
        raise PairError(f"{ln} and {mn} overlap by less than one LR pixel")
    lr_window = Window(c0, r0, c1 - c0, r1 - r0)
    mc0 = round((la[0] + c0 * lx - ma[0]) / mx)
    mr0 = round((ma[1] - (la[1] - r0 * ly)) / my)
    msi_window = Window(mc0, mr0, lr_window.width * scale, lr_window.height * scale)
    return PairGeometry(scale, lr_window, msi_window, mm.window_geotransform(msi_window), mm.crs_wkt)


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
