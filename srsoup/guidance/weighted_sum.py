"""Weighted-sum search-gradient guidance (the baseline): every chain draws and scores its own candidates.

For chain w: x_{w,k} = μ_w + σ·ε_k (one noise set per step shared by all chains), scored by each reward with
w_m > 0; z_m = normalize(r_m) per reward; g = Σ_m w_m Σ_k z_{m,k}·ε_k; x' = μ_w + σ·√d·g/‖g‖ (DESIGN §1).
"""

from __future__ import annotations

import torch

from srsoup.guidance.base import Guidance
from srsoup.guidance.steps import (
    NORMALIZERS,
    StepContext,
    check_choice,
    check_flag,
    check_fraction,
    compress_trick,
    keep_top,
    normalize_rewards,
)


class WeightedSum(Guidance):
    name = "weighted_sum"

    def __init__(
        self,
        *,
        num_candidates: int = 16,
        normalize: str = "zscore",
        antithetic: bool = False,
        compress_tricks: bool = False,
        compress_reward: str = "jpeg_compressibility",
        compress_target_kb: float = 15.0,
        compress_top_fraction: float = 1 / 6,
        **kwargs,
    ):
        super().__init__(num_candidates=num_candidates, **kwargs)
        self.normalize = check_choice("guidance.normalize", normalize, NORMALIZERS)
        if antithetic and num_candidates % 2:
            raise ValueError(
                f"guidance.num_candidates={num_candidates} must be even with guidance.antithetic=true"
            )
        self.antithetic = bool(antithetic)
        self.compress_tricks = check_flag("guidance.compress_tricks", compress_tricks)
        if isinstance(compress_target_kb, bool) or not 0 <= compress_target_kb < float("inf"):
            raise ValueError(f"guidance.compress_target_kb={compress_target_kb} must be a number of kB >= 0")
        self.compress_reward = compress_reward
        self.compress_target_kb = compress_target_kb
        self.compress_top_fraction = check_fraction("guidance.compress_top_fraction", compress_top_fraction)

    def candidate_plan(self, step: int, num_steps: int) -> list[tuple[int, torch.Tensor]]:
        return [(c, w > 0) for c, w in enumerate(self.weights)]

    # --- shared by the subclasses --------------------------------------------------------------------------
    def draw_and_score(self, ctx: StepContext, drawers: list[tuple[int, torch.Tensor]]):
        """Candidates μ_c + σ·ε_k, k < K_c, for each drawing chain c (one noise set per step and size K_c, shared
        by every chain drawing that many); returns each drawer's noise set {c: [K_c, ...]} and z[(chain, reward)]
        → [K_c]."""
        sizes = [self.chain_candidates(c, ctx.step, ctx.num_steps) for c, _ in drawers]
        eps = self.noise_sets(ctx, [c for c, _ in drawers], sizes)
        if not drawers:
            return eps, {}
        mean, sigma = ctx.dist.mean, ctx.dist.sigma
        candidates = torch.cat([mean[c] + sigma * eps[c] for c, _ in drawers])
        owner = torch.tensor([c for (c, _), k in zip(drawers, sizes) for _ in range(k)])
        mask = torch.cat([m.expand(k, -1) for (_, m), k in zip(drawers, sizes)])
        scores = ctx.score(candidates, owner, mask).split(sizes)
        z = {}
        for (c, m_mask), s in zip(drawers, scores):
            for m in m_mask.nonzero().flatten().tolist():
                name = self.reward_names[m]
                r = s[:, m]
                ctx.record(c, name, r)
                z[(c, m)] = self._normalize(r, name)
        return eps, z

    def noise_sets(self, ctx: StepContext, chains: list[int], sizes: list[int]) -> dict[int, torch.Tensor]:
        """Each drawing chain's noise set [K_c, ...]: one set per step and size, shared by every chain drawing that
        many (DESIGN §1)."""
        sets = {k: ctx.noise(k, self.antithetic) for k in dict.fromkeys(sizes)}
        return {c: sets[k] for c, k in zip(chains, sizes)}

    def _normalize(self, r: torch.Tensor, name: str) -> torch.Tensor:
        z = normalize_rewards(r, self.normalize)
        if self.compress_tricks and name == self.compress_reward:
            z = compress_trick(z, r, self.compress_target_kb, self.normalize)
        return z

    def top_k(self, z: torch.Tensor, name: str) -> torch.Tensor:
        """The reference's anchor trick for compressibility: keep the top K/6 weights (off by default)."""
        if self.compress_tricks and name == self.compress_reward:
            return keep_top(z, int(len(z) * self.compress_top_fraction))
        return z

    def weighted_gradient(self, chain: int, eps: torch.Tensor, z: dict, top_k: bool = False) -> torch.Tensor:
        """g = Σ_m w_m Σ_k z_{m,k}·ε_k for a chain that drew its own candidates."""
        g = torch.zeros_like(eps[0])
        for m, w in enumerate(self.weights[chain].tolist()):
            if w > 0:
                zm = z[(chain, m)]
                zm = self.top_k(zm, self.reward_names[m]) if top_k else zm
                g += w * torch.tensordot(zm.to(eps), eps, dims=1)
        return g

    def step(self, ctx: StepContext) -> torch.Tensor:
        drawers = self.candidate_plan(ctx.step, ctx.num_steps)
        eps, z = self.draw_and_score(ctx, drawers)
        g = torch.stack([self.weighted_gradient(c, eps[c], z) for c in range(len(self.weights))])
        ctx.stats.phase = [self.phase(ctx.step, ctx.num_steps)] * len(self.weights)
        return ctx.move(ctx.dist.mean, g)
