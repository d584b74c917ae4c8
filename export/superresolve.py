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

from core.ensemble import msi_snr_db
from core.jobs.common import DEGRADATIONS, SNAP_SHIFT_PX, SNAP_SIGMA, estimate_degradation
from core.pairing import PairGeometry, check_pair
from core.progress import Cancelled, Progress
from core.raster_io import RasterReader, RasterWriter, Window, bands_with_data, bounded_gdal_cache, commit_all, output_options
from core.sensor.noise import DENOISE_BELOW_DB, SpectralDenoiser, band_noise_std, fit_denoiser

from . import defaults as dflt
from .check import blend_weight, blended_sink, check_scene, drop_blend, write_classical
from .inputs import InputMismatch, InputPlan, plan_inputs
from .metadata import read_metadata
from .sampler import Denoiser
from .tiling import msi_validity, run_tiled, upsample_window, with_conditioning

__all__ = ["superresolve", "SuperResolveResult", "InputMismatch", "Scene", "SceneSetup", "open_scene", "open_writers",
           "check_outputs", "decide", "adapt_scene", "main"]

log = logging.getLogger("hsr_diff.export")


PHASES = {"check": 0.02, "base": 0.05, "adapt": 0.05, "referee": 0.12}
"""Where each phase of a run ends on the 0..1 progress scale: input check, base fit, the check against
classical methods, then the tiles (or the classical method that won); with adaptation, :data:`ADAPT_PHASES`."""
ADAPT_PHASES = PHASES | {"adapt": 0.6, "referee": 0.7}
"""The phases of a run that adapts the model first (the adaptation's budget is most of its time)."""
BLEND_SHARE = 0.1
"""The share of the tiles' progress range CNMF's whole-area fusion takes when the result is averaged with it."""
DENOISE_FIT_LR = 128
"""LR pixels a side of the central crop the LR-HSI's noise and denoiser are estimated on."""


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
    method: str = "model"  # what wrote the output: the model, or the classical method the check chose
    check: object | None = None  # the check's scores (:class:`core.referee.Verdict`), None when it did not run
    adapted_model: str | None = None  # the saved adapted model (``adapted_model_path``), None when none was saved


def _verdict_note(verdict, method: str, first: str = "model") -> str:
    """One sentence on what the check found and what was written (``first``: the incumbent model)."""
    w = verdict.winner
    db, deg = verdict.margin(w)
    other = verdict.best_other(w)
    lead = f"by {db:+.2f} dB Wald PSNR and {deg:+.3f} deg Wald SAM over {other.name}" if other is not None else "alone"
    if method == w and w in ("model", "adapted"):
        who = "the model" if w == "model" else "the adapted model"
        if other is not None and db < 0:
            return (f"check: no other candidate beats {who} on both Wald PSNR and Wald SAM (the best, {other.name}, is "
                    f"{-db:+.2f} dB on PSNR and {deg:+.3f} deg on SAM against it); its result is written")
        return f"check: {who} is the best candidate on the pair ({lead}); its result is written"
    model = "the model" if first == "model" else f"the {first} model"
    if method == w and w == verdict.scores[0].name:  # a classical incumbent: a model trained by Wald's protocol
        m = verdict.score(first)
        return (f"check: {model} was trained on Wald's protocol, which the check scores, so it must beat {w} on both Wald "
                f"PSNR and Wald SAM; it does not ({first} {m.wald_psnr:.2f} dB / {m.wald_sam:.3f} deg, {w} "
                f"{verdict.score(w).wald_psnr:.2f} dB / {verdict.score(w).wald_sam:.3f} deg); the output is {w}'s result "
                "(check=off writes the model's result)")
    if method == first:
        m = verdict.score(first)
        return (f"check: {w} scores better than the model on the pair ({w} {verdict.score(w).wald_psnr:.2f} dB / "
                f"{verdict.score(w).wald_sam:.3f} deg, {first} {m.wald_psnr:.2f} dB / {m.wald_sam:.3f} deg, Wald's protocol); "
                f"the {first} model's result is written as asked (check=report)")
    return (f"check: {w} beats {model} on this pair ({lead}); the output is {w}'s result, not {model}'s "
            "(check=off writes the model's result)")


class RasterPairSource:
    """Tiles of a GDAL LR-HSI / HR-MSI pair over their common area (``core.pairing``), as ``plan`` says.

    Every read gives the plan's bands in the model's order and units (:class:`export.inputs.InputPlan`), the LR-HSI
    denoised by ``lr_denoiser`` when there is one.
    ``dead_msi`` (in the model's band order) marks MSI bands with no valid pixel: they are left out of the validity test.
    """

    def __init__(self, lr: RasterReader, msi: RasterReader, geom: PairGeometry, plan: InputPlan,
                 dead_msi: np.ndarray | None = None, lr_denoiser: SpectralDenoiser | None = None):
        self.consistency = None  # a BackProjection, set by export.tiling.with_conditioning
        self.lr, self.msi, self.geom, self.plan = lr, msi, geom, plan
        self.lr_denoiser = lr_denoiser
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
        a = self.plan.lr_units.apply(a)
        return a if self.lr_denoiser is None else self.lr_denoiser.apply(a)

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


@dataclass
class SceneSetup:
    """What a run computes once per scene before its tiles: small and picklable, so that workers
    (:mod:`export.batch`) rebuild the scene's source without repeating the scan or the fits.

    ``dead_lr`` / ``dead_msi``: bands with no valid pixel (model order); ``registration``: the
    degradation estimate used (None = the model's nominal one); ``lr_denoiser``: the LR-HSI's spectral
    denoiser (None = read as it is); ``base_fit``: the global part of the
    conditioning base (:class:`core.baselines.glp.GLPFit`, None for a bicubic base); ``notes``: the
    warnings the setup raised; ``lr_noise_std``: the LR-HSI's noise per band (model order) when the result is made
    consistent with the LR-HSI (:class:`export.tiling.BackProjection`), None when it is not; ``blend_weight``: the
    model's share of the result, the rest CNMF's (:func:`export.check.blend_weight`; 1: the model's alone);
    ``pair_registration``: the pair's estimated degradation when the model is not conditioned on it
    (``degradation=model``, or a bicubic base): what the check and the classical methods use
    (:func:`export.check.pair_psf`); None when ``registration`` is that estimate or the estimate is the nominal one.
    """

    dead_lr: np.ndarray
    dead_msi: np.ndarray
    registration: object | None = None
    base_fit: object | None = None
    lr_denoiser: SpectralDenoiser | None = None
    notes: list[str] = field(default_factory=list)
    lr_noise_std: np.ndarray | None = None
    blend_weight: float = 1.0
    pair_registration: object | None = None


@dataclass
class Scene:
    """An opened pair, checked against a model, with its conditioned source and output layout."""

    md: object
    geom: PairGeometry
    plan: InputPlan
    lr: RasterReader
    msi: RasterReader
    pair: RasterPairSource  # the inputs in the model's bands and units
    source: object  # ``pair`` with the conditioning base (:func:`export.tiling.with_conditioning`)
    setup: SceneSetup
    notes: list[str]
    shape: tuple[int, int, int]
    writer_options: dict
    provenance: dict


def _setup(source: RasterPairSource, md, geom: PairGeometry, ln: str, mn: str, degradation: str, prog: Progress,
           back_project: bool = False, blend: bool = True) -> SceneSetup:
    """The scan for empty bands and the degradation estimate of one scene (the base is fitted by the caller);
    ``back_project``: keep the LR-HSI's noise per band for :class:`export.tiling.BackProjection` (with ``estimate``
    and an LR-HSI that is not denoised); ``blend``: average the model's result with CNMF's on a denoised (noisy)
    LR-HSI (:func:`export.check.blend_weight`)."""
    dead_lr, dead_msi, notes = _dead_bands(source, ln, mn, prog.sub(0.0, PHASES["check"]))
    for n in notes:
        log.warning(n)
    reg = lr_denoiser = noise_std = None
    if degradation == "estimate":
        prog.report(PHASES["check"], "estimating the LR-HSI's noise")
        lr_denoiser, noise_std, why = _fit_lr_denoiser(source, dead_lr, ln)
        notes += why
    weight = 1.0
    if blend and lr_denoiser is not None:
        n_r, n_c = min(source.rows, DENOISE_FIT_LR * geom.scale), min(source.cols, DENOISE_FIT_LR * geom.scale)
        msi_snr = msi_snr_db(source.read_msi_block((source.rows - n_r) // 2, (source.cols - n_c) // 2, n_r, n_c)[~dead_msi])
        weight, why, info = blend_weight(md.hsi_bands, source.rows, source.cols, lr_denoiser.snr_db, msi_snr, ln, mn)
        for n in why + info:
            (log.info if weight < 1.0 or n in info else log.warning)("%s", n)
        notes += why
    if degradation == "estimate" and md.base != "bicubic":
        prog.report(PHASES["check"], "estimating the pair's degradation")
        source = RasterPairSource(source.lr, source.msi, geom, source.plan, dead_msi, lr_denoiser)
        reg, why = estimate_degradation(source.read_lr_block, source.read_msi_block, source.lr_shape, geom.scale, ln, mn,
                                        md.psf_sigma)
        for n in why:
            log.warning(n)
        notes += why
        if reg is None and not why:
            log.info("estimated degradation: the model's nominal one (no offset over %.2f HR px, width within %g %%)",
                     SNAP_SHIFT_PX, 100 * SNAP_SIGMA)
        if reg is not None:
            log.info("estimated degradation: %s (model: Gaussian sigma %.3f); relative residual %.4f (%.4f with the "
                     "nominal one)", reg.describe(), md.psf_sigma or float("nan"), reg.residual, reg.residual_centred)
    pair_reg = None
    if reg is None and not (degradation == "estimate" and md.base != "bicubic"):
        prog.report(PHASES["check"], "estimating the pair's degradation for the check")
        pair_reg, why = estimate_degradation(source.read_lr_block, source.read_msi_block, source.lr_shape, geom.scale, ln,
                                             mn, md.psf_sigma)
        for n in why:
            log.info("for the check: %s", n)
        if pair_reg is not None:
            log.info("the model keeps its nominal degradation; the check degrades the pair by, and the classical methods "
                     "fuse it with, its estimate: %s", pair_reg.describe())
    back = noise_std if back_project and lr_denoiser is None else None  # a denoised LR-HSI: no back-projection onto it
    if back is not None:
        log.info("the result is made consistent with the LR-HSI through the PSF (noise-aware back-projection)")
    return SceneSetup(dead_lr, dead_msi, reg, None, lr_denoiser, notes, back, weight, pair_reg)


def _fit_lr_denoiser(source: RasterPairSource, dead_lr: np.ndarray,
                     ln: str) -> tuple[SpectralDenoiser | None, np.ndarray | None, list[str]]:
    """The LR-HSI's spectral denoiser (:func:`core.sensor.noise.fit_denoiser`), fitted on its central
    :data:`DENOISE_FIT_LR` LR px a side (the bands with data there; the others pass through), or None (logged: its
    SNR is high enough, or there are too few valid pixels, with a note); with its noise per band
    (:func:`core.sensor.noise.band_noise_std`, 0 for bands without data there; None when it could not be estimated)."""
    rows, cols = source.lr_shape
    n_r, n_c = min(rows, DENOISE_FIT_LR), min(cols, DENOISE_FIT_LR)
    block = source.read_lr_block((rows - n_r) // 2, (cols - n_c) // 2, n_r, n_c)
    bands = ~dead_lr & np.isfinite(block).any(axis=(1, 2))
    try:
        den, snr = fit_denoiser(block, bands)
        noise = np.zeros(block.shape[0])
        flat = block[bands].reshape(int(bands.sum()), -1)
        noise[bands] = band_noise_std(flat[:, np.isfinite(flat).all(axis=0)][:, :, None])
    except ValueError as exc:
        note = f"LR-HSI layer '{ln}': its noise could not be estimated ({exc}); it is fused as it is"
        log.warning(note)
        return None, None, [note]
    if den is None:
        log.info("LR-HSI SNR %.1f dB (estimated): not denoised (at least %.0f dB)", snr, DENOISE_BELOW_DB)
    else:
        log.info("%s", den.describe())
    return den, noise, []


def open_scene(stack: ExitStack, lr_path, msi_path, model_path, md=None, lr_name: str | None = None,
               msi_name: str | None = None, allow_scale_mismatch: bool = False, degradation: str = dflt.DEFAULT_DEGRADATION,
               output_type: str = dflt.DEFAULT_OUTPUT_TYPE, sampler_note: str = "", progress: Progress | None = None,
               setup: SceneSetup | None = None, back_project: bool = False, blend: bool = True) -> Scene:
    """Open and check a pair for ``model_path`` (readers closed by ``stack``) and prepare its conditioned source.

    Without ``setup`` this scans for empty bands, estimates the degradation (``degradation``, see
    :func:`superresolve`) and fits the conditioning base, reporting to ``progress`` up to
    ``PHASES["base"]``; with a ``setup`` from an earlier :func:`open_scene` of the same pair and model
    it reuses those, so every worker of a split scene conditions its tiles identically.
    """
    if degradation not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {degradation!r}; choose one of {', '.join(DEGRADATIONS)}")
    md = read_metadata(model_path) if md is None else md
    prog = progress if progress is not None else Progress(None)
    geom = check_pair(lr_path, msi_path, lr_name=lr_name, msi_name=msi_name)
    lr = stack.enter_context(RasterReader(lr_path))
    msi = stack.enter_context(RasterReader(msi_path))
    ln, mn = _name(lr_path, lr_name), _name(msi_path, msi_name)
    plan = plan_inputs(lr, msi, md, geom, os.path.basename(os.fspath(model_path)), ln, mn, allow_scale_mismatch)
    if setup is None:
        for n in plan.notes:
            log.warning(n)
        prog.report(0.0, "checking the inputs")
        setup = _setup(RasterPairSource(lr, msi, geom, plan), md, geom, ln, mn, degradation, prog, back_project, blend)
    notes = list(geom.notes) + plan.notes + setup.notes  # check_pair logged its own
    pair = RasterPairSource(lr, msi, geom, plan, setup.dead_msi, setup.lr_denoiser)
    reg = setup.registration
    source = with_conditioning(pair, md, prog.sub(PHASES["check"], PHASES["base"]).report, setup.dead_lr, setup.dead_msi,
                               None if reg is None else reg.psf(geom.scale), setup.base_fit, setup.lr_noise_std)
    if md.base != "bicubic":
        setup.base_fit = source.stream.params
    lm = lr.meta
    nodata = next((v for v in lm.nodata if v is not None), None)
    provenance = {"hsr_diff_degradation": "model" if reg is None else
                  f"estimated: {reg.describe()}",
                  "hsr_diff_lr_denoise": "none" if setup.lr_denoiser is None else setup.lr_denoiser.describe(),
                  "hsr_diff_blend": "none" if setup.blend_weight >= 1.0 else
                  f"{setup.blend_weight:.3f} x the model's result + {1 - setup.blend_weight:.3f} x CNMF's (core.ensemble)",
                  "hsr_diff_consistency": "none" if setup.lr_noise_std is None else
                  "noise-aware back-projection onto the LR-HSI through the PSF",
                  "hsr_diff_model": os.path.basename(os.fspath(model_path)), "hsr_diff_model_info": md.describe(),
                  "hsr_diff_sampler": sampler_note,
                  "hsr_diff_inputs": f"{os.path.basename(os.fspath(lr_path))} + {os.path.basename(os.fspath(msi_path))}"}
    shape = (lm.bands, source.rows, source.cols)  # every input band; those the model skips are nodata
    options = dict(geotransform=geom.geotransform, crs_wkt=geom.crs_wkt, nodata=nodata, wavelengths=plan.wavelengths,
                   fwhm=plan.fwhm, bad_bands=plan.bad_bands) | output_options(output_type, lr, plan.lr_bands)
    return Scene(md, geom, plan, lr, msi, pair, source, setup, notes, shape, options, provenance)


def open_writers(stack: ExitStack, scene: Scene, out_path, unc_path, samples: int, tile: int, overlap: int):
    """The output's (and uncertainty's) atomic writers, aborted by ``stack`` unless committed, and their sink."""
    md, lm = scene.md, scene.lr.meta
    stride = int(math.ceil(tile / md.spatial_multiple) * md.spatial_multiple) - overlap  # the tiler's owner regions
    common = scene.writer_options | {"block": stride if stride >= 64 and stride % 16 == 0 else 256}
    out = RasterWriter(out_path, scene.shape, band_names=lm.band_names, metadata=scene.provenance, **common)
    stack.callback(out.abort)  # after a commit there is nothing left to abort
    unc = None
    if unc_path is not None:
        content = (f"per-pixel standard deviation of {samples} samples times the model's calibration factor "
                   f"{md.uncertainty_scale:g}" + ("" if md.uncertainty_activity == 0 else
                   f", combined with {md.uncertainty_activity:g} x the result's local gradient (core.uncertainty)")
                   + ("" if scene.setup.blend_weight >= 1.0 else
                      f", times {scene.setup.blend_weight:.3f}, the model's weight in the average with CNMF (core.ensemble)"))
        unc = RasterWriter(unc_path, scene.shape, band_names=[f"std {n}" for n in lm.band_names],
                           metadata={**scene.provenance, "hsr_diff_content": content}, **common)
        stack.callback(unc.abort)
    writers = [out] if unc is None else [out, unc]
    return writers, scene.plan.output_sink(_WriterSink(out, unc, scene.plan.lr_bands))  # back in the LR-HSI's units


def sampler_note(steps: int = dflt.DEFAULT_STEPS, sampler: str = dflt.DEFAULT_SAMPLER, eta: float = dflt.DEFAULT_ETA,
                 seed: int = dflt.DEFAULT_SEED, samples: int = dflt.DEFAULT_SAMPLES, **_) -> str:
    """The sampler settings as the output's metadata records them."""
    return f"{sampler} steps={steps} eta={eta} seed={seed} samples={samples}"


def decide(scene: Scene, denoisers, check: str = dflt.DEFAULT_CHECK, steps: int = dflt.DEFAULT_STEPS,
           sampler: str = dflt.DEFAULT_SAMPLER, eta: float = dflt.DEFAULT_ETA, seed: int = dflt.DEFAULT_SEED,
           progress: Progress | None = None, crop=None):
    """``(verdict or None, method)``: the check of ``scene`` (``check``, see :func:`superresolve`) and what is to
    write the output: a model's name (``denoisers``: one :class:`Denoiser`, named ``model``, or ``{name: Denoiser}``,
    the first the incumbent) or a classical method; logs the table, adds the verdict to the notes and provenance."""
    if check not in dflt.CHECKS:
        raise ValueError(f"unknown check {check!r}; choose one of {', '.join(dflt.CHECKS)}")
    first = next(iter(denoisers)) if isinstance(denoisers, dict) else "model"
    if check == "off":
        return None, first
    verdict = check_scene(scene, denoisers, steps, sampler, eta, seed, None if progress is None else progress.report, crop)
    if verdict is None:
        return None, first
    for line in verdict.table():
        log.info("%s", line)
    method = verdict.winner if check == "best" else first
    scene.notes.append(_verdict_note(verdict, method, first))
    (log.warning if method != first else log.info)("%s", scene.notes[-1])
    scene.provenance["hsr_diff_method"] = method
    scene.provenance["hsr_diff_check"] = " | ".join(verdict.table(seconds=False)[2:])
    return verdict, method


def adapt_scene(scene: Scene, model_path, seconds: float, out_path, seed: int = dflt.DEFAULT_SEED, progress=None):
    """Fine-tune ``model_path`` on a central region of ``scene`` (:func:`export.adapt.adapt_model`) away from the
    check's crop; ``(AdaptResult, crop)``, the crop to check the adapted model on (or the reason there is none)."""
    from core.referee import CHECK_LR, MIN_REDUCED_LR

    from .adapt import ADAPT_LR, adapt_model
    from .check import filled, pair_srf, pick_crop, scene_psf

    pair, s = scene.pair, scene.geom.scale
    rows, cols = pair.lr_shape
    side = max(MIN_REDUCED_LR * s, min(CHECK_LR, min(rows, cols) // 3))  # room left around the crop to train on
    crop = pick_crop(scene, side)
    n_r, n_c = min(ADAPT_LR, rows), min(ADAPT_LR, cols)
    r0, c0 = (rows - n_r) // 2, (cols - n_c) // 2
    lr = filled(pair.read_lr_block, scene.setup.dead_lr)(r0, c0, n_r, n_c)
    msi = filled(pair.read_msi_block, scene.setup.dead_msi)(r0 * s, c0 * s, n_r * s, n_c * s)
    exclude = None if isinstance(crop, str) else (crop[0] - r0, crop[1] - c0, crop[2].shape[1], crop[2].shape[2])
    srf = pair_srf(scene, lr, msi)
    return adapt_model(model_path, lr, msi, s, scene_psf(scene), srf, seconds, out_path, exclude, seed, progress), crop


def check_outputs(out_path, unc_path, samples: int, *inputs) -> tuple[Path, Path | None]:
    """The output paths, refused when one would overwrite an input or the other, or when samples < 2 with a spread."""
    out_path = Path(out_path)
    unc_path = Path(unc_path) if unc_path else None
    for p in (out_path, unc_path):
        if p is not None and p.resolve() in {Path(i).resolve() for i in inputs}:
            raise ValueError(f"{p}: the output would overwrite an input")
    if unc_path is not None and samples < 2:
        raise ValueError(f"an uncertainty raster needs samples >= 2 (got {samples}): the spread of one sample is undefined")
    if unc_path is not None and unc_path.resolve() == out_path.resolve():
        raise ValueError(f"{unc_path}: the uncertainty raster and the output must be different files")
    return out_path, unc_path


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
    check: str = dflt.DEFAULT_CHECK,
    adapt_seconds: float = 0.0,
    adapted_model_path=None,
    back_project: bool = False,
    blend: bool = True,
) -> SuperResolveResult:
    """Fuse ``lr_path`` (LR-HSI) and ``msi_path`` (HR-MSI) with the model at ``model_path`` into ``out_path``.

    ``progress(fraction, message)`` and ``cancel() -> bool`` are called between denoising steps;
    a cancel raises :class:`core.progress.Cancelled` and leaves no output. ``samples > 1``
    averages several samples; their per-pixel standard deviation goes to ``uncertainty_path``.
    ``degradation``: ``estimate`` matches the conditioning base's PSF (width and sub-pixel offset)
    to the pair (:func:`core.jobs.common.estimate_degradation`, logged with its residual), ``model``
    keeps the model's nominal one (the check then still estimates the pair's, to degrade its crop by and to give the
    classical methods: :func:`export.check.pair_psf`); it matters for models on a global base (``mtf_glp_hs``). ``estimate`` also
    estimates the LR-HSI's noise and, below :data:`core.sensor.noise.DENOISE_BELOW_DB` of SNR, denoises the LR-HSI
    spectrally (:class:`core.sensor.noise.SpectralDenoiser`) for every reader of it: the base, the model, the check.
    ``denoiser``: an already opened :class:`~export.sampler.Denoiser` of ``model_path`` (``device``,
    ``threads`` and ``allow_fallback`` are then its own), e.g. one per worker of :mod:`export.batch`.
    ``output_type``: ``float32`` or ``int16`` (scaled integers, nodata -32768: reflectance in 0-1 is stored
    x 10000; see :func:`core.raster_io.output_options`), for the output and the uncertainty alike.
    ``check``: ``best`` scores the model against MTF-GLP-HS, GSA and CNMF on a crop of the pair
    (:mod:`export.check`: Wald's protocol and consistency, the table logged and kept in the result's
    ``check``) and writes the best of them (a classical winner has a nodata uncertainty raster);
    ``report`` scores them and writes the model's result; ``off`` skips the check.
    ``adapt_seconds`` > 0 first fine-tunes the model on the pair for that long (:func:`adapt_scene`; needs torch):
    the check then scores the model as it was (the incumbent: Wald's protocol favours a model trained one
    scale down, so the adapted one must beat it on PSNR and SAM alike), the adapted model and the classical
    methods on a crop the adaptation did not train on, and writes the best (with ``check`` ``report`` or
    ``off``, the adapted model's result; when the pair is too small to check, the model as it was).
    ``adapted_model_path``: where to keep the adapted model (written when the whole run succeeded).
    ``back_project`` (experimental, off by default): with ``estimate``, make every tile's result consistent with the
    LR-HSI through the estimated PSF (:class:`export.tiling.BackProjection`, noise-aware; not when the LR-HSI is
    denoised), in the check's runs too. The correction is computed tile by tile, so unlike the model's result it
    depends on the tiling near tile edges.
    ``blend`` (on by default): where the LR-HSI is denoised (estimated SNR below ``DENOISE_BELOW_DB``), the model's
    result is averaged with CNMF's over the whole scene, the model's weight rising with the SNR
    (:mod:`core.ensemble`; in the check's runs too; not when CNMF's whole-area fusion would not fit in memory);
    the uncertainty is the model's spread times its weight.
    """
    t0 = time.perf_counter()
    if check not in dflt.CHECKS:  # before any work
        raise ValueError(f"unknown check {check!r}; choose one of {', '.join(dflt.CHECKS)}")
    if adapt_seconds < 0:
        raise ValueError(f"adapt_seconds must be >= 0 (got {adapt_seconds})")
    if adapted_model_path is not None and adapt_seconds <= 0:
        raise ValueError("an adapted model can only be saved with adapt_seconds > 0")
    if adapt_seconds > 0:
        from .adapt import _torch

        _torch()  # the install command before any work
    out_path, unc_path = check_outputs(out_path, uncertainty_path, samples, lr_path, msi_path, model_path)
    md = read_metadata(model_path)
    with ExitStack() as stack:
        stack.enter_context(bounded_gdal_cache())
        prog = Progress(progress, cancel)
        scene = open_scene(stack, lr_path, msi_path, model_path, md, lr_name, msi_name, allow_scale_mismatch, degradation,
                           output_type, sampler_note(steps, sampler, eta, seed, samples), prog,
                           back_project=back_project, blend=blend)
        den = denoiser if denoiser is not None else Denoiser(model_path, device=device, allow_fallback=allow_fallback, threads=threads)
        log.info("%s; %s", md.describe(), den.info.describe())
        log.info("output: %d bands x %d x %d px (%.2f GB as float32), scale %d, %s %d steps x %d sample(s)",
                 *scene.shape, math.prod(scene.shape) * 4 / 1e9, scene.geom.scale, sampler, steps, samples)
        models, crop, adapted = {"model": den}, None, None
        phases = ADAPT_PHASES if adapt_seconds > 0 else PHASES
        if adapt_seconds > 0:
            tmp_model = out_path.with_name(f".{out_path.stem}.adapted-{os.getpid()}-{int(t0 * 1e3) % 10**8}.onnx")
            stack.callback(lambda: tmp_model.unlink(missing_ok=True))
            res_a, crop = adapt_scene(scene, model_path, adapt_seconds, tmp_model, seed,
                                      prog.sub(phases["base"], phases["adapt"]))
            scene.notes.extend(res_a.notes)
            for n in res_a.notes:
                log.info("%s", n)
            if res_a.path is not None:
                adapted = res_a
                models["adapted"] = Denoiser(res_a.path, device=device, allow_fallback=allow_fallback, threads=threads)
        verdict, method = decide(scene, models, check, steps, sampler, eta, seed,
                                 prog.sub(phases["adapt"], phases["referee"]), crop)
        if adapted is not None and check != "best":  # not chosen by a check: what was asked for
            method = "adapted"
        elif adapted is not None and verdict is None:
            scene.notes.append("the adapted model could not be checked on this pair (see above); the model as it was "
                               "is written")
            log.warning(scene.notes[-1])
        if method not in models:
            drop_blend(scene, method)
        notes = scene.notes + den.info.notes
        writers, sink = open_writers(stack, scene, out_path, unc_path, samples, tile, overlap)
        stats = None
        rest = prog.sub(phases["referee"], 1.0)
        if method in models:
            split = BLEND_SHARE if scene.setup.blend_weight < 1.0 else 0.0
            sink = blended_sink(scene, sink, None if verdict is None else verdict.srf, rest.sub(0.0, split).report)
            stats = run_tiled(models[method], scene.source, sink, steps=steps, sampler=sampler, eta=eta, seed=seed,
                              samples=samples, tile=tile, overlap=overlap, batch=batch,
                              progress=_Eta(rest.sub(split, 1.0), log), with_std=unc_path is not None)
        else:
            write_classical(scene, method, sink, verdict.srf, unc_path is not None, rest.report)
        commit_all(writers)
        if adapted is not None and adapted_model_path is not None:
            os.replace(adapted.path, adapted_model_path)
    seconds = time.perf_counter() - t0
    shape, geom = scene.shape, scene.geom
    log.info("wrote %s (%d x %d x %d) in %.1f s on %s", out_path, *shape, seconds, den.info.provider)
    return SuperResolveResult(str(out_path), None if unc_path is None else str(unc_path), shape[0], shape[1], shape[2],
                              geom.scale, tuple(geom.geotransform), geom.crs_wkt, den.info.provider, den.info.describe(),
                              0 if stats is None else stats.tiles, 0 if stats is None else stats.steps, sampler, samples,
                              seconds, notes, method, verdict,
                              None if adapted is None or adapted_model_path is None else str(adapted_model_path))


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
    ap.add_argument("--back-project", action="store_true",
                    help="experimental: make the result consistent with the LR-HSI through the estimated PSF")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    bar = None if args.quiet else _Bar()
    try:
        res = superresolve(args.lr, args.msi, args.model, args.out, steps=args.steps, sampler=args.sampler, eta=args.eta,
                           seed=args.seed, samples=args.samples, tile=args.tile, overlap=args.overlap, device=args.device,
                           uncertainty_path=args.uncertainty, progress=bar, batch=args.batch, threads=args.threads,
                           allow_fallback=args.allow_fallback, degradation=args.degradation, output_type=args.output_type,
                           check=args.check, back_project=args.back_project, blend=args.blend)
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
