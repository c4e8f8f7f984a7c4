"""The benchmark's figures from its run dirs: counts vs plan, the yardstick, hypervolume ratios, equal budgets,
query efficiency, memory, overhead.

Hypervolume is that of a run's per-weight mean rewards normalised by the setting's yardstick
(``srsoup.report.compare.Yardstick``: per reward, the lowest and highest mean of the unguided and single-reward
runs; the reference point is the lowest), so adding a run changes no other run's hypervolume or ratio. Ratios
come with 95% paired-bootstrap intervals (``PairedBootstrap`` on normalised points) over the prompt x seed groups
both runs have; each curve's crossing of the target is interpolated linearly between its measured runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from srsoup.bench.execute import read_summary
from srsoup.bench.plan import CI_LOW_TARGET, HV_TARGET, MEMORY_TARGET, OVERHEAD_TARGET, REWARDS, RunDef
from srsoup.report.compare import Groups, PairedBootstrap, Yardstick, group_points, mean_points, shared_keys

ADHERENCE = "prompt_adherence"


# --- one run ----------------------------------------------------------------------------------------------------
def run_figures(rd: RunDef, run_dir: Path, side: dict, plan: dict | None) -> dict:
    """Counts, time, memory and per-weight mean rewards of one finished run (``_groups``: per prompt x seed group,
    per weight, the raw rewards, for the bootstrap; not written out)."""
    import pandas as pd

    rec = run_meta(rd)
    if rd.error or side.get("error"):
        return {**rec, "status": "error", "error": rd.error or side["error"]}
    summary = read_summary(run_dir)
    return {
        **rec,
        **counts(summary, plan),
        "peak_rss_mb": side.get("peak_rss_mb"),
        "rss_after_imports_mb": side.get("rss_after_imports_mb"),
        "threads": side.get("threads"),
        "measured_fresh": side.get("fresh"),
        "cached": bool(side.get("cached")),
        "weights": summary["weights"],
        **row_figures(pd.read_csv(run_dir / "rewards.csv")),
    }


def row_figures(rows) -> dict:
    """What the analysis takes of a run's rewards.csv rows: its front, groups, eval means, mixed adherence."""
    groups = group_points(rows, list(REWARDS))
    eval_cols = [c for c in rows.columns if c.startswith("r_") and c[2:] not in REWARDS]
    return {
        "points": mean_points(groups).tolist(),
        "_groups": groups,
        "eval_means": {c[2:]: float(rows[c].mean()) for c in eval_cols},
        "adherence_mixed": mixed_adherence(rows),
    }


def derived_figures(rd: RunDef, pool: RunDef, pool_dir: Path, plan: dict | None) -> dict:
    """best_of_n at N taken from the first N samples of its larger run ``pool`` (samples.csv): per group and
    weight the sample ``BestOfN.finish`` would pick from them (``choose``, the same float64 scores), that sample's
    scores as the row; counts N/N_pool of the pool's (each sample is scored once by every reward); no seconds or
    memory of its own."""
    import pandas as pd
    import torch

    from srsoup.guidance.best_of_n import choose

    rec = {**run_meta(rd), "derived_from": pool.name}
    summary = read_summary(pool_dir)
    if summary.get("status") != "complete":
        return {**rec, "status": "error", "error": f"{pool.name} is not complete"}
    if not (pool_dir / "samples.csv").exists():
        why = f"{pool.name}'s run dir has no samples.csv (an older srsoup made it); run it in a new --out"
        return {**rec, "status": "error", "error": why}
    n, n_pool = rd.params["size"], pool.params["size"]
    weights = torch.tensor(summary["weights"])  # [L, M], the grid in weight_idx order, as the pool ran it
    samples = pd.read_csv(pool_dir / "samples.csv")
    rows = []
    for (p, sd), group in samples[samples["sample"] < n].groupby(["prompt_idx", "seed"]):
        group = group.sort_values("sample")
        scores = [torch.tensor(group[f"r_{r}"].to_numpy(), dtype=torch.float64) for r in REWARDS]
        for w_idx, c in enumerate(choose(weights, scores).tolist()):
            picked = group.iloc[c].drop(["prompt_idx", "seed", "sample"])
            w = {f"w_{r}": float(x) for r, x in zip(REWARDS, summary["weights"][w_idx])}
            rows.append({"prompt_idx": p, "seed": sd, "weight_idx": w_idx, **w, **picked})
    derived = {
        **summary,
        "reward_queries": summary["reward_queries"] * n // n_pool,
        "reward_queries_by_reward": {k: v * n // n_pool for k, v in summary["reward_queries_by_reward"].items()},
        "denoiser_evals": summary["denoiser_evals"] * n // n_pool,
        "wall_seconds": None,
        "timing": None,
    }
    return {
        **rec,
        **counts(derived, plan),
        "peak_rss_mb": None,
        "rss_after_imports_mb": None,
        "threads": None,
        "measured_fresh": None,
        "cached": False,
        "weights": summary["weights"],
        **row_figures(pd.DataFrame(rows)),
    }


def run_meta(rd: RunDef) -> dict:
    """What the plan says of a run: its name, method family, curve, variant, size, budget and overrides."""
    return {
        "name": rd.name,
        "family": rd.family,
        "curve": rd.curve,
        "variant": rd.variant,
        "size": rd.params.get("size"),
        "size_label": rd.params.get("size_label"),
        "params": rd.params,
        "budget": rd.budget,
        "overrides": rd.overrides,
    }


def mixed_adherence(rows) -> float | None:
    """Mean prompt adherence over the rows whose weights are all strictly between 0 and 1 (the mixed weights,
    where guidance pulls two ways); None without such rows or without the column."""
    w = rows[[f"w_{r}" for r in REWARDS]]
    mixed = rows[((w > 0) & (w < 1)).all(axis=1)]
    if f"r_{ADHERENCE}" not in rows or mixed.empty:
        return None
    return float(mixed[f"r_{ADHERENCE}"].mean())


def counts(summary: dict, plan: dict) -> dict:
    """A run's counts and seconds from its summary.json, and whether they match its plan (exact plans exactly,
    adaptive ones as upper bounds)."""
    groups = summary["groups_complete"]
    queries, evals = summary["reward_queries"], summary["denoiser_evals"]
    plan_q, plan_e = plan["reward_queries"] * groups, plan["denoiser_evals"] * groups
    match = (queries == plan_q and evals == plan_e) if plan["exact"] else (queries <= plan_q and evals <= plan_e)
    return {
        "status": summary["status"],
        "method": summary["method"],
        "steps": summary["steps"],
        "soup_end_step": summary.get("soup_end_step"),
        "groups": groups,
        "images": summary["images"],
        "reward_queries": queries,
        "reward_queries_by_reward": summary["reward_queries_by_reward"],
        "reward_queries_per_group": queries / groups,
        "denoiser_evals": evals,
        "denoiser_evals_per_group": evals / groups,
        "plan_reward_queries": plan_q,
        "plan_denoiser_evals": plan_e,
        "plan_exact": plan["exact"],
        "counts_match_plan": match,
        "wall_seconds": summary["wall_seconds"],
        "timing": summary.get("timing"),
    }


# --- all runs together ------------------------------------------------------------------------------------------
def yardstick(ok: list[dict]) -> tuple[Yardstick | None, dict]:
    """The setting's yardstick from the ``none`` and ``single`` runs alone; what it is, or why there is none."""
    names = [r["name"] for r in ok if r["family"] in ("none", "single")]
    have = {r["family"] for r in ok if r["family"] in ("none", "single")}
    if have != {"none", "single"}:
        return None, {"error": "no unguided and single-reward runs complete", "runs": names}
    try:
        stick = Yardstick(np.array([p for r in ok if r["name"] in names for p in r["points"]]))
    except ValueError as err:
        return None, {"error": str(err), "runs": names}
    return stick, {
        "runs": names,
        "low": {n: float(v) for n, v in zip(REWARDS, stick.low)},
        "high": {n: float(v) for n, v in zip(REWARDS, stick.high)},
    }


class PairedRatios:
    """Paired-bootstrap intervals of hypervolume ratios, each over the groups both runs have.

    One ``PairedBootstrap`` per set of shared groups, over every run that has them (restricted to them): when every
    run has every group, as in a complete benchmark, that is one resampling for all runs, and a run added or
    missing changes no other pair's interval.
    """

    def __init__(self, runs: dict[str, Groups], n_boot: int = 1000, seed: int = 0):
        self.runs, self.n_boot, self.seed = runs, n_boot, seed
        self._boots: dict[tuple[str, ...], PairedBootstrap] = {}

    def keys(self, num: str, den: str) -> tuple[str, ...]:
        if num not in self.runs or den not in self.runs:
            return ()
        return tuple(shared_keys([self.runs[num], self.runs[den]]))

    def ci(self, num: str, den: str) -> list[float] | None:
        keys = self.keys(num, den)
        if not keys:
            return None
        if keys not in self._boots:
            members = {n: {k: g[k] for k in keys} for n, g in self.runs.items() if set(keys) <= set(g)}
            self._boots[keys] = PairedBootstrap(members, np.zeros(len(REWARDS)), self.n_boot, self.seed)
        return self._boots[keys].ratio_ci(num, den)


def analyse(records: list[dict], meta: dict, n_boot: int = 1000) -> dict:
    """The yardstick, each run's normalised hypervolume and its ratios to weighted_sum at K (with paired bootstrap
    intervals), the equal-budget comparisons, and how many queries each curve needs to reach the target."""
    ok = [r for r in records if r.get("status") == "complete"]
    stick, about = yardstick(ok)
    out = {"yardstick": about, "equal_budget": [], "query_efficiency": []}
    if stick is None:
        return out
    for r in ok:
        r["hypervolume"] = stick.hypervolume(r["points"])
    ratios = PairedRatios(
        {r["name"]: {k: stick.normalize(v) for k, v in r["_groups"].items()} for r in ok}, n_boot
    )
    ws = next((r for r in ok if r["name"] == "weighted_sum"), None)
    if ws:
        ratios_to_weighted_sum(ok, ws, ratios)
    return {
        **out,
        "bootstrap": {
            "resamples": n_boot,
            "seed": ratios.seed,
            "groups": len(ratios.keys(ws["name"], ws["name"])) if ws else 0,
            "what": "paired resampling of the prompt x seed groups both runs have; 95% percentile intervals of "
            "ratios of normalised hypervolumes",
        },
        "equal_budget": equal_budget(ok, meta, ratios),
        "query_efficiency": query_efficiency(ok, meta, ws),
    }


def ratios_to_weighted_sum(ok: list[dict], ws: dict, ratios: PairedRatios) -> None:
    """Each run's hypervolume, queries, evals and wall time over weighted_sum's at K; its adherence beside."""
    for r in ok:
        r["hv_ratio_ws"] = r["hypervolume"] / ws["hypervolume"] if ws["hypervolume"] else float("nan")
        r["hv_ratio_ws_ci95"] = ratios.ci(r["name"], ws["name"])
        r["query_ratio_ws"] = r["reward_queries"] / ws["reward_queries"]
        r["eval_ratio_ws"] = r["denoiser_evals"] / ws["denoiser_evals"]
        r["wall_ratio_ws"] = None if r["wall_seconds"] is None else r["wall_seconds"] / ws["wall_seconds"]
        r["adherence_mixed_ws"] = ws.get("adherence_mixed")


def all_budgets(meta: dict) -> list[int]:
    return sorted({*meta["budgets"], *meta.get("low_budgets", [])})


#: What the equal-budget table keeps of each run.
CELL_KEYS = (
    "name",
    "size",
    "size_label",
    "reward_queries_per_group",
    "denoiser_evals_per_group",
    "wall_seconds",
    "hypervolume",
)


def equal_budget(ok: list[dict], meta: dict, ratios: PairedRatios) -> list[dict]:
    """Per curve and budget B: its run's size, counts, seconds and hypervolume, and the hypervolume over
    weighted_sum's at the same B (where weighted_sum ran at B)."""
    by_name = {r["name"]: r for r in ok}
    rows = []
    for curve in meta["curves"]:
        cells = {}
        for b in all_budgets(meta):
            r, w = at_budget(by_name, curve, b), at_budget(by_name, "weighted_sum", b)
            if r is None:
                continue
            cell = {k: r.get(k) for k in CELL_KEYS}
            if w and w["hypervolume"]:
                cell["over_ws"] = r["hypervolume"] / w["hypervolume"]
                cell["over_ws_ci95"] = ratios.ci(r["name"], w["name"])
            cells[str(b)] = cell
        rows.append({"curve": curve, "cells": cells})
    return rows


def at_budget(by_name: dict[str, dict], curve: str, budget: int) -> dict | None:
    """The curve's run at budget B: its ``_B{B}`` run, else its run at K when that spends exactly B per group
    (weighted_sum at K is its largest budget's run; the bench runs it alone when ``--only`` leaves that out)."""
    r = by_name.get(f"{curve}_B{budget}")
    at_k = by_name.get(curve)
    if r is None and at_k is not None and at_k.get("reward_queries_per_group") == budget:
        return at_k
    return r


CHEAPEST_KEYS = ("name", "size", "query_ratio_ws", "hv_ratio_ws", "hv_ratio_ws_ci95")


def query_efficiency(ok: list[dict], meta: dict, ws: dict | None) -> list[dict]:
    """Per curve (its run at K, if any, and its budget runs): the cheapest run at >= HV_TARGET x weighted_sum's
    hypervolume at K whose interval's lower end is >= CI_LOW_TARGET, and where the curve crosses HV_TARGET."""
    if ws is None:
        return []
    out = []
    for curve in meta["curves"]:
        pts = sorted(
            (r for r in ok if r.get("curve") == curve and not r.get("same_as") and "query_ratio_ws" in r),
            key=lambda r: r["query_ratio_ws"],
        )
        hits = [r for r in pts if reaches(r)]
        best = min(hits, key=lambda r: r["query_ratio_ws"], default=None)
        cross = crossing(pts, HV_TARGET)
        out.append(
            {
                "curve": curve,
                "runs": len(pts),
                "cheapest": best and {k: best.get(k) for k in CHEAPEST_KEYS},
                "interpolated_query_ratio": cross,
                "interpolated_queries_per_group": None
                if cross is None
                else cross * ws["reward_queries_per_group"],
            }
        )
    return out


def reaches(r: dict) -> bool:
    """At >= HV_TARGET x weighted_sum's hypervolume at K, the interval's lower end at >= CI_LOW_TARGET."""
    ci = r.get("hv_ratio_ws_ci95")
    return bool(r["hv_ratio_ws"] >= HV_TARGET and ci and ci[0] >= CI_LOW_TARGET)


def crossing(pts: list[dict], target: float) -> float | None:
    """The query ratio at which the hypervolume ratio of ``pts`` (ordered by queries) first reaches ``target``,
    linearly interpolated between the measured runs either side."""
    for lo, hi in zip([None, *pts[:-1]], pts):
        if not hi["hv_ratio_ws"] >= target:
            continue
        if lo is None or lo["hv_ratio_ws"] >= target:
            return hi["query_ratio_ws"]
        f = (target - lo["hv_ratio_ws"]) / (hi["hv_ratio_ws"] - lo["hv_ratio_ws"])
        return lo["query_ratio_ws"] + f * (hi["query_ratio_ws"] - lo["query_ratio_ws"])
    return None


# --- memory and overhead ----------------------------------------------------------------------------------------
def memory_figures(records: list[dict]) -> dict:
    """Peak RSS of the memory runs, and its ratio between the largest and the smallest K."""
    ok = sorted([r for r in records if r.get("peak_rss_mb")], key=lambda r: r["size"])
    keys = ("name", "peak_rss_mb", "rss_after_imports_mb", "wall_seconds", "denoiser_evals", "reward_queries")
    runs = [{"K": r["size"], **{k: r.get(k) for k in keys}} for r in ok]
    if len(ok) < 2:
        return {"runs": runs}
    small, big = ok[0], ok[-1]
    return {
        "runs": runs,
        "ratio": big["peak_rss_mb"] / small["peak_rss_mb"],
        "ratio_above_imports": (big["peak_rss_mb"] - big["rss_after_imports_mb"])
        / max(1e-9, small["peak_rss_mb"] - small["rss_after_imports_mb"]),
        "target": MEMORY_TARGET,
    }


def overhead_figures(run: str, run_dir: Path, side: dict, plan: dict) -> dict:
    """Wall time over model-call time of a run, from its own timers (summary.json ``timing`` and each group's
    ``wall_seconds`` and ``model_seconds``): the whole ``run()``, model loading included, and the group loop."""
    summary = read_summary(run_dir)
    timing, groups = summary["timing"], list(summary["groups"].values())
    loop = sum(g["wall_seconds"] for g in groups)
    loop_model = sum(sum(g.get("model_seconds", {}).values()) for g in groups)
    n = summary["groups_complete"]
    return {
        "run": run,
        "run_dir": run_dir.name,
        "threads": side.get("threads"),
        "groups": n,
        "counts": {
            "denoiser_evals": summary["denoiser_evals"],
            "decodes": summary["plan"]["per_group"]["decodes"] * n,
            "encodes": n,
            "reward_queries": summary["reward_queries"],
            "eval_scores": summary["images"] * (len(summary["rewards"]) + len(summary["eval_rewards"])),
        },
        "plan_denoiser_evals": plan["denoiser_evals"] * n,
        "in_run_seconds": {
            k: timing.get(f"{k}_seconds", 0.0) for k in ("denoiser", "decode", "encode", "reward", "eval_reward")
        },
        "model_seconds": timing["model_seconds"],
        "load_seconds": timing["load_seconds"],
        "wall_seconds": summary["wall_seconds"],
        "group_loop_seconds": round(loop, 3),
        "group_model_seconds": round(loop_model, 3),
        "ratio_wall": _ratio(summary["wall_seconds"], timing["model_seconds"]),
        "ratio_group_loop": _ratio(loop, loop_model),
        "target": OVERHEAD_TARGET,
    }


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")
