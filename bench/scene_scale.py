"""Peak memory and wall time of super-resolution against the output size, for every bundled model.

    python bench/scene_scale.py [--sides 384,768,1536] [--models all|NAME,...] [--steps 1] [--threads 2]
                                [--full-scene] [--full-steps 25] [--work DIR] [--out bench/results/scene_scale]

Each run is a fresh subprocess calling :func:`export.superresolve.superresolve` with the default tile
(``export.defaults``) on a GeoTIFF pair written for it; its peak RSS is the kernel's ``VmHWM``.
The pair has real spectra: the model's held-out crop (the EnMAP Potsdam south-east crop for the
EnMAP + Sentinel-2 models, the CAVE balloons quadrant for the CAVE models) mirror-tiled to the HR
size, the LR-HSI its ``scale x scale`` block mean, the HR-MSI its spectral response (Sentinel-2 or
the Nikon D700). ``--full-scene`` adds one EnMAP-sized run: 3000 x 3000 x 224 output with the
x3 model (1000 x 1000 LR pixels) at ``--full-steps``. Memory does not depend on the number of steps,
so the size sweep runs ``--steps`` (1 by default) and reports seconds per step as well.
The bar (issue 17): peak RSS < 4 GB at every size, flat within 20 % from 768^2 up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from core.raster_io import RasterWriter, read_raster  # noqa: E402
from core.sensor import spectral_response  # noqa: E402
from export import defaults as dflt  # noqa: E402
from export.metadata import read_metadata  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
MODELS = {
    "enmap_s2_x3": ("enmap_potsdam_southeast.tif", "sentinel2"),
    "enmap_s2_x4": ("enmap_potsdam_southeast.tif", "sentinel2"),
    "enmap_s2_x8": ("enmap_potsdam_southeast.tif", "sentinel2"),
    "cave_x4": ("cave_balloons.tif", "nikon_d700"),
    "cave_x8": ("cave_balloons.tif", "nikon_d700"),
}
STRIP = 96  # HR rows written at a time (a multiple of 3, 4 and 8)


def _mirror(n_out: int, n: int) -> np.ndarray:
    i = np.arange(n_out) % (2 * n)
    return np.where(i < n, i, 2 * n - 1 - i)


def make_pair(folder: Path, model: str, side: int) -> tuple[Path, Path]:
    """Write ``lr.tif`` and ``msi.tif`` for an HR output of ``side x side`` pixels (see the module docstring)."""
    md = read_metadata(ROOT / "models" / f"hsrdiff_{model}.onnx")
    scene, sensor = MODELS[model]
    cube, meta = read_raster(DATA / scene)
    if scene.startswith("cave"):
        cube = cube[:, cube.shape[1] // 2:, cube.shape[2] // 2:]  # the held-out quadrant
    cube = np.nan_to_num(cube, nan=0.0)
    srf = spectral_response(sensor, meta.wavelengths, meta.fwhm, bands=md.msi_band_names, valid_bands=meta.good_bands)
    s = md.scale
    if side % s or STRIP % s:
        raise ValueError(f"side {side} and strip {STRIP} must be multiples of the scale {s}")
    folder.mkdir(parents=True, exist_ok=True)
    lr_p, msi_p = folder / "lr.tif", folder / "msi.tif"
    px = 10.0
    gt_hr = (500000.0, px, 0.0, 5800000.0, 0.0, -px)
    gt_lr = (500000.0, px * s, 0.0, 5800000.0, 0.0, -px * s)
    ri, ci = _mirror(side, cube.shape[1]), _mirror(side, cube.shape[2])
    spec = dict(crs_wkt=meta.crs_wkt)
    with RasterWriter(lr_p, (cube.shape[0], side // s, side // s), gt_lr, band_names=meta.band_names,
                      wavelengths=meta.wavelengths, fwhm=meta.fwhm, bad_bands=meta.bad_bands, **spec) as lr_w, \
            RasterWriter(msi_p, (srf.matrix.shape[0], side, side), gt_hr, band_names=list(srf.band_names), **spec) as msi_w:
        from core.raster_io import Window

        for r0 in range(0, side, STRIP):
            rows = min(STRIP, side - r0)
            hr = cube[:, ri[r0:r0 + rows]][:, :, ci]
            msi_w.write(np.tensordot(srf.matrix.astype(np.float32), hr, axes=(1, 0)), Window(0, r0, side, rows))
            lr = hr.reshape(hr.shape[0], rows // s, s, side // s, s).mean(axis=(2, 4))
            lr_w.write(lr, Window(0, r0 // s, side // s, rows // s))
    return lr_p, msi_p


_CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
from export.superresolve import superresolve
t0 = time.perf_counter()
res = superresolve({lr!r}, {msi!r}, {model!r}, {out!r}, steps={steps}, threads={threads})
wall = time.perf_counter() - t0
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({{"seconds": wall, "peak_kb": hwm, "tiles": res.tiles, "shape": [res.bands, res.rows, res.cols]}}))
"""


def run_one(model: str, side: int, steps: int, threads: int, work: Path, log=print) -> dict:
    folder = work / f"{model}_{side}"
    t0 = time.perf_counter()
    lr, msi = make_pair(folder, model, side)
    prep = time.perf_counter() - t0
    out = folder / "sr.tif"
    code = _CHILD.format(root=str(ROOT), lr=str(lr), msi=str(msi), model=str(ROOT / "models" / f"hsrdiff_{model}.onnx"),
                         out=str(out), steps=steps, threads=threads)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{model} {side}: {proc.stderr[-2000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row.update(model=model, side=side, steps=steps, threads=threads, prepare_s=prep,
               output_gb=out.stat().st_size / 1e9, peak_gb=row["peak_kb"] * 1024 / 1e9)
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    log(f"{model:12s} {side:5d}^2 steps {steps:3d}: {row['seconds']:8.1f} s, peak RSS {row['peak_gb']:.2f} GB, "
        f"{row['tiles']} tiles")
    return row


def table(rows: list[dict]) -> str:
    lines = ["| model | output (px) | bands | steps | tiles | wall (s) | s / step | peak RSS (GB) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['side']} x {r['side']} | {r['shape'][0]} | {r['steps']} | {r['tiles']} | "
                     f"{r['seconds']:.1f} | {r['seconds'] / r['steps']:.1f} | {r['peak_gb']:.2f} |")
    return "\n".join(lines)


def flatness(rows: list[dict]) -> list[str]:
    """Per model: the largest peak over the smallest from 768^2 up, and whether every peak is < 4 GB."""
    out = []
    for m in dict.fromkeys(r["model"] for r in rows):
        peaks = [r["peak_gb"] for r in rows if r["model"] == m and r["side"] >= 768]
        top = max(r["peak_gb"] for r in rows if r["model"] == m)
        ratio = max(peaks) / min(peaks) if peaks else float("nan")
        out.append(f"- {m}: peak RSS at most {top:.2f} GB ({'< 4 GB' if top < 4 else 'OVER 4 GB'}); "
                   f"largest / smallest from 768^2 up: {ratio:.2f} ({'flat within 20 %' if ratio <= 1.2 else 'NOT flat'})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sides", default="384,768,1536")
    ap.add_argument("--models", default="all")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--full-scene", action="store_true")
    ap.add_argument("--full-steps", type=int, default=dflt.DEFAULT_STEPS)
    ap.add_argument("--work", default=None, help="folder for the generated pairs (default: a temporary folder)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "scene_scale"))
    args = ap.parse_args(argv)
    import tempfile

    models = list(MODELS) if args.models == "all" else args.models.split(",")
    sides = [int(s) for s in args.sides.split(",") if s]
    rows = []
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        for m in models:
            for side in sides:
                rows.append(run_one(m, side, args.steps, args.threads, work))
        if args.full_scene:
            rows.append(run_one("enmap_s2_x3", 3000, args.full_steps, args.threads, work))
    text = "\n".join([f"# Scene scale: peak memory and time (`python bench/scene_scale.py {' '.join(argv or sys.argv[1:])}`)",
                      "", f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} thread(s), "
                      f"tile {dflt.DEFAULT_TILE}, overlap {dflt.DEFAULT_OVERLAP}, CPU execution provider.", "",
                      table(rows), "", *flatness(rows), ""])
    print(text)
    out = Path(args.out)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
