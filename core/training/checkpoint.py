"""Checkpoint folders of a training run (see docs/ARCHITECTURE.md, "Checkpoints and export").

A run directory holds ``checkpoints/step_XXXXXXXX/`` folders and a ``latest`` text file naming the
newest one.  Each checkpoint folder has

* ``config.json`` - the full training config (model config included),
* ``model.safetensors`` - the raw weights, ``ema.safetensors`` - the EMA weights (same keys),
* ``optimizer.pt`` - optimizer, LR-schedule and AMP-scaler state (``torch.save``; read back with
  ``torch.load(weights_only=True)``),
* ``state.json`` - step, wall time and the python/numpy/torch(/cuda) RNG states, so that a resumed
  run is bit-identical to an uninterrupted one,
* ``export_info.json`` - everything an exporter needs (keys listed in ARCHITECTURE.md).

Writes are atomic: the folder is written under a temporary name in the same directory, then
renamed; ``latest`` is replaced with ``os.replace``.  A kill at any moment leaves either the old
or the new checkpoint, never a half-written one.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import uuid
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

__all__ = [
    "save_checkpoint",
    "resolve_checkpoint",
    "load_checkpoint",
    "load_for_export",
    "rng_state",
    "set_rng_state",
    "EXPORT_INFO_KEYS",
    "ResumeMismatch",
    "run_signature",
    "signature_differences",
    "describe_differences",
]

EXPORT_INFO_KEYS = (
    "preset",
    "model_config",
    "hsi_bands",
    "msi_bands",
    "scale",
    "wavelengths_nm",
    "fwhm_nm",
    "msi_band_names",
    "srf",
    "psf_sigma",
    "normalization",
    "schedule",
    "spatial_multiple",
    "training",
    "validation",
)


class ResumeMismatch(ValueError):
    """A run folder's checkpoint was trained with settings its weights depend on that the new config changes."""


def run_signature(export_info: dict) -> dict:
    """The settings a checkpoint's weights depend on, flat: ``{"data.scale": 4, "hsi_bands": 31, "model.width": 32, ...}``.

    Scale, data mode and conditioning base, band counts and layout (kept band indices of the input, its
    band count, wavelengths in nm, MSI band names), model preset and every architecture key of the model
    config (``head_init_gain`` only shapes the initial weights and is left out).  Values are as JSON
    stores them, so a signature read back from ``export_info.json`` compares equal to a fresh one.
    """
    data = (export_info.get("training") or {}).get("data") or {}
    sig = {
        "data.mode": data.get("mode"),
        "data.scale": export_info.get("scale"),
        "data.base": data.get("base", "bicubic") if data else None,
        "hsi_bands": export_info.get("hsi_bands"),
        "msi_bands": export_info.get("msi_bands"),
        "data.input_bands": data.get("input_bands"),
        "data.band_indices": data.get("band_indices"),
        "wavelengths_nm": export_info.get("wavelengths_nm"),
        "msi_band_names": export_info.get("msi_band_names"),
        "preset": export_info.get("preset"),
    }
    for k, v in (export_info.get("model_config") or {}).items():
        if k not in ("hsi_bands", "msi_bands", "preset", "head_init_gain"):
            sig[f"model.{k}"] = v
    return json.loads(json.dumps({k: v for k, v in sig.items() if v is not None}))


def signature_differences(old: dict, new: dict) -> dict[str, tuple]:
    """``{key: (old value, new value)}`` for the :func:`run_signature` keys that differ; keys absent from ``old``
    (a checkpoint written before the key existed) are not compared."""
    return {k: (old[k], new.get(k)) for k in old if old[k] != new.get(k)}


def _short(value, limit: int = 60) -> str:
    text = json.dumps(value)
    if len(text) <= limit or not isinstance(value, list):
        return text
    return f"{json.dumps(value[:3])[:-1]}, ... ({len(value)} values)]"


def _difference(key: str, old, new) -> str:
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new) and len(_short(old)) < len(json.dumps(old)):
        at = [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]
        return f"{key}: {len(at)} of {len(old)} values differ, first at index {at[0]}: {_short(old[at[0]])} -> {_short(new[at[0]])}"
    return f"{key}: {_short(old)} -> {_short(new)}"


def describe_differences(diff: dict[str, tuple]) -> str:
    """``"data.scale: 4 -> 3; model.width: 16 -> 24"``; long lists are shortened (first values and length, or
    where two of the same length first differ)."""
    return "; ".join(_difference(k, a, b) for k, (a, b) in diff.items())


def _tensor_to_b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _b64_to_tensor(s: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype=np.uint8).copy())


def rng_state(np_rng: np.random.Generator | None = None) -> dict:
    """JSON-able RNG states of python, numpy (global and ``np_rng``), torch and CUDA."""
    py = random.getstate()
    st = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy_global": _np_legacy_state(),
        "torch": _tensor_to_b64(torch.get_rng_state()),
        "cuda": [_tensor_to_b64(s) for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }
    if np_rng is not None:
        st["numpy_generator"] = np_rng.bit_generator.state
    return st


def _np_legacy_state() -> list:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]


def set_rng_state(st: dict, np_rng: np.random.Generator | None = None) -> None:
    """Restore what :func:`rng_state` saved (``np_rng`` is updated in place)."""
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = st["numpy_global"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_b64_to_tensor(st["torch"]))
    if st.get("cuda") and torch.cuda.is_available():
        states = [_b64_to_tensor(s) for s in st["cuda"]]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    if np_rng is not None and "numpy_generator" in st:
        np_rng.bit_generator.state = st["numpy_generator"]


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True))


def _contiguous(sd: dict) -> dict:
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model_state: dict,
    ema_state: dict,
    optimizer_state: dict,
    train_config: dict,
    state: dict,
    export_info: dict,
    keep: int = 2,
) -> Path:
    """Write ``run_dir/checkpoints/step_<step>`` atomically, point ``latest`` at it, prune old ones."""
    missing = [k for k in EXPORT_INFO_KEYS if k not in export_info]
    if missing:
        raise ValueError(f"export_info lacks {missing}")
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    final = root / name
    tmp = root / f".tmp_{name}_{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        save_file(_contiguous(model_state), str(tmp / "model.safetensors"))
        save_file(_contiguous(ema_state), str(tmp / "ema.safetensors"))
        torch.save(optimizer_state, tmp / "optimizer.pt")
        _write_json(tmp / "config.json", train_config)
        _write_json(tmp / "state.json", {"step": int(step), **state})
        _write_json(tmp / "export_info.json", export_info)
        for f in tmp.iterdir():  # flush before the rename makes it visible
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():  # re-saving the same step (e.g. final save after a periodic one)
            old = root / f".old_{name}_{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    latest_tmp = Path(run_dir) / f".latest_{uuid.uuid4().hex[:8]}"
    latest_tmp.write_text(name + "\n")
    os.replace(latest_tmp, Path(run_dir) / "latest")
    steps = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_"))
    for p in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
    for p in root.iterdir():  # leftovers of killed writes
        if p.name.startswith((".tmp_", ".old_")):
            shutil.rmtree(p, ignore_errors=True)
    return final


def resolve_checkpoint(folder: str | Path) -> Path:
    """A checkpoint folder itself, or a run directory (follows its ``latest`` file)."""
    folder = Path(folder)
    if (folder / "export_info.json").exists():
        return folder
    latest = folder / "latest"
    if latest.exists():
        return folder / "checkpoints" / latest.read_text().strip()
    raise FileNotFoundError(f"{folder} is neither a checkpoint folder nor a run directory with a 'latest' file")


def load_checkpoint(folder: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Everything in a checkpoint folder: ``model``, ``ema`` (state dicts), ``optimizer`` (dict),
    ``config``, ``state``, ``export_info`` and ``path``."""
    folder = resolve_checkpoint(folder)
    return {
        "path": folder,
        "model": load_file(str(folder / "model.safetensors"), device=str(map_location)),
        "ema": load_file(str(folder / "ema.safetensors"), device=str(map_location)),
        "optimizer": torch.load(folder / "optimizer.pt", map_location=map_location, weights_only=True),
        "config": json.loads((folder / "config.json").read_text()),
        "state": json.loads((folder / "state.json").read_text()),
        "export_info": json.loads((folder / "export_info.json").read_text()),
    }


def load_for_export(folder: str | Path):
    """``(model with EMA weights in eval mode on CPU, export_info dict)``.

    ``folder`` is a checkpoint folder or a run directory (its latest checkpoint).
    """
    from core.model import CDFormer

    folder = resolve_checkpoint(folder)
    info = json.loads((folder / "export_info.json").read_text())
    model = CDFormer(dict(info["model_config"]))
    model.load_state_dict(load_file(str(folder / "ema.safetensors"), device="cpu"), strict=True)
    model.eval()
    return model, info
