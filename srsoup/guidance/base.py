"""The guidance-method interface and the plan of reward queries and denoiser evals it implies."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from srsoup.guidance.steps import StepContext


@dataclass
class Plan:
    """Exact counts for one prompt x seed group, known before any work (an upper bound for adaptive methods)."""

    reward_queries_by_reward: dict[str, int]
    denoiser_evals: int
    chains: int
    steps: int
    num_candidates: int
    phases: dict[str, dict[str, int]]  # per phase: steps, reward_queries, denoiser_evals
    exact: bool = True

    @property
    def reward_queries(self) -> int:
        return sum(self.reward_queries_by_reward.values())


class Guidance(ABC):
    """A guidance method: keyword-only options, ``setup`` once per run, ``step`` once per denoising step."""

    name: str = ""

    def __init__(self, *, num_candidates: int = 16, **_ignored):
        self.num_candidates = num_candidates
        self.weights = torch.empty(0)
        self.reward_names: list[str] = []

    def setup(self, weights: torch.Tensor, reward_names: list[str]) -> None:
        """Bind the weight grid [L, M] (rows on the simplex) and the reward names of the guided set."""
        self.weights = weights
        self.reward_names = list(reward_names)

    def start_group(self) -> None:  # noqa: B027 - optional hook; most methods keep no per-group state
        """Reset any per-group state (adaptive switches)."""

    @abstractmethod
    def candidate_plan(self, step: int, num_steps: int) -> list[tuple[int, torch.Tensor]]:
        """Chains that draw K candidates at ``step`` and, for each, which rewards [M] score them."""

    @abstractmethod
    def step(self, ctx: StepContext) -> torch.Tensor:
        """The next latents of all chains [L, ...]."""

    def phase(self, step: int, num_steps: int) -> str:
        return self.name

    def plan(self, num_steps: int) -> Plan:
        """Reward queries per reward and denoiser evals for one group (DESIGN §1 counting rules)."""
        k = self.num_candidates
        queries = torch.zeros(len(self.reward_names), dtype=torch.long)
        phases: dict[str, dict[str, int]] = {}
        for step in range(num_steps):
            drawers = self.candidate_plan(step, num_steps)
            step_queries = sum((k * mask.long() for _, mask in drawers), torch.zeros_like(queries))
            queries += step_queries
            # One CFG eval per chain, plus one per candidate except at the last step (decoded directly).
            step_evals = len(self.weights) + (k * len(drawers) if step < num_steps - 1 else 0)
            p = phases.setdefault(self.phase(step, num_steps), dict(steps=0, reward_queries=0, denoiser_evals=0))
            p["steps"] += 1
            p["reward_queries"] += int(step_queries.sum())
            p["denoiser_evals"] += step_evals
        return Plan(
            reward_queries_by_reward={n: int(q) for n, q in zip(self.reward_names, queries)},
            denoiser_evals=sum(p["denoiser_evals"] for p in phases.values()),
            chains=len(self.weights),
            steps=num_steps,
            num_candidates=k,
            phases=phases,
        )
