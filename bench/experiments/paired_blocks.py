"""Is a model's lead over a baseline on one held-out crop larger than the crop's own spread?

    python bench/experiments/paired_blocks.py --scene cave_balloons_holdout --scale 4 \
        --model models/hsrdiff_cave_x4.onnx [--baseline mtf_glp_hs] [--block 16] [--out bench/results/paired_cave_x4]

Runs HSR-Diff (the plugin's sampler defaults) and the baseline on the crop exactly as ``bench/quality.py``
does, cuts the whole scored area (the same ``scale``-pixel border dropped) into tiles of about ``block`` px, and
bootstraps the tiles (2000 resamples, with replacement) to give a 95 % interval for the difference
HSR-Diff minus baseline of the crop's PSNR (per-band peaks of the whole crop), SAM and ERGAS. It also
counts the tiles where HSR-Diff is better, and where its squared error is lower. Neighbouring tiles are
correlated, so the interval is a lower bound on the uncertainty; an interval that excludes 0 says the lead
on the crop is not one tile's luck, no more: it may still come from a minority of tiles.
Prints a table and writes ``OUT.md``/``OUT.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.quality import METHODS, load_scene, simulated_pair  # noqa: E402
from bench.scenes import SCENES  # noqa: E402
from core.metrics import ergas, psnr, sam  # noqa: E402


def tile_sums(ref: np.ndarray, est: np.ndarray, block: int) -> dict[str, np.ndarray]:
    """Per-tile sufficient statistics of ``(bands, rows, cols)`` cubes, tiles of about ``block`` px covering every
    pixel (``rows // block`` x ``cols // block`` tiles, the remainder spread over them): ``sse`` ``(tiles, bands)``,
    ``sum_ref`` ``(tiles, bands)``, ``angle`` ``(tiles,)`` (sum of per-pixel spectral angles, rad, over pixels whose
    spectra are non-zero, as ``core.metrics.sam``), ``n`` and ``n_angle`` ``(tiles,)`` pixel counts."""
    b, h, w = ref.shape
    ref, est = np.asarray(ref, np.float64), np.asarray(est, np.float64)
    out = {"sse": [], "sum_ref": [], "angle": [], "n": [], "n_angle": []}
    for rows in np.array_split(np.arange(h), max(h // block, 1)):
        for cols in np.array_split(np.arange(w), max(w // block, 1)):
            r = ref[:, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].reshape(b, -1)
            e = est[:, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].reshape(b, -1)
            nr, ne = np.linalg.norm(r, axis=0), np.linalg.norm(e, axis=0)
            keep = (nr > 0) & (ne > 0)
            cos = (r[:, keep] * e[:, keep]).sum(0) / (nr[keep] * ne[keep])
            out["sse"].append(((r - e) ** 2).sum(1))
            out["sum_ref"].append(r.sum(1))
            out["angle"].append(np.arccos(np.clip(cos, -1, 1)).sum())
            out["n"].append(r.shape[1])
            out["n_angle"].append(int(keep.sum()))
    return {k: np.asarray(v) for k, v in out.items()}


def scores(t: dict, idx: np.ndarray, peaks: np.ndarray, scale: int) -> tuple[float, float, float]:
    """PSNR (dB, mean over bands), SAM (deg) and ERGAS of the tiles ``idx`` (repeats allowed)."""
    n = t["n"][idx].sum()
    mse = t["sse"][idx].sum(0) / n
    mean = t["sum_ref"][idx].sum(0) / n
    psnr = float(np.mean(10 * np.log10(peaks**2 / mse)))
    sam = float(np.degrees(t["angle"][idx].sum() / t["n_angle"][idx].sum()))
    ergas = float(100.0 / scale * np.sqrt(np.mean(mse / mean**2)))
    return psnr, sam, ergas


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scene", required=True)
    ap.add_argument("--scale", type=int, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--baseline", default="mtf_glp_hs")
    ap.add_argument("--block", type=int, default=16)
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    scene = next(s for s in SCENES if s.name == args.scene)
    prep = load_scene(scene)
    srf, psf, lr, msi, ref = simulated_pair(scene, prep, args.scale)
    hsr, _ = METHODS["hsrdiff"].fn(lr, msi, args.scale, model_path=args.model, wavelengths=prep.wavelengths, fwhm=prep.fwhm,
                                   msi_band_names=list(srf.band_names))
    base = METHODS[args.baseline].fn(lr, msi, args.scale, srf=srf.matrix, psf=psf)
    s = args.scale  # the border bench/quality.py drops
    ref, hsr, base = (np.asarray(a, np.float64)[:, s:-s, s:-s] for a in (ref, hsr, base))
    peaks = ref.reshape(ref.shape[0], -1).max(1)
    t_hsr, t_base = tile_sums(ref, hsr, args.block), tile_sums(ref, base, args.block)
    tiles = len(t_hsr["angle"])
    every = np.arange(tiles)
    full = np.subtract(scores(t_hsr, every, peaks, s), scores(t_base, every, peaks, s))
    # all tiles once are the whole scored area: the same difference as bench/quality.py's metrics give
    direct = np.subtract(*[(psnr(ref, x), sam(ref, x), ergas(ref, x, s)) for x in (hsr, base)])
    if not np.allclose(full, direct, rtol=1e-6, atol=1e-9):
        raise AssertionError(f"tile statistics {full} differ from the metrics {direct}")
    rng = np.random.default_rng(0)
    boot = np.array([np.subtract(scores(t_hsr, i, peaks, s), scores(t_base, i, peaks, s))
                     for i in rng.integers(0, tiles, (args.resamples, tiles))])
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
    per_tile = np.array([np.subtract(scores(t_hsr, np.array([k]), peaks, s), scores(t_base, np.array([k]), peaks, s))
                         for k in every])
    wins = [int((per_tile[:, 0] > 0).sum()), int((per_tile[:, 1] < 0).sum()), int((per_tile[:, 2] < 0).sum())]
    # Where the lead comes from: each tile's squared error (all bands) relative to the baseline's, by quarter of
    # the baseline's own tile error (lowest first).
    sse_h, sse_b = t_hsr["sse"].sum(1), t_base["sse"].sum(1)
    ratio = sse_h / sse_b
    quarters = [float(np.median(ratio[q])) for q in np.array_split(np.argsort(sse_b), 4)]
    names = ("PSNR (dB)", "SAM (deg)", "ERGAS")
    lines = [f"# HSR-Diff minus {args.baseline}: {args.scene} x{args.scale}, {tiles} tiles of about {args.block} px",
             "", f"model `{Path(args.model).name}`; `python bench/experiments/paired_blocks.py --scene {args.scene} "
             f"--scale {args.scale} --model {args.model} --block {args.block}`", "",
             "| metric | difference on the crop | 95 % bootstrap interval (tiles) | tiles where HSR-Diff is better |",
             "|---|---|---|---|"]
    lines += [f"| {n} | {full[k]:+.4f} | [{lo[k]:+.4f}, {hi[k]:+.4f}] | {wins[k]} of {tiles} |" for k, n in enumerate(names)]
    lines += ["", f"Squared error, HSR-Diff / {args.baseline}: {sse_h.sum() / sse_b.sum():.3f} on the crop; lower in "
              f"{int((ratio < 1).sum())} of {tiles} tiles; median per tile by quarter of the {args.baseline} tile error "
              f"(lowest to highest): {', '.join(f'{q:.3f}' for q in quarters)}"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        out = Path(args.out)
        out.with_suffix(".md").write_text(text)
        out.with_suffix(".json").write_text(json.dumps({
            "scene": args.scene, "scale": args.scale, "model": Path(args.model).name, "baseline": args.baseline,
            "block": args.block, "tiles": tiles, "difference": dict(zip(names, full.tolist(), strict=True)),
            "interval_95": {n: [float(lo[k]), float(hi[k])] for k, n in enumerate(names)},
            "tiles_better": dict(zip(names, wins, strict=True)),
            "squared_error_ratio": {"crop": float(sse_h.sum() / sse_b.sum()), "tiles_lower": int((ratio < 1).sum()),
                                    "median_by_baseline_error_quarter": quarters}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
