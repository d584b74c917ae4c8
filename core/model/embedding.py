"""Noise-level embedding of the denoising stream.

The network is conditioned on the continuous noise level ``sqrt(gamma)`` in ``[0, 1]``
(SR3/WaveGrad), never on an integer step.  The level is multiplied by ``scale`` (default 1000,
so that neighbouring levels of a 2000-step schedule are distinguishable by the highest
frequencies) and encoded with transformer sinusoids, then passed through a 2-layer MLP.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["sinusoidal_embedding", "NoiseLevelEmbedding"]


def sinusoidal_embedding(level: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """``(n,)`` -> ``(n, dim)``: ``[sin(scale*level*f_k), cos(scale*level*f_k)]``, ``f_k = 1e4^(-k/half)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=level.device) / half)
    arg = (level.to(torch.float32) * scale)[:, None] * freqs[None, :]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


class NoiseLevelEmbedding(nn.Module):
    """Sinusoidal encoding of ``sqrt(gamma)`` followed by ``Linear -> SiLU -> Linear``."""

    def __init__(self, dim: int, scale: float = 1000.0):
        super().__init__()
        if dim % 2:
            raise ValueError("embedding dim must be even")
        self.dim = dim
        self.scale = scale
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, dim))

    def forward(self, level: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(level, self.dim, self.scale))
