"""Rewards: callables ``(images [B,3,H,W] in [0,1], prompts) -> Tensor[B]``, higher is better."""

from srsoup.rewards.base import CountingReward, QueryBudget, build_rewards

__all__ = ["CountingReward", "QueryBudget", "build_rewards"]
