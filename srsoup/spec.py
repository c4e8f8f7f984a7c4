"""The composed config → a plain, validated run spec: classes, options, weights, prompts, counts, budget.

Everything a user can get wrong is checked here, before any model is loaded or any output written, and reported
as an ``SrsoupError`` naming the bad value and the valid choices. The backbone and the guidance method are chosen
by their yaml's ``_target_``; each class says which keys it takes, so nothing here knows a model family or a
method by name.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from srsoup.backbones.base import Backbone, loader_params
from srsoup.devices import resolve_device, resolve_dtype, resolve_storage_dtype
from srsoup.errors import SrsoupError
from srsoup.guidance.base import Guidance, Plan
from srsoup.hub import Source
from srsoup.prompts import load_prompts, shard_indices
from srsoup.redact import Secrets

log = logging.getLogger("srsoup")

#: Keys that moved: old name → new name (the old one is refused with a line naming the new).
MOVED_KEYS = {"guidance.chunk_size": "chunk_size"}

# The reference code's 13 weights for three rewards (scripts/inference_srsoup_3obj.py).
PAPER_GRID_3 = [
    [1, 0, 0],
    [0, 1, 0],
    [0, 0, 1],
    [1 / 3, 1 / 3, 1 / 3],
    [0.1, 0.1, 0.8],
    [0.1, 0.8, 0.1],
    [0.8, 0.1, 0.1],
    [0.2, 0.2, 0.6],
    [0.2, 0.6, 0.2],
    [0.6, 0.2, 0.2],
    [0.4, 0.4, 0.2],
    [0.4, 0.2, 0.4],
    [0.2, 0.4, 0.4],
]


@dataclass
class RunSpec:
    """The validated, plain-data plan of a run (no DictConfig past this point)."""

    model: dict[str, Any]
    backbone_cls: type[Backbone]
    rewards: dict[str, dict]
    eval_rewards: dict[str, dict]
    method_cls: type[Guidance]
    guidance: dict[str, Any]  # the options the method takes
    grid: list[list[float]]  # the user's weight grid
    weights: list[list[float]]  # the method's output rows (NaN where a row has no weight)
    prompts: list[str]  # every prompt of the run; prompt_idx is the position here
    prompt_indices: list[int]  # the prompts this job computes (its shard; all of them unsharded)
    seeds: list[int]
    steps: int
    cfg_scale: float
    eta: float
    chunk_size: int
    device: torch.device
    dtype: torch.dtype
    budget: int | None
    plan: Plan
    fitted_from: int | None = None
    storage_dtype: torch.dtype | None = None  # the weights' storage under layerwise casting; None = dtype
    progress: bool = True
    config: dict = field(default_factory=dict)  # the resolved config with secrets redacted (srsoup/redact.py)
    preset: str | None = None  # the guidance config chosen (Hydra's choice of the group, e.g. srsoup_pool)
    secrets: Secrets | None = field(default=None, repr=False)

    @property
    def method(self) -> str:
        return self.method_cls.name

    @property
    def method_label(self) -> str:
        """The guidance config chosen (``srsoup_pool``); the method's name for a config composed outside Hydra."""
        return self.preset or self.method

    @property
    def reward_names(self) -> list[str]:
        return list(self.rewards)

    def random_weights(self) -> list[str]:
        """The parts built with random weights (``init: random``): ``model`` and reward names."""
        parts = {"model": self.model, **self.rewards, **self.eval_rewards}
        return [name for name, options in parts.items() if options.get("init") == "random"]

    def build_method(self) -> Guidance:
        return build_method(self.method_cls, self.guidance, self.grid, self.reward_names)

    @property
    def groups(self) -> list[tuple[int, int]]:
        """This job's (prompt_idx, seed) groups, in run order."""
        return [(p, s) for p in self.prompt_indices for s in self.seeds]

    def fingerprint(self) -> dict:
        """What must not change when a run dir is resumed (seeds, shards and appended prompts may be added).

        Secrets are redacted: a rotated token resumes, and no token is written to the run dir.
        """
        fingerprint = dict(
            model=self.config.get("model", self.model),
            rewards=self.reward_names,
            eval_rewards=list(self.eval_rewards),
            method=self.method,
            guidance=self.guidance,
            weights=jsonable_weights(self.weights),
            prompts=self.prompts,
            steps=self.steps,
            cfg_scale=self.cfg_scale,
            eta=self.eta,
            dtype=str(self.dtype),
        )
        if self.storage_dtype is not None:  # only when set: older runs' fingerprints (resume checks) stay the same
            fingerprint["storage_dtype"] = str(self.storage_dtype)
        return self.secrets.scrub(fingerprint) if self.secrets else fingerprint


def versions() -> dict[str, str]:
    """Python's and the main packages' versions, for summary.json."""
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for pkg in ("srsoup", "torch", "diffusers", "transformers", "hydra-core"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def describe(spec: RunSpec) -> dict:
    """What summary.json says of the run besides its counts: method, settings, plan, fingerprint, config."""
    plan = spec.plan
    return {
        "method": spec.method,
        "guidance_preset": spec.preset,
        **spec.build_method().summary_fields(),
        "steps": spec.steps,
        "cfg_scale": spec.cfg_scale,
        "model": spec.model.get("name"),
        "rewards": spec.reward_names,
        "eval_rewards": list(spec.eval_rewards),
        "weights": jsonable_weights(spec.weights),
        "prompts": len(spec.prompts),
        "seeds": spec.seeds,
        "groups_total": len(spec.groups),
        **_shard(spec),
        "plan": {
            "per_group": {
                "reward_queries": plan.reward_queries,
                "reward_queries_by_reward": plan.reward_queries_by_reward,
                "denoiser_evals": plan.denoiser_evals,
                "decodes": plan.decodes,
                "exact": plan.exact,
            },
            "phases": plan.phases,
            "budget": {"max_reward_queries": spec.budget, "fitted_from": spec.fitted_from},
        },
        "random_weights": spec.random_weights(),
        "device": str(spec.device),
        "dtype": str(spec.dtype).replace("torch.", ""),
        "storage_dtype": None if spec.storage_dtype is None else str(spec.storage_dtype).replace("torch.", ""),
        "versions": versions(),
        "fingerprint": spec.fingerprint(),
        "config": spec.config,
    }


def _shard(spec: RunSpec) -> dict:
    """summary.json's ``shard`` entry of a sharded job (which slice of the prompts it computes)."""
    p = spec.config.get("prompts", {})
    if p.get("num_shards", 1) == 1:
        return {}
    return {"shard": {"shard": p["shard"], "num_shards": p["num_shards"], "prompts": len(spec.prompt_indices)}}


def jsonable_weights(weights: list[list[float]]) -> list[list[float | None]]:
    return [[None if math.isnan(x) else x for x in row] for row in weights]


def _choices(valid) -> str:
    return ", ".join(str(v) for v in valid)


def weight_grid(grid: list[list[float]] | None, divisions: int | None, names: list[str]) -> list[list[float]]:
    """The preference grid, validated on the simplex, with the one-hot anchors appended when missing."""
    m = len(names)
    if grid is None:
        if divisions is None and m == 3:
            grid = [list(map(float, w)) for w in PAPER_GRID_3]
        else:
            d = divisions if divisions is not None else (5 if m == 2 else 4)
            if d < 1:
                raise SrsoupError(f"weights.divisions={d} must be >= 1")
            grid = [[i / d for i in c] for c in itertools.product(range(d + 1), repeat=m) if sum(c) == d]
    if not isinstance(grid, list) or not all(isinstance(row, list) for row in grid):
        raise SrsoupError(f"weights.grid={grid!r} must be a list of weight lists, e.g. [[1,0],[0.5,0.5],[0,1]]")
    for i, row in enumerate(grid):
        bad = [x for x in row if isinstance(x, bool) or not isinstance(x, int | float)]
        if bad:
            raise SrsoupError(f"weights.grid[{i}]={row} holds {bad[0]!r}, not a number")
    grid = [[float(x) for x in row] for row in grid]
    for i, row in enumerate(grid):
        if len(row) != m:
            raise SrsoupError(
                f"weights.grid[{i}]={row} has {len(row)} entries but the reward set has {m}: {_choices(names)}"
            )
        if not all(math.isfinite(x) for x in row) or min(row) < 0 or abs(sum(row) - 1) > 1e-6:
            raise SrsoupError(f"weights.grid[{i}]={row} is off the simplex (entries >= 0 summing to 1)")
    for j in range(m):
        onehot = [1.0 if i == j else 0.0 for i in range(m)]
        if onehot not in grid:
            grid.append(onehot)
    return grid


def target_class(node: dict, base: type, key: str):
    """The class a config node's ``_target_`` names, which must subclass ``base``."""
    from srsoup.targets import locate

    target = node.get("_target_")
    if not target:
        raise SrsoupError(f"{key} has no _target_: the yaml must name its class (e.g. _target_: srsoup.…)")
    try:
        cls = locate(target)
    except ImportError as err:
        raise SrsoupError(f"{key}._target_={target!r} cannot be imported ({err})") from None
    if not isinstance(cls, type) or not issubclass(cls, base):
        raise SrsoupError(f"{key}._target_={target!r} is not a {base.__module__}.{base.__name__}")
    return cls


def build_method(cls: type[Guidance], options: dict, grid: list[list[float]], names: list[str]) -> Guidance:
    """The method with these options, bound to the grid; its own checks become one-line SrsoupErrors."""
    try:
        method = cls(**options)
        method.setup(torch.tensor(grid, dtype=torch.float64), names)
    except (ValueError, TypeError) as err:
        raise SrsoupError(str(err).splitlines()[0]) from None
    return method


def method_options(node: dict) -> tuple[type[Guidance], dict]:
    """The method's class and the options it takes; keys it does not take are logged and left out."""
    for old, new in MOVED_KEYS.items():
        group, _, key = old.partition(".")
        if group == "guidance" and key in node:
            raise SrsoupError(f"{old} is now the run key {new}: set {new}={node[key]} instead")
    cls = target_class(node, Guidance, "guidance")
    valid = cls.option_names()
    ignored = sorted(k for k in node if k not in valid and k != "_target_")
    if ignored:
        log.info("guidance=%s does not take %s: ignored", cls.name, ", ".join(f"guidance.{k}" for k in ignored))
    return cls, {k: v for k, v in node.items() if k in valid}


def fit_budget(
    cls: type[Guidance], options: dict, grid, names, steps: int, budget: int | None, fit: bool
) -> tuple[Guidance, Plan, int | None]:
    """The method and its plan within ``budget`` reward queries per group, lowering ``cls.budget_key`` if asked."""
    method = build_method(cls, options, grid, names)
    plan = method.plan(steps)
    if budget is None or plan.reward_queries <= budget:
        return method, plan, None
    key, label = cls.budget_key, cls.budget_label
    what = f"({method.name}, {label}={options.get(key)}, T={steps}, L={len(method.weights)})"
    if not fit or key is None:
        raise SrsoupError(
            f"budget.max_reward_queries={budget} is too small: this plan needs {plan.reward_queries} reward "
            f"queries per prompt x seed group {what}; raise it or set budget.fit_candidates=true"
        )

    def fitting(value: int) -> Guidance | None:
        try:
            smaller = build_method(cls, {**options, key: value}, grid, names)
        except SrsoupError:
            return None  # e.g. an odd K with antithetic pairs
        return smaller if smaller.plan(steps).reward_queries <= budget else None

    # Queries grow with the size but not always in proportion (K_soup = round(factor·K)): start from the
    # proportional guess at the size asked for, go down to the first size that fits, then up while the next fits.
    top = options[key]
    value = min(top - 1, budget * top // max(plan.reward_queries, 1) + 1)
    while value >= cls.budget_min and (smaller := fitting(value)) is None:
        value -= 1
    if value >= cls.budget_min:
        # two sizes up: with antithetic pairs an odd K cannot be built, the even one after it may fit
        while up := next(((v, f) for v in (value + 1, value + 2) if v < top and (f := fitting(v))), None):
            value, smaller = up
        options[key] = value
        return smaller, smaller.plan(steps), getattr(method, key)
    need = build_method(cls, {**options, key: cls.budget_min}, grid, names).plan(steps).reward_queries
    raise SrsoupError(
        f"budget.max_reward_queries={budget} is too small even for {label}={cls.budget_min}: {need} reward "
        f"queries per prompt x seed group are needed ({method.name}, T={steps}, L={len(method.weights)})"
    )


def _guidance_preset() -> str | None:
    """The guidance group's choice (``srsoup_pool``) inside a Hydra job; None for a config composed elsewhere."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get("guidance")


def _resolved(cfg: DictConfig) -> dict:
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as err:
        raise SrsoupError(f"the config does not resolve: {err}".splitlines()[0]) from None


MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes an unsigned 64-bit seed


def _seeds(values) -> list[int]:
    seeds = [int(s) for s in (values or [])]
    if not seeds:
        raise SrsoupError("seeds=[] : give at least one seed, e.g. seeds=[0,1]")
    if len(set(seeds)) != len(seeds):
        raise SrsoupError(f"seeds={seeds} has duplicates")
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise SrsoupError(f"seeds: {bad[0]} is out of range; valid: integers from 0 to {MAX_SEED} (2^64 - 1)")
    return seeds


def _number(key: str, value, low: float, high: float | None = None, default: str = "") -> float:
    """A finite float in [low, high], or one line naming the key, the value and the valid range."""
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if ok and low <= value and (high is None or value <= high):
        return float(value)
    valid = f"a number from {low:g} to {high:g}" if high is not None else f"a finite number >= {low:g}"
    raise SrsoupError(f"{key}={value!r} is not valid; valid: {valid}{default}")


def _sampler(sampler: dict, model: dict) -> tuple[int, float, float]:
    """T, the CFG scale and η; null steps and CFG take the model's defaults (0 is not null)."""
    steps = model["default_steps"] if sampler["steps"] is None else sampler["steps"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise SrsoupError(
            f"sampler.steps={steps!r} must be an integer >= 1 (or null for the model's {model['default_steps']})"
        )
    cfg = model["default_cfg_scale"] if sampler["cfg_scale"] is None else sampler["cfg_scale"]
    cfg_scale = _number(
        "sampler.cfg_scale", cfg, 0, default=f" (or null for the model's {model['default_cfg_scale']})"
    )
    eta = _number("sampler.eta", sampler["eta"], 0, 1, " (DDIM eta: 1 = the stochastic step guidance needs)")
    return steps, cfg_scale, eta


def _check_step_options(cls: type[Guidance], options: dict, written: dict, steps: int) -> None:
    """Options that are step indices may not pass sampler.steps; a value taken from the model's default may."""
    for key in cls.step_options:
        value = options.get(key)
        if isinstance(written.get(key), str) and "${" in written[key]:
            continue  # the model's default window: it ends at T when T is shorter
        if isinstance(value, int) and value > steps:
            raise SrsoupError(f"guidance.{key}={value} is past sampler.steps={steps}; valid: 0 to {steps}")


def _model(model: dict) -> type[Backbone]:
    cls = target_class(model, Backbone, "model")
    cls.check_options(model)
    if model.get("pretrained"):
        Source.resolve(model["pretrained"], model.get("revision"))  # a missing local path fails here, at once
    return cls


def _hardware(c: dict, model: dict, planning: bool) -> tuple[int, torch.device, torch.dtype]:
    """chunk_size (null = the model's default), the device and the dtype."""
    chunk_size = model.get("default_chunk_size", 64) if c.get("chunk_size") is None else c["chunk_size"]
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise SrsoupError(f"chunk_size={chunk_size!r} must be an integer >= 1 (rows in one model batch)")
    device = resolve_device(str(c.get("device", "auto")), planning)
    if device.type == "meta":
        raise SrsoupError(f"device={c.get('device')!r} is not supported; valid: auto, cpu, cuda, cuda:N, mps")
    return chunk_size, device, resolve_dtype(str(c.get("dtype", "fp32")), device)


def _storage(name, dtype: torch.dtype, device: torch.device, backbone_cls, model: dict) -> torch.dtype | None:
    """``storage_dtype``, checked against the run's dtype and device and the loader (which must take it)."""
    storage = resolve_storage_dtype(None if name is None else str(name), dtype, device)
    if storage is not None and "storage_dtype" not in loader_params(backbone_cls):
        raise SrsoupError(
            f"storage_dtype={name!r}: model {model.get('name') or backbone_cls.__name__!r} "
            f"({backbone_cls.__name__}) does not load with layerwise casting; valid: null"
        )
    return storage


def _budget(b: dict) -> int | None:
    budget = b["max_reward_queries"]
    if b["fit_candidates"] and budget is None:
        raise SrsoupError("budget.fit_candidates=true needs a budget: set budget.max_reward_queries=N")
    if budget is not None and budget < 0:
        raise SrsoupError(f"budget.max_reward_queries={budget} must be >= 0 (or null for unlimited)")
    return budget


def build_spec(cfg: DictConfig, planning: bool = False) -> RunSpec:
    """Check every user choice and work out the plan; raises SrsoupError on the first bad value.

    ``planning``: for ``srsoup plan``, the device need not be present on this machine.
    """
    c = _resolved(cfg)
    secrets = Secrets(cfg, c)
    model, sampler = c["model"], c["sampler"]
    backbone_cls = _model(model)
    rewards = c.get("rewards") or {}
    if not rewards:
        raise SrsoupError("the reward set is empty; choose one, e.g. rewards=colorful_compress")
    names = list(rewards)
    eval_rewards = {k: v for k, v in (c.get("eval_rewards") or {}).items() if k not in rewards}
    p = c["prompts"]
    prompts = load_prompts(p.get("texts"), p.get("path"), p.get("column"), p.get("category"), p.get("limit"))
    prompt_indices = shard_indices(len(prompts), p.get("shard", 0), p.get("num_shards", 1))
    seeds = _seeds(c.get("seeds"))
    steps, cfg_scale, eta = _sampler(sampler, model)
    chunk_size, device, dtype = _hardware(c, model, planning)
    storage_dtype = _storage(c.get("storage_dtype"), dtype, device, backbone_cls, model)

    grid = weight_grid(c["weights"].get("grid"), c["weights"].get("divisions"), names)
    method_cls, options = method_options(dict(c["guidance"]))
    _check_step_options(method_cls, options, OmegaConf.to_container(cfg.guidance, resolve=False), steps)
    why = backbone_cls.deterministic_reason(model, eta)
    if method_cls.needs_noise and why:
        raise SrsoupError(f"guidance={method_cls.name} needs a stochastic step, but {why} makes it deterministic")
    budget = _budget(c["budget"])
    method, plan, fitted_from = fit_budget(
        method_cls, options, grid, names, steps, budget, c["budget"]["fit_candidates"]
    )
    return RunSpec(
        model=model,
        backbone_cls=backbone_cls,
        rewards=rewards,
        eval_rewards=eval_rewards,
        method_cls=method_cls,
        guidance=options,
        grid=grid,
        weights=method.weights.tolist(),
        prompts=prompts,
        prompt_indices=prompt_indices,
        seeds=seeds,
        steps=steps,
        cfg_scale=cfg_scale,
        eta=eta,
        chunk_size=chunk_size,
        device=device,
        dtype=dtype,
        storage_dtype=storage_dtype,
        budget=budget,
        plan=plan,
        fitted_from=fitted_from,
        progress=bool(c.get("progress", True)),
        config=secrets.redact({k: v for k, v in c.items() if k != "hydra"}),
        preset=_guidance_preset(),
        secrets=secrets,
    )
