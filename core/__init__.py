"""hsr-diff core: raster I/O, sensor model, metrics, baselines, the CDFormer and its training.

Everything here works on numpy arrays shaped ``(bands, rows, cols)``; GDAL is used only in
``raster_io`` and torch only in the model/training modules, which are imported lazily so
that the numpy-only parts (schedule, normalisation, sensor model, metrics, baselines) stay
usable inside QGIS without PyTorch.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
