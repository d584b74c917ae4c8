"""Real-scene crops for the quality benchmark (files in ``../shared/data``, see its README).

Crop sizes are multiples of 8 so that scales 4 and 8 divide them. ``quick`` marks the subset that
``bench/quality.py --quick`` uses (with ``quick_rows``/``quick_cols`` when given). ``held_out`` marks the
crops that no model is trained on (``bench/split.md``); the held-out EnMAP crops are 60 and 64 px so
that scales 3, 4 and 8 divide them.
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
    held_out: bool = False  # never trained on (bench/split.md): the only scenes model-based methods are scored on
    scales: tuple[int, ...] | None = None  # the scales this crop is meant for (None: any)


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
    # Held-out crops (bench/split.md): models are trained on everything else of these files, so these are the
    # pixels on which HSR-Diff and the classical methods are compared.
    Scene("enmap_southeast_holdout", "enmap_potsdam_southeast.tif", (66, 126), (2, 62), "sentinel2", held_out=True,
          scales=(3, 4), note="the centred 60x60 of the held-out square rows 64-127, cols 0-63 (scales 3 and 4; the bundled sample)"),
    Scene("enmap_southeast_holdout64", "enmap_potsdam_southeast.tif", (64, 128), (0, 64), "sentinel2", held_out=True,
          scales=(8,), note="the whole held-out square rows 64-127, cols 0-63 (scale 8)"),
    Scene("cave_chart_toy", "cave_chart_toy.tif", (0, 256), (0, 256), "nikon_d700", held_out=True, scales=(4, 8),
          note="a second CAVE scene (chart and stuffed toy, whole, 256x256) no model is trained on; Nikon D700 RGB"),
    Scene("cave_balloons_holdout", "cave_balloons.tif", (128, 256), (128, 256), "nikon_d700", held_out=True,
          scales=(4, 8), note="the held-out bottom-right 128x128 quadrant (scales 4 and 8)"),
)
