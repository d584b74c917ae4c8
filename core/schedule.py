"""The noise schedule of the conditional diffusion model, written once (numpy only).

Training, the torch reference sampler, ONNX export (which embeds ``NoiseSchedule.to_dict``
in the model's metadata) and the ONNX Runtime sampler all read this module, so the forward
process and every reverse update are defined in exactly one place.

Conventions (SR3 / WaveGrad, as used by HSR-Diff, Wu et al. ICCV 2023):

* ``gamma_t = prod_{s<=t} (1 - beta_s)`` for ``t = 1..T``, with ``gamma_0 = 1``.
* Forward process ``q(Z_t | Z_0) = N(sqrt(gamma_t) Z_0, (1 - gamma_t) I)``.
* The network is conditioned on the continuous *noise level* ``sqrt(gamma)`` (a scalar in
  ``[0, 1]`` per sample), never on the integer step ``t``.
* The network predicts the clean image ``Z_0``; every reverse update is written as
  ``Z_prev = c_x0 * Z0_hat + c_xt * Z_t + sigma * noise``, so the samplers only apply the
  coefficients computed here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["NoiseSchedule", "SamplingStep", "sampling_plan"]


@dataclass(frozen=True)
class NoiseSchedule:
    """Linear beta schedule over ``steps`` training steps.

    The defaults are SR3's (T = 2000, beta from 1e-6 to 1e-2), which the HSR-Diff paper
    follows; ``gamma_T`` is then about 4.5e-5, so ``Z_T`` is pure noise to within 1 %.
    """

    steps: int = 2000
    beta_start: float = 1e-6
    beta_end: float = 1e-2

    @property
    def betas(self) -> np.ndarray:
        """``(T,)`` float64 betas for ``t = 1..T``."""
        return np.linspace(self.beta_start, self.beta_end, self.steps, dtype=np.float64)

    @property
    def gammas(self) -> np.ndarray:
        """``(T + 1,)`` float64 cumulative products, ``gammas[0] = 1`` and ``gammas[t] = gamma_t``."""
        return np.concatenate([[1.0], np.cumprod(1.0 - self.betas)])

    def sample_training_levels(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` training noise levels ``sqrt(gamma)``, float32 ``(n,)``.

        ``t`` is uniform on ``1..T`` and ``sqrt(gamma)`` uniform between ``sqrt(gamma_t)`` and
        ``sqrt(gamma_{t-1})`` (WaveGrad/SR3 continuous noise level).
        """
        g = np.sqrt(self.gammas)
        t = rng.integers(1, self.steps + 1, size=n)
        return rng.uniform(g[t], g[t - 1]).astype(np.float32)

    def to_dict(self) -> dict:
        return {"kind": "linear", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> NoiseSchedule:
        if d.get("kind", "linear") != "linear":
            raise ValueError(f"unknown noise schedule kind {d.get('kind')!r}")
        return cls(steps=int(d["steps"]), beta_start=float(d["beta_start"]), beta_end=float(d["beta_end"]))


def q_sample_coefficients(noise_level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward-process coefficients for ``Z_t = a * Z_0 + b * noise`` given ``sqrt(gamma)``."""
    noise_level = np.asarray(noise_level, dtype=np.float64)
    return noise_level, np.sqrt(np.clip(1.0 - noise_level**2, 0.0, 1.0))


@dataclass(frozen=True)
class SamplingStep:
    """One reverse update ``Z_prev = c_x0 * Z0_hat + c_xt * Z_t + sigma * noise``.

    ``noise_level`` is the ``sqrt(gamma_t)`` the network is given at this step.
    """

    index: int
    noise_level: float
    c_x0: float
    c_xt: float
    sigma: float


SAMPLERS = ("ancestral", "ddim")


def sampling_plan(schedule: NoiseSchedule, n_steps: int, sampler: str = "ddim", eta: float = 0.0) -> list[SamplingStep]:
    """The reverse-diffusion plan with ``n_steps`` network evaluations.

    The training schedule is respaced to ``n_steps`` levels evenly spaced in ``t`` (from
    ``T`` down to 1).  ``"ancestral"`` is the DDPM posterior ``q(Z_{t-1} | Z_t, Z0_hat)`` on the
    respaced schedule, as printed in the paper (with ``n_steps = T`` it is exactly the paper's
    update); ``"ddim"`` is Song et al.'s update with stochasticity ``eta`` (0 = deterministic).
    The last step never adds noise.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if not 1 <= n_steps <= schedule.steps:
        raise ValueError(f"n_steps must be in 1..{schedule.steps}, got {n_steps}")
    gammas = schedule.gammas
    ts = np.unique(np.round(np.linspace(schedule.steps, 1, n_steps)).astype(int))[::-1]
    plan: list[SamplingStep] = []
    for i, t in enumerate(ts):
        g_t = gammas[t]
        g_prev = gammas[ts[i + 1]] if i + 1 < len(ts) else 1.0
        if sampler == "ancestral":
            alpha = g_t / g_prev
            beta = 1.0 - alpha
            c_x0 = np.sqrt(g_prev) * beta / (1.0 - g_t)
            c_xt = np.sqrt(alpha) * (1.0 - g_prev) / (1.0 - g_t)
            var = beta * (1.0 - g_prev) / (1.0 - g_t)
            sigma = float(np.sqrt(max(var, 0.0)))
        else:
            sigma = eta * np.sqrt((1.0 - g_prev) / (1.0 - g_t) * (1.0 - g_t / g_prev))
            c_xt = np.sqrt(max(1.0 - g_prev - sigma**2, 0.0)) / np.sqrt(1.0 - g_t)
            c_x0 = np.sqrt(g_prev) - c_xt * np.sqrt(g_t)
        plan.append(SamplingStep(i, float(np.sqrt(g_t)), float(c_x0), float(c_xt), float(sigma)))
    return plan
