"""``run(cfg)``: validate the whole plan, load the models once, then sample, score and commit each group.

The loop a newcomer follows: ``build_spec`` checks every choice before anything is loaded or written; the models
load (a missing one leaves no half-made run dir); the run dir is repaired and complete prompt x seed groups are
skipped; each remaining group runs all chains of the method, scores the final images, and commits atomically;
summary.json says where the run stands after every group.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from tqdm.auto import tqdm

from srsoup.errors import SrsoupError
from srsoup.guidance.base import Guidance
from srsoup.outputs import Ledger, RunDir, group_key, image_name, png_bytes, reward_columns, trace_columns
from srsoup.planning import check_memory
from srsoup.rewards.base import CountingReward, QueryBudget, build_rewards
from srsoup.sampling import sample_group
from srsoup.spec import RunSpec, build_spec, describe

log = logging.getLogger("srsoup")

__all__ = ["RunSpec", "build_spec", "load_models", "run"]


@dataclass
class Models:
    backbone: Any
    rewards: dict[str, CountingReward]  # guided set, counted and charged to the group budget
    evaluators: dict[str, CountingReward]  # guided set + eval_rewards, scoring final images only
    budget: QueryBudget
    load_seconds: float = 0.0

    def seconds(self) -> dict[str, float]:
        """Seconds spent in each kind of model call so far (the timers beside the counters)."""
        return {
            "denoiser": self.backbone.timers["denoiser"].seconds,
            "decode": self.backbone.timers["decode"].seconds,
            "reward": sum(r.timer.seconds for r in self.rewards.values()),
            "eval_reward": sum(r.timer.seconds for r in self.evaluators.values()),
        }


def load_models(spec: RunSpec) -> Models:
    """The backbone of the model yaml's class, and every reward wrapped in a counter (guided ones charged)."""
    start = time.perf_counter()
    backbone = spec.backbone_cls.load(
        spec.model,
        device=spec.device,
        dtype=spec.dtype,
        cfg_scale=spec.cfg_scale,
        chunk_size=spec.chunk_size,
        eta=spec.eta,
    )
    budget = QueryBudget(spec.budget)
    kw = dict(device=str(spec.device), dtype=spec.dtype)
    fns = build_rewards(spec.rewards, **kw)
    rewards = {n: CountingReward(n, fn, spec.chunk_size, budget, spec.device) for n, fn in fns.items()}
    eval_fns = {**fns, **build_rewards(spec.eval_rewards, **kw)}
    evaluators = {n: CountingReward(n, fn, spec.chunk_size, device=spec.device) for n, fn in eval_fns.items()}
    return Models(backbone, rewards, evaluators, budget, time.perf_counter() - start)


def run(cfg: DictConfig, run_dir: str | Path | None = None) -> Path:
    """Run the experiment described by ``cfg`` into ``run_dir`` (default: Hydra's output dir)."""
    start = time.time()
    spec = build_spec(cfg)
    if run_dir is None:
        from hydra.core.hydra_config import HydraConfig

        run_dir = HydraConfig.get().runtime.output_dir
    out = RunDir(
        Path(run_dir),
        reward_columns(spec.reward_names, [*spec.rewards, *spec.eval_rewards]),
        trace_columns(spec.reward_names),
        chains=len(spec.weights),
    )
    problem = out.check_compatible(spec.fingerprint())
    if problem:
        raise SrsoupError(problem)
    if spec.fitted_from is not None:
        key = spec.method_cls.budget_key
        log.info(
            "budget: %s lowered from %d to %d to fit %d reward queries per group",
            key,
            spec.fitted_from,
            spec.guidance[key],
            spec.budget,
        )
    if spec.random_weights():
        log.warning(
            "RANDOM WEIGHTS (init=random) for %s: images are noise; counts, compute, memory and timing are real",
            ", ".join(spec.random_weights()),
        )
    check_memory(spec)  # a run that cannot fit is refused before anything loads
    models = load_models(spec)  # before anything is written: a missing model leaves no half-made run dir
    out.path.mkdir(parents=True, exist_ok=True)
    done = out.repair()
    ledger = Ledger(out, describe(spec, _versions()), spec.plan.reward_queries_by_reward, start, bool(done))
    ledger.load_seconds = models.load_seconds
    all_groups = [(p, s) for p in range(len(spec.prompts)) for s in spec.seeds]
    todo = [key for key in all_groups if key not in done]
    if done:
        log.info("resuming %s: %d of %d groups already complete", out.path, len(done), len(all_groups))
    ledger.write("partial")
    method = spec.build_method()
    try:
        for prompt_idx, seed in tqdm(todo, desc="groups", disable=not spec.progress, dynamic_ncols=True):
            ledger.groups[group_key(prompt_idx, seed)] = run_group(spec, models, method, out, prompt_idx, seed)
            ledger.write("partial")
    except BaseException as err:
        # Complete groups stay committed; the summary says why the rest is missing (reports list it).
        ledger.write("failed", error=f"{type(err).__name__}: {err}".splitlines()[0])
        raise
    summary = ledger.write("complete")
    where = _display(out.path)
    msg = (
        f"srsoup: {summary['images']} images ({len(spec.prompts)} prompts x {len(spec.seeds)} seeds x "
        f"{len(spec.weights)} weights, {spec.method}) in {where}/images; scores in {where}/rewards.csv, "
        f"per-step trace in trace.csv, totals in summary.json ({summary['reward_queries']} reward queries, "
        f"{summary['denoiser_evals']} denoiser evals)"
    )
    log.info(msg)
    print(msg)
    return out.path


def run_group(spec: RunSpec, models: Models, method: Guidance, out: RunDir, prompt_idx: int, seed: int) -> dict:
    """Sample one prompt x seed group, score its final images, commit them; returns its summary entry."""
    start, seconds = time.time(), models.seconds()
    prompt = spec.prompts[prompt_idx]
    models.budget.reset()
    result = sample_group(
        backbone=models.backbone,
        method=method,
        rewards=models.rewards,
        prompt=prompt,
        seed=seed,
        num_steps=spec.steps,
        progress=spec.progress,
    )
    scores = {n: ev(result.images, [prompt] * len(result.images)) for n, ev in models.evaluators.items()}
    images, rows = {}, []
    for w_idx, w in enumerate(spec.weights):
        rel = image_name(prompt_idx, seed, w_idx)
        images[rel] = png_bytes(result.images[w_idx])
        row = {"prompt_idx": prompt_idx, "prompt": prompt, "seed": seed, "weight_idx": w_idx}
        row.update({f"w_{n}": float(x) for n, x in zip(spec.reward_names, w)})
        row.update({f"r_{n}": float(s[w_idx]) for n, s in scores.items()})
        row.update(image=rel, reward_queries=int(result.queries[w_idx]), denoiser_evals=int(result.evals[w_idx]))
        rows.append(row)
    out.commit_group(images, [{"prompt_idx": prompt_idx, "seed": seed, **r} for r in result.trace], rows)
    after = models.seconds()
    return {
        "reward_queries_by_reward": result.queries_by_reward,
        "denoiser_evals": int(result.evals.sum()),
        "wall_seconds": round(time.time() - start, 3),
        "model_seconds": {k: round(after[k] - seconds[k], 4) for k in after},
    }


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("srsoup", "torch", "diffusers", "transformers", "hydra-core"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _display(path: Path) -> str:
    """The path relative to the working directory when it lies below it (as the user typed it)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
