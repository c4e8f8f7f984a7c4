"""Typed schemas of the config tree, registered in Hydra's ConfigStore; every field is documented here.

The YAML files under ``srsoup/conf`` fill these in; Hydra checks overrides against them, so a typo in a key
or a wrong type fails at composition with Hydra's own message. ``model`` and ``guidance`` are open dicts: their
yaml's ``_target_`` class documents and checks their keys (see ``srsoup/backbones`` and ``srsoup/guidance``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class SamplerConfig:
    #: Denoising steps T; null = ``model.default_steps``.
    steps: int | None = None
    #: Classifier-free guidance scale s; null = ``model.default_cfg_scale``. FLUX.1-dev: its distilled guidance
    #: value (one pass, no CFG); FLUX.1-schnell: unused.
    cfg_scale: float | None = None
    #: DDIM η; 1.0 gives the stochastic steps that search guidance needs.
    eta: float = 1.0


@dataclass
class WeightsConfig:
    #: Explicit preference weights, one list of M numbers per chain (each on the simplex); null = generated.
    #: Typed loosely so that integers (``[[1,0],[0.5,0.5],[0,1]]``) pass; spec.py checks every entry.
    grid: Any = None
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
    #: A prompt file, used if set: .txt (one a line, # comments), .json (a list, or category -> list), .jsonl
    #: (one object a line), .tsv/.csv (a header row); see srsoup/prompts.py.
    path: str | None = None
    #: The prompt field of .json/.jsonl/.tsv/.csv records; null = the first of prompt, Prompt, Prompts, text.
    column: str | None = None
    #: Keep only this category (or list of categories): the field category/Category/tag, or a JSON object's keys.
    category: Any = None
    #: Keep the first N prompts (after the category filter); null = all.
    limit: int | None = None
    #: Split the prompts into this many interleaved shards (one job each); indices stay global.
    num_shards: int = 1
    #: Which shard this run computes: prompts shard, shard + num_shards, ... (0-based).
    shard: int = 0


@dataclass
class Config:
    defaults: list[Any] = field(default_factory=list)
    #: The base model (``conf/model/*.yaml``): ``_target_`` names the backbone class, whose loader documents and
    #: checks the other keys; ``name``, ``default_steps``, ``default_cfg_scale``, ``default_soup_end_step`` are
    #: read by the run itself.
    model: dict[str, Any] = field(default_factory=dict)
    #: The guided reward set: name → reward config (``_target_`` + arguments); order = w_ column order.
    rewards: dict[str, Any] = field(default_factory=dict)
    #: Rewards that only score the saved images (extra r_ columns); never used for guidance.
    eval_rewards: dict[str, Any] = field(default_factory=dict)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    #: The method (``conf/guidance/*.yaml``): ``_target_`` names the class; its keyword-only constructor
    #: arguments are its keys (keys it does not take are ignored with a log line, so sweeps over methods may set
    #: them with ``++guidance.key=value``).
    guidance: dict[str, Any] = field(default_factory=dict)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    #: Seeds; every prompt runs once per seed (x_T and all step noise derive from the seed).
    seeds: list[int] = field(default_factory=lambda: [0])
    #: auto | cpu | cuda | cuda:N | mps. auto = cuda when available; an unavailable device is an error.
    device: str = "auto"
    #: fp32 | fp16 | bf16 for the models (fp16 needs a GPU).
    dtype: str = "fp32"
    #: null | bf16 | fp16 | fp8_e4m3 | fp8_e5m2: keep the denoiser's and text encoders' weights in this dtype and
    #: cast each layer to ``dtype`` for its forward only (diffusers' layerwise casting): less weight memory, the
    #: same compute; norms and position embeddings stay in ``dtype``, the VAE and rewards are not cast.
    #: null = weights in ``dtype``.
    storage_dtype: str | None = None
    #: Most rows in one model batch, bounding memory independently of K: a CFG denoiser batch takes
    #: chunk_size // 2 candidates (two rows each; at least one, so 1 gives 2-row CFG batches), decoder and
    #: reward batches chunk_size images. null = ``model.default_chunk_size``.
    chunk_size: int | None = None
    #: Progress bars on stderr.
    progress: bool = True


def register_configs() -> None:
    ConfigStore.instance().store(name="srsoup_schema", node=Config)
