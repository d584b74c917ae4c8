"""Choose a checkpoint by its validation figures (early stopping after the fact).

The trainer appends ``{"val": {...}}`` records to ``RUN/log.jsonl`` and, with ``checkpoint.keep: 0``,
keeps a checkpoint at every validation step.  A checkpoint qualifies when it beats the conditioning base on
the validation square on both PSNR and SAM (the trainer's ``bicubic_*`` keys hold the base's figures); the
qualifying one with the highest PSNR wins.  The validation square must not be a benchmark crop, or the
benchmark stops being held out: use ``data.val_region`` for selection and ``data.exclude`` for the benchmark.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["validation_records", "best_step", "best_checkpoint"]


def validation_records(run_dir: str | Path) -> list[dict]:
    """The ``val`` records of ``run_dir/log.jsonl`` in step order (a resumed run's repeats: the last wins)."""
    by_step: dict[int, dict] = {}
    for line in (Path(run_dir) / "log.jsonl").read_text().splitlines():
        rec = json.loads(line) if line.strip() else {}
        if "val" in rec:
            by_step[int(rec["val"]["step"])] = rec["val"]
    return [by_step[k] for k in sorted(by_step)]


def best_step(records: list[dict]) -> int | None:
    """The step whose PSNR (dB) is highest among those beating the base on PSNR and SAM (deg); None if none does."""
    ok = [r for r in records if r["psnr"] > r["bicubic_psnr"] and r["sam"] < r["bicubic_sam"]]
    return int(max(ok, key=lambda r: r["psnr"])["step"]) if ok else None


def best_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint folder of ``best_step`` in ``run_dir``; None when no validated checkpoint beats the base."""
    step = best_step(validation_records(run_dir))
    if step is None:
        return None
    folder = Path(run_dir) / "checkpoints" / f"step_{step:08d}"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: the best validated step's checkpoint was not kept (set checkpoint.keep: 0)")
    return folder
