"""The default sampler and tiling settings of a super-resolution run, in one place.

The QGIS algorithm's parameter defaults, the ``python -m export.superresolve`` CLI, the demo
(``examples/demo.py``) and the benchmark (``bench/quality.py``) should all read these, so that the
numbers they report are for the settings a user gets without touching anything.
"""

from __future__ import annotations

__all__ = ["DEFAULT_STEPS", "DEFAULT_SAMPLER", "DEFAULT_ETA", "DEFAULT_SEED", "DEFAULT_SAMPLES", "DEFAULT_TILE",
           "DEFAULT_OVERLAP", "DEFAULT_DEVICE", "DEFAULT_DEGRADATION", "sampler_kwargs"]

DEFAULT_STEPS = 25  # DDIM denoising steps
DEFAULT_SAMPLER = "ddim"  # "ddim" | "ancestral"
DEFAULT_ETA = 0.0  # DDIM stochasticity (0 = deterministic)
DEFAULT_SEED = 0
DEFAULT_SAMPLES = 1
DEFAULT_TILE = 256  # HR pixels
DEFAULT_OVERLAP = 32  # HR pixels
DEFAULT_DEVICE = "auto"
DEFAULT_DEGRADATION = "estimate"  # "estimate" (from the pair) | "model" (the model's nominal PSF)


def sampler_kwargs() -> dict:
    """The defaults as keyword arguments of :func:`export.superresolve.superresolve`."""
    return dict(steps=DEFAULT_STEPS, sampler=DEFAULT_SAMPLER, eta=DEFAULT_ETA, seed=DEFAULT_SEED, samples=DEFAULT_SAMPLES,
                tile=DEFAULT_TILE, overlap=DEFAULT_OVERLAP, device=DEFAULT_DEVICE)
