"""Sensor model: PSF, spatial/spectral degradation, response curves, simulation, estimation.

Conventions are in ``docs/ARCHITECTURE.md`` (sensor-model conventions). Numpy only, except
:mod:`core.sensor.estimate`, which uses scipy.
"""

from .degrade import HaloWindow, degrade_spatial, degrade_spatial_adjoint, degrade_spatial_window, degrade_spectral, halo_window
from .estimate import estimate_psf_sigma, estimate_srf
from .psf import as_psf, box_psf, gaussian_psf, halo, psf_kernel, sigma_for_scale
from .simulate import add_noise, simulate_pair
from .srf import SpectralResponse, band_resampling_matrix, default_msi_bands, list_sensors, load_srf_csv, spectral_response

__all__ = [
    "HaloWindow",
    "SpectralResponse",
    "add_noise",
    "as_psf",
    "band_resampling_matrix",
    "box_psf",
    "default_msi_bands",
    "degrade_spatial",
    "degrade_spatial_adjoint",
    "degrade_spatial_window",
    "degrade_spectral",
    "estimate_psf_sigma",
    "estimate_srf",
    "gaussian_psf",
    "halo",
    "halo_window",
    "list_sensors",
    "load_srf_csv",
    "psf_kernel",
    "sigma_for_scale",
    "simulate_pair",
    "spectral_response",
]
