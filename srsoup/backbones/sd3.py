"""Stable Diffusion 3.x (3.5-medium, 3.5-large): an SD3Transformer2DModel (MMDiT) on the shared flow SDE step.

Text conditioning follows ``StableDiffusion3Pipeline.encode_prompt``: penultimate hidden states of CLIP-L and
CLIP-G (both ``CLIPTextModelWithProjection``) concatenated and zero-padded to T5's width, then T5's sequence after
them; pooled = both projected CLIP embeddings. Without T5 (``text_encoder_3`` null in model_index.json) its part is
zeros, as the pipeline does. The unconditional half encodes "" the same way. CFG runs the uncond/cond pair as one
doubled batch: one denoiser eval per item.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from srsoup.backbones.base import clip_penultimate, t5_states
from srsoup.backbones.flow import FlowBackbone
from srsoup.backbones.loading import open_components
from srsoup.errors import SrsoupError

log = logging.getLogger(__name__)


@dataclass
class FlowCond:
    """Text conditioning of one prompt, the CFG pair stacked as [uncond, cond]."""

    hidden: torch.Tensor  # [2, tokens, joint_attention_dim]
    pooled: torch.Tensor  # [2, pooled_projection_dim]


class SD3Backbone(FlowBackbone):
    """SD3-family model: MMDiT transformer, three text encoders, a VAE, FlowMatchEuler sigmas, SDE steps."""

    def __init__(
        self,
        *,
        transformer,
        text_encoders: list,
        tokenizers: list,
        vae,
        resolution: int | None = None,
        max_sequence_length: int = 256,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.transformer = transformer.to(self.device).eval()
        self.text_encoders = [None if e is None else e.to(self.device).eval() for e in text_encoders]
        self.tokenizers = tokenizers
        self.vae = vae.to(self.device).eval()
        self.max_sequence_length = max_sequence_length
        self.resolution = self._patch_resolution(resolution)

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
        max_sequence_length: int = 256,
        scheduler: dict | None = None,
        device: torch.device,
        dtype: torch.dtype,
        storage_dtype: torch.dtype | None = None,
        cfg_scale: float,
        chunk_size: int = 64,
    ) -> SD3Backbone:
        """Load each component named in ``model_index.json`` (``text_encoder_3`` may be null: no T5)."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        folder = open_components(
            pretrained, revision, local_files_only, dtype, init, device, storage_dtype=storage_dtype
        )
        folder.require(
            "transformer", "text_encoder", "text_encoder_2", "vae", "tokenizer", "tokenizer_2", family="an SD3"
        )
        if folder.has("text_encoder_3") != folder.has("tokenizer_3"):
            raise SrsoupError(f"model {pretrained!r} has text_encoder_3 or tokenizer_3 but not both")
        if not folder.has("text_encoder_3"):
            log.info("no T5 text encoder (text_encoder_3 is null): its embeddings are zeros, as diffusers does")
        suffixes = ("", "_2", "_3")
        return cls(
            transformer=folder.component("transformer"),
            text_encoders=[
                folder.component(f"text_encoder{s}") if folder.has(f"text_encoder{s}") else None for s in suffixes
            ],
            tokenizers=[
                folder.tokenizer(f"tokenizer{s}") if folder.has(f"tokenizer{s}") else None for s in suffixes
            ],
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
    def latent_shape(self) -> tuple[int, ...]:
        side = self.resolution // self.vae_scale_factor
        return (self.transformer.config.in_channels, side, side)

    @property
    def image_seq_len(self) -> int:
        _, h, w = self.latent_shape
        patch = self.transformer.config.patch_size
        return (h // patch) * (w // patch)

    @torch.inference_mode()
    def encode_prompt(self, prompt: str) -> FlowCond:
        hidden_u, pooled_u = self._encode("")
        hidden, pooled = self._encode(prompt)
        return FlowCond(
            hidden=torch.cat([hidden_u, hidden]).to(self.dtype),
            pooled=torch.cat([pooled_u, pooled]).to(self.dtype),
        )

    def _encode(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        clips = [
            clip_penultimate(t, e, prompt, self.device)
            for t, e in zip(self.tokenizers[:2], self.text_encoders[:2])
        ]
        clip = torch.cat([h for h, _ in clips], dim=-1)
        pooled = torch.cat([p for _, p in clips], dim=-1)
        t5_tok, t5 = self.tokenizers[2], self.text_encoders[2]
        if t5 is None:
            width = self.transformer.config.joint_attention_dim
            t5_hidden = torch.zeros((1, self.max_sequence_length, width), device=self.device, dtype=clip.dtype)
        else:
            t5_hidden = t5_states(t5_tok, t5, prompt, self.max_sequence_length, self.device).to(clip.dtype)
        clip = F.pad(clip, (0, t5_hidden.shape[-1] - clip.shape[-1]))
        return torch.cat([clip, t5_hidden], dim=-2), pooled

    # --- per step -----------------------------------------------------------------------------------------
    def _velocity(self, x: torch.Tensor, timestep: float, cond: FlowCond) -> torch.Tensor:
        def forward(model_in: torch.Tensor, n: int) -> torch.Tensor:
            # float32 timesteps as the pipeline passes them (σ·1000 in bf16 would be off by several units)
            t = torch.full((2 * n,), timestep, device=self.device, dtype=torch.float32)
            return self.transformer(
                hidden_states=model_in,
                timestep=t,
                encoder_hidden_states=cond.hidden.repeat_interleave(n, dim=0),
                pooled_projections=cond.pooled.repeat_interleave(n, dim=0),
                return_dict=False,
            )[0]

        return self._cfg(x, forward)

    def _decode(self, x0: torch.Tensor) -> torch.Tensor:
        return self._vae_decode(x0)
