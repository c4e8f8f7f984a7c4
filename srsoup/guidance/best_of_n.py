"""Best-of-N (beyond the paper): the simplest baseline at an equal reward-query budget.

N unguided samples per prompt x seed group (sample 0 is exactly the `none` sample of that seed), each final image
scored once under every reward (N·M queries, N·T denoiser evals); every weight w of the grid then takes the
sample maximizing Σ_m w_m z_m, with z the z-scored rewards over the N samples. One set of samples serves the whole
grid, so its cost does not grow with the number of weights. The N samples and their scores go to samples.csv:
sample n is the same whatever N is, so the first N' rows of a run at N are a run at N' (``choose`` picks from
them as ``finish`` does; `srsoup bench` derives its smaller budgets so).
"""

from __future__ import annotations

import torch

from srsoup.guidance.base import Chains, Guidance, Plan
from srsoup.guidance.steps import StepContext, normalize_rewards, seeded_latents


class BestOfN(Guidance):
    name = "best_of_n"
    budget_label = "N"

    @property
    def num_chains(self) -> int:
        return self.num_candidates

    def trace_anchors(self) -> dict[int, int]:
        return {}  # chains are samples, not weights

    def initial_latents(self, backbone, seed: int) -> torch.Tensor:
        """Sample 0 starts from the seed's x_T (as `none`); the others from x_T keyed by (seed, index)."""
        return seeded_latents(backbone, seed, self.num_candidates)

    def candidate_plan(self, step: int, num_steps: int) -> list[tuple[int, torch.Tensor]]:
        return []

    def step(self, ctx: StepContext) -> torch.Tensor:
        mean = ctx.dist.mean
        noise = ctx.noise(len(mean))  # sample n takes ε_n of the step: sample 0 steps exactly as `none`
        ctx.stats.phase = [self.name] * len(mean)
        return mean + ctx.dist.sigma * noise

    def finish(self, chains: Chains, rewards: dict, prompt: str) -> Chains:
        """Score the N samples under every reward; the best sample per weight; counts spread over the rows."""
        images = chains.images
        scores = {n: rewards[n](images, [prompt] * len(images)) for n in self.reward_names}
        choice = choose(self.weights, [scores[n] for n in self.reward_names])
        # The N·M queries and N·T evals serve every row; spread them so the rows sum to the totals.
        rows = len(self.weights)
        return Chains(
            images=images[choice],
            queries=spread(len(images) * len(self.reward_names), rows),
            evals=spread(int(chains.evals.sum()), rows),
            sample_images=images,
            sample_scores=scores,
        )

    def plan(self, num_steps: int) -> Plan:
        n, m = self.num_candidates, len(self.reward_names)
        return Plan(
            reward_queries_by_reward={name: n for name in self.reward_names},
            denoiser_evals=n * num_steps,
            chains=n,
            steps=num_steps,
            num_candidates=n,
            phases={self.name: dict(steps=num_steps, reward_queries=n * m, denoiser_evals=n * num_steps)},
            decodes=n,
        )


def choose(weights: torch.Tensor, scores: list[torch.Tensor]) -> torch.Tensor:
    """[L]: per weight w, the sample maximizing Σ_m w_m z_m, z each reward's scores [N] z-scored over the N."""
    z = torch.stack([normalize_rewards(s, "zscore") for s in scores], dim=1)  # [N, M]
    return (weights.float() @ z.T).argmax(dim=1)


def spread(total: int, rows: int) -> torch.Tensor:
    """``total`` split over ``rows`` as evenly as integers allow (the first rows take the remainder)."""
    return torch.tensor([total // rows + (1 if r < total % rows else 0) for r in range(rows)])
