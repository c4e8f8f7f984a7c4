"""Flow-matching backbone (SD3.5-medium): an SD3Transformer2DModel seen as T stochastic SDE steps.

The sigma schedule is diffusers' ``FlowMatchEulerDiscreteScheduler.set_timesteps`` (shift from the release's
config), never re-derived here. Each step is the SDE of the SRSoup reference code (after Flow-GRPO's
``sde_step_with_logprob``; DESIGN §1): with σ = σ_i, σ' = σ_{i+1}, dt = σ' − σ < 0 and v the CFG velocity,

    std = noise_level·√(σ / (1 − σ̂)),   σ̂ = σ_1 when σ = 1, else σ
    μ   = x·(1 + std²·dt/(2σ)) + v·(1 + std²·(1 − σ)/(2σ))·dt
    x'  = μ + std·√(−dt)·ε

so the step distribution is N(μ, (std·√(−dt))²). A candidate x' is scored through x̂0 = x' − σ'·v(x', σ') (one CFG
eval); at the last step σ' = 0 and x' is decoded directly.

Text conditioning follows ``StableDiffusion3Pipeline.encode_prompt``: penultimate hidden states of CLIP-L and
CLIP-G (both ``CLIPTextModelWithProjection``) concatenated and zero-padded to T5's width, then T5's sequence after
them; pooled = both projected CLIP embeddings. Without T5 (``text_encoder_3`` null in model_index.json) its part is
zeros, as the pipeline does. The unconditional half encodes "" the same way.
"""

from __future__ import annotations

import importlib
import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from srsoup.backbones.base import Backbone, StepDistribution, loading_errors, resolve_pretrained
from srsoup.errors import SrsoupError

log = logging.getLogger(__name__)


@dataclass
class FlowCond:
    """Text conditioning of one prompt, the CFG pair stacked as [uncond, cond]."""

    hidden: torch.Tensor  # [2, tokens, joint_attention_dim]
    pooled: torch.Tensor  # [2, pooled_projection_dim]


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
    """SD3-family model: MMDiT transformer, three text encoders, FlowMatchEuler sigmas, SDE steps."""

    default_soup_end_step = 10

    def __init__(
        self,
        *,
        transformer,
        text_encoders: list,
        tokenizers: list,
        scheduler,
        vae,
        noise_level: float = 0.8,
        resolution: int | None = None,
        max_sequence_length: int = 256,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.transformer = transformer.to(self.device).eval()
        self.text_encoders = [None if e is None else e.to(self.device).eval() for e in text_encoders]
        self.tokenizers = tokenizers
        self.scheduler = scheduler
        self.vae = vae.to(self.device).eval()
        self.noise_level = float(noise_level)
        self.max_sequence_length = max_sequence_length
        factor = self.vae_scale_factor
        self.resolution = int(resolution or self.transformer.config.sample_size * factor)
        patch = self.transformer.config.patch_size
        if self.resolution % (factor * patch):
            raise SrsoupError(
                f"model.resolution={self.resolution} must be a multiple of {factor * patch} "
                f"(VAE factor {factor} x patch size {patch})"
            )
        self.sigmas: list[float] = []
        self.timesteps: list[float] = []

    @classmethod
    def from_pretrained(
        cls,
        pretrained: str,
        *,
        revision: str | None = None,
        noise_level: float = 0.8,
        resolution: int | None = None,
        device: torch.device,
        dtype: torch.dtype,
        cfg_scale: float,
        chunk_size: int = 64,
        max_sequence_length: int = 256,
        local_files_only: bool | None = None,
        **scheduler_overrides,
    ) -> FlowBackbone:
        """Load each component named in ``model_index.json`` (``text_encoder_3`` may be null: no T5)."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        from srsoup.backbones.ddim import _load_index

        path, local = resolve_pretrained(pretrained, revision)
        kw = dict(revision=None if local else revision, local_files_only=local_files_only or local)
        with loading_errors(pretrained, revision, local):
            index = _load_index(path, kw)
            transformer = _component(path, index, "transformer", kw, dtype)
            encoders = [_component(path, index, f"text_encoder{s}", kw, dtype) for s in ("", "_2", "_3")]
            tokenizers = [_component(path, index, f"tokenizer{s}", kw) for s in ("", "_2", "_3")]
            scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(path, subfolder="scheduler", **kw)
            vae = _vae_in_dtype(path, kw, dtype) if index.get("vae", [None])[0] else None
        for name, part in (
            ("transformer", transformer),
            ("text_encoder", encoders[0]),
            ("text_encoder_2", encoders[1]),
            ("vae", vae),
            ("tokenizer", tokenizers[0]),
            ("tokenizer_2", tokenizers[1]),
        ):
            if part is None:
                raise SrsoupError(f"model {pretrained!r} has no {name} (model_index.json); it is not an SD3 model")
        if (encoders[2] is None) != (tokenizers[2] is None):
            raise SrsoupError(f"model {pretrained!r} has text_encoder_3 or tokenizer_3 but not both")
        if encoders[2] is None:
            log.info("no T5 text encoder (text_encoder_3 is null): its embeddings are zeros, as diffusers does")
        if scheduler_overrides:
            scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler.config, **scheduler_overrides)
        return cls(
            transformer=transformer,
            text_encoders=encoders,
            tokenizers=tokenizers,
            scheduler=scheduler,
            vae=vae,
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
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        side = self.resolution // self.vae_scale_factor
        return (self.transformer.config.in_channels, side, side)

    def set_steps(self, num_steps: int) -> list[float]:
        """The scheduler's sigmas (T + 1 values ending at 0); the trace's ``timestep`` column holds σ."""
        kwargs = {}
        if self.scheduler.config.get("use_dynamic_shifting", False):
            kwargs["mu"] = self._dynamic_shift_mu()
        self.scheduler.set_timesteps(num_steps, **kwargs)
        self.sigmas = [float(s) for s in self.scheduler.sigmas]
        self.timesteps = [float(t) for t in self.scheduler.timesteps]
        return self.sigmas[:-1]

    def _dynamic_shift_mu(self) -> float:
        """Resolution-dependent shift, as diffusers' SD3 pipeline computes it (``calculate_shift``)."""
        c = self.scheduler.config
        _, h, w = self.latent_shape
        seq = (h // self.transformer.config.patch_size) * (w // self.transformer.config.patch_size)
        m = (c.get("max_shift", 1.15) - c.get("base_shift", 0.5)) / (
            c.get("max_image_seq_len", 4096) - c.get("base_image_seq_len", 256)
        )
        return seq * m + c.get("base_shift", 0.5) - m * c.get("base_image_seq_len", 256)

    @torch.inference_mode()
    def encode_prompt(self, prompt: str) -> FlowCond:
        hidden_u, pooled_u = self._encode("")
        hidden, pooled = self._encode(prompt)
        return FlowCond(
            hidden=torch.cat([hidden_u, hidden]).to(self.dtype),
            pooled=torch.cat([pooled_u, pooled]).to(self.dtype),
        )

    def _encode(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        clip_states, pooled = [], []
        for tok, enc in zip(self.tokenizers[:2], self.text_encoders[:2]):
            ids = tok(
                [prompt],
                padding="max_length",
                max_length=tok.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(self.device)
            out = enc(ids, output_hidden_states=True)
            clip_states.append(out.hidden_states[-2])
            pooled.append(out.text_embeds)
        clip = torch.cat(clip_states, dim=-1)
        t5_tok, t5 = self.tokenizers[2], self.text_encoders[2]
        if t5 is None:
            t5_states = torch.zeros(
                (1, self.max_sequence_length, self.transformer.config.joint_attention_dim),
                device=self.device,
                dtype=clip.dtype,
            )
        else:
            ids = t5_tok(
                [prompt],
                padding="max_length",
                max_length=self.max_sequence_length,
                truncation=True,
                add_special_tokens=True,
                return_tensors="pt",
            ).input_ids.to(self.device)
            t5_states = t5(ids)[0].to(clip.dtype)
        clip = F.pad(clip, (0, t5_states.shape[-1] - clip.shape[-1]))
        return torch.cat([clip, t5_states], dim=-2), torch.cat(pooled, dim=-1)

    # --- per step -----------------------------------------------------------------------------------------
    def _cfg_velocity(self, x: torch.Tensor, t: float, cond: FlowCond) -> torch.Tensor:
        """CFG velocity, chunked; the uncond/cond pair of an item is one doubled batch and one eval."""
        out = torch.empty_like(x)
        for sl in self._chunks(len(x), rows_per_item=2):
            xs = x[sl]
            n = len(xs)
            model_in = torch.cat([xs, xs]).to(self.dtype)
            # float32 timesteps as the pipeline passes them (σ·1000 in bf16 would be off by several units)
            timestep = torch.full((2 * n,), t, device=self.device, dtype=torch.float32)
            pred = self.transformer(
                hidden_states=model_in,
                timestep=timestep,
                encoder_hidden_states=cond.hidden.repeat_interleave(n, dim=0),
                pooled_projections=cond.pooled.repeat_interleave(n, dim=0),
                return_dict=False,
            )[0].float()
            uncond, text = pred[:n], pred[n:]
            out[sl] = uncond + self.cfg_scale * (text - uncond)
            self.denoiser_evals += n
        return out

    @torch.inference_mode()
    def step_distribution(self, x: torch.Tensor, step: int, cond: FlowCond) -> StepDistribution:
        sigma, sigma_next = self.sigmas[step], self.sigmas[step + 1]
        v = self._cfg_velocity(x, self.timesteps[step], cond)
        mean, scale = sde_step(x.float(), v, sigma, sigma_next, self.sigmas[1], self.noise_level)
        return StepDistribution(mean=mean, sigma=torch.tensor(scale, device=x.device), timestep=sigma)

    @torch.inference_mode()
    def candidate_x0(self, x_next: torch.Tensor, step: int, cond: FlowCond) -> torch.Tensor:
        if step + 1 >= len(self.timesteps):
            return x_next  # σ' = 0: the candidate is a final sample, decoded directly
        v = self._cfg_velocity(x_next, self.timesteps[step + 1], cond)
        return x_next.float() - self.sigmas[step + 1] * v

    @torch.inference_mode()
    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        vae_dtype = next(self.vae.parameters()).dtype
        scale = self.vae.config.scaling_factor
        shift = self.vae.config.get("shift_factor", None) or 0.0
        images = []
        for sl in self._chunks(len(x0)):
            z = (x0[sl].float() / scale + shift).to(vae_dtype)
            images.append(((self.vae.decode(z).sample.float() + 1) / 2).clamp(0, 1))
        return torch.cat(images)


def _component(path: str, index: dict, name: str, kw: dict, dtype: torch.dtype | None = None):
    """Load the component ``name`` with the class ``model_index.json`` names; None where the index says null."""
    entry = index.get(name)
    if not entry or entry[0] is None or entry[1] is None:
        return None
    library, cls_name = entry
    if library not in ("diffusers", "transformers"):
        raise SrsoupError(
            f"{name} is a {library}.{cls_name}; only diffusers and transformers components load here"
        )
    if "Tokenizer" in cls_name:  # slow/fast class names differ across transformers versions; the files tell
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path, subfolder=name, **kw)
    cls = getattr(importlib.import_module(library), cls_name)
    if dtype is None:
        return cls.from_pretrained(path, subfolder=name, **kw)
    dtype_kw = {"dtype": dtype} if library == "transformers" else {"torch_dtype": dtype}
    return cls.from_pretrained(path, subfolder=name, **dtype_kw, **kw)


def _vae_in_dtype(path: str, kw: dict, dtype: torch.dtype):
    """The VAE in the run's dtype, or in fp32 when the run is fp16 and its config says it overflows there."""
    from diffusers import AutoencoderKL

    config = AutoencoderKL.load_config(path, subfolder="vae", **kw)
    if dtype == torch.float16 and config.get("force_upcast", False):
        dtype = torch.float32
    return AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dtype, **kw)
