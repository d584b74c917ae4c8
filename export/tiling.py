"""Tiled inference over rasters of any size, without seams and with bounded memory.

* **Layout** (:func:`axis_spans`): tiles of ``tile`` pixels overlapping by at least ``overlap``
  along each axis; the last tile is pulled back towards full size as far as that keeps its overlap
  with the previous one within ``2 * overlap`` (the pending strips below stay ``2 * overlap`` rows
  at most) and every pixel in at most two tiles per axis (hence ``overlap <= tile / 2``).
* **Blending**: each tile's result is weighted by a separable raised-cosine window that ramps
  over each overlap with a neighbour (``sin^2`` up, ``cos^2`` down, flat elsewhere and at the
  raster border) and divided by the summed weights of all tiles, so the weights of every pixel
  sum to one and no seam shows.
* **Noise**: one :class:`~export.sampler.NoiseField` on the whole output grid, so overlapping
  tiles draw the same ``Z_T`` and step noise at the same pixels and the result does not depend on
  the tiling beyond the denoiser's own receptive field (for a per-pixel denoiser, not at all).
* **Memory**: each pixel has an *owner* tile (its row/column between the owner's start and
  the next tile's start). Tiles run in row-major order; a tile's contributions to later owners'
  regions are kept as small pieces, and once tile ``(i, j)`` is done its own region is final and
  handed to the sink (written to disk). Peak memory is the batch of tiles in flight plus the
  pending overlap strips (``overlap x raster width x bands``), never the raster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from core.resample import upsample_window
from core.uncertainty import calibrated_uncertainty

from . import defaults as dflt
from .metadata import ModelMetadata
from .sampler import Denoiser, NoiseField, StepCounter, make_plan, reverse_diffusion

__all__ = [
    "Window",
    "Tile",
    "axis_spans",
    "axis_weights",
    "tile_grid",
    "upsample_window",
    "PairSource",
    "ArrayPairSource",
    "StreamedBaseSource",
    "BackProjection",
    "with_conditioning",
    "ArraySink",
    "TileRun",
    "run_tiled",
    "fuse_arrays",
    "TiledStats",
    "msi_validity",
]

try:  # the project's window type when GDAL is importable; an identical NamedTuple otherwise
    from core.raster_io import Window
except ImportError:  # pragma: no cover - inference without GDAL
    from typing import NamedTuple

    class Window(NamedTuple):  # type: ignore[no-redef]
        col_off: int
        row_off: int
        width: int
        height: int


# ---------------------------------------------------------------------- layout and weights


def axis_spans(extent: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` tiles covering ``0..extent`` (see the module docstring)."""
    if tile < 1:
        raise ValueError(f"tile must be positive, got {tile}")
    if not 0 <= overlap <= tile // 2:
        raise ValueError(f"overlap must be between 0 and half the tile ({tile // 2}), got {overlap}")
    if extent <= tile:
        return [(0, extent)]
    stride = tile - overlap
    n = math.ceil((extent - tile) / stride) + 1
    starts = [i * stride for i in range(n - 1)]
    last = max(extent - tile, starts[-1] + tile - 2 * overlap)  # pulled back, overlapping by 2 x overlap at most
    if n >= 3:
        last = max(last, starts[n - 3] + tile)  # never three tiles on one pixel
    starts.append(last)
    return [(a, min(a + tile, extent)) for a in starts]


def axis_weights(spans: Sequence[tuple[int, int]], extent: int) -> list[np.ndarray]:
    """Per tile, its normalised 1-D blending weights (float64, they sum to 1 over tiles at each pixel)."""
    raw = []
    for i, (a, b) in enumerate(spans):
        w = np.ones(b - a)
        if i > 0 and spans[i - 1][1] > a:
            ov = spans[i - 1][1] - a
            w[:ov] = np.sin(0.5 * np.pi * (np.arange(ov) + 0.5) / ov) ** 2
        if i + 1 < len(spans) and spans[i + 1][0] < b:
            ov = b - spans[i + 1][0]
            w[b - a - ov:] *= np.cos(0.5 * np.pi * (np.arange(ov) + 0.5) / ov) ** 2
        raw.append(w)
    total = np.zeros(extent)
    for (a, b), w in zip(spans, raw, strict=True):
        total[a:b] += w
    if np.any(total <= 0):
        raise AssertionError("tile layout leaves pixels uncovered")
    return [w / total[a:b] for (a, b), w in zip(spans, raw, strict=True)]


@dataclass(frozen=True)
class Tile:
    """Tile ``(i, j)`` of the grid: output rows ``row0..row0+height`` and cols ``col0..col0+width``."""

    i: int
    j: int
    row0: int
    col0: int
    height: int
    width: int

    @property
    def window(self) -> Window:
        return Window(self.col0, self.row0, self.width, self.height)


def tile_grid(rows: int, cols: int, tile: int, overlap: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]], list[Tile]]:
    """Row spans, column spans and the tiles in row-major order."""
    rs, cs = axis_spans(rows, tile, overlap), axis_spans(cols, tile, overlap)
    tiles = [Tile(i, j, a, c, b - a, d - c) for i, (a, b) in enumerate(rs) for j, (c, d) in enumerate(cs)]
    return rs, cs, tiles


# ---------------------------------------------------------------------- inputs


class PairSource(Protocol):
    """Where tiles come from: the HR output grid and windows of the (physical-unit) inputs."""

    rows: int
    cols: int
    hsi_bands: int
    msi_bands: int

    def read(self, window: Window, lr_fill: np.ndarray | None = None,
             msi_fill: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(lr_up (C,h,w), msi (M,h,w), invalid (C,h,w) bool)`` in physical units.

        NaNs of the inputs are replaced by the fills (per band); ``invalid`` marks output pixels
        whose LR pixel (that band) or MSI pixel (any band) is nodata.
        """


class ArrayPairSource:
    """A source over in-memory arrays: LR ``(C, r, c)`` and MSI ``(M, r * scale, c * scale)``."""

    consistency = None  # a BackProjection, set by with_conditioning

    def __init__(self, lr: np.ndarray, msi: np.ndarray, scale: int):
        self.lr = np.asarray(lr, np.float32)
        self.msi = np.asarray(msi, np.float32)
        self.scale = int(scale)
        c, r, k = self.lr.shape
        if self.msi.shape[1:] != (r * self.scale, k * self.scale):
            raise ValueError(f"MSI {self.msi.shape[1:]} is not LR {(r, k)} times scale {self.scale}")
        self.hsi_bands, self.msi_bands = c, self.msi.shape[0]
        self.rows, self.cols = self.msi.shape[1:]
        self.lr_shape = (r, k)

    def _lr(self, w: Window) -> np.ndarray:
        return self.lr[:, w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width]

    def read_lr_block(self, row0: int, col0: int, rows: int, cols: int) -> np.ndarray:
        return self.lr[:, row0:row0 + rows, col0:col0 + cols]

    def read_msi_block(self, row0: int, col0: int, rows: int, cols: int) -> np.ndarray:
        return self.msi[:, row0:row0 + rows, col0:col0 + cols]

    def read(self, window: Window, lr_fill=None, msi_fill=None):
        up, invalid = upsample_window(self._lr, self.lr.shape[1], self.lr.shape[2], self.scale, window, lr_fill)
        msi = self.msi[:, window.row_off:window.row_off + window.height, window.col_off:window.col_off + window.width]
        return up, *msi_validity(msi, invalid, msi_fill)


class StreamedBaseSource:
    """A source whose conditioning image is a global base computed window by window.

    For models trained on a global conditioning image (``core.conditioning``, e.g. MTF-GLP-HS):
    ``stream.window(row0, col0, rows, cols)`` gives the base over a window of the output grid;
    validity masks and the MSI still come from ``inner``; only ``lr_up`` is replaced.
    """

    consistency = None  # a BackProjection, set by with_conditioning

    def __init__(self, inner, stream):
        self.inner, self.stream = inner, stream
        self.rows, self.cols, self.hsi_bands, self.msi_bands = inner.rows, inner.cols, inner.hsi_bands, inner.msi_bands

    def read(self, window: Window, lr_fill=None, msi_fill=None):
        _, msi, invalid = self.inner.read(window, lr_fill, msi_fill)
        return self.stream.window(window.row_off, window.col_off, window.height, window.width), msi, invalid


class BackProjection:
    """Each tile's result made consistent with the LR-HSI (:func:`core.consistency.back_project`).

    ``read_lr_block(row0, col0, rows, cols)`` reads the LR-HSI (model bands and units); ``psf``: the kernel or sigma
    from the output onto the LR grid; ``noise_std`` ``(C,)``: the LR-HSI's noise per band. A tile is corrected on the
    LR pixels whose HR block lies inside it; near a tile's edge, where that has no neighbours, the blending weights
    of the overlap take over from the next tile.
    """

    def __init__(self, read_lr_block, scale: int, psf, noise_std: np.ndarray):
        self.read_lr_block, self.scale, self.psf, self.noise_std = read_lr_block, int(scale), psf, noise_std

    def __call__(self, window: Window, mean: np.ndarray) -> np.ndarray:
        from core.consistency import back_project

        s = self.scale
        r0, c0 = -(-window.row_off // s), -(-window.col_off // s)
        r1, c1 = (window.row_off + window.height) // s, (window.col_off + window.width) // s
        if r1 - r0 < 2 or c1 - c0 < 2:
            return mean
        sl = (slice(None), slice(r0 * s - window.row_off, r1 * s - window.row_off),
              slice(c0 * s - window.col_off, c1 * s - window.col_off))
        out = mean.copy()
        out[sl] = back_project(mean[sl], self.read_lr_block(r0, c0, r1 - r0, c1 - c0), s, self.psf, self.noise_std)
        return out


def with_conditioning(source, md: ModelMetadata, progress=None, dead_lr: np.ndarray | None = None,
                      dead_msi: np.ndarray | None = None, psf=None, fit=None, noise_std: np.ndarray | None = None):
    """``source`` itself for a bicubic-conditioned model, else a :class:`StreamedBaseSource` over it.

    ``source`` has ``lr_shape`` and ``read_lr_block`` / ``read_msi_block`` (``row0, col0, rows, cols``
    on the LR and the output grid); the base's global fit reports to ``progress(fraction, message)``.
    ``psf`` (a kernel or sigma) replaces the model's nominal ``psf_sigma``, e.g. with the pair's estimate;
    ``fit``: the base's global part from an earlier fit of the same pair (``stream.params``), used as is.
    ``noise_std`` ``(C,)``: the LR-HSI's noise per band; given, every tile's result is made consistent with the
    LR-HSI through ``psf`` (:class:`BackProjection`, the source's ``consistency``).
    """
    psf = md.psf_sigma if psf is None else psf
    if md.base != "bicubic":
        from core.conditioning import streamed_base

        stream = streamed_base(md.base, source.read_lr_block, source.read_msi_block, source.lr_shape, source.scale,
                               psf, dead_lr, dead_msi, progress, fit)
        source = StreamedBaseSource(source, stream)
    if noise_std is not None:
        inner = source.inner if isinstance(source, StreamedBaseSource) else source
        source.consistency = BackProjection(inner.read_lr_block, inner.scale, psf, np.asarray(noise_std, np.float64))
    return source


def msi_validity(msi: np.ndarray, invalid: np.ndarray, msi_fill=None, good_bands: np.ndarray | None = None):
    """Fill the MSI's NaNs with ``msi_fill`` and add its nodata pixels (any good band NaN) to ``invalid``."""
    bad = ~np.isfinite(msi)
    if bad.any():
        check = bad if good_bands is None or not good_bands.any() else bad[good_bands]
        invalid = invalid | check.any(axis=0)[None]
        f = np.zeros(msi.shape[0], np.float32) if msi_fill is None else np.asarray(msi_fill, np.float32)
        msi = np.where(bad, f[:, None, None], msi)
    return msi, invalid


class Sink(Protocol):
    def write(self, window: Window, mean: np.ndarray, std: np.ndarray | None) -> None:
        """Final values (NaN = nodata) of one window of the output grid."""


class ArraySink:
    """Collects the output in memory: ``mean`` ``(C, rows, cols)`` and ``std`` (or None)."""

    def __init__(self, bands: int, rows: int, cols: int, with_std: bool):
        self.mean = np.full((bands, rows, cols), np.nan, np.float32)
        self.std = np.full((bands, rows, cols), np.nan, np.float32) if with_std else None
        self.writes = 0

    def write(self, window: Window, mean: np.ndarray, std: np.ndarray | None) -> None:
        sl = (slice(None), slice(window.row_off, window.row_off + window.height),
              slice(window.col_off, window.col_off + window.width))
        self.mean[sl] = mean
        if self.std is not None and std is not None:
            self.std[sl] = std
        self.writes += 1


# ---------------------------------------------------------------------- the tiled run


@dataclass
class TiledStats:
    tiles: int
    tile_rows: int
    tile_cols: int
    tile: int
    overlap: int
    batch: int
    steps: int
    samples: int
    evaluations: int
    seconds: float = 0.0
    provider: str = ""
    max_pending_pixels: int = 0
    notes: list[str] = field(default_factory=list)


def _pad_to(a: np.ndarray, hp: int, wp: int) -> np.ndarray:
    ph, pw = hp - a.shape[-2], wp - a.shape[-1]
    if ph == 0 and pw == 0:
        return a
    mode = "reflect" if min(a.shape[-2:]) > 1 else "edge"
    return np.pad(a, ((0, 0), (0, ph), (0, pw)), mode=mode)


class TileRun:
    """The layout, batching, noise and blending of one tiled run over a ``rows x cols`` output grid.

    :func:`run_tiled` walks it in one process; :mod:`export.batch` hands its groups to Dask workers
    and assembles the owner regions on the client. Both give the same bits: a group's tiles are
    denoised by :meth:`denoise` from the same inputs and noise, a tile's weighted contributions are
    cut by :meth:`pieces`, and an owner region is summed by :meth:`assemble` from zeros, adding the
    pieces in row-major tile order.
    """

    def __init__(self, md: ModelMetadata, rows: int, cols: int, steps: int = dflt.DEFAULT_STEPS,
                 sampler: str = dflt.DEFAULT_SAMPLER, eta: float = dflt.DEFAULT_ETA, seed: int = dflt.DEFAULT_SEED,
                 samples: int = dflt.DEFAULT_SAMPLES, tile: int = dflt.DEFAULT_TILE, overlap: int = dflt.DEFAULT_OVERLAP,
                 batch: int = 1, with_std: bool | None = None):
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.md, self.rows, self.cols, self.samples, self.batch = md, int(rows), int(cols), int(samples), int(batch)
        m = md.spatial_multiple
        self.tile = int(math.ceil(tile / m) * m)
        self.overlap = int(overlap)
        self.plan = make_plan(md, steps, sampler, eta)
        self.with_std = samples > 1 if with_std is None else bool(with_std)
        rs, cs, self.tiles = tile_grid(self.rows, self.cols, self.tile, self.overlap)
        self.wy, self.wx = axis_weights(rs, self.rows), axis_weights(cs, self.cols)
        self.nr, self.nc = len(rs), len(cs)
        self.own_r = [a for a, _ in rs] + [self.rows]  # owner region (i, j): rows own_r[i] .. own_r[i + 1]
        self.own_c = [a for a, _ in cs] + [self.cols]
        self.field = NoiseField(seed, md.hsi_bands)
        self.groups: list[list[Tile]] = []  # consecutive tiles with the same padded shape share a batch
        for t in self.tiles:
            if self.groups and len(self.groups[-1]) < batch and self.padded(self.groups[-1][0]) == self.padded(t):
                self.groups[-1].append(t)
            else:
                self.groups.append([t])

    @property
    def evaluations(self) -> int:
        """Network evaluations of the whole run (each tile, sample and step)."""
        return len(self.tiles) * self.samples * len(self.plan)

    def padded(self, t: Tile) -> tuple[int, int]:
        m = self.md.spatial_multiple
        return int(math.ceil(t.height / m) * m), int(math.ceil(t.width / m) * m)

    def denoise(self, denoiser: Denoiser, source: PairSource, group: Sequence[Tile], io_binding: bool | None = None,
                progress: StepCounter | None = None, message: str = "denoising"):
        """``[(tile, mean (C, h, w), std or None)]`` of one group, in physical units, NaN on invalid pixels."""
        md = self.md
        hn, mn = md.hsi_normalization, md.msi_normalization
        hp, wp = self.padded(group[0])
        lr_b, msi_b, inv_b = [], [], []
        for t in group:
            up, msi, invalid = source.read(t.window, lr_fill=hn.offset, msi_fill=mn.offset)
            lr_b.append(_pad_to(hn.apply(up), hp, wp))
            msi_b.append(_pad_to(mn.apply(msi), hp, wp))
            inv_b.append(invalid)
        origins = [(t.row0, t.col0) for t in group]

        def noise(s: int, k: int) -> np.ndarray:
            return self.field.batch(s, k, origins, hp, wp)

        res = reverse_diffusion(denoiser, np.stack(lr_b), np.stack(msi_b), self.plan, noise, self.samples, io_binding,
                                progress, message)
        out = []
        for k, t in enumerate(group):
            mean = hn.invert(res.mean[k, :, :t.height, :t.width])
            if getattr(source, "consistency", None) is not None:
                mean = source.consistency(t.window, mean)
            mean[inv_b[k]] = np.nan
            std = None
            if self.with_std:
                std = (np.zeros_like(mean) if res.std is None else calibrated_uncertainty(
                    res.std[k, :, :t.height, :t.width] * hn.scale[:, None, None], mean, md.uncertainty_scale,
                    md.uncertainty_activity))
                std[inv_b[k]] = np.nan
            out.append((t, mean, std))
        return out

    def owners(self, t: Tile) -> list[tuple[int, int]]:
        """The owner regions tile ``t`` contributes to (its own and those of the next row and column)."""
        return [(oi, oj) for oi in (t.i, t.i + 1) for oj in (t.j, t.j + 1) if oi < self.nr and oj < self.nc
                and max(self.own_r[oi], t.row0) < min(self.own_r[oi + 1], t.row0 + t.height)
                and max(self.own_c[oj], t.col0) < min(self.own_c[oj + 1], t.col0 + t.width)]

    def contributors(self, i: int, j: int) -> list[Tile]:
        """The tiles that contribute to owner region ``(i, j)``, in row-major order."""
        near = (self.tiles[oi * self.nc + oj] for oi in (i - 1, i) for oj in (j - 1, j) if oi >= 0 and oj >= 0)
        return [t for t in near if (i, j) in self.owners(t)]

    def pieces(self, t: Tile, mean: np.ndarray, std: np.ndarray | None):
        """``{(i, j): (row0, col0, weighted mean, weighted std or None)}``: tile ``t``'s share of each owner region."""
        w2 = (self.wy[t.i][:, None] * self.wx[t.j][None, :]).astype(np.float32)
        out = {}
        for oi, oj in self.owners(t):
            r0, r1 = max(self.own_r[oi], t.row0), min(self.own_r[oi + 1], t.row0 + t.height)
            c0, c1 = max(self.own_c[oj], t.col0), min(self.own_c[oj + 1], t.col0 + t.width)
            sl = (slice(None), slice(r0 - t.row0, r1 - t.row0), slice(c0 - t.col0, c1 - t.col0))
            ww = w2[sl[1:]]
            out[oi, oj] = (r0, c0, mean[sl] * ww, None if std is None else std[sl] * ww)
        return out

    def owner_window(self, i: int, j: int) -> Window:
        r0, c0 = self.own_r[i], self.own_c[j]
        return Window(c0, r0, self.own_c[j + 1] - c0, self.own_r[i + 1] - r0)

    def assemble(self, i: int, j: int, pieces) -> tuple[np.ndarray, np.ndarray | None]:
        """Owner region ``(i, j)`` summed from ``pieces`` (those of :meth:`contributors`, in that order)."""
        w = self.owner_window(i, j)
        out = np.zeros((self.md.hsi_bands, w.height, w.width), np.float32)
        out_s = np.zeros_like(out) if self.with_std else None
        for pr, pc, pm, ps in pieces:
            h, wd = pm.shape[1:]
            out[:, pr - w.row_off:pr - w.row_off + h, pc - w.col_off:pc - w.col_off + wd] += pm
            if out_s is not None and ps is not None:
                out_s[:, pr - w.row_off:pr - w.row_off + h, pc - w.col_off:pc - w.col_off + wd] += ps
        return out, out_s

    def group_message(self, g: int) -> str:
        first = sum(len(x) for x in self.groups[:g]) + 1
        n = len(self.groups[g])
        return f"tile {first}" + (f"-{first + n - 1}" if n > 1 else "") + f"/{len(self.tiles)}"


def run_tiled(
    denoiser: Denoiser,
    source: PairSource,
    sink: Sink,
    steps: int = dflt.DEFAULT_STEPS,
    sampler: str = dflt.DEFAULT_SAMPLER,
    eta: float = dflt.DEFAULT_ETA,
    seed: int = dflt.DEFAULT_SEED,
    samples: int = dflt.DEFAULT_SAMPLES,
    tile: int = dflt.DEFAULT_TILE,
    overlap: int = dflt.DEFAULT_OVERLAP,
    batch: int = 1,
    io_binding: bool | None = None,
    progress=None,
    cancel=None,
    with_std: bool | None = None,
) -> TiledStats:
    """Super-resolve ``source`` tile by tile into ``sink`` (see the module docstring).

    ``tile`` is rounded up to a multiple of the model's ``spatial_multiple``; edge tiles smaller
    than that are reflect-padded and cropped. ``progress(fraction, message)`` and ``cancel()``
    are called between denoising steps; cancelling raises :class:`~export.sampler.Cancelled`.
    """
    import time

    t_start = time.perf_counter()
    md: ModelMetadata = denoiser.metadata
    if source.hsi_bands != md.hsi_bands or source.msi_bands != md.msi_bands:
        raise ValueError(f"the model takes {md.hsi_bands} HSI and {md.msi_bands} MSI bands, the inputs have "
                         f"{source.hsi_bands} and {source.msi_bands}")
    run = TileRun(md, source.rows, source.cols, steps, sampler, eta, seed, samples, tile, overlap, batch, with_std)
    prog = StepCounter(run.evaluations, progress, cancel)
    stats = TiledStats(len(run.tiles), run.nr, run.nc, run.tile, run.overlap, batch, len(run.plan), samples, 0,
                       provider=denoiser.info.provider)
    pending: dict[tuple[int, int], list] = {}
    pending_px = 0
    prog.report("starting")
    prog.check()
    for g, group in enumerate(run.groups):
        for t, mean, std in run.denoise(denoiser, source, group, io_binding, prog, run.group_message(g)):
            for owner, piece in run.pieces(t, mean, std).items():
                pending.setdefault(owner, []).append(piece)
                pending_px += piece[2].shape[1] * piece[2].shape[2]
            stats.max_pending_pixels = max(stats.max_pending_pixels, pending_px)
            own = pending.pop((t.i, t.j))  # every contributor of the tile's own region is done
            pending_px -= sum(p[2].shape[1] * p[2].shape[2] for p in own)
            sink.write(run.owner_window(t.i, t.j), *run.assemble(t.i, t.j, own))
        stats.evaluations += len(run.plan) * samples * len(group)
    prog.report("done")
    if pending:
        raise AssertionError(f"tiles left unwritten: {sorted(pending)}")
    stats.seconds = time.perf_counter() - t_start
    return stats


def fuse_arrays(
    denoiser: Denoiser,
    lr: np.ndarray,
    msi: np.ndarray,
    scale: int | None = None,
    **kwargs,
) -> tuple[np.ndarray, np.ndarray | None, TiledStats]:
    """In-memory super-resolution: LR ``(C, r, c)`` + MSI ``(M, r*s, c*s)`` in physical units.

    Returns ``(hr (C, r*s, c*s), std or None, stats)``; NaN marks nodata. ``kwargs`` go to
    :func:`run_tiled` (``steps``, ``sampler``, ``eta``, ``seed``, ``samples``, ``tile``, ...).
    """
    lr = np.asarray(lr, np.float32)
    if scale is None:
        scale = msi.shape[1] // lr.shape[1]
    source = with_conditioning(ArrayPairSource(lr, msi, scale), denoiser.metadata)
    with_std = kwargs.get("with_std")
    if with_std is None:
        with_std = kwargs.get("samples", 1) > 1
    sink = ArraySink(source.hsi_bands, source.rows, source.cols, with_std)
    stats = run_tiled(denoiser, source, sink, **kwargs)
    return sink.mean, sink.std, stats
