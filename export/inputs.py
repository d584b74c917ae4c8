"""The one input check of super-resolution: which bands of an LR-HSI / HR-MSI pair feed a model, in what units.

Every entry point goes through it: :func:`export.superresolve.superresolve` (and so the CLI,
:mod:`export.batch` and the plugin) calls :func:`plan_inputs`; :func:`export.bundled.model_fits` and
:func:`~export.bundled.choose_model` call :func:`match_bands`, its metadata-only part. The rules:

- **LR-HSI bands**: all of them when the layer has the model's band count, else the model's
  ``band_indices`` of its full sensor layout (e.g. 218 of EnMAP's 224).
- **HR-MSI bands**: matched to the model's ``msi_band_names`` by name (case, spaces and punctuation
  ignored: ``b_02`` is ``B02``, ``B2`` is not); else by centre wavelength (the layer's band wavelengths
  against the centres of the model's spectral response, mutual nearest within
  :func:`wavelength_tolerance`); else by position, with a warning, when the counts agree and no band
  name points to another position. A layer with more bands than the model gives it the matched ones.
- **Units**: each layer's 1st and 99th percentiles per band (valid pixels of a sample of windows over
  the common area, GDAL scale/offset and nodata applied) are set against the model's training range
  (its :class:`~core.normalization.BandNormalization`: ``offset -/+ scale`` are the training data's 1st and
  99th percentiles). The median over the bands of ``log10(layer / model)`` magnitudes must lie within
  :data:`TOLERANCE_DECADES` of 0 (the same units), -4 (x 10000: reflectance 0-1 for a model trained on
  reflectance x 10000) or +4 (/ 10000); anything else is refused with the numbers. Then a DN offset
  (Sentinel-2 L2A adds 1000 from processing baseline 04.00) is removed when the model's training data
  reach below half of it, while the layer's darkest band starts at 0.9 to 1.5 times it and every band
  sits at least 0.9 times it above the model's (so nothing in the layer is darker than the offset). A
  model with the identity normalisation (untrained) says nothing about units: not checked.
- **Wavelengths**: an LR-HSI without band wavelengths (or FWHM) gets the model's in the output,
  the bands the model does not use interpolated from their neighbours, with a note.

Values are brought into the model's units at read time (:class:`Affine`, float32) and the output is
written back in the LR-HSI's units (:meth:`InputPlan.output_sink`). Inputs already in the model's
bands and units give a plan that changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from core.normalization import BandNormalization
from core.pairing import PairGeometry
from core.raster_io import RasterMeta, RasterReader, Window

from .metadata import ModelMetadata

__all__ = [
    "InputMismatch",
    "Affine",
    "InputPlan",
    "TOLERANCE_DECADES",
    "DN_OFFSET",
    "match_bands",
    "plan_inputs",
    "layer_percentiles",
    "units_to_model",
    "msi_centres",
    "wavelength_tolerance",
]

TOLERANCE_DECADES = 1.5
"""How far (in powers of ten) a layer's magnitude may sit from the model's and still count as those units."""
FACTORS = {0: 1.0, -4: 1e4, 4: 1e-4}
"""Median log10(layer / model) magnitude -> the factor that brings the layer into the model's units."""
DN_OFFSET = 0.1
"""The DN offset that is recognised and removed, in reflectance (1000 in reflectance x 10000: Sentinel-2 L2A)."""
SAMPLE_GRID, SAMPLE_LR_PIXELS = 4, 24  # up to 4 x 4 windows of 24 x 24 LR pixels (and the MSI pixels over them)


class InputMismatch(ValueError):
    """The inputs do not fit the model (bands, scale, units); the message names the layer, the file and the numbers.

    ``reason`` is the same in one short line without the layer names (the bundled-model choice lists it per model).
    """

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


@dataclass(frozen=True)
class Affine:
    """``model_value = gain * layer_value + shift``, applied in float32."""

    gain: float = 1.0
    shift: float = 0.0

    @property
    def identity(self) -> bool:
        return self.gain == 1.0 and self.shift == 0.0

    def apply(self, a: np.ndarray) -> np.ndarray:
        """Layer units -> model units (``a`` itself when nothing changes)."""
        return a if self.identity else a * np.float32(self.gain) + np.float32(self.shift)

    def invert(self, a: np.ndarray) -> np.ndarray:
        """Model units -> layer units."""
        return a if self.identity else (a - np.float32(self.shift)) / np.float32(self.gain)

    def invert_spread(self, a: np.ndarray) -> np.ndarray:
        """A standard deviation in model units -> layer units."""
        return a if self.gain == 1.0 else a / np.float32(abs(self.gain))


@dataclass
class InputPlan:
    """What to feed the model from a pair, and what to write.

    ``lr_bands``: 0-based LR-HSI bands, in the model's order (None = every band as it is).
    ``msi_bands``: 0-based HR-MSI bands, in the model's order (None = every band as it is);
    ``msi_match``: how they were matched (``name``, ``wavelength`` or ``position``).
    ``lr_units`` / ``msi_units``: per layer, from its values to the model's.
    ``wavelengths``, ``fwhm`` (nm) and ``bad_bands``: per band of the LR-HSI file, for the output (or None).
    ``notes``: warnings, one sentence each, naming the layer.
    """

    lr_bands: list[int] | None = None
    msi_bands: list[int] | None = None
    msi_match: str = "position"
    lr_units: Affine = field(default_factory=Affine)
    msi_units: Affine = field(default_factory=Affine)
    wavelengths: np.ndarray | None = None
    fwhm: np.ndarray | None = None
    bad_bands: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    def output_sink(self, sink):
        """``sink`` (a :class:`export.tiling.Sink`) receiving tiles in the LR-HSI's units instead of the model's."""
        return sink if self.lr_units.identity else _LayerUnitsSink(sink, self.lr_units)


class _LayerUnitsSink:
    def __init__(self, inner, units: Affine):
        self.inner, self.units = inner, units

    def write(self, window, mean: np.ndarray, std: np.ndarray | None) -> None:
        self.inner.write(window, self.units.invert(mean), None if std is None else self.units.invert_spread(std))


# ---------------------------------------------------------------------- bands


def _generic(name: str) -> bool:
    """GDAL's description of a band without one (``core.raster_io`` names it ``Band N``)."""
    return not name.strip() or re.fullmatch(r"Band \d+", name.strip()) is not None


def _key(name: str) -> str:
    """A band name for comparison: lower case, letters and digits only (``B 02`` -> ``b02``)."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def msi_centres(md: ModelMetadata) -> np.ndarray | None:
    """``(msi_bands,)`` centre wavelengths (nm) of the model's MSI bands: its response-weighted HSI wavelengths."""
    if md.srf is None or md.wavelengths_nm is None:
        return None
    srf = np.clip(md.srf_matrix, 0.0, None)
    total = srf.sum(axis=1)
    if np.any(total <= 0):
        return None
    return srf @ np.asarray(md.wavelengths_nm) / total


def wavelength_tolerance(centre_nm: np.ndarray) -> np.ndarray:
    """How far (nm) a layer band's wavelength may sit from a model band's centre to match it: 20 nm or 5 %."""
    return np.maximum(20.0, 0.05 * np.asarray(centre_nm, np.float64))


def _by_wavelength(centres: np.ndarray, wavelengths: Sequence[float]) -> list[int] | None:
    """For each model band the layer band of mutually nearest wavelength within the tolerance, else None."""
    wl = np.asarray(wavelengths, np.float64)
    d = np.abs(centres[:, None] - wl[None, :])
    d = np.where(np.isfinite(d), d, np.inf)
    pick = np.argmin(d, axis=1)
    back = np.argmin(d[:, pick], axis=0)
    rows = np.arange(len(centres))
    if np.any(back != rows) or np.any(d[rows, pick] > wavelength_tolerance(centres)):
        return None
    return [int(i) for i in pick]


def _lr_selection(md: ModelMetadata, n: int, ln: str, model: str) -> list[int] | None:
    try:
        return md.input_selection(n)
    except ValueError as exc:
        full = f" ({md.input_bands} with its bad bands)" if md.input_bands else ""
        raise InputMismatch(f"LR-HSI layer '{ln}' has {n} bands but the model '{model}' was trained for {md.hsi_bands} "
                            f"hyperspectral bands{full}; use a model trained for this sensor, or subset the bands",
                            f"HSI bands: {exc}") from None


def _msi_order(md: ModelMetadata, n: int, names: Sequence[str] | None, wavelengths, mn: str,
               model: str) -> tuple[list[int] | None, str, list[str]]:
    """The layer's bands in the model's order (None = as they are), how they were matched, and the notes."""
    m = md.msi_bands
    labels = list(md.msi_band_names) if md.msi_band_names else [f"MSI band {j + 1}" for j in range(m)]
    names = list(names) if names is not None else []
    named = [None if _generic(s) else _key(s) for s in names]
    keys = [k for k in named if k is not None]
    unique = {k: i for i, k in enumerate(named) if k is not None and keys.count(k) == 1}
    want = [_key(s) for s in labels] if md.msi_band_names else []
    order, how = None, "position"
    if want and len(set(want)) == m and all(k in unique for k in want):
        order, how = [unique[k] for k in want], "name"
    centres = msi_centres(md)
    if order is None and wavelengths is not None and centres is not None and len(wavelengths) == n:
        order = _by_wavelength(centres, wavelengths)
        how = "wavelength" if order is not None else how
    given = ", ".join(names) if names else f"{n} bands"
    if order is None and n != m:
        why = "" if not (keys and want) else f" and its band names ({given}) do not include all of the model's"
        raise InputMismatch(f"HR-MSI layer '{mn}' has {n} bands but the model '{model}' was trained for {m} multispectral "
                            f"bands ({', '.join(labels)}){why}; select the matching bands",
                            f"MSI bands: {n} given, the model takes {m}")
    if order is None:
        misplaced = [(i, want.index(k)) for i, k in enumerate(named) if k in want and want.index(k) != i]
        if misplaced:
            pairs = ", ".join(f"its band {i + 1} ({names[i]}) is the model's band {j + 1}" for i, j in misplaced)
            raise InputMismatch(f"HR-MSI layer '{mn}' has bands {given} but the model '{model}' takes {', '.join(labels)}: "
                                f"{pairs}, yet not every band can be matched by name or wavelength; name the bands as the "
                                "model does, or order them as it does",
                                f"MSI bands {given} given, the model takes {', '.join(labels)}")
        order = list(range(n))
        if not keys and wavelengths is None:
            why = "its bands have neither names nor wavelengths"
        elif not md.msi_band_names and centres is None:
            why = f"the model '{model}' has neither band names nor a spectral response to match them with"
        else:
            why = f"its bands ({given}) match the model's by neither name nor wavelength"
        pairs = ", ".join(f"band {i + 1} = {labels[i]}" for i in range(m))
        notes = [f"HR-MSI layer '{mn}': {why}, so they are taken in order as the model's ({pairs}); check that this is right"]
        return None, how, notes
    if order == list(range(n)):
        return None, how, []
    pairs = ", ".join(f"{labels[j]} = band {i + 1}" + (f" ({wavelengths[i]:.0f} nm)" if how == "wavelength" else "")
                      for j, i in enumerate(order))
    return order, how, [f"HR-MSI layer '{mn}': bands matched to the model's by {how}: {pairs}"
                        + ("" if n == m else f" ({n - m} of its {n} bands unused)")]


def _scale_note(md: ModelMetadata, scale: int, ln: str, mn: str, model: str, allow: bool) -> list[str]:
    if scale == md.scale:
        return []
    msg = f"the pair '{ln}' / '{mn}' has a scale factor of {scale} but the model '{model}' was trained for {md.scale}"
    if not allow:
        raise InputMismatch(msg + "; resample the HR-MSI or use a model trained for this scale",
                            f"scale: the pair has {scale}, the model was trained for {md.scale}")
    return [msg + " (allowed: results may be poor)"]


def _fill_bands(values: Sequence[float], bands: list[int] | None, n: int) -> np.ndarray:
    """Model-band values spread over the layer's ``n`` bands; the bands between (and beyond) linearly interpolated."""
    v = np.asarray(values, np.float64)
    if bands is None:
        return v
    x = np.asarray(bands, np.float64)
    o = np.argsort(x)
    x, v = x[o], v[o]
    k = np.arange(n, dtype=np.float64)
    out = np.interp(k, x, v)
    if len(x) > 1:
        lo, hi = k < x[0], k > x[-1]
        out[lo] = v[0] + (k[lo] - x[0]) * (v[1] - v[0]) / (x[1] - x[0])
        out[hi] = v[-1] + (k[hi] - x[-1]) * (v[-1] - v[-2]) / (x[-1] - x[-2])
    out[np.asarray(bands)] = np.asarray(values, np.float64)
    return out


def _spectra(lm: RasterMeta, md: ModelMetadata, bands: list[int] | None, ln: str, model: str):
    """The output's wavelengths, FWHM and bad-band list per LR-HSI band, and the notes."""
    wl, fw, bad, notes = lm.wavelengths, lm.fwhm, lm.bad_bands, []
    if wl is not None and md.wavelengths_nm is not None:
        lr_wl = np.asarray(wl)[bands if bands is not None else slice(None)]
        diff = np.abs(np.asarray(md.wavelengths_nm) - lr_wl)
        tol = 5.0 if md.fwhm_nm is None else np.maximum(5.0, 0.5 * np.asarray(md.fwhm_nm))
        if np.any(diff > tol):
            k = int(np.argmax(diff))
            notes.append(f"band wavelengths of '{ln}' differ from the model's (model band {k + 1}: {lr_wl[k]:.1f} nm "
                         f"vs {md.wavelengths_nm[k]:.1f} nm)")
    unused = [] if bands is None else sorted(set(range(lm.bands)) - set(bands))
    if wl is None and md.wavelengths_nm is not None:
        wl = _fill_bands(md.wavelengths_nm, bands, lm.bands)
        between = "" if not unused else (f"; its band(s) {_ranges(unused)}, which the model does not use, get wavelengths "
                                         "interpolated from their neighbours'")
        notes.append(f"LR-HSI layer '{ln}' has no band wavelengths: the output carries those of the model '{model}' "
                     f"({md.wavelengths_nm[0]:.1f}-{md.wavelengths_nm[-1]:.1f} nm){between}")
    if fw is None and md.fwhm_nm is not None:
        fw = _fill_bands(md.fwhm_nm, bands, lm.bands)
    if bad is None and unused:
        bad = np.zeros(lm.bands, bool)
        bad[unused] = True
    return wl, fw, bad, notes


def _ranges(idx: list[int]) -> str:
    """0-based band indices as 1-based ranges: ``[129, 130, 131, 200]`` -> ``130-132, 201``."""
    out, start = [], None
    for a, b in zip(idx, idx[1:] + [None], strict=True):
        start = a if start is None else start
        if b != a + 1:
            out.append(f"{start + 1}" if start == a else f"{start + 1}-{a + 1}")
            start = None
    return ", ".join(out)


def match_bands(md: ModelMetadata, lr: RasterMeta | int, msi: RasterMeta | int, scale: int, msi_names: Sequence[str] | None = None,
                msi_wavelengths=None, lr_name: str = "LR-HSI", msi_name: str = "HR-MSI", model_name: str = "model",
                allow_scale_mismatch: bool = False) -> InputPlan:
    """The metadata part of the check: bands, scale and output wavelengths (units stay the identity).

    ``lr`` / ``msi``: the layers' :class:`~core.raster_io.RasterMeta`, or just their band counts (then
    ``msi_names`` and ``msi_wavelengths`` describe the MSI bands, and the output spectra are the model's).
    Raises :class:`InputMismatch` naming the layer, with a one-line ``reason``.
    """
    n_lr = lr if isinstance(lr, int) else lr.bands
    n_msi = msi if isinstance(msi, int) else msi.bands
    if isinstance(msi, RasterMeta):
        msi_names, msi_wavelengths = msi.band_names, msi.wavelengths
    bands = _lr_selection(md, n_lr, lr_name, model_name)
    order, how, notes = _msi_order(md, n_msi, msi_names, msi_wavelengths, msi_name, model_name)
    notes += _scale_note(md, scale, lr_name, msi_name, model_name, allow_scale_mismatch)
    plan = InputPlan(lr_bands=bands, msi_bands=order, msi_match=how, notes=notes)
    if isinstance(lr, RasterMeta):
        plan.wavelengths, plan.fwhm, plan.bad_bands, more = _spectra(lr, md, bands, lr_name, model_name)
        plan.notes += more
    return plan


# ---------------------------------------------------------------------- units


def _starts(extent: int, size: int, n: int) -> list[int]:
    return sorted({int(round(v)) for v in np.linspace(0, extent - size, n)}) if extent > size else [0]


def layer_percentiles(reader: RasterReader, window: Window, bands: list[int] | None, size: int,
                      grid: int = SAMPLE_GRID) -> tuple[np.ndarray, np.ndarray]:
    """``(bands,)`` 1st and 99th percentiles of the valid values of ``bands`` over up to ``grid x grid`` windows.

    The windows (``size`` pixels a side) are spread evenly over ``window``; values are read as
    :meth:`core.raster_io.RasterReader.read` gives them (nodata masked, GDAL scale/offset applied).
    A band without a valid value gets NaN.
    """
    sw, sh = min(size, window.width), min(size, window.height)
    reads = [reader.read(Window(window.col_off + c, window.row_off + r, sw, sh), bands=bands)
             for r in _starts(window.height, sh, grid) for c in _starts(window.width, sw, grid)]
    flat = np.concatenate([a.reshape(a.shape[0], -1) for a in reads], axis=1)
    low, high = np.full(flat.shape[0], np.nan), np.full(flat.shape[0], np.nan)
    for b, v in enumerate(flat):
        v = v[np.isfinite(v)]
        if v.size:
            low[b], high[b] = np.percentile(v, [1.0, 99.0])
    return low, high


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def units_to_model(low: np.ndarray, high: np.ndarray, norm: BandNormalization, kind: str, name: str, model: str,
                   output: bool = False) -> tuple[Affine, list[str]]:
    """The :class:`Affine` that brings a layer with per-band 1st / 99th percentiles ``low`` / ``high`` into the
    units ``norm`` was fitted in, and its note; raises :class:`InputMismatch` with the numbers when no rule fits.

    ``kind`` / ``name``: ``LR-HSI`` or ``HR-MSI`` and the layer's name; ``output``: the layer's units are the output's.
    """
    mlo = (norm.offset - norm.scale).astype(np.float64)
    mhi = (norm.offset + norm.scale).astype(np.float64)
    if np.all(norm.offset == 0) and np.all(norm.scale == 1):
        return Affine(), []
    mag = np.maximum(np.abs(low), np.abs(high))
    mmag = np.maximum(np.abs(mlo), np.abs(mhi))
    ok = np.isfinite(mag) & (mag > 0) & (mmag > 0)
    if not ok.any():
        return Affine(), []
    r = float(np.median(np.log10(mag[ok] / mmag[ok])))
    c = min(FACTORS, key=lambda k: abs(r - k))
    hi_layer, hi_model = float(np.median(high[ok])), float(np.median(mhi[ok]))
    seen = (f"its values reach {_fmt(hi_layer)} (99th percentile, median over its bands) where the model '{model}' was "
            f"trained on values up to {_fmt(hi_model)}")
    if abs(r - c) > TOLERANCE_DECADES:
        raise InputMismatch(f"{kind} layer '{name}' is not in the units of the model '{model}': {seen}, {10 ** r:.3g} times "
                            "as much; only the same units, or 10000 times more or less (reflectance 0-1 against reflectance "
                            "x 10000), are converted; rescale the layer to the model's units (or set its GDAL scale and offset)",
                            f"{kind} units: values up to {_fmt(hi_layer)}, the model was trained on values up to {_fmt(hi_model)}")
    gain, notes = FACTORS[c], []
    if c:
        what = "multiplied by 10000" if gain > 1 else "divided by 10000"
        units = "reflectance 0-1 against the model's x 10000" if gain > 1 else "reflectance x 10000 against the model's 0-1"
        out = "; the output is written in the layer's units" if output else ""
        notes.append(f"{kind} layer '{name}': {seen}: taken as {units}, {what} for the model{out}")
    level = float(np.median(mmag[ok]))
    unit = 1e4 if 300.0 <= level <= 3e4 else 1.0 if 0.03 <= level <= 3.0 else None
    shift = 0.0
    if unit is not None:
        dn = DN_OFFSET * unit
        scaled = gain * low[ok]
        floor, rise = float(scaled.min()), float((scaled - mlo[ok]).min())
        if float(mlo[ok].min()) < 0.5 * dn and floor >= 0.9 * dn and 0.9 * dn <= rise <= 1.5 * dn:
            shift = -dn
            notes.append(f"{kind} layer '{name}': no value below {_fmt(floor / gain)} (1st percentile of its darkest band), "
                         f"every band at least {_fmt(rise / gain)} above the training data of the model '{model}': a DN offset of "
                         f"{_fmt(dn / gain)} (as Sentinel-2 L2A adds from processing baseline 04.00), removed"
                         + ("; the output is written in the layer's units" if output else ""))
    return Affine(gain, shift), notes


def plan_inputs(lr: RasterReader, msi: RasterReader, md: ModelMetadata, geom: PairGeometry, model_name: str, lr_name: str,
                msi_name: str, allow_scale_mismatch: bool = False) -> InputPlan:
    """The whole check of a pair against a model: :func:`match_bands`, then each layer's units from a sample of its
    pixels over the common area ``geom`` (:func:`layer_percentiles`, :func:`units_to_model`); raises :class:`InputMismatch`."""
    plan = match_bands(md, lr.meta, msi.meta, geom.scale, lr_name=lr_name, msi_name=msi_name, model_name=model_name,
                       allow_scale_mismatch=allow_scale_mismatch)
    low, high = layer_percentiles(lr, geom.lr_window, plan.lr_bands, SAMPLE_LR_PIXELS)
    plan.lr_units, notes = units_to_model(low, high, md.hsi_normalization, "LR-HSI", lr_name, model_name, output=True)
    plan.notes += notes
    low, high = layer_percentiles(msi, geom.msi_window, plan.msi_bands, SAMPLE_LR_PIXELS * geom.scale)
    plan.msi_units, notes = units_to_model(low, high, md.msi_normalization, "HR-MSI", msi_name, model_name)
    plan.notes += notes
    return plan
