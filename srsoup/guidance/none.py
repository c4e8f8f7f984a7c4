"""Unguided sampling: x' = μ + σ·ε with the step's first noise, the reference point for every method."""

from __future__ import annotations

import torch

from srsoup.guidance.base import Guidance
from srsoup.guidance.steps import StepContext


class NoGuidance(Guidance):
    """One chain, no candidates, no reward queries; its output row has no weight (NaN in the w_ columns)."""

    name = "none"
    budget_key = None

    def __init__(self):
        self.num_candidates = 0
        self.weights = torch.empty(0)
        self.reward_names: list[str] = []

    def setup(self, grid: torch.Tensor, reward_names: list[str]) -> None:
        self.reward_names = list(reward_names)
        self.weights = torch.full((1, len(reward_names)), float("nan"), dtype=torch.float64)

    def trace_anchors(self) -> dict[int, int]:
        return {}

    def candidate_plan(self, step: int, num_steps: int) -> list[tuple[int, torch.Tensor]]:
        return []

    def step(self, ctx: StepContext) -> torch.Tensor:
        ctx.stats.phase = [self.name] * len(ctx.dist.mean)
        return ctx.move(ctx.dist.mean, torch.zeros_like(ctx.dist.mean))
