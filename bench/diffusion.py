"""Does the diffusion work? Quality against steps and sampler, and the calibration of the uncertainty.

    python bench/diffusion.py --model models/hsrdiff_enmap_s2_x4.onnx [--model OTHER.onnx ...]
        [--steps 1,2,4,8,16,32,100] [--samples 4] [--out bench/results/diffusion]

For each model, on the held-out crops of ``bench/scenes.py`` that fit its scale (the benchmark's own
pairs, ``bench.quality.simulated_pair``), through the inference code (:func:`export.tiling.fuse_arrays`,
ONNX Runtime on the CPU):

1. **Steps**: PSNR / SAM / seconds of DDIM (eta 0) at each of ``--steps``, DDIM with eta 1 and the
   ancestral sampler at 100 steps (seed 0, one sample), and the fewest DDIM steps within 0.05 dB of the
   best DDIM PSNR.
2. **Uncertainty** (``--samples`` samples, DDIM with the plugin's eta at ``--unc-steps`` steps, by default the
   plugin's steps): the spread of the samples
   against the error of their mean: the share of (pixel, band) values whose error lies within +-2 std,
   the Spearman rank correlation between std and |error|, and the ratio of the median |error| to the
   median std. ``--fit-calibration`` fits the calibration of :mod:`core.uncertainty` on **training**
   pixels (``CALIBRATION_CROPS``, never the held-out ones): the activity weight ``c`` of
   :data:`ACTIVITY_GRID` whose ``sqrt(std^2 + (c a)^2)`` ranks the training errors best (Spearman; 0, the
   spread alone, unless another weight gains :data:`MIN_RANK_GAIN`), then the factor ``k`` for which 95 %
   of the training (pixel, band) errors lie within +-2 k of it; the held-out figures are given with both,
   and ``--write`` stores them in the model file (``uncertainty_scale``, ``uncertainty_activity``, which
   Super-resolve applies to the uncertainty raster; ``export.onnx_export.update_metadata``).

Writes ``OUT.md`` and ``OUT.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.quality import load_scene, simulated_pair  # noqa: E402
from bench.scenes import SCENES, Scene  # noqa: E402
from core.metrics import psnr, sam  # noqa: E402
from core.uncertainty import calibrated_uncertainty  # noqa: E402
from export.defaults import DEFAULT_ETA, DEFAULT_STEPS  # noqa: E402

CALIBRATION_CROPS = (
    Scene("enmap_north_train", "enmap_potsdam_north.tif", (0, 64), (0, 64), "sentinel2",
          note="training pixels of the EnMAP models (bench/split.md)"),
    Scene("enmap_southeast_train", "enmap_potsdam_southeast.tif", (0, 64), (0, 64), "sentinel2",
          note="training pixels of the EnMAP models (bench/split.md)"),
    Scene("cave_balloons_train", "cave_balloons.tif", (0, 128), (0, 128), "nikon_d700",
          note="training pixels of the CAVE models (bench/split.md)"),
)
"""Crops the calibration factor is fitted on: pixels the EnMAP models were trained on, never scored here."""

COVERAGE = 0.95  # the share of training errors within +-2 k std that fixes k
ACTIVITY_GRID = (0.0, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 1e-2)
"""Activity weights ``c`` tried (the spread is 1e-5 to 1e-4 of the gradient on the shipped models' pairs)."""
MIN_RANK_GAIN = 0.02
"""The Spearman gain on training pixels an activity weight must bring over the spread alone to be used."""


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two flat samples (average ranks for ties are not needed: float data)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def _pairs(md, scenes) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """``(name, lr, msi, ref)`` of the crops at the model's scale whose bands are the model's."""
    out = []
    for scene in scenes:
        if scene.scales is not None and md.scale not in scene.scales:
            continue
        prep = load_scene(scene)
        if prep.reference.shape[0] != md.hsi_bands:
            continue
        _, _, lr, msi, ref = simulated_pair(scene, prep, md.scale)
        out.append((scene.name, lr, msi, ref))
    return out


def _score(ref, est, scale) -> tuple[float, float]:
    b = scale
    return float(psnr(ref, est, border=b)), float(sam(ref, est, border=b))


def uncertainty_figures(ref, mean, std, scale, k: float = 1.0, c: float = 0.0) -> dict:
    """Coverage of +-2 u, Spearman(u, |error|) and median |error| / median u over the scored pixels, with
    ``u = calibrated_uncertainty(std, mean, k, c)`` (``std``: the raw spread)."""
    b = scale
    err = np.abs(mean - ref)[:, b:-b, b:-b].ravel()
    s = calibrated_uncertainty(std, mean, k, c)[:, b:-b, b:-b].ravel()
    ok = np.isfinite(err) & np.isfinite(s)
    err, s = err[ok], s[ok]
    rng = np.random.default_rng(0)
    sub = rng.choice(err.size, min(err.size, 200_000), replace=False)
    return {"coverage_2std": float(np.mean(err <= 2 * s)), "spearman": spearman(s[sub], err[sub]),
            "median_err_over_std": float(np.median(err) / max(np.median(s), 1e-30))}


def fit_calibration(pairs, den, steps: int, samples: int) -> tuple[float, float, dict[float, float]]:
    """``(k, c, ranks)``: the activity weight ``c`` (:data:`ACTIVITY_GRID`, :data:`MIN_RANK_GAIN`) and the factor
    ``k`` such that ``COVERAGE`` of the training errors lie within +-2 u (:mod:`core.uncertainty`); ``ranks``: the
    training Spearman of each weight. ``den`` must give the raw spread (:func:`_raw`)."""
    from export.tiling import fuse_arrays

    runs = []
    for _, lr, msi, ref in pairs:
        mean, std, _ = fuse_arrays(den, lr, msi, steps=steps, sampler="ddim", eta=DEFAULT_ETA, samples=samples, tile=256, overlap=32)
        b = den.metadata.scale
        runs.append(tuple(a[:, b:-b, b:-b] for a in (mean, std, np.abs(mean - ref))))
    err = np.concatenate([e.ravel() for *_, e in runs])
    ok = np.isfinite(err)
    sub = np.random.default_rng(0).choice(np.flatnonzero(ok), min(int(ok.sum()), 200_000), replace=False)

    def u(c: float) -> np.ndarray:
        return np.concatenate([calibrated_uncertainty(s, m, 1.0, c).ravel() for m, s, _ in runs])

    ranks = {c: spearman(u(c)[sub], err[sub]) for c in ACTIVITY_GRID}
    best = max(ranks, key=ranks.get)
    c = best if ranks[best] >= ranks[0.0] + MIN_RANK_GAIN else 0.0
    spread = u(c)
    keep = ok & np.isfinite(spread) & (spread > 0)
    return float(np.quantile(err[keep] / (2 * spread[keep]), COVERAGE)), c, ranks


def _raw(den):
    """``den`` with its metadata's calibration set aside, so that fusing gives the raw spread of the samples."""
    import dataclasses

    den.metadata = dataclasses.replace(den.metadata, uncertainty_scale=1.0, uncertainty_activity=0.0)
    return den


def bench_model(path: str, steps_list: list[int], samples: int, fit: bool, log, unc_steps: int = DEFAULT_STEPS) -> dict:
    from export.sampler import Denoiser
    from export.tiling import fuse_arrays

    den = Denoiser(path, device="cpu", threads=None)
    md = den.metadata  # as stored: its calibration
    _raw(den)
    pairs = _pairs(md, [s for s in SCENES if s.held_out])
    runs = [("ddim", 0.0, n) for n in steps_list] + ([("ddim", 1.0, 100), ("ancestral", 1.0, 100)] if 100 in steps_list else [])
    rows = []
    for name, lr, msi, ref in pairs:
        for sampler, eta, n in runs:
            t0 = time.perf_counter()
            hr, _, _ = fuse_arrays(den, lr, msi, steps=n, sampler=sampler, eta=eta, seed=0, tile=256, overlap=32)
            p, a = _score(ref, hr, md.scale)
            rows.append({"scene": name, "sampler": sampler, "eta": eta, "steps": n, "psnr": p, "sam": a,
                         "seconds": time.perf_counter() - t0})
            log(f"  {Path(path).name} {name} {sampler} eta {eta:g} {n} steps: {p:.2f} dB {a:.3f} deg "
                f"({rows[-1]['seconds']:.1f} s)")
    ddim = [r for r in rows if r["sampler"] == "ddim" and r["eta"] == 0.0]
    by_steps = {n: float(np.mean([r["psnr"] for r in ddim if r["steps"] == n])) for n in steps_list}
    best = max(by_steps.values())
    chosen = min(n for n, v in by_steps.items() if v >= best - 0.05)
    k, c, ranks = md.uncertainty_scale, md.uncertainty_activity, {}
    if fit and samples > 1:
        k, c, ranks = fit_calibration(_pairs(md, CALIBRATION_CROPS), den, unc_steps, samples)
        log(f"  {Path(path).name}: training Spearman by activity weight {ranks}; c = {c:g}, k = {k:.4g}")
    unc = []
    for name, lr, msi, ref in pairs if samples > 1 else []:
        mean, std, _ = fuse_arrays(den, lr, msi, steps=unc_steps, sampler="ddim", eta=DEFAULT_ETA, seed=0, samples=samples, tile=256,
                                   overlap=32)
        unc.append({"scene": name, "steps": unc_steps, "samples": samples, **{f"raw_{k_}": v for k_, v in
                    uncertainty_figures(ref, mean, std, md.scale).items()},
                    **uncertainty_figures(ref, mean, std, md.scale, k, c), "k": k, "c": c,
                    "psnr_mean": _score(ref, mean, md.scale)[0], "sam_mean": _score(ref, mean, md.scale)[1]})
        log(f"  {Path(path).name} {name} uncertainty: {unc[-1]}")
    return {"model": Path(path).name, "info": md.describe(), "variable": md.schedule.variable, "graph": md.graph,
            "rows": rows, "by_steps": by_steps, "chosen_steps": chosen, "unc_steps": unc_steps, "uncertainty": unc, "k": k,
            "c": c, "ranks": {str(a): v for a, v in ranks.items()}}


def report(results: list[dict], samples: int) -> str:
    lines = ["# Diffusion: quality against steps, and the uncertainty's calibration", "",
             "Written by `python bench/diffusion.py`. Held-out crops of `bench/scenes.py` (exact protocol: Gaussian PSF "
             "FWHM = scale, real response, noise-free), ONNX Runtime on the CPU, seed 0; PSNR / SAM drop a `scale` px "
             "border.", ""]
    for res in results:
        lines += [f"## {res['model']}", "", res["info"] + f"; diffused variable: {res['variable']}; graph: {res['graph']}", "",
                  "| crop | sampler | eta | steps | PSNR (dB) | SAM (deg) | seconds |", "|---|---|---|---|---|---|---|"]
        for r in res["rows"]:
            lines.append(f"| {r['scene']} | {r['sampler']} | {r['eta']:g} | {r['steps']} | {r['psnr']:.2f} | {r['sam']:.3f} | "
                         f"{r['seconds']:.1f} |")
        one = res["by_steps"].get(1)
        best = max(res["by_steps"].values())
        lines += ["", "Mean DDIM PSNR over the crops by steps: " + ", ".join(f"{n}: {v:.2f}" for n, v in res["by_steps"].items())
                  + f" dB. Fewest steps within 0.05 dB of the best: **{res['chosen_steps']}**"
                  + (f" (best - 1 step: {best - one:+.2f} dB)." if one is not None else "."), "",
                  f"Uncertainty: {samples} samples, DDIM eta {DEFAULT_ETA:g}, {res['unc_steps']} steps; calibration "
                  f"u = k sqrt(std^2 + (c |grad|)^2) with k = {res['k']:.3g}, c = {res['c']:g} (fitted on training crops: "
                  f"{', '.join(c.name for c in CALIBRATION_CROPS)}"
                  + (f"; training Spearman by c: {', '.join(f'{a}: {v:.3f}' for a, v in res['ranks'].items())}" if res["ranks"]
                     else "") + ").", "",
                  "| crop | within +-2 std (raw) | Spearman (raw) | median err / std (raw) | within +-2 u | "
                  "Spearman (u) | median err / u | PSNR of the mean | SAM of the mean |", "|---|---|---|---|---|---|---|---|---|"]
        for u in res["uncertainty"]:
            lines.append(f"| {u['scene']} | {100 * u['raw_coverage_2std']:.1f} % | {u['raw_spearman']:.3f} | "
                         f"{u['raw_median_err_over_std']:.3g} | {100 * u['coverage_2std']:.1f} % | {u['spearman']:.3f} | "
                         f"{u['median_err_over_std']:.3g} | "
                         f"{u['psnr_mean']:.2f} | {u['sam_mean']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--steps", default="1,2,4,8,16,32,100")
    ap.add_argument("--samples", type=int, default=4, help="samples of the uncertainty runs (0: no uncertainty runs)")
    ap.add_argument("--unc-steps", type=int, default=DEFAULT_STEPS, help="steps of the uncertainty runs")
    ap.add_argument("--fit-calibration", action="store_true")
    ap.add_argument("--write", action="store_true", help="with --fit-calibration: store the factor in each model file")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "diffusion"))
    args = ap.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",")]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    results = [bench_model(m, steps, args.samples, args.fit_calibration, log, args.unc_steps) for m in args.model]
    if args.write and args.fit_calibration:
        from export.onnx_export import update_metadata

        for m, res in zip(args.model, results, strict=True):
            update_metadata(m, uncertainty_scale=round(res["k"], 4), uncertainty_activity=res["c"])
            log(f"  {m}: uncertainty_scale = {res['k']:.4g}, uncertainty_activity = {res['c']:g} written")
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    text = report(results, args.samples)
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
