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

import inspect
import json
import logging
from pathlib import Path

import torch

from srsoup.backbones.base import loading_errors, resolve_pretrained
from srsoup.backbones.ddim import DDIMBackbone, PromptCond, _load_index
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
        self.resolution = int(resolution or self.unet.config.sample_size * factor)
        if self.resolution % factor:
            raise SrsoupError(f"model.resolution={self.resolution} must be a multiple of the VAE factor {factor}")

    @classmethod
    def from_pretrained(
        cls,
        pretrained: str,
        *,
        revision: str | None = None,
        vae: str | None = None,
        vae_revision: str | None = None,
        resolution: int | None = None,
        eta: float = 1.0,
        device: torch.device,
        dtype: torch.dtype,
        cfg_scale: float,
        chunk_size: int = 64,
        local_files_only: bool | None = None,
        **scheduler_overrides,
    ) -> SDXLBackbone:
        """Load an SDXL diffusers folder or hub id; ``vae`` replaces its VAE (a hub id or a folder)."""
        from diffusers import DDIMScheduler, UNet2DConditionModel
        from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

        path, local = resolve_pretrained(pretrained, revision)
        kw = dict(revision=None if local else revision, local_files_only=local_files_only or local)
        with loading_errors(pretrained, revision, local):
            index = _load_index(path, kw)
            unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype, **kw)
            text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", dtype=dtype, **kw)
            text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(
                path, subfolder="text_encoder_2", dtype=dtype, **kw
            )
            tokenizer = AutoTokenizer.from_pretrained(path, subfolder="tokenizer", **kw)
            tokenizer_2 = AutoTokenizer.from_pretrained(path, subfolder="tokenizer_2", **kw)
            scheduler = DDIMScheduler.from_config(_ddim_config(path, kw))
            vae_model = None if vae else _vae_in_dtype(path, "vae", kw, dtype)
        if vae:
            vae_model = _load_vae(vae, vae_revision, local_files_only, dtype)
        if scheduler_overrides:
            scheduler = DDIMScheduler.from_config(scheduler.config, **scheduler_overrides)
        return cls(
            unet=unet,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            text_encoder_2=text_encoder_2,
            tokenizer_2=tokenizer_2,
            scheduler=scheduler,
            vae=vae_model,
            eta=eta,
            resolution=resolution,
            force_zeros_for_empty_prompt=bool(index.get("force_zeros_for_empty_prompt", True)),
            device=device,
            dtype=dtype,
            cfg_scale=cfg_scale,
            chunk_size=chunk_size,
        )

    # --- set-up -------------------------------------------------------------------------------------------
    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

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
        states = []
        for tok, enc in ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)):
            ids = tok(
                [prompt],
                padding="max_length",
                max_length=tok.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(self.device)
            out = enc(ids, output_hidden_states=True)
            states.append(out.hidden_states[-2])
        return torch.cat(states, dim=-1), out.text_embeds

    # --- decoding -----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1]; latents are cast to the VAE's own dtype (fp32 when it had to be upcast)."""
        vae_dtype = next(self.vae.parameters()).dtype
        scale = self.vae.config.scaling_factor
        shift = self.vae.config.get("shift_factor", None) or 0.0
        images = []
        for sl in self._chunks(len(x0)):
            z = (x0[sl].float() / scale + shift).to(vae_dtype)
            images.append(((self.vae.decode(z).sample.float() + 1) / 2).clamp(0, 1))
        return torch.cat(images)


def _ddim_config(path: str, kw: dict) -> dict:
    """The release's scheduler config (SDXL ships EulerDiscrete's) restricted to what DDIMScheduler takes."""
    from diffusers import DDIMScheduler

    if Path(path).is_dir():
        config = json.loads((Path(path) / "scheduler" / "scheduler_config.json").read_text())
    else:
        from huggingface_hub import hf_hub_download

        config = json.loads(
            Path(hf_hub_download(path, "scheduler_config.json", subfolder="scheduler", **kw)).read_text()
        )
    accepted = inspect.signature(DDIMScheduler.__init__).parameters
    return {k: v for k, v in config.items() if k in accepted}


def _vae_in_dtype(path: str, subfolder: str | None, kw: dict, dtype: torch.dtype):
    """The VAE in the run's dtype, or in fp32 when the run is fp16 and its config says it overflows there."""
    from diffusers import AutoencoderKL

    config = AutoencoderKL.load_config(path, subfolder=subfolder, **kw)
    if dtype == torch.float16 and config.get("force_upcast", False):
        log.info(
            "this VAE overflows in fp16 (force_upcast): it decodes in fp32; "
            "model.vae=madebyollin/sdxl-vae-fp16-fix avoids that"
        )
        dtype = torch.float32
    return AutoencoderKL.from_pretrained(path, subfolder=subfolder, torch_dtype=dtype, **kw)


def _load_vae(vae: str, revision: str | None, local_files_only: bool | None, dtype: torch.dtype):
    """A VAE from a hub id or folder with the VAE at its root (the fp16-fix repo) or in ``vae/``."""
    path, local = resolve_pretrained(vae, revision)
    subfolder = "vae" if local and not (Path(path) / "config.json").is_file() else None
    kw = dict(revision=None if local else revision, local_files_only=local_files_only or local)
    try:
        return _vae_in_dtype(path, subfolder, kw, dtype)
    except Exception as err:  # noqa: BLE001
        if local:
            raise SrsoupError(f"model.vae={vae!r} is not a VAE folder: {err}".splitlines()[0]) from None
        rev = f" --revision {revision}" if revision else ""
        raise SrsoupError(
            f"VAE {vae!r} is not available locally ({type(err).__name__}); download it first with "
            f"`huggingface-cli download {vae}{rev}` (or pass model.vae=<local folder>)"
        ) from None
