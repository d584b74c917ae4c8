"""Real-scene crops for the quality benchmark (files in ``../shared/data``, see its README).

Crop sizes are multiples of 8 so that scales 4 and 8 divide them. ``quick`` marks the subset that
``bench/quality.py --quick`` uses (with ``quick_rows``/``quick_cols`` when given).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scene:
    """One benchmark crop: ``rows``/``cols`` are ``(start, stop)`` pixel ranges of the file."""

    name: str
    file: str
    rows: tuple[int, int]
    cols: tuple[int, int]
    sensor: str  # MSI response: a name from core.sensor.list_sensors() or a CSV path
    msi_bands: tuple[str, ...] | None = None  # None: core.sensor.default_msi_bands(sensor)
    wavelength_range: tuple[float, float] | None = None  # assumed linear range when the file has none
    quick: bool = False
    quick_rows: tuple[int, int] | None = None
    quick_cols: tuple[int, int] | None = None
    note: str = ""


SCENES: tuple[Scene, ...] = (
    Scene("enmap_potsdam_southeast", "enmap_potsdam_southeast.tif", (0, 128), (0, 64), "sentinel2", quick=True,
          note="EnMAP L2A, 218 good bands (bbl); Sentinel-2 10 m + 20 m bands"),
    Scene("enmap_potsdam_north", "enmap_potsdam_north.tif", (0, 64), (0, 96), "sentinel2",
          note="EnMAP L2A, 218 good bands (bbl); Sentinel-2 10 m + 20 m bands"),
    Scene("cave_balloons", "cave_balloons.tif", (0, 256), (0, 256), "nikon_d700", quick=True,
          quick_rows=(64, 192), quick_cols=(64, 192), note="CAVE 31 bands 400-700 nm; Nikon D700 RGB"),
    Scene("hydice_dcmall", "hydice_dcmall.tif", (2, 98), (2, 98), "sentinel2", wavelength_range=(400.0, 2500.0),
          note="HYDICE 191 bands; no wavelengths in the file: assumed linear 400-2500 nm (the real band set has "
               "water-vapour gaps, so the simulated MSI is approximate)"),
    Scene("aviris_vi_demo", "aviris_vi_demo.tif", (1, 89), (1, 89), "sentinel2",
          note="AVIRIS; all-zero (water-vapour) bands dropped"),
    Scene("casi_gulfport", "casi_gulfport.tif", (0, 48), (0, 88), "sentinel2",
          msi_bands=("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A"),
          note="CASI-1500 72 bands 368-1043 nm; the Sentinel-2 bands inside that range"),
)
