"""Inference speed and memory of HSR-Diff on this machine; writes bench/results/speed.md.

    python bench/speed.py [--threads 1] [--hsi 128] [--msi 4] [--skip-memory] [--memory-model tiny|contract|both]

1. **Per denoising step**: one network evaluation of the ``small`` and ``paper`` CDFormer presets
   (randomly initialised weights: speed does not depend on training) with ONNX Runtime (CPU
   provider, the exported graph) and PyTorch eager (``torch.no_grad``, same weights, same
   threads), in seconds per step per megapixel of output, and the sampler's own overhead
   (noise, update, tiling) measured by a real ``fuse_arrays`` run.
2. **Whole image**: 1-megapixel output (1024 x 1024, tiles of 256 with overlap 32) at 10, 25
   and 100 steps, extrapolated from the per-step timing times the pixels the tiles cover
   (overlaps are computed twice); a full 100-step run of the paper preset would take hours on
   this CPU.
3. **Peak memory** (``VmHWM``, the peak RSS, of a fresh subprocess) of ``superresolve`` on a 4096 x 4096
   output GeoTIFF (8 HSI bands, 3 MSI bands, scale 4) with 4 tiles (2064 px) and with 64 tiles
   (544 px): with the per-pixel contract graph (the pipeline alone: GDAL reads, noise,
   blending, writes) and, where it fits, the tiny CDFormer (1 step); plus the tiny CDFormer's
   activation memory for one tile of 256/512/1024 px, from which the 4-tile tiny run is
   extrapolated when it is not run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "speed.md"
PRESET_SIDES = {"small": 128, "paper": 64}


def _status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _peak_mb() -> float:
    """Peak RSS of this process image (``VmHWM``; ``ru_maxrss`` would include the parent's peak
    from before ``fork``/``exec``, since Linux carries it over)."""
    v = _status_mb("VmHWM")
    return v if v is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_mb() -> float:
    v = _status_mb("VmRSS")
    return v if v is not None else _peak_mb()


def _reset_peak() -> None:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0), so the next peak is the forward's own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


# ---------------------------------------------------------------------- 1 + 2: speed


def _time(fn, reps: int) -> float:
    fn()  # warm-up (allocations, ORT's first-run optimisations)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.min(ts))  # the least disturbed run: this machine's cores are shared


def speed(threads: int, hsi: int, msi: int, tmp: Path, reps: int = 4) -> list[dict]:
    import torch

    from core.model import count_parameters
    from export.sampler import Denoiser
    from export.testing import export_untrained
    from export.tiling import fuse_arrays

    torch.set_num_threads(threads)
    rows = []
    for preset, side in PRESET_SIDES.items():
        path, model = export_untrained(tmp / f"{preset}.onnx", preset, hsi, msi, scale=4)
        fused_path, _ = export_untrained(tmp / f"{preset}_fused.onnx", preset, hsi, msi, scale=4, split=False)
        den, fused = Denoiser(path, device="cpu", threads=threads), Denoiser(fused_path, device="cpu", threads=threads)
        g = np.random.default_rng(0)
        feeds = [g.standard_normal((1, hsi, side, side)).astype(np.float32), np.array([0.5], np.float32),
                 g.standard_normal((1, hsi, side, side)).astype(np.float32), g.standard_normal((1, msi, side, side)).astype(np.float32)]
        tfeeds = [torch.from_numpy(a) for a in feeds]
        t_ort = _time(lambda fused=fused, feeds=feeds: fused(*feeds), reps)
        feats = den.features(feeds[2], feeds[3])
        t_step = _time(lambda den=den, feeds=feeds, feats=feats: den.step(*feeds, feats), reps)
        t_feat = _time(lambda den=den, feeds=feeds: den.features(feeds[2], feeds[3]), reps)

        def run_torch(model=model, tfeeds=tfeeds):
            with torch.no_grad():
                model(*tfeeds)

        with torch.no_grad():
            tfeats = model.condition(tfeeds[2], tfeeds[3])

        def run_torch_step(model=model, tfeeds=tfeeds, tfeats=tfeats):
            with torch.no_grad():
                model.denoise(tfeeds[0], tfeeds[1], tfeeds[2], tfeats)

        t_torch = _time(run_torch, reps)
        t_torch_step = _time(run_torch_step, reps)
        # The sampler around the network: a real 3-step run over one tile of the same size.
        lr = g.uniform(0, 1, (hsi, side // 4, side // 4)).astype(np.float32)
        m_img = g.uniform(0, 1, (msi, side, side)).astype(np.float32)
        t_sampler = _time(lambda den=den, lr=lr, m_img=m_img, side=side: fuse_arrays(den, lr, m_img, steps=3, sampler="ancestral",
                                                                           tile=side, overlap=0), 2) / 3
        mp = side * side / 1e6
        split25 = t_step + t_feat / 25
        rows.append({"preset": preset, "params": count_parameters(model), "side": side, "ort_s": t_ort, "torch_s": t_torch,
                     "ort_s_per_mp": t_ort / mp, "torch_s_per_mp": t_torch / mp, "ratio": t_torch / t_ort,
                     "ort_step_s": t_step, "ort_features_s": t_feat, "split25_s": split25, "split_ratio": split25 / t_ort,
                     "torch_step_s": t_torch_step, "step_ratio": t_torch_step / t_step,
                     "sampler_step_s": t_sampler, "overhead": t_sampler / split25 - 1.0, "provider": den.info.provider})
        print(f"  {preset}: ORT fused {t_ort:.3f} s, split step {t_step:.3f} s + features {t_feat:.3f} s, torch {t_torch:.3f} s "
              f"(step {t_torch_step:.3f} s) on {side}x{side}", file=sys.stderr, flush=True)
    return rows


def whole_image(rows: list[dict], side: int = 1024, tile: int = 256, overlap: int = 32) -> list[dict]:
    from export.tiling import tile_grid

    _, _, tiles = tile_grid(side, side, tile, overlap)
    covered_mp = sum(t.height * t.width for t in tiles) / 1e6
    out = []
    for r in rows:
        per_step = r["sampler_step_s"] / (r["side"] ** 2 / 1e6) * covered_mp
        out.append({"preset": r["preset"], "tiles": len(tiles), "covered_mp": covered_mp,
                    **{f"t{n}": per_step * n for n in (10, 25, 100)}})
    return out


# ---------------------------------------------------------------------- 3: memory


def make_big_pair(folder: Path, side: int = 4096, hsi: int = 8, msi: int = 3, scale: int = 4) -> tuple[Path, Path]:
    """Smooth synthetic 4096 x 4096 MSI and 1024 x 1024 LR-HSI GeoTIFFs, written in strips."""
    from core.raster_io import RasterWriter, Window

    lr_side = side // scale
    gt_msi = (500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0)
    gt_lr = (500000.0, 10.0 * scale, 0.0, 5800000.0, 0.0, -10.0 * scale)
    from osgeo import osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    wkt = srs.ExportToWkt()
    lr_p, msi_p = folder / "big_lr.tif", folder / "big_msi.tif"
    x = np.linspace(0, 20, side, dtype=np.float32)
    with RasterWriter(msi_p, (msi, side, side), gt_msi, wkt) as w:
        for r0 in range(0, side, 256):
            y = np.linspace(0, 20, side, dtype=np.float32)[r0:r0 + 256, None]
            w.write(np.stack([np.sin(x[None] * (b + 1) * 0.3 + y) for b in range(msi)]).astype(np.float32), Window(0, r0, side, 256))
    xl = np.linspace(0, 20, lr_side, dtype=np.float32)
    with RasterWriter(lr_p, (hsi, lr_side, lr_side), gt_lr, wkt, wavelengths=np.linspace(450, 900, hsi)) as w:
        yl = xl[:, None]
        w.write(np.stack([np.cos(xl[None] * (b + 1) * 0.2 + yl) for b in range(hsi)]).astype(np.float32))
    return lr_p, msi_p


def memory_child(args) -> None:
    """Runs in a fresh interpreter: one superresolve, prints JSON with peak RSS."""
    from export.superresolve import superresolve

    base = _peak_mb()
    t = time.perf_counter()
    res = superresolve(args.lr, args.msi_path, args.model, args.out, steps=args.steps, tile=args.tile, overlap=32,
                       device="cpu", threads=args.threads)
    print(json.dumps({"peak_mb": _peak_mb(), "base_mb": base, "seconds": time.perf_counter() - t, "tiles": res.tiles}))
    os.unlink(args.out)


def activation_child(args) -> None:
    from export.sampler import Denoiser

    den = Denoiser(args.model, device="cpu", threads=args.threads)
    md = den.metadata
    n = args.tile
    feeds = [np.zeros((1, md.hsi_bands, n, n), np.float32), np.array([0.5], np.float32),
             np.zeros((1, md.hsi_bands, n, n), np.float32), np.zeros((1, md.msi_bands, n, n), np.float32)]
    base = _rss_mb()
    _reset_peak()
    t = time.perf_counter()
    den(*feeds)
    print(json.dumps({"peak_mb": _peak_mb(), "base_mb": base, "seconds": time.perf_counter() - t}))


def _child(mode: str, gdal_cachemax: str | None = None, **kw) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), f"--{mode}"]
    for k, v in kw.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if gdal_cachemax:
        env["GDAL_CACHEMAX"] = gdal_cachemax
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def memory(threads: int, tmp: Path, which: str) -> tuple[list[dict], list[dict]]:
    from core.normalization import BandNormalization
    from export.testing import contract_model, export_untrained, make_metadata

    lr, msi = make_big_pair(tmp)
    models = {}
    if which in ("contract", "both"):
        ident = lambda k: BandNormalization(np.zeros(k, np.float32), np.ones(k, np.float32))  # noqa: E731 (data in [-1, 1])
        models["contract (per-pixel graph)"] = contract_model(tmp / "contract.onnx", make_metadata(
            8, 3, scale=4, hsi_normalization=ident(8), msi_normalization=ident(3)))
    if which in ("tiny", "both"):
        models["tiny CDFormer"] = export_untrained(tmp / "tiny.onnx", "tiny", 8, 3, scale=4)[0]
    runs = []
    for name, model in models.items():
        for tile, label in ((2064, "4 tiles"), (544, "64 tiles")):
            if name.startswith("tiny") and tile > 1024:
                continue  # measured per tile below and extrapolated (about 13 GB and 10 min on 1 thread)
            steps = 2 if name.startswith("contract") else 1
            for cache in (None, "64") if name.startswith("contract") else ("64",):
                print(f"  memory: {name}, {label}, {steps} step(s), GDAL_CACHEMAX={cache or 'default'} ...", file=sys.stderr,
                      flush=True)
                r = _child("memory-child", gdal_cachemax=cache, lr=lr, msi_path=msi, model=model, out=tmp / "out.tif",
                           steps=steps, tile=tile, threads=threads)
                runs.append({"model": name, "layout": label, "tile": tile, "steps": steps,
                             "cache": f"{cache} MB" if cache else "default (5 % of RAM)", **r})
    acts = []
    if "tiny CDFormer" in models:
        for n in (256, 512, 1024):
            r = _child("activation-child", model=models["tiny CDFormer"], tile=n, threads=threads)
            acts.append({"tile": n, **r, "act_mb": r["peak_mb"] - r["base_mb"]})
            print(f"  tiny activations at {n}: {acts[-1]['act_mb']:.0f} MB", file=sys.stderr, flush=True)
    return runs, acts


# ---------------------------------------------------------------------- report


def report(threads, hsi, msi, rows, whole, runs, acts) -> str:
    import onnxruntime
    import torch

    cpu = platform.processor() or platform.machine()
    lines = [
        "# HSR-Diff inference speed and memory",
        "",
        f"Machine: {os.cpu_count()} CPU cores ({cpu}), no GPU; ONNX Runtime {onnxruntime.__version__} (CPU provider), "
        f"PyTorch {torch.__version__}, numpy {np.__version__}; **{threads} thread(s)** for both engines. "
        "Written by `python bench/speed.py`. Weights are **randomly initialised** (speed does not depend on training).",
        "",
        f"## Per denoising step ({hsi} HSI + {msi} MSI bands, batch 1)",
        "",
        "| preset | parameters | tile | ORT fused s/step | ORT split: step + features | split s/step at 25 steps | split/fused | "
        "torch eager s/step (fused / step) | torch/ORT (fused / step) | ORT s/step/MP (fused) | sampler s/step (ORT split) | "
        "sampler overhead |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['params'] / 1e6:.2f} M | {r['side']}x{r['side']} | {r['ort_s']:.3f} | "
                     f"{r['ort_step_s']:.3f} + {r['ort_features_s']:.3f} | {r['split25_s']:.3f} | {r['split_ratio']:.2f} | "
                     f"{r['torch_s']:.3f} / {r['torch_step_s']:.3f} | {r['ratio']:.2f} / {r['step_ratio']:.2f} | "
                     f"{r['ort_s_per_mp']:.1f} | {r['sampler_step_s']:.3f} | {100 * r['overhead']:+.0f} % |")
    lines += ["", "*Fused*: the graph runs both streams at every step (the bundled models before the split layout). *Split*: "
              "the conditioning features are computed once per tile (`features`) and each step runs the denoising stream "
              "alone; *at 25 steps* adds a 25th of the features' cost to each step. *torch/ORT* > 1 means ONNX Runtime "
              "is faster (torch eager *step* reuses the features too). *Sampler s/step* is a real `fuse_arrays` run "
              "(3 ancestral steps, one tile, split graph): network + noise field + update + normalisation + blending; its "
              "overhead is against the split step at 25 steps.", "",
              "## Whole image: 1024 x 1024 output (1 MP), tiles 256 / overlap 32 (extrapolated)", "",
              "| preset | tiles | pixels evaluated | 10 steps | 25 steps | 100 steps |", "|---|---|---|---|---|---|"]

    def hms(s):
        return f"{s:.0f} s" if s < 120 else (f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h")

    for w in whole:
        lines.append(f"| {w['preset']} | {w['tiles']} | {w['covered_mp']:.2f} MP | {hms(w['t10'])} | {hms(w['t25'])} | "
                     f"{hms(w['t100'])} |")
    lines += ["", "Extrapolated: sampler seconds per step per MP (above) x pixels the tiles cover x steps; not run in full "
              "(the paper preset at 100 steps would take hours on this CPU). Per-step cost is linear in pixels for the "
              "window attention and the convolutions, so the extrapolation holds to within tile-edge effects.", ""]
    if runs or acts:
        lines += ["## Peak memory: 4096 x 4096 output GeoTIFF (8 HSI bands, 3 MSI bands, scale 4, DDIM)", "",
                  "| model | layout | tile | steps | GDAL_CACHEMAX | peak RSS | peak RSS before the run (imports) | wall time |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in runs:
            lines.append(f"| {r['model']} | {r['layout']} | {r['tile']} px | {r['steps']} | {r['cache']} | {r['peak_mb']:.0f} MB | "
                         f"{r['base_mb']:.0f} MB | {r['seconds']:.0f} s |")
        if acts:
            lines += ["", "Tiny CDFormer activation memory for one tile (peak RSS during one forward minus RSS before it, "
                      "session created and inputs allocated):", "",
                      "| tile | activations | forward time |", "|---|---|---|"]
            for a in acts:
                lines.append(f"| {a['tile']} x {a['tile']} | {a['act_mb']:.0f} MB | {a['seconds']:.1f} s |")
            per_px = acts[-1]["act_mb"] / acts[-1]["tile"] ** 2
            est = per_px * 2064 ** 2
            lines += ["", f"The tiny CDFormer with 4 tiles (2064 px) was **not run** here (2 shared cores, 23 GB RAM): its "
                      f"activations extrapolate to about {est / 1024:.1f} GB ({per_px * 1e6 / 1024:.2f} GB per megapixel of "
                      "tile, from the 1024 px tile) on top of the pipeline's memory."]
        lines += ["", "What sets the memory: the tile (the batch of tiles in flight: inputs, noise, state, the network's "
                  "activations), not the raster: inputs are read and outputs written window by window, and between tiles "
                  "only the pending overlap strip (overlap x raster width x bands, 4 MB here) is kept. GDAL's block cache "
                  "(default 5 % of RAM) also holds written and read blocks until it is full; `GDAL_CACHEMAX=64` shows the "
                  "pipeline without it.", ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hsi", type=int, default=128)
    ap.add_argument("--msi", type=int, default=4)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--memory-model", choices=("contract", "tiny", "both"), default="both")
    ap.add_argument("--out", default=str(RESULTS))
    # children
    ap.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--activation-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--lr", help=argparse.SUPPRESS)
    ap.add_argument("--msi-path", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--tile", type=int, default=256, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        args.out = args.out if args.out != str(RESULTS) else None
        memory_child(args)
        return 0
    if args.activation_child:
        activation_child(args)
        return 0
    with tempfile.TemporaryDirectory(prefix="hsr_bench_") as d:
        tmp = Path(d)
        rows, whole, runs, acts = [], [], [], []
        if not args.skip_speed:
            print("speed ...", file=sys.stderr, flush=True)
            rows = speed(args.threads, args.hsi, args.msi, tmp)
            whole = whole_image(rows)
        if not args.skip_memory:
            print("memory ...", file=sys.stderr, flush=True)
            runs, acts = memory(args.threads, tmp, args.memory_model)
    raw = Path(args.out).with_suffix(".json")
    old = json.loads(raw.read_text()) if raw.exists() else {}
    if args.skip_speed and old.get("rows"):  # keep the last measured section
        rows, whole = old["rows"], old["whole"]
    if args.skip_memory and (old.get("runs") or old.get("acts")):
        runs, acts = old.get("runs", []), old.get("acts", [])
    text = report(args.threads, args.hsi, args.msi, rows, whole, runs, acts)
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps({"rows": rows, "whole": whole, "runs": runs, "acts": acts}, indent=1))
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
