"""Export a trained CDFormer to ONNX with its metadata embedded (torch and onnx imported lazily).

``python -m export.onnx_export CHECKPOINT_DIR OUT.onnx [--fp16]``

The graph follows the denoiser contract of docs/ARCHITECTURE.md: inputs ``noisy``
``(n, hsi_bands, H, W)``, ``noise_level`` ``(n,)``, ``lr_up`` ``(n, hsi_bands, H, W)``, ``msi``
``(n, msi_bands, H, W)``, output ``x0``; batch, ``H`` and ``W`` are dynamic (multiples of the
model's ``spatial_multiple``). Opset 17, TorchScript exporter (``dynamo=False``). The
:class:`~export.metadata.ModelMetadata` JSON goes into ``metadata_props`` under ``hsr_diff``.
The file is written to a temporary name in the target folder, checked with ``onnx.checker``,
and renamed only then.

``fp16=True`` writes a variant whose weights and arithmetic are float16 (for GPUs) while its
inputs and output stay float32 (casts at the graph's edges), so the sampler is unchanged.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import uuid
import warnings
from pathlib import Path

import numpy as np

from .metadata import INPUT_NAMES, METADATA_KEY, OUTPUT_NAME, ModelMetadata

__all__ = ["OPSET", "export_model", "export_checkpoint", "untrained_export_info"]

log = logging.getLogger("hsr_diff.export")

OPSET = 17
IR_VERSION = 8  # read by every onnxruntime >= 1.10


def _wrap_fp16(model):
    """float32 in and out, float16 inside: the model traced under float16 autocast.

    Autocast puts convolutions, linear layers and matrix products in float16 (their weights
    become float16 initialisers after constant folding) and keeps reductions, normalisations
    and softmax in float32, the usual mixed-precision split.
    """
    import torch

    class Half(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, noisy, noise_level, lr_up, msi):
            with torch.autocast("cpu", dtype=torch.float16):
                x0 = self.inner(noisy, noise_level, lr_up, msi)
            return x0.float()

    return Half(model)


def export_model(model, export_info: dict, out_path: str | os.PathLike, fp16: bool = False, example_size: int | None = None,
                 check: bool = True) -> Path:
    """Export ``model`` (a CDFormer in eval mode) with the metadata built from ``export_info``.

    ``example_size`` is the side of the example input used for tracing (default 2 windows).
    Returns the written path.
    """
    import copy

    import onnx
    import torch

    out_path = Path(out_path)
    if not out_path.parent.exists():
        raise FileNotFoundError(f"{out_path}: the output folder {out_path.parent} does not exist")
    meta = ModelMetadata.from_export_info(export_info, precision="float16" if fp16 else "float32")
    mult = int(getattr(model, "spatial_multiple", meta.spatial_multiple))
    if mult != meta.spatial_multiple:
        raise ValueError(f"the model's spatial_multiple ({mult}) differs from export_info's ({meta.spatial_multiple})")
    model = copy.deepcopy(model).cpu().float().eval()
    if fp16:
        model = _wrap_fp16(model).eval()
    side = int(example_size or 2 * mult)
    n = 2
    g = torch.Generator().manual_seed(0)
    example = (
        torch.randn(n, meta.hsi_bands, side, side, generator=g),
        torch.rand(n, generator=g),
        torch.randn(n, meta.hsi_bands, side, side, generator=g),
        torch.randn(n, meta.msi_bands, side, side, generator=g),
    )
    axes = {"noisy": {0: "batch", 2: "height", 3: "width"}, "noise_level": {0: "batch"},
            "lr_up": {0: "batch", 2: "height", 3: "width"}, "msi": {0: "batch", 2: "height", 3: "width"},
            OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
    tmp = out_path.with_name(f".{out_path.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # dynamo=False is deliberate (the TorchScript exporter handles the dynamic window shapes).
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(model, example, str(tmp), input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                              dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True, dynamo=False)
        proto = onnx.load(str(tmp))
        if proto.ir_version > IR_VERSION:
            proto.ir_version = IR_VERSION
        del proto.metadata_props[:]
        onnx.helper.set_model_props(proto, {METADATA_KEY: meta.to_json()})
        proto.producer_name = "hsr-diff"
        proto.doc_string = meta.describe()
        if check:
            onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))
        os.replace(tmp, out_path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    log.info("exported %s -> %s", meta.describe(), out_path)
    return out_path


def untrained_export_info(model, scale: int = 4, hsi_norm=None, msi_norm=None, wavelengths_nm=None, fwhm_nm=None,
                          msi_band_names=None, schedule=None) -> dict:
    """An ``export_info`` dict for a model that was not trained (benchmarks, tests, smoke runs).

    Normalisations default to the identity; the ``training`` entry says the weights are random.
    """
    from core.normalization import BandNormalization
    from core.schedule import NoiseSchedule

    cfg = dict(model.config)
    c, m = int(cfg["hsi_bands"]), int(cfg["msi_bands"])
    ident = lambda k: BandNormalization(np.zeros(k, np.float32), np.ones(k, np.float32))  # noqa: E731
    return {
        "preset": cfg.get("preset", "custom"),
        "model_config": cfg,
        "hsi_bands": c,
        "msi_bands": m,
        "scale": int(scale),
        "wavelengths_nm": None if wavelengths_nm is None else [float(x) for x in wavelengths_nm],
        "fwhm_nm": None if fwhm_nm is None else [float(x) for x in fwhm_nm],
        "msi_band_names": list(msi_band_names) if msi_band_names is not None else [f"MSI {i + 1}" for i in range(m)],
        "srf": None,
        "psf_sigma": scale / 2.3548,
        "normalization": {"hsi": (hsi_norm or ident(c)).to_dict(), "msi": (msi_norm or ident(m)).to_dict()},
        "schedule": (schedule or NoiseSchedule()).to_dict(),
        "spatial_multiple": int(model.spatial_multiple),
        "training": {"data": "none: randomly initialised weights (untrained)", "steps": 0},
        "validation": {},
    }


def export_checkpoint(ckpt_dir: str | os.PathLike, out_path: str | os.PathLike, fp16: bool = False) -> Path:
    """Export a training checkpoint folder (or run directory) with its EMA weights."""
    from core.training.checkpoint import load_for_export

    model, info = load_for_export(ckpt_dir)
    return export_model(model, info, out_path, fp16=fp16)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export.onnx_export", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="checkpoint folder or run directory")
    ap.add_argument("out", help="output .onnx path")
    ap.add_argument("--fp16", action="store_true", help="also write a float16 variant next to it (<out>.fp16.onnx)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        print(export_checkpoint(args.checkpoint, args.out))
        if args.fp16:
            out = Path(args.out)
            print(export_checkpoint(args.checkpoint, out.with_name(out.stem + ".fp16.onnx"), fp16=True))
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
