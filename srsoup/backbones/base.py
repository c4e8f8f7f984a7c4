"""The backbone interface: encode a prompt, take CFG noise predictions, give step distributions, decode.

Guidance methods see a denoising step as a Gaussian N(μ, σ²I) over the next latent (DESIGN §1): the backbone
returns μ and σ for every chain, and turns a candidate next latent into an image for scoring. Every CFG
prediction of one batch item is one *denoiser eval*, counted here.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from srsoup.errors import SrsoupError

log = logging.getLogger(__name__)


@dataclass
class StepDistribution:
    """The next-latent distribution of each chain: ``x' = mean + sigma * noise``."""

    mean: torch.Tensor  # [L, *latent_shape]
    sigma: torch.Tensor  # scalar tensor: the same noise scale for every chain at a step
    timestep: float  # the current timestep (or sigma, for flow models), for diagnostics


class Backbone(ABC):
    """A text-to-image model seen as T stochastic steps. Subclasses hold the model differences."""

    #: Default number of steps, CFG scale and end of the soup window for this model.
    default_steps: int = 50
    default_cfg_scale: float = 5.0
    default_soup_end_step: int = 20

    def __init__(self, *, device: torch.device, dtype: torch.dtype, cfg_scale: float, chunk_size: int = 64):
        self.device = device
        self.dtype = dtype
        self.cfg_scale = cfg_scale
        self.chunk_size = chunk_size
        self.denoiser_evals = 0

    # --- set-up -------------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one latent (C, H, W)."""

    @abstractmethod
    def set_steps(self, num_steps: int) -> list[float]:
        """Prepare a schedule of ``num_steps`` steps; returns the timesteps (for the trace)."""

    @abstractmethod
    def encode_prompt(self, prompt: str):
        """Conditioning for one prompt and the empty prompt (for CFG), kept on the device."""

    def initial_latents(self, generator: torch.Generator) -> torch.Tensor:
        """x_T for one chain, drawn on the CPU so a seed gives the same start on every device."""
        x = torch.randn((1, *self.latent_shape), generator=generator, dtype=torch.float32)
        return (x * self.init_noise_sigma).to(self.device)

    init_noise_sigma: float = 1.0

    # --- per step -----------------------------------------------------------------------------------------
    @abstractmethod
    def step_distribution(self, x: torch.Tensor, step: int, cond) -> StepDistribution:
        """One CFG eval per chain at step ``step``; the mean and noise scale of each chain's next latent."""

    @abstractmethod
    def candidate_x0(self, x_next: torch.Tensor, step: int, cond) -> torch.Tensor:
        """Clean-sample estimate of candidate next latents (one CFG eval each; none at the last step)."""

    @abstractmethod
    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [0, 1] from clean latents."""

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


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda if available else cpu; an explicit device that is not available is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SrsoupError(f"device={name!r} is not a device; valid: auto, cpu, cuda, cuda:N, mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SrsoupError(f"device={name!r} but CUDA is not available on this machine; use device=cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise SrsoupError(f"device={name!r} but only {torch.cuda.device_count()} CUDA devices are visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise SrsoupError(f"device={name!r} but MPS is not available on this machine; use device=cpu or auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise SrsoupError(f"device={name!r} is not supported; valid: auto, cpu, cuda, cuda:N, mps")
    return device


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name not in DTYPES:
        raise SrsoupError(f"dtype={name!r} is not supported; valid: {', '.join(DTYPES)}")
    if name == "fp16" and device.type == "cpu":
        raise SrsoupError(
            "dtype='fp16' needs a GPU (many fp16 kernels are missing on CPU); valid on CPU: fp32, bf16"
        )
    return DTYPES[name]


def resolve_pretrained(pretrained: str, revision: str | None) -> tuple[str, bool]:
    """A local folder as is, else a hub id; returns (path or id, whether it is local).

    A path-like value (``./x``, ``/x``, ``~/x``, more than one ``/``) that does not exist is an error at once,
    rather than a confusing hub lookup.
    """
    expanded = os.path.expanduser(pretrained)
    if Path(expanded).is_dir():
        return expanded, True
    looks_like_path = expanded.startswith((".", "/", "~")) or expanded.count("/") != 1 or os.sep == "\\"
    if looks_like_path:
        raise SrsoupError(
            f"model path {pretrained!r} does not exist (expected a diffusers folder or a hub id org/name)"
        )
    return pretrained, False


@contextmanager
def loading_errors(pretrained: str, revision: str | None, local: bool):
    """Turn any failure while loading a model into one actionable SrsoupError line."""
    try:
        yield
    except SrsoupError:
        raise
    except Exception as err:  # noqa: BLE001 - any loading failure becomes one actionable line
        if local:
            message = f"model folder {pretrained!r} is incomplete or unreadable: {err}"
            raise SrsoupError(message.splitlines()[0]) from None
        raise hub_error(pretrained, revision, err) from None


def hub_error(pretrained: str, revision: str | None, err: Exception) -> SrsoupError:
    """One line telling how to get a hub model that is not available offline."""
    rev = f" --revision {revision}" if revision else ""
    return SrsoupError(
        f"model {pretrained!r} is not available locally ({type(err).__name__}); download it first with "
        f"`huggingface-cli download {pretrained}{rev}` (or pass model.pretrained=<local folder>)"
    )
