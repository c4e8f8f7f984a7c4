"""Typed schemas of the config tree, registered in Hydra's ConfigStore; every field is documented here.

The YAML files under ``srsoup/conf`` fill these in; Hydra checks overrides against them, so a typo in a key
or a wrong type fails at composition with Hydra's own message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ModelConfig:
    #: Short name, used in logs and reports (tiny, sd15, sdxl, sd35m).
    name: str = MISSING
    #: Backbone family: ``ddim`` (SD1.5 and the embedded model), ``sdxl``, ``flow`` (SD3.5).
    family: str = "ddim"
    #: Hub id (org/name) or local diffusers folder; null = the weights shipped in the package (model=tiny).
    pretrained: str | None = None
    #: Pinned hub revision (commit or tag) for reproducibility; ignored for local folders.
    revision: str | None = None
    #: Steps used when ``sampler.steps`` is null.
    default_steps: int = 50
    #: CFG scale used when ``sampler.cfg_scale`` is null.
    default_cfg_scale: float = 5.0
    #: End of the soup window used when ``guidance.soup_end_step`` is null (20 of 50 for SD1.5/SDXL).
    default_soup_end_step: int = 20
    #: Image side in pixels; null = the model's native size.
    resolution: int | None = None
    #: SDXL only: load this VAE instead (e.g. madebyollin/sdxl-vae-fp16-fix) so fp16 decoding does not overflow.
    vae: str | None = None
    #: Flow models (SD3.5) only: the SDE noise level of the reference code.
    noise_level: float = 0.8
    #: Extra keyword arguments for the backbone loader (scheduler overrides, for instance).
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SamplerConfig:
    #: Denoising steps T; null = ``model.default_steps``.
    steps: int | None = None
    #: Classifier-free guidance scale s; null = ``model.default_cfg_scale``.
    cfg_scale: float | None = None
    #: DDIM η; 1.0 gives the stochastic steps that search guidance needs.
    eta: float = 1.0


@dataclass
class GuidanceConfig:
    #: none | single | weighted_sum | srsoup | best_of_n.
    method: str = "srsoup"
    #: K, candidates drawn per guided chain and step.
    num_candidates: int = 8
    #: Antithetic noise pairs ε_{k+K/2} = −ε_k (K must be even).
    antithetic: bool = False
    #: Reward normalization across candidates: zscore | tanh | minmax | rank.
    normalize: str = "zscore"
    #: Most rows in one model batch, bounding memory independently of K: a CFG denoiser batch takes chunk_size // 2
    #: candidates (two rows each; at least one, so 1 gives 2-row CFG batches), decoder and reward batches
    #: chunk_size images.
    chunk_size: int = 64
    #: srsoup: first step of the soup window [soup_start_step, soup_end_step).
    soup_start_step: int = 0
    #: srsoup: end of the soup window (exclusive); null = ``model.default_soup_end_step``.
    soup_end_step: int | None = None
    #: srsoup: direction correction for shared candidates: reference | exact | off.
    mean_correction: str = "reference"
    #: srsoup: fixed (one soup_end_step for all chains) | adaptive (per chain, by Bhattacharyya coefficient).
    switch: str = "fixed"
    #: srsoup, switch=adaptive: a chain leaves the soup when its coefficient to an anchor drops below this.
    switch_threshold: float = 0.5
    #: single: the reward to guide by (a name of the reward set); null = the first reward of the set.
    reward: str | None = None
    #: Reference-code tricks for compressibility (target size, the anchor's top-K/6); the paper experiment sets it.
    compress_tricks: bool = False
    #: With compress_tricks: only candidates larger than this many kB are normalized.
    compress_target_kb: float = 15.0
    #: With compress_tricks: fraction of candidate weights the compressibility anchor keeps.
    compress_top_fraction: float = 0.16666666666666666


@dataclass
class WeightsConfig:
    #: Explicit preference weights, one list of M numbers per chain (each on the simplex); null = generated.
    grid: list[list[float]] | None = None
    #: Generated grid: simplex lattice with this many divisions; null = paper grid (6 for M=2, 13 for M=3).
    divisions: int | None = None


@dataclass
class BudgetConfig:
    #: Reward queries allowed per prompt x seed group, over all rewards; null = unlimited.
    max_reward_queries: int | None = None
    #: When the plan exceeds the budget: pick the largest K (>= 2) that fits instead of failing.
    fit_candidates: bool = False


@dataclass
class PromptsConfig:
    #: Prompts, in order; prompt_idx in the outputs is the position here.
    texts: list[str] = field(default_factory=list)
    #: A text file with one prompt per line (blank lines and lines starting with # skipped); used if set.
    path: str | None = None


@dataclass
class Config:
    defaults: list[Any] = field(default_factory=list)
    model: ModelConfig = field(default_factory=ModelConfig)
    #: The guided reward set: name → reward config (``_target_`` + arguments); order = w_ column order.
    rewards: dict[str, Any] = field(default_factory=dict)
    #: Rewards that only score the saved images (extra r_ columns); never used for guidance.
    eval_rewards: dict[str, Any] = field(default_factory=dict)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    #: Seeds; every prompt runs once per seed (x_T and all step noise derive from the seed).
    seeds: list[int] = field(default_factory=lambda: [0])
    #: auto | cpu | cuda | cuda:N | mps. auto = cuda when available; an unavailable device is an error.
    device: str = "auto"
    #: fp32 | fp16 | bf16 for the models (fp16 needs a GPU).
    dtype: str = "fp32"
    #: Progress bars on stderr.
    progress: bool = True


def register_configs() -> None:
    ConfigStore.instance().store(name="srsoup_schema", node=Config)
