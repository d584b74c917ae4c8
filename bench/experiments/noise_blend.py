"""How much of the model to keep on a noisy pair: the model's result averaged with CNMF's, against the SNR, on scenes
the benchmark never scores.

    python bench/experiments/noise_blend.py [--out bench/results/noise_blend.md]

Pairs from the **training** regions of the bundled models (``bench/split.md``; the EnMAP and CAVE crops of
``bench/experiments/psf_shape.py``), each bundled model at its scale, a Gaussian PSF with FWHM = scale a quarter HR
pixel off centre, white noise of 30-50 dB on both images, and 30-40 dB on the LR-HSI alone (a clean HR-MSI, as a
real Sentinel-2 image is next to an EnMAP one). For each pair: CNMF given the estimated degradation (as the
benchmark's *estimated* rows), the model alone (Super-resolve, ``blend=False``, ``check=off``), their mean at every
weight of :data:`WEIGHTS`, the HR-MSI's SNR as ``core.ensemble.msi_snr_db`` reads it, and what Super-resolve writes
by default (``core.ensemble``: averaged only when the HR-MSI reads noisy, with the weight of the LR-HSI's estimated
SNR, CNMF on the LR-HSI as read). :func:`fit_line` then fits ``core.ensemble.WEIGHT_LINE`` to the
table: the line through two weights at :data:`LINE_SNRS` that loses least, over all rows, against each row's best
weight (the mean PSNR lost plus :data:`SAM_PER_DB` x the mean SAM lost), on the pairs with noise on both images.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "experiments"))

import numpy as np  # noqa: E402
from psf_shape import CALIBRATION  # noqa: E402

from bench.quality import estimated_knowledge, hsrdiff, load_scene, protocol_pair  # noqa: E402
from core import metrics  # noqa: E402
from core.baselines import BASELINES  # noqa: E402
from core.ensemble import WEIGHT_LINE, model_weight, msi_snr_db  # noqa: E402
from core.sensor.noise import fit_denoiser  # noqa: E402
from core.sensor.protocols import Degradation  # noqa: E402
from core.sensor.simulate import add_noise  # noqa: E402

SNRS = (30.0, 35.0, 40.0, 45.0, 50.0)
LR_ONLY_SNRS = (30.0, 35.0, 40.0)
WEIGHTS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.85)
LINE_SNRS = (26.0, 48.0)
"""dB: the line's two ends (the lowest SNR any of these pairs estimates, rounded down; ``DENOISE_BELOW_DB``)."""
SAM_PER_DB = 5.0
"""dB of PSNR a degree of SAM counts as in :func:`fit_line` (0.1 deg ~ 0.5 dB, about their spreads between methods)."""


def fit_line(rows: list[dict]) -> tuple[float, float, float, float]:
    """``(w_low, w_high, psnr_lost, sam_lost)``: the weights at :data:`LINE_SNRS` (a 0.05 grid) whose line in the
    estimated SNR loses least (the mean PSNR dB plus :data:`SAM_PER_DB` x the mean SAM deg lost against the best of
    each row's weights, interpolated between them, the model alone being weight 1), and those two means."""
    ws = np.array([*WEIGHTS, 1.0])
    best = None
    for lo in np.arange(0.2, 0.6, 0.05):
        for hi in np.arange(0.7, 1.0001, 0.05):
            lost = []
            for r in rows:
                w = np.interp(r["est"], LINE_SNRS, [lo, hi])
                cells = [*r["blends"], r["model"]]
                p = np.interp(w, ws, [c[0] for c in cells])
                a = np.interp(w, ws, [c[1] for c in cells])
                lost.append((max(c[0] for c in cells) - p, a - min(c[1] for c in cells)))
            m = np.mean(lost, axis=0)
            if best is None or m[0] + SAM_PER_DB * m[1] < best[2] + SAM_PER_DB * best[3]:
                best = (round(float(lo), 2), round(float(hi), 2), float(m[0]), float(m[1]))
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "noise_blend.md"))
    args = ap.parse_args(argv)
    t0 = time.time()
    rows = []
    for sc in (s for s in CALIBRATION if s.name.startswith(("enmap", "cave"))):
        prep = load_scene(sc)
        cave = sc.name.startswith("cave")
        for s in (4, 8) if cave else (3, 4, 8):
            model = str(ROOT / "models" / f"hsrdiff_{'cave' if cave else 'enmap_s2'}_x{s}.onnx")
            for noise, snr in [("both", x) for x in SNRS] + [("LR only", x) for x in LR_ONLY_SNRS]:
                deg = Degradation(snr_db=snr if noise == "both" else None, shift=(0.25, -0.25))
                nominal, true_srf, lr, msi, ref = protocol_pair(sc, prep, s, deg, seed=1)
                if noise == "LR only":
                    lr = add_noise(lr, snr, np.random.default_rng(1))
                kn = estimated_knowledge(lr, msi, s, nominal)
                _, est = fit_denoiser(lr, below_db=np.inf)
                kw = dict(wavelengths=prep.wavelengths, fwhm=prep.fwhm, msi_band_names=list(true_srf.band_names),
                          check="off", model_path=model)
                alone, _ = hsrdiff(lr, msi, s, blend=False, **kw)
                product, _ = hsrdiff(lr, msi, s, **kw)
                cnmf = BASELINES["cnmf"](lr, msi, s, srf=kn.srf, psf=kn.psf)

                def score(x, ref=ref, s=s):
                    return metrics.psnr(ref, x, border=s), metrics.sam(ref, x, border=s)

                r = {"scene": sc.name, "scale": s, "noise": noise, "snr": snr, "est": est, "msi_est": msi_snr_db(msi),
                     "cnmf": score(cnmf), "model": score(alone),
                     "blends": [score(w * alone + (1 - w) * cnmf) for w in WEIGHTS], "product": score(product),
                     "weight": model_weight(est, msi_snr_db(msi))}
                rows.append(r)
                best = max(range(len(WEIGHTS)), key=lambda k: r["blends"][k][0])
                print(f"{sc.name} x{s} {noise} {snr:.0f} dB (est {est:.1f}, MSI {r['msi_est']}): model {r['model'][0]:.2f}, "
                      f"cnmf {r['cnmf'][0]:.2f}, "
                      f"best w {WEIGHTS[best]} {r['blends'][best][0]:.2f}, product (w {r['weight']:.2f}) "
                      f"{r['product'][0]:.2f} / {r['product'][1]:.3f}", flush=True)
    lines = ["# The model's result averaged with CNMF's on noisy pairs (scenes the benchmark never scores)", "",
             f"Written by `python bench/experiments/noise_blend.py` in {time.time() - t0:.0f} s. The training regions of "
             "the bundled models, each model at its scale; Gaussian PSF (FWHM = scale) 0.25 HR px off centre, white noise "
             "of the given SNR on both images or on the LR-HSI alone (seed 1); *MSI reads*: `core.ensemble.msi_snr_db`. "
             "PSNR dB / SAM deg against the reference. *w x*: w x the model "
             "alone (Super-resolve, `blend=False`, `check=off`) + (1 - w) x CNMF (given the estimated degradation, the "
             "raw LR-HSI). *Product*: what Super-resolve writes by default: the weight of its estimated SNR "
             "(`core.ensemble.model_weight`: the model alone, weight 1, unless the MSI reads below 36 dB), CNMF on the LR-HSI "
             "as read. Bold: the best PSNR and the best SAM of the "
             "row.", "",
             "| scene | scale | noise on | SNR | estimated | MSI reads | CNMF | model alone | " + " | ".join(f"{w} x" for w in WEIGHTS)
             + " | product (w) |", "|---|---|---|---|---|---|---|---|" + "---|" * len(WEIGHTS) + "---|"]
    for r in rows:
        cells = [r["cnmf"], r["model"], *r["blends"], r["product"]]
        bp, bs = max(c[0] for c in cells), min(c[1] for c in cells)

        def fmt(c, bp=bp, bs=bs):
            p = f"**{c[0]:.2f}**" if c[0] == bp else f"{c[0]:.2f}"
            a = f"**{c[1]:.3f}**" if c[1] == bs else f"{c[1]:.3f}"
            return f"{p} / {a}"

        msi = "-" if r["msi_est"] is None else f"{r['msi_est']:.1f}"
        lines.append(f"| {r['scene']} | {r['scale']} | {r['noise']} | {r['snr']:.0f} dB | {r['est']:.1f} | {msi} | "
                     + " | ".join(fmt(c) for c in cells[:-1]) + f" | {fmt(cells[-1])} ({r['weight']:.2f}) |")
    lo, hi, lost_db, lost_deg = fit_line([r for r in rows if r["noise"] == "both"])
    lines += ["", f"**Fitted line** (`fit_line`): weight {lo:.2f} at {LINE_SNRS[0]:.0f} dB to {hi:.2f} at "
              f"{LINE_SNRS[1]:.0f} dB of estimated SNR; against each row's best weight it loses {lost_db:.3f} dB PSNR and "
              f"{lost_deg:.3f} deg SAM on average. Shipped (`core.ensemble.WEIGHT_LINE`): {WEIGHT_LINE}."]
    for noise in ("both", "LR only"):
        sub = [r for r in rows if r["noise"] == noise]
        gain = [(r["product"][0] - r["model"][0], r["model"][1] - r["product"][1]) for r in sub]
        over = [(r["product"][0] - r["cnmf"][0], r["cnmf"][1] - r["product"][1]) for r in sub]
        lines += ["", f"Noise on {noise}, {sum(r['weight'] < 1 for r in sub)} of {len(sub)} pairs averaged. Product minus the "
                  f"model alone: PSNR {min(g[0] for g in gain):+.2f} to {max(g[0] for g in gain):+.2f} dB, SAM "
                  f"{min(g[1] for g in gain):+.3f} to {max(g[1] for g in gain):+.3f} deg (positive = better). Product "
                  f"minus CNMF: PSNR {min(o[0] for o in over):+.2f} to {max(o[0] for o in over):+.2f} dB, SAM "
                  f"{min(o[1] for o in over):+.3f} to {max(o[1] for o in over):+.3f} deg."]
    lines.append("")
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
