"""The models shipped with hsr-diff, and the choice of the one that fits a pair (by its metadata).

Bundled models live in ``models/`` beside ``export/`` (the source checkout) or inside the plugin
folder (the installed zip holds ``models/`` next to ``export/``).
"""

from __future__ import annotations

import os
from pathlib import Path

from core.pairing import check_pair
from core.raster_io import read_meta

from .metadata import ModelFileError, ModelMetadata, read_metadata

__all__ = ["MODELS_DIR", "NoModelFits", "bundled_models", "model_fits", "choose_model"]

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


class NoModelFits(ValueError):
    """No model fits the pair; the message lists what the pair needs and what each model offers."""


def bundled_models(models_dir: str | os.PathLike | None = None) -> list[Path]:
    """Float32 ``.onnx`` files in the models folder, sorted by name."""
    d = Path(models_dir) if models_dir else MODELS_DIR
    return sorted(p for p in d.glob("*.onnx") if not p.name.endswith(".fp16.onnx"))


def model_fits(md: ModelMetadata, hsi_bands: int, msi_bands: int, scale: int, msi_names: list[str] | None = None) -> str | None:
    """None when the model can take the pair, else why not (one line)."""
    try:
        md.input_selection(hsi_bands)
    except ValueError as exc:
        return f"HSI bands: {exc}"
    if md.msi_bands != msi_bands:
        return f"MSI bands: {msi_bands} given, the model takes {md.msi_bands}"
    if md.scale != scale:
        return f"scale: the pair has {scale}, the model was trained for {md.scale}"
    generic = not msi_names or all(n.startswith("Band ") for n in msi_names)  # GDAL's default descriptions
    if md.msi_band_names and not generic and list(md.msi_band_names) != list(msi_names):
        return f"MSI bands {', '.join(msi_names)} given, the model takes {', '.join(md.msi_band_names)}"
    return None


def choose_model(lr_path, msi_path, model: str | os.PathLike | None = None, models_dir: str | os.PathLike | None = None,
                 lr_name: str | None = None, msi_name: str | None = None) -> tuple[Path, ModelMetadata]:
    """``model`` if given (checked against the pair), else the first bundled model that fits.

    Raises :class:`NoModelFits` (or ``ModelFileError`` for an unreadable ``model``) with the reason.
    """
    lm, mm = read_meta(lr_path), read_meta(msi_path)
    scale = check_pair(lr_path, msi_path, lr_name, msi_name).scale
    need = (lm.bands, mm.bands, scale, list(mm.band_names))
    what = f"{lm.bands} HSI bands, {mm.bands} MSI bands ({', '.join(mm.band_names)}), scale {scale}"
    layers = (f"LR-HSI layer '{lr_name or Path(lr_path).name}' / HR-MSI layer '{msi_name or Path(msi_path).name}'")
    if model:
        md = read_metadata(model)
        why = model_fits(md, *need)
        if why:
            raise NoModelFits(f"model '{Path(model).name}' does not fit {layers} ({what}): {why}")
        return Path(model), md
    rejected = []
    for path in bundled_models(models_dir):
        try:
            md = read_metadata(path)
        except ModelFileError as exc:
            rejected.append(f"  {path.name}: {exc}")
            continue
        why = model_fits(md, *need)
        if why is None:
            return path, md
        rejected.append(f"  {path.name}: {why}")
    where = Path(models_dir) if models_dir else MODELS_DIR
    found = "\n".join(rejected) if rejected else "  (no .onnx file there)"
    raise NoModelFits(f"no bundled model in {where} fits {layers} ({what}); train one with 'Train HSR-Diff model' "
                      f"or choose a model file. Bundled models:\n{found}")
