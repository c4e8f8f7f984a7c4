"""The reward protocol, the counting wrapper that does all query accounting, and building rewards from config."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from srsoup.errors import BudgetExceeded, SrsoupError
from srsoup.timing import Stopwatch

RewardFn = Callable[[torch.Tensor, Sequence[str]], torch.Tensor]


class QueryBudget:
    """A shared allowance of reward queries for one prompt x seed group (``None`` = unlimited)."""

    def __init__(self, limit: int | None = None):
        self.limit = limit
        self.used = 0

    def charge(self, n: int, reward: str) -> None:
        if self.limit is not None and self.used + n > self.limit:
            raise BudgetExceeded(
                f"reward '{reward}' would make query {self.used + n} of a budget of {self.limit} per group"
            )
        self.used += n

    def reset(self) -> None:
        self.used = 0


class CountingReward:
    """Wraps a reward: counts every scored image as one query, charges a budget, scores in chunks, times it.

    Chunking here keeps the peak memory of a heavy reward model independent of how many images a step scores.
    """

    def __init__(
        self,
        name: str,
        fn: RewardFn,
        chunk_size: int = 64,
        budget: QueryBudget | None = None,
        device: torch.device | str | None = None,
    ):
        self.name = name
        self.fn = fn
        self.chunk_size = chunk_size
        self.budget = budget
        self.queries = 0
        self.timer = Stopwatch(device)

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        n = len(images)
        if n == 0:
            return torch.empty(0)
        if self.budget is not None:
            self.budget.charge(n, self.name)
        self.queries += n
        with self.timer():
            scores = [
                torch.as_tensor(self.fn(images[i : i + self.chunk_size], prompts[i : i + self.chunk_size]))
                .detach()
                .float()
                .cpu()
                .reshape(-1)
                for i in range(0, n, self.chunk_size)
            ]
        out = torch.cat(scores)
        if out.numel() != n:
            raise RuntimeError(f"reward '{self.name}' returned {out.numel()} scores for {n} images")
        return out

    def __repr__(self) -> str:
        return f"CountingReward({self.name!r}, queries={self.queries})"


def reward_stats(guided: Mapping[str, CountingReward], evaluators: Mapping[str, CountingReward]) -> dict:
    """Per reward: ``queries`` (guidance, the method's ledger), ``eval_queries`` (final images scored), and what
    the reward function reports itself through an optional ``stats()`` (the HTTP reward: cache hits, paid
    queries, requests, retries, failed attempts, cost). A cache hit is still a query of the method's ledger."""
    out = {}
    for name, evaluator in evaluators.items():
        entry = {"queries": guided[name].queries if name in guided else 0, "eval_queries": evaluator.queries}
        stats = getattr(evaluator.fn, "stats", None)
        out[name] = {**entry, **stats()} if callable(stats) else entry
    return out


def build_rewards(
    configs: Mapping[str, Mapping[str, Any]], *, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> dict[str, RewardFn]:
    """Instantiate each reward config (``_target_`` + keyword arguments); heavy loading happens in the factory."""
    import inspect

    from hydra.errors import InstantiationException
    from hydra.utils import get_object, instantiate

    rewards = {}
    for name, cfg in configs.items():
        if "_target_" not in cfg:
            raise SrsoupError(f"reward '{name}' has no _target_; every reward config names its factory")
        try:
            params = inspect.signature(get_object(cfg["_target_"])).parameters
        except Exception as err:  # noqa: BLE001 - a bad _target_ is a config error, said in one line
            raise SrsoupError(f"reward '{name}': cannot import _target_ {cfg['_target_']!r} ({err})") from None
        # Model-backed rewards take the run's device and dtype; pure functions of pixels do not.
        extra = {k: v for k, v in dict(device=device, dtype=dtype).items() if k in params and k not in cfg}
        try:
            rewards[name] = instantiate(dict(cfg), **extra)
        except InstantiationException as err:
            # Hydra wraps the factory's own one-line error; unwrap it so the CLI prints that line alone.
            if isinstance(err.__cause__, SrsoupError):
                raise err.__cause__ from None
            raise SrsoupError(f"reward '{name}': {err}".splitlines()[0]) from None
    return rewards
