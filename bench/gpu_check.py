"""Checks of the GPU path, for a machine with an NVIDIA GPU (no GDAL needed).

    python bench/gpu_check.py [--out results.json]

Reports which ONNX Runtime providers really start; when CUDA does: CPU/CUDA/torch parity of
the exported small preset, the IO-binding sampler (tensors kept on the GPU between steps)
against the plain one, and seconds per step of the small and paper presets with ONNX Runtime
CUDA (plain run and IO binding) and PyTorch eager CUDA. Weights are random.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import onnxruntime as ort

    from export.providers import create_session, gpu_provider_usable
    from export.sampler import update_model_bytes

    res: dict = {"onnxruntime": ort.__version__, "available": ort.get_available_providers(), "numpy": np.__version__}
    res["cuda_usable"] = gpu_provider_usable("cuda")
    _, info = create_session(update_model_bytes(), "auto")
    res["auto"] = info.describe()
    print(json.dumps(res), flush=True)
    if res["cuda_usable"]:
        import torch

        from export.sampler import Denoiser
        from export.testing import export_untrained
        from export.tiling import fuse_arrays

        res["torch"] = torch.__version__
        with tempfile.TemporaryDirectory() as d:
            for preset, side in (("small", 256), ("paper", 256)):
                path, model = export_untrained(Path(d) / f"{preset}.onnx", preset, 128, 4, scale=4)
                gpu = Denoiser(path, device="cuda")
                g = np.random.default_rng(0)
                feeds = [g.standard_normal((1, 128, side, side)).astype(np.float32), np.array([0.5], np.float32),
                         g.standard_normal((1, 128, side, side)).astype(np.float32),
                         g.standard_normal((1, 4, side, side)).astype(np.float32)]
                r: dict = {"provider": gpu.info.describe()}
                tm = model.cuda()
                tf = [torch.from_numpy(a).cuda() for a in feeds]
                with torch.no_grad():
                    ref = tm(*tf).cpu().numpy()
                r["max_abs_ort_cuda_vs_torch_cuda"] = float(np.abs(gpu(*feeds) - ref).max())
                lr = g.uniform(0, 1, (128, side // 4, side // 4)).astype(np.float32)
                msi = g.uniform(0, 1, (4, side, side)).astype(np.float32)
                kw = dict(steps=10, sampler="ancestral", seed=1, tile=side, overlap=0)
                fuse_arrays(gpu, lr, msi, io_binding=True, **{**kw, "steps": 2})  # warm-up
                for iob in (False, True):
                    torch.cuda.synchronize()
                    t = time.perf_counter()
                    out, _, _ = fuse_arrays(gpu, lr, msi, io_binding=iob, **kw)
                    r[f"sampler_s_per_step_iobinding_{iob}"] = (time.perf_counter() - t) / kw["steps"]
                    r[f"out_{iob}"] = out
                r["max_abs_iobinding_vs_plain"] = float(np.abs(r.pop("out_True") - r.pop("out_False")).max())
                for _ in range(2):
                    gpu(*feeds)
                t = time.perf_counter()
                for _ in range(5):
                    gpu(*feeds)
                r["ort_cuda_forward_s"] = (time.perf_counter() - t) / 5
                with torch.no_grad():
                    for _ in range(2):
                        tm(*tf)
                    torch.cuda.synchronize()
                    t = time.perf_counter()
                    for _ in range(5):
                        tm(*tf)
                    torch.cuda.synchronize()
                r["torch_cuda_forward_s"] = (time.perf_counter() - t) / 5
                r["tile"] = side
                res[preset] = r
                print(json.dumps({preset: r}), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
