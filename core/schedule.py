"""The noise schedule of the conditional diffusion model, written once (numpy only).

Training, the torch reference sampler, ONNX export (which embeds ``NoiseSchedule.to_dict``
in the model's metadata) and the ONNX Runtime sampler all read this module, so the forward
process and every reverse update are defined in exactly one place.

Conventions (SR3 / WaveGrad, as used by HSR-Diff, Wu et al. ICCV 2023):

* ``gamma_t = prod_{s<=t} (1 - beta_s)`` for ``t = 1..T``, with ``gamma_0 = 1``.
* Forward process ``q(Z_t | Z_0) = N(sqrt(gamma_t) Z_0, (1 - gamma_t) I)``.
* The network is conditioned on the continuous *noise level* ``sqrt(gamma)`` (a scalar in
  ``[0, 1]`` per sample), never on the integer step ``t``.
* The network predicts the clean image ``Z0_hat``; every reverse update is written as
  ``X_prev = c_x0 * Z0_hat + c_base * base + c_xt * X_t + sigma * noise`` (``c_x0`` and ``c_base``
  fold the encoding of ``Z0_hat`` into the diffused variable), so the samplers only apply the
  coefficients computed here, and decode ``X_0`` at the end.
* The diffused variable ``X`` (``NoiseSchedule.variable``) is either the normalised image itself
  (``"image"``, the paper's formulation: ``X = Z``) or the normalised residual over the
  conditioning base (``"residual"``: ``X = (Z - base) / variable_scale``, about unit variance on
  the training pixels). ``NoiseSchedule.encode`` / ``decode`` map between the two; the network
  always takes ``X_t`` and returns the clean image ``Z0_hat``, which the samplers encode before
  the update and decode at the end.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["NoiseSchedule", "SamplingStep", "sampling_plan", "VARIABLES"]

VARIABLES = ("image", "residual")


@dataclass(frozen=True)
class NoiseSchedule:
    """Linear beta schedule over ``steps`` training steps.

    The defaults are SR3's (T = 2000, beta from 1e-6 to 1e-2), which the HSR-Diff paper
    follows; ``gamma_T`` is then about 4.5e-5, so ``X_T`` is pure noise to within 1 %.
    ``variable`` / ``variable_scale``: what is diffused (module docstring). Why a residual: with
    a strong base (MTF-GLP-HS) the image differs from the base by ~1e-3 in normalised units, so a
    noisy image ``Z_t`` says nothing about the correction except at the last ~1 % of noise levels
    and the network learns to ignore it; the scaled residual keeps every noise level informative.
    """

    steps: int = 2000
    beta_start: float = 1e-6
    beta_end: float = 1e-2
    variable: str = "image"
    variable_scale: float = 1.0

    def __post_init__(self):
        if self.variable not in VARIABLES:
            raise ValueError(f"schedule variable must be one of {VARIABLES}, got {self.variable!r}")
        if not self.variable_scale > 0:
            raise ValueError(f"schedule variable_scale must be positive, got {self.variable_scale}")

    def encode(self, z0, base):
        """The diffused variable ``X`` of a normalised image ``z0`` over its base (numpy or torch, any shape)."""
        return z0 if self.variable == "image" else (z0 - base) * (1.0 / self.variable_scale)

    def decode(self, x, base):
        """The normalised image of a diffused variable ``x`` (inverse of :meth:`encode`)."""
        return x if self.variable == "image" else base + self.variable_scale * x

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
        return cls(steps=int(d["steps"]), beta_start=float(d["beta_start"]), beta_end=float(d["beta_end"]),
                   variable=str(d.get("variable", "image")), variable_scale=float(d.get("variable_scale", 1.0)))


def q_sample_coefficients(noise_level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward-process coefficients for ``Z_t = a * Z_0 + b * noise`` given ``sqrt(gamma)``."""
    noise_level = np.asarray(noise_level, dtype=np.float64)
    return noise_level, np.sqrt(np.clip(1.0 - noise_level**2, 0.0, 1.0))


@dataclass(frozen=True)
class SamplingStep:
    """One reverse update ``X_prev = c_x0 * Z0_hat + c_base * base + c_xt * X_t + sigma * noise``.

    ``noise_level`` is the ``sqrt(gamma_t)`` the network is given at this step; ``Z0_hat`` is the
    network's clean image and ``base`` the conditioning base (``c_base`` is 0 for ``variable = "image"``).
    """

    index: int
    noise_level: float
    c_x0: float
    c_xt: float
    sigma: float
    c_base: float = 0.0


SAMPLERS = ("ancestral", "ddim")


def sampling_plan(schedule: NoiseSchedule, n_steps: int, sampler: str = "ddim", eta: float = 0.0) -> list[SamplingStep]:
    """The reverse-diffusion plan with ``n_steps`` network evaluations.

    The training schedule is respaced to ``n_steps`` levels evenly spaced in ``t`` (from
    ``T`` down to 1).  ``"ancestral"`` is the DDPM posterior ``q(Z_{t-1} | Z_t, Z0_hat)`` on the
    respaced schedule, as printed in the paper (with ``n_steps = T`` it is exactly the paper's
    update); ``"ddim"`` is Song et al.'s update with stochasticity ``eta`` (0 = deterministic).
    The last step never adds noise, and gives ``X_0 = encode(Z0_hat)`` exactly (``c_xt = 0``).
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
        # X0 = encode(Z0_hat) = a * Z0_hat + b * base
        a, b = (1.0, 0.0) if schedule.variable == "image" else (1.0 / schedule.variable_scale, -1.0 / schedule.variable_scale)
        plan.append(SamplingStep(i, float(np.sqrt(g_t)), float(a * c_x0), float(c_xt), float(sigma), float(b * c_x0)))
    return plan
