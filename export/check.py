"""The Super-resolve safeguard: score the model against classical methods on the user's pair, write the best.

:func:`check_scene` runs :func:`core.referee.score_candidates` on a crop of an opened scene
(:class:`export.superresolve.Scene`) with the model (the scene's sampler settings, one sample) and
MTF-GLP-HS, GSA and CNMF, all given the degradation the run uses (the estimated PSF and offset,
or the model's nominal one) and a spectral response estimated on the crop (NNLS). GSA and CNMF
hold the whole area in memory, so they compete only when the scene fits (:func:`core.jobs.classical.memory_needed`
against half of the memory available). :func:`write_classical` writes a classical winner over the
whole scene through the scene's sink (MTF-GLP-HS window by window), so the output has the same
grid, bands, units and nodata as the model's. On a noisy pair the model's result is averaged with CNMF's
(:mod:`core.ensemble`; :func:`blend_weight` decides, :func:`blended_sink` writes it), in the check's runs too.
"""

from __future__ import annotations

import copy
import logging

import numpy as np

from core.baselines import BASELINES
from core.ensemble import MIN_MSI_BANDS, MSI_NOISY_BELOW_DB, PARTNER, blend, model_weight
from core.jobs.classical import STREAMED, available_memory, memory_needed
from core.jobs.common import hr_valid_mask
from core.raster_io import Window
from core.referee import CHECK_LR, MIN_REDUCED_LR, SMALL_REDUCED_LR, Verdict, check_crop, score_candidates
from core.sensor import as_psf, estimate_srf
from core.sensor.noise import DENOISE_BELOW_DB

from . import defaults as dflt
from .tiling import ArrayPairSource, ArraySink, run_tiled, with_conditioning

__all__ = ["CLASSICAL", "blend_weight", "blended_sink", "check_scene", "drop_blend", "filled", "pair_psf", "pair_srf", "pick_crop",
           "scene_psf", "write_classical"]

log = logging.getLogger("hsr_diff.export")

CLASSICAL = ("mtf_glp_hs", "gsa", "cnmf")
"""The classical methods the model is checked against."""
WINDOW = 512  # HR pixels a side of the windows a streamed classical winner is written in


def blend_weight(hsi_bands: int, rows: int, cols: int, snr_db: float | None, msi_snr: float | None,
                 ln: str = "LR-HSI", mn: str = "HR-MSI") -> tuple[float, list[str], list[str]]:
    """``(weight, notes, info)``: the model's share of the result (:func:`core.ensemble.model_weight`) for an output
    of ``hsi_bands`` x ``rows`` x ``cols`` HR px whose LR-HSI (layer ``ln``) and HR-MSI (``mn``) have ``snr_db`` and
    ``msi_snr`` estimated SNR (None: not estimated); ``notes`` for the result, ``info`` for the log alone. 1 with a
    note when CNMF would not fit in half the memory available."""
    if snr_db is None or not snr_db < DENOISE_BELOW_DB:
        return 1.0, [], []
    w = model_weight(snr_db, msi_snr)
    if w >= 1.0:
        why = (f"it has fewer than {MIN_MSI_BANDS} bands to read its noise from" if msi_snr is None else
               f"{msi_snr:.1f} dB, at least {MSI_NOISY_BELOW_DB:g}")
        return 1.0, [], [f"HR-MSI layer '{mn}' does not read noisy ({why}): the model's result is not averaged with "
                         f"{PARTNER.upper()}'s"]
    need = memory_needed(PARTNER, hsi_bands, rows, cols) + 3 * 4 * hsi_bands * rows * cols
    avail = available_memory()
    if avail is not None and need > avail / 2:
        return 1.0, [f"the pair is noisy (LR-HSI '{ln}' {snr_db:.1f} dB, HR-MSI '{mn}' {msi_snr:.1f} dB, estimated), but "
                     f"the model's result is not averaged with {PARTNER.upper()}'s: that needs the whole area in memory "
                     f"(about {need / 1e9:.1f} GB, {avail / 1e9:.1f} GB available)"], []
    return w, [f"the pair is noisy (LR-HSI '{ln}' {snr_db:.1f} dB, HR-MSI '{mn}' {msi_snr:.1f} dB, estimated): the model's "
               f"result is averaged with {PARTNER.upper()}'s, {w:.2f} x the model's + {1 - w:.2f} x {PARTNER.upper()}'s "
               "(core.ensemble)"], []


def scene_psf(scene) -> np.ndarray:
    """The PSF kernel the run conditions the model on: the estimate's, else the model's nominal one."""
    reg, s = scene.setup.registration, scene.geom.scale
    return reg.psf(s) if reg is not None else as_psf(scene.md.psf_sigma, s)


def pair_psf(scene) -> np.ndarray:
    """The PSF kernel of the pair itself, which the check degrades its crop by and the classical methods fuse with:
    :func:`scene_psf`, or the pair's estimate where the run keeps the model's nominal PSF (``setup.pair_registration``,
    ``degradation=model``), so that the check still sees what a misregistered pair costs the model."""
    reg = scene.setup.pair_registration
    return scene_psf(scene) if reg is None else reg.psf(scene.geom.scale)


def filled(read, dead: np.ndarray | None):
    """``read`` with the bands in ``dead`` (no valid pixel anywhere) set to 0 instead of NaN."""
    if dead is None or not dead.any():
        return read

    def out(*window):
        a = np.array(read(*window), np.float32)
        a[dead] = 0.0
        return a

    return out


def pair_srf(scene, lr: np.ndarray, msi: np.ndarray) -> np.ndarray:
    """The spectral response ``(M, C)`` (MSI units per HSI unit) of a crop of ``scene``, NNLS through the run's PSF;
    zero for bands with no data."""
    good_lr, good_msi = ~scene.setup.dead_lr, ~scene.setup.dead_msi
    srf = np.zeros((msi.shape[0], lr.shape[0]))
    srf[np.ix_(good_msi, good_lr)] = estimate_srf(lr[good_lr], msi[good_msi], scene.geom.scale, pair_psf(scene))[0]
    return srf


def pick_crop(scene, size: int = CHECK_LR):
    """The check's crop of ``scene``: ``(row0, col0, lr, msi)`` in the model's bands and units (bands with no
    data filled with 0), or a string saying why there is none (:func:`core.referee.check_crop`)."""
    pair, sc = scene.pair, scene.geom.scale
    got, small = check_crop(filled(pair.read_lr_block, scene.setup.dead_lr), filled(pair.read_msi_block, scene.setup.dead_msi),
                            pair.lr_shape, sc, size)
    if not small:
        return got
    n = MIN_REDUCED_LR * sc
    why = (f"the pair ({pair.lr_shape[0]} x {pair.lr_shape[1]} LR px) is too small for Wald's protocol at scale {sc} "
           f"(it needs {n} x {n} LR px free of nodata)")
    if isinstance(got, str):
        return f"{got}; the full check needs {n} x {n} LR px"
    scene.notes.append(f"{why}; checked on a {got[2].shape[1]} x {got[2].shape[2]} LR px crop instead ({SMALL_REDUCED_LR} "
                       "px a side once degraded: it catches large losses, not small ones)")
    log.warning(scene.notes[-1])
    return got


def check_scene(scene, denoisers, steps: int = dflt.DEFAULT_STEPS, sampler: str = dflt.DEFAULT_SAMPLER,
                eta: float = dflt.DEFAULT_ETA, seed: int = dflt.DEFAULT_SEED, progress=None, crop=None) -> Verdict | None:
    """Score the models and :data:`CLASSICAL` on a crop of ``scene``; None (with a note saying why) when the pair
    is too small for the check or has no crop free of nodata.

    ``denoisers``: a :class:`~export.sampler.Denoiser` (the candidate ``model``) or ``{name: Denoiser}``, the
    first the incumbent (:func:`core.referee.choose`), except for a model trained on a real pair by Wald's protocol
    (``training.data.mode`` ``self_supervised``): MTF-GLP-HS is then the incumbent, which the model must beat on both
    Wald PSNR and Wald SAM. The check is Wald's protocol, the very task such a model was trained on (its own
    held-out square had to beat that base on both too). ``crop``: a :func:`pick_crop` result (default: picked here).
    """
    md, s = scene.md, scene.geom.scale
    dead_lr, dead_msi = scene.setup.dead_lr, scene.setup.dead_msi
    got = pick_crop(scene) if crop is None else crop
    if isinstance(got, str):
        scene.notes.append(f"the check against classical methods was skipped: {got}; the model's result is written")
        log.warning(scene.notes[-1])
        return None
    r0, c0, lr, msi = got
    psf, run_psf = pair_psf(scene), scene_psf(scene)
    good_lr, good_msi = ~dead_lr, ~dead_msi
    srf = pair_srf(scene, lr, msi)
    w = scene.setup.blend_weight

    def model(den):
        def fuse(lr_a: np.ndarray, msi_a: np.ndarray) -> np.ndarray:
            src = with_conditioning(ArrayPairSource(lr_a, msi_a, s), md, psf=run_psf, noise_std=scene.setup.lr_noise_std)
            sink = ArraySink(md.hsi_bands, src.rows, src.cols, False)
            run_tiled(den, src, sink, steps=steps, sampler=sampler, eta=eta, seed=seed, samples=1)
            if w >= 1.0:
                return sink.mean
            return blend(sink.mean, BASELINES[PARTNER](lr_a, msi_a, s, srf=srf, psf=psf), w)

        return fuse

    def classical(name: str):
        def fuse(lr_a: np.ndarray, msi_a: np.ndarray) -> np.ndarray:
            return BASELINES[name](lr_a, msi_a, s, srf=srf, psf=psf)

        return fuse

    models = denoisers if isinstance(denoisers, dict) else {"model": denoisers}
    fusers = {name: model(den) for name, den in models.items()}
    rows, cols = scene.pair.rows, scene.pair.cols
    avail = available_memory()
    for name in CLASSICAL:
        need = memory_needed(name, md.hsi_bands, rows, cols)
        if name not in STREAMED and avail is not None and need > avail / 2:
            scene.notes.append(f"{name.upper()} was left out of the check: it holds the whole area in memory (about "
                               f"{need / 1e9:.1f} GB, {avail / 1e9:.1f} GB available)")
            log.info(scene.notes[-1])
            continue
        fusers[name] = classical(name)
    data = md.training.get("data")
    if isinstance(data, dict) and data.get("mode") == "self_supervised" and "mtf_glp_hs" in fusers:
        fusers = {"mtf_glp_hs": fusers["mtf_glp_hs"], **fusers}  # the incumbent: see the docstring
    return score_candidates(lr, msi, s, psf, srf, fusers, (r0, c0), progress, bands=good_lr, msi_bands=good_msi)


def write_classical(scene, method: str, sink, srf: np.ndarray, with_std: bool, progress=None) -> None:
    """Write ``method``'s fusion of the whole scene through ``sink`` (NaN std with ``with_std``: a classical
    method has no sampling spread)."""
    from core.conditioning import streamed_base

    pair, s = scene.pair, scene.geom.scale
    dead_lr, dead_msi = scene.setup.dead_lr, scene.setup.dead_msi
    psf = pair_psf(scene)
    rows, cols = pair.rows, pair.cols

    def put(window: Window, fused: np.ndarray, valid: np.ndarray) -> None:
        fused = np.where(valid[None], fused, np.nan).astype(np.float32)
        fused[dead_lr] = np.nan
        sink.write(window, fused, np.full_like(fused, np.nan) if with_std else None)

    if method == "mtf_glp_hs":
        stream = getattr(scene.source, "stream", None) if scene.setup.pair_registration is None else None
        if stream is None:  # not the base the model was conditioned on (none, or with the nominal PSF)
            stream = streamed_base(method, pair.read_lr_block, pair.read_msi_block, pair.lr_shape, s, psf, dead_lr, dead_msi)
        windows = [(r, c) for r in range(0, rows, WINDOW) for c in range(0, cols, WINDOW)]
        for k, (r, c) in enumerate(windows):
            h, w = min(WINDOW, rows - r), min(WINDOW, cols - c)
            fused, valid = stream.window(r, c, h, w, True)
            put(Window(c, r, w, h), fused, valid)
            if progress is not None:
                progress((k + 1) / len(windows), f"{method}: window {k + 1}/{len(windows)}")
        return
    if progress is not None:
        progress(0.0, f"fusing the whole area with {method}")
    out, valid = _fuse_whole(scene, method, srf)
    put(Window(0, 0, cols, rows), out, valid)
    if progress is not None:
        progress(1.0, f"{method}: done")


def _fuse_whole(scene, method: str, srf: np.ndarray | None, raw_lr: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(result (C, rows, cols) float32, valid (rows, cols) bool)``: a global ``method``'s fusion of the whole
    scene in the model's bands and units (0 in bands with no data); ``srf`` None: estimated on the check's crop
    (:func:`core.referee.check_crop`; on the whole area's valid pixels when the pair has none). ``raw_lr``: fuse the
    LR-HSI as read, not denoised."""
    pair, s, md = scene.pair, scene.geom.scale, scene.md
    dead_lr, dead_msi = scene.setup.dead_lr, scene.setup.dead_msi
    source = pair
    if raw_lr and getattr(pair, "lr_denoiser", None) is not None:
        source = copy.copy(pair)
        source.lr_denoiser = None
    lr = np.asarray(filled(source.read_lr_block, dead_lr)(0, 0, *pair.lr_shape), np.float32)
    msi = np.asarray(filled(pair.read_msi_block, dead_msi)(0, 0, pair.rows, pair.cols), np.float32)
    gl, gm = ~dead_lr, ~dead_msi
    valid = hr_valid_mask(lr[gl], msi[gm], s)
    if srf is None:
        got, _ = check_crop(filled(pair.read_lr_block, dead_lr), filled(pair.read_msi_block, dead_msi), pair.lr_shape, s,
                            CHECK_LR)
        srf = pair_srf(scene, *(got[2:] if not isinstance(got, str) else (lr, msi)))
    out = np.zeros((md.hsi_bands, pair.rows, pair.cols), np.float32)
    out[gl] = BASELINES[method](lr[gl], msi[gm], s, srf=srf[np.ix_(gm, gl)], psf=pair_psf(scene), valid=valid)
    return out, valid


class _BlendSink:
    """A sink that writes ``weight`` x each window of the model's result + the rest x ``partner`` there (and the
    sampling spread x ``weight``: the partner has none) to ``sink``; the model's values as they are where the partner
    has none (a pixel with nodata in any LR-HSI band)."""

    def __init__(self, sink, partner: np.ndarray, weight: float):
        self.sink, self.partner, self.weight = sink, partner, weight

    def write(self, window: Window, mean: np.ndarray, std: np.ndarray | None) -> None:
        p = self.partner[:, window.row_off:window.row_off + window.height, window.col_off:window.col_off + window.width]
        if std is not None:  # the model's alone where the partner has no value
            std = np.where(np.isfinite(p), std * self.weight, std).astype(np.float32)
        self.sink.write(window, blend(mean, p, self.weight), std)


def drop_blend(scene, method: str) -> None:
    """Record that ``method`` (a classical winner of the check) was written, so there is no average with CNMF."""
    if scene.setup.blend_weight >= 1.0:
        return
    scene.setup.blend_weight = 1.0
    scene.provenance["hsr_diff_blend"] = "none"
    scene.notes.append(f"{method}'s result is written, so it is not averaged with the model's")


def blended_sink(scene, sink, srf: np.ndarray | None = None, progress=None):
    """``sink`` for the model's result of ``scene``: as it is when the scene's ``setup.blend_weight`` is 1, else
    averaging each window with :data:`core.ensemble.PARTNER`'s fusion of the whole scene, computed here on the
    LR-HSI as read (CNMF keeps only a few endmembers of it, and on a training CAVE crop at 30 dB it lost 0.4 dB and
    1.7 deg of SAM on the denoised one; on EnMAP the two were level); ``srf``: the check's response, None: estimated
    as :func:`_fuse_whole` says. The check's runs average with CNMF on the crops they are given (of the denoised
    LR-HSI, one scale down with the noise it lost put back: :mod:`core.referee`)."""
    w = scene.setup.blend_weight
    if w >= 1.0:
        return sink
    if progress is not None:
        progress(0.0, f"fusing the whole area with {PARTNER} to average with the model")
    partner, valid = _fuse_whole(scene, PARTNER, srf, raw_lr=True)
    partner[:, ~valid] = np.nan
    partner[scene.setup.dead_lr] = np.nan
    if progress is not None:
        progress(1.0, f"{PARTNER}: done")
    return _BlendSink(sink, partner, w)
