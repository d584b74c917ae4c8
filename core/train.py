"""Command line training of the HSR-Diff CDFormer.

    python -m core.train --config configs/small_cave.yaml [--set key.sub=value ...] [--resume]
    torchrun --nproc_per_node=2 -m core.train --config configs/tiny.yaml   # DDP (gloo on CPU)

Every option of the YAML config (see ``core.training.trainer.DEFAULTS`` for the full list) can be
overridden with ``--set``; values are parsed as YAML, e.g. ``--set optim.lr=5e-4
--set stages.0.steps=200 --set data.val_region=null``.  ``--resume`` continues the run in
``run_dir`` from its latest checkpoint (bit-exact on the same device/thread count); a checkpoint
trained with another scale, band set, model or conditioning base is refused unless
``--allow-config-change`` (config ``resume_mismatch: allow``).
``--max-steps N`` stops after N more steps (checkpointing first if ``checkpoint.every`` divides).
``--seconds S`` (config ``budget_s``) sizes the schedule to a wall-clock budget and stops when it is spent
(``Trainer.plan_budget``; one process only; docs/TRAINING.md).  Patches too large for the data are reduced
with a note, and ``data.val_region: auto`` holds out a validation square inside the first scene.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def load_config(path: str | None, overrides: list[str]) -> dict:
    import yaml

    from core.training.trainer import DEFAULTS, apply_overrides, merge_config

    user = yaml.safe_load(Path(path).read_text()) if path else {}
    return apply_overrides(merge_config(DEFAULTS, user or {}), overrides)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML training config (configs/*.yaml)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config entry")
    ap.add_argument("--resume", action="store_true", help="continue from run_dir/latest")
    ap.add_argument("--allow-config-change", action="store_true",
                    help="resume even if scale, bands, model or base differ from the checkpoint's (resume_mismatch: allow)")
    ap.add_argument("--max-steps", type=int, default=None, help="stop after this many more steps")
    ap.add_argument("--seconds", type=float, default=None, help="wall-clock budget: size the schedule to it (budget_s)")
    ap.add_argument("--print-config", action="store_true", help="print the merged config and exit")
    args = ap.parse_args(argv)
    t0 = time.time()
    cfg = load_config(args.config, args.overrides)
    if args.seconds is not None:
        cfg["budget_s"] = args.seconds
    if args.allow_config_change:
        cfg["resume_mismatch"] = "allow"
    if args.print_config:
        print(json.dumps(cfg, indent=1))
        return 0
    from core.training.distributed import cleanup, init_distributed
    from core.training.trainer import Trainer

    ctx = init_distributed(cfg["device"])
    try:
        tr = Trainer(cfg, resume=args.resume, ctx=ctx, log=lambda *a: print(*a, flush=True))
        if cfg.get("budget_s"):
            plan = tr.plan_budget(float(cfg["budget_s"]), started=t0)
            print(f"time budget {cfg['budget_s']:g} s: {plan['steps']} steps", flush=True)
            tr.run(max_steps=args.max_steps, deadline=plan["deadline"])
            val = tr.finish()
        else:
            val = tr.run(max_steps=args.max_steps)
        if ctx.is_main and val:
            print(json.dumps(val), flush=True)
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
