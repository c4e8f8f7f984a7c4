"""One prompt x seed group: the method's chains from the seed's x_T, stepped together to one image per weight."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from srsoup.backbones.base import Backbone
from srsoup.guidance.base import Chains, Guidance
from srsoup.guidance.steps import StepContext, bhattacharyya
from srsoup.rewards.base import CountingReward


@dataclass
class GroupResult:
    images: torch.Tensor  # [L, 3, H, W] in [0, 1]
    queries: torch.Tensor  # [L] reward queries attributed to each output row
    evals: torch.Tensor  # [L] denoiser evals attributed to each output row
    queries_by_reward: dict[str, int]
    trace: list[dict] = field(default_factory=list)
    sample_images: torch.Tensor | None = None  # [N, 3, H, W]: the pool a method picked its rows from (best_of_n)
    sample_scores: dict[str, torch.Tensor] | None = None  # its scores of that pool, guided reward → [N]


@torch.inference_mode()
def sample_group(
    *,
    backbone: Backbone,
    method: Guidance,
    rewards: dict[str, CountingReward],
    prompt: str,
    seed: int,
    num_steps: int,
    progress: bool = True,
) -> GroupResult:
    """Run every chain of ``method`` for one prompt and seed; x_T and every step's noise come from the seed."""
    timesteps = backbone.set_steps(num_steps)
    cond = backbone.encode(prompt)
    x = method.initial_latents(backbone, seed).contiguous()
    before = {n: r.queries for n, r in rewards.items()}
    queries = torch.zeros(method.num_chains, dtype=torch.long)
    evals = torch.zeros(method.num_chains, dtype=torch.long)
    anchors = method.trace_anchors()
    trace: list[dict] = []
    method.start_group()
    for step in tqdm(range(num_steps), desc="steps", leave=False, disable=not progress, dynamic_ncols=True):
        dist = backbone.step_distribution(x, step, cond)
        ctx = StepContext(
            backbone=backbone,
            rewards=rewards,
            cond=cond,
            prompt=prompt,
            seed=seed,
            step=step,
            num_steps=num_steps,
            dist=dist,
            weights=method.weights,
            reward_names=method.reward_names,
        )
        x = method.step(ctx)
        queries += ctx.stats.queries
        evals += ctx.stats.evals
        trace += trace_rows(ctx, timesteps[step], anchors)
    images = backbone.final_images(x).float().cpu()
    out = method.finish(Chains(images, queries, evals), rewards, prompt)
    return GroupResult(
        images=out.images,
        queries=out.queries,
        evals=out.evals,
        queries_by_reward={n: r.queries - before[n] for n, r in rewards.items()},
        trace=trace,
        sample_images=out.sample_images,
        sample_scores=out.sample_scores,
    )


def trace_rows(ctx: StepContext, timestep: float, anchors: dict[int, int]) -> list[dict]:
    """One trace row per chain: phase, σ, its candidates' reward statistics, Bhattacharyya to each anchor."""
    dist, names, stats = ctx.dist, ctx.reward_names, ctx.stats
    rows = []
    for c in range(len(dist.mean)):
        row = {"step": ctx.step, "timestep": timestep, "weight_idx": c, "phase": stats.phase[c]}
        row["sigma"] = float(dist.sigma)
        for name in names:
            row[f"reward_mean_{name}"] = stats.reward_mean.get((c, name), float("nan"))
            row[f"reward_std_{name}"] = stats.reward_std.get((c, name), float("nan"))
        for m, a in anchors.items():
            row[f"bc_{names[m]}"] = bhattacharyya(dist.mean[a], dist.mean[c], dist.sigma)
        rows.append(row)
    return rows
