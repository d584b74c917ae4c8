"""Print a run's validation curve, pick the best checkpoint (core.training.selection) and export it to ONNX.

    python tools/select_checkpoint.py runs/cpu_sel/cave_x4 [--export /tmp/selected_cave_x4.onnx]

A selection run trains on part of the data only: the shipped model is the same recipe trained again on all
training pixels to the chosen step (``tools/train_bundled.py --stop-at N``; models/README.md).

Exits 1 when no validated checkpoint beats the conditioning base on both PSNR and SAM.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from core.training.selection import best_checkpoint, best_step, validation_records

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--export", default=None, help="write the chosen checkpoint's ONNX here")
    args = ap.parse_args()
    recs = validation_records(args.run_dir)
    best = best_step(recs)
    print("| step | PSNR (dB) | SAM (deg) | base PSNR | base SAM |\n|---|---|---|---|---|")
    for r in recs:
        mark = " **best**" if r["step"] == best else ""
        print(f"| {r['step']}{mark} | {r['psnr']:.3f} | {r['sam']:.3f} | {r['bicubic_psnr']:.3f} | {r['bicubic_sam']:.3f} |")
    folder = best_checkpoint(args.run_dir)
    if folder is None:
        print("no validated checkpoint beats the base on both PSNR and SAM", file=sys.stderr)
        return 1
    print(f"chosen: {folder}")
    if args.export:
        from export.onnx_export import export_checkpoint

        print(export_checkpoint(folder, args.export))
    return 0


if __name__ == "__main__":
    sys.exit(main())
