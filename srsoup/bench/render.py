"""The benchmark's results.md and queries-vs-hypervolume figure, from results.json alone (so they re-render)."""

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
    """results.md: settings, every run, equal budgets, the targets, srsoup's variants, overhead, memory."""
    sections = (_intro, _all_runs, _equal_budget, _reach, _variants, _overhead, _memory, _closing)
    return "\n".join(line for section in sections for line in section(res)) + "\n"


def _embedded(s: dict) -> bool:
    # Every results.json written before `srsoup bench` took overrides was of the embedded model (or its layout).
    return "overrides" not in s or s["model"].startswith("tiny ")


def _model_text(s: dict) -> str:
    text = "Embedded model (`model=tiny`)" if _embedded(s) else f"Model `{s['model']}`"
    return text + (f" with overrides `{' '.join(s['overrides'])}`" if s.get("overrides") else "")


def _intro(res: dict) -> list[str]:
    s, m, ref = res["settings"], res["machine"], res["analysis"]["reference_point"]
    sharing = (
        f"Runs went {s['jobs']} at a time, each a child process with {s['threads_per_job']} torch thread(s), so "
        f"wall seconds include that sharing of the machine. "
        if s["jobs"] > 1
        else ""
    )
    gpu = f", {m['gpu']}" if m.get("gpu") else ""
    return [
        f"{_model_text(s)}, rewards `colorful_compress` (colourfulness, JPEG compressibility), "
        f"{len(s['weights'])}-weight grid, T={s['steps']} steps, K={s['candidates']}, {s['prompts']} prompts × "
        f"{s['seeds']} seeds; {m['cpu']}, {m['usable_cores']} cores, {m['ram_gib']} GiB{gpu}, torch {m['torch']}, "
        f"{res['date'][:10]}. {sharing}Hypervolume of the per-weight mean rewards (over prompts × seeds) against "
        f"one reference point for all runs: colourfulness {ref['colorfulness']:.4g}, JPEG compressibility "
        f"{ref['jpeg_compressibility']:.4g} (per-reward minimum over all runs' points minus 5% of the range). "
        f"Ratios are to `weighted_sum` at K={s['candidates']}.",
    ]


def _all_runs(res: dict) -> list[str]:
    header = ["run", "variant", "K", "queries", "× WS queries", "denoiser evals", "wall s", "peak RSS MB"]
    header += ["hypervolume", "× WS HV (95% CI)", "adherence"]
    rows = []
    for r in res["runs"]:
        if r.get("status") != "complete":
            rows.append([r["name"], r.get("error", "not run")[:60], *[None] * 9])
            continue
        variant = ", ".join(f"{k}={v}" for k, v in r["params"].items() if k not in ("K", "fraction"))
        if r.get("same_as"):
            variant += f" (same run as `{r['same_as']}`)"
        rows.append(
            [f"`{r['name']}`", variant, r["K"], r["reward_queries_per_group"], r.get("query_ratio_ws")]
            + [r["denoiser_evals_per_group"], r["wall_seconds"], r["peak_rss_mb"], r["hypervolume"]]
            + [_with_ci(r.get("hv_ratio_ws"), r.get("hv_ratio_ws_ci95")), r["eval_means"].get("prompt_adherence")]
        )
    intro = "**All runs** (queries and evals per prompt × seed group; wall seconds and peak RSS of the whole run):"
    return ["", intro, "", *_table(header, rows)]


def _equal_budget(res: dict) -> list[str]:
    curves = res["meta"]["srsoup_curves"]
    others = [*curves, "best_of_n"]
    rows = []
    for b in res["analysis"]["equal_budget"]:
        w = b.get("weighted_sum", {})
        row = [b["budget"], w.get("K"), w.get("hypervolume")]
        for prefix in others:
            o = b.get(prefix, {})
            row += [o.get("K"), o.get("hypervolume")]
            row.append(_with_ci(o.get("over_ws_same_budget"), o.get("over_ws_same_budget_ci95")))
        rows.append(row)
    header = ["B", "WS K", "WS HV", *[h for p in others for h in (f"`{p}` K", "HV", "/ WS HV")]]
    intro = (
        "**Equal reward-query budgets** (`budget=fit`, B = reward queries per group; K is the largest that fits):"
    )
    out = ["", intro, "", *_table(header, rows)]
    if len(curves) > 1:
        out += [
            "",
            f"`{curves[-1]}` has the whole chain in the soup window (beyond the paper's windows): it queries the "
            "anchors only, so it also runs at budgets where the other methods were not run (no WS column there; "
            "its ratio to weighted_sum at K is in the table of all runs).",
        ]
    return out


def _reach(res: dict) -> list[str]:
    k, target = res["settings"]["candidates"], res["targets"]["hv_ratio_reach"]
    out = [
        "",
        f"**Smallest query ratio reaching ≥ {target}× the hypervolume of `weighted_sum` (K={k})**: the cheapest "
        f"measured run that does, and where the curve through the measured runs (ordered by queries) crosses "
        f"{target} by linear interpolation:",
        "",
    ]
    for label, hit in res["analysis"]["reach_target"].items():
        if hit and hit["run"]:
            text = (
                f"{hit['query_ratio']:.2f}× the queries (`{hit['run']}`, HV ratio {hit['hv_ratio']:.3f}); "
                f"interpolated crossing at {hit['interpolated_query_ratio']:.2f}×"
            )
        else:
            text = "not reached at any measured point" if hit else "no runs"
        out.append(f"- {label}: {text}")
    return out + _query_efficiency(res["analysis"].get("query_efficiency"))


def _query_efficiency(qe: dict | None) -> list[str]:
    if not qe:
        return []
    best = qe["cheapest_run"]
    if best:
        verdict = (
            f"**{'met' if qe['meets'] else 'not met'}**; the cheapest srsoup run that reaches it is "
            f"`{best['run']}` at {best['query_ratio']:.2f}× the queries (HV ratio {best['hv_ratio']:.3f})"
        )
    else:
        verdict = (
            "**not met**; no srsoup run reaches it" if qe.get("srsoup_runs", 1) else "not measured (no srsoup run)"
        )
    crossing = qe.get("smallest_interpolated_query_ratio")
    tail = (
        f", and the interpolated crossing of the srsoup curves is at {crossing:.2f}×."
        if crossing is not None
        else "."
    )
    target = f"Target ≤ {qe['target_query_ratio']}× the queries for ≥ {qe['target_hv_ratio']}× the hypervolume: "
    return ["", target + verdict + tail]


def _variants(res: dict) -> list[str]:
    k, target = res["settings"]["candidates"], res["targets"]["hv_ratio_reach"]
    runs = [
        r for r in _complete(res) if r["family"].startswith("srsoup") and not r["budget"] and "query_ratio_ws" in r
    ]
    rows = [
        [f"`{r['name']}`", r["query_ratio_ws"], _with_ci(r["hv_ratio_ws"], r.get("hv_ratio_ws_ci95"))]
        + ["yes" if r.get("reaches_target") else "no", r.get("hv_ratio_ws_equal_queries")]
        for r in runs
    ]
    header = ["run", "× WS queries", "× WS HV (95% CI)", f"≥ {target}×", "× WS HV at equal queries"]
    return [
        "",
        f"**SRSoup variants at K={k}** against `weighted_sum` at K={k}, and against `weighted_sum`'s budget curve "
        f"interpolated to the same number of queries:",
        "",
        *_table(header, rows),
    ]


def _overhead(res: dict) -> list[str]:
    ov = res.get("overhead")
    if not ov:
        return ["", f"**Overhead**: not measured ({res['overhead_error']})."] if res.get("overhead_error") else []
    # results.json written by scripts/bench.py (before the runner had timers) measured the overhead against a bare
    # replay of the run's model calls; since then it comes from the run's own timers. Both still render.
    table = _replayed_overhead(ov) if "bare_seconds" in ov else _timed_overhead(ov)
    verdict = "meets" if ov["ratio_wall"] <= ov["target"] else "misses"
    return [
        *table,
        "",
        f"Wall / model-call time: **{ov['ratio_wall']:.3f}** for the whole `run()` (model loading included), "
        f"{ov['ratio_group_loop']:.3f} for the group loop alone; target ≤ {ov['target']}: {verdict} it.",
        *_profile(res.get("profile"), ov["run"]),
    ]


def _replayed_overhead(ov: dict) -> list[str]:
    b, i, c = ov["bare_seconds"], ov["in_run_seconds"], ov["calls"]
    rows = [
        ["denoiser (UNet, CFG batch)", c["cfg_chunks"], c["denoiser_items"], b["denoiser"], i["denoiser"]],
        ["decode", c["decode_calls"], c["decode_items"], b["decode"], i["decode"]],
        ["rewards (guidance + final scoring)", c["reward_calls"], c["reward_items"], b["reward"], i["reward"]],
        ["model load + reward build", "", "", "", i["load_backbone"] + i["build_rewards"]],
        ["**model calls, total**", "", "", ov["bare_model_seconds"], i["denoiser"] + i["decode"] + i["reward"]],
        ["**wall, run()**", "", "", ov["wall_seconds"], ""],
        ["**wall, group loop**", "", "", ov["group_loop_seconds"], ""],
    ]
    return [
        "",
        f"**Overhead** (`{ov['run']}` on {ov['groups']} groups, run alone with {ov.get('threads')} torch "
        f"thread(s)): wall time of the run over the time of the same model calls made bare (same batch sizes "
        f"and counts, same process, after the run):",
        "",
        *_table(["part", "calls", "items", "bare s", "in the run s"], rows),
    ]


def _timed_overhead(ov: dict) -> list[str]:
    s, c = ov["in_run_seconds"], ov["counts"]
    rows = [
        ["denoiser (CFG evals)", c["denoiser_evals"], s["denoiser"]],
        ["decode (planned decodes)", c["decodes"], s["decode"]],
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
    reused = [r["name"] for r in res["runs"] if r.get("cached")]
    reused_text = (
        f" {len(reused)} of {len(res['runs'])} runs were complete from an earlier invocation and reused (their "
        "wall seconds and peak RSS are from when they ran)."
        if reused
        else ""
    )
    return [
        "",
        f"Benchmark wall time {res['bench_seconds'] / 60:.1f} min.{reused_text}{load_text} Regenerate with "
        "`make bench`.",
    ]


# --- queries_vs_hv.png ------------------------------------------------------------------------------------------
FAMILY_STYLE = {
    "none": ("grey", "x"),
    "single": ("black", "^"),
    "weighted_sum": ("tab:blue", "o"),
    "srsoup": ("tab:red", "s"),
    "srsoup_correction": ("tab:orange", "D"),
    "srsoup_adaptive": ("tab:purple", "P"),
    "best_of_n": ("tab:green", "v"),
}


def plot(res: dict, path: Path) -> None:
    """Reward queries per group vs hypervolume, one marker per method family; budget curves joined by lines.

    Runs far above the guided methods (best_of_n) would flatten everything else: the y axis stops at 1.3x the
    best guided run and such runs are drawn on the top edge with their value in the label.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.8), dpi=120)
    # Aliases (a budget run identical to another run) are the same point: plotted once.
    ok = [r for r in _complete(res) if not r.get("same_as")]
    guided = [r["hypervolume"] for r in ok if r["family"] != "best_of_n"]
    top = 1.3 * max(guided) if guided else None
    shown = {r["name"]: min(r["hypervolume"], 0.95 * top) if top else r["hypervolume"] for r in ok}
    xmax = max(r["reward_queries_per_group"] for r in ok) or 1
    labels = _scatter(ax, ok, shown)
    _annotate(ax, labels, xmax, (top or max(shown.values())) or 1)
    _budget_lines(ax, ok, shown, res["meta"]["srsoup_curves"], res["settings"]["candidates"])
    if top:
        ax.set_ylim(0, top)
    ax.set_xlabel("reward queries per prompt × seed group")
    ax.set_ylabel("hypervolume of the per-weight mean rewards")
    s = res["settings"]
    model = "embedded model" if _embedded(s) else s["model"]
    ax.set_title(
        f"{model}, colourfulness vs JPEG compressibility, T={s['steps']}, K={s['candidates']}, "
        f"{s['prompts']} prompts × {s['seeds']} seeds",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _scatter(ax, ok: list[dict], shown: dict[str, float]) -> dict[tuple, list[str]]:
    """One marker per run, styled by family; the labels of the points (coincident points share one)."""
    labels: dict[tuple, list[str]] = {}
    for family, (colour, marker) in FAMILY_STYLE.items():
        pts = [r for r in ok if r["family"] == family]
        if not pts:
            continue
        x = [r["reward_queries_per_group"] for r in pts]
        y = [shown[r["name"]] for r in pts]
        ax.scatter(x, y, c=colour, marker=marker, label=family, s=42, zorder=3, clip_on=False)
        for r in pts:
            name = r["name"].replace("srsoup_", "").replace("weighted_sum", "ws")
            if shown[r["name"]] < r["hypervolume"]:
                name += f" (HV {r['hypervolume']:.3g}, off scale)"
            key = (round(r["reward_queries_per_group"], 3), round(shown[r["name"]], 9))
            labels.setdefault(key, []).append(name)
    return labels


def _annotate(ax, labels: dict[tuple, list[str]], xmax: float, span: float) -> None:
    """Labels of nearby points stacked downwards instead of overlapping, joined to their point by a thin line."""
    placed: list[tuple[float, float]] = []
    for (x, y), names in sorted(labels.items(), key=lambda kv: -kv[0][1]):
        ly = y
        while any(abs(x - px) < 0.12 * xmax and abs(ly - py) < 0.03 * span for px, py in placed):
            ly -= 0.03 * span
        placed.append((x, ly))
        ax.annotate(
            " / ".join(names),
            (x, y),
            xytext=(x + 0.01 * xmax, ly + 0.008 * span),
            fontsize=6.5,
            arrowprops=dict(arrowstyle="-", lw=0.4, color="grey") if ly != y else None,
        )


def _budget_lines(ax, ok: list[dict], shown: dict[str, float], curves: list[str], k: int) -> None:
    """weighted_sum's, each srsoup window's and best_of_n's runs (at K and at budgets) joined in query order."""
    lines = [
        ("weighted_sum", "tab:blue", "-"),
        *[(c, "tab:red", ("-", "--")[i % 2]) for i, c in enumerate(curves)],
    ]
    for prefix, colour, style in [*lines, ("best_of_n", "tab:green", "-")]:
        series = sorted(
            [r for r in ok if r["name"].startswith(f"{prefix}_B") or r["name"] == prefix],
            key=lambda r: r["reward_queries_per_group"],
        )
        if len(series) < 2:
            continue
        label = f"{prefix}: budgets" if prefix == "best_of_n" else f"{prefix}: K={k} and budgets"
        x = [r["reward_queries_per_group"] for r in series]
        ax.plot(x, [shown[r["name"]] for r in series], c=colour, ls=style, lw=1, alpha=0.6, zorder=2, label=label)
