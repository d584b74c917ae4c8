"""Torch reference sampler: reverse diffusion with the coefficients of ``core.schedule.sampling_plan``.

``X_T ~ N(0, I)``; for each planned step ``z0 = model(X_t, sqrt(gamma_t), lr_up, msi)`` and
``X_prev = c_x0 * z0 + c_base * lr_up + c_xt * X_t + sigma * noise``; the result is ``decode(X_0)``
(``NoiseSchedule.variable``: ``X`` is the image itself or its scaled residual over ``lr_up``).  Nothing about the schedule is defined here.
All noise comes from a CPU ``torch.Generator`` seeded with ``seed`` (then moved to the model's
device), so a given seed gives the same result on any device up to floating-point rounding.
The super-resolution stream does not depend on the noise level, so it is evaluated once
(``model.condition``) and reused at every step when the model offers it.
"""

from __future__ import annotations

import torch

from core.schedule import NoiseSchedule, sampling_plan

__all__ = ["sample"]


@torch.no_grad()
def sample(
    model,
    lr_up: torch.Tensor,
    msi: torch.Tensor,
    schedule: NoiseSchedule,
    steps: int = 50,
    sampler: str = "ddim",
    eta: float = 0.0,
    seed: int = 0,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Sample ``Z_0`` ``(n, hsi_bands, H, W)`` (normalised units) given normalised ``lr_up`` and ``msi``."""
    plan = sampling_plan(schedule, steps, sampler, eta)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    device = lr_up.device
    n = lr_up.shape[0]
    net = getattr(model, "module", model)  # unwrap DDP
    # Reflect-pad to the model's spatial multiple (its attention window), crop at the end.
    h, w = lr_up.shape[-2:]
    mult = int(getattr(net, "spatial_multiple", 1))
    ph, pw = (-h) % mult, (-w) % mult
    if ph or pw:
        lr_up = torch.nn.functional.pad(lr_up, (0, pw, 0, ph), mode="reflect")
        msi = torch.nn.functional.pad(msi, (0, pw, 0, ph), mode="reflect")
    z = torch.randn(lr_up.shape, generator=gen, dtype=torch.float32).to(device)
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        feats = net.condition(lr_up, msi) if hasattr(net, "condition") else None
        for st in plan:
            level = torch.full((n,), st.noise_level, dtype=torch.float32, device=device)
            x0 = net.denoise(z, level, lr_up, feats) if feats is not None else net(z, level, lr_up, msi)
            z = st.c_x0 * x0.float() + st.c_xt * z
            if st.c_base:
                z = z + st.c_base * lr_up.float()
            if st.sigma > 0:
                z = z + st.sigma * torch.randn(z.shape, generator=gen, dtype=torch.float32).to(device)
    return schedule.decode(z, lr_up.float())[..., :h, :w]
