"""Train an HSR-Diff model from rasters and export it to ONNX (needs torch).

Two modes: *supervised* from a reference HR-HSI (pairs simulated with a sensor response and PSF)
and *self-supervised* from a real LR-HSI / HR-MSI pair (Wald's protocol: both degraded by the
scale, the model learns to rebuild the LR-HSI; the pair's pixel-size ratio must equal the scale).
Checkpoints land in ``checkpoint_dir`` every tenth of the run and on cancel, so a killed or
cancelled run resumes where it stopped; a folder trained with another scale, band set, model size
or conditioning base is refused unless ``allow_config_change``.

Any size of pair: a square of the image (about a quarter of it, at most 128 px) is held out for
validation by default and the exported model is the best validated checkpoint; patches too large for
the image are reduced with a note (``core.training.trainer``); a real pair below 16 x 16 valid LR
pixels is refused.  ``seconds`` trains for a wall-clock budget instead of a number of iterations
(docs/TRAINING.md).

    python -m core.jobs.train --lr-hsi lr.tif --hr-msi msi.tif --scale 4 --model m.onnx --checkpoints ckpt --seconds 600
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..progress import Cancelled, Progress, as_progress
from .common import DEGRADATIONS

__all__ = ["TrainResult", "training_config", "train_files"]

PRESETS = ("tiny", "small", "paper")


@dataclass
class TrainResult:
    onnx_path: str
    checkpoint_dir: str
    steps: int  # steps trained
    validation: dict  # the exported checkpoint's validation figures on the held-out square ({} without one)
    seconds: float  # wall clock of the whole call, export included
    selected_step: int | None = None  # the best validated step, exported; None: the last step was


def _schedule(iterations: int) -> dict:
    """The settings that follow the number of iterations: warm-up steps, EMA decay, log interval and the
    validation / checkpoint interval (a tenth of the run)."""
    return {"warmup": max(min(200, iterations // 10), 1), "ema": 0.999 if iterations >= 2000 else 0.99,
            "log_every": max(iterations // 50, 1), "every": max(iterations // 10, 1)}


def training_config(
    checkpoint_dir: str | os.PathLike,
    scale: int,
    reference: str | None = None,
    lr_hsi: str | None = None,
    hr_msi: str | None = None,
    sensor: str | None = None,
    sigma: float | None = None,
    preset: str = "small",
    iterations: int = 2000,
    progressive: bool = True,
    patch: int = 64,
    batch: int = 4,
    seed: int = 0,
    seconds: float | None = None,
    val_region: str | list | None = "auto",
    base: str = "bicubic",
    degradation: str = "estimate",
    hold_out_check_crop: bool = False,
) -> dict:
    """The ``core.train`` config for these choices (what the CLI's YAML would hold).

    Patches are rounded up to a multiple of lcm(attention window 8, scale), and the trainer reduces them
    to what fits the image. Progressive learning runs the first 60 % of the iterations on half-size
    patches with twice the batch. ``base``: the conditioning image the network corrects (``bicubic`` or
    ``mtf_glp_hs``, :mod:`core.conditioning`). ``degradation`` (a real pair only): the PSF Wald's protocol degrades
    the pair with, ``estimate`` (default: estimated from the pair, offset included, as Super-resolve does) or
    ``model`` (the nominal centred Gaussian of ``sigma``); a given ``sigma`` is the PSF used, so it means ``model``.
    ``hold_out_check_crop`` (a real pair only): keep the crop
    Super-resolve's check scores the model on out of training (``core.training.data._check_box``).
    ``val_region``: the held-out validation square ``[row, col, size]``
    (pixels of the reference, or of the real LR-HSI), ``"auto"`` (default: placed inside the image by
    ``core.training.data.auto_val_region``) or None (no validation). It is validated on every tenth of the
    run and the best validated checkpoint is kept (``checkpoint.keep_best``). ``seconds``: a wall-clock
    budget, stored as ``budget_s``; :func:`train_files` then sizes the schedule to it and ``iterations``
    only sets the provisional schedule that is resized.
    """
    from ..training.data import patch_multiple

    if preset not in PRESETS:
        raise ValueError(f"unknown model size {preset!r}; choose {', '.join(PRESETS)}")
    if (reference is None) == (lr_hsi is None):
        raise ValueError("give either a reference HR-HSI (supervised) or an LR-HSI + HR-MSI pair (self-supervised)")
    if reference is not None and not sensor:
        raise ValueError("training from a reference HR-HSI needs the multispectral sensor's response (a sensor or a CSV)")
    if lr_hsi is not None and not hr_msi:
        raise ValueError("self-supervised training needs the HR-MSI layer too")
    if seconds is not None and not float(seconds) > 0:
        raise ValueError(f"the time budget must be positive seconds, got {seconds!r}")
    m = patch_multiple(scale)
    full = max(m, int(math.ceil(patch / m) * m))
    half = max(m, int(math.ceil(full / 2 / m) * m))
    iterations = max(int(iterations), 2)
    if progressive and half < full:
        first = int(iterations * 0.6)
        stages = [{"steps": first, "patch": half, "batch": 2 * batch}, {"steps": iterations - first, "patch": full, "batch": batch}]
    else:
        stages = [{"steps": iterations, "patch": full, "batch": batch}]
    data = {"mode": "supervised", "hsi": str(reference), "scale": int(scale), "srf": sensor, "psf_sigma": sigma}
    if lr_hsi is not None:
        if degradation not in DEGRADATIONS:
            raise ValueError(f"unknown degradation {degradation!r}; choose {', '.join(DEGRADATIONS)}")
        data = {"mode": "self_supervised", "hsi": str(lr_hsi), "msi": str(hr_msi), "scale": int(scale), "srf": sensor,
                "psf_sigma": sigma, "degradation": "model" if sigma is not None else degradation,
                "hold_out_check_crop": bool(hold_out_check_crop)}
    data["val_region"] = val_region
    data["base"] = base
    sched = _schedule(iterations)
    return {
        "name": Path(checkpoint_dir).name,
        "run_dir": str(checkpoint_dir),
        "seed": int(seed),
        "budget_s": None if seconds is None else float(seconds),
        # Model and loss as the bundled models' recipe B (models/README.md): a zero head and a residual scaled to
        # the base's error, so training starts at the base and Adam's steps are sized to the correction; a SAM term.
        "model": {"preset": preset, "head_init_gain": 0.0, "residual_scale": "auto"},
        "data": data,
        "loss": {"w_msi": 0.1 if sensor else 0.0, "w_lr": 0.1, "w_sam": 0.1},
        "optim": {"lr": 1e-3 if preset != "paper" else 2e-4, "warmup": sched["warmup"]},
        "ema": {"decay": sched["ema"]},
        "stages": stages,
        "log_every": sched["log_every"],
        "val": {"every": sched["every"], "steps": 10},
        "checkpoint": {"every": sched["every"], "keep": 2, "keep_best": True},
    }


def train_files(
    out_onnx: str | os.PathLike,
    checkpoint_dir: str | os.PathLike,
    scale: int,
    resume: bool = True,
    progress: Progress | None = None,
    log=print,
    allow_config_change: bool = False,
    lr_name: str | None = None,
    msi_name: str | None = None,
    reference_name: str | None = None,
    seconds: float | None = None,
    **options,
) -> TrainResult:
    """Train (or resume) into ``checkpoint_dir`` and export the best validated EMA model to ``out_onnx``.

    ``options`` are :func:`training_config`'s. A real pair whose pixel-size ratio is not ``scale``, or
    smaller than 16 x 16 valid LR pixels, or an image too small for the smallest patch beside its
    held-out square, is refused before anything is written (``lr_name`` / ``msi_name`` /
    ``reference_name`` name the layers in the messages). Resuming a folder whose checkpoint differs in
    scale, bands, model or base raises :class:`core.training.checkpoint.ResumeMismatch` unless
    ``allow_config_change``. On cancel the state is checkpointed first and
    :class:`core.progress.Cancelled` raised; no ONNX file is written.

    ``seconds``: a wall-clock budget (from this call's start to the last checkpoint; the ONNX export
    follows) instead of ``iterations``: a step of each stage and a validation are timed, the number of
    iterations that fits is fixed and the schedule sized to it (warm-up, cosine decay, progressive switch
    at 60 %, validation every tenth), and training stops between steps if the time runs out first. A
    budget too short for one validated step raises ``ValueError`` before anything is written.

    The exported checkpoint is the best validated one that beats the conditioning base on the held-out
    square on both PSNR and SAM (``core.training.selection``); when none does, or without a square, the last.
    """
    from export.onnx_export import export_checkpoint

    from ..training.checkpoint import resolve_checkpoint
    from ..training.data import check_pair_scale
    from ..training.trainer import Trainer, total_steps

    t0 = time.time()
    prog = as_progress(progress)
    cfg = training_config(checkpoint_dir, scale, seconds=seconds, **options)
    data = cfg["data"]
    supervised = data["mode"] == "supervised"
    data.update({k: v for k, v in (("hsi_name", reference_name if supervised else lr_name), ("msi_name", msi_name)) if v})
    if not supervised:
        check_pair_scale(data["hsi"], data["msi"], scale, lr_name, msi_name)
    if allow_config_change:
        cfg["resume_mismatch"] = "allow"
    ckpt = Path(checkpoint_dir)
    seen = set()

    def quiet_log(*parts):
        line = " ".join(str(p) for p in parts)
        if "parameters," in line and line in seen:  # the header repeats each chunk
            return
        seen.add(line)
        log(line)

    tr = Trainer(cfg, resume=resume and (ckpt / "latest").exists(), log=quiet_log)
    deadline = None
    if seconds is not None:
        plan = tr.plan_budget(seconds, started=t0)
        sched = _schedule(plan["steps"])
        tr.cfg["optim"]["warmup"] = sched["warmup"]
        tr.cfg["ema"]["decay"] = tr.ema.decay = sched["ema"]
        tr.cfg["log_every"] = sched["log_every"]
        tr.cfg["val"]["every"] = tr.cfg["checkpoint"]["every"] = sched["every"]
        deadline = plan["deadline"]
        per = ", ".join(f"{t:.2f} s (patch {st['patch']}, batch {st['batch']})"
                        for t, st in zip(plan["step_s"], tr.cfg["stages"], strict=True))
        quiet_log(f"time budget {seconds:g} s: {plan['steps']} iterations (a step takes {per}; a validation "
                  f"{plan['val_s']:.2f} s), validated and checkpointed every {sched['every']}")
    ckpt.mkdir(parents=True, exist_ok=True)
    total = total_steps(tr.cfg)
    chunk = max(total // 100, 1)
    try:
        while tr.step < total and not tr.out_of_time:
            prog.check()
            tr.run(max_steps=chunk, deadline=deadline)
            done = tr.step / total if seconds is None else max(tr.step / total, min((time.time() - t0) / seconds, 1.0))
            prog.report(0.95 * done, f"training step {tr.step}/{total}")
        if tr.out_of_time:
            quiet_log(f"time budget spent at step {tr.step}/{total}")
        tr.finish()
    except Cancelled:
        tr.save()
        raise Cancelled(f"cancelled at step {tr.step}/{total}; the checkpoint in {ckpt} resumes from there") from None
    best = tr.best_validated()
    folder = resolve_checkpoint(ckpt) if best is None else ckpt / "checkpoints" / f"step_{best:08d}"
    validation = tr.validation
    if best is not None:
        from ..training.selection import validation_records

        validation = next(r for r in validation_records(ckpt) if int(r["step"]) == best)
        quiet_log(f"exporting step {best}, the best validated: PSNR {validation['psnr']:.2f} dB, SAM "
                  f"{validation['sam']:.2f} deg on the held-out square (base {validation['bicubic_psnr']:.2f} dB, "
                  f"{validation['bicubic_sam']:.2f} deg)")
    elif tr.data.val is not None:
        quiet_log(f"no validated checkpoint beat the conditioning base on both PSNR and SAM on the held-out square; "
                  f"exporting the last one (step {tr.step})")
    prog.report(0.96, "exporting to ONNX")
    export_checkpoint(folder, out_onnx)
    prog.report(1.0, "done")
    return TrainResult(str(out_onnx), str(ckpt), tr.step, validation, time.time() - t0, best)


def _val_region(text: str):
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    parts = [int(v) for v in text.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError("expected auto, none or ROW,COL,SIZE")
    return parts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.jobs.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", help="A. a reference HR-HSI (supervised; needs --sensor)")
    ap.add_argument("--lr-hsi", help="B. a real LR-HSI (self-supervised, with --hr-msi)")
    ap.add_argument("--hr-msi", help="B. the real HR-MSI of the same place")
    ap.add_argument("--scale", type=int, required=True, help="HR pixels per LR pixel")
    ap.add_argument("--model", required=True, help="the .onnx file to write")
    ap.add_argument("--checkpoints", required=True, help="checkpoint folder (resumed when it holds a run)")
    ap.add_argument("--sensor", help="multispectral sensor name or SRF CSV (needed for A, optional for B)")
    ap.add_argument("--sigma", type=float, default=None, help="PSF sigma in HR pixels (default: FWHM = scale)")
    ap.add_argument("--degradation", default="estimate", choices=DEGRADATIONS,
                    help="B. the PSF Wald's protocol degrades the pair with: estimated from it (default) or the nominal "
                         "one (--sigma sets the nominal one and means model)")
    ap.add_argument("--preset", default="small", choices=PRESETS, help="model size")
    ap.add_argument("--iterations", type=int, default=2000, help="training iterations (without --seconds)")
    ap.add_argument("--seconds", type=float, default=None, help="wall-clock budget in seconds instead of --iterations")
    ap.add_argument("--no-progressive", action="store_true", help="no half-size patches for the first 60 %%")
    ap.add_argument("--patch", type=int, default=64, help="patch size in pixels of the training grid")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-region", type=_val_region, default="auto", metavar="auto|none|ROW,COL,SIZE",
                    help="held-out validation square (default auto)")
    ap.add_argument("--no-resume", action="store_true", help="start afresh even if the folder holds a run")
    ap.add_argument("--allow-config-change", action="store_true", help="resume a folder trained with another configuration")
    a = ap.parse_args(argv)
    try:
        res = train_files(a.model, a.checkpoints, a.scale, resume=not a.no_resume, allow_config_change=a.allow_config_change,
                          seconds=a.seconds, reference=a.reference, lr_hsi=a.lr_hsi, hr_msi=a.hr_msi, sensor=a.sensor,
                          sigma=a.sigma, degradation=a.degradation, preset=a.preset, iterations=a.iterations,
                          progressive=not a.no_progressive,
                          patch=a.patch, batch=a.batch, seed=a.seed, val_region=a.val_region,
                          log=lambda line: print(line, flush=True))
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Cancelled as exc:
        print(f"cancelled: {exc}", file=sys.stderr)
        return 1
    print(f"{res.onnx_path}: {res.steps} steps in {res.seconds:.0f} s; exported step "
          f"{res.selected_step if res.selected_step is not None else res.steps}; validation {res.validation or 'n/a'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
