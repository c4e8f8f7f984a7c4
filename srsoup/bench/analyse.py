"""The benchmark's figures from its run dirs: counts vs plan, HV ratios, budgets, targets, memory, overhead.

Hypervolume ratios to weighted_sum come with paired bootstrap intervals (``srsoup.report.compare``); equal-budget
comparisons pair the runs of each budget; each budget curve's crossing of the target is interpolated linearly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from srsoup.bench.execute import read_summary
from srsoup.bench.plan import HV_TARGET, MEMORY_TARGET, OVERHEAD_TARGET, QUERY_TARGET, REWARDS, RunDef
from srsoup.report.compare import PairedBootstrap, group_points, mean_points
from srsoup.report.pareto import default_ref, hypervolume


# --- one run ----------------------------------------------------------------------------------------------------
def run_figures(rd: RunDef, run_dir: Path, side: dict, plan: dict | None) -> dict:
    """Counts, time, memory and per-weight mean rewards of one finished run (``_groups``: per prompt x seed group,
    per weight, the raw rewards, for the bootstrap; not written out)."""
    import pandas as pd

    rec = {
        "name": rd.name,
        "family": rd.family,
        "params": rd.params,
        "budget": rd.budget,
        "overrides": rd.overrides,
    }
    if rd.error or side.get("error"):
        return {**rec, "status": "error", "error": rd.error or side["error"]}
    summary = read_summary(run_dir)
    rows = pd.read_csv(run_dir / "rewards.csv")
    groups = group_points(rows, list(REWARDS))
    eval_cols = [c for c in rows.columns if c.startswith("r_") and c[2:] not in REWARDS]
    return {
        **rec,
        **counts(summary, plan),
        "peak_rss_mb": side.get("peak_rss_mb"),
        "rss_after_imports_mb": side.get("rss_after_imports_mb"),
        "threads": side.get("threads"),
        "measured_fresh": side.get("fresh"),
        "cached": bool(side.get("cached")),
        "points": mean_points(groups).tolist(),
        "_groups": groups,
        "weights": summary["weights"],
        "eval_means": {c[2:]: float(rows[c].mean()) for c in eval_cols},
    }


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
        "K": summary["num_candidates"],
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
def analyse(records: list[dict], meta: dict, n_boot: int = 1000) -> dict:
    """Shared reference point, hypervolumes, ratios to weighted_sum (with paired bootstrap intervals over the
    prompt x seed groups), equal-budget comparisons, and where each budget curve reaches the target."""
    ok = [r for r in records if r.get("status") == "complete"]
    ref = default_ref(np.array([p for r in ok for p in r["points"]]), margin=0.05)
    for r in ok:
        r["hypervolume"] = hypervolume(np.array(r["points"]), ref)
    boot = PairedBootstrap({r["name"]: r["_groups"] for r in ok}, ref, n_boot)
    ws = next((r for r in ok if r["name"] == "weighted_sum"), None)
    if ws:
        ratios_to_weighted_sum(ok, ws, boot)
    equal_query_ratios(ok)
    by_name = {r["name"]: r for r in ok}
    curves = reach_curves(by_name, meta)
    mark_reach(ok, curves, meta)
    return {
        "reference_point": {n: float(v) for n, v in zip(REWARDS, ref)},
        "bootstrap": {
            "resamples": n_boot,
            "groups": len(boot.keys),
            "seed": boot.seed,
            "what": "paired resampling of prompt x seed groups; 95% percentile intervals of HV ratios",
        },
        "equal_budget": equal_budget(by_name, meta, boot),
        "reach_target": curves,
        "query_efficiency": query_efficiency(ok, curves, meta),
    }


def ratios_to_weighted_sum(ok: list[dict], ws: dict, boot: PairedBootstrap) -> None:
    """Each run's hypervolume, queries, evals and wall time over weighted_sum's at K."""
    for r in ok:
        r["hv_ratio_ws"] = r["hypervolume"] / ws["hypervolume"] if ws["hypervolume"] else float("nan")
        r["hv_ratio_ws_ci95"] = boot.ratio_ci(r["name"], ws["name"])
        r["query_ratio_ws"] = r["reward_queries"] / ws["reward_queries"]
        r["eval_ratio_ws"] = r["denoiser_evals"] / ws["denoiser_evals"]
        r["wall_ratio_ws"] = r["wall_seconds"] / ws["wall_seconds"]
        r["reaches_target"] = bool(r["hv_ratio_ws"] >= HV_TARGET)


def equal_query_ratios(ok: list[dict]) -> None:
    """Hypervolume over weighted_sum's at the same queries per group, its budget curve linearly interpolated:
    the "equal budget" reference for runs whose query count no weighted_sum run matches (inside its range only)."""
    curve = sorted(
        {(r["reward_queries_per_group"], r["hypervolume"]) for r in ok if r["family"] == "weighted_sum"}
    )
    if len(curve) < 2:
        return
    qs, hvs = zip(*curve)
    for r in ok:
        q = r["reward_queries_per_group"]
        if r["family"] not in ("none", "single") and qs[0] <= q <= qs[-1]:
            r["hv_ratio_ws_equal_queries"] = r["hypervolume"] / float(np.interp(q, qs, hvs))


def all_budgets(meta: dict) -> list[int]:
    return sorted({*meta["budgets"], *meta.get("full_soup_budgets", [])})


def equal_budget(by_name: dict[str, dict], meta: dict, boot: PairedBootstrap) -> list[dict]:
    """Per budget B, each curve's run at B (K, queries, hypervolume) and its hypervolume over weighted_sum's."""
    others = (*meta["srsoup_curves"], "best_of_n")
    rows = []
    for b in all_budgets(meta):
        row: dict = {"budget": b}
        for prefix in ("weighted_sum", *others):
            r = by_name.get(f"{prefix}_B{b}")
            if r:
                keys = ("K", "reward_queries_per_group", "hypervolume")
                row[prefix] = {**{k: r[k] for k in keys}, "hv_ratio_ws": r.get("hv_ratio_ws")}
        w = row.get("weighted_sum")
        for prefix in others:
            if w and w["hypervolume"] and prefix in row:
                row[prefix]["over_ws_same_budget"] = row[prefix]["hypervolume"] / w["hypervolume"]
                row[prefix]["over_ws_same_budget_ci95"] = boot.ratio_ci(f"{prefix}_B{b}", f"weighted_sum_B{b}")
        rows.append(row)
    return rows


def curve_label(prefix: str, meta: dict) -> str:
    return f"{prefix} (K={meta['K']} and budgets)"


def reach_curves(by_name: dict[str, dict], meta: dict) -> dict[str, dict | None]:
    """Where weighted_sum's, each srsoup window's and best_of_n's curve (the run at K and its budget runs) reach
    the target."""
    budgets = all_budgets(meta)
    curves = {
        curve_label(p, meta): reach([p, *[f"{p}_B{b}" for b in budgets]], by_name)
        for p in ("weighted_sum", *meta["srsoup_curves"])
    }
    curves["best_of_n (budgets)"] = reach([f"best_of_n_B{b}" for b in budgets], by_name)
    return curves


def reach(names: list[str], by_name: dict[str, dict]) -> dict | None:
    """The cheapest measured run of a curve at >= HV_TARGET, and where the curve (runs ordered by queries) first
    crosses it; None when the curve has no runs, "run": None when no run reaches the target."""
    measured = [by_name[n] for n in sorted(set(names)) if n in by_name and "query_ratio_ws" in by_name[n]]
    pts = sorted(measured, key=lambda r: r["query_ratio_ws"])
    if not pts:
        return None
    hits = [r for r in pts if r.get("reaches_target")]
    if not hits:
        return {"run": None, "query_ratio": None, "hv_ratio": None, "interpolated_query_ratio": None}
    best = min(hits, key=lambda r: r["query_ratio_ws"])
    return {
        "run": best["name"],
        "query_ratio": best["query_ratio_ws"],
        "hv_ratio": best["hv_ratio_ws"],
        "interpolated_query_ratio": crossing(pts, HV_TARGET),
    }


def crossing(pts: list[dict], target: float) -> float | None:
    """The query ratio at which the hypervolume ratio of ``pts`` (ordered by queries) first reaches ``target``,
    linearly interpolated between the measured runs either side."""
    for lo, hi in zip([None, *pts[:-1]], pts):
        if hi["hv_ratio_ws"] < target:
            continue
        if lo is None or lo["hv_ratio_ws"] >= target:
            return hi["query_ratio_ws"]
        f = (target - lo["hv_ratio_ws"]) / (hi["hv_ratio_ws"] - lo["hv_ratio_ws"])
        return lo["query_ratio_ws"] + f * (hi["query_ratio_ws"] - lo["query_ratio_ws"])
    return None


def mark_reach(ok: list[dict], curves: dict, meta: dict) -> None:
    """Each srsoup run's smallest query ratio reaching the target: its curve's, or its own for runs on no curve."""
    for r in ok:
        if not r["family"].startswith("srsoup"):
            continue
        curve = next((p for p in meta["srsoup_curves"] if r["name"] == p or r["name"].startswith(f"{p}_B")), None)
        if curve:
            hit = curves[curve_label(curve, meta)]
        elif r.get("reaches_target"):
            hit = {"run": r["name"], "query_ratio": r["query_ratio_ws"], "hv_ratio": r["hv_ratio_ws"]}
        else:
            hit = None
        r["smallest_query_ratio_reaching_target"] = hit if hit and hit["run"] else None


def query_efficiency(ok: list[dict], curves: dict, meta: dict) -> dict:
    """The query-efficiency target: the cheapest srsoup run (any window, any K or budget) at >= HV_TARGET."""
    srsoup_runs = [r for r in ok if r["family"].startswith("srsoup") and "query_ratio_ws" in r]
    best = min(
        (r for r in srsoup_runs if r.get("reaches_target")), key=lambda r: r["query_ratio_ws"], default=None
    )
    crossings = [
        c["interpolated_query_ratio"]
        for p in meta["srsoup_curves"]
        if (c := curves[curve_label(p, meta)]) and c["interpolated_query_ratio"] is not None
    ]
    cheapest = best and {
        "run": best["name"],
        "query_ratio": best["query_ratio_ws"],
        "hv_ratio": best["hv_ratio_ws"],
    }
    return {
        "srsoup_runs": len(srsoup_runs),
        "target_query_ratio": QUERY_TARGET,
        "target_hv_ratio": HV_TARGET,
        "cheapest_run": cheapest,
        "smallest_interpolated_query_ratio": min(crossings, default=None),
        "meets": bool(best and best["query_ratio_ws"] <= QUERY_TARGET),
    }


# --- memory and overhead ----------------------------------------------------------------------------------------
def memory_figures(records: list[dict]) -> dict:
    """Peak RSS of the memory runs, and its ratio between the largest and the smallest K."""
    ok = sorted([r for r in records if r.get("peak_rss_mb")], key=lambda r: r["K"])
    if len(ok) < 2:
        return {"runs": ok}
    small, big = ok[0], ok[-1]
    keys = ("name", "K", "peak_rss_mb", "rss_after_imports_mb", "wall_seconds", "denoiser_evals", "reward_queries")
    return {
        "runs": [{k: r.get(k) for k in keys} for r in ok],
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
            "reward_queries": summary["reward_queries"],
            "eval_scores": summary["images"] * (len(summary["rewards"]) + len(summary["eval_rewards"])),
        },
        "plan_denoiser_evals": plan["denoiser_evals"] * n,
        "in_run_seconds": {
            k: timing.get(f"{k}_seconds", 0.0) for k in ("denoiser", "decode", "reward", "eval_reward")
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
