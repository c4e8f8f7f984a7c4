"""``run(cfg)``: validate the whole plan, then for each prompt x seed group run all chains and commit outputs.

Everything a user can get wrong is checked before any model is loaded or any output written, and reported as
an ``SrsoupError`` naming the bad value and the valid choices. Then: load the backbone and rewards once,
resume from the run dir, and for each group sample, score the final images, and commit atomically.
"""

from __future__ import annotations

import itertools
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from srsoup.backbones.base import resolve_device, resolve_dtype, resolve_pretrained
from srsoup.errors import SrsoupError
from srsoup.guidance import METHODS, Guidance, Plan
from srsoup.guidance.srsoup import MEAN_CORRECTIONS, SWITCHES
from srsoup.guidance.steps import NORMALIZERS
from srsoup.outputs import RunDir, image_name, png_bytes
from srsoup.rewards.base import CountingReward, QueryBudget, build_rewards
from srsoup.sampling import sample_group

log = logging.getLogger("srsoup")

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
    rewards: dict[str, dict]
    eval_rewards: dict[str, dict]
    method: str
    guidance: dict[str, Any]
    weights: list[list[float]]
    prompts: list[str]
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
    progress: bool = True
    config: dict = field(default_factory=dict)

    @property
    def reward_names(self) -> list[str]:
        return list(self.rewards)

    def fingerprint(self) -> dict:
        """What must not change when a run dir is resumed (seeds may be added)."""
        return dict(
            model={k: self.model.get(k) for k in ("name", "pretrained", "revision", "resolution", "vae")},
            rewards=self.reward_names,
            eval_rewards=list(self.eval_rewards),
            method=self.method,
            guidance={k: v for k, v in self.guidance.items() if k != "chunk_size"},
            weights=self.weights if self.method != "none" else [],
            prompts=self.prompts,
            steps=self.steps,
            cfg_scale=self.cfg_scale,
            eta=self.eta,
            dtype=str(self.dtype),
        )


def _choices(valid) -> str:
    return ", ".join(str(v) for v in valid)


def load_prompts(texts: list[str], path: str | None) -> list[str]:
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise SrsoupError(f"prompts.path={path!r} does not exist (a text file, one prompt a line)")
        prompts = [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        if not prompts:
            raise SrsoupError(f"prompts.path={path!r} holds no prompts")
        return prompts
    prompts = [str(t) for t in texts or []]
    if not prompts or any(not t.strip() for t in prompts):
        raise SrsoupError(f"prompts.texts={prompts!r}: give at least one non-empty prompt, or prompts.path=FILE")
    return prompts


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
    grid = [[float(x) for x in row] for row in grid]
    for i, row in enumerate(grid):
        if len(row) != m:
            raise SrsoupError(
                f"weights.grid[{i}]={row} has {len(row)} entries but the reward set has {m}: {_choices(names)}"
            )
        if min(row) < 0 or abs(sum(row) - 1) > 1e-6:
            raise SrsoupError(f"weights.grid[{i}]={row} is off the simplex (entries >= 0 summing to 1)")
    for j in range(m):
        onehot = [1.0 if i == j else 0.0 for i in range(m)]
        if onehot not in grid:
            grid.append(onehot)
    return grid


def make_method(method: str, guidance: dict, weights: list[list[float]], names: list[str]) -> Guidance:
    kwargs = {k: v for k, v in guidance.items() if k not in ("method", "reward", "chunk_size")}
    try:
        g = METHODS[method](**kwargs)
        g.setup(torch.tensor(weights, dtype=torch.float64), names)
    except ValueError as err:
        raise SrsoupError(str(err)) from None
    return g


def build_spec(cfg: DictConfig) -> RunSpec:
    """Check every user choice and work out the plan; raises SrsoupError on the first bad value."""
    c = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    model, g = c["model"], dict(c["guidance"])
    method = g["method"]
    if method not in METHODS:
        raise SrsoupError(f"guidance.method={method!r}; valid: {_choices(METHODS)}")
    rewards = c.get("rewards") or {}
    if not rewards:
        raise SrsoupError("the reward set is empty; choose one, e.g. rewards=colorful_compress")
    names = list(rewards)
    eval_rewards = {k: v for k, v in (c.get("eval_rewards") or {}).items() if k not in rewards}
    prompts = load_prompts(c["prompts"].get("texts"), c["prompts"].get("path"))
    seeds = [int(s) for s in (c.get("seeds") or [])]
    if not seeds:
        raise SrsoupError("seeds=[] : give at least one seed, e.g. seeds=[0,1]")
    if len(set(seeds)) != len(seeds):
        raise SrsoupError(f"seeds={seeds} has duplicates")
    steps = c["sampler"]["steps"] or model["default_steps"]
    if steps < 1:
        raise SrsoupError(f"sampler.steps={steps} must be >= 1")
    cfg_scale = c["sampler"]["cfg_scale"]
    cfg_scale = float(model["default_cfg_scale"] if cfg_scale is None else cfg_scale)
    if g.get("soup_end_step") is None:
        g["soup_end_step"] = model["default_soup_end_step"]
    if method != "none" and g["num_candidates"] < 1:
        raise SrsoupError(f"guidance.num_candidates={g['num_candidates']} must be >= 1 (K candidates a step)")
    if g.get("antithetic") and g["num_candidates"] % 2:
        raise SrsoupError(
            f"guidance.num_candidates={g['num_candidates']} must be even with guidance.antithetic=true"
        )
    if g.get("normalize", "zscore") not in NORMALIZERS:
        raise SrsoupError(f"guidance.normalize={g['normalize']!r}; valid: {_choices(NORMALIZERS)}")
    if g.get("mean_correction", "reference") not in MEAN_CORRECTIONS:
        raise SrsoupError(
            f"guidance.mean_correction={g['mean_correction']!r}; valid: {_choices(MEAN_CORRECTIONS)}"
        )
    if g.get("switch", "fixed") not in SWITCHES:
        raise SrsoupError(f"guidance.switch={g['switch']!r}; valid: {_choices(SWITCHES)}")
    if not 0 <= g["soup_start_step"] <= g["soup_end_step"]:
        raise SrsoupError(
            f"soup window [{g['soup_start_step']}, {g['soup_end_step']}) is invalid: need 0 <= start <= end"
        )
    chunk_size = int(g.get("chunk_size") or 64)
    if chunk_size < 1:
        raise SrsoupError(f"guidance.chunk_size={chunk_size} must be >= 1")

    if method == "none":
        weights = [[float("nan")] * len(names)]
    elif method == "single":
        target = g.get("reward") or names[0]
        if target not in names:
            raise SrsoupError(f"guidance.reward={target!r} is not in the reward set; valid: {_choices(names)}")
        weights = [[1.0 if n == target else 0.0 for n in names]]
    else:
        weights = weight_grid(c["weights"].get("grid"), c["weights"].get("divisions"), names)

    device = resolve_device(str(c.get("device", "auto")))
    dtype = resolve_dtype(str(c.get("dtype", "fp32")), device)
    if model.get("pretrained"):
        resolve_pretrained(model["pretrained"], model.get("revision"))

    plan_weights = [[0.0] * len(names)] if method == "none" else weights
    guide = make_method(method, g, plan_weights, names)
    plan = guide.plan(steps)
    budget = c["budget"]["max_reward_queries"]
    if c["budget"]["fit_candidates"] and budget is None:
        raise SrsoupError("budget.fit_candidates=true needs a budget: set budget.max_reward_queries=N")
    if budget is not None and budget < 0:
        raise SrsoupError(f"budget.max_reward_queries={budget} must be >= 0 (or null for unlimited)")
    fitted_from = None
    if budget is not None and plan.reward_queries > budget:
        if not c["budget"]["fit_candidates"]:
            raise SrsoupError(
                f"budget.max_reward_queries={budget} is too small: this plan needs {plan.reward_queries} reward "
                f"queries per prompt x seed group ({method}, K={g['num_candidates']}, T={steps}, "
                f"L={len(weights)}); raise it or set budget.fit_candidates=true"
            )
        per_k = make_method(method, {**g, "num_candidates": 1}, plan_weights, names).plan(steps).reward_queries
        k_fit = budget // per_k
        if g.get("antithetic"):
            k_fit -= k_fit % 2
        if k_fit < 2:
            raise SrsoupError(
                f"budget.max_reward_queries={budget} is too small even for K=2: {2 * per_k} reward queries per "
                f"prompt x seed group are needed ({method}, T={steps}, L={len(weights)})"
            )
        fitted_from, g["num_candidates"] = g["num_candidates"], k_fit
        guide = make_method(method, g, plan_weights, names)
        plan = guide.plan(steps)
    config = {k: v for k, v in c.items() if k != "hydra"}
    return RunSpec(
        model=model,
        rewards=rewards,
        eval_rewards=eval_rewards,
        method=method,
        guidance=g,
        weights=weights,
        prompts=prompts,
        seeds=seeds,
        steps=steps,
        cfg_scale=cfg_scale,
        eta=float(c["sampler"]["eta"]),
        chunk_size=chunk_size,
        device=device,
        dtype=dtype,
        budget=budget,
        plan=plan,
        fitted_from=fitted_from,
        progress=bool(c.get("progress", True)),
        config=config,
    )


def load_backbone(spec: RunSpec):
    """The backbone for ``model.family``; heavy imports happen here, not at import time."""
    model = spec.model
    common = dict(device=spec.device, dtype=spec.dtype, cfg_scale=spec.cfg_scale, chunk_size=spec.chunk_size)
    family = model.get("family", "ddim")
    extra = dict(model.get("extra") or {})
    if family == "ddim":
        from srsoup.backbones.ddim import DDIMBackbone, load_embedded

        if not model.get("pretrained"):
            return load_embedded(eta=spec.eta, **common, **extra)
        return DDIMBackbone.from_pretrained(
            model["pretrained"], revision=model.get("revision"), eta=spec.eta, **common, **extra
        )
    if family == "sdxl":
        from srsoup.backbones.sdxl import SDXLBackbone

        return SDXLBackbone.from_pretrained(
            model["pretrained"],
            revision=model.get("revision"),
            vae=model.get("vae"),
            resolution=model.get("resolution"),
            eta=spec.eta,
            **common,
            **extra,
        )
    if family == "flow":
        from srsoup.backbones.flow import FlowBackbone

        return FlowBackbone.from_pretrained(
            model["pretrained"],
            revision=model.get("revision"),
            noise_level=model.get("noise_level", 0.8),
            resolution=model.get("resolution"),
            **common,
            **extra,
        )
    raise SrsoupError(f"model.family={family!r}; valid: ddim, sdxl, flow")


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("srsoup", "torch", "diffusers", "transformers", "hydra-core"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _columns(spec: RunSpec) -> tuple[list[str], list[str]]:
    names, all_scores = spec.reward_names, [*spec.reward_names, *spec.eval_rewards]
    reward_cols = [
        "prompt_idx",
        "prompt",
        "seed",
        "weight_idx",
        *[f"w_{n}" for n in names],
        *[f"r_{n}" for n in all_scores],
        "image",
        "reward_queries",
        "denoiser_evals",
    ]
    trace_cols = [
        "prompt_idx",
        "seed",
        "weight_idx",
        "step",
        "timestep",
        "phase",
        "sigma",
        *[f"reward_{s}_{n}" for n in names for s in ("mean", "std")],
        *[f"bc_{n}" for n in names],
    ]
    return reward_cols, trace_cols


def summarize(spec: RunSpec, run_dir: RunDir, groups: dict, wall: float, status: str, total: int) -> dict:
    rows = run_dir.rows()
    done = {(int(r["prompt_idx"]), int(r["seed"])) for r in rows}
    by_reward = {n: 0 for n in spec.reward_names}
    for key in done:
        entry = groups.get(f"p{key[0]:03d}_s{key[1]}") or {
            "reward_queries_by_reward": spec.plan.reward_queries_by_reward
        }
        for n, q in entry["reward_queries_by_reward"].items():
            by_reward[n] += q
    p = spec.plan
    return {
        "status": status,
        "method": spec.method,
        "num_candidates": spec.guidance.get("num_candidates", 0) if spec.method != "none" else 0,
        "steps": spec.steps,
        "cfg_scale": spec.cfg_scale,
        "soup_start_step": spec.guidance.get("soup_start_step") if spec.method == "srsoup" else None,
        "soup_end_step": spec.guidance.get("soup_end_step") if spec.method == "srsoup" else None,
        "model": spec.model.get("name"),
        "rewards": spec.reward_names,
        "eval_rewards": list(spec.eval_rewards),
        "weights": spec.weights if spec.method != "none" else [],
        "prompts": len(spec.prompts),
        "seeds": spec.seeds,
        "groups_total": total,
        "groups_complete": len(done),
        "images": len(rows),
        "reward_queries": sum(int(r["reward_queries"]) for r in rows),
        "reward_queries_by_reward": by_reward,
        "denoiser_evals": sum(int(r["denoiser_evals"]) for r in rows),
        "wall_seconds": round(wall, 3),
        "plan": {
            "per_group": {
                "reward_queries": p.reward_queries,
                "reward_queries_by_reward": p.reward_queries_by_reward,
                "denoiser_evals": p.denoiser_evals,
                "exact": p.exact,
            },
            "phases": p.phases,
            "budget": {"max_reward_queries": spec.budget, "fitted_from_num_candidates": spec.fitted_from},
        },
        "device": str(spec.device),
        "dtype": str(spec.dtype).replace("torch.", ""),
        "versions": _versions(),
        "fingerprint": spec.fingerprint(),
        "config": spec.config,
        "groups": groups,
    }


def run(cfg: DictConfig, run_dir: str | Path | None = None) -> Path:
    """Run the experiment described by ``cfg`` into ``run_dir`` (default: Hydra's output dir)."""
    start = time.time()
    spec = build_spec(cfg)
    if run_dir is None:
        from hydra.core.hydra_config import HydraConfig

        run_dir = HydraConfig.get().runtime.output_dir
    run_path = Path(run_dir)
    reward_cols, trace_cols = _columns(spec)
    out = RunDir(run_path, reward_cols, trace_cols, chains=len(spec.weights))
    problem = out.check_compatible(spec.fingerprint())
    if problem:
        raise SrsoupError(problem)
    if spec.fitted_from is not None:
        log.info(
            "budget: K lowered from %d to %d to fit %d reward queries per group",
            spec.fitted_from,
            spec.guidance["num_candidates"],
            spec.budget,
        )
    # Models load before anything is written, so a missing model leaves no half-made run dir.
    models = load_models(spec)

    run_path.mkdir(parents=True, exist_ok=True)
    done = out.repair()
    previous = out.read_summary()
    groups = {k: v for k, v in previous.get("groups", {}).items()}
    wall_before = float(previous.get("wall_seconds", 0.0)) if done else 0.0
    all_groups = [(p, s) for p in range(len(spec.prompts)) for s in spec.seeds]
    todo = [key for key in all_groups if key not in done]
    if done:
        log.info(
            "resuming %s: %d of %d groups already complete", run_path, len(all_groups) - len(todo), len(all_groups)
        )
    out.write_summary(summarize(spec, out, groups, wall_before, "partial", len(all_groups)))
    if todo:
        try:
            _run_groups(spec, models, out, todo, groups, start, wall_before, len(all_groups))
        except BaseException as err:
            # Complete groups stay committed; the summary says why the rest is missing (reports list it).
            failed = summarize(spec, out, groups, wall_before + time.time() - start, "failed", len(all_groups))
            failed["error"] = f"{type(err).__name__}: {err}".splitlines()[0]
            out.write_summary(failed)
            raise
    summary = summarize(spec, out, groups, wall_before + time.time() - start, "complete", len(all_groups))
    out.write_summary(summary)
    where = _display(run_path)
    msg = (
        f"srsoup: {summary['images']} images ({len(spec.prompts)} prompts x {len(spec.seeds)} seeds x "
        f"{len(spec.weights)} weights, {spec.method}) in {where}/images; scores in {where}/rewards.csv, "
        f"per-step trace in trace.csv, totals in summary.json ({summary['reward_queries']} reward queries, "
        f"{summary['denoiser_evals']} denoiser evals)"
    )
    log.info(msg)
    print(msg)
    return run_path


def _display(path: Path) -> str:
    """The path relative to the working directory when it lies below it (as the user typed it)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@dataclass
class Models:
    backbone: Any
    rewards: dict[str, CountingReward]  # guided set, counted and charged to the group budget
    evaluators: dict[str, CountingReward]  # guided set + eval_rewards, scoring final images only
    budget: QueryBudget


def load_models(spec: RunSpec) -> Models:
    backbone = load_backbone(spec)
    budget = QueryBudget(spec.budget)
    fns = build_rewards(spec.rewards, device=str(spec.device), dtype=spec.dtype)
    rewards = {n: CountingReward(n, fn, spec.chunk_size, budget) for n, fn in fns.items()}
    eval_fns = {**fns, **build_rewards(spec.eval_rewards, device=str(spec.device), dtype=spec.dtype)}
    evaluators = {n: CountingReward(n, fn, spec.chunk_size) for n, fn in eval_fns.items()}
    return Models(backbone, rewards, evaluators, budget)


def _run_groups(
    spec: RunSpec, models: Models, out: RunDir, todo, groups: dict, start: float, wall_before: float, total: int
):
    backbone, rewards, evaluators, budget = models.backbone, models.rewards, models.evaluators, models.budget
    names = spec.reward_names
    method_weights = [[0.0] * len(names)] if spec.method == "none" else spec.weights
    method = make_method(spec.method, spec.guidance, method_weights, names)
    bar = tqdm(todo, desc="groups", disable=not spec.progress, dynamic_ncols=True)
    for prompt_idx, seed in bar:
        group_start = time.time()
        prompt = spec.prompts[prompt_idx]
        bar.set_postfix_str(f"p{prompt_idx:03d} s{seed}")
        budget.reset()
        result = sample_group(
            backbone=backbone,
            method=method,
            rewards=rewards,
            prompt=prompt,
            seed=seed,
            num_steps=spec.steps,
            progress=spec.progress,
        )
        scores = {n: ev(result.images, [prompt] * len(result.images)) for n, ev in evaluators.items()}
        images, rows = {}, []
        for w_idx, w in enumerate(spec.weights):
            rel = image_name(prompt_idx, seed, w_idx)
            images[rel] = png_bytes(result.images[w_idx])
            row = {"prompt_idx": prompt_idx, "prompt": prompt, "seed": seed, "weight_idx": w_idx}
            row.update({f"w_{n}": float(x) for n, x in zip(names, w)})
            row.update({f"r_{n}": float(s[w_idx]) for n, s in scores.items()})
            row.update(
                image=rel, reward_queries=int(result.queries[w_idx]), denoiser_evals=int(result.evals[w_idx])
            )
            rows.append(row)
        trace = [{"prompt_idx": prompt_idx, "seed": seed, **r} for r in result.trace]
        out.commit_group(images, trace, rows)
        groups[f"p{prompt_idx:03d}_s{seed}"] = {
            "reward_queries_by_reward": result.queries_by_reward,
            "denoiser_evals": int(result.evals.sum()),
            "wall_seconds": round(time.time() - group_start, 3),
        }
        out.write_summary(summarize(spec, out, groups, wall_before + time.time() - start, "partial", total))
