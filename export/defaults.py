"""The default sampler and tiling settings of a super-resolution run, in one place.

The QGIS algorithm's parameter defaults, the ``python -m export.superresolve`` CLI, the demo
(``examples/demo.py``) and the benchmark (``bench/quality.py``) should all read these, so that the
numbers they report are for the settings a user gets without touching anything.
"""

from __future__ import annotations

from core.raster_io import OUTPUT_TYPES

__all__ = ["DEFAULT_STEPS", "DEFAULT_SAMPLER", "DEFAULT_ETA", "DEFAULT_SEED", "DEFAULT_SAMPLES", "DEFAULT_TILE",
           "DEFAULT_OVERLAP", "DEFAULT_DEVICE", "DEFAULT_DEGRADATION", "DEFAULT_OUTPUT_TYPE", "CHECKS", "DEFAULT_CHECK", "sampler_kwargs",
           "add_sampler_arguments", "add_output_arguments"]

DEFAULT_STEPS = 2  # DDIM denoising steps: the fewest within 0.05 dB of the best for every bundled model (bench/results/diffusion.md)
DEFAULT_SAMPLER = "ddim"  # "ddim" | "ancestral"
DEFAULT_ETA = 0.0  # DDIM stochasticity (0 = deterministic)
DEFAULT_SEED = 0
DEFAULT_SAMPLES = 1
DEFAULT_TILE = 256  # HR pixels
DEFAULT_OVERLAP = 32  # HR pixels
DEFAULT_DEVICE = "auto"
DEFAULT_DEGRADATION = "estimate"  # "estimate" (from the pair) | "model" (the model's nominal PSF)
DEFAULT_OUTPUT_TYPE = "float32"  # "float32" | "int16" (scaled integers: reflectance x 10000)
CHECKS = ("best", "report", "off")
DEFAULT_CHECK = "best"  # score the model against classical methods on the pair (core.referee) and write the best


def sampler_kwargs() -> dict:
    """The defaults as keyword arguments of :func:`export.superresolve.superresolve`."""
    return dict(steps=DEFAULT_STEPS, sampler=DEFAULT_SAMPLER, eta=DEFAULT_ETA, seed=DEFAULT_SEED, samples=DEFAULT_SAMPLES,
                tile=DEFAULT_TILE, overlap=DEFAULT_OVERLAP, device=DEFAULT_DEVICE)


def add_sampler_arguments(ap) -> None:
    """The sampler, tiling, device and degradation options of the command lines (``export.superresolve``,
    ``export.batch``), with these defaults, on an ``argparse.ArgumentParser``."""
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"denoising steps (default {DEFAULT_STEPS})")
    ap.add_argument("--sampler", choices=("ddim", "ancestral"), default=DEFAULT_SAMPLER)
    ap.add_argument("--eta", type=float, default=DEFAULT_ETA, help="DDIM stochasticity (0 = deterministic)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="samples to average (>= 2 for --uncertainty)")
    ap.add_argument("--tile", type=int, default=DEFAULT_TILE, help="tile size in output pixels")
    ap.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, help="tile overlap in output pixels")
    ap.add_argument("--batch", type=int, default=1, help="tiles per network call")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda", "tensorrt"), default=DEFAULT_DEVICE)
    ap.add_argument("--degradation", choices=("estimate", "model"), default=DEFAULT_DEGRADATION,
                    help="estimate: match the conditioning base's PSF and sub-pixel offset to the pair and denoise a "
                         "noisy LR-HSI (default); model: as trained, the LR-HSI as it is")
    ap.add_argument("--check", choices=CHECKS, default=DEFAULT_CHECK,
                    help="best: score the model and MTF-GLP-HS, GSA and CNMF on the pair (Wald's protocol and "
                         "consistency, on a crop) and write the best (default); report: score them, write the model's "
                         "result; off: no check")
    ap.add_argument("--no-blend", dest="blend", action="store_false",
                    help="on a noisy LR-HSI (denoised by --degradation estimate), write the model's result alone, not "
                         "averaged with CNMF's")


def add_output_arguments(ap) -> None:
    """The output options of the command lines (``--output-type``) on an ``argparse.ArgumentParser``."""
    ap.add_argument("--output-type", choices=OUTPUT_TYPES, default=DEFAULT_OUTPUT_TYPE,
                    help="float32 (default) or int16: 16-bit integers with a GDAL band scale, nodata -32768 "
                         "(reflectance in 0-1 is stored x 10000; larger values get the power-of-ten factor that fits)")
