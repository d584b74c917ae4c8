"""Per-band normalisation, written once and stored with every model (numpy only).

Training fits it on the training cubes, export embeds ``to_dict()`` in the ONNX metadata and
inference reads it back, so the network always sees data scaled the same way.
``apply`` maps each band's ``[p_low, p_high]`` percentile range onto ``[-1, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BandNormalization"]


@dataclass(frozen=True)
class BandNormalization:
    """``y = (x - offset) / scale`` per band; ``offset`` and ``scale`` are ``(bands,)`` float32."""

    offset: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(
        cls, cube: np.ndarray, valid: np.ndarray | None = None, low_pct: float = 1.0, high_pct: float = 99.0
    ) -> BandNormalization:
        """Fit on a ``(bands, rows, cols)`` cube; ``valid`` is an optional ``(rows, cols)`` bool mask."""
        flat = cube.reshape(cube.shape[0], -1).astype(np.float64)
        if valid is not None:
            flat = flat[:, valid.reshape(-1)]
        if flat.shape[1] == 0:
            raise ValueError("cannot fit a normalisation on a cube with no valid pixel")
        lo = np.nanpercentile(flat, low_pct, axis=1)
        hi = np.nanpercentile(flat, high_pct, axis=1)
        scale = (hi - lo) / 2.0
        # Constant bands would divide by zero: give them the median non-zero half-range.
        good = scale > 1e-12
        fallback = float(np.median(scale[good])) if good.any() else 1.0
        scale = np.where(good, scale, fallback)
        return cls(((hi + lo) / 2.0).astype(np.float32), scale.astype(np.float32))

    @property
    def bands(self) -> int:
        return int(self.offset.shape[0])

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalise ``(bands, rows, cols)`` or ``(n, bands, rows, cols)``; returns float32."""
        shape = (-1, 1, 1)
        return ((x - self.offset.reshape(shape)) / self.scale.reshape(shape)).astype(np.float32)

    def invert(self, y: np.ndarray) -> np.ndarray:
        """Undo :meth:`apply`; returns float32 in the original units."""
        shape = (-1, 1, 1)
        return (y * self.scale.reshape(shape) + self.offset.reshape(shape)).astype(np.float32)

    def to_dict(self) -> dict:
        return {"offset": [float(v) for v in self.offset], "scale": [float(v) for v in self.scale]}

    @classmethod
    def from_dict(cls, d: dict) -> BandNormalization:
        offset = np.asarray(d["offset"], dtype=np.float32)
        scale = np.asarray(d["scale"], dtype=np.float32)
        if offset.shape != scale.shape or offset.ndim != 1:
            raise ValueError("normalisation offset and scale must be 1-D lists of equal length")
        return cls(offset, scale)
