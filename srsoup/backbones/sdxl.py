"""SDXL as a DDIM backbone: two CLIP text encoders; pooled text embeds and size/crop time ids as added conditions.

Conditioning follows diffusers' ``StableDiffusionXLPipeline.encode_prompt`` (Podell et al. 2023, §2.2): the
penultimate hidden states of CLIP ViT-L (``text_encoder``) and OpenCLIP ViT-bigG (``text_encoder_2``,
``CLIPTextModelWithProjection``) concatenated along features; the pooled, projected embedding of the second;
``time_ids`` = (original size, crop top-left, target size) = (R, R, 0, 0, R, R). The unconditional half is zeros
when the pipeline says ``force_zeros_for_empty_prompt`` (SDXL base does), else the encoding of "". Both ride in
``PromptCond.extra``, which ``DDIMBackbone._cfg_eps`` repeats per batch item as ``added_cond_kwargs``.

The VAE may come from another repo (madebyollin/sdxl-vae-fp16-fix, as the paper's code uses): SDXL's own VAE
overflows in fp16, so a VAE whose config says ``force_upcast`` is kept and run in fp32 when the run is fp16.
"""

from __future__ import annotations

import logging

import torch

from srsoup.backbones.base import clip_penultimate
from srsoup.backbones.ddim import DDIMBackbone, PromptCond
from srsoup.backbones.loading import open_components, separate_vae
from srsoup.errors import SrsoupError

log = logging.getLogger(__name__)


class SDXLBackbone(DDIMBackbone):
    """UNet2DConditionModel (``addition_embed_type="text_time"``) with two text encoders under DDIM(η)."""

    def __init__(
        self,
        *,
        text_encoder_2,
        tokenizer_2,
        resolution: int | None = None,
        force_zeros_for_empty_prompt: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if self.vae is None:
            raise SrsoupError("SDXL needs a VAE: the model folder has no vae/ and model.vae is not set")
        self.text_encoder_2 = text_encoder_2.to(self.device).eval()
        self.tokenizer_2 = tokenizer_2
        self.force_zeros_for_empty_prompt = force_zeros_for_empty_prompt
        factor = self.vae_scale_factor
        self.resolution = self._checked_resolution(
            resolution, self.unet.config.sample_size * factor, factor, "the VAE factor"
        )

    @classmethod
    def from_pretrained(
        cls,
        pretrained: str,
        *,
        revision: str | None = None,
        local_files_only: bool | None = None,
        init: str = "pretrained",
        vae: str | None = None,
        vae_revision: str | None = None,
        resolution: int | None = None,
        scheduler: dict | None = None,
        device: torch.device,
        dtype: torch.dtype,
        storage_dtype: torch.dtype | None = None,
        cfg_scale: float,
        chunk_size: int = 64,
        eta: float = 1.0,
    ) -> SDXLBackbone:
        """Load an SDXL diffusers folder or hub id; ``vae`` replaces its VAE (a hub id or a folder)."""
        from diffusers import DDIMScheduler

        folder = open_components(
            pretrained, revision, local_files_only, dtype, init, device, storage_dtype=storage_dtype
        )
        folder.require("unet", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", family="an SDXL")
        return cls(
            unet=folder.component("unet"),
            text_encoder=folder.component("text_encoder"),
            tokenizer=folder.tokenizer("tokenizer"),
            text_encoder_2=folder.component("text_encoder_2"),
            tokenizer_2=folder.tokenizer("tokenizer_2"),
            # SDXL ships EulerDiscrete's config; DDIM takes the keys it knows.
            scheduler=folder.scheduler(DDIMScheduler, scheduler),
            vae=separate_vae(vae, vae_revision, local_files_only, dtype, init, device) if vae else folder.vae(),
            eta=eta,
            resolution=resolution,
            force_zeros_for_empty_prompt=bool(folder.index.get("force_zeros_for_empty_prompt", True)),
            device=device,
            dtype=dtype,
            cfg_scale=cfg_scale,
            chunk_size=chunk_size,
        )

    # --- set-up -------------------------------------------------------------------------------------------
    @property
    def latent_shape(self) -> tuple[int, ...]:
        side = self.resolution // self.vae_scale_factor
        return (self.unet.config.in_channels, side, side)

    @torch.inference_mode()
    def encode_prompt(self, prompt: str) -> PromptCond:
        hidden, pooled = self._encode(prompt)
        if self.force_zeros_for_empty_prompt:
            hidden_u, pooled_u = torch.zeros_like(hidden), torch.zeros_like(pooled)
        else:
            hidden_u, pooled_u = self._encode("")
        r = self.resolution
        time_ids = torch.tensor([[r, r, 0, 0, r, r]] * 2, device=self.device, dtype=self.dtype)
        return PromptCond(
            hidden=torch.cat([hidden_u, hidden]).to(self.dtype),
            extra={"text_embeds": torch.cat([pooled_u, pooled]).to(self.dtype), "time_ids": time_ids},
        )

    def _encode(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate hidden states of both encoders, concatenated; the second encoder's projected pooled one."""
        first, _ = clip_penultimate(self.tokenizer, self.text_encoder, prompt, self.device)
        second, pooled = clip_penultimate(self.tokenizer_2, self.text_encoder_2, prompt, self.device)
        return torch.cat([first, second], dim=-1), pooled
