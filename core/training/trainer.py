"""Conditional-diffusion training of the CDFormer (HSR-Diff).

One training step: draw a batch of crops (progressive stages set patch and batch size), draw
noise levels ``sqrt(gamma)`` with ``NoiseSchedule.sample_training_levels`` (``t`` uniform on
``1..T``, continuous level between ``sqrt(gamma_t)`` and ``sqrt(gamma_{t-1})``), form
``Z_t = sqrt(g) Z_0 + sqrt(1 - g) eps``, predict ``Z0_hat`` and minimise ``HSRLoss``.

AdamW, linear warm-up then cosine decay to ``min_lr_ratio * lr``, gradient-norm clipping, an EMA
of the weights (exported), bf16 autocast on CUDA, a progress line with loss / lr / s per step /
ETA, validation (short DDIM sampling of the EMA model on the held-out crop, PSNR/SAM in physical
units vs the reference, bicubic given once for comparison) and atomic checkpoints that resume
bit-exactly: every random draw comes from generators whose states are checkpointed (numpy
``Generator`` for crops/augmentation/noise levels, a CPU ``torch.Generator`` for the Gaussian noise,
plus the python/numpy/torch global states).

Patches adapt to the data: a stage patch that does not fit the training pixels of every scene read from
the files (outside the held-out squares and nodata) is reduced to the largest multiple of lcm(window,
scale) that does, the other stages in proportion, with a logged note; when not even the smallest fits,
``ValueError`` names the scene's size, the held-out square and the largest crop that would fit.

A wall-clock budget (:meth:`Trainer.plan_budget`, ``run(deadline=...)``, :meth:`Trainer.finish`) times a
step of each stage and a validation, sizes the schedule to the budget (:func:`resize_schedule`) and stops
between steps when the time is spent.  With ``checkpoint.keep_best`` the best validated checkpoint
(``core.training.selection.best_step``) is never pruned.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from core.metrics import psnr, sam
from core.normalization import BandNormalization
from core.schedule import NoiseSchedule

from .checkpoint import (
    ResumeMismatch,
    describe_differences,
    load_checkpoint,
    rng_state,
    run_signature,
    save_checkpoint,
    set_rng_state,
    signature_differences,
)
from .data import DataBundle, build_data, largest_patch, patch_multiple
from .distributed import DistContext, init_distributed, replicas_identical
from .losses import HSRLoss, band_weights_from_residual
from .sampler import sample
from .selection import best_step, validation_records

__all__ = ["DEFAULTS", "merge_config", "apply_overrides", "Trainer", "train", "lr_at", "EMA", "resize_schedule",
           "model_window"]

DEFAULTS: dict = {
    "name": "run",
    "run_dir": "runs/run",
    "seed": 0,
    "device": "auto",  # auto | cpu | cuda
    "threads": 0,  # torch CPU threads, 0 = leave torch's default
    "amp": True,  # bf16 autocast on CUDA (ignored on CPU)
    "model": {"preset": "small"},  # preset + any ModelConfig overrides
    "data": {
        "mode": "supervised",
        "hsi": None,
        "msi": None,
        "scale": 4,
        "srf": None,
        "msi_bands": None,
        "psf_sigma": None,
        "snr_db": None,
        "val_region": None,
        "base": "bicubic",  # conditioning image: bicubic | mtf_glp_hs (core.conditioning)
    },
    "schedule": {"steps": 2000, "beta_start": 1e-6, "beta_end": 1e-2},
    "loss": {"w_msi": 0.0, "w_lr": 0.0, "w_sam": 0.0},
    "optim": {"lr": 2e-4, "weight_decay": 1e-4, "betas": [0.9, 0.99], "warmup": 100, "min_lr_ratio": 0.05, "grad_clip": 1.0},
    "ema": {"decay": 0.999},
    "stages": [{"steps": 100, "patch": 32, "batch": 4}],
    "augment": True,
    "log_every": 10,
    "val": {"every": 0, "steps": 10, "sampler": "ddim", "eta": 0.0, "seed": 0},
    "checkpoint": {"every": 0, "keep": 2, "keep_best": False},
    # Resuming a run folder whose checkpoint differs in scale, bands, model or base: refuse | allow.
    "resume_mismatch": "refuse",
    # Weights to start from (a fine-tune): a safetensors file of this model's state dict; None = fresh weights.
    "init": None,
}

RESUME_MISMATCH = ("refuse", "allow")


def merge_config(base: dict, update: dict) -> dict:
    """Deep merge (``update`` wins); lists are replaced, not merged."""
    out = copy.deepcopy(base)
    for k, v in (update or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_config(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings; values are parsed as YAML (``3``, ``1e-4``, ``[1, 2]``, ``null``)."""
    import yaml

    cfg = copy.deepcopy(cfg)
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw)
        if isinstance(value, str):  # YAML 1.1 reads "5e-4" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        node = cfg
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if isinstance(node, list):
                node = node[int(p)]
            else:
                node = node.setdefault(p, {})
        if isinstance(node, list):
            node[int(parts[-1])] = value
        else:
            node[parts[-1]] = value
    return cfg


def total_steps(cfg: dict) -> int:
    return int(sum(int(s["steps"]) for s in cfg["stages"]))


def stage_at(cfg: dict, step: int) -> dict:
    """The progressive-learning stage that training step ``step`` (0-based) belongs to."""
    acc = 0
    for s in cfg["stages"]:
        acc += int(s["steps"])
        if step < acc:
            return s
    return cfg["stages"][-1]


def resize_schedule(cfg: dict, total: int) -> dict:
    """A copy of ``cfg`` whose schedule lasts ``total`` steps: each stage keeps its share of the steps (the
    boundaries scaled and rounded), ``optim.warmup``, ``log_every``, ``val.every`` and ``checkpoint.every`` scale
    with it (at least 1 where they were set, 0 stays 0)."""
    out = copy.deepcopy(cfg)
    old, total = total_steps(cfg), max(int(total), 1)
    f = total / max(old, 1)
    bounds, acc = [], 0
    for st in cfg["stages"]:
        acc += int(st["steps"])
        bounds.append(min(int(round(acc * f)), total))
    bounds[-1] = total
    prev = 0
    for st, b in zip(out["stages"], bounds, strict=True):
        st["steps"], prev = max(b - prev, 0), max(b, prev)

    def scaled(v) -> int:
        return max(int(round(int(v) * f)), 1) if int(v) > 0 else 0

    out["optim"]["warmup"] = scaled(cfg["optim"]["warmup"])
    out["log_every"] = scaled(cfg["log_every"])
    out["val"]["every"] = scaled(cfg["val"]["every"])
    out["checkpoint"]["every"] = scaled(cfg["checkpoint"]["every"])
    return out


def model_window(model_cfg: dict) -> int:
    """The attention window (pixels) of the model a ``model`` config section builds."""
    from core.model import PRESETS, ModelConfig

    return int(model_cfg.get("window", PRESETS.get(model_cfg.get("preset", "small"), {}).get("window", ModelConfig.window)))


def lr_at(cfg: dict, step: int) -> float:
    """Linear warm-up over ``optim.warmup`` steps, then cosine from ``lr`` to ``min_lr_ratio * lr``."""
    o = cfg["optim"]
    base, warm, total = float(o["lr"]), int(o["warmup"]), total_steps(cfg)
    if warm > 0 and step < warm:
        return base * (step + 1) / warm
    progress = min(max((step - warm) / max(total - warm, 1), 0.0), 1.0)
    floor = float(o["min_lr_ratio"])
    return base * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


class EMA:
    """Exponential moving average of a model's float32 state (decay warmed up as ``(1+n)/(10+n)``)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(v.detach().float(), alpha=1.0 - d)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict:
        return self.shadow

    def load_state_dict(self, sd: dict) -> None:
        for k in self.shadow:
            self.shadow[k].copy_(sd[k])


class Trainer:
    """Holds the model, optimiser, EMA, data and RNGs of one run; :meth:`run` trains to the end.

    ``resume=True`` continues from ``run_dir``'s latest checkpoint.  A checkpoint whose
    :func:`~core.training.checkpoint.run_signature` (scale, bands, model, conditioning base) differs
    from the new config's raises :class:`~core.training.checkpoint.ResumeMismatch` listing the
    differences, unless the config says ``resume_mismatch: allow``.  With ``model.residual_scale:
    auto`` a resumed run keeps the value the checkpoint was trained with.
    """

    def __init__(self, cfg: dict, resume: bool = False, ctx: DistContext | None = None, log=print,
                 data: DataBundle | None = None):
        from core.model import build_model

        self.cfg = merge_config(DEFAULTS, cfg)
        if self.cfg["resume_mismatch"] not in RESUME_MISMATCH:
            raise ValueError(f"resume_mismatch must be one of {', '.join(RESUME_MISMATCH)}, got {self.cfg['resume_mismatch']!r}")
        self.ctx = ctx or init_distributed(self.cfg["device"])
        self.log = log if self.ctx.is_main else (lambda *a, **k: None)
        if self.cfg.get("threads"):
            torch.set_num_threads(int(self.cfg["threads"]))
        self.run_dir = Path(self.cfg["run_dir"])
        self.device = self.ctx.device
        seed = int(self.cfg["seed"])
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        self.np_rng = np.random.default_rng(seed)
        self.noise_gen = torch.Generator(device="cpu").manual_seed(seed + 1)
        window = model_window(self.cfg["model"])
        top = max(int(st["patch"]) for st in self.cfg["stages"])
        self.data = data or build_data(self.cfg["data"], seed=seed, patch=top, window=window)
        if self.data.describe().get("degradation"):
            self.log(f"the pair's degradation for Wald's protocol: {self.data.describe()['degradation']}")
        crop = self.data.describe().get("check_crop")
        if crop:
            self.log("the check's crop " + (f"[row {crop[0]}, col {crop[1]}, size {crop[2]}] (LR px) is held out of training"
                                            if isinstance(crop, list) else crop))
        self.fit_patches(patch_multiple(self.data.scale, window))
        ckpt = None
        if resume and not (self.run_dir / "latest").exists():
            self.log(f"--resume: no checkpoint in {self.run_dir}, starting from scratch")
        if resume and (self.run_dir / "latest").exists():
            ckpt = load_checkpoint(self.run_dir, map_location="cpu")
        mcfg = dict(self.cfg["model"])
        preset = mcfg.pop("preset", "small")
        if mcfg.get("residual_scale") == "auto":
            trained = ckpt["export_info"]["model_config"].get("residual_scale") if ckpt else None
            if trained is not None:
                mcfg["residual_scale"] = trained
                self.log(f"residual_scale auto: {trained} (the value the checkpoint was trained with)")
            else:
                mcfg["residual_scale"] = round(self.data.residual_rms(), 6)
                self.log(f"residual_scale auto: {mcfg['residual_scale']} (RMS of reference - base on the training pixels)")
        sched = dict(self.cfg["schedule"])
        if sched.get("variable_scale") == "auto":  # the diffused residual in the units the head outputs
            sched["variable_scale"] = float(mcfg.get("residual_scale", 1.0))
        self.schedule = NoiseSchedule(**sched)
        self.model = build_model(preset, self.data.hsi_bands, self.data.msi_bands, **mcfg).to(self.device)
        if ckpt is None and self.cfg.get("init"):
            self._load_init(str(self.cfg["init"]))
        self.ema = EMA(self.model, self.cfg["ema"]["decay"])
        o = self.cfg["optim"]
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=float(o["lr"]), betas=tuple(o["betas"]),
                                     weight_decay=float(o["weight_decay"]))
        self.step = 0
        self.wall = 0.0
        self.validation: dict = {}
        self.history: list[dict] = []
        if ckpt is not None:
            self._load_weights(ckpt)
            st = ckpt["state"]
            self.step = int(st["step"])
            self.wall = float(st.get("wall_time_s", 0.0))
            self.validation = ckpt["export_info"].get("validation", {})
            norm = ckpt["export_info"]["normalization"]
            self.data.hsi_norm = BandNormalization.from_dict(norm["hsi"])
            self.data.msi_norm = BandNormalization.from_dict(norm["msi"])
            set_rng_state(st["rng"], self.np_rng)
            self.noise_gen.set_state(torch.from_numpy(np.frombuffer(bytes(st["noise_gen"]), dtype=np.uint8).copy()))
            self.log(f"resumed from {ckpt['path']} at step {self.step}")
        loss_cfg = dict(self.cfg["loss"])
        weighting = loss_cfg.pop("band_weighting", None) or "none"  # "none" | "residual"
        if weighting not in ("none", "residual"):
            raise ValueError(f"loss.band_weighting must be 'none' or 'residual', got {weighting!r}")
        band_w = band_weights_from_residual(self.data.band_residual_rms()) if weighting == "residual" else None
        self.loss_fn = HSRLoss(
            self.data.scale, self.data.psf, self.data.srf, self.data.hsi_norm, self.data.msi_norm, band_weights=band_w, **loss_cfg
        ).to(self.device)
        self.net = self.model
        if self.ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        self.amp_dtype = torch.bfloat16 if (self.cfg["amp"] and self.device.type == "cuda") else None
        self._bicubic = None
        self.out_of_time = False  # set by run() when its deadline stopped it
        self._step_s = 0.0  # seconds of the last training step (run()'s deadline check)
        self._saved_step: int | None = None

    def fit_patches(self, multiple: int) -> None:
        """Reduce the stages' patches to what fits the training pixels of every primary scene (see the module
        docstring); logs a note when it does, ``ValueError`` when not even ``multiple`` x ``multiple`` fits."""
        stages, d = self.cfg["stages"], self.data
        top = max(int(st["patch"]) for st in stages)
        fit, k = d.largest_patch(multiple, top)
        if fit >= top:
            self._note_val_square()
            return
        sc = d.primary_scenes()[k]
        what = d.scene_text[k] if k < len(d.scene_text) else f"scene {k + 1} is {sc.valid.shape[1]} x {sc.valid.shape[0]} px"
        region = d.describe().get("val_region")
        held = (f"the held-out validation square [row {region[0]}, col {region[1]}, size {region[2]}] "
                if k == 0 and region else "")
        rule = f"a multiple of {multiple} = lcm(window, scale {d.scale})"
        if fit == 0:
            crop = largest_patch(sc.valid, d.scale, d.scale, top)
            raise ValueError(
                f"no training patch fits: {what}; outside {held + 'and ' if held else ''}nodata the largest square "
                f"crop of training pixels is {crop} x {crop} px, smaller than the smallest patch {multiple} x {multiple} "
                f"({rule}). Use a larger image or pair, or a smaller held-out square (data.val_region)")
        before = [int(st["patch"]) for st in stages]
        for st in stages:
            p = int(st["patch"])
            st["patch"] = min(fit, max(multiple, math.ceil(p * fit / top / multiple) * multiple))
        others = [f"{b} -> {int(st['patch'])}" for b, st in zip(before, stages, strict=True) if b != top]
        self.log(f"patch {top} -> {fit}: {what}; {held + 'and ' if held else ''}nodata leave room for {fit} x {fit} px "
                 f"training patches at most ({rule})" + (f"; other stages {', '.join(others)}" if others else ""))
        self._note_val_square()

    def _note_val_square(self) -> None:
        d = self.data.describe()
        if not d.get("val_region_auto"):
            return
        region = d.get("val_region")
        if region is None:
            self.log("validation: no square of valid pixels to hold out; training without validation")
            return
        r, c, size = region
        h, w = self.data.primary_scenes()[0].valid.shape
        self.log(f"validation: held-out square rows {r}-{r + size - 1}, cols {c}-{c + size - 1} ({size} x {size} px, "
                 f"{100 * size * size / (h * w):.0f} % of the {w} x {h} px grid), not trained on")

    def _load_init(self, path: str) -> None:
        """The model's starting weights from the safetensors file ``path`` (config ``init``). When the file records
        the normalisation its weights were trained with (metadata ``normalization``, as
        ``tools/train_bundled.py --init`` writes it), this run's data must normalise the same way."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(path, framework="pt") as f:
            recorded = (f.metadata() or {}).get("normalization")
        if recorded is not None:
            norm = json.loads(recorded)
            mine = {"hsi": self.data.hsi_norm, "msi": self.data.msi_norm}
            for key, n in mine.items():
                theirs = BandNormalization.from_dict(norm[key])
                if not (np.allclose(theirs.offset, n.offset, rtol=1e-4) and np.allclose(theirs.scale, n.scale, rtol=1e-4)):
                    raise ValueError(f"init {path}: its weights were trained with another {key.upper()} normalisation "
                                     "than this run's data gives (other scenes or bands?); train from scratch instead")
        self.model.load_state_dict(load_file(path, device=str(self.device)), strict=True)
        self.log(f"weights from {path} (fine-tuning)")

    def _load_weights(self, ckpt: dict) -> None:
        """Model, EMA and optimizer state from ``ckpt`` after comparing its run signature with this run's."""
        diff = signature_differences(run_signature(ckpt["export_info"]), run_signature(self.export_info()))
        where = f"{self.run_dir} (checkpoint {Path(ckpt['path']).name})"
        if diff and self.cfg["resume_mismatch"] != "allow":
            raise ResumeMismatch(
                f"cannot resume {where}: it was trained with a different configuration: {describe_differences(diff)}. "
                "Train into a new folder, or resume anyway with resume_mismatch: allow "
                "(python -m core.train --allow-config-change; QGIS: 'Resume even if the configuration changed')")
        if diff:
            self.log(f"resuming {where} with a changed configuration (resume_mismatch: allow): {describe_differences(diff)}")
        try:
            self.model.load_state_dict(ckpt["model"])
            self.ema.load_state_dict(ckpt["ema"])
            self.opt.load_state_dict(ckpt["optimizer"]["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ResumeMismatch(f"cannot resume {where}: its weights do not fit the new model "
                                 f"({describe_differences(diff) or 'same configuration'}); train into a new folder") from exc

    # ------------------------------------------------------------------ one step

    def train_step(self) -> dict:
        cfg = self.cfg
        stage = stage_at(cfg, self.step)
        gbatch, patch = int(stage["batch"]), int(stage["patch"])
        world, rank = self.ctx.world_size, self.ctx.rank
        if gbatch % world:
            raise ValueError(f"global batch {gbatch} not divisible by {world} processes")
        batch = self.data.sample_batch(self.np_rng, gbatch, patch, augment=bool(cfg["augment"]))
        levels = torch.from_numpy(self.schedule.sample_training_levels(self.np_rng, gbatch))
        noise = torch.randn(batch["z0"].shape, generator=self.noise_gen)
        sl = slice(rank * gbatch // world, (rank + 1) * gbatch // world)
        lr_now = lr_at(cfg, self.step)
        for group in self.opt.param_groups:
            group["lr"] = lr_now
        loss, parts, gnorm = self._optimise(self.net, self.model, self.opt, {k: v[sl] for k, v in batch.items()},
                                            levels[sl], noise[sl])
        self.ema.update(self.model, self.step)
        self.step += 1
        return {"loss": float(loss.detach()), **{k: float(v) for k, v in parts.items()}, "lr": lr_now, "gnorm": float(gnorm),
                "patch": patch, "batch": gbatch}

    def _optimise(self, net: nn.Module, model: nn.Module, opt: torch.optim.Optimizer, batch: dict, levels: torch.Tensor,
                  noise: torch.Tensor) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """One optimiser step of ``net`` (``model`` or its DDP wrapper) on normalised ``batch`` tensors ``(n, *, p, p)``,
        noise levels ``(n,)`` and Gaussian noise shaped like ``batch["z0"]``; ``(loss, loss parts, gradient norm)``."""
        dev = self.device
        z0, lr_up, msi, lr = (batch[k].to(dev) for k in ("z0", "lr_up", "msi", "lr"))
        g = levels.to(dev)
        x0 = self.schedule.encode(z0, lr_up)
        zt = g[:, None, None, None] * x0 + torch.sqrt(1.0 - g**2)[:, None, None, None] * noise.to(dev)
        net.train()
        with torch.autocast(dev.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            x0_hat = net(zt, g, lr_up, msi)
        loss, parts = self.loss_fn(x0_hat, z0, msi, lr)
        # L1 of the conditioning base itself (x0_hat = base when the residual head is zero): the bar to beat.
        parts["base_l1"] = F.l1_loss(lr_up.float(), z0.float()).detach()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), float(self.cfg["optim"]["grad_clip"]))
        opt.step()
        return loss, parts, gnorm

    # ------------------------------------------------------------------ time budget

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time_step(self, patch: int, batch: int, repeats: int = 2, limit_s: float = float("inf")) -> float:
        """Seconds of one training step with ``batch`` crops of ``patch`` pixels: the median of ``repeats`` timed steps
        (after one untimed) on a throw-away copy of the model and optimiser, with crops drawn from a generator of
        its own, so the run's weights and random generators are untouched.  Stops early once ``limit_s`` is spent."""
        model = copy.deepcopy(self.model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-12)
        rng = np.random.default_rng(12345)
        gen = torch.Generator(device="cpu").manual_seed(12345)
        times, start = [], time.perf_counter()
        for n in range(repeats + 1):
            t0 = time.perf_counter()
            b = self.data.sample_batch(rng, batch, patch, augment=bool(self.cfg["augment"]))
            levels = torch.from_numpy(self.schedule.sample_training_levels(rng, batch))
            self._optimise(model, model, opt, b, levels, torch.randn(b["z0"].shape, generator=gen))
            self._sync()
            if n:
                times.append(time.perf_counter() - t0)
            if time.perf_counter() - start > limit_s:
                times = times or [time.perf_counter() - t0]
                break
        return float(np.median(times))

    def time_validation(self) -> float:
        """Seconds of one :meth:`validate` (0 without a held-out square); its figures are discarded."""
        if self.data.val is None or not int(self.cfg["val"]["every"]):
            return 0.0
        kept, t0 = self.validation, time.perf_counter()
        self.validate()
        self._sync()
        self.validation = kept
        return time.perf_counter() - t0

    def save_seconds(self) -> float:
        """Estimated seconds of one checkpoint write: model, EMA and two optimiser moments in float32 at 100 MB/s."""
        n = sum(p.numel() for p in self.model.parameters())
        return 0.05 + 16.0 * n / 100e6

    def plan_budget(self, seconds: float, started: float | None = None, safety: float = 0.9) -> dict:
        """Size the schedule so that the run ends ``seconds`` after ``started`` (``time.time()``; default now).

        Times a step of every stage (:meth:`time_step`) and one validation (:meth:`time_validation`), then picks the
        largest total ``N`` whose remaining steps, periodic validations and checkpoints take at most ``safety`` of the
        time left, less one final validation and checkpoint, and resizes the config to it (:func:`resize_schedule`:
        the stages keep their shares, e.g. 60 % half-size patches).  Returns ``{"steps": N, "step_s": [per stage],
        "val_s", "save_s", "deadline"}``; pass ``deadline`` to :meth:`run` (it keeps the final validation and checkpoint
        inside the budget) and call :meth:`finish` after.  ``ValueError`` when not even one step and its validation fit.
        """
        if self.ctx.enabled:
            raise ValueError("a time budget is not supported with several processes (torchrun); give the steps instead")
        started = time.time() if started is None else float(started)
        end = started + float(seconds)
        cfg = self.cfg
        shapes = [(int(st["patch"]), int(st["batch"])) for st in cfg["stages"]]
        left = max(end - time.time(), 0.0)
        costs = {sh: self.time_step(*sh, limit_s=0.05 * left) for sh in dict.fromkeys(shapes)}
        step_s = [costs[sh] for sh in shapes]
        val_s, save_s = self.time_validation(), self.save_seconds()
        reserve = val_s + save_s
        avail = safety * (end - time.time()) - reserve

        def cost(total: int) -> float:
            c = resize_schedule(cfg, total)
            acc, sec = 0, 0.0
            for st, each in zip(c["stages"], step_s, strict=True):
                lo, hi = max(acc, self.step), acc + int(st["steps"])
                sec += max(hi - lo, 0) * each
                acc = hi
            for every, each in ((int(c["val"]["every"]), val_s if self.data.val is not None else 0.0),
                                (int(c["checkpoint"]["every"]), save_s)):
                if every:
                    sec += (total // every - self.step // every) * each
            return sec

        lo, hi = self.step, self.step + 1
        while cost(hi) <= avail:
            lo, hi = hi, 2 * hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if cost(mid) <= avail else (lo, mid)
        if lo <= self.step:
            need = (time.time() - started) + (cost(self.step + 1) + reserve) / safety
            raise ValueError(
                f"a time budget of {seconds:g} s is too short for one validated training step: reading the data, building "
                f"the model and timing it took {time.time() - started:.1f} s, one step takes about {max(step_s):.2f} s, "
                f"one validation {val_s:.2f} s and one checkpoint {save_s:.2f} s; give at least {math.ceil(need)} s, "
                "or a number of iterations instead")
        resized = resize_schedule(cfg, lo)
        for key in ("stages", "optim", "log_every", "val", "checkpoint"):
            cfg[key] = resized[key]
        self._step_s = step_s[0]
        return {"steps": lo, "step_s": step_s, "val_s": val_s, "save_s": save_s, "deadline": end - reserve}

    # ------------------------------------------------------------------ validation

    def ema_model(self) -> nn.Module:
        m = copy.deepcopy(self.model)
        m.load_state_dict(self.ema.state_dict())
        return m.eval()

    def validate(self) -> dict:
        if self.data.val is None:
            return {}
        v = self.cfg["val"]
        vb = self.data.validation_batch()
        t0 = time.time()
        z = sample(self.ema_model(), vb["lr_up"].to(self.device), vb["msi"].to(self.device), self.schedule,
                   steps=int(v["steps"]), sampler=v["sampler"], eta=float(v["eta"]), seed=int(v["seed"]),
                   autocast_dtype=self.amp_dtype)
        est = self.data.hsi_norm.invert(z[0].float().cpu().numpy())
        ref = self.data.val["ref"]
        if self._bicubic is None:
            self._bicubic = {"psnr": psnr(ref, self.data.val["lr_up"]), "sam": sam(ref, self.data.val["lr_up"])}
        out = {"step": self.step, "psnr": float(psnr(ref, est)), "sam": float(sam(ref, est)),
               "bicubic_psnr": self._bicubic["psnr"],
               "bicubic_sam": self._bicubic["sam"], "sampler": v["sampler"], "sampling_steps": int(v["steps"]),
               "crop": self.data.describe().get("val_region"), "seconds": round(time.time() - t0, 2)}
        self.validation = out
        return out

    # ------------------------------------------------------------------ checkpoints

    def export_info(self) -> dict:
        d = self.data
        return {
            "preset": self.model.cfg.preset,
            "model_config": self.model.config,
            "hsi_bands": d.hsi_bands,
            "msi_bands": d.msi_bands,
            "scale": d.scale,
            "wavelengths_nm": None if d.wavelengths is None else [float(x) for x in d.wavelengths],
            "fwhm_nm": None if d.fwhm is None else [float(x) for x in d.fwhm],
            "msi_band_names": list(d.msi_band_names),
            "srf": None if d.srf is None else np.asarray(d.srf, np.float64).tolist(),
            "psf_sigma": d.psf_sigma,
            "normalization": {"hsi": d.hsi_norm.to_dict(), "msi": d.msi_norm.to_dict()},
            "schedule": self.schedule.to_dict(),
            "spatial_multiple": int(self.model.spatial_multiple),
            "training": {"data": d.describe(), "steps": self.step, "total_steps": total_steps(self.cfg),
                         "seed": int(self.cfg["seed"]), "init": self.cfg.get("init"),
                         "wall_time_s": round(self.wall, 1), "name": self.cfg["name"], "device": str(self.device),
                         "world_size": self.ctx.world_size},
            "validation": self.validation,
        }

    def save(self) -> Path | None:
        """Write a checkpoint of this step; keeps the newest ``checkpoint.keep`` (0 = all) and, with
        ``checkpoint.keep_best``, the best validated one too (:meth:`prune`)."""
        if not self.ctx.is_main:
            return None
        ck = self.cfg["checkpoint"]
        keep, keep_best = int(ck["keep"]), bool(ck.get("keep_best"))
        state = {"wall_time_s": self.wall, "rng": rng_state(self.np_rng), "noise_gen": self.noise_gen.get_state().tolist()}
        path = save_checkpoint(self.run_dir, self.step, self.model.state_dict(), self.ema.state_dict(),
                               {"optimizer": self.opt.state_dict()}, self.cfg, state, self.export_info(),
                               keep=0 if keep_best else keep)
        if keep_best and keep > 0:
            self.prune(keep)
        self._saved_step = self.step
        return path

    def best_validated(self) -> int | None:
        """The step of the best validated checkpoint still on disk (``core.training.selection.best_step`` over the
        ``run_dir/log.jsonl`` records whose checkpoint folder exists); None when none beats the base."""
        if not (self.run_dir / "log.jsonl").exists():
            return None
        root = self.run_dir / "checkpoints"
        return best_step([r for r in validation_records(self.run_dir) if (root / f"step_{int(r['step']):08d}").is_dir()])

    def prune(self, keep: int) -> None:
        """Delete the checkpoints but the newest ``keep`` and the best validated one (:meth:`best_validated`)."""
        import shutil

        root = self.run_dir / "checkpoints"
        steps = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_"))
        best = self.best_validated()
        spare = {p.name for p in steps[-keep:]} | ({f"step_{best:08d}"} if best is not None else set())
        for p in steps:
            if p.name not in spare:
                shutil.rmtree(p, ignore_errors=True)

    # ------------------------------------------------------------------ loop

    def run(self, max_steps: int | None = None, deadline: float | None = None) -> dict:
        """Train until the configured total (or ``max_steps`` more steps); returns the last validation.

        With ``deadline`` (``time.time()`` seconds) it stops between steps once the next step would end after it
        and sets ``out_of_time``; then call :meth:`finish` to validate and checkpoint that step.
        """
        cfg = self.cfg
        total = total_steps(cfg)
        stop = total if max_steps is None else min(total, self.step + max_steps)
        if deadline is not None and self.ctx.enabled:
            raise ValueError("a time budget is not supported with several processes (torchrun); give the steps instead")
        every_log = int(cfg["log_every"])
        every_val = int(cfg["val"]["every"])
        every_ckpt = int(cfg["checkpoint"]["every"])
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            n_par = sum(p.numel() for p in self.model.parameters())
            self.log(f"[{cfg['name']}] {n_par:,} parameters, {total} steps, device {self.device}, world {self.ctx.world_size}")
            self.trim_log()
        logf = open(self.run_dir / "log.jsonl", "a") if self.ctx.is_main else None
        t_last, n_last, acc = time.time(), self.step, []
        try:
            while self.step < stop:
                if deadline is not None and time.time() + self._step_s > deadline:
                    self.out_of_time = True
                    break
                t0 = time.time()
                rec = self.train_step()
                self._step_s = time.time() - t0
                self.wall += self._step_s
                acc.append(rec)
                if every_log and (self.step % every_log == 0 or self.step == stop):
                    dt = (time.time() - t_last) / max(self.step - n_last, 1)
                    eta = dt * (total - self.step)
                    # Means over the steps since the last line (one batch alone is too noisy to compare with base_l1).
                    mean = {k: float(np.mean([r[k] for r in acc])) for k in ("loss", "l1", "msi", "lr_hsi", "sam", "base_l1") if k in rec}
                    parts = " ".join(f"{k} {mean[k]:.4f}" for k in ("l1", "base_l1", "msi", "lr_hsi", "sam") if k in mean)
                    self.log(f"step {self.step}/{total} patch {rec['patch']} batch {rec['batch']} "
                             f"loss {mean['loss']:.4f} ({parts}) "
                             f"lr {rec['lr']:.2e} {dt:.2f} s/step ETA {eta / 60:.1f} min")
                    if logf:
                        rec_out = {"step": self.step, **mean, "lr": rec["lr"], "s_per_step": dt}
                        logf.write(json.dumps(rec_out) + "\n")
                        logf.flush()
                    t_last, n_last, acc = time.time(), self.step, []
                    sys.stdout.flush()
                if self.ctx.is_main and every_val and self.step % every_val == 0:
                    self._validate_and_log()
                if every_ckpt and self.step % every_ckpt == 0:
                    self.save()
        finally:
            if logf:
                logf.close()
        if self.ctx.enabled:
            same = replicas_identical(self.model)
            self.log(f"replicas identical across {self.ctx.world_size} ranks: {same}")
            if not same:
                raise RuntimeError("DDP replicas diverged")
        if self.step >= total:
            self.finish()
        return self.validation

    def finish(self) -> dict:
        """Validate this step (when validation is on and it was not yet) and checkpoint it (unless the last
        checkpoint is of this step and nothing changed since); returns the last validation."""
        if not self.ctx.is_main:
            return self.validation
        validated = False
        if int(self.cfg["val"]["every"]) and self.data.val is not None and self.validation.get("step") != self.step:
            validated = bool(self._validate_and_log())
        if validated or self._saved_step != self.step:
            self.save()
        return self.validation

    def trim_log(self) -> int:
        """Drop the ``run_dir/log.jsonl`` records of steps after the current one; returns how many were dropped.

        A run killed after logging step N but before checkpointing it resumes from an earlier
        checkpoint M and logs steps M+1..N again: their old records (training lines and ``val``
        records) go, so every step has one record.  Unreadable lines (a write cut short by a kill)
        go too.  The file is replaced atomically.
        """
        path = self.run_dir / "log.jsonl"
        if not path.exists():
            return 0
        kept, dropped = [], 0
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                step = rec["val"]["step"] if isinstance(rec, dict) and "val" in rec else rec.get("step")
                late = step is not None and int(step) > self.step
            except (ValueError, TypeError, AttributeError, KeyError):
                late = True
            if late:
                dropped += 1
            else:
                kept.append(line + "\n")
        if dropped:
            tmp = path.with_name(f".log_{uuid.uuid4().hex[:8]}.jsonl")
            tmp.write_text("".join(kept))
            os.replace(tmp, path)
            self.log(f"{path}: dropped {dropped} records after step {self.step} (logged after the checkpoint this run "
                     "starts from, or unreadable); those steps are logged again")
        return dropped

    def _validate_and_log(self) -> dict:
        """:meth:`validate`, a log line and a ``log.jsonl`` record; ``{}`` without a held-out square."""
        v = self.validate()
        if v:
            self.log(f"  val step {self.step}: PSNR {v['psnr']:.2f} dB SAM {v['sam']:.2f} deg "
                     f"(base {v['bicubic_psnr']:.2f} dB / {v['bicubic_sam']:.2f} deg) [{v['seconds']} s]")
            self.log_validation(v)
        return v

    def log_validation(self, v: dict) -> None:
        """Append a ``{"val": ...}`` record to ``run_dir/log.jsonl`` (read by ``core.training.selection``)."""
        if v and self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / "log.jsonl", "a") as f:
                f.write(json.dumps({"val": v}) + "\n")


def train(cfg: dict, resume: bool = False, ctx: DistContext | None = None, max_steps: int | None = None) -> Trainer:
    tr = Trainer(cfg, resume=resume, ctx=ctx)
    tr.run(max_steps=max_steps)
    return tr
