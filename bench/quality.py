"""Reduced-resolution (Wald's protocol) quality benchmark of the fusion methods on real crops.

Protocol, per scene of ``bench/scenes.py`` and scale: the reference is the crop without bad bands
(``bbl`` = 0, bands with nodata in the crop, constant bands); the LR-HSI is the reference blurred
by a Gaussian PSF with FWHM = scale and decimated (``core.sensor.degrade_spatial``), the HR-MSI is
the reference through a real sensor response (``core.sensor.spectral_response``); noise-free.
Every method gets ``(lr_hsi, hr_msi, scale, srf=R, psf=PSF)``; metrics (``core.metrics.evaluate``)
drop a ``scale`` px border. Methods live in ``METHODS``; a model-based method is added with
``register_method(name, fn, needs_model=True)`` and receives ``model_path=`` from ``--model`` (plus the
scene's ``wavelengths``, ``fwhm`` and ``msi_band_names``). Model-based methods are scored on the held-out
crops only (``Scene.held_out``; the split is in ``bench/split.md``), where the classical methods are scored
on the same pixels; a scene with ``scales`` runs at those scales only.

``hsrdiff`` runs ``export.superresolve.superresolve`` - the QGIS algorithm's code path - on temporary
GeoTIFFs written from the simulated arrays, with the plugin's default sampler (``export.defaults``;
``--steps``/``--sampler`` override). ``--model`` takes one or more ``.onnx`` files separated by commas;
each (scene, scale) uses the first model whose metadata fits (HSI bands and wavelengths, MSI bands,
scale) and is skipped, with the reason, when none does. Its seconds include opening the ONNX Runtime session.

Usage: ``python bench/quality.py [--methods bicubic,gsa,...,hsrdiff] [--scales 3,4,8] [--quick]
[--scenes a,b] [--model A.onnx,B.onnx] [--out bench/results/quality]`` (writes ``.md`` and ``.json``).
Held-out comparison: ``--methods bicubic,gsa,mtf_glp_hs,cnmf,hsrdiff --scales 3,4,8 --scenes
enmap_southeast_holdout,enmap_southeast_holdout64,cave_balloons_holdout --model models/a.onnx,models/b.onnx``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import tempfile
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
    held_out_only: bool = False  # scored on held-out crops only (a trained method must not see its training pixels)


class NotApplicable(Exception):
    """The method cannot run on this scene and scale (e.g. no model fits); the row is skipped with this reason."""


METHODS: dict[str, Method] = {name: Method(fn) for name, fn in BASELINES.items()}


def register_method(name: str, fn: Callable[..., np.ndarray], needs_model: bool = False,
                    held_out_only: bool | None = None) -> None:
    """Add a method (e.g. ``hsrdiff``, called with ``model_path=``) to the benchmark registry.

    ``held_out_only`` (default: ``needs_model``) restricts it to the scenes marked ``held_out``.
    """
    METHODS[name] = Method(fn, needs_model, needs_model if held_out_only is None else held_out_only)


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


def simulated_pair(scene: Scene, prep: Prepared, scale: int):
    """The benchmark's pair of a loaded crop (Wald's protocol): ``(srf, psf, lr, msi, ref)``, the scene's
    ``SpectralResponse``, the Gaussian PSF, the LR-HSI ``(b, h, w)``, the HR-MSI ``(m, H, W)`` and the reference
    cut to the MSI's grid ``(b, H, W)``."""
    srf = spectral_response(scene.sensor, prep.wavelengths, prep.fwhm, bands=scene.msi_bands or default_msi_bands(scene.sensor))
    psf = gaussian_psf(scale)
    lr, msi = simulate_pair(prep.reference, scale, srf.matrix, psf)
    return srf, psf, lr, msi, prep.reference[:, :msi.shape[1], :msi.shape[2]]


def run(methods: list[str], scales: list[int], scenes: list[Scene], quick: bool, model_path: str | None,
        log=print, model_opts: dict | None = None, skipped: list[dict] | None = None) -> list[dict]:
    """Score ``methods`` on ``scenes`` x ``scales``; rows that cannot run go to ``skipped`` (and the log) with why."""
    rows = []
    skipped = [] if skipped is None else skipped

    def skip(scene: str, scale: int | None, method: str | None, reason: str) -> None:
        skipped.append({"scene": scene, "scale": scale, "method": method, "reason": reason})
        log(f"# skipped {scene}{f' x{scale}' if scale else ''}{f' {method}' if method else ''}: {reason}")

    for scene in scenes:
        run_scales = [s for s in scales if scene.scales is None or s in scene.scales]
        for s in scales:
            if s not in run_scales:
                skip(scene.name, s, None, f"this crop is for scales {', '.join(map(str, scene.scales))}")
        run_methods = [m for m in methods if scene.held_out or not METHODS[m].held_out_only]
        for m in methods:
            if m not in run_methods:
                skip(scene.name, None, m, "trained method: scored on the held-out crops only (bench/split.md)")
        if not run_scales or not run_methods:
            continue
        prep = load_scene(scene, quick)
        for scale in run_scales:
            srf, psf, lr, msi, ref = simulated_pair(scene, prep, scale)
            for name in run_methods:
                method = METHODS[name]
                opts = {}
                if method.needs_model:
                    opts = {"model_path": model_path, "wavelengths": prep.wavelengths, "fwhm": prep.fwhm,
                            "msi_band_names": list(srf.band_names), **(model_opts or {})}
                t0 = time.perf_counter()
                try:
                    out = method.fn(lr, msi, scale, srf=srf.matrix, psf=psf, **opts)
                except NotApplicable as exc:
                    skip(scene.name, scale, name, str(exc))
                    continue
                extra = {}
                if isinstance(out, tuple):  # (array, facts for the row), e.g. which model ran
                    out, extra = out
                seconds = time.perf_counter() - t0
                scores = evaluate(ref, out, scale, border=scale)
                row = {"scene": scene.name, "scale": scale, "method": name, **scores, "seconds": seconds,
                       "hsi_bands": int(ref.shape[0]), "msi_bands": int(msi.shape[0]),
                       "hr_shape": [int(ref.shape[1]), int(ref.shape[2])], "msi_sensor": srf.sensor,
                       "msi_band_names": list(srf.band_names), "bands_dropped": prep.dropped, **extra}
                rows.append(row)
                log(_fmt_row(row))
    return rows


def _fmt_row(r: dict) -> str:
    return (f"| {r['scene']} | {r['scale']} | {r['method']} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
            f"{r['sam']:.3f} | {r['ergas']:.3f} | {r['seconds']:.2f} |")


# ---------------------------------------------------------------------- hsrdiff (the plugin's code path)


def _fitting_model(model_path: str | None, hsi_bands: int, msi_band_names: list[str], scale: int, wavelengths):
    """The first of the comma-separated ``model_path`` models whose metadata fits; :class:`NotApplicable` if none."""
    from export.bundled import model_fits
    from export.metadata import read_metadata

    paths = [p for p in str(model_path or "").split(",") if p]
    if not paths:
        raise NotApplicable("no --model given")
    why = []
    for p in paths:
        md = read_metadata(p)  # a missing or foreign file is an error, not a skip
        name = os.path.basename(p)
        if reason := model_fits(md, hsi_bands, len(msi_band_names), scale, list(msi_band_names)):
            why.append(f"{name}: {reason}")
        elif md.wavelengths_nm is not None and wavelengths is not None and \
                np.max(np.abs(np.asarray(md.wavelengths_nm) - np.asarray(wavelengths))) > 1.0:
            why.append(f"{name}: its band wavelengths differ from the scene's by up to "
                       f"{np.max(np.abs(np.asarray(md.wavelengths_nm) - np.asarray(wavelengths))):.1f} nm")
        else:
            return p, md
    raise NotApplicable("no model fits: " + "; ".join(why))


def hsrdiff(lr_hsi: np.ndarray, hr_msi: np.ndarray, scale: int, srf=None, psf=None, model_path: str | None = None,
            wavelengths=None, fwhm=None, msi_band_names=None, steps: int | None = None, sampler: str | None = None,
            samples: int | None = None, **_) -> tuple[np.ndarray, dict]:
    """HSR-Diff through ``export.superresolve.superresolve`` on temporary GeoTIFFs (local pixel grid, no CRS).

    The model is chosen by its metadata (:func:`_fitting_model`); sampler settings are the plugin's defaults
    (``export.defaults``) unless ``steps``/``sampler``/``samples`` are given (``samples`` > 1: their mean).
    ``srf``/``psf`` are not used: the model learned them. Returns the result and the row's ``model``, ``model_info`` and ``sampler`` facts.
    """
    from core.raster_io import read_raster, write_raster
    from export import defaults
    from export.superresolve import superresolve

    names = list(msi_band_names or [f"MSI {i + 1}" for i in range(hr_msi.shape[0])])
    path, md = _fitting_model(model_path, lr_hsi.shape[0], names, scale, wavelengths)
    kw = defaults.sampler_kwargs()
    if steps is not None:
        kw["steps"] = int(steps)
    if sampler is not None:
        kw["sampler"] = sampler
    if samples is not None:
        kw["samples"] = int(samples)
    with tempfile.TemporaryDirectory(prefix="hsrdiff_bench_") as tmp:
        lr_p = write_raster(Path(tmp) / "lr.tif", np.asarray(lr_hsi, np.float32), geotransform=(0.0, float(scale), 0.0, 0.0, 0.0,
                            -float(scale)), wavelengths=wavelengths, fwhm=fwhm,
                            band_names=[f"band {i + 1}" for i in range(lr_hsi.shape[0])])
        msi_p = write_raster(Path(tmp) / "msi.tif", np.asarray(hr_msi, np.float32), geotransform=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
                             band_names=names)
        res = superresolve(lr_p, msi_p, path, Path(tmp) / "out.tif", **kw)
        out, _ = read_raster(res.out_path)
    return out, {"model": os.path.basename(path), "model_info": md.describe(),
                 "sampler": f"{kw['sampler']} {kw['steps']} steps, eta {kw['eta']}, seed {kw['seed']}, "
                                                                 f"{kw['samples']} sample(s), {res.provider_info}"}


register_method("hsrdiff", hsrdiff, needs_model=True)


def _fmt_skip(k: dict) -> str:
    where = k["scene"] + (f" x{k['scale']}" if k["scale"] else "") + (f" {k['method']}" if k["method"] else "")
    return f"{where}: {k['reason']}"


HEADER = "| scene | scale | method | PSNR (dB) | SSIM | SAM (deg) | ERGAS | seconds |\n|---|---|---|---|---|---|---|---|"


def machine() -> dict:
    return {"platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
            "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def write_results(out: Path, rows: list[dict], args: argparse.Namespace, scenes: list[Scene], wall: float,
                  skipped: list[dict] | None = None) -> None:
    info = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "wall_seconds": wall,
        "protocol": "Wald: reference = crop without bad/nodata/constant bands; LR = Gaussian PSF (FWHM = scale) "
                    "+ decimation; HR-MSI = reference through the real SRF; noise-free; every method is given the "
                    "true SRF and PSF (so MTF-GLP-HS uses the exact MTF); metrics with a border of scale px; "
                    "PSNR = mean band PSNR with the band max as peak; SSIM Gaussian (Wang 2004)",
        "args": {"methods": args.methods, "scales": args.scales, "quick": args.quick, "model": args.model,
                 "scenes": getattr(args, "scenes", ""), "steps": getattr(args, "steps", None),
                 "sampler": getattr(args, "sampler", None)},
        "scenes": [asdict(s) for s in scenes],
        "results": rows,
        "skipped": skipped or [],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(info, indent=1))
    m = info["machine"]
    lines = [
        "# Fusion quality benchmark (reduced resolution, real scenes)", "",
        f"Measured {info['date']} on {m['platform']}, {m['cpu_count']} CPUs ({m['processor']}), "
        f"Python {m['python']}, numpy {m['numpy']}, OMP_NUM_THREADS={m['omp_num_threads']}; "
        f"wall time {wall:.0f} s. Command: `python bench/quality.py --methods {args.methods} --scales {args.scales}"
        f"{' --quick' if args.quick else ''}{f' --scenes {args.scenes}' if getattr(args, 'scenes', '') else ''}"
        f"{f' --model {args.model}' if args.model else ''}`.", "",
        f"Protocol: {info['protocol']}.", "",
        HEADER, *[_fmt_row(r) for r in rows], "",
        "Scenes:", "",
        *[f"- `{s.name}`: `{s.file}` rows {s.rows[0]}-{s.rows[1]}, cols {s.cols[0]}-{s.cols[1]}, MSI = {s.sensor} "
          f"{', '.join(s.msi_bands or default_msi_bands(s.sensor))}.{' **Held out from training.**' if s.held_out else ''} "
          f"{s.note}" for s in scenes],
        "",
    ]
    model_rows = [r for r in rows if r.get("model")]
    if model_rows:
        lines += ["Models:", "", *sorted({f"- `{r['method']}` on `{r['scene']}` x{r['scale']}: `{r['model']}` ({r['model_info']}; "
                                         f"{r['sampler']})" for r in model_rows}), ""]
    if skipped:
        lines += ["Skipped:", "", *[f"- {_fmt_skip(k)}" for k in skipped], ""]
    out.with_suffix(".md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default=",".join(BASELINES))
    ap.add_argument("--scales", default="4,8")
    ap.add_argument("--scenes", default="", help="comma-separated scene names (default: all, or the quick subset)")
    ap.add_argument("--quick", action="store_true", help="two scenes, smaller crops (< 2 min)")
    ap.add_argument("--model", default=None, help="model path(s) for methods that need one, comma-separated")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps of model-based methods (default: the plugin's)")
    ap.add_argument("--sampler", choices=("ddim", "ancestral"), default=None, help="sampler of model-based methods")
    ap.add_argument("--samples", type=int, default=None, help="samples averaged by model-based methods (default: the plugin's)")
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
    skipped: list[dict] = []
    model_opts = {k: v for k, v in (("steps", args.steps), ("sampler", args.sampler), ("samples", args.samples)) if v is not None}
    rows = run(methods, scales, scenes, args.quick, args.model, log=lambda s: print(s, flush=True), model_opts=model_opts,
               skipped=skipped)
    write_results(Path(args.out), rows, args, scenes, time.perf_counter() - t0, skipped)
    print(f"wrote {Path(args.out).with_suffix('.md')} and .json", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
