"""One prompt x seed group: all chains of the weight grid from the same x_T, stepped together to images."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from srsoup.backbones.base import Backbone
from srsoup.guidance.base import Guidance
from srsoup.guidance.steps import StepContext, bhattacharyya
from srsoup.rewards.base import CountingReward


@dataclass
class GroupResult:
    images: torch.Tensor  # [L, 3, H, W] in [0, 1]
    queries: torch.Tensor  # [L] reward queries made by each chain's candidates
    evals: torch.Tensor  # [L] denoiser evals: the chain's own plus its candidates'
    queries_by_reward: dict[str, int]
    trace: list[dict] = field(default_factory=list)


def anchor_rows(weights: torch.Tensor) -> dict[int, int]:
    """Reward index → first chain whose weight is one-hot on it."""
    rows = {}
    for c, w in enumerate(weights):
        if (w > 0).sum() == 1:
            rows.setdefault(int(w.argmax()), c)
    return rows


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
    """Run every chain of ``method.weights`` for one prompt and seed; x_T comes from the seed alone."""
    weights, names = method.weights, method.reward_names
    selecting = hasattr(method, "select")  # best-of-N: N samples, then one per weight
    n_chains = method.num_chains() if selecting else len(weights)
    timesteps = backbone.set_steps(num_steps)
    cond = backbone.encode_prompt(prompt)
    if selecting:
        x = method.initial_latents(backbone, seed)
    else:
        x = backbone.initial_latents(torch.Generator().manual_seed(seed)).expand(n_chains, *backbone.latent_shape)
    x = x.contiguous()
    before = {n: r.queries for n, r in rewards.items()}
    queries = torch.zeros(n_chains, dtype=torch.long)
    evals = torch.zeros(n_chains, dtype=torch.long)
    anchors = anchor_rows(weights) if method.name not in ("none", "best_of_n") else {}
    trace = []
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
            weights=weights,
            reward_names=names,
        )
        x = method.step(ctx)
        queries += ctx.stats.queries
        evals += ctx.stats.evals
        for c in range(n_chains):
            row = {
                "step": step,
                "timestep": timesteps[step],
                "weight_idx": c,
                "phase": ctx.stats.phase[c],
                "sigma": float(dist.sigma),
            }
            for name in names:
                row[f"reward_mean_{name}"] = ctx.stats.reward_mean.get((c, name), float("nan"))
                row[f"reward_std_{name}"] = ctx.stats.reward_std.get((c, name), float("nan"))
            for m, a in anchors.items():
                row[f"bc_{names[m]}"] = bhattacharyya(dist.mean[a], dist.mean[c], dist.sigma)
            trace.append(row)
    images = backbone.final_images(x).float().cpu()
    if selecting:
        images, queries, _ = method.select(images, rewards, prompt)
        evals = torch.tensor(
            [
                int(evals.sum()) // len(weights) + (1 if r < int(evals.sum()) % len(weights) else 0)
                for r in range(len(weights))
            ]
        )
    return GroupResult(
        images=images,
        queries=queries,
        evals=evals,
        queries_by_reward={n: r.queries - before[n] for n, r in rewards.items()},
        trace=trace,
    )
