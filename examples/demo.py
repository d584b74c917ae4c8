"""Demo: super-resolve the bundled EnMAP sample with HSR-Diff and compare it with classical fusion.

``python3 build.py demo`` runs this with the project's virtual environment. It

1. reads the sample pair in ``examples/data/`` (a real EnMAP crop held out from training, its LR-HSI
   at 90 m and its Sentinel-2 HR-MSI at 30 m, both georeferenced; see ``examples/data/README.md``),
2. picks the model in ``models/*.onnx`` whose metadata (HSI bands, MSI bands, scale) fits the pair
   (or takes ``--model PATH``),
3. super-resolves the pair with ``export.superresolve.superresolve`` - the code path of the QGIS
   algorithm - with the plugin's default sampler settings (``export.defaults``),
4. runs bicubic upsampling, GSA and MTF-GLP-HS (``core.jobs.classical.fuse_classical_files``),
5. scores everything against the reference (``core.jobs.assess.assess_files``: PSNR, SSIM, SAM,
   ERGAS, a border of ``scale`` px left out) and prints the table and the total time,
6. writes the GeoTIFFs, ``demo_table.md`` and ``demo_preview.png`` to ``examples/out/``.

Usage: ``python examples/demo.py [--model PATH] [--out DIR] [--steps N] [--device auto|cpu|cuda]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.jobs.assess import assess_files  # noqa: E402
from core.jobs.classical import fuse_classical_files  # noqa: E402
from core.raster_io import read_meta, read_raster  # noqa: E402
from export import bundled, defaults  # noqa: E402
from export.metadata import ModelFileError, ModelMetadata  # noqa: E402

DATA = ROOT / "examples" / "data"
OUT = ROOT / "examples" / "out"
MODELS = ROOT / "models"
LR, MSI, REF = "sample_lr_hsi.tif", "sample_hr_msi.tif", "sample_reference.tif"
SENSOR = "sentinel2"  # the sample's HR-MSI is Sentinel-2 (its band names say which bands)
CLASSICAL = ("bicubic", "gsa", "mtf_glp_hs")
LABELS = {"hsrdiff": "HSR-Diff", "bicubic": "bicubic", "gsa": "GSA", "mtf_glp_hs": "MTF-GLP-HS", "cnmf": "CNMF"}
RGB_NM = (640.0, 550.0, 470.0)
UNITS = "reflectance × 10000"  # EnMAP L2A surface reflectance, as the sample stores it


class DemoError(RuntimeError):
    """Something the user has to fix (missing sample or model); the message says what."""


@dataclass
class Row:
    method: str
    path: str
    seconds: float
    metrics: dict[str, float]


@dataclass
class DemoResult:
    model: str
    model_info: str
    rows: list[Row]
    table: str
    table_path: Path
    preview_path: Path | None
    seconds: float
    notes: list[str] = field(default_factory=list)

    def row(self, method: str) -> Row:
        return next(r for r in self.rows if r.method == method)


# ---------------------------------------------------------------------- model choice


def choose_model(lr_path, msi_path, model=None, models_dir: Path = MODELS) -> tuple[Path, ModelMetadata]:
    """The model to run (``export.bundled.choose_model``, the plugin's choice), as a :class:`DemoError`."""
    try:
        return bundled.choose_model(lr_path, msi_path, model, models_dir)
    except bundled.NoModelFits as exc:
        raise DemoError(str(exc)) from None


# ---------------------------------------------------------------------- preview


def _nearest_bands(wavelengths: np.ndarray, targets=RGB_NM) -> list[int]:
    return [int(np.argmin(np.abs(np.asarray(wavelengths) - t))) for t in targets]


def _stretch(rgb: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``(3, r, c)`` -> ``(r, c, 3)`` in [0, 1] with per-channel limits shared by all panels."""
    out = (rgb - lo[:, None, None]) / np.maximum(hi - lo, 1e-12)[:, None, None]
    return np.clip(np.nan_to_num(out.transpose(1, 2, 0)), 0, 1)


def _gapped(wl: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Insert NaNs at spectral gaps (absorption bands left out) so lines do not bridge them."""
    step = np.diff(wl)
    gaps = np.flatnonzero(step > 4 * np.median(step))
    return np.insert(wl, gaps + 1, np.nan), np.insert(y, gaps + 1, np.nan)


def pick_pixels(ref: np.ndarray, wavelengths: np.ndarray, border: int) -> list[tuple[int, int, str]]:
    """Three contrasting pixels away from the border: the darkest in the NIR (water or shadow), the greenest
    (highest NDVI among pixels with a bright NIR) and the brightest non-vegetated one (roofs, roads, soil)."""
    wl = np.asarray(wavelengths, float)
    red, nir = _nearest_bands(wl, (660.0, 860.0))
    vis = (wl >= 450) & (wl <= 680)
    inner = np.zeros(ref.shape[1:], bool)
    inner[border:-border, border:-border] = True
    inner &= np.isfinite(ref).all(axis=0)
    ndvi = (ref[nir] - ref[red]) / np.maximum(ref[nir] + ref[red], 1e-6)
    bright = ref[vis].mean(axis=0)
    nir_v = ref[nir]
    picks: list[tuple[int, int, str]] = []

    def take(score: np.ndarray, mask: np.ndarray, label: str) -> None:
        m = inner & mask
        if not m.any():
            m = inner.copy()
        for r, c, _ in picks:  # keep the picks apart
            m[max(r - 2, 0):r + 3, max(c - 2, 0):c + 3] = False
        idx = np.flatnonzero(m)
        p = idx[int(np.argmax(score.ravel()[idx]))]
        picks.append((int(p // m.shape[1]), int(p % m.shape[1]), label))

    take(-nir_v, np.ones_like(inner), "darkest NIR (water)")
    take(ndvi, nir_v > np.percentile(nir_v[inner], 40), "highest NDVI (vegetation)")
    take(bright, ndvi < 0.4, "brightest non-vegetated")
    return picks


def write_preview(path: Path, lr: np.ndarray, result: np.ndarray, ref: np.ndarray, bicubic: np.ndarray, wavelengths: np.ndarray,
                  scale: int, scores: dict[str, dict[str, float]], model_info: str, units: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    wl = np.asarray(wavelengths, float)
    rgb = _nearest_bands(wl, RGB_NM)
    ref_rgb = ref[rgb]
    lo = np.nanpercentile(ref_rgb, 1, axis=(1, 2))
    hi = np.nanpercentile(ref_rgb, 99, axis=(1, 2))
    lr_up = np.repeat(np.repeat(lr, scale, axis=1), scale, axis=2)[:, :ref.shape[1], :ref.shape[2]]
    rmse_map = np.sqrt(np.nanmean((result - ref) ** 2, axis=0))
    pixels = pick_pixels(ref, wl, border=scale)
    border_rmse = rmse_map[scale:-scale, scale:-scale]
    colours = ["#e8590c", "#2f9e44", "#1c7ed6"]

    fig = plt.figure(figsize=(15, 7.8), dpi=110)
    gs = GridSpec(2, 4, figure=fig, height_ratios=[1.0, 0.72], hspace=0.24, wspace=0.22,
                  left=0.045, right=0.94, top=0.87, bottom=0.1)
    s = scores.get("hsrdiff", {})
    rgb_label = "/".join(f"{wl[b]:.0f}" for b in rgb)
    panels = [
        (f"LR-HSI input ({30 * scale} m, nearest)", lr_up),
        (f"HSR-Diff result (PSNR {s.get('psnr', np.nan):.2f} dB, SAM {s.get('sam', np.nan):.2f}°)", result),
        ("Reference (EnMAP 30 m, held out)", ref),
    ]
    for k, (title, cube) in enumerate(panels):
        ax = fig.add_subplot(gs[0, k])
        ax.imshow(_stretch(cube[rgb], lo, hi), interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        if k == 2:
            for i, ((r, c, _), col) in enumerate(zip(pixels, colours, strict=True)):
                ax.plot(c, r, marker="o", ms=9, mfc="none", mec=col, mew=2)
                ax.annotate(str(i + 1), (c, r), xytext=(6, 4), textcoords="offset points", color=col, fontsize=10,
                            fontweight="bold")
    ax = fig.add_subplot(gs[0, 3])
    vmax = float(np.nanpercentile(rmse_map, 99))
    im = ax.imshow(rmse_map, cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
    ax.set_title(f"HSR-Diff error: RMSE over bands (mean {np.nanmean(border_rmse):.0f})", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    cb = fig.colorbar(im, cax=ax.inset_axes([1.03, 0.0, 0.05, 1.0]))  # keeps the panel as large as the others
    cb.set_label(units or "data units", fontsize=8)
    cb.ax.tick_params(labelsize=8)

    spec_gs = gs[1, :].subgridspec(1, 3, wspace=0.22)
    for k, ((r, c, label), col) in enumerate(zip(pixels, colours, strict=True)):
        ax = fig.add_subplot(spec_gs[0, k])
        for cube, name, style in ((ref, "reference", dict(color="k", lw=1.8)),
                                  (result, "HSR-Diff" if k else "HSR-Diff (pixel colour)", dict(color=col, lw=1.4)),
                                  (bicubic, "bicubic", dict(color="0.55", lw=1.1, ls="--"))):
            ax.plot(*_gapped(wl, cube[:, r, c]), label=name, **style)
        ax.set_title(f"pixel {k + 1} (row {r}, col {c}): {label}", fontsize=9, color=col)
        ax.set_xlabel("wavelength (nm)", fontsize=9)
        if k == 0:
            ax.set_ylabel(units or "value", fontsize=9)
            ax.legend(fontsize=8, frameon=False)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    line = "   ".join(f"{LABELS.get(m, m)} {v['psnr']:.2f} dB / {v['sam']:.2f}°" for m, v in scores.items())
    fig.suptitle(f"HSR-Diff on the bundled EnMAP + Sentinel-2 sample (scale {scale}; true colour {rgb_label} nm, "
                 "same stretch in every panel)", fontsize=12)
    fig.text(0.5, 0.925, f"PSNR / SAM vs reference:  {line}", ha="center", fontsize=9)
    fig.text(0.5, 0.012, model_info, ha="center", fontsize=8, color="0.35")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------- the run


def format_table(rows: list[Row]) -> str:
    lines = ["| method | PSNR (dB) | SSIM | SAM (deg) | ERGAS | seconds |", "|---|---|---|---|---|---|"]
    for r in rows:
        m = r.metrics
        lines.append(f"| {LABELS.get(r.method, r.method)} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['sam']:.3f} | "
                     f"{m['ergas']:.3f} | {r.seconds:.2f} |")
    return "\n".join(lines)


class _Progress:
    def __init__(self, stream=sys.stderr):
        self.stream, self.last = stream, -1

    def __call__(self, fraction: float, message: str) -> None:
        pct = int(fraction * 100)
        if self.stream.isatty() and (pct // 5 != self.last // 5 or fraction >= 1.0):
            self.last = pct
            self.stream.write(f"\r  HSR-Diff {pct:3d}% {message[:50]:<50}")
            self.stream.flush()

    def close(self) -> None:
        if not self.stream.isatty():
            return
        self.stream.write("\n")
        self.stream.flush()


def run_demo(model=None, out_dir: str | os.PathLike = OUT, data_dir: str | os.PathLike = DATA, steps: int | None = None,
             device: str | None = None, classical=CLASSICAL, preview: bool = True, models_dir: Path = MODELS,
             log=print, show_progress: bool = True) -> DemoResult:
    from export.superresolve import superresolve

    t0 = time.perf_counter()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    lr_p, msi_p, ref_p = data_dir / LR, data_dir / MSI, data_dir / REF
    missing = [p.name for p in (lr_p, msi_p, ref_p) if not p.exists()]
    if missing:
        raise DemoError(f"the sample is missing from {data_dir} ({', '.join(missing)}); recreate it with "
                        "`PYTHONPATH=. .venv/bin/python tools/make_sample.py`")
    model_path, md = choose_model(lr_p, msi_p, model, models_dir)
    scale = md.scale
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"model:  {model_path}")
    log(f"        {md.describe()}")
    if md.training.get("steps") is not None:
        log(f"        trained {md.training.get('steps')} steps; validation {md.validation or 'n/a'}")
    kw = defaults.sampler_kwargs()
    if steps is not None:
        kw["steps"] = int(steps)
    if device is not None:
        kw["device"] = device
    log(f"sample: {lr_p.name} + {msi_p.name} -> {out_dir}/ (sampler {kw['sampler']}, {kw['steps']} steps, "
        f"eta {kw['eta']}, seed {kw['seed']}, tile {kw['tile']})")

    rows: list[Row] = []
    bar = _Progress() if show_progress else None
    try:
        res = superresolve(lr_p, msi_p, model_path, out_dir / "sample_hsrdiff.tif", progress=bar, **kw)
    finally:
        if bar:
            bar.close()
    notes = list(res.notes)
    log(f"HSR-Diff: {res.bands} bands x {res.rows} x {res.cols} on {res.provider_info}, {res.seconds:.1f} s")
    outputs = [("hsrdiff", res.out_path, res.seconds)]
    for method in classical:
        cr = fuse_classical_files(method, lr_p, msi_p, out_dir / f"sample_{method}.tif", sensor=SENSOR)
        outputs.append((method, cr.path, cr.seconds))
    for method, path, secs in outputs:
        a = assess_files(ref_p, path, scale, border=scale)
        notes += a.notes
        rows.append(Row(method, str(path), secs, a.metrics))
    table = format_table(rows)
    ref_meta = read_meta(ref_p)
    preview_path = None
    if preview:
        ref, _ = read_raster(ref_p)
        lr, _ = read_raster(lr_p)
        result, _ = read_raster(res.out_path)
        bic, _ = read_raster(out_dir / "sample_bicubic.tif") if "bicubic" in classical else (None, None)
        preview_path = write_preview(out_dir / "demo_preview.png", lr, result, ref, bic if bic is not None else result,
                                     ref_meta.wavelengths, scale, {r.method: r.metrics for r in rows},
                                     f"{model_path.name}: {md.describe()}; {kw['sampler']} {kw['steps']} steps, seed {kw['seed']}",
                                     UNITS)
    total = time.perf_counter() - t0
    table_path = out_dir / "demo_table.md"
    table_path.write_text(
        "# HSR-Diff demo on the bundled sample\n\n"
        f"Sample: `examples/data/` ({ref_meta.bands} EnMAP bands, {ref_meta.rows} x {ref_meta.cols} px at 30 m, "
        f"LR-HSI at {30 * scale} m, Sentinel-2 HR-MSI); a region held out from training (bench/split.md).\n"
        f"Model: `{model_path.name}` - {md.describe()}.\n"
        f"Sampler: {kw['sampler']}, {kw['steps']} steps, eta {kw['eta']}, seed {kw['seed']} "
        f"({'the plugin defaults' if kw == defaults.sampler_kwargs() else 'changed from the plugin defaults'}); "
        f"ran on {res.provider_info}.\n"
        f"Metrics over the sample with a {scale} px border left out (core.metrics: PSNR = mean band PSNR with the band "
        "maximum as peak, SSIM Gaussian, SAM in degrees, ERGAS). Seconds: each file-level job (read the GeoTIFFs, fuse, "
        "write the GeoTIFF; HSR-Diff includes opening the ONNX Runtime session).\n\n"
        f"{table}\n\nTotal demo time {total:.1f} s.\n")
    return DemoResult(str(model_path), md.describe(), rows, table, table_path, preview_path, total, notes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="an exported .onnx model (default: the bundled model in models/ that fits)")
    ap.add_argument("--out", default=str(OUT), help="output folder (default examples/out)")
    ap.add_argument("--steps", type=int, default=None, help=f"denoising steps (default {defaults.DEFAULT_STEPS}, as the plugin)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda", "tensorrt"), default=None)
    ap.add_argument("--no-preview", action="store_true", help="skip the PNG")
    args = ap.parse_args(argv)
    try:
        r = run_demo(args.model, args.out, steps=args.steps, device=args.device, preview=not args.no_preview)
    except (DemoError, ModelFileError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    print()
    print(r.table)
    print()
    for n in dict.fromkeys(r.notes):
        print(f"note: {n}")
    print(f"wrote {r.table_path}" + (f" and {r.preview_path}" if r.preview_path else ""))
    print(f"total time {r.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
