"""FLUX.1 (dev, schnell): a FluxTransformer2DModel on the shared flow SDE step, over packed latents.

Everything the model sees is as ``FluxPipeline.__call__`` prepares it, so that a deterministic run
(``model.noise_level=0``) gives the pipeline's images from the same x_T:

- text: CLIP-L's pooled output (``CLIPTextModel``, 77 tokens) and T5-XXL's last hidden states
  (``max_sequence_length`` tokens), as ``FluxPipeline.encode_prompt``; text ids are zeros;
- latents: [C, H/8, W/8] drawn from the seed's CPU generator, then packed into 2x2 patches
  ((H/16)·(W/16) tokens of 4C channels) with their image ids, as ``FluxPipeline.prepare_latents``;
- schedule: custom sigmas ``linspace(1, 1/T, T)`` passed to ``set_timesteps``, shifted by μ = ``calculate_shift``
  of the packed sequence length where the release's scheduler asks for it (dev; schnell's config has no shift);
- the transformer gets ``timestep / 1000`` in the run's dtype and, for dev (``guidance_embeds``), the distilled
  guidance value ``sampler.cfg_scale`` as ``guidance``.

No classifier-free guidance: dev's guidance is an input of one transformer pass, so one pass per item is one
denoiser eval (``Backbone._predict``), for dev and schnell alike; schnell ignores ``sampler.cfg_scale``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from srsoup.backbones.base import clip_pooled, t5_states
from srsoup.backbones.flow import FlowBackbone
from srsoup.backbones.loading import open_components
from srsoup.errors import SrsoupError

log = logging.getLogger(__name__)

#: FluxPipeline's ``default_sample_size``: latent side of the default image (128 x VAE factor 8 = 1024 px).
DEFAULT_LATENT_SIDE = 128
#: FluxPipeline refuses more T5 tokens than this.
MAX_SEQUENCE_LENGTH = 512


@dataclass
class FluxCond:
    """Text conditioning of one prompt (no unconditional half: FLUX.1 runs without CFG)."""

    hidden: torch.Tensor  # [1, max_sequence_length, joint_attention_dim]: T5's states
    pooled: torch.Tensor  # [1, pooled_projection_dim]: CLIP's pooled output
    txt_ids: torch.Tensor  # [max_sequence_length, 3]: zeros, the pipeline's text position ids


class FluxBackbone(FlowBackbone):
    """FLUX.1: a guidance-distilled (dev) or timestep-distilled (schnell) flow transformer, one pass per eval."""

    rows_per_eval = 1

    def __init__(
        self,
        *,
        transformer,
        text_encoder,
        text_encoder_2,
        tokenizer,
        tokenizer_2,
        vae,
        resolution: int | None = None,
        max_sequence_length: int = MAX_SEQUENCE_LENGTH,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.transformer = transformer.to(self.device).eval()
        self.text_encoder = text_encoder.to(self.device).eval()
        self.text_encoder_2 = text_encoder_2.to(self.device).eval()
        self.tokenizer, self.tokenizer_2 = tokenizer, tokenizer_2
        self.vae = vae.to(self.device).eval()
        if not 1 <= max_sequence_length <= MAX_SEQUENCE_LENGTH:
            raise SrsoupError(
                f"model.max_sequence_length={max_sequence_length} must be between 1 and {MAX_SEQUENCE_LENGTH} "
                "(T5 tokens; FluxPipeline's limit)"
            )
        self.max_sequence_length = max_sequence_length
        factor = self.vae_scale_factor
        self.resolution = self._checked_resolution(
            resolution, DEFAULT_LATENT_SIDE * factor, 2 * factor, f"VAE factor {factor} x 2x2 latent packing"
        )
        self.guidance_embeds = bool(self.transformer.config.guidance_embeds)
        if not self.guidance_embeds:
            log.info(
                "this FLUX.1 model has no guidance embedding: sampler.cfg_scale=%s is not used", self.cfg_scale
            )
        from diffusers import FluxPipeline

        side = self.resolution // self.vae_scale_factor
        self.img_ids = FluxPipeline._prepare_latent_image_ids(1, side // 2, side // 2, self.device, self.dtype)

    @classmethod
    def from_pretrained(
        cls,
        pretrained: str,
        *,
        revision: str | None = None,
        local_files_only: bool | None = None,
        init: str = "pretrained",
        noise_level: float = 0.8,
        resolution: int | None = None,
        max_sequence_length: int = MAX_SEQUENCE_LENGTH,
        scheduler: dict | None = None,
        device: torch.device,
        dtype: torch.dtype,
        storage_dtype: torch.dtype | None = None,
        cfg_scale: float,
        chunk_size: int = 64,
    ) -> FluxBackbone:
        """Load each component ``model_index.json`` names (FluxPipeline's layout)."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        folder = open_components(
            pretrained, revision, local_files_only, dtype, init, device, storage_dtype=storage_dtype
        )
        folder.require(
            "transformer", "text_encoder", "text_encoder_2", "vae", "tokenizer", "tokenizer_2", family="a FLUX.1"
        )
        return cls(
            transformer=folder.component("transformer"),
            text_encoder=folder.component("text_encoder"),
            text_encoder_2=folder.component("text_encoder_2"),
            tokenizer=folder.tokenizer("tokenizer"),
            tokenizer_2=folder.tokenizer("tokenizer_2"),
            scheduler=folder.scheduler(FlowMatchEulerDiscreteScheduler, scheduler),
            vae=folder.vae(),
            noise_level=noise_level,
            resolution=resolution,
            max_sequence_length=max_sequence_length,
            device=device,
            dtype=dtype,
            cfg_scale=cfg_scale,
            chunk_size=chunk_size,
        )

    # --- set-up -------------------------------------------------------------------------------------------
    @property
    def _unpacked_shape(self) -> tuple[int, int, int]:
        side = self.resolution // self.vae_scale_factor
        return (self.transformer.config.in_channels // 4, side, side)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """(tokens, channels) of the packed latent: one token per 2x2 patch of the VAE latent."""
        c, h, w = self._unpacked_shape
        return ((h // 2) * (w // 2), 4 * c)

    @property
    def image_seq_len(self) -> int:
        return self.latent_shape[0]

    def _custom_sigmas(self, num_steps: int) -> list[float] | None:
        if self.scheduler.config.get("use_flow_sigmas", False):
            return None  # the pipeline lets such a scheduler space its own sigmas
        return np.linspace(1.0, 1 / num_steps, num_steps).tolist()

    def initial_latents(self, generator: torch.Generator) -> torch.Tensor:
        """x_T drawn unpacked from the seed's CPU generator, then packed, as ``FluxPipeline.prepare_latents``."""
        from diffusers import FluxPipeline

        c, h, w = self._unpacked_shape
        x = torch.randn((1, c, h, w), generator=generator, dtype=torch.float32)
        return FluxPipeline._pack_latents(x, 1, c, h, w).to(self.device)

    @torch.inference_mode()
    def encode_prompt(self, prompt: str) -> FluxCond:
        pooled = clip_pooled(self.tokenizer, self.text_encoder, prompt, self.device)
        hidden = t5_states(self.tokenizer_2, self.text_encoder_2, prompt, self.max_sequence_length, self.device)
        txt_ids = torch.zeros(hidden.shape[1], 3, device=self.device, dtype=self.dtype)
        return FluxCond(hidden=hidden.to(self.dtype), pooled=pooled.to(self.dtype), txt_ids=txt_ids)

    # --- per step -----------------------------------------------------------------------------------------
    def _velocity(self, x: torch.Tensor, timestep: float, cond: FluxCond) -> torch.Tensor:
        def forward(model_in: torch.Tensor, n: int) -> torch.Tensor:
            # The pipeline casts the timestep to the latents' dtype before dividing by 1000; so do we.
            t = torch.full((n,), timestep, device=self.device, dtype=self.dtype) / 1000
            guidance = None
            if self.guidance_embeds:
                guidance = torch.full((n,), self.cfg_scale, device=self.device, dtype=torch.float32)
            return self.transformer(
                hidden_states=model_in,
                timestep=t,
                guidance=guidance,
                pooled_projections=cond.pooled.expand(n, -1),
                encoder_hidden_states=cond.hidden.expand(n, -1, -1),
                txt_ids=cond.txt_ids,
                img_ids=self.img_ids,
                return_dict=False,
            )[0]

        return self._predict(x, forward)

    def _decode(self, x0: torch.Tensor) -> torch.Tensor:
        from diffusers import FluxPipeline

        z = FluxPipeline._unpack_latents(x0.contiguous(), self.resolution, self.resolution, self.vae_scale_factor)
        return self._vae_decode(z)
