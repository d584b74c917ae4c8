"""Train an HSR-Diff model from rasters and export it to ONNX (needs torch).

Two modes: *supervised* from a reference HR-HSI (pairs simulated with a sensor response and PSF)
and *self-supervised* from a real LR-HSI / HR-MSI pair (Wald's protocol: both degraded by the
scale, the model learns to rebuild the LR-HSI; the pair's pixel-size ratio must equal the scale).
Checkpoints land in ``checkpoint_dir`` every tenth of the run and on cancel, so a killed or
cancelled run resumes where it stopped; a folder trained with another scale, band set, model size
or conditioning base is refused unless ``allow_config_change``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..progress import Cancelled, Progress, as_progress

__all__ = ["TrainResult", "training_config", "train_files"]

PRESETS = ("tiny", "small", "paper")


@dataclass
class TrainResult:
    onnx_path: str
    checkpoint_dir: str
    steps: int
    validation: dict
    seconds: float


def _multiple(scale: int, window: int = 8) -> int:
    return scale * window // math.gcd(scale, window)


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
) -> dict:
    """The ``core.train`` config for these choices (what the CLI's YAML would hold).

    Patches are rounded up to a multiple of lcm(attention window 8, scale). Progressive learning
    runs the first 60 % of the iterations on half-size patches with twice the batch.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown model size {preset!r}; choose {', '.join(PRESETS)}")
    if (reference is None) == (lr_hsi is None):
        raise ValueError("give either a reference HR-HSI (supervised) or an LR-HSI + HR-MSI pair (self-supervised)")
    if reference is not None and not sensor:
        raise ValueError("training from a reference HR-HSI needs the multispectral sensor's response (a sensor or a CSV)")
    if lr_hsi is not None and not hr_msi:
        raise ValueError("self-supervised training needs the HR-MSI layer too")
    m = _multiple(scale)
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
        data = {"mode": "self_supervised", "hsi": str(lr_hsi), "msi": str(hr_msi), "scale": int(scale), "srf": sensor,
                "psf_sigma": sigma}
    every = max(iterations // 10, 1)
    return {
        "name": Path(checkpoint_dir).name,
        "run_dir": str(checkpoint_dir),
        "seed": int(seed),
        # Model and loss as the bundled models' recipe B (models/README.md): a zero head and a residual scaled to
        # the base's error, so training starts at the base and Adam's steps are sized to the correction; a SAM term.
        "model": {"preset": preset, "head_init_gain": 0.0, "residual_scale": "auto"},
        "data": data,
        "loss": {"w_msi": 0.1 if sensor else 0.0, "w_lr": 0.1, "w_sam": 0.1},
        "optim": {"lr": 1e-3 if preset != "paper" else 2e-4, "warmup": max(min(200, iterations // 10), 1)},
        "ema": {"decay": 0.999 if iterations >= 2000 else 0.99},
        "stages": stages,
        "log_every": max(iterations // 50, 1),
        "checkpoint": {"every": every, "keep": 2},
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
    **options,
) -> TrainResult:
    """Train (or resume) into ``checkpoint_dir`` and export the EMA model to ``out_onnx``.

    ``options`` are :func:`training_config`'s. A real pair whose pixel-size ratio is not ``scale``
    is refused before anything is written (``lr_name`` / ``msi_name`` name its layers in the
    message). Resuming a folder whose checkpoint differs in scale, bands, model or base raises
    :class:`core.training.checkpoint.ResumeMismatch` unless ``allow_config_change``. On cancel the
    state is checkpointed first and :class:`core.progress.Cancelled` raised; no ONNX file is written.
    """
    import time

    from export.onnx_export import export_checkpoint

    from ..training.data import check_pair_scale
    from ..training.trainer import Trainer, total_steps

    prog = as_progress(progress)
    cfg = training_config(checkpoint_dir, scale, **options)
    if cfg["data"]["mode"] == "self_supervised":
        check_pair_scale(cfg["data"]["hsi"], cfg["data"]["msi"], scale, lr_name, msi_name)
    if allow_config_change:
        cfg["resume_mismatch"] = "allow"
    ckpt = Path(checkpoint_dir)
    ckpt.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    seen = set()

    def quiet_log(*parts):
        line = " ".join(str(p) for p in parts)
        if "parameters," in line and line in seen:  # the header repeats each chunk
            return
        seen.add(line)
        log(line)

    tr = Trainer(cfg, resume=resume and (ckpt / "latest").exists(), log=quiet_log)
    total = total_steps(tr.cfg)
    chunk = max(total // 100, 1)
    try:
        while tr.step < total:
            prog.check()
            tr.run(max_steps=chunk)  # saves a checkpoint at the end of the run
            prog.report(0.95 * tr.step / total, f"training step {tr.step}/{total}")
    except Cancelled:
        tr.save()
        raise Cancelled(f"cancelled at step {tr.step}/{total}; the checkpoint in {ckpt} resumes from there") from None
    prog.report(0.96, "exporting to ONNX")
    export_checkpoint(ckpt, out_onnx)
    prog.report(1.0, "done")
    return TrainResult(str(out_onnx), str(ckpt), tr.step, tr.validation, time.time() - t0)
