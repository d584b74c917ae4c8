"""Training of the HSR-Diff CDFormer (torch): data, losses, trainer, DDP, checkpoints, sampler.

Import submodules directly (``core.training.checkpoint.load_for_export``, ...); this package
imports nothing heavy at import time.
"""

__all__ = ["checkpoint", "data", "distributed", "losses", "sampler", "trainer"]
