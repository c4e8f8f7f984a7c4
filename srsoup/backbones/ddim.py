"""DDIM backbones: SD1.5-style models (UNet2DConditionModel + CLIPTextModel + optional VAE) and the embedded one.

The step distribution comes from diffusers' ``DDIMScheduler.step`` with η (DESIGN §1): μ is its
``prev_sample`` with zero variance noise and σ the difference that unit noise makes, so the schedule is never
re-derived by hand. The embedded model is the same code without a VAE (pixel space, decode = rescale); it is what
``pretrained: null`` loads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from srsoup.backbones.base import Backbone, StepDistribution, tokenize
from srsoup.backbones.loading import open_components
from srsoup.errors import SrsoupError

log = logging.getLogger(__name__)


@dataclass
class PromptCond:
    """Text conditioning for one prompt: the CFG pair stacked as [uncond, cond]."""

    hidden: torch.Tensor  # [2, tokens, dim]
    extra: dict | None = None  # model-specific added conditioning (SDXL), same stacking


class DDIMBackbone(Backbone):
    """UNet2DConditionModel with classifier-free guidance under a DDIM(η) scheduler."""

    def __init__(self, *, unet, text_encoder, tokenizer, scheduler, vae=None, eta: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.unet = unet.to(self.device).eval()
        self.text_encoder = text_encoder.to(self.device).eval()
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        self.vae = vae.to(self.device).eval() if vae is not None else None
        self.eta = eta
        self.timesteps: list[int] = []

    @classmethod
    def from_pretrained(
        cls,
        pretrained: str | None = None,
        *,
        revision: str | None = None,
        local_files_only: bool | None = None,
        init: str = "pretrained",
        scheduler: dict | None = None,
        device: torch.device,
        dtype: torch.dtype,
        storage_dtype: torch.dtype | None = None,
        cfg_scale: float,
        chunk_size: int = 64,
        eta: float = 1.0,
    ) -> DDIMBackbone:
        """Load a diffusers-layout folder or hub id (``vae/`` only if it has one); null = the embedded model.

        ``scheduler``: DDIMScheduler config overrides (e.g. ``{timestep_spacing: trailing}``).
        """
        from diffusers import DDIMScheduler

        folder = open_components(
            pretrained or str(_embedded_dir()),
            revision,
            local_files_only,
            dtype,
            init,
            device,
            storage_dtype=storage_dtype,
        )
        return cls(
            unet=folder.component("unet"),
            text_encoder=folder.component("text_encoder"),
            tokenizer=folder.tokenizer(),
            scheduler=folder.scheduler(DDIMScheduler, scheduler),
            vae=folder.vae() if folder.has("vae") else None,
            eta=eta,
            device=device,
            dtype=dtype,
            cfg_scale=cfg_scale,
            chunk_size=chunk_size,
        )

    # --- set-up -------------------------------------------------------------------------------------------
    @property
    def latent_shape(self) -> tuple[int, ...]:
        size = self.unet.config.sample_size
        return (self.unet.config.in_channels, size, size)

    def set_steps(self, num_steps: int) -> list[float]:
        self.scheduler.set_timesteps(num_steps)
        self.timesteps = [int(t) for t in self.scheduler.timesteps]
        if self.eta > 0 and float(self.scheduler.alphas_cumprod[self.timesteps[0]]) == 0.0:
            # diffusers' DDIM step at eta > 0 from alpha_bar = 0 takes the square root of a rounding error below
            # zero: every sample would be NaN.
            raise SrsoupError(
                f"the model's scheduler starts at zero SNR (alpha_bar = 0 at t = {self.timesteps[0]}: "
                "rescale_betas_zero_snr with trailing timesteps), where DDIM with eta > 0 gives NaN; save the "
                "scheduler with rescale_betas_zero_snr=false (the embedded model samples that way)"
            )
        return [float(t) for t in self.timesteps]

    @torch.inference_mode()
    def encode_prompt(self, prompt: str) -> PromptCond:
        ids = self._tokenize(["", prompt])
        hidden = self.text_encoder(ids.to(self.device)).last_hidden_state
        return PromptCond(hidden=hidden.to(self.dtype))

    def _tokenize(self, prompts: list[str]) -> torch.Tensor:
        tok = self.tokenizer
        ids = tokenize(tok, prompts)
        unk = getattr(tok, "unk_token_id", None)
        if unk is not None and unk != tok.pad_token_id and (ids == unk).any():
            words = [w for p in prompts for w in p.split() if unk in tok(w, add_special_tokens=False).input_ids]
            log.warning("words outside the model's vocabulary are ignored: %s", ", ".join(words) or "?")
        return ids

    # --- per step -----------------------------------------------------------------------------------------
    def _cfg_eps(self, x: torch.Tensor, t: int, cond: PromptCond) -> torch.Tensor:
        """CFG noise prediction; the uncond/cond pair of an item is one doubled batch and one eval."""

        def forward(model_in: torch.Tensor, n: int) -> torch.Tensor:
            kwargs = {}
            if cond.extra:
                kwargs["added_cond_kwargs"] = {k: v.repeat_interleave(n, dim=0) for k, v in cond.extra.items()}
            hidden = cond.hidden.repeat_interleave(n, dim=0)
            return self.unet(model_in, t, encoder_hidden_states=hidden, **kwargs).sample

        return self._cfg(x, forward)

    @torch.inference_mode()
    def step_distribution(self, x: torch.Tensor, step: int, cond: PromptCond) -> StepDistribution:
        t = self.timesteps[step]
        eps = self._cfg_eps(x, t, cond)
        zeros = torch.zeros_like(x)
        mean = self.scheduler.step(eps, t, x, eta=self.eta, variance_noise=zeros).prev_sample
        # σ is the scheduler's own std_dev_t: the shift that unit variance noise makes to prev_sample.
        unit = self.scheduler.step(eps[:1], t, x[:1], eta=self.eta, variance_noise=torch.ones_like(x[:1]))
        sigma = (unit.prev_sample - mean[:1]).mean()
        return StepDistribution(mean=mean, sigma=sigma, timestep=float(t))

    @torch.inference_mode()
    def candidate_x0(self, x_next: torch.Tensor, step: int, cond: PromptCond) -> torch.Tensor:
        if step + 1 >= len(self.timesteps):
            return x_next  # the last step's candidates are final samples: decoded directly (DESIGN §1)
        t_next = self.timesteps[step + 1]
        eps = self._cfg_eps(x_next, t_next, cond)
        return self.scheduler.step(eps, t_next, x_next, eta=0.0).pred_original_sample

    def _decode(self, x0: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            return ((x0.float() + 1) / 2).clamp(0, 1)  # pixel space (the embedded model)
        return self._vae_decode(x0)


def _embedded_dir():
    """The model shipped inside the package (``model=tiny``)."""
    from srsoup.tiny import WEIGHTS_DIR

    if not (WEIGHTS_DIR / "model_index.json").exists():
        raise SrsoupError(f"the embedded weights are missing from {WEIGHTS_DIR.name}/; reinstall srsoup")
    return WEIGHTS_DIR
