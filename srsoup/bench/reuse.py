"""Runs taken from an earlier results.json (``srsoup bench --reuse FILE``) instead of running them again.

results.json keeps each run's per-group, per-weight rewards (``group_points``), which is all the analysis needs
of a run besides its counts: so a benchmark can add runs to one measured on another machine or in another
session (e.g. the committed ``bench/t20/results.json``) without its run dirs, and every ratio and interval comes
out as if all runs had run together (the paired bootstrap resamples the groups, not the runs). A run is taken from
FILE when FILE has a complete record of the same name with the same overrides and its ``group_points``, and its
run dir under OUT is not complete; memory and overhead runs are always measured.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from srsoup.bench.execute import read_summary
from srsoup.bench.plan import RunDef
from srsoup.errors import SrsoupError


def read_results(path: Path, flag: str, fmt: int) -> dict:
    """An earlier results.json of format ``fmt`` (``flag`` names the option in the one-line errors)."""
    if not path.is_file():
        raise SrsoupError(f"{flag} {path}: no such file (give an earlier results.json)")
    try:
        res = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SrsoupError(f"{flag} {path}: not JSON ({err})") from None
    if res.get("format") != fmt:
        raise SrsoupError(f"{flag} {path}: results.json of format {res.get('format', 1)}; readable: format {fmt}")
    return res


def load_reusable(path: Path, fmt: int) -> tuple[dict[str, dict], dict]:
    """The complete records of ``path`` that carry their groups, by name, and where they came from."""
    res = read_results(path, "--reuse", fmt)
    records = {
        r["name"]: r for r in res.get("runs", []) if r.get("status") == "complete" and r.get("group_points")
    }
    origin = {"file": shown_path(path), "date": res.get("date"), "cpu": (res.get("machine") or {}).get("cpu")}
    return records, origin


def shown_path(path: Path) -> str:
    """``path`` as results.md names it: relative to the working directory when inside it (no machine paths)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def matching(
    runs: list[RunDef], plans: dict, runs_dir: Path, records: dict[str, dict], origin: dict
) -> dict[str, dict]:
    """The runs of ``runs`` to take from ``records``: same name and overrides, counts as this version plans them
    (a record from a version that counted otherwise runs again), run dir under OUT not complete; and a best_of_n
    pool only when every run picked from its samples is taken too.

    Each chosen record comes back ready for the analysis (``_groups`` rebuilt, ``reused_from`` set).
    """
    chosen = {}
    for rd in runs:
        rec, plan = records.get(rd.name), plans.get(rd.name)
        if rd.same_as or rec is None or plan is None or rec.get("overrides") != rd.overrides:
            continue
        groups = rec.get("groups", 0)
        if (rec.get("plan_reward_queries"), rec.get("plan_denoiser_evals")) != (
            plan["reward_queries"] * groups,
            plan["denoiser_evals"] * groups,
        ):
            continue
        if read_summary(runs_dir / rd.name).get("status") == "complete":
            continue  # a complete run here is the fresher measurement
        chosen[rd.name] = revive(rec, origin)
    for rd in runs:  # a best_of_n pool runs unless every budget picked from its samples is taken
        if rd.derived_from in chosen and rd.name not in chosen:
            del chosen[rd.derived_from]
    return chosen


def revive(rec: dict, origin: dict) -> dict:
    """A record taken from another results.json, ready for this benchmark's analysis and marked as taken."""
    return {**regrouped(rec), "cached": True, "reused_from": origin}


def regrouped(rec: dict) -> dict:
    """A record of results.json as the analysis takes it: groups as arrays, the earlier figures dropped."""
    keep = {k: v for k, v in rec.items() if k not in ANALYSIS_KEYS and k != "group_points"}
    if "group_points" in rec:
        keep["_groups"] = {k: np.asarray(v, dtype=float) for k, v in rec["group_points"].items()}
    return keep


#: Figures the analysis recomputes (against this benchmark's yardstick and weighted_sum), never carried over.
ANALYSIS_KEYS = (
    "hypervolume",
    "hv_ratio_ws",
    "hv_ratio_ws_ci95",
    "query_ratio_ws",
    "eval_ratio_ws",
    "wall_ratio_ws",
    "adherence_mixed_ws",
)


def stored(groups: dict[str, np.ndarray]) -> dict[str, list]:
    """``_groups`` as results.json keeps them (floats round-trip exactly through JSON)."""
    return {k: np.asarray(v, dtype=float).tolist() for k, v in sorted(groups.items())}
