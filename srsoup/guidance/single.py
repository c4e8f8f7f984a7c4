"""Single-reward search-gradient guidance (Demon-like, black-box): one chain, one reward, K candidates a step."""

from __future__ import annotations

import torch

from srsoup.guidance.weighted_sum import WeightedSum


class Single(WeightedSum):
    """A weighted sum over one one-hot weight: g = Σ_k z_k·ε_k, x' = μ + σ·√d·g/‖g‖."""

    name = "single"

    def __init__(self, *, reward: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.reward = reward

    def setup(self, grid: torch.Tensor, reward_names: list[str]) -> None:
        """One chain, one-hot on ``reward`` (default: the first reward of the set); the grid plays no part."""
        target = self.reward or reward_names[0]
        if target not in reward_names:
            raise ValueError(
                f"guidance.reward={target!r} is not in the reward set; valid: {', '.join(reward_names)}"
            )
        onehot = torch.tensor([[1.0 if n == target else 0.0 for n in reward_names]], dtype=torch.float64)
        super().setup(onehot, reward_names)

    def summary_fields(self) -> dict:
        return {**super().summary_fields(), "reward": self.reward or self.reward_names[0]}
