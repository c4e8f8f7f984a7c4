"""Comparing runs by the hypervolume of their per-weight mean rewards, with paired bootstrap intervals.

A run's front is the mean reward of each weight over its prompt x seed groups. Two runs made on the same prompts
and seeds are compared by resampling those groups with replacement, the same draw for every run (a paired
bootstrap; Efron & Tibshirani 1993, ch. 6), recomputing each run's front and hypervolume against one fixed
reference point, and taking percentile intervals of the ratio of the two hypervolumes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from srsoup.outputs import group_key

from .pareto import hypervolume

#: Per prompt x seed group (``outputs.group_key``), the raw rewards of every weight: [L weights, M rewards].
Groups = Mapping[str, np.ndarray]


def group_points(rows: pd.DataFrame, rewards: list[str]) -> dict[str, np.ndarray]:
    """The rewards.csv rows of one run as ``Groups`` over the ``r_<reward>`` columns, weights in order."""
    columns = [f"r_{r}" for r in rewards]
    return {
        group_key(int(p), int(s)): g.sort_values("weight_idx")[columns].to_numpy(dtype=float)
        for (p, s), g in rows.groupby(["prompt_idx", "seed"])
    }


def shared_keys(runs: Iterable[Groups]) -> list[str]:
    """The groups every run has (sorted): the ones a paired comparison may resample."""
    sets = [set(groups) for groups in runs]
    return sorted(set.intersection(*sets)) if sets else []


def mean_points(groups: Groups, keys: list[str] | None = None) -> np.ndarray:
    """[L, M]: the per-weight mean rewards over the groups ``keys`` (default: all of them), the run's front."""
    return np.array([groups[k] for k in (sorted(groups) if keys is None else keys)], dtype=float).mean(axis=0)


def front_hypervolume(groups: Groups, ref, keys: list[str] | None = None) -> float:
    """Hypervolume (against ``ref``) of the per-weight means over the groups ``keys`` (default: all of them)."""
    return hypervolume(mean_points(groups, keys), ref)


def resample_counts(n_groups: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """[n_boot, n_groups]: how often each group is drawn in each resample (with replacement, n_groups draws)."""
    if n_groups == 0:
        return np.zeros((n_boot, 0))
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_groups, [1 / n_groups] * n_groups, size=n_boot)


def bootstrap_hypervolumes(groups: Groups, keys: list[str], counts: np.ndarray, ref) -> np.ndarray:
    """The hypervolume of the run's front in each resample of ``counts`` (rows of ``resample_counts``)."""
    points = np.array([groups[k] for k in keys], dtype=float)  # [G, L, M]
    means = np.einsum("bg,glm->blm", counts, points) / len(keys)
    return np.array([hypervolume(m, ref) for m in means])


def ratio_interval(num: np.ndarray, den: np.ndarray, level: float = 0.95) -> list[float] | None:
    """Percentile interval of num / den over paired resamples; None when no resample gives a ratio.

    A resample can leave the denominator zero hypervolume (all its points beyond the reference): that ratio is
    inf (kept, so the interval reads as unbounded) or nan for 0/0 (dropped).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.asarray(num) / np.asarray(den)
    ratios = ratios[~np.isnan(ratios)]
    if not len(ratios):
        return None
    tail = round(50 * (1 - level), 9)  # 2.5 for 95%, without float noise
    return [float(x) for x in np.percentile(ratios, [tail, 100 - tail], method="nearest")]


class PairedBootstrap:
    """Resampled hypervolumes of several runs, one draw of their shared prompt x seed groups for all."""

    def __init__(self, runs: Mapping[str, Groups], ref, n_boot: int = 1000, seed: int = 0):
        self.keys = shared_keys(runs.values())
        self.n_boot, self.seed = n_boot, seed
        counts = resample_counts(len(self.keys), n_boot, seed)
        self.hypervolumes = (
            {name: bootstrap_hypervolumes(groups, self.keys, counts, ref) for name, groups in runs.items()}
            if self.keys
            else {}
        )

    def ratio_ci(self, num: str, den: str, level: float = 0.95) -> list[float] | None:
        """Interval of run ``num``'s hypervolume over run ``den``'s; None when either run was not resampled."""
        if num not in self.hypervolumes or den not in self.hypervolumes:
            return None
        return ratio_interval(self.hypervolumes[num], self.hypervolumes[den], level)


class Yardstick:
    """A fixed scale for one setting: rewards normalised by the range of the unguided and single-reward runs.

    ``low`` (the reference point) is, per reward, the lowest mean reward of those runs, and ``high`` the highest;
    a front is scored by the hypervolume of (r − low) / (high − low) against the origin. The reference comes
    from the yardstick runs alone, never from the runs compared, so adding a run changes no other run's score,
    and normalising makes rewards on different scales count alike (1 = the span from the worst to the best of
    the unguided and single-reward runs).
    """

    def __init__(self, points: np.ndarray):
        points = np.asarray(points, dtype=float)
        self.low, self.high = points.min(axis=0), points.max(axis=0)
        if np.any(self.high <= self.low):
            raise ValueError("the yardstick runs span no range in some reward")

    def normalize(self, points) -> np.ndarray:
        return (np.asarray(points, dtype=float) - self.low) / (self.high - self.low)

    def hypervolume(self, points) -> float:
        return hypervolume(self.normalize(points), np.zeros(len(self.low)))
