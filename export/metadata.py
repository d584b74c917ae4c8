"""What an exported HSR-Diff model knows about itself, stored inside the ONNX file.

Export writes one JSON document under the ``metadata_props`` key :data:`METADATA_KEY`; the
sampler, the CLI and the plugin read it back with :func:`read_metadata`, which needs neither
``onnx`` nor ``onnxruntime``: it walks the protobuf wire format of the ``ModelProto`` and seeks
past the graph (the weights) without reading it, so a 100 MB model costs a few reads.
An ``onnxruntime.InferenceSession`` that is already open can be asked with
:func:`metadata_from_session` instead.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from core.conditioning import BASES
from core.normalization import BandNormalization
from core.schedule import NoiseSchedule

__all__ = [
    "FORMAT_VERSION",
    "METADATA_KEY",
    "INPUT_NAMES",
    "OUTPUT_NAME",
    "GRAPHS",
    "graph_names",
    "CONDITION_INPUTS",
    "STEP_INPUTS",
    "feature_names",
    "ModelFileError",
    "ModelMetadata",
    "read_metadata",
    "metadata_from_session",
]

FORMAT_VERSION = 1
METADATA_KEY = "hsr_diff"
INPUT_NAMES = ("noisy", "noise_level", "lr_up", "msi")
OUTPUT_NAME = "x0"
GRAPHS = ("fused", "split")
"""Graph layouts. ``fused``: ``(noisy, noise_level, lr_up, msi) -> x0``, both streams at every step.
``split``: two disjoint parts in one graph, the conditioning stream ``(lr_up, msi) -> features_k`` and
one denoising step ``(noisy, noise_level, base, features_in_k) -> x0`` (``base`` is ``lr_up`` again),
so the features are computed once per tile; a run feeds small placeholders to the part it skips."""
STEP_INPUTS = ("noisy", "noise_level", "base")
CONDITION_INPUTS = ("lr_up", "msi")


def feature_names(count: int) -> tuple[list[str], list[str]]:
    """The split graph's feature inputs of the step part and outputs of the conditioning part."""
    return [f"features_in_{k}" for k in range(count)], [f"features_{k}" for k in range(count)]


def graph_names(graph: str, features: int = 0) -> tuple[list[str], list[str]]:
    """``(inputs, outputs)`` of a graph layout (:data:`GRAPHS`) with ``features`` feature tensors."""
    if graph == "fused":
        return list(INPUT_NAMES), [OUTPUT_NAME]
    f_in, f_out = feature_names(features)
    return [*STEP_INPUTS, *f_in, *CONDITION_INPUTS], [OUTPUT_NAME, *f_out]


class ModelFileError(ValueError):
    """A model file is missing, corrupt, foreign or inconsistent; the message names the file."""


def _floats(v) -> list[float] | None:
    if v is None:
        return None
    return [float(x) for x in np.asarray(v, dtype=np.float64).reshape(-1)]


@dataclass
class ModelMetadata:
    """Band, sensor, normalisation and schedule description of one exported denoiser."""

    hsi_bands: int
    msi_bands: int
    scale: int
    hsi_normalization: BandNormalization
    msi_normalization: BandNormalization
    schedule: NoiseSchedule
    spatial_multiple: int
    wavelengths_nm: list[float] | None = None
    fwhm_nm: list[float] | None = None
    msi_band_names: list[str] | None = None
    srf: list[list[float]] | None = None  # (msi_bands, hsi_bands)
    psf_sigma: float | None = None
    preset: str = "custom"
    model_config: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)
    precision: str = "float32"  # dtype of the graph's inputs/outputs: "float32" or "float16"
    format_version: int = FORMAT_VERSION
    # The sensor's full band count and the 0-based bands the model uses (training drops bad bands,
    # e.g. EnMAP's water-vapour bands: 218 of 224). None = the model takes every band of its input.
    input_bands: int | None = None
    band_indices: list[int] | None = None
    # The conditioning image the model was trained on (core.conditioning.BASES).
    base: str = "bicubic"
    graph: str = "fused"  # GRAPHS
    features: int = 0  # tensors between the split graph's two parts (CDFormer.feature_count)
    width: int = 0  # channels of each feature tensor
    # The factor k and the activity weight c that turn the spread of the samples into a calibrated standard
    # deviation of the error (core.uncertainty; fitted on training pixels by bench/diffusion.py); 1 and 0 =
    # the raw spread.
    uncertainty_scale: float = 1.0
    uncertainty_activity: float = 0.0

    def __post_init__(self) -> None:
        self.hsi_bands, self.msi_bands = int(self.hsi_bands), int(self.msi_bands)
        self.scale, self.spatial_multiple = int(self.scale), int(self.spatial_multiple)
        self.wavelengths_nm, self.fwhm_nm = _floats(self.wavelengths_nm), _floats(self.fwhm_nm)
        if self.srf is not None:
            self.srf = np.asarray(self.srf, dtype=np.float64).tolist()
        if self.psf_sigma is not None:
            self.psf_sigma = float(self.psf_sigma)
        if self.band_indices is not None:
            self.band_indices = [int(i) for i in self.band_indices]
        if self.input_bands is not None:
            self.input_bands = int(self.input_bands)
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ``ValueError`` when the parts disagree with each other."""
        problems = []
        if self.hsi_bands < 1 or self.msi_bands < 1:
            problems.append(f"band counts must be positive (hsi {self.hsi_bands}, msi {self.msi_bands})")
        if self.scale < 1:
            problems.append(f"scale must be a positive integer, got {self.scale}")
        if self.spatial_multiple < 1:
            problems.append(f"spatial_multiple must be positive, got {self.spatial_multiple}")
        if self.hsi_normalization.bands != self.hsi_bands:
            problems.append(f"HSI normalisation has {self.hsi_normalization.bands} bands, model has {self.hsi_bands}")
        if self.msi_normalization.bands != self.msi_bands:
            problems.append(f"MSI normalisation has {self.msi_normalization.bands} bands, model has {self.msi_bands}")
        for name, seq, n in (("wavelengths_nm", self.wavelengths_nm, self.hsi_bands), ("fwhm_nm", self.fwhm_nm, self.hsi_bands),
                             ("msi_band_names", self.msi_band_names, self.msi_bands)):
            if seq is not None and len(seq) != n:
                problems.append(f"{name} has {len(seq)} entries for {n} bands")
        if self.srf is not None:
            shape = np.asarray(self.srf).shape
            if shape != (self.msi_bands, self.hsi_bands):
                problems.append(f"srf is {shape}, expected ({self.msi_bands}, {self.hsi_bands})")
        if self.band_indices is not None:
            idx = self.band_indices
            if len(idx) != self.hsi_bands or len(set(idx)) != len(idx) or min(idx) < 0:
                problems.append(f"band_indices must list {self.hsi_bands} distinct non-negative band numbers")
            elif self.input_bands is not None and max(idx) >= self.input_bands:
                problems.append(f"band_indices go up to {max(idx)} but the input has {self.input_bands} bands")
        if self.base not in BASES:
            problems.append(f"unknown conditioning base {self.base!r} (this code knows {', '.join(BASES)})")
        if self.graph not in GRAPHS:
            problems.append(f"unknown graph layout {self.graph!r} (this code knows {', '.join(GRAPHS)})")
        elif self.graph == "split" and (self.features < 1 or self.width < 1):
            problems.append(f"a split graph needs features >= 1 and width >= 1 (got {self.features}, {self.width})")
        if not self.uncertainty_scale > 0:
            problems.append(f"uncertainty_scale must be positive, got {self.uncertainty_scale}")
        if not self.uncertainty_activity >= 0:
            problems.append(f"uncertainty_activity must be >= 0, got {self.uncertainty_activity}")
        if self.precision not in ("float32", "float16"):
            problems.append(f"precision must be float32 or float16, got {self.precision!r}")
        if problems:
            raise ValueError("inconsistent model metadata: " + "; ".join(problems))

    # ------------------------------------------------------------------ conversions
    @property
    def srf_matrix(self) -> np.ndarray | None:
        return None if self.srf is None else np.asarray(self.srf, dtype=np.float64)

    def to_dict(self) -> dict:
        return {
            "format": "hsr-diff-model",
            "format_version": self.format_version,
            "hsi_bands": self.hsi_bands,
            "msi_bands": self.msi_bands,
            "scale": self.scale,
            "wavelengths_nm": self.wavelengths_nm,
            "fwhm_nm": self.fwhm_nm,
            "msi_band_names": self.msi_band_names,
            "srf": self.srf,
            "psf_sigma": self.psf_sigma,
            "normalization": {"hsi": self.hsi_normalization.to_dict(), "msi": self.msi_normalization.to_dict()},
            "schedule": self.schedule.to_dict(),
            "spatial_multiple": self.spatial_multiple,
            "preset": self.preset,
            "model_config": self.model_config,
            "training": self.training,
            "validation": self.validation,
            "precision": self.precision,
            "input_bands": self.input_bands,
            "band_indices": self.band_indices,
            "base": self.base,
            "graph": self.graph,
            "features": self.features,
            "width": self.width,
            "uncertainty_scale": self.uncertainty_scale,
            "uncertainty_activity": self.uncertainty_activity,
            "inputs": graph_names(self.graph, self.features)[0],
            "output": OUTPUT_NAME,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ModelMetadata:
        version = int(d.get("format_version", 0))
        if version < 1 or version > FORMAT_VERSION:
            raise ValueError(f"model metadata format version {version} is not supported (this code reads 1..{FORMAT_VERSION}); "
                             "update hsr-diff or re-export the model")
        norm = d["normalization"]
        return cls(
            hsi_bands=d["hsi_bands"],
            msi_bands=d["msi_bands"],
            scale=d["scale"],
            hsi_normalization=BandNormalization.from_dict(norm["hsi"]),
            msi_normalization=BandNormalization.from_dict(norm["msi"]),
            schedule=NoiseSchedule.from_dict(d["schedule"]),
            spatial_multiple=d["spatial_multiple"],
            wavelengths_nm=d.get("wavelengths_nm"),
            fwhm_nm=d.get("fwhm_nm"),
            msi_band_names=d.get("msi_band_names"),
            srf=d.get("srf"),
            psf_sigma=d.get("psf_sigma"),
            preset=d.get("preset", "custom"),
            model_config=dict(d.get("model_config") or {}),
            training=dict(d.get("training") or {}),
            validation=dict(d.get("validation") or {}),
            precision=d.get("precision", "float32"),
            format_version=version,
            input_bands=d.get("input_bands"),
            band_indices=d.get("band_indices"),
            base=d.get("base", "bicubic"),
            graph=d.get("graph", "fused"),
            features=int(d.get("features", 0)),
            width=int(d.get("width", 0)),
            uncertainty_scale=float(d.get("uncertainty_scale", 1.0)),
            uncertainty_activity=float(d.get("uncertainty_activity", 0.0)),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> ModelMetadata:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_export_info(cls, info: dict, precision: str = "float32") -> ModelMetadata:
        """Build from a checkpoint's ``export_info.json`` dict (docs/ARCHITECTURE.md)."""
        norm = info["normalization"]
        data = (info.get("training") or {}).get("data")
        data = data if isinstance(data, dict) else {}
        return cls(
            hsi_bands=info["hsi_bands"],
            msi_bands=info["msi_bands"],
            scale=info["scale"],
            hsi_normalization=BandNormalization.from_dict(norm["hsi"]),
            msi_normalization=BandNormalization.from_dict(norm["msi"]),
            schedule=NoiseSchedule.from_dict(info["schedule"]),
            spatial_multiple=info["spatial_multiple"],
            wavelengths_nm=info.get("wavelengths_nm"),
            fwhm_nm=info.get("fwhm_nm"),
            msi_band_names=info.get("msi_band_names"),
            srf=info.get("srf"),
            psf_sigma=info.get("psf_sigma"),
            preset=info.get("preset", "custom"),
            model_config=dict(info.get("model_config") or {}),
            training=dict(info.get("training") or {}),
            validation=dict(info.get("validation") or {}),
            precision=precision,
            input_bands=info.get("input_bands", data.get("input_bands")),
            band_indices=info.get("band_indices", data.get("band_indices")),
            base=info.get("base", data.get("base", "bicubic")),
            uncertainty_scale=float(info.get("uncertainty_scale", 1.0)),
            uncertainty_activity=float(info.get("uncertainty_activity", 0.0)),
        )

    def input_selection(self, n_bands: int) -> list[int] | None:
        """Bands to read from an ``n_bands`` LR-HSI for this model: None = all, else 0-based indices.

        Raises ``ValueError`` when neither the model's band count nor its full-sensor layout fits.
        """
        if n_bands == self.hsi_bands:
            return None
        if self.band_indices is not None and self.input_bands in (None, n_bands) and max(self.band_indices) < n_bands:
            return list(self.band_indices)
        full = f" (or {self.input_bands} with its bad bands)" if self.input_bands and self.input_bands != self.hsi_bands else ""
        raise ValueError(f"{n_bands} bands given, the model takes {self.hsi_bands}{full}")

    def describe(self) -> str:
        """One line for logs and the plugin."""
        wl = ""
        if self.wavelengths_nm:
            wl = f" ({self.wavelengths_nm[0]:.0f}-{self.wavelengths_nm[-1]:.0f} nm)"
        used = f" (of {self.input_bands})" if self.input_bands and self.input_bands != self.hsi_bands else ""
        base = "" if self.base == "bicubic" else f", residual on {self.base}"
        variable = ", diffusing the residual" if self.schedule.variable == "residual" else ""
        return (f"HSR-Diff {self.preset} model: {self.hsi_bands}{used} HSI bands{wl}, {self.msi_bands} MSI bands, scale {self.scale}, "
                f"{self.precision}, schedule T={self.schedule.steps}{base}{variable}, {self.graph} graph")


# ---------------------------------------------------------------------- reading from a file

# ModelProto (onnx.proto3): ir_version = 1, graph = 7, metadata_props = 14; numbers up to 63 are
# accepted so that fields added by later ONNX versions do not break the reader.
_MAX_FIELD, _IR_VERSION_FIELD, _GRAPH_FIELD, _METADATA_PROPS_FIELD = 63, 1, 7, 14


class _WireError(Exception):
    pass


def _read_varint(f) -> int | None:
    """Next varint from a file; None at a clean end of file."""
    shift = result = 0
    while True:
        b = f.read(1)
        if not b:
            if shift == 0:
                return None
            raise _WireError("truncated varint")
        result |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise _WireError("varint too long")


def _varint_from(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(buf):
            raise _WireError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _WireError("varint too long")


def _string_entry(buf: bytes) -> tuple[str, str]:
    """Decode a ``StringStringEntryProto`` (key = 1, value = 2)."""
    key = value = ""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint_from(buf, pos)
        field_no, wire = tag >> 3, tag & 7
        if wire == 2:
            n, pos = _varint_from(buf, pos)
            if pos + n > len(buf):
                raise _WireError("truncated metadata entry")
            data = buf[pos:pos + n]
            pos += n
            if field_no == 1:
                key = data.decode("utf-8")
            elif field_no == 2:
                value = data.decode("utf-8")
        elif wire == 0:
            _, pos = _varint_from(buf, pos)
        else:
            raise _WireError(f"unexpected wire type {wire} in a metadata entry")
    return key, value


def _scan_model_proto(path: str) -> tuple[dict[str, str], bool]:
    """``metadata_props`` of an ONNX ``ModelProto`` and whether it has a graph, seeking past the rest."""
    size = os.path.getsize(path)
    props: dict[str, str] = {}
    has_graph = has_ir = False
    seen_fields = 0
    with open(path, "rb") as f:
        while True:
            tag = _read_varint(f)
            if tag is None:
                break
            field_no, wire = tag >> 3, tag & 7
            if not 1 <= field_no <= _MAX_FIELD:
                raise _WireError(f"field {field_no} is not part of an ONNX ModelProto")
            has_ir |= field_no == _IR_VERSION_FIELD
            if wire == 0:
                if _read_varint(f) is None:
                    raise _WireError("truncated")
            elif wire == 2:
                n = _read_varint(f)
                if n is None or f.tell() + n > size:
                    raise _WireError("a length runs past the end of the file")
                if field_no == _METADATA_PROPS_FIELD:
                    k, v = _string_entry(f.read(n))
                    props[k] = v
                else:
                    has_graph |= field_no == _GRAPH_FIELD
                    f.seek(n, os.SEEK_CUR)
            elif wire == 1:
                f.seek(8, os.SEEK_CUR)
            elif wire == 5:
                f.seek(4, os.SEEK_CUR)
            else:
                raise _WireError(f"wire type {wire}")
            seen_fields += 1
    if seen_fields == 0:
        raise _WireError("empty file")
    return props, has_graph and has_ir


def _parse(props: dict[str, str], path: str) -> ModelMetadata:
    text = props.get(METADATA_KEY)
    if text is None:
        keys = ", ".join(sorted(props)) or "none"
        raise ModelFileError(f"{path}: an ONNX model, but not one exported by hsr-diff (no '{METADATA_KEY}' metadata; "
                             f"metadata keys present: {keys}); export a checkpoint with `python -m export.onnx_export`")
    try:
        return ModelMetadata.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{path}: the hsr-diff metadata is unreadable or inconsistent "
                             f"({type(exc).__name__}: {exc})") from exc


def read_metadata(onnx_path: str | os.PathLike) -> ModelMetadata:
    """The :class:`ModelMetadata` embedded in an exported ``.onnx`` file, without loading the weights.

    Raises :class:`ModelFileError` naming the file when it is missing, not an ONNX model
    (corrupt or another format), or an ONNX model not exported by hsr-diff.
    """
    path = os.fspath(onnx_path)
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such model file")
    try:
        props, has_graph = _scan_model_proto(path)
    except (_WireError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: not a valid ONNX model file (corrupt, truncated or another format: {exc})") from exc
    if not has_graph:
        raise ModelFileError(f"{path}: not a valid ONNX model file (no IR version or no graph)")
    return _parse(props, path)


def metadata_from_session(session, path: str = "<session>") -> ModelMetadata:
    """The :class:`ModelMetadata` of an open ``onnxruntime.InferenceSession``."""
    props = dict(session.get_modelmeta().custom_metadata_map)
    return _parse(props, path)
