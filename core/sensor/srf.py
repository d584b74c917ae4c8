"""Spectral response matrices from sensor response curves (numpy only).

A multispectral band ``i`` with relative response ``SRF_i(lambda)`` is simulated from HSI band ``j``
(a Gaussian of the band's FWHM, peak 1, centred at its wavelength) with weight
``w_ij = integral SRF_i(lambda) g_j(lambda) dlambda``; each row is then normalised to sum 1, so
``MSI = R @ HSI`` keeps the HSI units. A peak-1 Gaussian makes wide HSI bands weigh more than narrow
ones, as they cover more of the MSI band. Curves ship in ``core/data/srf`` (sources in its README).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .psf import FWHM_TO_SIGMA

__all__ = ["SpectralResponse", "spectral_response", "band_resampling_matrix", "list_sensors", "default_msi_bands", "load_srf_csv",
           "SRF_DIR"]

SRF_DIR = Path(__file__).resolve().parents[1] / "data" / "srf"

_SENSORS = {
    "sentinel2": "sentinel2_msi.csv",
    "landsat8": "landsat8_oli.csv",
    "nikon_d700": "nikon_d700.csv",
    "ikonos": "ikonos.csv",
}
_ALIASES = {"sentinel-2": "sentinel2", "s2": "sentinel2", "sentinel2_msi": "sentinel2", "landsat-8": "landsat8",
            "landsat8_oli": "landsat8", "l8": "landsat8", "nikon": "nikon_d700"}
# Land bands at 10 m / 20 m (S2) or 30 m (L8); aerosol, water-vapour and cirrus bands are left out.
_DEFAULT_BANDS = {
    "sentinel2": ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"),
    "landsat8": ("b2_482.04nm", "b3_561.41nm", "b4_654.59nm", "b5_864.67nm", "b7_1608.86nm", "b8_2200.73nm"),
    "nikon_d700": ("blue", "green", "red"),
    "ikonos": ("blue", "green", "red", "nir"),
}


@dataclass(frozen=True)
class SpectralResponse:
    """``matrix`` float64 ``(msi_bands, hsi_bands)``, rows sum to 1; ``coverage`` ``(msi_bands,)`` is
    the fraction of each MSI band's response that falls on valid HSI bands (0..1)."""

    matrix: np.ndarray
    band_names: tuple[str, ...]
    sensor: str
    coverage: np.ndarray | None = None

    @property
    def msi_bands(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def hsi_bands(self) -> int:
        return int(self.matrix.shape[1])

    def to_dict(self) -> dict:
        return {"sensor": self.sensor, "band_names": list(self.band_names), "matrix": self.matrix.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> SpectralResponse:
        return cls(np.asarray(d["matrix"], dtype=np.float64), tuple(d["band_names"]), str(d["sensor"]))


def list_sensors() -> list[str]:
    """Names accepted by :func:`spectral_response` (besides a CSV path)."""
    return sorted(_SENSORS)


def default_msi_bands(sensor: str) -> tuple[str, ...]:
    """The bands a fusion experiment uses by default for a named sensor (all bands for a CSV path)."""
    name = _canonical(sensor)
    if name is None:
        return load_srf_csv(sensor)[1]
    return _DEFAULT_BANDS[name]


def load_srf_csv(sensor: str | Path) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
    """Read a response CSV: ``(wavelength_nm (n,), band_names, weights (bands, n))``, float64."""
    name = _canonical(sensor)
    path = SRF_DIR / _SENSORS[name] if name is not None else Path(sensor)
    if not path.is_file():
        raise ValueError(f"unknown sensor {sensor!r}: use one of {list_sensors()} or a CSV path")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = [h.strip() for h in rows[0]]
    data = np.array([[float(v) for v in r] for r in rows[1:] if r], dtype=np.float64)
    if data.ndim != 2 or data.shape[1] != len(header) or data.shape[1] < 2:
        raise ValueError(f"{path}: expected a header and columns wavelength_nm, band1, band2, ...")
    order = np.argsort(data[:, 0])
    return data[order, 0], tuple(header[1:]), np.clip(data[order, 1:].T, 0.0, None)


def spectral_response(sensor: str | Path, wavelengths_nm, fwhm_nm=None, bands=None, valid_bands=None,
                      min_coverage: float = 0.8, curves=None) -> SpectralResponse:
    """Resample a sensor's response curves onto HSI bands.

    ``sensor``: a name from :func:`list_sensors` or a CSV path (``wavelength_nm, band1, ...``).
    ``wavelengths_nm``/``fwhm_nm``: ``(hsi_bands,)`` centres and widths in nm; an unknown FWHM
    (``None`` or NaN) becomes the local band spacing. ``bands``: MSI band names or indices
    (default: all bands of the curve file; see :func:`default_msi_bands`). ``valid_bands``:
    ``(hsi_bands,)`` bool (ENVI ``bbl``); bad bands get zero weight.
    Raises ``ValueError`` naming the band when less than ``min_coverage`` of an MSI band's
    response falls on valid HSI bands (e.g. Sentinel-2 B10 at 1375 nm from EnMAP).
    ``curves``: ``(wavelength_nm (n,), band_names, weights (bands, n))`` used instead of the sensor's
    file (e.g. perturbed curves, :mod:`core.sensor.protocols`); ``sensor`` then only names the result.
    """
    wl_srf, names, curves = load_srf_csv(sensor) if curves is None else curves
    sensor_name = _canonical(sensor) or Path(sensor).stem
    idx = _select(names, bands, sensor_name)
    names, curves = tuple(names[i] for i in idx), curves[idx]

    centres = np.asarray(wavelengths_nm, dtype=np.float64).ravel()
    n = centres.size
    if n < 2 or not np.all(np.isfinite(centres)):
        raise ValueError("need at least two finite HSI wavelengths (nm)")
    spacing = np.abs(np.gradient(centres))
    fwhm = spacing.copy() if fwhm_nm is None else np.asarray(fwhm_nm, dtype=np.float64).ravel()
    if fwhm.shape != (n,):
        raise ValueError(f"fwhm_nm has {fwhm.size} values for {n} bands")
    fwhm = np.where(np.isfinite(fwhm) & (fwhm > 0), fwhm, spacing)
    valid = np.ones(n, dtype=bool) if valid_bands is None else np.asarray(valid_bands, dtype=bool).ravel()
    if valid.shape != (n,):
        raise ValueError(f"valid_bands has {valid.size} values for {n} bands")
    if not valid.any():
        raise ValueError("valid_bands marks every HSI band as bad")

    # Integrate on a grid finer than both the curve sampling and the narrowest HSI band.
    step = min(1.0, float(fwhm[valid].min()) / 8.0)
    grid = np.arange(wl_srf[0], wl_srf[-1] + step / 2, step)
    s = np.stack([np.interp(grid, wl_srf, c, left=0.0, right=0.0) for c in curves])  # (m, g)
    sig = fwhm * FWHM_TO_SIGMA
    g = np.exp(-0.5 * ((grid[None, :] - centres[:, None]) / sig[:, None]) ** 2)  # (n, g)
    g[~valid] = 0.0
    w = s @ g.T * step  # (m, n)

    # Coverage: share of the response under valid HSI bands (their summed Gaussians, capped at 1).
    cover = np.minimum(g.sum(axis=0), 1.0)
    area = s.sum(axis=1) * step
    coverage = np.divide((s * cover).sum(axis=1) * step, area, out=np.zeros(len(names)), where=area > 0)
    lo, hi = centres[valid].min(), centres[valid].max()
    for name, c in zip(names, coverage, strict=True):
        if c < min_coverage:
            raise ValueError(f"{sensor_name} band {name} is not covered by the HSI bands ({lo:.0f}-{hi:.0f} nm"
                             f"{', bad bands excluded' if not valid.all() else ''}): only {100 * c:.0f}% of its "
                             "response falls on valid bands; choose other bands with bands=")
    return SpectralResponse(w / w.sum(axis=1, keepdims=True), names, sensor_name, coverage)


def band_resampling_matrix(src_nm, dst_nm, src_fwhm=None, dst_fwhm=None, valid_bands=None) -> np.ndarray:
    """``(dst_bands, src_bands)`` weights that resample a spectrum from one band set onto another.

    Every band is a Gaussian of its centre and FWHM (nm; unknown = the local band spacing); a target
    band's weight on a source band is the overlap of the two Gaussians, ``exp(-d^2 / 2 (s_dst^2 + s_src^2))``,
    rows summing to one.  ``valid_bands`` ``(src_bands,)`` bool: bad source bands get zero weight.
    Raises ``ValueError`` when a target centre lies outside the valid source range (no extrapolation).
    """
    def widths(centres, fwhm):
        # spacing on the sorted centres: some sensors list overlapping spectrometers out of order (AVIRIS near 660 nm)
        spacing = np.full(centres.shape, 10.0)
        if centres.size > 1:
            order = np.argsort(centres, kind="stable")
            spacing[order] = np.abs(np.gradient(centres[order]))
            spacing = np.where(spacing > 0, spacing, np.median(spacing[spacing > 0]) if (spacing > 0).any() else 10.0)
        f = spacing if fwhm is None else np.asarray(fwhm, dtype=np.float64).ravel()
        return np.where(np.isfinite(f) & (f > 0), f, spacing) * FWHM_TO_SIGMA

    src = np.asarray(src_nm, dtype=np.float64).ravel()
    dst = np.asarray(dst_nm, dtype=np.float64).ravel()
    valid = np.ones(src.size, bool) if valid_bands is None else np.asarray(valid_bands, bool).ravel()
    lo, hi = src[valid].min(), src[valid].max()
    outside = dst[(dst < lo - 1e-6) | (dst > hi + 1e-6)]
    if outside.size:
        raise ValueError(f"target bands at {', '.join(f'{w:.0f}' for w in outside[:5])} nm lie outside the source "
                         f"bands ({lo:.0f}-{hi:.0f} nm)")
    var = widths(dst, dst_fwhm)[:, None] ** 2 + widths(src, src_fwhm)[None, :] ** 2
    w = np.exp(-0.5 * (dst[:, None] - src[None, :]) ** 2 / var)
    w[:, ~valid] = 0.0
    return w / w.sum(axis=1, keepdims=True)


def _canonical(sensor) -> str | None:
    if not isinstance(sensor, str):
        return None
    key = sensor.strip().lower()
    key = _ALIASES.get(key, key)
    return key if key in _SENSORS else None


def _select(names: tuple[str, ...], bands, sensor: str) -> list[int]:
    if bands is None:
        return list(range(len(names)))
    lookup = {nm.lower(): i for i, nm in enumerate(names)}
    idx = []
    for b in bands:
        if isinstance(b, (int, np.integer)):
            if not 0 <= b < len(names):
                raise ValueError(f"{sensor} has {len(names)} bands; index {b} is out of range")
            idx.append(int(b))
        elif str(b).lower() in lookup:
            idx.append(lookup[str(b).lower()])
        else:
            raise ValueError(f"{sensor} has no band {b!r}; bands are {list(names)}")
    if not idx:
        raise ValueError("bands= selects no band")
    return idx
