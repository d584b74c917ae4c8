"""How much the MTF-GLP-HS base depends on the extent it is computed on (CAVE held-out quadrant).

    python bench/experiments/glp_extent.py      # writes bench/experiments/glp_extent.md

The training data (``core.training.data.build_data``) simulates each scene whole; the base of a pixel
then comes from a regression and gains fitted on the whole scene. The benchmark, like a user who runs
the plugin on a crop, simulates and fuses the crop alone. This prints both bases on the same quadrant.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from core.conditioning import base_image  # noqa: E402
from core.metrics import psnr, sam  # noqa: E402
from core.sensor import gaussian_psf, simulate_pair  # noqa: E402
from core.training.data import build_data  # noqa: E402


def main() -> None:
    rows = ["| scale | base of the quadrant | PSNR (dB) | SAM (deg) |", "|---|---|---|---|"]
    for scale in (4, 8):
        cfg = {"mode": "supervised", "base": "mtf_glp_hs", "hsi": str(ROOT.parent / "shared" / "data" / "cave_balloons.tif"),
               "scale": scale, "srf": "nikon_d700", "val_region": [128, 128, 128]}
        data = build_data(cfg, seed=0)
        ref = data.val["ref"]
        sc = data.scenes[0]
        whole = sc.lr_up[:, 128:, 128:]
        lr, msi = simulate_pair(ref, scale, data.srf, gaussian_psf(scale))
        crop = base_image(lr, msi, scale, base="mtf_glp_hs")
        rows.append(f"| {scale} | fitted on the whole 256 x 256 scene (training) | {psnr(ref, whole):.2f} | {sam(ref, whole):.3f} |")
        rows.append(f"| {scale} | fitted on the 128 x 128 quadrant (benchmark, plugin on a crop) | {psnr(ref, crop):.2f} | "
                    f"{sam(ref, crop):.3f} |")
    text = "\n".join(rows)
    print(text)
    (Path(__file__).with_suffix(".md")).write_text("# MTF-GLP-HS base vs extent (CAVE held-out quadrant)\n\n" + text + "\n")


if __name__ == "__main__":
    main()
