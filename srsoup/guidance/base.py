"""The guidance-method interface: every per-method fact the runner and sampler need, as hooks with defaults.

A method is one class here plus one yaml in ``conf/guidance/`` whose ``_target_`` names it. The runner and the
sampler never compare method names: what differs between methods is a hook on this class —

- the options it takes (its keyword-only constructor arguments; ``option_names``),
- which rows of the output it produces from the user's weight grid (``setup``),
- which chains it steps (``num_chains``) and where they start (``initial_latents``),
- each step (``step``), what happens after the last one (``finish``),
- the exact plan of counts (``plan``), the size ``budget=fit`` scales (``budget_key``),
- the checks of options that need the number of steps T (``check_steps``, run by ``plan``),
- what it adds to summary.json (``summary_fields``) and which chains the trace compares (``trace_anchors``).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from srsoup.errors import SrsoupError
from srsoup.guidance.steps import StepContext, anchor_rows, check_count


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
    decodes: int = 0  # images decoded for scoring and the final images of every chain

    @property
    def reward_queries(self) -> int:
        return sum(self.reward_queries_by_reward.values())


@dataclass
class Chains:
    """What a group's sampling left: one row per output weight after ``finish`` (per chain before it)."""

    images: torch.Tensor  # [n, 3, H, W] in [0, 1]
    queries: torch.Tensor  # [n] reward queries attributed to each row
    evals: torch.Tensor  # [n] denoiser evals attributed to each row
    #: A method that picks its rows from a pool of finished samples (best_of_n) keeps the pool here: the images
    #: [N, 3, H, W] and its own scores of them (guided reward → [N]); the runner writes them to samples.csv.
    sample_images: torch.Tensor | None = None
    sample_scores: dict[str, torch.Tensor] | None = None


class Guidance(ABC):
    """A guidance method: keyword-only options, ``setup`` once per run, ``step`` once per denoising step."""

    #: The method's name in summary.json, reports and logs.
    name: ClassVar[str] = ""
    #: The option that ``budget=fit`` lowers to fit a query budget (None: nothing to lower), its smallest
    #: useful value, and how messages call it.
    budget_key: ClassVar[str | None] = "num_candidates"
    budget_min: ClassVar[int] = 2
    budget_label: ClassVar[str] = "K"
    #: Whether the method needs a stochastic step (all its candidates would be one point otherwise).
    needs_noise: ClassVar[bool] = False
    #: Options that are step indices: an explicit value past ``sampler.steps`` is refused.
    step_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, num_candidates: int = 16):
        self.num_candidates = check_count("guidance.num_candidates", num_candidates, 1, "K candidates a step")
        self.weights = torch.empty(0)
        self.reward_names: list[str] = []

    # --- configuration ------------------------------------------------------------------------------------
    @classmethod
    def option_names(cls) -> list[str]:
        """Every keyword the constructors along the class hierarchy take (the method's config keys).

        A constructor that takes ``**kwargs`` passes them on to its base class, so the base's keywords count too;
        one without ends the chain.
        """
        return list(cls._options())

    @classmethod
    def option_defaults(cls) -> dict:
        """Each option's default value (options without one are left out)."""
        return {name: p.default for name, p in cls._options().items() if p.default is not inspect.Parameter.empty}

    @classmethod
    def _options(cls) -> dict[str, inspect.Parameter]:
        options: dict[str, inspect.Parameter] = {}
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or klass is object:
                continue
            params = inspect.signature(init).parameters.values()
            for p in params:
                if p.kind is inspect.Parameter.KEYWORD_ONLY:
                    options.setdefault(p.name, p)
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
                break
        return options

    def setup(self, grid: torch.Tensor, reward_names: list[str]) -> None:
        """Bind the user's weight grid [L, M] and the guided reward names; ``weights`` are the output rows."""
        self.reward_names = list(reward_names)
        self.weights = grid

    def summary_fields(self) -> dict:
        """Facts of this method for summary.json beside the counts."""
        return {"num_candidates": self.num_candidates}

    # --- chains -------------------------------------------------------------------------------------------
    @property
    def num_chains(self) -> int:
        """Chains stepped together (one per output weight unless the method says otherwise)."""
        return len(self.weights)

    def initial_latents(self, backbone, seed: int) -> torch.Tensor:
        """x_T of every chain: the seed's one x_T for all (so weights differ only by guidance)."""
        x = backbone.initial_latents(torch.Generator().manual_seed(seed))
        return x.expand(self.num_chains, *backbone.latent_shape)

    def trace_anchors(self) -> dict[int, int]:
        """Reward index → the chain the trace's Bhattacharyya columns compare every chain with."""
        return anchor_rows(self.weights)

    def start_group(self) -> None:  # noqa: B027 - optional hook; most methods keep no per-group state
        """Reset any per-group state (adaptive switches)."""

    @abstractmethod
    def candidate_plan(self, step: int, num_steps: int) -> list[tuple[int, torch.Tensor]]:
        """Chains that draw candidates at ``step`` (``chain_candidates`` of them) and, for each, which rewards [M]
        score them."""

    @abstractmethod
    def step(self, ctx: StepContext) -> torch.Tensor:
        """The next latents of all chains [num_chains, ...]."""

    def finish(self, chains: Chains, rewards: dict, prompt: str) -> Chains:
        """The output rows (one per weight) from the final images of all chains; by default the chains are."""
        return chains

    def phase(self, step: int, num_steps: int) -> str:
        return self.name

    def chain_candidates(self, chain: int, step: int, num_steps: int) -> int:
        """K of a chain that draws at ``step`` (a method may draw more candidates in some steps, or for some
        chains, than for others)."""
        return self.num_candidates

    # --- counts -------------------------------------------------------------------------------------------
    def check_steps(self, num_steps: int) -> None:  # noqa: B027 - optional hook; most options do not need T
        """Raise ValueError (one line naming the key) for an option that does not fit a schedule of T steps."""

    def checked_steps(self, num_steps: int) -> int:
        """``num_steps`` after ``check_steps``, whose ValueError becomes an ``SrsoupError``.

        The base ``plan`` calls it first, and so must a method's own ``plan`` where it has options that need T: the
        spec plans each run before loading a model, so an option that T rules out is reported as one error line
        (``srsoup: error: …``) before any work, like the checks of the constructor and ``setup``.
        """
        try:
            self.check_steps(num_steps)
        except ValueError as err:
            raise SrsoupError(str(err).splitlines()[0]) from None
        return num_steps

    def plan(self, num_steps: int) -> Plan:
        """Reward queries per reward and denoiser evals for one group (DESIGN §1 counting rules)."""
        self.checked_steps(num_steps)
        queries = torch.zeros(len(self.reward_names), dtype=torch.long)
        phases: dict[str, dict[str, int]] = {}
        decodes = self.num_chains
        for step in range(num_steps):
            drawers = [
                (self.chain_candidates(c, step, num_steps), mask)
                for c, mask in self.candidate_plan(step, num_steps)
            ]
            step_queries = sum((k * mask.long() for k, mask in drawers), torch.zeros_like(queries))
            queries += step_queries
            drawn = sum(k for k, _ in drawers)
            decodes += drawn
            # One CFG eval per chain, plus one per candidate except at the last step (decoded directly).
            step_evals = self.num_chains + (drawn if step < num_steps - 1 else 0)
            p = phases.setdefault(self.phase(step, num_steps), dict(steps=0, reward_queries=0, denoiser_evals=0))
            p["steps"] += 1
            p["reward_queries"] += int(step_queries.sum())
            p["denoiser_evals"] += step_evals
        return Plan(
            reward_queries_by_reward={n: int(q) for n, q in zip(self.reward_names, queries)},
            denoiser_evals=sum(p["denoiser_evals"] for p in phases.values()),
            chains=self.num_chains,
            steps=num_steps,
            num_candidates=self.num_candidates,
            phases=phases,
            decodes=decodes,
        )
