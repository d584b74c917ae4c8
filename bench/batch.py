"""Throughput of ``export.batch`` on a Dask LocalCluster: 1 worker against 2, scenes and tiles as work units.

    python bench/batch.py [--model enmap_s2_x3] [--side 240] [--large 768] [--steps 2] [--work DIR]
                          [--out bench/results/batch]

Four pairs of ``side x side`` HR pixels and one pair of ``large x large`` (real EnMAP spectra
mirror-tiled, :func:`bench.scene_scale.make_pair`) are super-resolved with a bundled model:
the four as a batch of scene tasks, the large one split into tile tasks, each on a LocalCluster
of 1 and of 2 worker processes (one thread each), and the large one also by a single process
(``export.superresolve`` with 1 and 2 threads). Every batch output is compared bit for bit with
the single-process run at one thread. Wall times include starting the cluster.
The bar (issue 19): 2 workers <= 0.65x the wall time of 1 worker for the 4-pair batch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.scene_scale import make_pair  # noqa: E402
from core.raster_io import read_raster  # noqa: E402
from export.batch import Pair, run_batch  # noqa: E402
from export.superresolve import superresolve  # noqa: E402


def _same(a: Path, b: Path) -> bool:
    return bool(np.array_equal(read_raster(a)[0], read_raster(b)[0], equal_nan=True))


def _single(lr: Path, msi: Path, model: Path, out: Path, steps: int, threads: int) -> float:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    superresolve(lr, msi, model, out, steps=steps, threads=threads)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="enmap_s2_x3")
    ap.add_argument("--side", type=int, default=240, help="HR side of each of the four pairs")
    ap.add_argument("--large", type=int, default=768, help="HR side of the large pair (tiles as work units)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--work", default="/tmp/hsr_bench_batch")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "batch"))
    args = ap.parse_args(argv)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    model = ROOT / "models" / f"hsrdiff_{args.model}.onnx"
    small = [make_pair(work / f"pair{i}", args.model, args.side) for i in range(4)]
    large = make_pair(work / "large", args.model, args.large)
    rows, identical = [], []

    refs = []
    for i, (lr, msi) in enumerate(small):
        refs.append(work / f"pair{i}" / "ref.tif")
        _single(lr, msi, model, refs[-1], args.steps, 1)
    large_ref = work / "large" / "ref.tif"
    for threads in (1, 2):
        out = work / "large" / f"single{threads}.tif"
        sec = _single(*large, model, out, args.steps, threads)
        rows.append({"job": f"large pair {args.large}^2", "how": f"export.superresolve, 1 process, {threads} thread(s)",
                     "seconds": sec})
        if threads == 1:
            out.rename(large_ref)
        print(rows[-1], flush=True)

    os.environ["OMP_NUM_THREADS"] = "1"
    for workers in (1, 2):
        outs = [work / f"pair{i}" / f"w{workers}.tif" for i in range(4)]
        res = run_batch([Pair(str(lr), str(msi), str(o)) for (lr, msi), o in zip(small, outs, strict=True)], model=model,
                        workers=workers, steps=args.steps, log=None, units="scene")
        assert res.ok, res.summary()
        same = all(_same(o, r) for o, r in zip(outs, refs, strict=True))
        identical.append(same)
        rows.append({"job": f"4 pairs {args.side}^2", "how": f"export.batch, {workers} worker(s), scenes as units",
                     "seconds": res.seconds, "identical": same})
        print(rows[-1], flush=True)
        out = work / "large" / f"w{workers}.tif"
        res = run_batch([Pair(str(large[0]), str(large[1]), str(out))], model=model, workers=workers, steps=args.steps,
                        log=None, units="tiles")
        assert res.ok, res.summary()
        same = _same(out, large_ref)
        identical.append(same)
        rows.append({"job": f"large pair {args.large}^2", "how": f"export.batch, {workers} worker(s), tiles as units",
                     "seconds": res.seconds, "identical": same})
        print(rows[-1], flush=True)

    def sec(job: str, how: str) -> float:
        return next(r["seconds"] for r in rows if r["job"].startswith(job) and r["how"].startswith(how))

    ratio_pairs = sec("4 pairs", "export.batch, 2") / sec("4 pairs", "export.batch, 1")
    ratio_large = sec("large", "export.batch, 2") / sec("large", "export.batch, 1")
    lines = ["# export.batch throughput on a LocalCluster", "",
             f"Machine: {os.cpu_count()} CPU cores ({platform.machine()}), no GPU. Written by `python bench/batch.py` "
             f"(model `{model.name}`, {args.steps} DDIM steps, default tile). Wall times include starting the cluster; "
             "each worker runs one thread.", "",
             "| job | how | wall s | bit-identical to 1 process, 1 thread |", "|---|---|---|---|"]
    for r in rows:
        same = "" if "identical" not in r else ("yes" if r["identical"] else "**NO**")
        lines.append(f"| {r['job']} | {r['how']} | {r['seconds']:.1f} | {same} |")
    lines += ["", f"- 4-pair batch: 2 workers / 1 worker = **{ratio_pairs:.2f}x** (bar <= 0.65x: "
              f"{'met' if ratio_pairs <= 0.65 else 'missed'}).",
              f"- Large pair as tile units: 2 workers / 1 worker = {ratio_large:.2f}x; against one process with 2 threads "
              f"{sec('large', 'export.batch, 2') / sec('large', 'export.superresolve, 1 process, 2'):.2f}x.",
              f"- Every batch output bit-identical to the single-process run: {'yes' if all(identical) else 'NO'}."]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "ratio_pairs": ratio_pairs, "ratio_large": ratio_large},
                                                   indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(identical) else 1


if __name__ == "__main__":
    sys.exit(main())
