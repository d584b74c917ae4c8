"""Export a trained CDFormer to ONNX with its metadata embedded (torch and onnx imported lazily).

``python -m export.onnx_export CHECKPOINT_DIR OUT.onnx [--fp16]``

The graph follows the denoiser contract of docs/ARCHITECTURE.md in one of two layouts
(:data:`export.metadata.GRAPHS`). ``split`` (the default): two disjoint parts, the conditioning
stream ``(lr_up (n, hsi_bands, H, W), msi (n, msi_bands, H, W)) -> features_k (n, width, H, W)`` and
one denoising step ``(noisy (n, hsi_bands, H, W), noise_level (n,), base (n, hsi_bands, H, W),
features_in_k) -> x0``, so a sampler computes the features once per tile. ``fused`` (``split=False``):
``(noisy, noise_level, lr_up, msi) -> x0``. Batch, ``H`` and ``W`` are dynamic (multiples of the
model's ``spatial_multiple``). Opset 17, TorchScript exporter (``dynamo=False``). The
:class:`~export.metadata.ModelMetadata` JSON goes into ``metadata_props`` under ``hsr_diff``.
The file is written to a temporary name in the target folder, checked with ``onnx.checker``,
and renamed only then.

``fp16=True`` writes a variant whose weights and arithmetic are float16 (for GPUs) while its
inputs and output stay float32 (casts at the graph's edges), so the sampler is unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import uuid
import warnings
from pathlib import Path

import numpy as np

from .metadata import CONDITION_INPUTS, METADATA_KEY, ModelMetadata, feature_names, graph_names

__all__ = ["OPSET", "export_model", "export_checkpoint", "untrained_export_info", "update_metadata"]

log = logging.getLogger("hsr_diff.export")

OPSET = 17
IR_VERSION = 8  # read by every onnxruntime >= 1.10


def _graph_module(model, split: bool, fp16: bool):
    """The module traced for export: the fused denoiser or its split form (module docstring).

    ``fp16``: float32 in and out, float16 inside (traced under float16 autocast, which puts
    convolutions, linear layers and matrix products in float16 - their weights become float16
    initialisers after constant folding - and keeps reductions, normalisations and softmax in
    float32, the usual mixed-precision split).
    """
    import contextlib

    import torch

    count = model.feature_count

    class Graph(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *inputs):
            with torch.autocast("cpu", dtype=torch.float16) if fp16 else contextlib.nullcontext():
                if not split:
                    return self.inner(*inputs).float()
                noisy, level, base = inputs[:3]
                feats_in, (lr_up, msi) = list(inputs[3:3 + count]), inputs[3 + count:]
                x0 = self.inner.denoise(noisy, level, base, feats_in)
                return (x0.float(), *(f.float() for f in self.inner.condition(lr_up, msi)))

    return Graph(model)


def export_model(model, export_info: dict, out_path: str | os.PathLike, fp16: bool = False, example_size: int | None = None,
                 check: bool = True, split: bool = True) -> Path:
    """Export ``model`` (a CDFormer in eval mode) with the metadata built from ``export_info``.

    ``example_size`` is the side of the example input used for tracing (default 2 windows);
    ``split``: the split graph layout (module docstring), else the fused one. Returns the written path.
    """
    import copy
    import dataclasses

    import onnx
    import torch

    out_path = Path(out_path)
    if not out_path.parent.exists():
        raise FileNotFoundError(f"{out_path}: the output folder {out_path.parent} does not exist")
    meta = ModelMetadata.from_export_info(export_info, precision="float16" if fp16 else "float32")
    mult = int(getattr(model, "spatial_multiple", meta.spatial_multiple))
    if mult != meta.spatial_multiple:
        raise ValueError(f"the model's spatial_multiple ({mult}) differs from export_info's ({meta.spatial_multiple})")
    if split:
        meta = dataclasses.replace(meta, graph="split", features=model.feature_count, width=int(model.cfg.width))
    model = _graph_module(copy.deepcopy(model).cpu().float().eval(), split, fp16).eval()
    side = int(example_size or 2 * mult)
    n = 2
    g = torch.Generator().manual_seed(0)
    image = {"noisy": meta.hsi_bands, "lr_up": meta.hsi_bands, "base": meta.hsi_bands, "msi": meta.msi_bands}
    f_in, f_out = feature_names(meta.features)
    image.update({k: meta.width for k in f_in + f_out})
    input_names, output_names = graph_names(meta.graph, meta.features)
    example = tuple(torch.rand(n, generator=g) if k == "noise_level" else torch.randn(n, image[k], side, side, generator=g)
                    for k in input_names)
    # The two parts of a split graph get their own dimension names: ORT plans memory assuming that
    # equal names are equal sizes, and each run feeds placeholders of another size to one part.
    cond = set(CONDITION_INPUTS) | set(f_out) if split else set()
    axes = {}
    for k in input_names + output_names:
        p = "c_" if k in cond else ""
        axes[k] = {0: "batch"} if k == "noise_level" else {0: f"{p}batch", 2: f"{p}height", 3: f"{p}width"}
    with _partial(out_path) as tmp:
        with torch.no_grad(), warnings.catch_warnings():
            # dynamo=False is deliberate (the TorchScript exporter handles the dynamic window shapes).
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(model, example, str(tmp), input_names=input_names, output_names=output_names,
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
    log.info("exported %s -> %s", meta.describe(), out_path)
    return out_path


def update_metadata(path: str | os.PathLike, **fields) -> Path:
    """Rewrite fields of an exported model's metadata in place (e.g. ``uncertainty_scale``), graph untouched.

    The document is validated as :class:`~export.metadata.ModelMetadata`; the file is replaced atomically.
    """
    import dataclasses

    import onnx

    path = Path(path)
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    if METADATA_KEY not in props:
        raise ValueError(f"{path}: not an hsr-diff model (no '{METADATA_KEY}' metadata)")
    meta = dataclasses.replace(ModelMetadata.from_json(props[METADATA_KEY]), **fields)
    props[METADATA_KEY] = meta.to_json()
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)
    with _partial(path) as tmp:
        onnx.save(proto, str(tmp))
        os.replace(tmp, path)
    return path


@contextlib.contextmanager
def _partial(path: Path):
    """A temporary name beside ``path`` for a file being written; removed if the block fails."""
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


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


def export_checkpoint(ckpt_dir: str | os.PathLike, out_path: str | os.PathLike, fp16: bool = False, split: bool = True,
                      uncertainty_scale: float | None = None) -> Path:
    """Export a training checkpoint folder (or run directory) with its EMA weights, or re-export an hsr-diff
    ``.onnx`` file (its weights recovered by :func:`export.from_onnx.cdformer_from_onnx`, its metadata kept), e.g.
    to change its graph layout.

    ``uncertainty_scale``: the calibration factor of the samples' spread to store (``bench/diffusion.py``).
    """
    if Path(ckpt_dir).is_file() and Path(ckpt_dir).suffix == ".onnx":
        from .from_onnx import cdformer_from_onnx

        model, info = cdformer_from_onnx(ckpt_dir)
    else:
        from core.training.checkpoint import load_for_export

        model, info = load_for_export(ckpt_dir)
    if uncertainty_scale is not None:
        info = {**info, "uncertainty_scale": float(uncertainty_scale)}
    return export_model(model, info, out_path, fp16=fp16, split=split)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export.onnx_export", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="checkpoint folder or run directory, or an hsr-diff .onnx file to re-export")
    ap.add_argument("out", help="output .onnx path")
    ap.add_argument("--fp16", action="store_true", help="also write a float16 variant next to it (<out>.fp16.onnx)")
    ap.add_argument("--fused", action="store_true", help="one graph for both streams (features recomputed at every step)")
    ap.add_argument("--uncertainty-scale", type=float, default=None, help="calibration factor of the samples' spread")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    opts = dict(split=not args.fused, uncertainty_scale=args.uncertainty_scale)
    try:
        print(export_checkpoint(args.checkpoint, args.out, **opts))
        if args.fp16:
            out = Path(args.out)
            print(export_checkpoint(args.checkpoint, out.with_name(out.stem + ".fp16.onnx"), fp16=True, **opts))
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
