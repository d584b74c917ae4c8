"""CDFormer: the conditional denoising transformer of HSR-Diff (Wu et al., ICCV 2023).

Two streams, both at full (HR-MSI) resolution, no down-sampling:

* super-resolution stream: ``conv3x3(concat(lr_up, msi))`` then ``layers`` S2TLs producing the
  hierarchical conditioning features ``F_1 .. F_L``;
* denoising stream: ``conv3x3(concat(Z_t, lr_up))`` (``denoiser_lr_input``, on by default, as in
  SR3: the denoiser sees the conditioning image directly, not only through cross-attention),
  then ``layers`` conditional S2TLs, layer ``l`` merging the noise-level embedding (FiLM) and
  cross-attending to ``F_l``; a long skip from the shallow feature; output ``conv3x3``.

With ``residual`` (default on) the network predicts the detail to add to the bicubic input:
``x0 = lr_up + residual_scale * head(features)``, and the head is initialised small (or zero), so
an untrained model already returns (almost) the conditioning base - the biggest lever for quality at
small training budgets.  ``residual_scale`` is the typical size of that correction in normalised
units (the trainer measures it on the training pixels with ``residual_scale: auto``): a strong base
such as MTF-GLP-HS leaves errors of ~1e-3, and without the scale every Adam step of the head moves
the output by more than the whole correction it is meant to learn.

Denoiser contract (docs/ARCHITECTURE.md): ``forward(noisy, noise_level, lr_up, msi) -> x0``, all
normalised float32, ``noise_level = sqrt(gamma)`` ``(n,)``.  ``H`` and ``W`` must be multiples of
``model.spatial_multiple`` (= the attention window); callers reflect-pad and crop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from .blocks import S2TL, ConditionalS2TL
from .embedding import NoiseLevelEmbedding

__all__ = ["ModelConfig", "CDFormer", "PRESETS", "build_model", "count_parameters"]


@dataclass
class ModelConfig:
    hsi_bands: int
    msi_bands: int
    preset: str = "custom"
    width: int = 32
    layers: int = 2
    heads: int = 2  # spatial (window) attention heads
    spectral_heads: int = 2  # transposed (channel) attention heads, self and cross
    window: int = 8  # Swin window; H, W must be multiples of it
    ffn_expansion: float = 2.0
    emb_dim: int = 0  # noise-level embedding width; 0 = width
    emb_scale: float = 1000.0
    shift: bool = True  # shift every second layer's windows by window // 2 (Swin)
    residual: bool = True  # x0 = lr_up + head(features)
    denoiser_lr_input: bool = True  # denoising stream input conv sees concat(Z_t, lr_up)
    head_init_gain: float = 0.1  # the output conv's default init is scaled by this (0: start exactly at the base)
    residual_scale: float = 1.0  # x0 = lr_up + residual_scale * head(features), normalised units

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}")
        return cls(**d)


# Presets. "paper" follows the paper's width 256 and lands near its reported 31.6M parameters
# (see PRESET_NOTES); "small" is CPU-trainable; "tiny" is for tests (< 100k parameters).
PRESETS: dict[str, dict] = {
    "tiny": dict(width=16, layers=2, heads=2, spectral_heads=2, window=8, ffn_expansion=2.0),
    "small": dict(width=32, layers=3, heads=2, spectral_heads=2, window=8, ffn_expansion=2.0),
    "paper": dict(width=256, layers=11, heads=8, spectral_heads=8, window=8, ffn_expansion=2.6),
}


class CDFormer(nn.Module):
    """The HSR-Diff conditional denoiser; see the module docstring."""

    def __init__(self, config: ModelConfig | dict):
        super().__init__()
        if isinstance(config, dict):
            config = ModelConfig.from_dict(config)
        self.cfg = config
        c = config.width
        e = config.emb_dim or c
        self.spatial_multiple = int(config.window)
        self.embed = NoiseLevelEmbedding(e, config.emb_scale)
        self.sr_in = nn.Conv2d(config.hsi_bands + config.msi_bands, c, 3, padding=1)
        self.sr_layers = nn.ModuleList(
            S2TL(c, config.heads, config.spectral_heads, config.window, config.ffn_expansion, shift=config.shift and i % 2 == 1)
            for i in range(config.layers)
        )
        den_in = config.hsi_bands * (2 if config.denoiser_lr_input else 1)
        self.den_in = nn.Conv2d(den_in, c, 3, padding=1)
        self.den_layers = nn.ModuleList(
            ConditionalS2TL(
                c, e, config.heads, config.spectral_heads, config.window, config.ffn_expansion, shift=config.shift and i % 2 == 1
            )
            for i in range(config.layers)
        )
        self.head = nn.Conv2d(c, config.hsi_bands, 3, padding=1)
        with torch.no_grad():
            self.head.weight.mul_(config.head_init_gain)
            self.head.bias.zero_()

    @property
    def config(self) -> dict:
        """JSON-able model configuration (``CDFormer(config)`` rebuilds the same architecture)."""
        return self.cfg.to_dict()

    @property
    def feature_count(self) -> int:
        """How many tensors :meth:`condition` returns."""
        return len(self.sr_layers) + int(self.cfg.denoiser_lr_input)

    def condition(self, lr_up: torch.Tensor, msi: torch.Tensor) -> list[torch.Tensor]:
        """Everything that does not depend on the noise level, each ``(n, width, H, W)``: the super-resolution
        stream's features ``F_1 .. F_L`` and, when the denoising stream reads the base, the base's share of that
        stream's input convolution (``den_in`` is linear, so its base half is computed once, not at every step)."""
        f = self.sr_in(torch.cat([lr_up, msi], dim=1))
        feats = []
        for layer in self.sr_layers:
            f = layer(f)
            feats.append(f)
        if self.cfg.denoiser_lr_input:
            feats.append(F.conv2d(lr_up, self.den_in.weight[:, self.cfg.hsi_bands:], None, padding=self.den_in.padding))
        return feats

    def denoise(self, noisy: torch.Tensor, noise_level: torch.Tensor, lr_up: torch.Tensor, feats: list[torch.Tensor]):
        """Denoising stream given the tensors of :meth:`condition` (``lr_up``: the same base they were computed from)."""
        emb = self.embed(noise_level)
        shallow = F.conv2d(noisy, self.den_in.weight[:, :self.cfg.hsi_bands], self.den_in.bias, padding=self.den_in.padding)
        if self.cfg.denoiser_lr_input:
            shallow, feats = shallow + feats[-1], feats[:-1]
        h = shallow
        for layer, f in zip(self.den_layers, feats, strict=True):
            h = layer(h, emb, f)
        out = self.head(h + shallow)
        if self.cfg.residual_scale != 1.0:
            out = out * self.cfg.residual_scale
        return lr_up + out if self.cfg.residual else out

    def forward(self, noisy: torch.Tensor, noise_level: torch.Tensor, lr_up: torch.Tensor, msi: torch.Tensor) -> torch.Tensor:
        return self.denoise(noisy, noise_level, lr_up, self.condition(lr_up, msi))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_model(preset: str = "small", hsi_bands: int = 31, msi_bands: int = 3, **overrides) -> CDFormer:
    """Build a CDFormer from a preset name (``tiny``, ``small``, ``paper``) plus overrides."""
    if preset not in PRESETS and preset != "custom":
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    kwargs = dict(PRESETS.get(preset, {}))
    kwargs.update(overrides)
    kwargs.pop("preset", None)
    for k in ("hsi_bands", "msi_bands"):
        kwargs.pop(k, None)
    return CDFormer(ModelConfig(hsi_bands=int(hsi_bands), msi_bands=int(msi_bands), preset=preset, **kwargs))
