"""Sample Reward Soups (Yao, Pan, Fu, Tsang, ICLR 2026): share anchor chains' rewards in the early steps.

Soup phase (steps in [soup_start_step, soup_end_step)): only the M anchor chains (one-hot weights) draw
candidates, each around its own μ_m with the step's shared noise {ε_k}, scored by its own reward only. Every
other chain w reuses the anchors' normalized rewards with corrected directions ε̃_{m,k} and moves by
g(w) = Σ_m w_m Σ_k z_{m,k}·ε̃_{m,k}, ĝ = √d·g/‖g‖, x' = μ_w + σ·ĝ — zero reward queries of its own.
Outside the window every chain is a weighted-sum chain. Anchors always step exactly as single-reward guidance.

Mean corrections (DESIGN §1): ``reference`` ε̃ = ε_k + (μ_m − μ_w), rescaled per candidate to norm √d (the
paper's code); ``exact`` ε̃ = ε_k + (μ_m − μ_w)/σ, so μ_w + σ·ε̃ is the anchor's candidate itself; ``off``.
``switch=adaptive`` (beyond the paper) lets each chain leave the soup once its per-dimension Bhattacharyya
coefficient to an anchor it weighs falls below ``switch_threshold``, instead of one fixed step for all;
``switch=adaptive_weighted`` once the coefficients averaged with the chain's weights Σ_m w_m·BC_m fall below it.
Also beyond the paper: ``soup_candidate_factor`` gives the anchors round(factor·K) candidates inside the window
(the queries the soup saves can buy more candidates where they are shared), ``soup_end_step: null`` makes the
window the whole chain, and ``extra_anchors`` makes some mixed weights of the grid anchors too (they draw and
score their own candidates under every reward they weigh); a soup chain then
reuses, for each reward, the candidates of the sharer of that reward whose step mean is nearest its own.
``importance_weights`` (beyond the paper) weighs each reused candidate by how likely it is under the soup chain's
own step distribution, self-normalized, and tempers those weights when their effective sample size falls below
``importance_min_ess``·K (``importance_weighted``). ``soup_weight_power`` γ (beyond the paper) has a soup chain
combine the anchors' gradients with weights ∝ w_m^γ instead of w_m (``soup_weights``): γ < 1 moves the mixed chains
towards the middle of the trade-off, which the reused rewards, scored far from the chain, leave too close to their
dominant reward. ``soup_cross_score`` (beyond the paper) has the anchors score their soup candidates under every
reward a soup chain weighs, and a soup chain weigh anchor m's candidates with its own weighted sum
Σ_r w_r·z_{m,k,r} instead of z_{m,k,m} (``pool_rewards``): it then sees what a step towards one reward costs the
others. ``soup_share_radius`` (beyond the paper) has every sharer also pool the candidates of the sharers within
that distance of its weight, each sharer drawing its own slice of the step's noise (``pooled_gradient``); with
``extra_anchors: all`` and radius 1 (``guidance=srsoup_pool``) every reward's gradient pools every chain that
scored it and each chain steps along Σ_m w_m G_m.
"""

from __future__ import annotations

import torch

from srsoup.guidance.base import Plan
from srsoup.guidance.steps import (
    StepContext,
    anchor_rows,
    bhattacharyya,
    check_choice,
    check_count,
    check_flag,
    check_fraction,
    check_positive,
)
from srsoup.guidance.weighted_sum import WeightedSum

MEAN_CORRECTIONS = ("reference", "exact", "off")
SWITCHES = ("fixed", "adaptive", "adaptive_weighted")


def corrected_directions(
    eps: torch.Tensor, anchor_mean: torch.Tensor, chain_mean: torch.Tensor, sigma: torch.Tensor, mode: str
) -> torch.Tensor:
    """ε̃_{m,k} for a chain reusing anchor m's candidates [K, ...] (DESIGN §1, mean_correction)."""
    if mode == "off":
        return eps
    shift = anchor_mean - chain_mean
    if mode == "exact":
        return eps + shift / sigma
    if mode == "reference":
        tilde = eps + shift
        flat = tilde.flatten(1)
        d = flat.shape[1]
        # Per-candidate rescale to norm √d, no epsilon, as the reference code.
        return (flat * (d**0.5) / flat.norm(dim=1, keepdim=True)).view_as(eps)
    raise ValueError(f"guidance.mean_correction={mode!r}; valid: {', '.join(MEAN_CORRECTIONS)}")


def importance_log_ratios(
    eps: torch.Tensor, anchor_mean: torch.Tensor, chain_mean: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """log p_w(x_k) − log p_m(x_k) + const for anchor candidates x_k = μ_m + σ·ε_k [K] (float64).

    Both step distributions are N(μ, σ²I) with the same σ, so with δ = (μ_m − μ_w)/σ the log ratio is
    −ε_k·δ − ‖δ‖²/2; the constant cancels in self-normalization and is left out.
    """
    if float(sigma) == 0:
        return torch.zeros(len(eps), dtype=torch.float64)
    # On the CPU in float64 (MPS has no float64); the weights are K numbers.
    delta = ((anchor_mean - chain_mean) / sigma).flatten().cpu().double()
    return -(eps.flatten(1).cpu().double() @ delta)


def tempered_weights(log_ratio: torch.Tensor, min_ess: float) -> tuple[torch.Tensor, float, float]:
    """Self-normalized weights softmax(β·log ρ) with the largest β in [0, 1] whose effective sample size
    1/Σρ̂² is at least ``min_ess``·K (β = 1 when the plain weights have it). Returns (weights, ESS/K, β)."""
    k = len(log_ratio)

    def at(beta: float) -> tuple[torch.Tensor, float]:
        w = torch.softmax(beta * log_ratio, dim=0)
        return w, float(1.0 / (w * w).sum()) / k

    w, ess = at(1.0)
    if ess >= min_ess:
        return w, ess, 1.0
    lo, hi = 0.0, 1.0  # ESS(β) falls as β grows: bisect for the boundary (ESS(0) = 1)
    for _ in range(40):
        mid = (lo + hi) / 2
        if at(mid)[1] >= min_ess:
            lo = mid
        else:
            hi = mid
    w, ess = at(lo)
    return w, ess, lo


def importance_weighted(z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Shared normalized rewards z [K] re-expressed under self-normalized weights ρ̂ [K]: recentred at their
    ρ̂-mean, rescaled to keep their spread, times K·ρ̂, so that Σ_k out_k·ε̃_k is the weighted estimate.
    Uniform weights (ρ̂ = 1/K) return z − mean(z): z itself for z-scored rewards."""
    z64 = z.double()
    k = len(z64)
    mean_w = (weights * z64).sum()
    spread_w = ((weights * (z64 - mean_w) ** 2).sum()).sqrt()
    spread = (z64 - z64.mean()).pow(2).mean().sqrt()
    scale = spread / spread_w if spread_w > 0 else torch.zeros((), dtype=torch.float64)
    return (k * weights * (z64 - mean_w) * scale).to(z.dtype)


def soup_weights(weight: torch.Tensor, power: float) -> torch.Tensor:
    """The weights a soup chain combines the anchors' gradients with: w_m^γ renormalized to sum to 1
    (``soup_weight_power`` γ; γ = 1 returns w itself, zero weights stay zero)."""
    if power == 1.0:
        return weight
    tilted = weight**power  # the grid's weights are >= 0 and power > 0: zeros stay zero
    return tilted / tilted.sum()


class SRSoup(WeightedSum):
    name = "srsoup"
    step_options = ("soup_start_step", "soup_end_step")

    def __init__(
        self,
        *,
        soup_start_step: int = 0,
        soup_end_step: int | None = 20,
        mean_correction: str = "reference",
        switch: str = "fixed",
        switch_threshold: float = 0.5,
        soup_candidate_factor: float = 1.0,
        extra_anchors: list[list[float]] | None = None,
        importance_weights: bool = False,
        importance_min_ess: float = 0.5,
        soup_weight_power: float = 1.0,
        soup_cross_score: bool = False,
        soup_share_radius: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.importance_weights = check_flag("guidance.importance_weights", importance_weights)
        self.importance_min_ess = check_fraction(
            "guidance.importance_min_ess", importance_min_ess, "a fraction of K"
        )
        self.soup_candidate_factor = check_positive("guidance.soup_candidate_factor", soup_candidate_factor)
        self.soup_weight_power = check_positive("guidance.soup_weight_power", soup_weight_power)
        self.soup_cross_score = check_flag("guidance.soup_cross_score", soup_cross_score)
        self.soup_share_radius = check_positive(
            "guidance.soup_share_radius", soup_share_radius, "a distance between weights; 0: off", zero=True
        )
        self.pool: dict[int, list[int]] = {}  # sharer → the sharers (itself among them) it pools
        k_soup = max(1, int(self.soup_candidate_factor * self.num_candidates + 0.5))
        self.soup_num_candidates = k_soup + (k_soup % 2 if self.antithetic else 0)  # pairs stay whole
        if isinstance(extra_anchors, str) and extra_anchors != "all":
            raise ValueError(f"guidance.extra_anchors={extra_anchors!r}; valid: all, or a list of grid weights")
        self.extra_anchors = (
            extra_anchors if extra_anchors == "all" else [[float(x) for x in row] for row in (extra_anchors or [])]
        )
        self.mean_correction = check_choice("guidance.mean_correction", mean_correction, MEAN_CORRECTIONS)
        self.switch = check_choice("guidance.switch", switch, SWITCHES)
        self.soup_start_step = check_count("guidance.soup_start_step", soup_start_step, 0, "first soup step")
        # null: the soup window runs to the last step, whatever T is (the whole chain).
        self.soup_end_step = (
            None
            if soup_end_step is None
            else check_count("guidance.soup_end_step", soup_end_step, 0, "end of the soup window (null: all)")
        )
        if soup_end_step is not None and soup_start_step > soup_end_step:
            raise ValueError(
                f"soup window [{soup_start_step}, {soup_end_step}) is invalid: need 0 <= start <= end"
            )
        self.switch_threshold = check_fraction("guidance.switch_threshold", switch_threshold)
        self.anchors: dict[int, int] = {}
        self.sharers: dict[int, list[int]] = {}  # reward index → chains whose candidates it scores in the soup
        self._left: set[int] = set()
        self._bounding = False  # planning an adaptive switch's bound: every chain may draw, and be in the soup

    def setup(self, weights: torch.Tensor, reward_names: list[str]) -> None:
        super().setup(weights, reward_names)
        self.anchors = anchor_rows(weights)
        for m, name in enumerate(reward_names):
            if m not in self.anchors:
                raise ValueError(f"the weight grid has no anchor (one-hot weight) for reward {name!r}")
        rows = weights.tolist()
        if self.extra_anchors == "all":  # every mixed weight of the grid
            extra = [c for c in range(len(rows)) if c not in self.anchors.values()]
        else:
            extra = [self._grid_row(w, rows) for w in self.extra_anchors]
        self.sharers = {m: [a, *(c for c in extra if weights[c, m] > 0)] for m, a in self.anchors.items()}
        # soup_share_radius: each sharer also pools the candidates of every sharer within the radius of its weight.
        drawers, radius = sorted(self.anchor_chains), self.soup_share_radius
        self.pool = (
            {
                c: [j for j in drawers if float((weights[j] - weights[c]).abs().max()) <= radius + 1e-9]
                for c in drawers
            }
            if radius > 0
            else {}
        )

    @staticmethod
    def _grid_row(w: list[float], rows: list[list[float]]) -> int:
        """The chain of an ``extra_anchors`` weight, or a ValueError naming it and the grid's weights."""
        for c, row in enumerate(rows):
            if len(row) == len(w) and max(map(abs, map(float.__sub__, row, w))) < 1e-9:
                return c
        raise ValueError(f"guidance.extra_anchors: {w} is not a weight of the grid; valid: {rows}")

    def summary_fields(self) -> dict:
        return {
            **super().summary_fields(),
            "soup_start_step": self.soup_start_step,
            "soup_end_step": self.soup_end_step,
            "soup_candidate_factor": self.soup_candidate_factor,
            "soup_num_candidates": self.soup_num_candidates,
            "importance_weights": self.importance_weights,
            "soup_weight_power": self.soup_weight_power,
            "soup_cross_score": self.soup_cross_score,
            "soup_share_radius": self.soup_share_radius,
        }

    def chain_candidates(self, chain: int, step: int, num_steps: int) -> int:
        """K_soup for a sharer (anchor or extra anchor) inside the soup window, whose candidates every soup chain
        reuses; K for any other chain that draws (one that left the soup under an adaptive switch shares nothing:
        it is a weighted-sum chain) and outside the window."""
        return (
            self.soup_num_candidates
            if self.in_window(step) and chain in self.anchor_chains
            else self.num_candidates
        )

    @property
    def anchor_chains(self) -> set[int]:
        """Chains that draw and score their own candidates in the soup window."""
        return {c for chains in self.sharers.values() for c in chains}

    def noise_sets(self, ctx: StepContext, chains: list[int], sizes: list[int]) -> dict[int, torch.Tensor]:
        """With ``soup_share_radius`` the sharers draw disjoint slices of one noise set inside the window (a
        pooled candidate then adds a direction rather than repeating one); otherwise one set per size."""
        if not self.pool or not self.in_window(ctx.step):
            return super().noise_sets(ctx, chains, sizes)
        rest = [(c, k) for c, k in zip(chains, sizes) if c not in self.pool]
        eps = super().noise_sets(ctx, [c for c, _ in rest], [k for _, k in rest])
        sharers = [(c, k // 2 if self.antithetic else k) for c, k in zip(chains, sizes) if c in self.pool]
        draws = ctx.noise(sum(k for _, k in sharers))  # keyed by index: the first slice is the plain set
        lo = 0
        for c, k in sharers:
            eps[c] = (
                torch.cat([draws[lo : lo + k], -draws[lo : lo + k]]) if self.antithetic else draws[lo : lo + k]
            )
            lo += k
        return eps

    def start_group(self) -> None:
        self._left = set()

    def in_window(self, step: int) -> bool:
        return self.soup_start_step <= step and (self.soup_end_step is None or step < self.soup_end_step)

    def soup_chains(self, step: int) -> list[int]:
        """Non-anchor chains that reuse the anchors' rewards at this step."""
        if not self.in_window(step) or self._bounding:
            return []
        anchors = self.anchor_chains
        return [c for c in range(len(self.weights)) if c not in anchors and c not in self._left]

    def cross_rewards(self, step: int, soup: list[int]) -> torch.Tensor:
        """Rewards [M] the sharers score their candidates under beside their own (``soup_cross_score``): every
        reward a chain of ``soup`` weighs (while bounding an adaptive plan, every chain that may be in it)."""
        if not self.soup_cross_score or not self.in_window(step):
            return torch.zeros(len(self.reward_names), dtype=torch.bool)
        if self._bounding:
            soup = [c for c in range(len(self.weights)) if c not in self.anchor_chains]
        return (self.weights[soup] > 0).any(0)

    def candidate_plan(self, step: int, num_steps: int) -> list[tuple[int, torch.Tensor]]:
        soup = self.soup_chains(step)
        cross = self.cross_rewards(step, soup)
        sharers = self.anchor_chains
        return [
            (c, (w > 0) | cross if c in sharers else w > 0) for c, w in enumerate(self.weights) if c not in soup
        ]

    def phase(self, step: int, num_steps: int) -> str:
        return "soup" if self.in_window(step) else "weighted_sum"

    def plan(self, num_steps: int) -> Plan:
        if self.switch == "fixed":
            return super().plan(num_steps)
        # Adaptive: a chain may leave the soup at any step, and then draws K candidates of its own like a
        # weighted-sum chain; the bound is every chain drawing its own at every step (the sharers K_soup inside the
        # window), and with soup_cross_score the sharers scoring every reward a chain in the soup could weigh.
        self._bounding = True
        try:
            bound = super().plan(num_steps)
        finally:
            self._bounding = False
        bound.exact = False
        return bound

    def _update_switch(self, ctx: StepContext) -> None:
        if self.switch == "fixed" or not self.in_window(ctx.step):
            return
        mean, sigma = ctx.dist.mean, ctx.dist.sigma
        for c in self.soup_chains(ctx.step):
            pairs = [
                (float(self.weights[c, m]), bhattacharyya(mean[a], mean[c], sigma))
                for m, a in self.anchors.items()
                if self.weights[c, m] > 0
            ]
            if not pairs:
                continue
            if self.switch == "adaptive":  # the anchor it overlaps least
                overlap = min(bc for _, bc in pairs)
            else:  # adaptive_weighted: each anchor as much as the chain weighs its reward
                overlap = sum(w * bc for w, bc in pairs) / sum(w for w, _ in pairs)
            if overlap < self.switch_threshold:
                self._left.add(c)

    def step(self, ctx: StepContext) -> torch.Tensor:
        self._update_switch(ctx)
        soup = self.soup_chains(ctx.step)
        drawers = self.candidate_plan(ctx.step, ctx.num_steps)
        eps, z = self.draw_and_score(ctx, drawers)
        mean, sigma = ctx.dist.mean, ctx.dist.sigma
        in_window = self.in_window(ctx.step)
        g = torch.zeros_like(mean)
        phases = []
        for c in range(len(self.weights)):
            if c in soup:
                for m, w in enumerate(soup_weights(self.weights[c], self.soup_weight_power).tolist()):
                    if w > 0:
                        a = self.nearest_sharer(m, c, mean)
                        tilde = corrected_directions(eps[a], mean[a], mean[c], sigma, self.mean_correction)
                        zm = self.pool_rewards(z, a, m, c)
                        if self.importance_weights:
                            log_ratio = importance_log_ratios(eps[a], mean[a], mean[c], sigma)
                            rho, _, _ = tempered_weights(log_ratio, self.importance_min_ess)
                            zm = importance_weighted(zm, rho)
                        g[c] += w * torch.tensordot(zm.to(tilde), tilde, dims=1)
                phases.append("soup")
            else:
                onehot = c in self.anchors.values()  # the reference's compressibility trick is the anchors' only
                g[c] = self.weighted_gradient(c, eps[c], z, top_k=in_window and onehot)
                if in_window and c in self.pool:
                    self.pooled_gradient(c, eps, z, g[c])
                phases.append(self._drawer_phase(c) if in_window else "weighted_sum")
        ctx.stats.phase = phases
        return ctx.move(mean, g)

    def _drawer_phase(self, chain: int) -> str:
        """trace.csv's phase of a chain that drew its own candidates in the soup window: ``soup_pool`` when it also
        pooled other sharers' (``soup_share_radius``), ``soup_anchor`` for a sharer that did not, ``weighted_sum``
        for a chain that left the soup (adaptive switch)."""
        if chain in self.pool:
            return "soup_pool"
        return "soup_anchor" if chain in self.anchor_chains else "weighted_sum"

    def pooled_gradient(self, chain: int, eps: dict, z: dict, g: torch.Tensor) -> torch.Tensor:
        """A sharer's gradient with ``soup_share_radius``: its own weighted-sum gradient ``g`` plus, for each
        reward m it weighs, w_m·Σ_k z_{j,m,k}·ε_{j,k} of every other sharer j within the radius that scored its
        candidates under m: each sharer's search gradient as it estimated it (rewards normalized among its own
        candidates). For centred rewards (``zscore``, ``rank``) that is what ``mean_correction=exact`` would give:
        the shift (μ_j − μ_w)/σ cancels in the sum."""
        for j in self.pool[chain]:
            if j == chain:  # its own candidates are in g already
                continue
            for m, w in enumerate(self.weights[chain].tolist()):
                if w > 0 and (j, m) in z:
                    g += w * torch.tensordot(z[(j, m)].to(eps[j]), eps[j], dims=1)
        return g

    def pool_rewards(self, z: dict, sharer: int, m: int, chain: int) -> torch.Tensor:
        """The normalized rewards [K] a soup chain weighs the sharer's candidates with for its reward ``m``: z_m,
        or with ``soup_cross_score`` the chain's weighted sum Σ_r w_r z_r of every reward the sharer scored them
        under."""
        if not self.soup_cross_score:
            return z[(sharer, m)]
        return sum(w * z[(sharer, r)] for r, w in enumerate(self.weights[chain].tolist()) if w > 0)

    def nearest_sharer(self, m: int, chain: int, mean: torch.Tensor) -> int:
        """The chain whose scored candidates of reward ``m`` a soup chain reuses: the one-hot anchor, or with
        ``extra_anchors`` the sharer of reward m whose step distribution is nearest (largest overlap)."""
        sharers = self.sharers[m]
        if len(sharers) == 1:
            return sharers[0]
        distances = [float((mean[a] - mean[chain]).double().pow(2).sum()) for a in sharers]
        return sharers[distances.index(min(distances))]
