"""Adapt an exported model to the user's own pair within a wall-clock budget (needs torch and onnx).

Super-resolve's ``adapt_seconds``: the model's weights are recovered from its ONNX graph
(:mod:`export.from_onnx`) and fine-tuned on the pair itself, then exported again.

* **Wald's protocol**: the pair degraded by the scale (the run's PSF: estimated, offset included)
  is the input, the LR-HSI the target: the loss of training (:class:`core.training.losses.HSRLoss`:
  L1 in normalised units, the consistency of the result with the degraded pair's MSI and LR-HSI,
  and the spectral angle), on random windows of the reduced-scale grid.
* **Consistency at full scale**: on windows of the full-scale pair, the result brought back
  through the PSF must give the LR-HSI and through the spectral response the HR-MSI (L1 in
  normalised units, weight :data:`W_FULL`).
* The windows never touch ``exclude`` (the check's crop), so the check that follows
  (:mod:`export.check`) scores the adapted model on pixels it did not train on. A pair so small that
  the crop is all of it (about 32 LR px a side at x4) is adapted on the whole pair with the full-scale
  consistency terms only, so the check's reduced-scale pair is never trained on either, plus the
  spectral angle to the model as it was (weight :data:`W_ANCHOR`): consistency alone let SAM drift by
  about 0.5 deg on EnMAP x3 pairs (``bench/results/adapt_bundled.md``).

Training uses a central region of at most :data:`ADAPT_LR` LR pixels a side; AdamW at
:data:`LEARNING_RATE`, batch :data:`BATCH`, seeded. The budget covers the training steps; the
export afterwards takes a few seconds more. The adapted model keeps the original's metadata
(normalisation, schedule, bands, calibration) with an ``adaptation`` entry in ``training``.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["ADAPT_LR", "MIN_ADAPT_LR", "AdaptResult", "TORCH_INSTALL", "adapt_model", "adapt_patch", "train_on_pair"]

TORCH_INSTALL = f"{sys.executable} -m pip install 'torch==2.13.0' onnx"
"""The command that installs what adaptation needs into this interpreter (``python3 build.py setup`` does too)."""
ADAPT_LR = 160
"""LR pixels a side of the central region adaptation trains on (bounded memory and cost at any scene size)."""
ADAPT_HR = 384
"""HR pixels a side of the central region the full-scale consistency windows come from."""
MIN_ADAPT_LR = 16
"""The smallest pair (LR pixels a side of valid data) adaptation accepts."""
PATCH = 32
BATCH = 4
LEARNING_RATE = 1e-5
W_FULL = 0.5
W_MSI, W_LR, W_SAM = 0.5, 0.5, 0.1
W_ANCHOR = 1.0


@dataclass
class AdaptResult:
    """The adapted model (``path``, None when no step could run) and how the fine-tuning went."""

    path: str | None
    steps: int
    seconds: float
    loss_first: float = math.nan
    loss_last: float = math.nan
    patch: int = 0
    notes: list[str] = field(default_factory=list)


def _torch():
    try:
        import onnx  # noqa: F401
        import torch
    except ImportError as exc:
        raise ImportError(f"adapting a model to the pair needs torch and onnx ({exc}); install them with:\n  {TORCH_INSTALL}\n"
                          "(or set the adaptation time to 0)") from None
    return torch


def adapt_patch(scale: int, spatial_multiple: int, side: int) -> int:
    """The training window (pixels of the reduced-scale grid): the largest multiple of lcm(scale, spatial multiple)
    up to :data:`PATCH` that fits ``side``; 0 when none does."""
    m = scale * spatial_multiple // math.gcd(scale, spatial_multiple)
    p = max(m, PATCH // m * m)
    while p > m and p > side:
        p -= m
    return p if p <= side else 0


def _windows(rng: np.random.Generator, n: int, shape: tuple[int, int], patch: int, step: int, exclude, mask) -> list:
    """``n`` window origins (multiples of ``step``) of ``patch`` px in ``shape`` that avoid the box ``exclude``
    ``(row0, col0, rows, cols)`` and lie on ``mask`` (all True)."""
    out, tries = [], 0
    while len(out) < n and tries < 200 * n:
        tries += 1
        i = int(rng.integers(0, (shape[0] - patch) // step + 1)) * step
        j = int(rng.integers(0, (shape[1] - patch) // step + 1)) * step
        if exclude is not None:
            r0, c0, h, w = exclude
            if i < r0 + h and r0 < i + patch and j < c0 + w and c0 < j + patch:
                continue
        if mask is not None and not mask[i:i + patch, j:j + patch].all():
            continue
        out.append((i, j))
    return out


def adapt_model(model_path, lr: np.ndarray, msi: np.ndarray, scale: int, psf: np.ndarray, srf: np.ndarray, seconds: float,
                out_path, exclude: tuple[int, int, int, int] | None = None, seed: int = 0, progress=None) -> AdaptResult:
    """Fine-tune ``model_path`` on ``lr (C, h, w)`` / ``msi (M, h*s, w*s)`` (the model's bands and physical units,
    NaN = nodata) for ``seconds`` and export it to ``out_path`` (written whole or not at all).

    ``psf``: the kernel from the HR onto the LR grid; ``srf`` ``(M, C)``: MSI units per HSI unit;
    ``exclude``: an LR box of ``lr`` no training window touches. ``progress`` is a
    :class:`core.progress.Progress` (checked for cancel between steps). Raises ``ValueError`` for a
    pair under :data:`MIN_ADAPT_LR` LR pixels a side; returns ``path=None`` with a note when the
    budget ends before one step.
    """
    torch = _torch()
    from core.baselines import fill_nearest
    from core.conditioning import base_image
    from core.sensor import degrade_spatial
    from core.training.losses import HSRLoss, degrade_spatial_torch, spectral_angle_torch, spectral_torch

    from .from_onnx import cdformer_from_onnx
    from .metadata import read_metadata
    from .onnx_export import export_model

    t0 = time.perf_counter()
    s = int(scale)
    md = read_metadata(model_path)
    valid_lr = np.isfinite(lr).all(axis=0)
    h, w = lr.shape[1:]
    if min(h, w) < MIN_ADAPT_LR or valid_lr.sum() < MIN_ADAPT_LR ** 2:
        raise ValueError(f"the pair is too small to adapt the model on: {h} x {w} LR px with {int(valid_lr.sum())} valid "
                         f"(at least {MIN_ADAPT_LR} x {MIN_ADAPT_LR} LR px of valid data are needed)")
    room = min(h, w)
    if exclude is not None:  # the widest strip beside the excluded box, windows starting on multiples of the scale
        r0, c0, n_r, n_c = exclude
        after_r, after_c = -(-(r0 + n_r) // s) * s, -(-(c0 + n_c) // s) * s
        room = max(min(max(r0, h - after_r), w // s * s), min(max(c0, w - after_c), h // s * s))
    patch, wald, notes = adapt_patch(s, md.spatial_multiple, room), True, []
    if not patch and exclude is not None:  # the check's crop is the whole pair: consistency only, on all of it
        patch, wald, exclude = adapt_patch(s, md.spatial_multiple, min(min(h, w) * s, ADAPT_HR)), False, None  # HR windows
        notes.append(f"the pair ({h} x {w} LR px) leaves no room for training windows beside the crop the check keeps "
                     "for itself: the model was adapted on the whole pair with the full-scale consistency terms only "
                     "(no Wald's-protocol term, so the check's reduced-scale pair stays unseen)")
    if not patch:
        raise ValueError(f"the pair ({h} x {w} LR px) has no room for one training window at scale {s} "
                         f"({s * md.spatial_multiple // math.gcd(s, md.spatial_multiple)} px)")
    lr_f = fill_nearest(lr, valid_lr) if not valid_lr.all() else lr
    valid_hr = np.isfinite(msi).all(axis=0) & np.repeat(np.repeat(valid_lr, s, 0), s, 1)
    msi_f = fill_nearest(msi, valid_hr) if not valid_hr.all() else msi
    lr_r = degrade_spatial(lr_f, s, psf)
    msi_r = degrade_spatial(msi_f, s, psf)
    base_r = base_image(lr_r, msi_r, s, md.base, psf=psf)
    n = min(ADAPT_HR, msi.shape[1]) // s, min(ADAPT_HR, msi.shape[2]) // s  # full-scale region, LR px
    fr0, fc0 = (h - n[0]) // 2, (w - n[1]) // 2
    lr_full, msi_full = lr_f[:, fr0:fr0 + n[0], fc0:fc0 + n[1]], msi_f[:, fr0 * s:(fr0 + n[0]) * s, fc0 * s:(fc0 + n[1]) * s]
    base_f = base_image(lr_full, msi_full, s, md.base, psf=psf)
    full_exclude = None if exclude is None else ((exclude[0] - fr0) * s, (exclude[1] - fc0) * s, exclude[2] * s,
                                                 exclude[3] * s)
    full_mask = valid_hr[fr0 * s:(fr0 + n[0]) * s, fc0 * s:(fc0 + n[1]) * s]
    hn, mn = md.hsi_normalization, md.msi_normalization

    def t(a: np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(a, np.float32))

    z0, up_r, m_r, y_r = t(hn.apply(lr_f)), t(hn.apply(base_r)), t(mn.apply(msi_f)), t(hn.apply(lr_r))
    up_f, m_f, y_f = t(hn.apply(base_f)), t(mn.apply(msi_full)), t(hn.apply(lr_full))
    net, info = cdformer_from_onnx(model_path)
    frozen = copy.deepcopy(net).eval() if not wald else None
    net.train()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
    loss_fn = HSRLoss(s, psf, srf, hn, mn, w_msi=W_MSI, w_lr=W_LR, w_sam=W_SAM)
    h_scale, h_off = loss_fn.h_scale, loss_fn.h_off
    schedule = md.schedule
    srf_t = torch.as_tensor(srf, dtype=torch.float32)
    psf_t = torch.as_tensor(psf, dtype=torch.float32)

    def noisy(x0, g):
        return g[:, None, None, None] * x0 + torch.sqrt(1 - g ** 2)[:, None, None, None] * torch.randn(x0.shape, generator=gen)

    steps, first, last, t_step = 0, math.nan, math.nan, 0.0
    while True:
        now = time.perf_counter() - t0
        if now + t_step > seconds:
            break
        if progress is not None:
            progress.report(min(now / max(seconds, 1e-9), 1.0), f"adapting the model to the pair: step {steps + 1}, "
                                                                 f"{seconds - now:.0f} s left")
        ts = time.perf_counter()
        wins = _windows(rng, BATCH, (h, w), patch, s, exclude, valid_lr) if wald else []
        fwins = _windows(rng, BATCH, full_mask.shape, patch, s, full_exclude, full_mask)
        if not (wins if wald else fwins):
            raise ValueError(f"no {patch} x {patch} training window of the pair avoids the checked crop and nodata")
        loss = torch.zeros(())
        if wins:
            sl = [(slice(None), slice(i, i + patch), slice(j, j + patch)) for i, j in wins]
            lsl = [(slice(None), slice(i // s, (i + patch) // s), slice(j // s, (j + patch) // s)) for i, j in wins]
            zb, ub, mb = (torch.stack([a[k] for k in sl]) for a in (z0, up_r, m_r))
            yb = torch.stack([y_r[k] for k in lsl])
            g = torch.from_numpy(schedule.sample_training_levels(rng, len(wins))).float()
            x0_hat = net(noisy(schedule.encode(zb, ub), g), g, ub, mb)
            loss, _ = loss_fn(x0_hat, zb, mb, yb)
        if fwins:
            fsl = [(slice(None), slice(i, i + patch), slice(j, j + patch)) for i, j in fwins]
            fl = [(slice(None), slice(i // s, (i + patch) // s), slice(j // s, (j + patch) // s)) for i, j in fwins]
            uf, mf, yf = torch.stack([up_f[k] for k in fsl]), torch.stack([m_f[k] for k in fsl]), torch.stack([y_f[k] for k in fl])
            gf = torch.from_numpy(schedule.sample_training_levels(rng, len(fwins))).float()
            zf = noisy(schedule.encode(uf, uf), gf)
            xf = net(zf, gf, uf, mf)
            phys = xf * h_scale + h_off
            if not wald:  # consistency alone: the spectral angle to the model as it was holds the spectra in place
                with torch.no_grad():
                    anchor = frozen(zf, gf, uf, mf) * h_scale + h_off
                loss = loss + W_ANCHOR * spectral_angle_torch(phys, anchor)
            lr_back = (degrade_spatial_torch(phys, s, psf_t) - h_off) / h_scale
            msi_back = (spectral_torch(phys, srf_t) - loss_fn.m_off) / loss_fn.m_scale
            loss = loss + W_FULL * ((lr_back - yf).abs().mean() + (msi_back - mf).abs().mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        steps += 1
        last = float(loss.detach())
        first = last if steps == 1 else first
        t_step = time.perf_counter() - ts
        if progress is not None:
            progress.check()
    trained = time.perf_counter() - t0
    if steps == 0:
        return AdaptResult(None, 0, trained, notes=notes + [f"the adaptation budget ({seconds:g} s) ended before one training step; "
                                                    "the model is used as it is"])
    net.eval()
    info = dict(info)
    info["training"] = dict(info.get("training") or {}) | {"adaptation": {
        "from": Path(model_path).name, "steps": steps, "seconds": round(trained, 1), "patch": patch, "batch": BATCH,
        "learning_rate": LEARNING_RATE, "loss_first": first, "loss_last": last,
        "pair_lr_px": [int(h), int(w)], "wald_term": wald, "excluded_lr_box": None if exclude is None else [int(v) for v in exclude]}}
    path = export_model(net, info, out_path, check=False)
    return AdaptResult(str(path), steps, time.perf_counter() - t0, first, last, patch,
                       notes + [f"adapted {Path(model_path).name} to the pair: {steps} steps of {BATCH} windows of {patch} px in "
                        f"{trained:.0f} s (loss {first:.4f} -> {last:.4f})"])


def train_on_pair(lr_path, msi_path, seconds: float, folder, lr_name: str | None = None, msi_name: str | None = None,
                  progress=None, log=None) -> tuple[Path, bool]:
    """A small model trained from scratch on the pair for ``seconds`` (:func:`core.jobs.train.train_files`:
    self-supervised, Wald's protocol with the pair's estimated PSF, a residual on MTF-GLP-HS, an automatic held-out
    square, and the crop Super-resolve's check will score it on held out too, where the pair leaves room), for a pair
    no bundled model fits. Returns ``(model path in folder, whether the model may compete)``: a validated checkpoint
    beat the MTF-GLP-HS base on the held-out square on PSNR and SAM, and the check's crop was held out of training.
    When not, use the base instead: on a pair too small to hold the crop out, the check would score the model on
    pixels it trained on, and the held-out square alone (a few LR px once degraded) let through a model 0.5 dB worse
    than MTF-GLP-HS on a 24 x 24 LR px HYDICE pair."""
    _torch()
    from core.jobs.train import train_files
    from core.pairing import check_pair

    from .metadata import read_metadata

    folder = Path(folder)
    scale = check_pair(lr_path, msi_path, lr_name=lr_name, msi_name=msi_name).scale
    res = train_files(folder / "pair_model.onnx", folder / "checkpoints", scale, lr_hsi=str(lr_path), hr_msi=str(msi_path),
                      seconds=seconds, base="mtf_glp_hs", hold_out_check_crop=True, progress=progress,
                      log=log or (lambda m: None), lr_name=lr_name,
                      msi_name=msi_name)
    held_out = isinstance(read_metadata(res.onnx_path).training["data"].get("check_crop"), list)
    if not held_out and log is not None:
        log("the pair is too small to hold the check's crop out of training, so the check could not score the model on "
            "pixels it has not seen; MTF-GLP-HS is used instead")
    return Path(res.onnx_path), res.selected_step is not None and held_out
