"""Super-resolve a georeferenced LR-HSI with an HR-MSI and an exported HSR-Diff model.

``python -m export.superresolve --lr LR.tif --msi MSI.tif --model M.onnx --out OUT.tif
[--steps 2] [--sampler ddim|ancestral] [--eta 0] [--seed 0] [--samples 1] [--tile 256]
[--overlap 32] [--batch 1] [--device auto|cpu|cuda|tensorrt] [--uncertainty STD.tif] [--output-type float32|int16]``

The output covers the common area of the two inputs on the MSI grid (its geotransform and CRS),
carries the LR-HSI's band names, wavelengths, FWHM and bad-band list, and is nodata wherever
either input is (per band for the LR-HSI, per pixel for the MSI). The pair is checked against the
model by :mod:`export.inputs` (MSI bands by name, wavelength or position; each layer's units), read
in the model's bands and units and written back in the LR-HSI's units. Tiles are read from and
written to disk as they complete (:mod:`export.tiling`). The output goes to a temporary file
that is renamed only when everything succeeded: a cancel or an error leaves no output file.
Inference needs numpy, GDAL and onnxruntime only.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.jobs.common import DEGRADATIONS, SNAP_SHIFT_PX, SNAP_SIGMA, estimate_degradation
from core.pairing import PairGeometry, check_pair
from core.progress import Cancelled, Progress
from core.raster_io import RasterReader, RasterWriter, Window, bands_with_data, bounded_gdal_cache, commit_all, output_options

from . import defaults as dflt
from .inputs import InputMismatch, InputPlan, plan_inputs
from .metadata import read_metadata
from .sampler import Denoiser
from .tiling import msi_validity, run_tiled, upsample_window, with_conditioning

__all__ = ["superresolve", "SuperResolveResult", "InputMismatch", "main"]

log = logging.getLogger("hsr_diff.export")


PHASES = {"check": 0.02, "base": 0.05}
"""Where each phase of a run ends on the 0..1 progress scale: input check, base fit, then the tiles."""


class _Eta(Progress):
    """A :class:`Progress` over the tiles that adds the estimated time left to each message and logs it once."""

    def __init__(self, parent: Progress, logger: logging.Logger):
        super().__init__(parent.callback, parent.cancel, parent.start, parent.end)
        self.log, self.t0, self.logged = logger, time.monotonic(), False

    def report(self, fraction: float, message: str = "") -> None:
        el = time.monotonic() - self.t0
        if 0.0 < fraction < 1.0 and el > 0.5:
            left = el / fraction - el
            message = f"{message}, about {_duration(left)} left"
            if not self.logged:
                self.log.info("estimated time for the tiles: %s", _duration(el / fraction))
                self.logged = True
        super().report(fraction, message)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


@dataclass
class SuperResolveResult:
    out_path: str
    uncertainty_path: str | None
    bands: int
    rows: int
    cols: int
    scale: int
    geotransform: tuple
    crs_wkt: str
    provider: str
    provider_info: str
    tiles: int
    steps: int
    sampler: str
    samples: int
    seconds: float
    notes: list[str] = field(default_factory=list)


class RasterPairSource:
    """Tiles of a GDAL LR-HSI / HR-MSI pair over their common area (``core.pairing``), as ``plan`` says.

    Every read gives the plan's bands in the model's order and units (:class:`export.inputs.InputPlan`).
    ``dead_msi`` (in the model's band order) marks MSI bands with no valid pixel: they are left out of the validity test.
    """

    def __init__(self, lr: RasterReader, msi: RasterReader, geom: PairGeometry, plan: InputPlan,
                 dead_msi: np.ndarray | None = None):
        self.lr, self.msi, self.geom, self.plan = lr, msi, geom, plan
        self.scale = geom.scale
        self.rows, self.cols = geom.msi_window.height, geom.msi_window.width
        self.lr_shape = (geom.lr_window.height, geom.lr_window.width)
        self.hsi_bands = lr.meta.bands if plan.lr_bands is None else len(plan.lr_bands)
        self.msi_bands = msi.meta.bands if plan.msi_bands is None else len(plan.msi_bands)
        good = msi.meta.good_bands if plan.msi_bands is None else msi.meta.good_bands[plan.msi_bands]
        self._msi_good = good if dead_msi is None else good & ~dead_msi

    def _read_lr(self, w: Window) -> np.ndarray:
        lw = self.geom.lr_window
        a = self.lr.read(Window(lw.col_off + w.col_off, lw.row_off + w.row_off, w.width, w.height), bands=self.plan.lr_bands)
        return self.plan.lr_units.apply(a)

    def read_lr_block(self, row0: int, col0: int, rows: int, cols: int) -> np.ndarray:
        return self._read_lr(Window(col0, row0, cols, rows))

    def read_msi_block(self, row0: int, col0: int, rows: int, cols: int) -> np.ndarray:
        mw = self.geom.msi_window
        a = self.msi.read(Window(mw.col_off + col0, mw.row_off + row0, cols, rows), bands=self.plan.msi_bands)
        return self.plan.msi_units.apply(a)

    def read(self, window: Window, lr_fill=None, msi_fill=None):
        lw = self.geom.lr_window
        up, invalid = upsample_window(self._read_lr, lw.height, lw.width, self.scale, window, lr_fill)
        msi = self.read_msi_block(window.row_off, window.col_off, window.height, window.width)
        return up, *msi_validity(msi, invalid, msi_fill, self._msi_good)


def _dead_bands(source: RasterPairSource, lr_name: str, msi_name: str, progress) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Bands of the common area with no valid pixel; refuses a layer with none at all."""
    lr_ok = bands_with_data(source.read_lr_block, *source.lr_shape, progress.sub(0.0, 0.5).report)
    msi_ok = bands_with_data(source.read_msi_block, source.rows, source.cols, progress.sub(0.5, 1.0).report)
    for ok, name, kind in ((lr_ok, lr_name, "LR-HSI"), (msi_ok, msi_name, "HR-MSI")):
        if not ok.any():
            raise InputMismatch(f"{kind} layer '{name}' has no valid pixel in the area it shares with the other layer "
                                "(all nodata there)")
    notes = []
    if not lr_ok.all():
        idx = np.flatnonzero(~lr_ok)
        sel = np.arange(len(lr_ok)) if source.plan.lr_bands is None else np.asarray(source.plan.lr_bands)
        notes.append(f"LR-HSI layer '{lr_name}': band(s) {', '.join(str(int(sel[i]) + 1) for i in idx)} have no valid "
                     "pixel; they are nodata in the output")
    if not msi_ok.all():
        sel = np.arange(len(msi_ok)) if source.plan.msi_bands is None else np.asarray(source.plan.msi_bands)
        notes.append(f"HR-MSI layer '{msi_name}': band(s) {', '.join(str(int(sel[i]) + 1) for i in np.flatnonzero(~msi_ok))} "
                     "have no valid pixel; they are filled and the result is less sharp")
    return ~lr_ok, ~msi_ok, notes


class _WriterSink:
    """Writes tiles; with ``bands`` (the model's bands among the file's), the others become nodata."""

    def __init__(self, out: RasterWriter, unc: RasterWriter | None, bands: list[int] | None = None):
        self.out, self.unc, self.bands = out, unc, bands

    def _put(self, writer: RasterWriter, window: Window, data: np.ndarray) -> None:
        if self.bands is None:
            writer.write(data, window)
            return
        full = np.full((writer.shape[0], *data.shape[1:]), np.nan, np.float32)
        full[self.bands] = data
        writer.write(full, window)

    def write(self, window: Window, mean: np.ndarray, std: np.ndarray | None) -> None:
        self._put(self.out, window, mean)
        if self.unc is not None and std is not None:
            self._put(self.unc, window, std)


def _name(path, given: str | None) -> str:
    return given or os.path.basename(os.fspath(path))


def superresolve(
    lr_path,
    msi_path,
    model_path,
    out_path,
    steps: int = dflt.DEFAULT_STEPS,
    sampler: str = dflt.DEFAULT_SAMPLER,
    eta: float = dflt.DEFAULT_ETA,
    seed: int = dflt.DEFAULT_SEED,
    samples: int = dflt.DEFAULT_SAMPLES,
    tile: int = dflt.DEFAULT_TILE,
    overlap: int = dflt.DEFAULT_OVERLAP,
    device: str = dflt.DEFAULT_DEVICE,
    uncertainty_path=None,
    progress=None,
    cancel=None,
    batch: int = 1,
    threads: int | None = None,
    allow_fallback: bool = False,
    allow_scale_mismatch: bool = False,
    lr_name: str | None = None,
    msi_name: str | None = None,
    degradation: str = dflt.DEFAULT_DEGRADATION,
    denoiser: Denoiser | None = None,
    output_type: str = dflt.DEFAULT_OUTPUT_TYPE,
) -> SuperResolveResult:
    """Fuse ``lr_path`` (LR-HSI) and ``msi_path`` (HR-MSI) with the model at ``model_path`` into ``out_path``.

    ``progress(fraction, message)`` and ``cancel() -> bool`` are called between denoising steps;
    a cancel raises :class:`core.progress.Cancelled` and leaves no output. ``samples > 1``
    averages several samples; their per-pixel standard deviation goes to ``uncertainty_path``.
    ``degradation``: ``estimate`` matches the conditioning base's PSF (width and sub-pixel offset)
    to the pair (:func:`core.jobs.common.estimate_degradation`, logged with its residual), ``model``
    keeps the model's nominal one; it matters for models on a global base (``mtf_glp_hs``).
    ``denoiser``: an already opened :class:`~export.sampler.Denoiser` of ``model_path`` (``device``,
    ``threads`` and ``allow_fallback`` are then its own), e.g. one per worker of :mod:`export.batch`.
    ``output_type``: ``float32`` or ``int16`` (scaled integers, nodata -32768: reflectance in 0-1 is stored
    x 10000; see :func:`core.raster_io.output_options`), for the output and the uncertainty alike.
    """
    t0 = time.perf_counter()
    out_path = Path(out_path)
    unc_path = Path(uncertainty_path) if uncertainty_path else None
    for p in (out_path, unc_path):
        if p is not None and p.resolve() in (Path(lr_path).resolve(), Path(msi_path).resolve(), Path(model_path).resolve()):
            raise ValueError(f"{p}: the output would overwrite an input")
    if unc_path is not None and samples < 2:
        raise ValueError(f"an uncertainty raster needs samples >= 2 (got {samples}): the spread of one sample is undefined")
    if unc_path is not None and unc_path.resolve() == out_path.resolve():
        raise ValueError(f"{unc_path}: the uncertainty raster and the output must be different files")
    md = read_metadata(model_path)
    geom = check_pair(lr_path, msi_path, lr_name=lr_name, msi_name=msi_name)
    with ExitStack() as stack:
        stack.enter_context(bounded_gdal_cache())
        lr = stack.enter_context(RasterReader(lr_path))
        msi = stack.enter_context(RasterReader(msi_path))
        ln, mn = _name(lr_path, lr_name), _name(msi_path, msi_name)
        plan = plan_inputs(lr, msi, md, geom, os.path.basename(os.fspath(model_path)), ln, mn, allow_scale_mismatch)
        for n in plan.notes:
            log.warning(n)
        notes = list(geom.notes) + plan.notes  # check_pair logged its own
        den = denoiser if denoiser is not None else Denoiser(model_path, device=device, allow_fallback=allow_fallback, threads=threads)
        log.info("%s; %s", md.describe(), den.info.describe())
        notes += den.info.notes
        prog = Progress(progress, cancel)
        prog.report(0.0, "checking the inputs")
        source = RasterPairSource(lr, msi, geom, plan)
        dead_lr, dead_msi, empty = _dead_bands(source, ln, mn, prog.sub(0.0, PHASES["check"]))
        for n in empty:
            log.warning(n)
        notes += empty
        source = RasterPairSource(lr, msi, geom, plan, dead_msi)
        log.info("output: %d bands x %d x %d px (%.2f GB as float32), scale %d, %s %d steps x %d sample(s)",
                 lr.meta.bands, source.rows, source.cols, lr.meta.bands * source.rows * source.cols * 4 / 1e9, geom.scale,
                 sampler, steps, samples)
        psf = None
        if degradation not in DEGRADATIONS:
            raise ValueError(f"unknown degradation {degradation!r}; choose one of {', '.join(DEGRADATIONS)}")
        if degradation == "estimate" and md.base != "bicubic":
            prog.report(PHASES["check"], "estimating the pair's degradation")
            reg, why = estimate_degradation(source.read_lr_block, source.read_msi_block, source.lr_shape, geom.scale, ln, mn,
                                            md.psf_sigma)
            for n in why:
                log.warning(n)
            notes += why
            if reg is None and not why:
                log.info("estimated degradation: the model's nominal one (no offset over %.2f HR px, width within %d %%)",
                         SNAP_SHIFT_PX, round(100 * SNAP_SIGMA))
            if reg is not None:
                psf = reg.psf(geom.scale)
                log.info("estimated degradation: offset dy %+.3f dx %+.3f HR px, PSF sigma %.3f HR px (model: %.3f); relative "
                         "residual %.4f (%.4f with the nominal one)", reg.dy, reg.dx, reg.sigma, md.psf_sigma or float("nan"),
                         reg.residual, reg.residual_centred)
        source = with_conditioning(source, md, prog.sub(PHASES["check"], PHASES["base"]).report, dead_lr, dead_msi, psf)
        lm = lr.meta
        nodata = next((v for v in lm.nodata if v is not None), None)
        wl, fw = plan.wavelengths, plan.fwhm
        provenance = {"hsr_diff_degradation": "model" if psf is None else
                      f"estimated: offset dy {reg.dy:+.3f} dx {reg.dx:+.3f} HR px, sigma {reg.sigma:.3f} HR px",
                      "hsr_diff_model": os.path.basename(os.fspath(model_path)), "hsr_diff_model_info": md.describe(),
                      "hsr_diff_sampler": f"{sampler} steps={steps} eta={eta} seed={seed} samples={samples}",
                      "hsr_diff_inputs": f"{os.path.basename(os.fspath(lr_path))} + {os.path.basename(os.fspath(msi_path))}"}
        shape = (lm.bands, source.rows, source.cols)  # every input band; those the model skips are nodata
        stride = int(math.ceil(tile / md.spatial_multiple) * md.spatial_multiple) - overlap  # the tiler's owner regions
        common = dict(geotransform=geom.geotransform, crs_wkt=geom.crs_wkt, nodata=nodata, wavelengths=wl, fwhm=fw,
                      bad_bands=plan.bad_bands, block=stride if stride >= 64 and stride % 16 == 0 else 256
                      ) | output_options(output_type, lr, plan.lr_bands)
        out = RasterWriter(out_path, shape, band_names=lm.band_names, metadata=provenance, **common)
        stack.callback(out.abort)  # after a commit there is nothing left to abort
        unc = None
        if unc_path is not None:
            content = (f"per-pixel standard deviation of {samples} samples times the model's calibration factor "
                       f"{md.uncertainty_scale:g}")
            unc = RasterWriter(unc_path, shape, band_names=[f"std {n}" for n in lm.band_names],
                               metadata={**provenance, "hsr_diff_content": content}, **common)
            stack.callback(unc.abort)
        sink = plan.output_sink(_WriterSink(out, unc, plan.lr_bands))  # back in the LR-HSI's units
        stats = run_tiled(den, source, sink, steps=steps, sampler=sampler, eta=eta, seed=seed, samples=samples, tile=tile,
                          overlap=overlap, batch=batch, progress=_Eta(prog.sub(PHASES["base"], 1.0), log), with_std=unc is not None)
        commit_all([out] if unc is None else [out, unc])
    seconds = time.perf_counter() - t0
    log.info("wrote %s (%d x %d x %d) in %.1f s on %s", out_path, *shape, seconds, den.info.provider)
    return SuperResolveResult(str(out_path), None if unc_path is None else str(unc_path), shape[0], shape[1], shape[2],
                              geom.scale, tuple(geom.geotransform), geom.crs_wkt, den.info.provider, den.info.describe(),
                              stats.tiles, stats.steps, sampler, samples, seconds, notes)


# ---------------------------------------------------------------------- CLI


class _Bar:
    """A one-line progress bar on stderr."""

    def __init__(self, stream=None, width: int = 30):
        self.stream, self.width, self.t0, self._last = stream, width, time.monotonic(), -1.0

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if fraction < 1.0 and now - self._last < 0.1:
            return
        self._last = now
        n = int(round(fraction * self.width))
        el = now - self.t0
        eta = f", {el / fraction - el:5.0f} s left" if 0.0 < fraction < 1.0 else ""
        stream = self.stream or sys.stderr
        stream.write(f"\r[{'#' * n}{'.' * (self.width - n)}] {100 * fraction:5.1f}% {message[:40]:<40} {el:6.0f} s{eta}")
        stream.flush()

    def close(self) -> None:
        stream = self.stream or sys.stderr
        stream.write("\n")
        stream.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export.superresolve", description="HSR-Diff super-resolution of a "
                                 "georeferenced LR-HSI with an HR-MSI and an exported ONNX model.")
    ap.add_argument("--lr", required=True, help="low-resolution hyperspectral raster")
    ap.add_argument("--msi", required=True, help="high-resolution multispectral raster")
    ap.add_argument("--model", required=True, help="exported .onnx model")
    ap.add_argument("--out", required=True, help="output GeoTIFF")
    dflt.add_sampler_arguments(ap)
    dflt.add_output_arguments(ap)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all this process may use)")
    ap.add_argument("--uncertainty", default=None, help="also write the per-pixel standard deviation here")
    ap.add_argument("--allow-fallback", action="store_true", help="run on the CPU when --device cuda/tensorrt is not usable")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    bar = None if args.quiet else _Bar()
    try:
        res = superresolve(args.lr, args.msi, args.model, args.out, steps=args.steps, sampler=args.sampler, eta=args.eta,
                           seed=args.seed, samples=args.samples, tile=args.tile, overlap=args.overlap, device=args.device,
                           uncertainty_path=args.uncertainty, progress=bar, batch=args.batch, threads=args.threads,
                           allow_fallback=args.allow_fallback, degradation=args.degradation, output_type=args.output_type)
    except (Cancelled, KeyboardInterrupt):
        if bar:
            bar.close()
        print("cancelled; no output written", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI prints the message, not a traceback
        if bar:
            bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if bar:
        bar.close()
    print(f"{res.out_path}: {res.bands} bands x {res.rows} x {res.cols}, scale {res.scale}, {res.tiles} tiles, "
          f"{res.steps} {res.sampler} steps x {res.samples} sample(s), {res.seconds:.1f} s, {res.provider_info}")
    for n in res.notes:
        print(f"note: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
