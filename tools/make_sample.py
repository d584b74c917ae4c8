"""Write the bundled sample (``examples/data/``) from the held-out EnMAP crop (see ``bench/split.md``).

The reference is a real EnMAP L2A crop (30 m, EPSG:32633) from the part of
``enmap_potsdam_southeast.tif`` that no model is trained on: rows 66-125, cols 2-61 (60 x 60 px, centred
in the held-out square rows 64-127, cols 0-63), with EnMAP's 218 valid bands (the 6 water-vapour bands
flagged ``bbl`` = 0 are all nodata and are dropped, as training drops them). From it
``core.jobs.simulate.simulate_files`` writes the LR-HSI (Gaussian PSF with FWHM = 3 px, decimation by 3:
90 m, 20 x 20 px) and the HR-MSI (the 10 Sentinel-2 land bands B02-B08, B8A, B11, B12 through their
real spectral responses, on the reference's 30 m grid; noise-free). All three are georeferenced, so
``core.pairing.check_pair`` accepts the pair and the result lands on the reference's grid.

Run from the repository root (deterministic; overwrites the three files):

    PYTHONPATH=. .venv/bin/python tools/make_sample.py [--data ../shared/data] [--out examples/data]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.jobs.simulate import simulate_files  # noqa: E402
from core.pairing import check_pair  # noqa: E402
from core.raster_io import RasterReader, Window, subset_meta, write_raster  # noqa: E402

SOURCE = "enmap_potsdam_southeast.tif"
# The held-out square of bench/split.md is rows 64-127, cols 0-63; the sample is its centred 60 x 60
# (a multiple of the scale 3 and of 4, so the LR grid is whole).
WINDOW = Window(col_off=2, row_off=66, width=60, height=60)
SCALE = 3
SENSOR = "sentinel2"
NAMES = {"reference": "sample_reference.tif", "lr": "sample_lr_hsi.tif", "msi": "sample_hr_msi.tif"}


def make_sample(data_dir: Path, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    with RasterReader(data_dir / SOURCE) as r:
        cube = r.read(WINDOW)
        meta = r.meta
    finite = np.isfinite(cube).all(axis=(1, 2))
    keep = np.flatnonzero(meta.good_bands & finite)
    if (meta.good_bands & ~finite).any():
        raise RuntimeError(f"{SOURCE}: good bands with nodata inside the sample window: "
                           f"{np.flatnonzero(meta.good_bands & ~finite).tolist()}")
    sub = subset_meta(meta, keep)
    paths = {k: out_dir / v for k, v in NAMES.items()}
    write_raster(paths["reference"], cube[keep], sub, geotransform=meta.window_geotransform(WINDOW),
                 metadata={"hsrdiff_source": f"EnMAP L2A (c) DLR, {SOURCE} rows {WINDOW.row_off}-"
                                             f"{WINDOW.row_off + WINDOW.height - 1} cols {WINDOW.col_off}-"
                                             f"{WINDOW.col_off + WINDOW.width - 1}, {len(keep)} valid bands",
                           "hsrdiff_role": "reference HR-HSI (held out from training, bench/split.md)"})
    sim = simulate_files(paths["reference"], paths["lr"], paths["msi"], sensor=SENSOR, scale=SCALE)
    geom = check_pair(paths["lr"], paths["msi"])
    assert geom.scale == SCALE, geom
    print(f"reference {paths['reference']}: {len(keep)} bands x {WINDOW.height} x {WINDOW.width} (30 m)")
    print(f"LR-HSI    {paths['lr']}: {sim.lr_shape} ({30 * SCALE} m)")
    print(f"HR-MSI    {paths['msi']}: {sim.msi_shape} ({SENSOR} {', '.join(sim.msi_band_names)}, 30 m grid)")
    total = sum(p.stat().st_size for p in paths.values())
    print(f"total {total / 1e6:.2f} MB")
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="the shared data folder")
    ap.add_argument("--out", default=str(ROOT / "examples" / "data"))
    args = ap.parse_args(argv)
    make_sample(Path(args.data), Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
