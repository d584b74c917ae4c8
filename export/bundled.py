"""The models shipped with hsr-diff, and the choice of the one that fits a pair (by its metadata).

Bundled models live in ``models/`` beside ``export/`` (the source checkout) or inside the plugin
folder (the installed zip holds ``models/`` next to ``export/``).
"""

from __future__ import annotations

import os
from pathlib import Path

from core.pairing import check_pair
from core.raster_io import read_meta

from .inputs import InputMismatch, InputPlan, match_bands
from .metadata import ModelFileError, ModelMetadata, read_metadata

__all__ = ["MODELS_DIR", "NoModelFits", "bundled_models", "model_fits", "choose_model"]

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


class NoModelFits(ValueError):
    """No model fits the pair; the message lists what the pair needs and what each model offers."""


def bundled_models(models_dir: str | os.PathLike | None = None) -> list[Path]:
    """Float32 ``.onnx`` files in the models folder, sorted by name."""
    d = Path(models_dir) if models_dir else MODELS_DIR
    return sorted(p for p in d.glob("*.onnx") if not p.name.endswith(".fp16.onnx"))


def model_fits(md: ModelMetadata, hsi_bands: int, msi_bands: int, scale: int, msi_names: list[str] | None = None,
               msi_wavelengths=None) -> str | None:
    """None when the model can take the pair, else why not (one line): the bands and scale part of
    :func:`export.inputs.match_bands`, with the MSI bands' names and wavelengths when known."""
    try:
        match_bands(md, hsi_bands, msi_bands, scale, msi_names, msi_wavelengths)
    except InputMismatch as exc:
        return exc.reason
    return None


def choose_model(lr_path, msi_path, model: str | os.PathLike | None = None, models_dir: str | os.PathLike | None = None,
                 lr_name: str | None = None, msi_name: str | None = None) -> tuple[Path, ModelMetadata]:
    """``model`` if given (checked against the pair), else the first bundled model that fits.

    Fitting is :func:`export.inputs.match_bands` (the check every run goes through): a model whose MSI
    bands match the layer's by name or wavelength is preferred to one that takes them by position.
    Raises :class:`NoModelFits` (or ``ModelFileError`` for an unreadable ``model``) with the reason.
    """
    lm, mm = read_meta(lr_path), read_meta(msi_path)
    scale = check_pair(lr_path, msi_path, lr_name, msi_name).scale
    what = f"{lm.bands} HSI bands, {mm.bands} MSI bands ({', '.join(mm.band_names)}), scale {scale}"
    layers = (f"LR-HSI layer '{lr_name or Path(lr_path).name}' / HR-MSI layer '{msi_name or Path(msi_path).name}'")

    def fit(md: ModelMetadata) -> InputPlan:
        return match_bands(md, lm.bands, mm.bands, scale, mm.band_names, mm.wavelengths)

    if model:
        md = read_metadata(model)
        try:
            fit(md)
        except InputMismatch as exc:
            raise NoModelFits(f"model '{Path(model).name}' does not fit {layers} ({what}): {exc.reason}") from None
        return Path(model), md
    rejected, by_position = [], None
    for path in bundled_models(models_dir):
        try:
            md = read_metadata(path)
        except ModelFileError as exc:
            rejected.append(f"  {path.name}: {exc}")
            continue
        try:
            plan = fit(md)
        except InputMismatch as exc:
            rejected.append(f"  {path.name}: {exc.reason}")
            continue
        if plan.msi_match != "position":
            return path, md
        by_position = by_position or (path, md)
    if by_position is not None:
        return by_position
    where = Path(models_dir) if models_dir else MODELS_DIR
    found = "\n".join(rejected) if rejected else "  (no .onnx file there)"
    raise NoModelFits(f"no bundled model in {where} fits {layers} ({what}); train one with 'Train HSR-Diff model' "
                      f"or choose a model file. Bundled models:\n{found}")
