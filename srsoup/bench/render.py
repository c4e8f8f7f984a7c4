"""The benchmark's results.md and queries-vs-hypervolume figure, from results.json alone (so they re-render).

Renders results.json of format 2 (the yardstick and every method at equal budgets); earlier results.json files
were written by an earlier benchmark and their results.md stands as written.
"""

from __future__ import annotations

from pathlib import Path


# --- formatting -------------------------------------------------------------------------------------------------
def _f(v) -> str:
    """Numbers for the tables: integers whole, others to 3 significant digits (no exponents below 1e6)."""
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if float(v).is_integer() or abs(v) >= 1000:
        return f"{v:.0f}"
    return f"{v:.3g}"


def _with_ci(value, ci) -> str:
    if value is None:
        return "–"
    return f"{_f(value)} ({_f(ci[0])}–{_f(ci[1])})" if ci else _f(value)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]


def _complete(res: dict) -> list[dict]:
    return [r for r in res["runs"] if r.get("status") == "complete"]


# --- results.md -------------------------------------------------------------------------------------------------
def markdown(res: dict) -> str:
    """results.md: the setting and yardstick, every run, equal budgets, query efficiency, overhead, memory."""
    sections = (_intro, _all_runs, _equal_budget, _query_efficiency, _figure, _overhead, _memory, _closing)
    return "\n".join(line for section in sections for line in section(res)) + "\n"


def _model_text(s: dict) -> str:
    embedded = s["model"].startswith("tiny ")
    text = "embedded model (`model=tiny`)" if embedded else f"model `{s['model']}`"
    return text + (f" with overrides `{' '.join(s['overrides'])}`" if s.get("overrides") else "")


def _intro(res: dict) -> list[str]:
    s, m = res["settings"], res["machine"]
    sharing = (
        f"Runs went {s['jobs']} at a time, each a child process with {s['threads_per_job']} torch thread(s), so "
        f"wall seconds include that sharing of the machine. "
        if s["jobs"] > 1
        else ""
    )
    gpu = f", {m['gpu']}" if m.get("gpu") else ""
    groups = s["prompts"] * s["seeds"]
    return [
        f"Setting `{s['setting']}`: {_model_text(s)}, rewards `colorful_compress` (colourfulness, JPEG "
        f"compressibility), {len(s['weights'])}-weight grid, T={s['steps']} steps, weighted_sum's "
        f"K={s['candidates']}, {s['prompts']} prompts × {s['seeds']} seeds ({groups} groups); {m['cpu']}, "
        f"{m['usable_cores']} cores, {m['ram_gib']} GiB{gpu}, torch {m['torch']}, {res['date'][:10]}. "
        f"{sharing}Planned: {res['planned']['total']['denoiser_evals']:,} denoiser evals.",
        "",
        *_yardstick(res["analysis"]),
    ]


def _yardstick(a: dict) -> list[str]:
    y = a["yardstick"]
    if "error" in y:
        return [f"**No yardstick** ({y['error']}): no hypervolumes."]
    ranges = ", ".join(f"{name} {y['low'][name]:.4g} to {y['high'][name]:.4g}" for name in y["low"])
    boot = a.get("bootstrap", {})
    return [
        f"**Yardstick**: each reward is normalised by the range of the mean rewards of the unguided and "
        f"single-reward runs ({', '.join(f'`{n}`' for n in y['runs'])}): {ranges}. Hypervolume is that of a run's "
        f"per-weight mean rewards so normalised, against the lowest of those runs per reward (the origin), so "
        f"adding a run changes no other number. Ratios are to `weighted_sum` at K, with 95% intervals from a "
        f"paired bootstrap over the {boot.get('groups')} prompt × seed groups ({boot.get('resamples')} "
        "resamples).",
    ]


def _size(r: dict) -> str:
    return "–" if r.get("size") is None else f"{r.get('size_label') or 'K'}={r['size']}"


def _adherence(r: dict) -> str:
    own, ws = r.get("adherence_mixed"), r.get("adherence_mixed_ws")
    if own is None:
        return "–"
    return f"{_f(own)} ({own - ws:+.3f})" if ws is not None else _f(own)


def _all_runs(res: dict) -> list[str]:
    header = ["run", "method", "variant", "size", "budget", "queries", "× WS queries", "denoiser evals", "wall s"]
    header += ["peak RSS MB", "HV", "× WS HV (95% CI)", "mixed adherence (Δ WS)"]
    rows = []
    for r in res["runs"]:
        if r.get("status") != "complete":
            rows.append([f"`{r['name']}`", r["family"], r.get("variant") or "", r.get("error", "not run")[:60]])
            rows[-1] += [None] * (len(header) - 4)
            continue
        variant = (r.get("variant") or "") + (f" (same run as `{r['same_as']}`)" if r.get("same_as") else "")
        variant += f" (first {r['size']} samples of `{r['derived_from']}`)" if r.get("derived_from") else ""
        rows.append(
            [f"`{r['name']}`", r["family"], variant, _size(r), r["budget"], r["reward_queries_per_group"]]
            + [r.get("query_ratio_ws"), r["denoiser_evals_per_group"], r["wall_seconds"], r["peak_rss_mb"]]
            + [r.get("hypervolume"), _with_ci(r.get("hv_ratio_ws"), r.get("hv_ratio_ws_ci95")), _adherence(r)]
        )
    intro = (
        "**All runs** (queries and evals per prompt × seed group; wall seconds and peak RSS of the whole run; "
        "mixed adherence: mean prompt adherence of the weights with both rewards weighted, and its difference to "
        "`weighted_sum` at K):"
    )
    return ["", intro, "", *_table(header, rows)]


def _equal_budget(res: dict) -> list[str]:
    rows_in = [row for row in res["analysis"]["equal_budget"] if row["cells"]]
    if all(row["curve"] == "weighted_sum" for row in rows_in):
        return []  # nothing ran at a budget to compare with weighted_sum
    budgets = sorted({int(b) for row in rows_in for b in row["cells"]})
    header = ["method"] + [h for b in budgets for h in (f"B={b}: size", "evals", "HV, / WS at B (95% CI)")]
    rows = []
    for row in rows_in:
        out = [f"`{row['curve']}`"]
        for b in budgets:
            c = row["cells"].get(str(b))
            if c is None:
                out += ["", "", ""]
                continue
            ratio = _with_ci(c.get("over_ws"), c.get("over_ws_ci95")) if "over_ws" in c else "–"
            out += [_size(c), c["denoiser_evals_per_group"]]
            out.append(f"{_f(c['hypervolume'])}, {ratio}")
        rows.append(out)
    low = res["meta"].get("low_budgets") or []
    are = "is" if len(low) == 1 else "are"
    note = (
        f" B = {', '.join(map(str, low))} {are} below weighted_sum's smallest budget: only the srsoup variants "
        "that fit run there."
        if low
        else ""
    )
    skipped = res["meta"].get("skipped") or []
    left = (
        " Left out (the budget is too small for them): " + ", ".join(f"`{x['name']}`" for x in skipped) + "."
        if skipped
        else ""
    )
    intro = (
        "**Equal reward-query budgets** (`budget=fit`: the largest size that fits B reward queries per group; "
        f"evals per group; HV over weighted_sum's at the same budget).{note}{left}"
    )
    return ["", intro, "", *_table(header, rows)]


def _query_efficiency(res: dict) -> list[str]:
    qe, t, k = res["analysis"]["query_efficiency"], res["targets"], res["settings"]["candidates"]
    if not qe:
        return []
    rows, verdicts = [], []
    for q in qe:
        best, cross = q["cheapest"], q["interpolated_query_ratio"]
        rows.append(
            [
                f"`{q['curve']}`",
                q["runs"],
                f"`{best['name']}`" if best else "none",
                best and best["query_ratio_ws"],
            ]
            + [_with_ci(best["hv_ratio_ws"], best["hv_ratio_ws_ci95"]) if best else "–", cross]
            + [q["interpolated_queries_per_group"]]
        )
        if q["curve"].startswith("srsoup_"):
            verdicts.append(f"- `{q['curve']}`: {_verdict(q, t)}")
    header = ["curve", "runs", "cheapest run reaching it", "× WS queries", "× WS HV (95% CI)"]
    header += [f"crossing of {t['hv_ratio']}× (× WS queries)", "queries per group there"]
    return [
        "",
        f"**Query efficiency**: the reward queries a curve (its run at K and its budget runs) needs to reach the "
        f"hypervolume of `weighted_sum` at K={k}: its cheapest run at ≥ {t['hv_ratio']}× with the interval's "
        f"lower end ≥ {t['ci_low']}×, and where the curve through its runs (ordered by queries) first crosses "
        f"{t['hv_ratio']}× by linear interpolation.",
        "",
        *_table(header, rows),
        *(["", "Verdict per srsoup variant:", "", *verdicts] if verdicts else []),
    ]


def _verdict(q: dict, t: dict) -> str:
    best, cross = q["cheapest"], q["interpolated_query_ratio"]
    text = (
        f"reaches {t['hv_ratio']}× (interval ≥ {t['ci_low']}×) at **{best['query_ratio_ws']:.2f}×** the queries "
        f"(`{best['name']}`, {_with_ci(best['hv_ratio_ws'], best['hv_ratio_ws_ci95'])}× the hypervolume)"
        if best
        else f"**not reached** with the interval's lower end ≥ {t['ci_low']}× at any measured point"
    )
    if cross is not None:
        text += f"; the curve crosses {t['hv_ratio']}× at {cross:.2f}× ({q['interpolated_queries_per_group']:.0f} "
        text += "queries per group)"
    return text + "."


def _figure(res: dict) -> list[str]:
    return ["", "![reward queries vs hypervolume, one curve per method](queries_vs_hv.png)"]


def _overhead(res: dict) -> list[str]:
    ov = res.get("overhead")
    if not ov:
        return ["", f"**Overhead**: not measured ({res['overhead_error']})."] if res.get("overhead_error") else []
    verdict = "meets" if ov["ratio_wall"] <= ov["target"] else "misses"
    return [
        *_timed_overhead(ov),
        "",
        f"Wall / model-call time: **{ov['ratio_wall']:.3f}** for the whole `run()` (model loading included), "
        f"{ov['ratio_group_loop']:.3f} for the group loop alone; target ≤ {ov['target']}: {verdict} it.",
        *_profile(res.get("profile"), ov["run"]),
    ]


def _timed_overhead(ov: dict) -> list[str]:
    s, c = ov["in_run_seconds"], ov["counts"]
    rows = [
        ["denoiser (CFG evals)", c["denoiser_evals"], s["denoiser"]],
        ["decode (planned decodes)", c["decodes"], s["decode"]],
        *([["prompt encode (one a group)", c["encodes"], s["encode"]]] if "encode" in s else []),
        ["rewards, guidance (queries)", c["reward_queries"], s["reward"]],
        ["rewards, final scoring (scores)", c["eval_scores"], s["eval_reward"]],
        ["**model calls, total**", "", ov["model_seconds"]],
        ["model load + reward build", "", ov["load_seconds"]],
        ["**wall, run()**", "", ov["wall_seconds"]],
        ["**wall, group loop**", "", ov["group_loop_seconds"]],
    ]
    return [
        "",
        f"**Overhead** (`{ov['run']}` on {ov['groups']} groups, run alone with {ov.get('threads')} torch "
        f"thread(s)): wall time of the run over the seconds inside its model calls, from the timers beside its "
        f"counters (summary.json `timing`; on CUDA each timer synchronizes):",
        "",
        *_table(["part", "count", "seconds"], rows),
    ]


def _profile(prof: dict | None, run: str) -> list[str]:
    if not prof:
        return []
    top = [[f"`{p['where']}`", p["calls"], p["cumtime"]] for p in prof["srsoup_cumulative"][:14]]
    own = [[f"`{p['where']}`", p["calls"], p["tottime"]] for p in prof["own_time"][:10]]
    return [
        "",
        f"Where the time goes (cProfile of `{run}` on the first prompt, {prof['seconds']:.1f} s under the "
        f"profiler): srsoup's own functions by cumulative time, then everything by own time.",
        "",
        *_table(["srsoup function", "calls", "cumulative s"], top),
        "",
        *_table(["function", "calls", "own s"], own),
    ]


def _memory(res: dict) -> list[str]:
    mem = res.get("memory", {})
    if not mem.get("ratio"):
        return []
    keys = ("K", "peak_rss_mb", "rss_after_imports_mb", "denoiser_evals", "reward_queries", "wall_seconds")
    header = ["K", "peak RSS MB", "RSS after imports MB", "denoiser evals", "reward queries", "wall s"]
    verdict = "meets" if mem["ratio"] <= mem["target"] else "misses"
    return [
        "",
        "**Memory** (srsoup, chunk_size 64: at most 64 rows per model batch, i.e. 32 candidates per CFG "
        "denoiser batch; 1 prompt × 1 seed, separate child processes; peak RSS = VmHWM of the child):",
        "",
        *_table(header, [[r[k] for k in keys] for r in mem["runs"]]),
        "",
        f"Peak RSS ratio K={mem['runs'][-1]['K']} / K={mem['runs'][0]['K']}: **{mem['ratio']:.3f}** "
        f"(target ≤ {mem['target']}: {verdict} it); growth above the post-import baseline: "
        f"{mem['ratio_above_imports']:.2f}×.",
    ]


def _closing(res: dict) -> list[str]:
    load = res.get("loadavg") or {}
    load_text = (
        f" Load average (1, 5, 15 min) at the start {', '.join(f'{x:.2f}' for x in load['start'])}, at the end "
        f"{', '.join(f'{x:.2f}' for x in load['end'])}."
        if load.get("start") and load.get("end")
        else ""
    )
    reused = [r["name"] for r in res["runs"] if r.get("cached") and not r.get("reused_from")]
    reused_text = (
        f" {len(reused)} of {len(res['runs'])} runs were complete from an earlier invocation and reused (their "
        "wall seconds and peak RSS are from when they ran)."
        if reused
        else ""
    )
    origins: dict[str, list[str]] = {}
    for r in res["runs"]:
        if r.get("reused_from"):
            o = r["reused_from"]
            origins.setdefault(f"`{o['file']}` (measured {o.get('date')}, {o.get('cpu')})", []).append(r["name"])
    reused_text += "".join(
        f" {len(names)} runs were taken from {where} with `--reuse`: {', '.join(f'`{n}`' for n in names)}."
        for where, names in origins.items()
    )
    shards = res.get("merged_from") or []
    merged_text = (
        " Merged with `srsoup bench --merge` from "
        + "; ".join(
            f"`{m['file']}` ({_groups_text(m['groups'])}, measured {m.get('date')}, {m.get('cpu')})"
            for m in shards
        )
        + " (wall time their sum; every ratio and interval computed again over all groups)."
        + (
            f" Left out, not in every shard: {', '.join(res['merge_left_out'])}."
            if res.get("merge_left_out")
            else ""
        )
        if shards
        else ""
    )
    # results.json from before the command was kept (the committed ones) ran as `make bench` or as
    # docs/benchmark.md gives their commands
    command = f"`{res['command']}`" if res.get("command") else "`make bench`"
    return [
        "",
        f"Benchmark wall time {res['bench_seconds'] / 60:.1f} min.{reused_text}{merged_text}{load_text} "
        f"Regenerate with {command}.",
    ]


def _groups_text(groups: list[str]) -> str:
    """How results.md names a shard's groups ("24 groups, seeds 2, 3") from their keys ("p003_s2", ...)."""
    from srsoup.outputs import group_seed

    seeds = sorted({group_seed(k) for k in groups})
    return f"{len(groups)} groups, seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


# --- queries_vs_hv.png ------------------------------------------------------------------------------------------
#: One colour per srsoup variant, none of the other methods' (srsoup.report.plots.METHOD_COLOURS).
VARIANT_COLOURS = ("tab:blue", "navy", "tab:olive", "tab:pink", "tab:brown", "gold", "tab:gray", "lime")


def curve_colours(curves: list[str]) -> dict[str, str]:
    """A colour per curve: each method its report colour, each srsoup variant one of VARIANT_COLOURS."""
    from srsoup.report.plots import METHOD_COLOURS

    variants = [c for c in curves if c.startswith("srsoup_")]
    colours = {c: VARIANT_COLOURS[i % len(VARIANT_COLOURS)] for i, c in enumerate(variants)}
    return {c: colours.get(c) or METHOD_COLOURS.get(c, "tab:brown") for c in curves}


def plot(res: dict, path: Path) -> None:
    """Reward queries per group vs normalised hypervolume: one curve per method (each srsoup variant one), the
    unguided and single-reward runs as points, and 0.97x weighted_sum's hypervolume at K as a dotted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from srsoup.report.plots import METHOD_COLOURS

    fig, ax = plt.subplots(figsize=(10.5, 5.8), dpi=120)
    ok = [r for r in _complete(res) if not r.get("same_as") and r.get("hypervolume") is not None]
    colours = curve_colours(res["meta"]["curves"])
    for curve, colour in colours.items():
        pts = sorted((r for r in ok if r.get("curve") == curve), key=lambda r: r["reward_queries_per_group"])
        if not pts:
            continue
        x, y = [r["reward_queries_per_group"] for r in pts], [r["hypervolume"] for r in pts]
        ax.plot(x, y, color=colour, marker="o", ms=5, lw=1.3, label=curve, zorder=3)
        for r in pts:
            ax.annotate(
                _size(r),
                (r["reward_queries_per_group"], r["hypervolume"]),
                xytext=(3, 3),
                textcoords="offset points",
                fontsize=6,
                color=colour,
            )
    for family, marker in (("none", "*"), ("single", "^")):
        refs = [r for r in ok if r["family"] == family]
        if refs:
            ax.scatter(
                [r["reward_queries_per_group"] for r in refs],
                [r["hypervolume"] for r in refs],
                s=80,
                marker=marker,
                color=METHOD_COLOURS[family],
                label=family,
                zorder=4,
            )
    ws = next((r for r in ok if r["name"] == "weighted_sum"), None)
    if ws:
        target = res["targets"]["hv_ratio"]
        ax.axhline(
            target * ws["hypervolume"],
            color="grey",
            ls=":",
            lw=1,
            label=f"{target}× weighted_sum at K={res['settings']['candidates']}",
        )
    s = res["settings"]
    model = "embedded model" if s["model"].startswith("tiny ") else s["model"]
    ax.set_title(
        f"setting {s['setting']}: {model}, colourfulness vs JPEG compressibility, T={s['steps']}, "
        f"{len(s['weights'])}-weight grid, {s['prompts']} prompts × {s['seeds']} seeds",
        fontsize=9,
    )
    ax.set_xlabel("reward queries per prompt × seed group")
    ax.set_ylabel("hypervolume, rewards normalised by the yardstick")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
