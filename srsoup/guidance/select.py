"""Per-step candidate selection (beyond the paper): black-box soft value-based decoding, as SVDD.

Li et al. 2024, "Derivative-Free Guidance in Continuous and Discrete Diffusion Models with Soft Value-Based
Decoding" (SVDD), Algorithm 1: at every step draw K candidates from the step distribution, estimate each one's
soft value by the reward of its posterior-mean clean sample (SVDD-PM), and keep one. Here the candidates and
their scores are exactly weighted sum's — x_{w,k} = μ_w + σ·ε_k with the step's shared noise set {ε_k}, one
denoiser eval at t' for x̂0 (none at the last step), decoded and scored by every reward with w_m > 0 — so a step
costs the same reward queries and evals as weighted sum at the same K. Instead of moving along a search gradient,
chain w keeps one candidate by its value v_k = Σ_m w_m z_{m,k} (z_m normalized per reward over the K candidates,
``normalize`` as weighted sum): ``greedy`` takes argmax_k v_k (SVDD's α → 0), ``softmax`` samples k with
probability ∝ exp(v_k/α) from a generator keyed by (seed, step). Ties, and a constant reward, keep ε_1: the chain
steps as unguided sampling.
"""

from __future__ import annotations

import torch

from srsoup.guidance.steps import StepContext, check_choice, check_positive, step_generator
from srsoup.guidance.weighted_sum import WeightedSum

SELECTIONS = ("greedy", "softmax")
SELECT_STREAM = 0x5E1EC7  # the stream of step_generator for softmax choices


class Select(WeightedSum):
    name = "select"
    needs_noise = True  # with σ = 0 all K candidates are the same point

    def __init__(self, *, selection: str = "greedy", alpha: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.selection = check_choice("guidance.selection", selection, SELECTIONS)
        self.alpha = check_positive("guidance.alpha", alpha, "softmax temperature")

    def summary_fields(self) -> dict:
        return {**super().summary_fields(), "selection": self.selection, "alpha": self.alpha}

    def values(self, chain: int, z: dict) -> torch.Tensor:
        """v_k = Σ_m w_m z_{m,k} for a chain's K candidates (float64)."""
        v = torch.zeros(self.num_candidates, dtype=torch.float64)
        for m, w in enumerate(self.weights[chain].tolist()):
            if w > 0:
                v += w * z[(chain, m)].double()
        return v

    def choose(self, v: torch.Tensor, generator: torch.Generator | None) -> int:
        if self.selection == "greedy":
            return int(v.argmax())  # the first of equal values: ε_1 when nothing tells the candidates apart
        return int(torch.multinomial(torch.softmax(v / self.alpha, 0), 1, generator=generator))

    def step(self, ctx: StepContext) -> torch.Tensor:
        drawers = self.candidate_plan(ctx.step, ctx.num_steps)
        eps, z = self.draw_and_score(ctx, drawers)
        gen = step_generator(ctx.seed, ctx.step, SELECT_STREAM) if self.selection == "softmax" else None
        picks = [self.choose(self.values(c, z), gen) for c in range(len(self.weights))]
        ctx.stats.phase = [self.name] * len(self.weights)
        chosen = torch.stack([eps[c][k] for c, k in enumerate(picks)])
        return ctx.dist.mean + ctx.dist.sigma * chosen.to(ctx.dist.mean)
