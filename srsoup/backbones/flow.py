"""The shared flow-matching step: a rectified-flow model seen as T stochastic SDE steps (SD3.5, FLUX.1, Sana).

The sigma schedule is diffusers' ``FlowMatchEulerDiscreteScheduler.set_timesteps`` (shift from the release's
config, or the resolution-dependent shift where the config asks for it), never re-derived here. Each step is the
SDE of the SRSoup reference code (after Flow-GRPO's ``sde_step_with_logprob``; DESIGN §1): with σ = σ_i,
σ' = σ_{i+1}, dt = σ' − σ < 0 and v the (guided) velocity,

    std = noise_level·√(σ / (1 − σ̂)),   σ̂ = σ_1 when σ = 1, else σ
    μ   = x·(1 + std²·dt/(2σ)) + v·(1 + std²·(1 − σ)/(2σ))·dt
    x'  = μ + std·√(−dt)·ε

so the step distribution is N(μ, (std·√(−dt))²); at ``noise_level`` 0 it is diffusers' Euler step x + dt·v.
A candidate x' is scored through x̂0 = x' − σ'·v(x', σ') (one eval); at the last step σ' = 0 and x' is decoded
directly.
A subclass supplies the model: ``_velocity(x, timestep, cond)``, ``latent_shape``, ``image_seq_len``, decoding,
and the custom sigmas its pipeline passes to the scheduler, if any (``_custom_sigmas``: FLUX.1).
"""

from __future__ import annotations

import math

import torch

from srsoup.backbones.base import Backbone, StepDistribution
from srsoup.errors import SrsoupError


def sde_step(
    x: torch.Tensor, v: torch.Tensor, sigma: float, sigma_next: float, sigma_1: float, noise_level: float
) -> tuple[torch.Tensor, float]:
    """Mean and noise scale of the reference SDE step from σ to σ' (see the module docstring).

    ``sigma_1`` is the schedule's second sigma, which stands in for σ in 1 − σ at σ = 1 (where 1 − σ = 0).
    Returns (μ, std·√(−dt)).
    """
    dt = sigma_next - sigma
    denom = 1 - (sigma_1 if sigma == 1 else sigma)
    std = noise_level * math.sqrt(sigma / denom)
    mean = x * (1 + std**2 * dt / (2 * sigma)) + v * (1 + std**2 * (1 - sigma) / (2 * sigma)) * dt
    return mean, std * math.sqrt(-dt)


class FlowBackbone(Backbone):
    """A flow-matching model under FlowMatchEuler sigmas with the reference SDE step (``noise_level``)."""

    def __init__(self, *, scheduler, noise_level: float = 0.8, **kwargs):
        super().__init__(**kwargs)
        if not (noise_level >= 0 and math.isfinite(noise_level)):
            raise SrsoupError(f"model.noise_level={noise_level} must be a finite number >= 0 (0: Euler's step)")
        self.scheduler = scheduler
        self.noise_level = float(noise_level)
        self.sigmas: list[float] = []
        self.timesteps: list[float] = []

    @classmethod
    def deterministic_reason(cls, options: dict, eta: float) -> str | None:
        return "model.noise_level=0" if options.get("noise_level", 0.8) == 0 else None

    # --- to be supplied by the model ----------------------------------------------------------------------
    @property
    def image_seq_len(self) -> int:
        """Image tokens the transformer sees (for the resolution-dependent shift)."""
        raise NotImplementedError

    def _velocity(self, x: torch.Tensor, timestep: float, cond) -> torch.Tensor:
        """Guided velocity of every item of ``x`` at the scheduler timestep ``timestep`` (counted and timed)."""
        raise NotImplementedError

    def _patch_resolution(self, resolution: int | None, autoencoder: str = "VAE") -> int:
        """``model.resolution`` for a transformer over patches of ``self.vae``'s latents: null = its sample size in
        pixels; else a multiple of the autoencoder's factor times the patch size (one error line otherwise)."""
        factor, patch = self.vae_scale_factor, self.transformer.config.patch_size
        default = self.transformer.config.sample_size * factor
        return self._checked_resolution(
            resolution, default, factor * patch, f"{autoencoder} factor {factor} x patch size {patch}"
        )

    # --- the schedule and the step ------------------------------------------------------------------------
    def _custom_sigmas(self, num_steps: int) -> list[float] | None:
        """Sigmas the model's pipeline passes to ``set_timesteps``, before shifting (None: the scheduler's own)."""
        return None

    def set_steps(self, num_steps: int) -> list[float]:
        """The scheduler's sigmas (T + 1 values ending at 0); the trace's ``timestep`` column holds σ."""
        kwargs = {}
        if self.scheduler.config.get("use_dynamic_shifting", False):
            kwargs["mu"] = self._dynamic_shift_mu()
        sigmas = self._custom_sigmas(num_steps)
        if sigmas is not None:
            kwargs["sigmas"] = sigmas
        self.scheduler.set_timesteps(num_steps, **kwargs)
        self.sigmas = [float(s) for s in self.scheduler.sigmas]
        self.timesteps = [float(t) for t in self.scheduler.timesteps]
        return self.sigmas[:-1]

    def _dynamic_shift_mu(self) -> float:
        """Resolution-dependent shift, as diffusers' SD3 and FLUX pipelines compute it (``calculate_shift``)."""
        c = self.scheduler.config
        base_len, max_len = c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096)
        base_shift, max_shift = c.get("base_shift", 0.5), c.get("max_shift", 1.15)
        m = (max_shift - base_shift) / (max_len - base_len)
        return self.image_seq_len * m + base_shift - m * base_len

    @torch.inference_mode()
    def step_distribution(self, x: torch.Tensor, step: int, cond) -> StepDistribution:
        sigma, sigma_next = self.sigmas[step], self.sigmas[step + 1]
        v = self._velocity(x, self.timesteps[step], cond)
        mean, scale = sde_step(x.float(), v, sigma, sigma_next, self.sigmas[1], self.noise_level)
        return StepDistribution(mean=mean, sigma=torch.tensor(scale, device=x.device), timestep=sigma)

    @torch.inference_mode()
    def candidate_x0(self, x_next: torch.Tensor, step: int, cond) -> torch.Tensor:
        if step + 1 >= len(self.timesteps):
            return x_next  # σ' = 0: the candidate is a final sample, decoded directly
        v = self._velocity(x_next, self.timesteps[step + 1], cond)
        return x_next.float() - self.sigmas[step + 1] * v
