"""Shared step machinery: step noise, candidate scoring with counting, reward normalization, search gradients.

Formulas follow DESIGN §1 (after the SRSoup reference code, Yao et al., ICLR 2026): for rewards r_k of
candidates x_k = μ + σ·ε_k, z = normalize(r), g = Σ_k z_k·ε_k, ĝ = √d·g/(‖g‖ + 1e-8), x' = μ + σ·ĝ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from srsoup.backbones.base import Backbone, StepDistribution
from srsoup.rewards.base import CountingReward

NORMALIZERS = ("zscore", "tanh", "minmax", "rank")
EPS = 1e-8


def check_count(key: str, value, minimum: int, what: str) -> int:
    """An integer option >= ``minimum``, or a ValueError naming the key, the value and the bound."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key}={value!r} must be an integer >= {minimum} ({what})")
    if value < minimum:
        raise ValueError(f"{key}={value} must be >= {minimum} ({what})")
    return value


def check_flag(key: str, value) -> bool:
    """A true/false option, or a ValueError naming the key and the value."""
    if not isinstance(value, bool):
        raise ValueError(f"{key}={value!r} must be true or false")
    return value


def check_fraction(key: str, value, what: str = "") -> float:
    """A number in (0, 1], or a ValueError naming the key, the value and (``what``) what it is a fraction of."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{key}={value} must be in (0, 1]" + (f" ({what})" if what else ""))
    return float(value)


def check_positive(key: str, value, what: str = "", zero: bool = False) -> float:
    """A finite number > 0 (>= 0 with ``zero``), or a ValueError naming the key, the value and (``what``) what
    it is."""
    number = not isinstance(value, bool) and isinstance(value, (int, float))
    if not number or not ((value >= 0 if zero else value > 0) and value < float("inf")):
        raise ValueError(
            f"{key}={value!r} must be a number {'>=' if zero else '>'} 0" + (f" ({what})" if what else "")
        )
    return float(value)


def check_choice(key: str, value, valid) -> str:
    if value not in valid:
        raise ValueError(f"{key}={value!r}; valid: {', '.join(valid)}")
    return value


def anchor_rows(weights: torch.Tensor) -> dict[int, int]:
    """Reward index → first chain whose weight is one-hot on it (the anchors of the grid)."""
    rows = {}
    for c, w in enumerate(weights):
        if (w > 0).sum() == 1:
            rows.setdefault(int(w.argmax()), c)
    return rows


def normalize_rewards(r: torch.Tensor, method: str = "zscore") -> torch.Tensor:
    """Per-candidate weights from raw rewards [K]; a constant vector gives zeros (no direction to follow)."""
    r = r.double()
    if r.numel() == 0 or (r.max() - r.min()).abs() <= 1e-12 * max(1.0, r.abs().max().item()):
        return torch.zeros_like(r, dtype=torch.float32)
    if method in ("zscore", "tanh"):
        # Population std, as the SD1.5 reference (`torch.std(r, unbiased=False) + 1e-8`).
        z = (r - r.mean()) / (r.std(unbiased=False) + EPS)
        z = torch.tanh(z) if method == "tanh" else z
    elif method == "minmax":
        z = (r - r.min()) / (r.max() - r.min() + EPS)
    elif method == "rank":
        # Centred ranks in [-1, 1], ties averaged: invariant to any monotone transform of the reward.
        order = r.argsort().argsort().double()
        ranks = torch.stack([order[r == v].mean() for v in r])
        z = (ranks - (len(r) - 1) / 2) / ((len(r) - 1) / 2)
    else:
        raise ValueError(f"normalize={method!r}; valid: {', '.join(NORMALIZERS)}")
    return z.float()


def compress_trick(z_raw: torch.Tensor, r: torch.Tensor, target_kb: float, method: str) -> torch.Tensor:
    """The reference's compressibility normalization: only candidates larger than ``target_kb`` compete.

    r is −kB. Candidates above the target size get normalized weights among themselves, the rest 0; with one
    such candidate it alone gets weight 1; with none, candidate 0 gets weight 1 (as the reference does).
    """
    big = r < -target_kb
    z = torch.zeros_like(z_raw)
    if big.sum() == 0:
        z[0] = 1.0
    elif big.sum() == 1:
        z[big] = 1.0
    else:
        z[big] = normalize_rewards(r[big], method)
    return z


def keep_top(z: torch.Tensor, k: int) -> torch.Tensor:
    """Zero all but the ``k`` largest weights (the reference's compressibility anchor keeps its top K/6)."""
    if k <= 0 or k >= len(z):
        return z
    out = torch.zeros_like(z)
    idx = z.topk(k).indices
    out[idx] = z[idx]
    return out


def unit_direction(g: torch.Tensor) -> torch.Tensor | None:
    """ĝ = √d·g/(‖g‖+1e-8) per chain (first dim); None where g is exactly zero (fall back to plain sampling)."""
    flat = g.flatten(1)
    norm = flat.norm(dim=1)
    d = flat.shape[1]
    return (flat * (d**0.5) / (norm + EPS).unsqueeze(1)).view_as(g), norm > 0


def bhattacharyya(mean_a: torch.Tensor, mean_b: torch.Tensor, sigma: torch.Tensor) -> float:
    """Per-dimension Bhattacharyya coefficient of N(μ_a, σ²) and N(μ_b, σ²): exp(−mean((μ_a−μ_b)²)/(8σ²))."""
    s2 = float(sigma) ** 2
    if s2 == 0:
        return float((mean_a == mean_b).all())
    return float(torch.exp(-((mean_a - mean_b).double() ** 2).mean() / (8 * s2)))


def step_noise(seed: int, step: int, k: int, shape: Sequence[int], antithetic: bool = False) -> torch.Tensor:
    """The noise set {ε_k} of a step: [k, *shape], each ε a function of (seed, step, index) alone, on the CPU.

    Keying every ε by its index rather than drawing one running stream makes ε_1 the same whatever K is, so
    a chain whose rewards are constant samples exactly like unguided sampling, and anchors match single
    guidance. Antithetic sets are [ε_1..ε_{K/2}, −ε_1..−ε_{K/2}] as in the reference.
    """
    draws = k // 2 if antithetic else k
    noise = torch.empty((draws, *shape))
    for i in range(draws):
        state = np.random.SeedSequence([seed, step, i, 0x5EED]).generate_state(2, dtype=np.uint32)
        gen = torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)
        noise[i] = torch.randn(tuple(shape), generator=gen)
    return torch.cat([noise, -noise]) if antithetic else noise


#: The "step" under which extra starting latents are keyed (never a real step index).
X_T_KEY = 2**31 - 1


def seeded_latents(backbone: Backbone, seed: int, n: int) -> torch.Tensor:
    """n starting latents [n, ...]: the seed's own x_T first (so sample 0 is the unguided sample), the others x_T
    keyed by (seed, index) through ``step_noise``, so each is the same whatever n is."""
    first = backbone.initial_latents(torch.Generator().manual_seed(seed))
    rest = step_noise(seed, X_T_KEY, n, backbone.latent_shape)[1:] * backbone.init_noise_sigma
    return torch.cat([first, rest.to(first)])


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """A CPU generator for a method's own random choices at (seed, step) (resampling, softmax selection).

    ``stream`` tells the choices of different methods apart; none collides with ``step_noise``'s keys.
    """
    state = np.random.SeedSequence([seed, step, stream, 0xC401CE]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


@dataclass
class StepStats:
    """What a step did, per chain: queries and evals it caused, candidate reward statistics."""

    queries: torch.Tensor  # [L] int64
    evals: torch.Tensor  # [L] int64
    reward_mean: dict[tuple[int, str], float] = field(default_factory=dict)  # (chain, reward) → mean
    reward_std: dict[tuple[int, str], float] = field(default_factory=dict)
    phase: list[str] = field(default_factory=list)


class StepContext:
    """Everything a guidance method needs at one step of one group; methods call ``score`` and ``noise``."""

    def __init__(
        self,
        *,
        backbone: Backbone,
        rewards: dict[str, CountingReward],
        cond,
        prompt: str,
        seed: int,
        step: int,
        num_steps: int,
        dist: StepDistribution,
        weights: torch.Tensor,
        reward_names: list[str],
    ):
        self.backbone = backbone
        self.rewards = rewards
        self.cond = cond
        self.prompt = prompt
        self.seed = seed
        self.step = step
        self.num_steps = num_steps
        self.dist = dist
        self.weights = weights  # [L, M]
        self.reward_names = reward_names
        n = len(dist.mean)  # chains stepped (the weight grid, or the N samples of best-of-N)
        self.stats = StepStats(
            queries=torch.zeros(n, dtype=torch.long), evals=torch.ones(n, dtype=torch.long), phase=[""] * n
        )

    @property
    def is_last(self) -> bool:
        return self.step == self.num_steps - 1

    def noise(self, k: int, antithetic: bool = False) -> torch.Tensor:
        shape = self.dist.mean.shape[1:]
        return step_noise(self.seed, self.step, k, shape, antithetic).to(self.dist.mean.device)

    def score(self, candidates: torch.Tensor, owner: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Rewards of candidate next latents [N, ...]: ``mask[n, m]`` says whether reward m scores candidate n.

        ``owner[n]`` is the chain that drew candidate n (for per-chain accounting). Candidates go through
        denoiser, decoder and rewards in chunks, so memory does not grow with N. Returns [N, M], NaN where
        not scored.
        """
        n = len(candidates)
        out = torch.full((n, len(self.reward_names)), float("nan"), dtype=torch.float64)
        chunk = self.backbone.chunk_size
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            sub_mask = mask[lo:hi]
            if not sub_mask.any():
                continue
            images = self.backbone.decode(self.backbone.candidate_x0(candidates[lo:hi], self.step, self.cond))
            for m, name in enumerate(self.reward_names):
                rows = sub_mask[:, m].nonzero().flatten()
                if len(rows):
                    out[lo + rows, m] = self.rewards[name](
                        images[rows.to(images.device)], [self.prompt] * len(rows)
                    )
        if not self.is_last:
            self.stats.evals += torch.bincount(owner, minlength=len(self.dist.mean))
        self.stats.queries += torch.bincount(
            owner, weights=mask.sum(1).double(), minlength=len(self.dist.mean)
        ).long()
        return out

    def record(self, chain: int, name: str, r: torch.Tensor) -> None:
        self.stats.reward_mean[(chain, name)] = float(r.mean())
        self.stats.reward_std[(chain, name)] = float(r.std(unbiased=False)) if len(r) > 1 else 0.0

    def move(self, mean: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """x' = μ + σ·ĝ for each chain; where g is zero the chain samples plainly with ε_1 of this step."""
        direction, ok = unit_direction(g)
        plain = self.noise(1)[0].expand_as(mean[0])
        direction[~ok] = plain
        return mean + self.dist.sigma * direction
