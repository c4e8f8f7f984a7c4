"""The backbone interface: encode a prompt, take CFG predictions, give step distributions, decode; shared pieces.

Guidance methods see a denoising step as a Gaussian N(μ, σ²I) over the next latent (DESIGN §1): the backbone
returns μ and σ for every chain, and turns a candidate next latent into an image for scoring. Every CFG
prediction of one batch item (the cond/uncond pair, or the one pass of a guidance-distilled model) is one
*denoiser eval* and every decoded image one *decode*, counted and timed here (``denoiser_evals``, ``decodes``,
``timers``), so any backbone on any device reports where its time went.

A model yaml names its backbone class with ``_target_``; ``Backbone.load`` passes the yaml's keys to that class's
``from_pretrained`` together with the run's device, dtype, CFG scale, η and ``chunk_size`` (each only where the
loader takes it). Unknown keys are one error line naming the valid ones.
"""

from __future__ import annotations

import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch

from srsoup.errors import SrsoupError
from srsoup.timing import Stopwatch

log = logging.getLogger(__name__)

#: Model keys read by the run spec itself, not by the backbone loader.
SPEC_KEYS = (
    "_target_",
    "name",
    "default_steps",
    "default_cfg_scale",
    "default_soup_end_step",
    "default_chunk_size",
)
#: Run settings a loader may take (by name) besides the model yaml's keys.
RUN_KEYS = ("device", "dtype", "storage_dtype", "cfg_scale", "chunk_size", "eta")


@dataclass
class StepDistribution:
    """The next-latent distribution of each chain: ``x' = mean + sigma * noise``."""

    mean: torch.Tensor  # [L, *latent_shape]
    sigma: torch.Tensor  # scalar tensor: the same noise scale for every chain at a step
    timestep: float  # the current timestep (or sigma, for flow models), for diagnostics


class Backbone(ABC):
    """A text-to-image model seen as T stochastic steps. Subclasses hold the model differences."""

    init_noise_sigma: float = 1.0
    #: Batch rows of one denoiser eval: 2 for classifier-free guidance (uncond and cond), 1 for a model with a
    #: distilled guidance input (one pass per eval).
    rows_per_eval: int = 2

    def __init__(self, *, device: torch.device, dtype: torch.dtype, cfg_scale: float, chunk_size: int = 64):
        self.device = device
        self.dtype = dtype
        self.cfg_scale = cfg_scale
        self.chunk_size = chunk_size
        self.denoiser_evals = 0
        self.decodes = 0
        self.timers = {"denoiser": Stopwatch(device), "decode": Stopwatch(device), "encode": Stopwatch(device)}

    # --- building from a model yaml -----------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def from_pretrained(cls, pretrained, **kwargs) -> Backbone:
        """Load from a diffusers folder or hub id (keyword arguments: the model yaml's keys and run settings)."""

    @classmethod
    def option_names(cls) -> list[str]:
        """The model yaml keys this backbone's loader takes (a loader with ``**kwargs`` passes the rest on to its
        base class's loader, whose keys count too)."""
        return [n for n in loader_params(cls) if n not in RUN_KEYS]

    @classmethod
    def check_options(cls, options: dict) -> None:
        """One error line for a model key the loader does not take."""
        valid = cls.option_names()
        unknown = [k for k in options if k not in valid and k not in SPEC_KEYS]
        if unknown:
            choices = ", ".join([*SPEC_KEYS[1:], *valid])
            raise SrsoupError(f"model.{unknown[0]} is not an option of {cls.__name__}; valid: {choices}")

    @classmethod
    def deterministic_reason(cls, options: dict, eta: float) -> str | None:
        """Why this configuration's step has no noise (all candidates equal), or None when it is stochastic."""
        return "sampler.eta=0" if eta == 0 else None

    @classmethod
    def load(cls, options: dict, **run) -> Backbone:
        """The backbone of a model yaml's keys (``options``) and the run's settings."""
        cls.check_options(options)
        kwargs = {k: v for k, v in options.items() if k not in SPEC_KEYS}
        kwargs.update({k: v for k, v in run.items() if k in loader_params(cls)})
        return cls.from_pretrained(**kwargs)

    # --- set-up -------------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one latent as the steps see it (C, H, W), or (tokens, channels) for packed latents."""

    @abstractmethod
    def set_steps(self, num_steps: int) -> list[float]:
        """Prepare a schedule of ``num_steps`` steps; returns the timesteps (for the trace)."""

    @abstractmethod
    def encode_prompt(self, prompt: str):
        """Conditioning for one prompt and the empty prompt (for CFG), kept on the device."""

    def encode(self, prompt: str):
        """``encode_prompt``, timed (a text encoder can cost more than a step: Sana's Gemma-2 at full size)."""
        with self.timers["encode"]():
            return self.encode_prompt(prompt)

    def initial_latents(self, generator: torch.Generator) -> torch.Tensor:
        """x_T for one chain, drawn on the CPU so a seed gives the same start on every device."""
        x = torch.randn((1, *self.latent_shape), generator=generator, dtype=torch.float32)
        return (x * self.init_noise_sigma).to(self.device)

    # --- per step -----------------------------------------------------------------------------------------
    @abstractmethod
    def step_distribution(self, x: torch.Tensor, step: int, cond) -> StepDistribution:
        """One CFG eval per chain at step ``step``; the mean and noise scale of each chain's next latent."""

    @abstractmethod
    def candidate_x0(self, x_next: torch.Tensor, step: int, cond) -> torch.Tensor:
        """Clean-sample estimate of candidate next latents (one CFG eval each; none at the last step)."""

    @abstractmethod
    def _decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [0, 1] from clean latents (chunked by the subclass or by ``_vae_decode``)."""

    @torch.inference_mode()
    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [0, 1] from clean latents; counted and timed."""
        with self.timers["decode"]():
            images = self._decode(x0)
        self.decodes += len(x0)
        return images

    def final_images(self, x: torch.Tensor) -> torch.Tensor:
        """The images of the final latents (the output of the last step)."""
        return self.decode(x)

    # --- shared helpers -----------------------------------------------------------------------------------
    def _chunks(self, n: int, rows_per_item: int = 1):
        """Slices of ``n`` items such that no model batch has more than ``chunk_size`` rows.

        A CFG call feeds two rows per item (uncond and cond), so it passes ``rows_per_item=2`` and takes
        ``chunk_size // 2`` items at a time (at least one): the peak activation memory is the same for every
        model call and every K once K fills a chunk.
        """
        per = max(1, self.chunk_size // rows_per_item)
        for i in range(0, n, per):
            yield slice(i, min(n, i + per))

    def _predict(
        self, x: torch.Tensor, forward: Callable[[torch.Tensor, int], torch.Tensor], rows_per_item: int = 1
    ) -> torch.Tensor:
        """The network's prediction for every item of ``x``: chunked, counted (one eval per item) and timed.

        ``forward(model_in, n)`` gets the chunk's ``n`` items in the run's dtype and returns their prediction
        ([n, ...], any dtype; kept in float32); it may run ``rows_per_item`` model rows per item (``_cfg``: two).
        A guidance-distilled model (FLUX.1-dev) uses it directly: one pass, one eval.
        """
        out = torch.empty_like(x)
        with self.timers["denoiser"]():
            for sl in self._chunks(len(x), rows_per_item):
                xs = x[sl]
                out[sl] = forward(xs.to(self.dtype), len(xs)).float()
                self.denoiser_evals += len(xs)
        return out

    def _cfg(self, x: torch.Tensor, forward: Callable[[torch.Tensor, int], torch.Tensor]) -> torch.Tensor:
        """Classifier-free guided prediction of every item of ``x``, chunked, counted and timed (``_predict``).

        ``forward(model_in, n)`` runs the network on ``model_in`` = [x_chunk; x_chunk] (2n rows: uncond first, in
        the run's dtype) and returns its raw prediction; the pair of an item is one batch and one denoiser eval.
        """

        def guided(xs: torch.Tensor, n: int) -> torch.Tensor:
            pred = forward(torch.cat([xs, xs]), n).float()
            uncond, text = pred[:n], pred[n:]
            return uncond + self.cfg_scale * (text - uncond)

        return self._predict(x, guided, rows_per_item=2)

    @property
    def vae_scale_factor(self) -> int:
        """Image pixels per latent cell: the VAE halves the side once per down block after the first."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @staticmethod
    def _checked_resolution(resolution: int | None, default: int, multiple: int, why: str) -> int:
        """``model.resolution`` (null: ``default``), one error line unless a positive multiple of ``multiple``."""
        value = int(resolution or default)
        if value <= 0 or value % multiple:
            raise SrsoupError(f"model.resolution={value} must be a positive multiple of {multiple} ({why})")
        return value

    def _vae_decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] from VAE latents: z/scaling + shift in the VAE's own dtype (fp32 when upcast)."""
        vae_dtype = next(self.vae.parameters()).dtype
        scale = self.vae.config.scaling_factor
        shift = self.vae.config.get("shift_factor", None) or 0.0
        images = []
        for sl in self._chunks(len(z)):
            latents = (z[sl].float() / scale + shift).to(vae_dtype)
            images.append(((self.vae.decode(latents).sample.float() + 1) / 2).clamp(0, 1))
        return torch.cat(images)


def loader_params(cls) -> list[str]:
    """The keyword names of the loaders along the class hierarchy (a ``**kwargs`` loader passes on to its base)."""
    names: list[str] = []
    for klass in cls.__mro__:
        loader = klass.__dict__.get("from_pretrained")
        if loader is None:
            continue
        params = list(inspect.signature(loader.__func__).parameters.values())[1:]  # without cls
        names += [p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD and p.name not in names]
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            break
    return names


def tokenize(tokenizer, prompts: list[str], max_length: int | None = None, **kwargs) -> torch.Tensor:
    """Token ids padded to the tokenizer's (or the given) maximum length, truncated, as the pipelines do."""
    return tokenizer(
        prompts,
        padding="max_length",
        max_length=max_length or tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
        **kwargs,
    ).input_ids


def clip_penultimate(tokenizer, encoder, prompt: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate hidden states and projected pooled embedding of a CLIP text encoder with projection
    (``CLIPTextModelWithProjection``), as SDXL's and SD3's pipelines encode a prompt."""
    out = encoder(tokenize(tokenizer, [prompt]).to(device), output_hidden_states=True)
    return out.hidden_states[-2], getattr(out, "text_embeds", None)


def clip_pooled(tokenizer, encoder, prompt: str, device: torch.device) -> torch.Tensor:
    """Pooled output of a CLIP text encoder without projection (``CLIPTextModel``), as FLUX's pipeline encodes a
    prompt for its pooled conditioning."""
    return encoder(tokenize(tokenizer, [prompt]).to(device), output_hidden_states=False).pooler_output


def t5_states(tokenizer, encoder, prompt: str, max_length: int, device: torch.device) -> torch.Tensor:
    """Last hidden states of a T5 encoder over ``max_length`` tokens (padded, truncated), as SD3's and FLUX's
    pipelines encode a prompt."""
    return encoder(tokenize(tokenizer, [prompt], max_length, add_special_tokens=True).to(device))[0]
