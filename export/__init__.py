"""ONNX export and ONNX Runtime inference of HSR-Diff models.

Inference (:mod:`export.sampler`, :mod:`export.tiling`, :mod:`export.superresolve`) needs numpy,
onnxruntime and (for files) GDAL; only :mod:`export.onnx_export` needs torch and onnx, imported
inside its functions. Importing this package imports neither.
"""

from .metadata import FORMAT_VERSION, METADATA_KEY, ModelFileError, ModelMetadata, read_metadata

__all__ = ["FORMAT_VERSION", "METADATA_KEY", "ModelFileError", "ModelMetadata", "read_metadata"]
