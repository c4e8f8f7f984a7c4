"""Single-reward search-gradient guidance (Demon-like, black-box): one chain, one reward, K candidates a step."""

from __future__ import annotations

import torch

from srsoup.guidance.weighted_sum import WeightedSum


class Single(WeightedSum):
    """A weighted sum over one one-hot weight: g = Σ_k z_k·ε_k, x' = μ + σ·√d·g/‖g‖."""

    name = "single"

    def setup(self, weights: torch.Tensor, reward_names: list[str]) -> None:
        if len(weights) != 1 or int((weights[0] > 0).sum()) != 1:
            raise ValueError("single guidance takes exactly one one-hot weight (set guidance.reward)")
        super().setup(weights, reward_names)
