"""Feynman–Kac steering (beyond the paper): sequential Monte Carlo over particles, resampled by reward potentials.

Singhal et al. 2025, "A General Framework for Inference-time Scaling and Steering of Diffusion Models" (FK
steering). Per preference weight w, P = ``num_particles`` chains: particle 0 starts from the seed's x_T, particle
p from x_T keyed by (seed, p), as best-of-N's samples. Every step every particle samples plainly, x' = μ + σ·ε_p,
with ε_p the step's p-th noise (keyed by (seed, step, p), shared by the weights), so a weight's particle 0 is the
unguided chain until a resampling moves it, and P = 1 is unguided sampling.

At a resampling step s (every ``resample_frequency`` steps in [``resampling_t_start``, ``resampling_t_end``),
step indices as the paper's code names them) every particle's new latent x' is scored: one denoiser eval at t'
for x̂0(x'), decoded, scored by every reward with w_m > 0 — ``ctx.score``, the path and the counts of a search
candidate. The score is of the particle *as it is resampled* (the potential of x_{t'} itself, G_s(x_{t'})), which
needs nothing from a backbone but the candidate interface every backbone has. The paper's code instead scores the
step's own x̂0 of x_t, free of an eval but one step behind the particle it weighs, and it needs the backbone to
return that x̂0; we pay L·P evals per resampling step for the current, backbone-independent form.

The weight's value of a particle is r̃ = Σ_m w_m r̃_m, with ``scale``:

- ``zscore`` (default): each reward z-scored over the weight's P particles at that step, as weighted sum
  normalizes its K candidates. Rewards of different units (colourfulness ~10², JPEG kB ~1) become comparable, a
  weight means the same trade-off as in the other methods, and λ is in units of the population's spread, so one λ
  serves every reward set. The price: r̃ is relative to the current population, so the potentials below keep
  their form but not the exact FK target.
- ``fixed``: r̃_m = r_m / ``reward_scales[m]``, a fixed function of the particle: the exact FK potentials, if
  the user knows the rewards' scales.
- ``none``: raw rewards (one reward, or rewards of one unit).

Potentials, over the history of the particle's lineage: ``sum`` (default) G_s = exp(λ·Σ_{j≤s} r̃_j), ``max``
G_s = exp(λ·max_{j≤s} r̃_j), ``difference`` G_s = exp(λ·(r̃_s − r̃_{s−1})), with λ = ``lmbda`` (an inverse
temperature: a larger λ resamples harder). ``sum`` is the default because ``max`` and z-scores mix badly: after a
resampling the siblings inherit their ancestor's maximum, which population-relative values rarely beat, so later
resamplings are nearly uniform; on the embedded model ``sum`` was also the best or tied of the three (small
samples). Log-weights add up between resamplings (standard SMC); each weight's particles are resampled
(``multinomial``, or ``systematic`` with one uniform) from a generator keyed by (seed, step) — at every resampling
step, or with ``ess_threshold`` only when ESS/P falls below it, ESS = 1/Σ w̄² — and a resampling resets the
weights.

The last step is never a resampling step: its x' are the final samples, and scoring them is the final selection.
Every final image is scored once under the weight's rewards and each weight keeps its particle of highest value
(scaled as above; ties keep the lowest index). Counts per group, S resampling steps, Σ nz(w) the nonzero weights
of the grid: reward queries P·(S+1)·Σ nz(w), denoiser evals L·P·(T+S), decodes L·P·(S+1).
"""

from __future__ import annotations

import math

import torch

from srsoup.guidance.base import Chains, Guidance, Plan
from srsoup.guidance.steps import (
    StepContext,
    check_choice,
    check_count,
    normalize_rewards,
    seeded_latents,
    step_generator,
)

POTENTIALS = ("sum", "max", "difference")
RESAMPLERS = ("multinomial", "systematic")
SCALES = ("zscore", "none", "fixed")
FK_STREAM = 0xF4C  # the stream of step_generator for resampling


def resample_indices(probs: torch.Tensor, method: str, generator: torch.Generator) -> torch.Tensor:
    """P ancestor indices drawn from normalized weights [P]: multinomial, or systematic (one uniform u, points
    (u + i)/P on the weights' cumulative sum; lower variance, Kitagawa 1996)."""
    n = len(probs)
    if method == "multinomial":
        return torch.multinomial(probs, n, replacement=True, generator=generator)
    points = (torch.rand(1, generator=generator, dtype=torch.float64) + torch.arange(n, dtype=torch.float64)) / n
    cdf = probs.double().cumsum(0)
    cdf[-1] = 1.0
    return torch.searchsorted(cdf, points, right=True).clamp(max=n - 1)


def effective_sample_size(log_weights: torch.Tensor) -> float:
    """ESS = 1/Σ w̄² of normalized weights (P when they are equal, 1 when one particle holds them all)."""
    w = torch.softmax(log_weights.double(), 0)
    return float(1 / (w**2).sum())


def _positive(key: str, value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (0 < value < math.inf):
        raise ValueError(f"guidance.{key}={value!r} must be a finite number > 0 ({what})")
    return float(value)


class FK(Guidance):
    name = "fk"
    budget_key = "num_particles"
    budget_min = 2
    budget_label = "particles"
    needs_noise = True  # without noise the particles of a weight never part

    def __init__(
        self,
        *,
        num_particles: int = 4,
        potential: str = "sum",
        lmbda: float = 1.0,
        resampler: str = "multinomial",
        resample_frequency: int = 5,
        resampling_t_start: int = 0,
        resampling_t_end: int | None = None,
        ess_threshold: float | None = None,
        scale: str = "zscore",
        reward_scales: dict[str, float] | None = None,
    ):
        self.num_particles = check_count("guidance.num_particles", num_particles, 1, "particles per weight")
        self.potential = check_choice("guidance.potential", potential, POTENTIALS)
        self.lmbda = _positive("lmbda", lmbda, "λ of the potentials exp(λ·r)")
        self.resampler = check_choice("guidance.resampler", resampler, RESAMPLERS)
        self.resample_frequency = check_count("guidance.resample_frequency", resample_frequency, 1, "steps")
        self.resampling_t_start = check_count("guidance.resampling_t_start", resampling_t_start, 0, "a step")
        if resampling_t_end is not None:
            check_count("guidance.resampling_t_end", resampling_t_end, resampling_t_start + 1, "end > start")
        self.resampling_t_end = resampling_t_end
        if ess_threshold is not None:
            _positive("ess_threshold", ess_threshold, "a fraction of the particles")
            if ess_threshold > 1:
                raise ValueError(f"guidance.ess_threshold={ess_threshold} must be in (0, 1] (ESS / particles)")
            ess_threshold = float(ess_threshold)
        self.ess_threshold = ess_threshold
        self.scale = check_choice("guidance.scale", scale, SCALES)
        if (reward_scales is not None) != (scale == "fixed"):
            raise ValueError("guidance.reward_scales={reward: unit, ...} goes with guidance.scale=fixed, and only")
        self.reward_scales = dict(reward_scales or {})
        self.weights = torch.empty(0)
        self.reward_names: list[str] = []
        self._stat = self._log_weights = torch.empty(0)

    def setup(self, grid: torch.Tensor, reward_names: list[str]) -> None:
        super().setup(grid, reward_names)
        if self.scale == "fixed":
            missing = [n for n in reward_names if n not in self.reward_scales]
            if missing:
                raise ValueError(f"guidance.reward_scales has no scale for {', '.join(missing)} (scale=fixed)")
            for n in reward_names:
                _positive(f"reward_scales.{n}", self.reward_scales[n], "the reward's unit")

    def summary_fields(self) -> dict:
        return {
            "num_particles": self.num_particles,
            "potential": self.potential,
            "lmbda": self.lmbda,
            "resampler": self.resampler,
            "resample_frequency": self.resample_frequency,
            "resampling_t_start": self.resampling_t_start,
            "resampling_t_end": self.resampling_t_end,
            "ess_threshold": self.ess_threshold,
            "scale": self.scale,
            **({"reward_scales": self.reward_scales} if self.scale == "fixed" else {}),
        }

    # --- schedule -----------------------------------------------------------------------------------------
    def check_steps(self, num_steps: int) -> None:
        start, end = self.resampling_t_start, self.resampling_t_end
        if start >= num_steps:
            raise ValueError(f"guidance.resampling_t_start={start} is outside the run's steps [0, {num_steps})")
        if end is not None and end > num_steps:
            raise ValueError(f"guidance.resampling_t_end={end} is past the last step: need <= {num_steps} (T)")

    def resampling_steps(self, num_steps: int) -> list[int]:
        """Steps whose particles are scored and resampled: every n-th of the window, never the last step."""
        end = num_steps if self.resampling_t_end is None else self.resampling_t_end
        return [s for s in range(self.resampling_t_start, end, self.resample_frequency) if s < num_steps - 1]

    # --- chains -------------------------------------------------------------------------------------------
    @property
    def num_chains(self) -> int:
        return len(self.weights) * self.num_particles  # chain l·P + p is particle p of weight l

    def initial_latents(self, backbone, seed: int) -> torch.Tensor:
        x = seeded_latents(backbone, seed, self.num_particles)
        return x.repeat(len(self.weights), *[1] * (x.dim() - 1))

    def trace_anchors(self) -> dict[int, int]:
        return {}  # chains are particles, not weights

    def start_group(self) -> None:
        start = -math.inf if self.potential == "max" else 0.0  # no history yet: the first potential is exp(λ·r̃)
        self._stat = torch.full((self.num_chains,), start, dtype=torch.float64)
        self._log_weights = torch.zeros(self.num_chains, dtype=torch.float64)

    def candidate_plan(self, step: int, num_steps: int) -> list[tuple[int, torch.Tensor]]:
        return []  # particles are not candidates: see plan()

    def scored(self) -> torch.Tensor:
        """[L·P, M]: which rewards score each particle (those its weight does not zero)."""
        return self.weights.repeat_interleave(self.num_particles, 0) > 0

    def value(self, scores: torch.Tensor, weight: int) -> torch.Tensor:
        """r̃ = Σ_m w_m r̃_m of a weight's P particles from raw scores [P, M] (float64), scaled by ``scale``."""
        v = torch.zeros(len(scores), dtype=torch.float64)
        for m, w in enumerate(self.weights[weight].tolist()):
            if w > 0:
                r = scores[:, m].double()
                if self.scale == "zscore":
                    r = normalize_rewards(r, "zscore").double()
                elif self.scale == "fixed":
                    r = r / self.reward_scales[self.reward_names[m]]
                v += w * r
        return v

    def step(self, ctx: StepContext) -> torch.Tensor:
        mean, sigma = ctx.dist.mean, ctx.dist.sigma
        eps = ctx.noise(self.num_particles).to(mean)
        x = mean + sigma * eps.repeat(len(self.weights), *[1] * (eps.dim() - 1))
        if ctx.step in self.resampling_steps(ctx.num_steps):
            return self.reweigh(ctx, x)
        ctx.stats.phase = ["sample"] * len(x)
        return x

    def reweigh(self, ctx: StepContext, x: torch.Tensor) -> torch.Tensor:
        """Score every particle, update its potential and weight, and resample each weight's particles."""
        P, n = self.num_particles, len(x)
        mask = self.scored()
        scores = ctx.score(x, torch.arange(n), mask)
        for c, m in mask.nonzero().tolist():
            ctx.record(c, self.reward_names[m], scores[c, m : m + 1])
        gen = step_generator(ctx.seed, ctx.step, FK_STREAM)
        order, phase = torch.arange(n), []
        for w in range(len(self.weights)):
            rows = slice(w * P, (w + 1) * P)
            value, stat = self.value(scores[rows], w), self._stat[rows]
            if self.potential == "max":
                stat = torch.maximum(stat, value)
                log_g = self.lmbda * stat
            elif self.potential == "sum":
                stat = stat + value
                log_g = self.lmbda * stat
            else:  # difference
                log_g = self.lmbda * (value - stat)
                stat = value
            self._stat[rows] = stat
            self._log_weights[rows] += log_g
            ess = effective_sample_size(self._log_weights[rows])
            if self.ess_threshold is None or ess < self.ess_threshold * P:
                probs = torch.softmax(self._log_weights[rows], 0)
                order[rows] = w * P + resample_indices(probs, self.resampler, gen)
                self._log_weights[rows] = 0.0
                phase += ["resample"] * P
            else:
                phase += ["score"] * P
        self._stat = self._stat[order]
        ctx.stats.phase = phase
        return x[order]

    def finish(self, chains: Chains, rewards: dict, prompt: str) -> Chains:
        """Score the final particles under their weight's rewards; each weight keeps its best particle."""
        P, L = self.num_particles, len(self.weights)
        images, mask = chains.images, self.scored()
        scores = torch.full(mask.shape, float("nan"), dtype=torch.float64)  # rewards are float64
        for m, name in enumerate(self.reward_names):
            rows = mask[:, m].nonzero().flatten()
            if len(rows):
                scores[rows, m] = rewards[name](images[rows], [prompt] * len(rows))
        best = [w * P + int(self.value(scores[w * P : (w + 1) * P], w).argmax()) for w in range(L)]
        final_queries = mask.view(L, P, -1).sum((1, 2))
        return Chains(
            images=images[best],
            queries=chains.queries.view(L, P).sum(1) + final_queries,
            evals=chains.evals.view(L, P).sum(1),
        )

    # --- counts -------------------------------------------------------------------------------------------
    def plan(self, num_steps: int) -> Plan:
        """Per group: P·(S+1)·nz_m queries of reward m (S scorings and the final one), L·P·(T+S) evals."""
        T = self.checked_steps(num_steps)
        S, n = len(self.resampling_steps(T)), self.num_chains
        per_scoring = {name: int(self.scored()[:, m].sum()) for m, name in enumerate(self.reward_names)}
        once = sum(per_scoring.values())
        return Plan(
            reward_queries_by_reward={name: q * (S + 1) for name, q in per_scoring.items()},
            denoiser_evals=n * (T + S),
            chains=n,
            steps=T,
            num_candidates=self.num_particles,
            phases={
                "sample": dict(steps=T - S, reward_queries=0, denoiser_evals=n * (T - S)),
                "resample": dict(steps=S, reward_queries=S * once, denoiser_evals=2 * n * S),
                "final": dict(steps=0, reward_queries=once, denoiser_evals=0),
            },
            decodes=n * (S + 1),
        )
