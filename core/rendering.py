"""Which three bands of a spectral raster to show as red, green and blue, from its wavelengths.

Pure numpy; the plugin applies the choice to a QGIS layer and the writer records it in the output's
``ENVI`` metadata (``default_bands``) for other software.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TRUE_COLOUR_NM", "COLOUR_INFRARED_NM", "MAX_OFFSET_NM", "RgbBands", "default_rgb"]

TRUE_COLOUR_NM = (640.0, 550.0, 470.0)
"""Red, green and blue targets of a true-colour composite (nm)."""
COLOUR_INFRARED_NM = (860.0, 650.0, 550.0)
"""Near-infrared, red and green targets of a colour-infrared composite (nm), shown as red, green, blue."""
MAX_OFFSET_NM = 30.0
"""How far the nearest band may lie from a target wavelength for the composite to be used (nm)."""


@dataclass(frozen=True)
class RgbBands:
    """1-based band numbers shown as red, green and blue, and what the composite is.

    ``label``: ``"true colour"``, ``"colour infrared"`` or ``"bands 1-3"`` (no usable wavelengths).
    """

    red: int
    green: int
    blue: int
    label: str

    @property
    def bands(self) -> tuple[int, int, int]:
        return self.red, self.green, self.blue


def _nearest(wavelengths: np.ndarray, usable: np.ndarray, targets: tuple[float, ...]) -> tuple[int, ...] | None:
    """0-based index of the usable band nearest each target, or None when one lies over :data:`MAX_OFFSET_NM` away."""
    picked = []
    for target in targets:
        dist = np.where(usable, np.abs(wavelengths - target), np.inf)
        k = int(np.argmin(dist))
        if not dist[k] <= MAX_OFFSET_NM:
            return None
        picked.append(k)
    return tuple(picked)


def default_rgb(bands: int, wavelengths_nm: np.ndarray | list[float] | None = None,
                good: np.ndarray | list[bool] | None = None) -> RgbBands:
    """The composite to show a raster of ``bands`` bands with.

    ``wavelengths_nm``: ``(bands,)`` band centres in nanometres (None or NaN = unknown); ``good``:
    ``(bands,)`` bool, False for bands never to show (bad bands, bands without data). True colour
    (the good bands nearest 640, 550 and 470 nm) when each lies within :data:`MAX_OFFSET_NM` of its
    target, else colour infrared (nearest 860, 650 and 550 nm) on the same rule, else bands 1, 2 and 3
    (the last band repeated for a raster of fewer than three bands).
    """
    if bands < 1:
        raise ValueError(f"a raster needs at least one band to be shown, got {bands}")
    if wavelengths_nm is not None:
        wl = np.asarray(wavelengths_nm, np.float64)
        if wl.shape != (bands,):
            raise ValueError(f"{wl.size} wavelengths given for {bands} bands")
        usable = np.isfinite(wl) & (np.ones(bands, bool) if good is None else np.asarray(good, bool))
        for targets, label in ((TRUE_COLOUR_NM, "true colour"), (COLOUR_INFRARED_NM, "colour infrared")):
            if (picked := _nearest(wl, usable, targets)) is not None:
                return RgbBands(*(k + 1 for k in picked), label)
    return RgbBands(*(min(k, bands) for k in (1, 2, 3)), "bands 1-3")
