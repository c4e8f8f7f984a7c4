"""Unguided sampling: x' = μ + σ·ε with the step's first noise, the reference point for every method."""

from __future__ import annotations

import torch

from srsoup.guidance.base import Guidance
from srsoup.guidance.steps import StepContext


class NoGuidance(Guidance):
    name = "none"

    def candidate_plan(self, step: int, num_steps: int) -> list[tuple[int, torch.Tensor]]:
        return []

    def step(self, ctx: StepContext) -> torch.Tensor:
        ctx.stats.phase = [self.name] * len(ctx.dist.mean)
        return ctx.move(ctx.dist.mean, torch.zeros_like(ctx.dist.mean))
