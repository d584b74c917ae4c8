"""Training losses of HSR-Diff and the torch sensor degradation ``D`` they use.

``loss = L1_w(Z0_hat, Z0) + w_msi * L1(R Z0_hat, X) + w_lr * L1(D(Z0_hat), Y) + w_sam * SAM(Z0_hat, Z0)``

Units: all three terms are measured in *normalised* units, each in the normalisation of the
quantity compared (HSI normalisation for ``Z0`` and ``Y``, MSI normalisation for ``X``), so the
terms are commensurate and the weights are unit-free.  The operators are applied in *physical*
units, where they are defined: ``Z0_hat`` is de-normalised, degraded (``R`` is a per-pixel matrix
product, ``D`` a PSF blur + decimation), then re-normalised.  (``D`` commutes with the per-band
affine normalisation because the PSF sums to one, ``R`` does not, hence the round trip.)

``L1_w`` is the L1 on ``Z0`` with optional per-band weights (``loss.band_weighting: residual``, see
``band_weights_from_residual``; equal weights by default).

The spectral-angle term is the mean angle (radians) between the physical spectra of ``Z0_hat`` and
``Z0`` per pixel, smoothed near zero (``sqrt(2 (1 - cos) + 1e-8)``: the angle to first order, with a
finite gradient): the L1 term alone lowers the error magnitude and lets the spectral shape drift.

``D`` follows docs/ARCHITECTURE.md exactly: crop HR rows/cols to a multiple of ``scale``,
reflect-pad by ``(k - scale) // 2``, depthwise correlation with the ``(k, k)`` PSF at stride
``scale`` - the same rule as ``core.sensor.degrade_spatial`` (tested for parity).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

__all__ = ["degrade_spatial_torch", "spectral_torch", "spectral_angle_torch", "band_weights_from_residual", "HSRLoss"]


def degrade_spatial_torch(x: torch.Tensor, scale: int, psf: torch.Tensor) -> torch.Tensor:
    """``(n, b, H, W)`` -> ``(n, b, H // scale, W // scale)`` with the ``(k, k)`` PSF."""
    k = psf.shape[-1]
    if k < scale or (k - scale) % 2:
        raise ValueError(f"PSF size {k} incompatible with scale {scale} (need k >= scale, k % 2 == scale % 2)")
    n, b, h, w = x.shape
    x = x[:, :, : (h // scale) * scale, : (w // scale) * scale]
    p = (k - scale) // 2
    if p:
        x = F.pad(x, (p, p, p, p), mode="reflect")
    weight = psf.to(x.dtype).reshape(1, 1, k, k).expand(b, 1, k, k)
    return F.conv2d(x, weight, stride=scale, groups=b)


def spectral_torch(x: torch.Tensor, srf: torch.Tensor) -> torch.Tensor:
    """``MSI = R @ HSI`` per pixel: ``(n, b, H, W)``, ``R`` ``(m, b)`` -> ``(n, m, H, W)``."""
    return torch.einsum("mb,nbhw->nmhw", srf.to(x.dtype), x)


def spectral_angle_torch(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean smoothed spectral angle (radians) between ``(n, b, H, W)`` cubes, over pixels."""
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    return torch.sqrt(2.0 * (1.0 - cos.clamp(-1.0, 1.0)) + eps).mean()


def band_weights_from_residual(rms: np.ndarray, clip: float = 5.0) -> np.ndarray:
    """``(bands,)`` L1 weights ``1 / rms_b``, clipped to ``[1/clip, clip]`` times their median, then scaled to mean 1.

    ``rms``: the base's per-band residual RMS on the training pixels.  Why: the benchmark's PSNR is a mean
    of per-band log errors, so a band whose base is already good loses as many dB to a small wrong
    correction as a poor band gains from a large right one; weighting each band's L1 by the inverse of its
    residual makes the loss count relative errors, as that PSNR (and ERGAS) do.
    """
    w = 1.0 / np.maximum(np.asarray(rms, np.float64), 1e-12)
    w = np.clip(w / np.median(w), 1.0 / clip, clip)
    return w / w.mean()


class HSRLoss(nn.Module):
    """The HSR-Diff training loss (see the module docstring); returns ``(total, parts dict)``."""

    def __init__(
        self,
        scale: int,
        psf: np.ndarray | None,
        srf: np.ndarray | None,
        hsi_norm,
        msi_norm,
        w_msi: float = 0.0,
        w_lr: float = 0.0,
        w_sam: float = 0.0,
        band_weights: np.ndarray | None = None,
    ):
        super().__init__()
        # Per-band weights of the L1 on Z0 (mean 1); None = equal.  See ``band_weights_from_residual``.
        bw = np.ones(1) if band_weights is None else np.asarray(band_weights, np.float64) / np.mean(band_weights)
        self.register_buffer("band_w", torch.as_tensor(bw, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.scale = int(scale)
        self.w_msi = float(w_msi) if srf is not None else 0.0
        self.w_lr = float(w_lr) if psf is not None else 0.0
        self.w_sam = float(w_sam)
        self.register_buffer("psf", torch.as_tensor(np.zeros((1, 1)) if psf is None else psf, dtype=torch.float32))
        self.register_buffer("srf", torch.as_tensor(np.zeros((1, 1)) if srf is None else srf, dtype=torch.float32))
        self.register_buffer("h_off", torch.as_tensor(hsi_norm.offset).reshape(1, -1, 1, 1))
        self.register_buffer("h_scale", torch.as_tensor(hsi_norm.scale).reshape(1, -1, 1, 1))
        self.register_buffer("m_off", torch.as_tensor(msi_norm.offset).reshape(1, -1, 1, 1))
        self.register_buffer("m_scale", torch.as_tensor(msi_norm.scale).reshape(1, -1, 1, 1))

    def forward(self, x0_hat: torch.Tensor, x0: torch.Tensor, msi: torch.Tensor | None = None, lr: torch.Tensor | None = None):
        x0_hat = x0_hat.float()
        err = (x0_hat - x0).abs()
        rec = err.mean()
        parts = {"l1": rec.detach()}  # unweighted, comparable with the base's L1
        total = (err * self.band_w).mean()
        if self.w_msi > 0 or self.w_lr > 0 or self.w_sam > 0:
            phys = x0_hat * self.h_scale + self.h_off
        if self.w_sam > 0:
            ls = spectral_angle_torch(phys, x0.float() * self.h_scale + self.h_off)
            parts["sam"] = ls.detach()
            total = total + self.w_sam * ls
        if self.w_msi > 0 and msi is not None:
            m = (spectral_torch(phys, self.srf) - self.m_off) / self.m_scale
            lm = F.l1_loss(m, msi)
            parts["msi"] = lm.detach()
            total = total + self.w_msi * lm
        if self.w_lr > 0 and lr is not None:
            y = (degrade_spatial_torch(phys, self.scale, self.psf) - self.h_off) / self.h_scale
            ll = F.l1_loss(y, lr)
            parts["lr_hsi"] = ll.detach()
            total = total + self.w_lr * ll
        return total, parts
