"""Per-weight means with 95% t-intervals, the non-dominated set and hypervolume (maximisation)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

# Two-sided 95% Student-t critical values t_{0.975, df} for df = 1..30 (standard tables);
# beyond 30 the Cornish-Fisher expansion below is accurate to 1e-4, so no scipy is needed.
# fmt: off
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)
# fmt: on
_Z975 = 1.959963984540054


def t_critical(df: int) -> float:
    """t_{0.975, df}: half-width multiplier of a two-sided 95% confidence interval."""
    if df < 1:
        return float("nan")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975  # Abramowitz & Stegun 26.7.5
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def mean_ci(values) -> tuple[float, float]:
    """Mean and half-width of its 95% t-interval (NaN half-width for fewer than two values)."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return float("nan"), float("nan")
    if len(x) < 2:
        return float(x.mean()), float("nan")
    return float(x.mean()), t_critical(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))


def per_weight_stats(rows: pd.DataFrame, objectives: list[str]) -> pd.DataFrame:
    """One row per weight: its w_ values, n, and mean_/ci_ of every r_ column over prompts×seeds.

    `nondominated` marks weights whose means over the objective rewards no other weight beats.
    """
    w_cols = [c for c in rows.columns if c.startswith("w_")]
    r_cols = [c for c in rows.columns if c.startswith("r_")]
    out = []
    for weight_idx, group in rows.groupby("weight_idx", sort=True):
        rec = {"weight_idx": int(weight_idx), **{c: group[c].iloc[0] for c in w_cols}}
        rec["n"] = len(group)
        for c in r_cols:
            rec[f"mean_{c[2:]}"], rec[f"ci_{c[2:]}"] = mean_ci(group[c])
        out.append(rec)
    stats = pd.DataFrame(out)
    stats["nondominated"] = nondominated(stats[[f"mean_{r}" for r in objectives]].to_numpy())
    return stats


def nondominated(points: np.ndarray) -> np.ndarray:
    """Boolean mask of points not dominated by another (higher is better in every column)."""
    import moocore

    points = np.asarray(points, dtype=float)
    if len(points) == 0:
        return np.zeros(0, dtype=bool)
    # Ties are kept: two weights with equal means are both on the front.
    return np.asarray(moocore.is_nondominated(points, maximise=True, keep_weakly=True))


def default_ref(points: np.ndarray, margin: float = 0.05) -> np.ndarray:
    """Per-objective minimum over all points minus `margin` times that objective's range.

    A zero range (one point) would put the reference on the point and give zero volume, so the
    margin then applies to max(|min|, 1) instead.
    """
    points = np.asarray(points, dtype=float)
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.where(high > low, high - low, np.maximum(np.abs(low), 1.0))
    return low - margin * span


def hypervolume(points: np.ndarray, ref: np.ndarray) -> float:
    """Volume dominated by `points` above `ref` (maximisation); points not above ref add nothing."""
    import moocore

    points = np.asarray(points, dtype=float)
    points = points[~np.isnan(points).any(axis=1)]
    if len(points) == 0:
        return float("nan")
    # moocore minimises: negate both points and reference.
    return float(moocore.hypervolume(-points, ref=-np.asarray(ref, dtype=float)))


def ref_text(ref) -> str:
    """A reference point as written in the outputs: values joined by ';'."""
    return ";".join(f"{v:.6g}" for v in ref)
