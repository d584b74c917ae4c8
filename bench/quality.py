"""Reduced-resolution (Wald's protocol) quality benchmark of the fusion methods on real crops.

Protocol, per scene of ``bench/scenes.py`` and scale: the reference is the crop without bad bands
(``bbl`` = 0, bands with nodata in the crop, constant bands); the LR-HSI is the reference blurred
by a Gaussian PSF with FWHM = scale and decimated (``core.sensor.degrade_spatial``), the HR-MSI is
the reference through a real sensor response (``core.sensor.spectral_response``); noise-free.
Every method gets ``(lr_hsi, hr_msi, scale, srf=R, psf=PSF)``; metrics (``core.metrics.evaluate``)
drop a ``scale`` px border. Methods live in ``METHODS``; a model-based method is added with
``register_method(name, fn, needs_model=True)`` and receives ``model_path=`` from ``--model``.

Usage: ``python bench/quality.py [--methods bicubic,gsa,...] [--scales 4,8] [--quick]
[--scenes a,b] [--model PATH] [--out bench/results/quality]`` (writes ``.md`` and ``.json``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.scenes import SCENES, Scene  # noqa: E402
from core.baselines import BASELINES  # noqa: E402
from core.metrics import evaluate  # noqa: E402
from core.raster_io import read_raster  # noqa: E402
from core.sensor import default_msi_bands, gaussian_psf, simulate_pair, spectral_response  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
TABLE_METRICS = ("psnr", "ssim", "sam", "ergas")


@dataclass(frozen=True)
class Method:
    """A fusion method ``fn(lr_hsi, hr_msi, scale, srf=None, psf=None, **opts) -> hr_hsi``."""

    fn: Callable[..., np.ndarray]
    needs_model: bool = False


METHODS: dict[str, Method] = {name: Method(fn) for name, fn in BASELINES.items()}


def register_method(name: str, fn: Callable[..., np.ndarray], needs_model: bool = False) -> None:
    """Add a method (e.g. ``hsrdiff``, called with ``model_path=``) to the benchmark registry."""
    METHODS[name] = Method(fn, needs_model)


@dataclass
class Prepared:
    scene: str
    reference: np.ndarray  # (bands, rows, cols) float32
    wavelengths: np.ndarray
    fwhm: np.ndarray | None
    dropped: int
    note: str


def load_scene(scene: Scene, quick: bool = False, data_dir: Path = DATA) -> Prepared:
    """Read the crop and drop bad bands (bbl = 0), bands with nodata in the crop and constant bands."""
    cube, meta = read_raster(data_dir / scene.file)
    rows, cols = (scene.quick_rows or scene.rows, scene.quick_cols or scene.cols) if quick else (scene.rows, scene.cols)
    crop = cube[:, rows[0]:rows[1], cols[0]:cols[1]]
    if scene.wavelength_range is not None or meta.wavelengths is None:
        lo, hi = scene.wavelength_range or (400.0, 2500.0)
        wl, fwhm = np.linspace(lo, hi, cube.shape[0]), None
    else:
        wl, fwhm = meta.wavelengths, meta.fwhm
    flat = crop.reshape(crop.shape[0], -1)
    finite = np.isfinite(flat).all(axis=1)
    spread = np.zeros(flat.shape[0])
    spread[finite] = flat[finite].std(axis=1)
    keep = meta.good_bands & finite & (spread > 0)
    return Prepared(scene.name, crop[keep], wl[keep], None if fwhm is None else fwhm[keep],
                    int((~keep).sum()), scene.note)


def run(methods: list[str], scales: list[int], scenes: list[Scene], quick: bool, model_path: str | None,
        log=print) -> list[dict]:
    rows = []
    for scene in scenes:
        prep = load_scene(scene, quick)
        bands = scene.msi_bands or default_msi_bands(scene.sensor)
        srf = spectral_response(scene.sensor, prep.wavelengths, prep.fwhm, bands=bands)
        for scale in scales:
            psf = gaussian_psf(scale)
            lr, msi = simulate_pair(prep.reference, scale, srf.matrix, psf)
            ref = prep.reference[:, :msi.shape[1], :msi.shape[2]]
            for name in methods:
                method = METHODS[name]
                opts = {"model_path": model_path} if method.needs_model else {}
                t0 = time.perf_counter()
                out = method.fn(lr, msi, scale, srf=srf.matrix, psf=psf, **opts)
                seconds = time.perf_counter() - t0
                scores = evaluate(ref, out, scale, border=scale)
                row = {"scene": scene.name, "scale": scale, "method": name, **scores, "seconds": seconds,
                       "hsi_bands": int(ref.shape[0]), "msi_bands": int(msi.shape[0]),
                       "hr_shape": [int(ref.shape[1]), int(ref.shape[2])], "msi_sensor": srf.sensor,
                       "msi_band_names": list(srf.band_names), "bands_dropped": prep.dropped}
                rows.append(row)
                log(_fmt_row(row))
    return rows


def _fmt_row(r: dict) -> str:
    return (f"| {r['scene']} | {r['scale']} | {r['method']} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
            f"{r['sam']:.3f} | {r['ergas']:.3f} | {r['seconds']:.2f} |")


HEADER = "| scene | scale | method | PSNR (dB) | SSIM | SAM (deg) | ERGAS | seconds |\n|---|---|---|---|---|---|---|---|"


def machine() -> dict:
    return {"platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
            "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def write_results(out: Path, rows: list[dict], args: argparse.Namespace, scenes: list[Scene], wall: float) -> None:
    info = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "wall_seconds": wall,
        "protocol": "Wald: reference = crop without bad/nodata/constant bands; LR = Gaussian PSF (FWHM = scale) "
                    "+ decimation; HR-MSI = reference through the real SRF; noise-free; every method is given the "
                    "true SRF and PSF (so MTF-GLP-HS uses the exact MTF); metrics with a border of scale px; "
                    "PSNR = mean band PSNR with the band max as peak; SSIM Gaussian (Wang 2004)",
        "args": {"methods": args.methods, "scales": args.scales, "quick": args.quick, "model": args.model},
        "scenes": [asdict(s) for s in scenes],
        "results": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(info, indent=1))
    m = info["machine"]
    lines = [
        "# Fusion quality benchmark (reduced resolution, real scenes)", "",
        f"Measured {info['date']} on {m['platform']}, {m['cpu_count']} CPUs ({m['processor']}), "
        f"Python {m['python']}, numpy {m['numpy']}, OMP_NUM_THREADS={m['omp_num_threads']}; "
        f"wall time {wall:.0f} s. Command: `python bench/quality.py --methods {args.methods} --scales {args.scales}"
        f"{' --quick' if args.quick else ''}`.", "",
        f"Protocol: {info['protocol']}.", "",
        HEADER, *[_fmt_row(r) for r in rows], "",
        "Scenes:", "",
        *[f"- `{s.name}`: `{s.file}` rows {s.rows[0]}-{s.rows[1]}, cols {s.cols[0]}-{s.cols[1]}, MSI = {s.sensor} "
          f"{', '.join(s.msi_bands or default_msi_bands(s.sensor))}. {s.note}" for s in scenes],
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default=",".join(BASELINES))
    ap.add_argument("--scales", default="4,8")
    ap.add_argument("--scenes", default="", help="comma-separated scene names (default: all, or the quick subset)")
    ap.add_argument("--quick", action="store_true", help="two scenes, smaller crops (< 2 min)")
    ap.add_argument("--model", default=None, help="model path for methods that need one")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "quality"))
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown methods {unknown}; known: {sorted(METHODS)}")
    if any(METHODS[m].needs_model for m in methods) and not args.model:
        ap.error("--model is required for " + ", ".join(m for m in methods if METHODS[m].needs_model))
    scales = [int(s) for s in args.scales.split(",") if s]
    names = [s for s in args.scenes.split(",") if s]
    scenes = [s for s in SCENES if (s.name in names if names else (s.quick or not args.quick))]
    if names and len(scenes) != len(names):
        ap.error(f"unknown scenes; known: {[s.name for s in SCENES]}")
    print(HEADER, flush=True)
    t0 = time.perf_counter()
    rows = run(methods, scales, scenes, args.quick, args.model, log=lambda s: print(s, flush=True))
    write_results(Path(args.out), rows, args, scenes, time.perf_counter() - t0)
    print(f"wrote {Path(args.out).with_suffix('.md')} and .json", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
