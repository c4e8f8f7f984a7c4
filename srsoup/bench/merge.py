"""One benchmark from several over disjoint prompt × seed groups: ``srsoup bench --merge A B ... --out C``.

A benchmark's groups can be measured in shards — seeds 2 and 3 in one session, 4 and 5 in another, or each on a
cluster node — as long as every shard is the same setting (steps, K, rewards, weight grid, model, the runs' own
overrides) and only the overrides that choose the groups (``seeds=``, ``prompts.``) differ. The merged
results.json holds every run complete in each shard with its per-group rewards: its groups are the union (a group
in two shards is refused), its counts and seconds the sums, its peak RSS the largest, its front the per-weight mean
over all groups; the analysis (yardstick, ratios, paired bootstrap intervals) is computed again over all groups, as
if they had run together. Runs missing from a shard are left out, and said so.
"""

from __future__ import annotations

from pathlib import Path

from srsoup.bench.reuse import read_results, regrouped, shown_path
from srsoup.errors import SrsoupError
from srsoup.outputs import group_seed
from srsoup.report.compare import mean_points

#: Overrides that choose the prompt × seed groups: the only ones shards may differ in.
GROUP_OVERRIDES = ("seeds=", "prompts.")
#: Settings every shard must share.
SAME_SETTINGS = ("steps", "candidates", "rewards", "weights", "model")
#: A run's counts that add up over shards.
SUMS = ("groups", "images", "reward_queries", "denoiser_evals", "plan_reward_queries", "plan_denoiser_evals")


def group_free(overrides: list[str]) -> list[str]:
    """``overrides`` without those that choose the groups."""
    return [o for o in overrides if not o.startswith(GROUP_OVERRIDES)]


def load(path: Path, fmt: int) -> dict:
    """A shard's results.json (``path`` is the file or the folder holding it)."""
    file = path / "results.json" if path.is_dir() else path
    return {**read_results(file, "--merge", fmt), "_path": shown_path(file)}


def merged_results(paths: list[Path], fmt: int) -> dict:
    """results.json of the shards ``paths`` as one benchmark, analysed again over all their groups."""
    from srsoup.bench.analyse import analyse

    if len(paths) < 2:
        raise SrsoupError("--merge needs at least two results.json (the shards of one benchmark)")
    shards = [load(p, fmt) for p in paths]
    first = shards[0]
    for shard in shards[1:]:
        for key in SAME_SETTINGS:
            if shard["settings"].get(key) != first["settings"].get(key):
                raise SrsoupError(
                    f"--merge: {shard['_path']} has {key}={shard['settings'].get(key)!r}, {first['_path']} "
                    f"{first['settings'].get(key)!r}; shards must differ only in their prompts and seeds"
                )
        if group_free(shard["settings"]["overrides"]) != group_free(first["settings"]["overrides"]):
            raise SrsoupError(
                f"--merge: {shard['_path']} has overrides {shard['settings']['overrides']}, {first['_path']} "
                f"{first['settings']['overrides']}; shards may differ only in {', '.join(GROUP_OVERRIDES)}"
            )
    by_shard = [
        {r["name"]: r for r in s["runs"] if r.get("status") == "complete" and r.get("group_points")}
        for s in shards
    ]
    names = [n for n in by_shard[0] if all(n in runs for runs in by_shard[1:])]
    left_out = sorted({n for runs in by_shard for n in runs} - set(names))
    runs = [merged_run([runs[n] for runs in by_shard], [s["_path"] for s in shards]) for n in names]
    settings = {
        **first["settings"],
        "overrides": group_free(first["settings"]["overrides"]),
        "prompt_texts": list(dict.fromkeys(t for s in shards for t in s["settings"]["prompt_texts"])),
        # From the groups themselves ("p003_s2"): older shards chosen by a `seeds=` override say 0..N-1.
        "seed_values": sorted({group_seed(k) for r in runs for k in r["_groups"]}),
    }
    settings.update(prompts=len(settings["prompt_texts"]), seeds=len(settings["seed_values"]))
    curves = {r.get("curve") for r in runs}
    meta = {**first["meta"], "curves": [c for c in first["meta"]["curves"] if c in curves]}
    total = {k: sum(s["planned"]["total"][k] for s in shards) for k in ("denoiser_evals", "reward_queries")}
    return {
        **{k: v for k, v in first.items() if k != "_path"},
        "settings": settings,
        "meta": meta,
        "planned": {"total": {"runs": len(runs), **total}, "groups": sum(s["planned"]["groups"] for s in shards)},
        "runs": runs,
        "analysis": analyse(runs, meta, first.get("analysis", {}).get("bootstrap", {}).get("resamples", 1000)),
        "overhead": None,
        "overhead_error": "a merge measures nothing of its own; see each shard's results.md",
        "profile": None,
        "memory": {"runs": []},
        "bench_seconds": sum(s.get("bench_seconds") or 0 for s in shards),
        "loadavg": None,
        "merged_from": [
            {
                "file": s["_path"],
                "date": s.get("date"),
                "cpu": (s.get("machine") or {}).get("cpu"),
                "groups": groups,
            }
            for s, groups in zip(shards, shard_groups(shards, runs))
        ],
        "merge_left_out": left_out,
    }


def shard_groups(shards: list[dict], runs: list[dict]) -> list[list[str]]:
    """The groups each shard gave (those of its first merged run)."""
    if not runs:
        return [[] for _ in shards]
    name = runs[0]["name"]
    return [sorted(next(r for r in s["runs"] if r["name"] == name)["group_points"]) for s in shards]


def merged_run(recs: list[dict], paths: list[str]) -> dict:
    """One run's records from every shard as one record over all their groups."""
    name = recs[0]["name"]
    for rec, path in zip(recs[1:], paths[1:]):
        if group_free(rec.get("overrides", [])) != group_free(recs[0].get("overrides", [])):
            raise SrsoupError(
                f"--merge: run {name} has overrides {rec.get('overrides')} in {path}, {recs[0].get('overrides')} "
                f"in {paths[0]}"
            )
    shards = [regrouped(r) for r in recs]
    groups: dict = {}
    for shard, path in zip(shards, paths):
        twice = sorted(set(groups) & set(shard["_groups"]))
        if twice:
            raise SrsoupError(f"--merge: group {twice[0]} of run {name} is in {path} and an earlier shard")
        groups.update(shard["_groups"])
    n = [len(s["_groups"]) for s in shards]
    out = {**shards[0], **{k: sum(s[k] for s in shards) for k in SUMS if all(k in s for s in shards)}}
    walls = [s.get("wall_seconds") for s in shards]
    rss = [s.get("peak_rss_mb") for s in shards if s.get("peak_rss_mb") is not None]
    out.update(
        _groups=groups,
        points=mean_points(groups).tolist(),
        overrides=group_free(recs[0].get("overrides", [])),
        reward_queries_per_group=out["reward_queries"] / out["groups"],
        denoiser_evals_per_group=out["denoiser_evals"] / out["groups"],
        wall_seconds=None if None in walls else sum(walls),
        peak_rss_mb=max(rss) if rss else None,
        counts_match_plan=all(s.get("counts_match_plan") for s in shards),
        adherence_mixed=per_group_mean([s.get("adherence_mixed") for s in shards], n),
        timing=None,
        cached=False,
    )
    if all(s.get("reward_queries_by_reward") for s in shards):
        by_reward = [s["reward_queries_by_reward"] for s in shards]
        out["reward_queries_by_reward"] = {k: sum(q[k] for q in by_reward) for k in by_reward[0]}
    if all(s.get("eval_means") for s in shards):
        means = [s["eval_means"] for s in shards]
        out["eval_means"] = {k: per_group_mean([m[k] for m in means], n) for k in means[0]}
    out.pop("reused_from", None)  # the merge's own record: where its shards came from is in merged_from
    return out


def per_group_mean(values: list, n: list[int]):
    """The mean over all groups of per-shard means ``values`` over ``n`` groups each (None if one is missing)."""
    return None if None in values else sum(v * k for v, k in zip(values, n)) / sum(n)
