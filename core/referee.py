"""Choose among fusion methods on the user's own pair, with no reference: Wald's protocol and consistency.

*Wald's protocol*: both images of the pair are degraded by the scale (the pair's PSF, decimation at
its phase), every candidate fuses the degraded pair, and its result is compared with the LR-HSI the
degradation started from: PSNR (dB, mean over bands) and SAM (degrees). That is a real reference,
one scale down; scale invariance is the protocol's assumption. *Consistency*: each candidate's
full-scale result, brought back through the PSF, must give the LR-HSI (spatial PSNR) and, through
the spectral response, the HR-MSI (spectral PSNR). Both are computed on one crop with no nodata
(:func:`find_crop`: :data:`CHECK_LR` LR pixels a side, the consistency on its central
:data:`CONSISTENCY_LR`), so the check costs the same at any scene size; for a pair too small for the
degraded pair to hold :data:`MIN_REDUCED_LR` LR pixels a side the caller may ask for
:data:`SMALL_REDUCED_LR` (``find_crop(min_reduced=)``), which still catches large losses.

The choice (:class:`Verdict`) keeps the *incumbent* (the first candidate: the model) unless
another candidate beats it on both Wald PSNR (by more than :data:`TIE_DB`) and Wald SAM; among those
that do, the best Wald PSNR wins. Both metrics must agree because the protocol is biased against a
learned model: one scale down the model sees statistics it was not trained on, while a classical
method is handed the very PSF the degraded pair was made with (on a real EnMAP crop at x3 the
check ranked MTF-GLP-HS 0.86 dB above the model on Wald PSNR, but 0.27 deg below it on Wald SAM;
against the reference the model led by 1.47 dB and 0.95 deg). The consistency PSNRs are
reported, not ranked on: a method that copies the LR-HSI is perfectly consistent spatially and
still blurred.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import metrics
from .sensor.degrade import degrade_spatial, degrade_spectral
from .sensor.noise import band_noise_std
from .sensor.psf import as_psf

__all__ = ["CHECK_LR", "MIN_REDUCED_LR", "SMALL_REDUCED_LR", "TIE_DB", "Score", "Verdict", "check_crop", "choose", "find_crop",
           "score_candidates"]

CHECK_LR = 48
"""LR pixels a side of the crop the check scores (at least :data:`MIN_REDUCED_LR` x scale; a multiple of the scale)."""
MIN_REDUCED_LR = 8
"""The fewest LR pixels a side of the degraded pair Wald's protocol is trusted on (the crop is that x scale)."""
SMALL_REDUCED_LR = 4
"""A smaller pair is checked on a degraded pair of this many LR pixels a side (less reliable, and said so):
enough to catch a result several dB worse than a classical method."""
CONSISTENCY_LR = 24
"""LR pixels a side of the central part of the crop the full-scale consistency is computed on."""
TIE_DB = 0.05
"""A challenger must lead the incumbent's Wald PSNR by more than this (dB) to displace it."""

Fuser = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``fuse(lr (C, r, c), msi (M, r*s, c*s)) -> (C, r*s, c*s)``, physical units, NaN-free inputs."""


@dataclass
class Score:
    """One candidate on the check crop; NaN where it failed (``error`` says why)."""

    name: str
    wald_psnr: float = math.nan  # dB: fused from the degraded pair, against the LR-HSI
    wald_sam: float = math.nan  # degrees
    spatial_psnr: float = math.nan  # dB: the full-scale result through the PSF against the LR-HSI
    spectral_psnr: float = math.nan  # dB: the full-scale result through the spectral response against the HR-MSI
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and math.isfinite(self.wald_psnr)


@dataclass
class Verdict:
    """The scores of every candidate, the winner, and what it won by."""

    scores: list[Score]
    winner: str
    crop: tuple[int, int, int, int]  # LR row0, col0, rows, cols
    srf: np.ndarray | None = None  # (M, C) the spectral response the scores used

    def score(self, name: str) -> Score:
        return next(s for s in self.scores if s.name == name)

    def best_other(self, name: str | None = None) -> Score | None:
        """The best-ranked candidate other than ``name`` (default: the winner)."""
        others = [s for s in _ranked(self.scores) if s.name != (name or self.winner)]
        return others[0] if others else None

    def margin(self, name: str | None = None) -> tuple[float, float]:
        """``(dB, degrees)`` by which ``name`` (default: the winner) leads the best other candidate:
        Wald PSNR gain and Wald SAM reduction (negative = behind)."""
        s, o = self.score(name or self.winner), self.best_other(name)
        return (math.nan, math.nan) if o is None else (s.wald_psnr - o.wald_psnr, o.wald_sam - s.wald_sam)

    def table(self, seconds: bool = True) -> list[str]:
        """The scores as text lines for a log, the winner marked; ``seconds=False`` leaves out the timings (for
        metadata that must be the same on every run)."""
        r0, c0, n_r, n_c = self.crop
        lines = [f"Wald's protocol check on {n_r} x {n_c} LR px at LR ({r0}, {c0}): fused from the pair degraded by the "
                 "scale vs the LR-HSI; consistency of the full-scale result with the LR-HSI (spatial) and the HR-MSI "
                 "(spectral)",
                 f"  {'candidate':<12} {'Wald PSNR dB':>12} {'Wald SAM deg':>12} {'spatial dB':>10} {'spectral dB':>11}"
                 + (f" {'s':>6}" if seconds else "")]
        for s in _ranked(self.scores) + [s for s in self.scores if not s.ok]:
            mark = " <- chosen" if s.name == self.winner else ""
            if not s.ok:
                lines.append(f"  {s.name:<12} failed: {s.error}")
                continue
            lines.append(f"  {s.name:<12} {s.wald_psnr:12.2f} {s.wald_sam:12.3f} {s.spatial_psnr:10.2f} {s.spectral_psnr:11.2f}"
                         + (f" {s.seconds:6.1f}" if seconds else "") + mark)
        return lines


def _ranked(scores: list[Score]) -> list[Score]:
    ok = sorted((s for s in scores if s.ok), key=lambda s: -s.wald_psnr)
    out: list[Score] = []
    for s in ok:  # within TIE_DB of the one above, the lower SAM goes first
        k = len(out)
        while k > 0 and out[k - 1].wald_psnr - s.wald_psnr < TIE_DB and s.wald_sam < out[k - 1].wald_sam:
            k -= 1
        out.insert(k, s)
    return out


def find_crop(read_lr: Callable[[int, int, int, int], np.ndarray], read_msi: Callable[[int, int, int, int], np.ndarray],
              lr_shape: tuple[int, int], scale: int, size: int = CHECK_LR, tries: int = 3, min_reduced: int = MIN_REDUCED_LR):
    """A crop of ``max(size, min_reduced * scale)`` LR pixels a side (a multiple of ``scale``, at most the
    pair's size) with no nodata in either layer.

    Tries the centre, then a ``tries x tries`` grid of positions. Returns ``(row0, col0, lr, msi)``
    (``lr (C, n, n)``, ``msi (M, n*s, n*s)``), or a string saying why there is none: the pair is
    smaller than ``min_reduced`` x ``scale`` LR pixels a side, or every position touches nodata.
    """
    s = int(scale)
    side = max(int(size), min_reduced * s)
    n_r = min(side, lr_shape[0]) // s * s
    n_c = min(side, lr_shape[1]) // s * s
    if min(n_r, n_c) < min_reduced * s:
        return (f"the pair ({lr_shape[0]} x {lr_shape[1]} LR px) is too small for Wald's protocol at scale {s}: it needs "
                f"{min_reduced * s} x {min_reduced * s} LR px free of nodata ({min_reduced} px a side once degraded)")
    spots = [((lr_shape[0] - n_r) // 2, (lr_shape[1] - n_c) // 2)]
    spots += [(round(a * (lr_shape[0] - n_r) / max(tries - 1, 1)), round(b * (lr_shape[1] - n_c) / max(tries - 1, 1)))
              for a in range(tries) for b in range(tries)]
    for r0, c0 in dict.fromkeys(spots):
        lr = np.asarray(read_lr(r0, c0, n_r, n_c), np.float32)
        if not np.isfinite(lr).all():
            continue
        msi = np.asarray(read_msi(r0 * s, c0 * s, n_r * s, n_c * s), np.float32)
        if np.isfinite(msi).all():
            return r0, c0, lr, msi
    return (f"no {n_r} x {n_c} LR-pixel crop of the pair (centre or a {tries} x {tries} grid of positions) is free of "
            "nodata")


def check_crop(read_lr: Callable[[int, int, int, int], np.ndarray], read_msi: Callable[[int, int, int, int], np.ndarray],
               lr_shape: tuple[int, int], scale: int, size: int = CHECK_LR):
    """The crop the check scores (:func:`find_crop`): a pair under :data:`MIN_REDUCED_LR` x ``scale`` LR px a side is
    checked on a degraded pair of :data:`SMALL_REDUCED_LR` px a side. ``(find_crop's result, whether the pair was that
    small)``; training on the pair holds the same crop out (``data.hold_out_check_crop``)."""
    small = min(lr_shape) < MIN_REDUCED_LR * scale
    return find_crop(read_lr, read_msi, lr_shape, scale, size, min_reduced=SMALL_REDUCED_LR if small else MIN_REDUCED_LR), small


def score_candidates(lr: np.ndarray, msi: np.ndarray, scale: int, psf, srf: np.ndarray, fusers: dict[str, Fuser],
                     crop: tuple[int, int] = (0, 0), progress: Callable[[float, str], None] | None = None,
                     bands: np.ndarray | None = None, msi_bands: np.ndarray | None = None,
                     restore_noise: bool = True) -> Verdict:
    """Score every fuser on the pair crop ``lr (C, n, n)`` / ``msi (M, n*s, n*s)`` (NaN-free, physical units).

    ``psf``: the kernel from the HR onto the LR grid (estimated, offset included); ``srf`` ``(M, C)``
    MSI units per HSI unit (``MSI ~= srf @ HSI``, e.g. :func:`core.sensor.estimate_srf`). ``crop``: the
    crop's LR origin, for the report. ``bands`` / ``msi_bands``: bool masks of the bands scored (e.g.
    without bands that hold no data; default all); bands constant over the crop are never scored. A fuser
    that raises is reported with its error and cannot win. ``restore_noise``: give the degraded LR-HSI back the
    noise the degradation averaged away (:func:`_lost_noise`). Raises ``ValueError`` when every fuser failed.
    """
    s = int(scale)
    hb = (np.ones(lr.shape[0], bool) if bands is None else np.asarray(bands, bool)) & (np.ptp(lr, axis=(1, 2)) > 0)
    mb = (np.ones(msi.shape[0], bool) if msi_bands is None else np.asarray(msi_bands, bool)) & (np.ptp(msi, axis=(1, 2)) > 0)
    lr_r = degrade_spatial(lr, s, psf)
    if restore_noise:
        lr_r = lr_r + _lost_noise(lr, hb, s, psf, lr_r.shape)
    msi_r = degrade_spatial(msi, s, psf)
    border = s  # LR pixels of the degraded pair's border, where its PSF reads the mirrored edge
    k_r, k_c = (min(CONSISTENCY_LR, n) for n in lr.shape[1:])
    a, b = (lr.shape[1] - k_r) // 2, (lr.shape[2] - k_c) // 2
    lr_c, msi_c = lr[:, a:a + k_r, b:b + k_c], msi[:, a * s:(a + k_r) * s, b * s:(b + k_c) * s]
    scores = []
    for k, (name, fuse) in enumerate(fusers.items()):
        if progress is not None:
            progress(k / len(fusers), f"checking {name} on the pair (Wald's protocol)")
        t0 = time.perf_counter()
        sc = Score(name)
        try:
            low = fuse(lr_r, msi_r)
            sc.wald_psnr = metrics.psnr(lr[hb], low[hb], border=border)
            sc.wald_sam = metrics.sam(lr[hb], low[hb], border=border)
            full = fuse(lr_c, msi_c)
            sc.spatial_psnr = metrics.psnr(lr_c[hb], degrade_spatial(full, s, psf)[hb], border=1)
            sc.spectral_psnr = metrics.psnr(msi_c[mb], degrade_spectral(full, srf).astype(np.float32)[mb], border=s)
        except Exception as exc:  # noqa: BLE001 - a failed candidate is reported, the others still compete
            sc.error = f"{type(exc).__name__}: {exc}"
        sc.seconds = time.perf_counter() - t0
        scores.append(sc)
    ranked = _ranked(scores)
    if not ranked:
        raise ValueError("no candidate could be scored: " + "; ".join(f"{s.name}: {s.error}" for s in scores))
    return Verdict(scores, choose(scores), (crop[0], crop[1], lr.shape[1], lr.shape[2]), np.asarray(srf))


def _lost_noise(lr: np.ndarray, bands: np.ndarray, scale: int, psf, shape: tuple) -> np.ndarray:
    """Noise ``shape`` (the degraded LR-HSI's) that gives the degraded LR-HSI the noise level of ``lr``.

    Blurring and decimating white noise of standard deviation ``sd`` leaves ``sd * sqrt(sum(h^2))`` (``h`` the
    PSF's taps), so the degraded pair is far cleaner than the pair itself, and a method that denoises (CNMF's
    low-rank unmixing) loses its edge one scale down. Added: ``sd * sqrt(1 - sum(h^2))`` per band, ``sd`` from
    :func:`core.sensor.noise.band_noise_std` on the bands in ``bands`` (0 elsewhere), seed 0. The LR-HSI's noise
    only: the HR-MSI's cannot be told from its texture on a crop of a few bands.
    """
    sd = np.zeros(lr.shape[0])
    if bands.sum() >= 2:
        sd[bands] = band_noise_std(lr[bands])
    keep = float(np.sum(np.square(as_psf(psf, scale))))
    rng = np.random.default_rng(0)
    return (rng.standard_normal(shape) * (sd * np.sqrt(max(0.0, 1.0 - keep)))[:, None, None]).astype(np.float32)


def choose(scores: list[Score]) -> str:
    """The incumbent (``scores[0]``) unless candidates beat it on Wald PSNR (by > :data:`TIE_DB`) and Wald SAM
    alike; then the best of those on Wald PSNR. A failed incumbent gives way to the best-ranked candidate."""
    ranked = _ranked(scores)
    inc = scores[0]
    if not inc.ok:
        return ranked[0].name
    better = [s for s in ranked if s is not inc and s.wald_psnr > inc.wald_psnr + TIE_DB and s.wald_sam < inc.wald_sam]
    return better[0].name if better else inc.name
