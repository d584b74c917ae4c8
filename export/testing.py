"""Helpers for tests and benchmarks: genuine small ONNX models and real georeferenced pairs.

Not used at inference time. :func:`contract_model` needs the ``onnx`` package,
:func:`export_untrained` needs torch, :func:`make_enmap_pair` needs GDAL.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from core.normalization import BandNormalization
from core.schedule import NoiseSchedule

from .metadata import METADATA_KEY, ModelMetadata

__all__ = ["make_metadata", "contract_model", "export_untrained", "make_enmap_pair", "make_shifted_pair"]

ENMAP = "enmap_potsdam_north.tif"


def make_metadata(hsi_bands: int, msi_bands: int, scale: int = 4, spatial_multiple: int = 8, **kw) -> ModelMetadata:
    """Metadata with a non-trivial normalisation (offsets 100..200, scale 50 for the HSI; 10, 5 for the MSI).

    That normalisation matches no real data: the input check (:mod:`export.inputs`) refuses real
    reflectance x 10000 against it, so tests on real files pass normalisations fitted on them.
    """
    hn = kw.pop("hsi_normalization", BandNormalization(np.linspace(100, 200, hsi_bands).astype(np.float32),
                                                       np.full(hsi_bands, 50, np.float32)))
    mn = kw.pop("msi_normalization", BandNormalization(np.full(msi_bands, 10, np.float32), np.full(msi_bands, 5, np.float32)))
    kw.setdefault("wavelengths_nm", np.linspace(400, 900, hsi_bands))
    kw.setdefault("msi_band_names", [f"B{i + 1}" for i in range(msi_bands)])
    return ModelMetadata(hsi_bands=hsi_bands, msi_bands=msi_bands, scale=scale, hsi_normalization=hn, msi_normalization=mn,
                         schedule=NoiseSchedule(), spatial_multiple=spatial_multiple, **kw)


def contract_model(path, metadata: ModelMetadata | None, hsi_bands: int | None = None, msi_bands: int | None = None,
                   key: str = METADATA_KEY, k_noisy: float = 0.5, k_msi: float = 0.1) -> Path:
    """Write a real, per-pixel ONNX denoiser that follows the contract.

    ``x0 = lr_up + k_noisy * noise_level * noisy + k_msi * mean_b(msi)``: every output pixel
    depends on that pixel's inputs only, so tiled and whole-image runs agree to rounding.
    ``metadata=None`` writes a foreign model (no hsr-diff metadata).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    c = hsi_bands or metadata.hsi_bands
    m = msi_bands or metadata.msi_bands

    def vi(name, bands):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", bands, "H", "W"])

    inputs = [vi("noisy", c), helper.make_tensor_value_info("noise_level", TensorProto.FLOAT, ["n"]), vi("lr_up", c),
              vi("msi", m)]
    inits = [numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes"),
             numpy_helper.from_array(np.array([k_noisy], np.float32), "k_noisy"),
             numpy_helper.from_array(np.array([k_msi], np.float32), "k_msi")]
    nodes = [helper.make_node("Unsqueeze", ["noise_level", "axes"], ["lvl"]),
             helper.make_node("Mul", ["noisy", "lvl"], ["nl"]),
             helper.make_node("Mul", ["nl", "k_noisy"], ["nl2"]),
             helper.make_node("ReduceMean", ["msi"], ["mm"], axes=[1], keepdims=1),
             helper.make_node("Mul", ["mm", "k_msi"], ["mm2"]),
             helper.make_node("Add", ["lr_up", "nl2"], ["s1"]),
             helper.make_node("Add", ["s1", "mm2"], ["x0"])]
    graph = helper.make_graph(nodes, "contract", inputs, [vi("x0", c)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata is not None:
        helper.set_model_props(model, {key: metadata.to_json()})
    onnx.checker.check_model(model)
    onnx.save(model, os.fspath(path))
    return Path(path)


def export_untrained(path, preset: str, hsi_bands: int, msi_bands: int, scale: int = 4, seed: int = 0, fp16: bool = False,
                     hsi_norm: BandNormalization | None = None, msi_norm: BandNormalization | None = None,
                     wavelengths_nm=None, split: bool = True, **overrides):
    """Build a randomly initialised CDFormer, export it (``split``: the split graph layout); returns ``(path, torch model)``."""
    import torch

    from core.model import build_model

    from .onnx_export import export_model, untrained_export_info

    torch.manual_seed(seed)
    model = build_model(preset, hsi_bands, msi_bands, **overrides).eval()
    if overrides.get("head_init_gain") is None:
        # Untrained heads are scaled by 0.1; make the denoising stream visible in the output.
        with torch.no_grad():
            model.head.weight.mul_(10.0)
    info = untrained_export_info(model, scale, hsi_norm, msi_norm, wavelengths_nm)
    return export_model(model, info, path, fp16=fp16, split=split), model


def make_enmap_pair(folder, shared_data, bands: list[int] | None = None, scale: int = 4, msi_bands: int = 4,
                    drop_lr_cols: int = 1, lr_nodata_pixel: tuple[int, int] | None = (2, 3),
                    msi_nodata_box: tuple[int, int, int, int] | None = (40, 50, 60, 70)) -> dict:
    """A real georeferenced LR-HSI / HR-MSI pair from the EnMAP Potsdam crop (EPSG:32633).

    The EnMAP crop (30 m) is the HR reference; the LR-HSI is its ``scale x scale`` block mean
    (``120 m`` for scale 4) keeping band names, wavelengths, FWHM, bbl and nodata; the MSI is
    ``msi_bands`` broad-band means of the reference at 30 m, starting ``drop_lr_cols`` LR pixels to
    the east (so the common area is smaller than the LR-HSI). One LR pixel and one MSI box are
    set to nodata. Returns paths, arrays and the expected common-area geotransform.
    """
    from core.raster_io import read_raster, subset_meta, write_raster

    folder = Path(folder)
    bands = bands if bands is not None else list(range(0, 224, 10)) + [130]
    hr, meta = read_raster(Path(shared_data) / ENMAP, bands=bands)
    meta = subset_meta(meta, bands)
    c, rows, cols = hr.shape
    rows, cols = rows // scale * scale, cols // scale * scale
    hr = hr[:, :rows, :cols]
    lr = hr.reshape(c, rows // scale, scale, cols // scale, scale).mean(axis=(2, 4)).astype(np.float32)
    if lr_nodata_pixel is not None:
        lr[:, lr_nodata_pixel[0], lr_nodata_pixel[1]] = np.nan
    good = np.flatnonzero(np.isfinite(hr).all(axis=(1, 2)))
    groups = np.array_split(good[: len(good) // msi_bands * msi_bands], msi_bands)
    msi = np.stack([hr[g].mean(axis=0) for g in groups]).astype(np.float32)
    if msi_nodata_box is not None:
        r0, r1, c0, c1 = msi_nodata_box
        msi[:, r0:r1, c0:c1] = np.nan
    gt = meta.geotransform
    px = gt[1] * scale
    lr_path = write_raster(folder / "lr.tif", lr, meta, geotransform=(gt[0], px, 0.0, gt[3], 0.0, -px))
    off = drop_lr_cols * scale
    msi_gt = (gt[0] + off * gt[1], gt[1], 0.0, gt[3], 0.0, gt[5])
    msi_path = write_raster(folder / "msi.tif", msi[:, :, off:], None, geotransform=msi_gt, crs_wkt=meta.crs_wkt,
                            nodata=-9999.0, band_names=[f"MSI {i + 1}" for i in range(msi_bands)])
    return {"lr": lr_path, "msi": msi_path, "lr_array": lr, "msi_array": msi[:, :, off:], "hr": hr, "meta": meta,
            "geotransform": msi_gt, "scale": scale, "drop_lr_cols": drop_lr_cols}


def make_shifted_pair(folder, shared_data, scale: int = 4, shift: tuple[float, float] = (0.75, -0.5),
                      msi_bands: tuple[str, ...] = ("B02", "B03", "B04", "B08")) -> dict:
    """A misregistered LR-HSI / HR-MSI pair from the EnMAP south-east crop (128 x 64 HR pixels, 224 bands).

    The LR-HSI is the crop degraded by a Gaussian PSF (FWHM = ``scale``) whose footprints sit ``shift =
    (dy, dx)`` HR pixels off their blocks' centres; the HR-MSI is its Sentinel-2 response (``msi_bands``).
    Returns the paths (``lr``, ``msi``), the reference ``hr`` and its ``good`` bands.
    """
    from core.raster_io import Window, read_raster, write_raster
    from core.sensor import degrade_spatial, degrade_spectral, gaussian_psf, spectral_response

    folder = Path(folder)
    cube, meta = read_raster(Path(shared_data) / "enmap_potsdam_southeast.tif")
    hr = np.nan_to_num(cube[:, :128, :64])
    gt = meta.window_geotransform(Window(0, 0, 64, 128))
    srf = spectral_response("sentinel2", meta.wavelengths, meta.fwhm, bands=list(msi_bands), valid_bands=meta.good_bands)
    lr = degrade_spatial(hr, scale, gaussian_psf(scale, None, shift))
    lr_p = write_raster(folder / "lr.tif", lr, meta, geotransform=(gt[0], gt[1] * scale, 0, gt[3], 0, gt[5] * scale))
    msi_p = write_raster(folder / "msi.tif", degrade_spectral(hr, srf), None, geotransform=gt, crs_wkt=meta.crs_wkt,
                         band_names=list(srf.band_names))
    return {"lr": lr_p, "msi": msi_p, "hr": hr, "good": meta.good_bands}
