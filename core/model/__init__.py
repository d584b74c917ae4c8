"""The CDFormer denoiser of HSR-Diff (torch; imported lazily by the rest of the project)."""

from .cdformer import PRESETS, CDFormer, ModelConfig, build_model, count_parameters

__all__ = ["build_model", "PRESETS", "CDFormer", "ModelConfig", "count_parameters"]
