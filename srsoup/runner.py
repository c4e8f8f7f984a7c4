"""``run(cfg)``: validate the whole plan, load the models once, then sample, score and commit each group.

The loop a newcomer follows: ``build_spec`` checks every choice before anything is loaded or written; the models
load (a missing one leaves no half-made run dir); the run dir is locked (one process at a time) and repaired, and
complete prompt x seed groups are skipped; each remaining group runs all chains of the method, scores the final
images, and commits atomically; summary.json says where the run stands after every group. Ctrl-C and a full disk
end with one line; what was committed stays, and the same command resumes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from srsoup.errors import Interrupted, SrsoupError
from srsoup.guidance.base import Guidance
from srsoup.outputs import Ledger, RunDir, disk_error, display_path, group_key, image_name, png_bytes, stats_delta
from srsoup.planning import check_memory
from srsoup.rewards.base import CountingReward, QueryBudget, build_rewards, reward_stats
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

    def stats(self) -> dict[str, dict]:
        """Per reward: queries, evaluation queries, and what the reward reports itself (cache hits, cost, ...)."""
        return reward_stats(self.rewards, self.evaluators)

    def seconds(self) -> dict[str, float]:
        """Seconds spent in each kind of model call so far (the timers beside the counters)."""
        return {
            "denoiser": self.backbone.timers["denoiser"].seconds,
            "decode": self.backbone.timers["decode"].seconds,
            "encode": self.backbone.timers["encode"].seconds,
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
        storage_dtype=spec.storage_dtype,
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
    out = RunDir.of_rewards(
        Path(run_dir), spec.reward_names, [*spec.rewards, *spec.eval_rewards], len(spec.weights)
    )
    refuse_incompatible(out, spec)
    if spec.fitted_from is not None:
        key = spec.method_cls.budget_key
        fitted = (key, spec.fitted_from, spec.guidance[key], spec.budget)
        log.info("budget: %s lowered from %d to %d to fit %d reward queries per group", *fitted)
    if spec.random_weights():
        log.warning(
            "RANDOM WEIGHTS (init=random) for %s: images are noise; counts, compute, memory and timing are real",
            ", ".join(spec.random_weights()),
        )
    check_memory(spec)  # a run that cannot fit is refused before anything loads
    models = load_models(spec)  # before anything is written: a missing model leaves no half-made run dir
    try:
        out.path.mkdir(parents=True, exist_ok=True)
        with out.lock():  # one process at a time; a second one is refused naming this one's pid
            return run_groups(spec, models, out, start)
    except OSError as err:  # a full disk, a vanished or read-only dir: one line, the committed groups stay
        raise SrsoupError(disk_error(out.path, err)) from None


def refuse_incompatible(out: RunDir, spec: RunSpec) -> None:
    """A SrsoupError naming what differs when ``out`` holds a run with other settings than ``spec``."""
    problem = out.check_compatible(spec.fingerprint(), spec.method_cls.option_defaults())
    if problem:
        raise SrsoupError(problem)


def run_groups(spec: RunSpec, models: Models, out: RunDir, start: float) -> Path:
    """Under the run-dir lock: repair, skip complete groups, run and commit the rest, keep summary.json current."""
    refuse_incompatible(out, spec)  # again, now that no other process can write
    out.write_fingerprint(spec.fingerprint())
    done = out.repair()
    ledger = Ledger(out, describe(spec), spec.plan.reward_queries_by_reward, start, models.stats)
    ledger.load_seconds = models.load_seconds
    todo = [key for key in spec.groups if key not in done]
    complete, where = len(spec.groups) - len(todo), display_path(out.path)
    if complete:
        log.info("resuming %s: %d of %d groups already complete", out.path, complete, len(spec.groups))
        warn_thread_change(spec, ledger.groups, [group_key(*key) for key in spec.groups if key in done])
    method = spec.build_method()
    try:
        ledger.write("partial")
        for prompt_idx, seed in tqdm(todo, desc="groups", disable=not spec.progress, dynamic_ncols=True):
            entry = run_group(spec, models, method, out, prompt_idx, seed)
            ledger.groups[group_key(prompt_idx, seed)] = entry
            complete += 1
            ledger.write("partial")
            if not spec.progress:  # no bar: a line per group, e.g. in a bench child's log
                log.info(
                    "group %d of %d (prompt %d, seed %d) committed in %.1f s",
                    complete,
                    len(spec.groups),
                    prompt_idx,
                    seed,
                    entry["wall_seconds"],
                )
    except (KeyboardInterrupt, SystemExit) as err:
        # Ctrl-C, or a scheduler's preemption signal (submitit exits to requeue): partial, resumable as it is.
        ledger.close("partial", f"interrupted ({type(err).__name__})")
        if isinstance(err, KeyboardInterrupt):
            raise Interrupted(
                f"interrupted; {complete} of {len(spec.groups)} groups complete in {where}; "
                "rerun the same command to resume"
            ) from None
        raise
    except BaseException as err:
        # Complete groups stay committed; the summary says why the rest is missing (reports list it).
        ledger.close("failed", f"{type(err).__name__}: {err}".splitlines()[0])
        raise
    summary = ledger.write("complete")
    msg = (
        f"srsoup: {len(spec.groups) * len(spec.weights)} images ({len(spec.prompt_indices)} prompts x "
        f"{len(spec.seeds)} seeds x {len(spec.weights)} weights, {spec.method_label}) in {where}/images; "
        f"scores in {where}/rewards.csv, per-step trace in trace.csv, "
        f"{'every sample in samples.csv, ' if out.samples_csv.exists() else ''}totals in summary.json "
        f"({summary['reward_queries']} "
        f"reward queries, {summary['denoiser_evals']} denoiser evals)"
    )
    log.info(msg)
    print(msg)
    return out.path


def run_group(spec: RunSpec, models: Models, method: Guidance, out: RunDir, prompt_idx: int, seed: int) -> dict:
    """Sample one prompt x seed group, score its final images, commit them; returns its summary entry."""
    start, seconds, stats = time.time(), models.seconds(), models.stats()
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
    trace = [{"prompt_idx": prompt_idx, "seed": seed, **r} for r in result.trace]
    out.commit_group(images, trace, rows, pool_rows(models, result, prompt, prompt_idx, seed))
    after = models.seconds()
    return {
        "reward_queries_by_reward": result.queries_by_reward,
        "denoiser_evals": int(result.evals.sum()),
        "wall_seconds": round(time.time() - start, 3),
        "model_seconds": {k: round(after[k] - seconds[k], 4) for k in after},
        **stats_delta(models.stats(), stats),  # e.g. which queries a paid reward served from its cache
        **cpu_threads(spec),
    }


def pool_rows(models: Models, result, prompt: str, prompt_idx: int, seed: int) -> list[dict]:
    """samples.csv rows of a method that picked its rows from a pool (best_of_n): each sample's scores, the guided
    rewards' as the method scored them, the eval rewards' scored here (uncharged, like every eval reward)."""
    if result.sample_images is None:
        return []
    pool, n = result.sample_images, len(result.sample_images)
    scores = {
        name: result.sample_scores[name] if name in result.sample_scores else ev(pool, [prompt] * n)
        for name, ev in models.evaluators.items()
    }
    return [
        {"prompt_idx": prompt_idx, "seed": seed, "sample": i, **{f"r_{k}": float(v[i]) for k, v in scores.items()}}
        for i in range(n)
    ]


def cpu_threads(spec: RunSpec) -> dict:
    """A CPU group's torch thread count: float sums are reduced in a thread-count-dependent order."""
    return {"torch_threads": torch.get_num_threads()} if spec.device.type == "cpu" else {}


def warn_thread_change(spec: RunSpec, groups: dict[str, dict], done: list[str]) -> None:
    """Warn when a CPU run resumes with another torch thread count than its committed groups were made with.

    Not refused: the settings are the same and every group is a valid sample. But a CPU's float sums depend on
    the thread count, so the new groups can differ in the last bits (and, through the guidance's choices, in
    pixels) from an uninterrupted run with the old count.
    """
    now = cpu_threads(spec).get("torch_threads")
    before = sorted({groups[key]["torch_threads"] for key in done if "torch_threads" in groups.get(key, {})})
    if now is not None and before and before != [now]:
        log.warning(
            "resuming with %d torch threads; the committed groups were made with %s: on CPU the new groups can "
            "differ in the last bits from an uninterrupted run (set OMP_NUM_THREADS=%d for the same bytes)",
            now,
            " and ".join(map(str, before)),
            before[0],
        )
