"""Classical HS-MS fusion baselines: bicubic, GSA, MTF-GLP-HS, CNMF (numpy + scipy).

Every baseline has the signature ``fn(lr_hsi, hr_msi, scale, srf=None, psf=None, valid=None, **opts)``
and returns a NaN-free float32 ``(bands, r*scale, c*scale)``; see :mod:`core.baselines.bicubic` for
the input and nodata conventions. They are global methods: inputs and a few output-sized cubes
must fit in memory (each function's docstring states how much).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .bicubic import FusionInputs, bicubic, fill_nearest, prepare_inputs
from .cnmf import cnmf
from .glp import mtf_glp_hs
from .gsa import gsa

FusionFn = Callable[..., np.ndarray]

BASELINES: dict[str, FusionFn] = {
    "bicubic": bicubic,
    "gsa": gsa,
    "mtf_glp_hs": mtf_glp_hs,
    "cnmf": cnmf,
}

__all__ = ["BASELINES", "FusionFn", "FusionInputs", "bicubic", "cnmf", "fill_nearest", "gsa", "mtf_glp_hs", "prepare_inputs"]
