"""Building blocks of the CDFormer (HSR-Diff, Wu et al. ICCV 2023).

All modules work on ``(n, C, H, W)`` feature maps at full resolution.

* :class:`WindowAttention` - Swin-style multi-head self-attention inside non-overlapping
  ``window x window`` windows, with a learned relative position bias and (optionally) the
  cyclic half-window shift with its attention mask.
* :class:`SpectralAttention` - Restormer's MDTA: "transposed" attention across channels
  (the ``C x C`` attention map of L2-normalised queries and keys over all pixels), with
  1x1 + depthwise 3x3 projections.  With ``context`` it is a cross-attention: queries from the
  input, keys and values from the conditioning feature.
* :class:`GDFN` - Restormer's gated-dconv feed-forward network.
* :class:`S2TL` - spatial-spectral transformer layer: ``x += SpatialAttn(LN x)``,
  ``x += SpectralAttn(LN x)``, ``x += GDFN(LN x)``.
* :class:`ConditionalS2TL` - the noise-aware layer of the denoising stream: the same three
  sub-blocks with FiLM-modulated LayerNorms (scale/shift from the noise-level embedding), plus
  a spectral cross-attention to the matching super-resolution-stream feature ``F_l``.

Export rules: no data-dependent Python control flow; every shape used in a ``view``/``reshape``
comes from ``x.shape`` (traced dynamically by ``torch.onnx.export``) and the shifted-window
mask is built from tensor ops on the input (cumsum of ones), so the ONNX graph accepts any
batch and any ``H, W`` that are multiples of the window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

__all__ = ["LayerNorm2d", "WindowAttention", "SpectralAttention", "GDFN", "S2TL", "ConditionalS2TL"]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of ``(n, C, H, W)`` (per pixel), with affine weights."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels last, so the exported graph holds one LayerNormalization node (2.7x faster in ONNX Runtime
        # on the CPU than the mean and variance written out over the channel axis); in the weights' precision,
        # so a float16 export keeps its normalisations in float32.
        x = F.layer_norm(x.permute(0, 2, 3, 1).to(self.weight.dtype), self.weight.shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """``(n, H, W, C)`` -> ``(n * H/w * W/w, w*w, C)``."""
    n, h, w, c = x.shape
    x = x.reshape(n, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, n, h, w) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(n * nW, w*w, C)`` -> ``(n, H, W, C)``."""
    c = windows.shape[-1]
    x = windows.reshape(n, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(n, h, w, c)


def _shift_labels(ones: torch.Tensor, window: int, shift: int) -> torch.Tensor:
    """Swin region labels along one axis after a cyclic shift by ``-shift``: 0, 1 or 2.

    ``ones`` is a 1-D tensor of ones of the axis length, taken from the input so the length
    stays dynamic in the exported graph.  ``rev = length - index`` counts from the far end.
    """
    rev = ones.sum() - ones.cumsum(0) + 1.0
    return (rev <= window).to(ones.dtype) + (rev <= shift).to(ones.dtype)


class WindowAttention(nn.Module):
    """Multi-head self-attention in ``window x window`` windows (Swin), optional half shift."""

    def __init__(self, channels: int, heads: int, window: int, shift: bool = False):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} not divisible by heads {heads}")
        self.heads = heads
        self.window = window
        self.shift = window // 2 if shift else 0
        self.scale = (channels // heads) ** -0.5
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.rel_bias = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.rel_bias, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = coords[:, :, None] - coords[:, None, :] + (window - 1)
        self.register_buffer("rel_index", (rel[0] * (2 * window - 1) + rel[1]).long(), persistent=False)

    def _mask(self, x: torch.Tensor) -> torch.Tensor:
        """``(nW, T, T)`` additive mask (0 or -100) for the shifted windows of ``x`` ``(n, H, W, C)``."""
        rows = _shift_labels(torch.ones_like(x[0, :, 0, 0]), self.window, self.shift)
        cols = _shift_labels(torch.ones_like(x[0, 0, :, 0]), self.window, self.shift)
        labels = (rows[:, None] * 3.0 + cols[None, :])[None, :, :, None]  # (1, H, W, 1)
        lw = window_partition(labels, self.window)[..., 0]  # (nW, T)
        return (lw[:, :, None] != lw[:, None, :]).to(x.dtype) * -100.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        t = self.window * self.window
        x = x.permute(0, 2, 3, 1)  # (n, H, W, C)
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        win = window_partition(x, self.window)  # (B, T, C)
        qkv = self.qkv(win).reshape(-1, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, T, d)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.rel_bias[self.rel_index.reshape(-1)].reshape(t, t, self.heads).permute(2, 0, 1)
        attn = attn + bias[None]
        if self.shift:
            mask = self._mask(x)
            attn = attn.reshape(n, -1, self.heads, t, t) + mask[None, :, None]
            attn = attn.reshape(-1, self.heads, t, t)
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(-1, t, c)
        out = window_reverse(self.proj(out), self.window, n, h, w)
        if self.shift:
            out = torch.roll(out, shifts=(self.shift, self.shift), dims=(1, 2))
        return out.permute(0, 3, 1, 2)


class SpectralAttention(nn.Module):
    """Restormer MDTA (transposed attention across channels); cross-attention with ``context``."""

    def __init__(self, channels: int, heads: int, cross: bool = False):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} not divisible by heads {heads}")
        self.heads = heads
        self.cross = cross
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        if cross:
            self.q = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.Conv2d(channels, channels, 3, padding=1, groups=channels))
            self.kv = nn.Sequential(
                nn.Conv2d(channels, 2 * channels, 1), nn.Conv2d(2 * channels, 2 * channels, 3, padding=1, groups=2 * channels)
            )
        else:
            self.qkv = nn.Sequential(
                nn.Conv2d(channels, 3 * channels, 1), nn.Conv2d(3 * channels, 3 * channels, 3, padding=1, groups=3 * channels)
            )
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        if self.cross:
            q = self.q(x)
            k, v = self.kv(context).chunk(2, dim=1)
        else:
            q, k, v = self.qkv(x).chunk(3, dim=1)
        q = F.normalize(q.reshape(n, self.heads, c // self.heads, -1), dim=-1)
        k = F.normalize(k.reshape(n, self.heads, c // self.heads, -1), dim=-1)
        v = v.reshape(n, self.heads, c // self.heads, -1)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
        return self.proj((attn @ v).reshape(n, c, h, w))


class GDFN(nn.Module):
    """Gated-dconv feed-forward: ``1x1 -> dw3x3 -> GELU(a) * b -> 1x1``."""

    def __init__(self, channels: int, expansion: float = 2.0):
        super().__init__()
        hidden = int(round(channels * expansion))
        self.inp = nn.Conv2d(channels, 2 * hidden, 1)
        self.dw = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.out = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.dw(self.inp(x)).chunk(2, dim=1)
        return self.out(F.gelu(a) * b)


class S2TL(nn.Module):
    """Spatial-spectral transformer layer of the super-resolution stream."""

    def __init__(self, channels: int, heads: int, spectral_heads: int, window: int, expansion: float, shift: bool = False):
        super().__init__()
        self.norm1 = LayerNorm2d(channels)
        self.spatial = WindowAttention(channels, heads, window, shift)
        self.norm2 = LayerNorm2d(channels)
        self.spectral = SpectralAttention(channels, spectral_heads)
        self.norm3 = LayerNorm2d(channels)
        self.ffn = GDFN(channels, expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.spatial(self.norm1(x))
        x = x + self.spectral(self.norm2(x))
        return x + self.ffn(self.norm3(x))


class ConditionalS2TL(nn.Module):
    """Noise-aware S2TL of the denoising stream.

    ``emb`` ``(n, E)`` (the noise-level embedding) gives FiLM ``(1 + scale, shift)`` for the
    three self sub-blocks' LayerNorms; the cross-attention sub-block takes queries from
    ``LN(x)`` and keys/values from ``LN(F_l)``.
    """

    def __init__(self, channels: int, emb_dim: int, heads: int, spectral_heads: int, window: int, expansion: float, shift=False):
        super().__init__()
        self.film = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 6 * channels))
        self.norm1 = LayerNorm2d(channels)
        self.spatial = WindowAttention(channels, heads, window, shift)
        self.norm2 = LayerNorm2d(channels)
        self.spectral = SpectralAttention(channels, spectral_heads)
        self.norm_q = LayerNorm2d(channels)
        self.norm_c = LayerNorm2d(channels)
        self.cross = SpectralAttention(channels, spectral_heads, cross=True)
        self.norm3 = LayerNorm2d(channels)
        self.ffn = GDFN(channels, expansion)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        s1, b1, s2, b2, s3, b3 = self.film(emb)[:, :, None, None].chunk(6, dim=1)
        x = x + self.spatial(self.norm1(x) * (1.0 + s1) + b1)
        x = x + self.spectral(self.norm2(x) * (1.0 + s2) + b2)
        x = x + self.cross(self.norm_q(x), self.norm_c(cond))
        return x + self.ffn(self.norm3(x) * (1.0 + s3) + b3)
