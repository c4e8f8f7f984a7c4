"""The reward protocol, the counting wrapper that does all query accounting, and building rewards from config."""

from __future__ import annotations

import functools
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
            out = torch.cat(
                [
                    self._scores(images[i : i + self.chunk_size], prompts[i : i + self.chunk_size])
                    for i in range(0, n, self.chunk_size)
                ]
            )
        if out.numel() != n:
            raise SrsoupError(
                f"reward '{self.name}' returned {out.numel()} scores for {n} image{'s' * (n != 1)}; a reward "
                "returns one number per image (a tensor, array or list of shape [B])"
            )
        return out

    def _scores(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """One chunk's scores as float64 on the CPU (JPEG sizes near −1.2 kB differ in the 4th decimal: float32
        would lose those digits before normalization)."""
        raw = self.fn(images, prompts)
        try:
            scores = torch.as_tensor(raw.detach() if isinstance(raw, torch.Tensor) else raw)
        except (TypeError, ValueError, RuntimeError):
            raise SrsoupError(
                f"reward '{self.name}' returned a {type(raw).__name__}, not numbers; a reward returns one number "
                "per image (a tensor, array or list of shape [B])"
            ) from None
        if (
            scores.dtype == torch.bool
            or scores.is_complex()
            or not (scores.is_floating_point() or scores.dtype.is_signed or scores.dtype == torch.uint8)
        ):
            raise SrsoupError(
                f"reward '{self.name}' returned scores of dtype {scores.dtype}; valid: real numbers (float or int)"
            )
        return scores.to(device="cpu", dtype=torch.float64).reshape(-1)

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
    """Each reward of a config mapping (name → ``_target_`` + keyword arguments), built by ``build_reward``."""
    return {name: build_reward(name, dict(cfg), device=device, dtype=dtype) for name, cfg in configs.items()}


def build_reward(name: str, cfg: dict, *, device: str = "cpu", dtype: torch.dtype = torch.float32) -> RewardFn:
    """The reward ``_target_`` names, a user's own as much as srsoup's:

    - a class: instantiated with the yaml's keys (and the run's ``device``/``dtype`` if it takes them); its
      instances are called ``(images, prompts)``;
    - a function that takes ``(images, prompts)``: the reward itself, the yaml's keys bound as keyword arguments;
    - any other function: a factory, called with the yaml's keys, that returns the reward.
    Heavy loading happens there, never at import. Anything wrong is one SrsoupError line.
    """
    import inspect

    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from srsoup.targets import locate

    target = cfg.get("_target_")
    if not target:
        raise SrsoupError(f"reward '{name}' has no _target_; every reward config names its class or function")
    try:
        obj = locate(target)
    except ImportError as err:
        raise SrsoupError(f"reward '{name}': cannot import _target_ {target!r} ({err})") from None
    if not callable(obj):
        raise SrsoupError(
            f"reward '{name}': _target_ {target!r} is a {type(obj).__name__}, not a class or function"
        )
    keys = {k: v for k, v in cfg.items() if not k.startswith("_")}
    if _is_reward_function(obj, keys):
        return functools.partial(obj, **keys) if keys else obj
    # Model-backed rewards take the run's device and dtype; pure functions of pixels do not.
    params = inspect.signature(obj).parameters
    extra = {k: v for k, v in dict(device=device, dtype=dtype).items() if k in params and k not in cfg}
    try:
        reward = instantiate(cfg, **extra)
    except InstantiationException as err:
        # Hydra wraps the factory's own one-line error; unwrap it so the CLI prints that line alone.
        if isinstance(err.__cause__, SrsoupError):
            raise err.__cause__ from None
        raise SrsoupError(f"reward '{name}': {err}".splitlines()[0]) from None
    if not callable(reward):
        raise SrsoupError(f"reward '{name}': {target} returned a {type(reward).__name__}, which is not callable")
    return reward


def _is_reward_function(obj, keys: dict) -> bool:
    """A plain function whose signature takes (images, prompts) positionally beside the yaml's keys."""
    import inspect

    if inspect.isclass(obj) or not (inspect.isfunction(obj) or inspect.isbuiltin(obj)):
        return False
    try:
        inspect.signature(obj).bind(None, None, **keys)
    except TypeError:
        return False
    return True
