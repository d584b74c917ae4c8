"""Train one bundled model (configs/bundled/CASE.yaml) within a wall-clock budget.

    python tools/train_bundled.py enmap_s2_x3 --budget-s 420 --out runs/bundled [--data-dir .devdata] [--set k=v ...]

The budget is met by measuring the speed first (a short probe run, discarded) and scaling every
progressive stage's step count by the same factor, so the warm-up / cosine schedule and the
stage proportions of the config are kept. ``--data-dir`` swaps the GeoTIFF inputs for ``.npz``
copies of the same cubes (``tools/train_bundled.py --make-npz DIR`` writes them), for a machine
without GDAL. The final checkpoint lands in ``OUT/CASE`` with the exact config used.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_case(case: str, overrides: list[str]) -> dict:
    import yaml

    from core.training.trainer import DEFAULTS, apply_overrides, merge_config

    common = yaml.safe_load((ROOT / "configs" / "bundled" / "_common.yaml").read_text())
    own = yaml.safe_load((ROOT / "configs" / "bundled" / f"{case}.yaml").read_text())
    return apply_overrides(merge_config(merge_config(DEFAULTS, common), own), overrides)


def to_npz(paths, data_dir: Path) -> list:
    """The ``.npz`` copies in ``data_dir`` of ``paths`` (a path, or a list of paths or ``extra_hsi`` entries)."""
    paths = paths if isinstance(paths, list) else [paths]
    return [dict(p, path=str(data_dir / (Path(p["path"]).stem + ".npz"))) if isinstance(p, dict)
            else str(data_dir / (Path(p).stem + ".npz")) for p in paths]


def make_npz(out_dir: Path) -> None:
    """Write ``.npz`` copies (cube, wavelengths, fwhm, bad_bands) of every scene the bundled configs use."""
    import numpy as np

    from core.raster_io import read_raster
    from core.training.data import extra_hsi_source

    out_dir.mkdir(parents=True, exist_ok=True)
    seen = set()
    for cfg_path in sorted((ROOT / "configs" / "bundled").glob("[!_]*.yaml")):
        cfg = load_case(cfg_path.stem, [])
        paths = cfg["data"]["hsi"] if isinstance(cfg["data"]["hsi"], list) else [cfg["data"]["hsi"]]
        for p in paths + [extra_hsi_source(e)[0] for e in cfg["data"].get("extra_hsi") or []]:
            if p in seen:
                continue
            seen.add(p)
            cube, meta = read_raster(ROOT / p)
            extra = {k: v for k, v in (("wavelengths", meta.wavelengths), ("fwhm", meta.fwhm), ("bad_bands", meta.bad_bands))
                     if v is not None}
            np.savez_compressed(out_dir / (Path(p).stem + ".npz"), cube=cube, **extra)
            print(f"wrote {out_dir / (Path(p).stem + '.npz')}")


def probe_speed(cfg: dict, out: Path, probe_steps: int) -> list[float]:
    """Seconds per step of each progressive stage, measured on a throwaway trainer."""
    from core.training.trainer import Trainer

    probe = copy.deepcopy(cfg)
    probe["run_dir"] = str(out) + "_probe"
    probe["val"]["every"] = 0
    probe["checkpoint"]["every"] = 0
    tr = Trainer(probe, log=lambda *a: None)
    n = max(probe_steps // len(cfg["stages"]), 5)
    times = []
    for st in cfg["stages"]:
        tr.cfg["stages"] = [dict(st, steps=10**9)]
        tr.train_step()  # warm-up (allocations, kernels)
        if tr.device.type == "cuda":
            import torch

            torch.cuda.synchronize()
        t0 = time.time()
        for _ in range(n):
            tr.train_step()
        times.append((time.time() - t0) / n)
    tr.validate()  # the sampling path must work too
    shutil.rmtree(probe["run_dir"], ignore_errors=True)
    return times


def init_from(cfg: dict, model_path: Path, weights: Path) -> None:
    """Point ``cfg`` at the weights of ``model_path`` (written to ``weights``) and its residual scale.

    The file's normalisation goes with the weights (safetensors metadata ``normalization``): the trainer refuses
    training data that normalise otherwise, for which the weights would mean something else.
    """
    import json

    from safetensors.torch import save_file

    from export.from_onnx import cdformer_from_onnx

    net, meta = cdformer_from_onnx(model_path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights),
              metadata={"normalization": json.dumps(meta["normalization"])})
    cfg["init"] = str(weights)
    cfg["model"]["residual_scale"] = meta["model_config"]["residual_scale"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case", nargs="?")
    ap.add_argument("--budget-s", type=float, default=600.0, help="wall-clock seconds for the real run; 0 = the config's steps as given")
    ap.add_argument("--probe-steps", type=int, default=40)
    ap.add_argument("--out", default="runs/bundled")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--make-npz", default=None, metavar="DIR")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--val-every", type=int, default=0, help="validate and keep a checkpoint every N steps (default: 4 times)")
    ap.add_argument("--stop-at", type=int, default=0,
                    help="stop after N steps of the planned schedule (early stopping at a step chosen on a validation run)")
    ap.add_argument("--init", default=None, metavar="MODEL.onnx",
                    help="fine-tune: start from this exported model's weights and residual scale (export.from_onnx)")
    args = ap.parse_args()
    if args.make_npz:
        make_npz(Path(args.make_npz))
        return 0

    cfg = load_case(args.case, args.overrides)
    if args.data_dir:
        cfg["data"]["hsi"] = to_npz(cfg["data"]["hsi"], Path(args.data_dir))
        if cfg["data"].get("extra_hsi"):
            cfg["data"]["extra_hsi"] = to_npz(list(cfg["data"]["extra_hsi"]), Path(args.data_dir))
    out = Path(args.out) / args.case
    cfg["run_dir"] = str(out)
    if args.init:
        init_from(cfg, Path(args.init), Path(args.out) / f"{args.case}_init.safetensors")

    def log(*a):
        print(f"[{args.case}]", *a, flush=True)

    # 1. Speed probe of every stage, discarded afterwards. On a GPU box whose CUDA path fails
    #    (driver, bf16 kernels), fall back to fp32 and then to the CPU rather than lose the run.
    stages = cfg["stages"]
    t_stage = None
    if args.budget_s <= 0:
        return train(cfg, out, log, [0.0] * len(stages), val_every=args.val_every, stop_at=args.stop_at)
    for device, amp in ((cfg["device"], cfg["amp"]), (cfg["device"], False), ("cpu", False)):
        cfg["device"], cfg["amp"] = device, amp
        try:
            t_stage = probe_speed(cfg, out, args.probe_steps)
            break
        except Exception as exc:  # noqa: BLE001 (any failure of the accelerated path)
            log(f"probe failed on device={device} amp={amp}: {type(exc).__name__}: {exc}")
    if t_stage is None:
        return 1
    return train(cfg, out, log, t_stage, args.budget_s, val_every=args.val_every, stop_at=args.stop_at)


def train(cfg: dict, out: Path, log, t_stage: list[float], budget_s: float | None = None, val_every: int = 0,
          stop_at: int = 0) -> int:
    """Scale the stages to ``budget_s`` (when given, from the probe's ``t_stage``) and train to the end.

    ``val_every``: validate and keep a checkpoint every that many steps (0 = four times in the run).
    ``stop_at``: stop after that many steps of the same schedule (learning rate, stages) and save there.
    """
    from core.training.trainer import Trainer, total_steps

    stages = cfg["stages"]
    if budget_s:
        planned = sum(st["steps"] * t for st, t in zip(stages, t_stage, strict=True))
        # Leave 8 % of the budget for validation and checkpoints.
        factor = 0.92 * budget_s / planned
        for st in stages:
            st["steps"] = max(int(st["steps"] * factor), 10)
        cfg["optim"]["warmup"] = max(int(cfg["optim"]["warmup"] * min(factor, 1.0)), 10)
    total = total_steps(cfg)
    cfg["val"]["every"] = cfg["checkpoint"]["every"] = val_every or max(total // 4, 1)
    if val_every:  # every validated checkpoint is kept, so the best one can be exported (tools/select_checkpoint.py)
        cfg["checkpoint"]["keep"] = 0
    log(f"probe: {', '.join(f'{t * 1000:.0f} ms/step' for t in t_stage)}; planned {total} steps "
        f"({', '.join(str(s['steps']) for s in stages)})" + (f" for {budget_s:.0f} s" if budget_s else ""))
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    tr = Trainer(cfg, log=log)
    val = tr.run(max_steps=stop_at or None)
    if stop_at and tr.step < total:
        if tr.validation.get("step") != tr.step:
            tr.log_validation(tr.validate())
        val = tr.validation
        tr.save()
        log(f"stopped at step {tr.step} of {total} (--stop-at)")
    wall = time.time() - t0
    summary = {"case": cfg["name"], "steps": tr.step, "planned_steps": total, "stages": stages, "wall_s": round(wall, 1), "validation": val,
               "probe_s_per_step": t_stage}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    log(f"done in {wall:.0f} s: {json.dumps(val)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
