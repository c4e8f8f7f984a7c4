"""`srsoup bench`: every method at equal reward-query budgets, on a fixed yardstick; overhead and memory.

Stages: ``plan`` (a named setting's runs, deduplicated by fingerprint, and their budgets; ``--dry-run`` stops
here and prints the denoiser evals the setting will make), ``execute`` (each a resumable ``runner.run`` into
OUT/runs/<tag>/<name>, in its own child process so its peak RSS is its own), ``analyse`` (hypervolume of the
per-weight mean rewards normalised by the yardstick of the unguided and single-reward runs, ratios to
weighted_sum with paired bootstrap intervals, equal budgets, queries needed to reach weighted_sum's hypervolume,
memory, overhead) and ``render`` (OUT/results.md and OUT/queries_vs_hv.png, from OUT/results.json alone).

Overhead: the first srsoup variant's run at K once more, alone on the machine; its wall seconds over the seconds
it spent in model calls, as the timers beside its counters recorded them (summary.json ``timing``; target <= 1.10).
Memory: srsoup at two K (chunk_size 64 rows per model batch) in separate child processes; ratio of their peak RSS
(target <= 1.2).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import time
from pathlib import Path

from srsoup.bench.plan import (
    CI_LOW_TARGET,
    HV_TARGET,
    MEMORY_CHUNK,
    MEMORY_TARGET,
    OVERHEAD_TARGET,
    REWARDS,
    SETTINGS,
    VARIANTS,
    Plan,
    RunDef,
    Settings,
)

__all__ = ["main"]

EXAMPLES = """examples:
  srsoup bench                        the t20 setting (hours on 2 CPU cores), into bench/t20
  srsoup bench --setting paper --dry-run
                                      plan the paper-shaped setting and print how many denoiser evals it makes
  srsoup bench --setting paper --prompts 4 --seeds 1 --methods weighted_sum,srsoup
                                      a smaller paper-shaped run
  srsoup bench --variant 'k2:guidance.soup_end_step=<2/5 T>,guidance.soup_candidate_factor=2'
                                      one more srsoup variant (templates: <T>, <2/5 T>, <2K>, ...)
  srsoup bench --quick --out /tmp/b   a smoke run at toy sizes
  srsoup bench --quick --jobs 1 model=sd15 model.pretrained=DIR device=cuda
                                      another backbone or device (KEY=VALUE overrides go to every run;
                                      one job at a time, so that runs do not share the GPU)
  srsoup bench --render-only bench/t20
                                      results.md and the figure again from bench/t20/results.json
  srsoup bench --only best_of_n_B1600 --reuse bench/t20/results.json --out /tmp/t20
                                      one more run beside the committed ones (their run dirs not needed)
  srsoup bench --merge bench/t20_s23 --merge bench/t20_s45 --out bench/t20_s2345
                                      two shards of a setting (seeds 2, 3 and 4, 5) as one benchmark
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # One line, no usage block: the contract for bad input across srsoup's commands.
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="srsoup bench",
        description="Every method at equal reward-query budgets on the embedded model (or, with overrides, "
        "another backbone or device): hypervolume on a fixed yardstick with paired bootstrap intervals, queries "
        "needed to reach weighted_sum's hypervolume, overhead and memory. Every configuration is a real, "
        "resumable run in a child process of its own; writes OUT/results.json, OUT/results.md and "
        "OUT/queries_vs_hv.png.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Hydra overrides appended to every run's")
    p.add_argument("--setting", choices=[n for n in SETTINGS if n != "quick"], default="t20", help="default t20")
    p.add_argument(
        "--quick", action="store_true", help="toy sizes for a smoke run: " + json.dumps(SETTINGS["quick"])
    )
    p.add_argument(
        "--dry-run", action="store_true", help="plan, print the runs and their denoiser evals, run nothing"
    )
    _size_options(p)
    p.add_argument("--out", type=Path, help="output folder (default bench/SETTING, or DIR of --render-only)")
    p.add_argument(
        "--only",
        metavar="NAME,...",
        help="comma-separated run names to run (debugging; weighted_sum, none and single always run)",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run every configuration in this process (fast; no per-run peak RSS, no memory runs)",
    )
    p.add_argument("--profile", action="store_true", help="cProfile the overhead run also with --quick")
    p.add_argument("--jobs", type=int, metavar="N", help="child processes at a time (default: the usable cores)")
    p.add_argument(
        "--threads", type=int, metavar="N", help="torch threads per child (default: usable cores // jobs)"
    )
    p.add_argument(
        "--render-only", type=Path, metavar="DIR", help="re-render DIR/results.json into --out (or DIR)"
    )
    p.add_argument(
        "--reanalyse",
        action="store_true",
        help="with --render-only: compute the analysis again from the runs' per-group rewards with this version "
        "(yardstick, ratios, intervals, tables) and write results.json too",
    )
    p.add_argument(
        "--merge",
        type=Path,
        action="append",
        metavar="DIR",
        help="repeatable: merge the results.json of DIR and the other --merge folders, shards of one setting over "
        "different prompts or seeds, into --out (the analysis again over all their groups; runs nothing)",
    )
    p.add_argument(
        "--reuse",
        type=Path,
        metavar="FILE",
        help="take the complete runs of an earlier results.json (e.g. the committed bench/t20/results.json) "
        "instead of running them again: same name and overrides, run dir under OUT not complete; every ratio "
        "and interval comes out as if they had run together (memory and overhead are always measured)",
    )
    return p


def _size_options(p: argparse.ArgumentParser) -> None:
    t, q = SETTINGS["t20"], SETTINGS["paper"]

    def default(key: str) -> str:
        return f"(t20 {t[key] if t[key] != '' else 'none'}, paper {q[key] if q[key] != '' else 'none'})"

    p.add_argument("--steps", type=int, metavar="T", help=f"denoising steps T {default('steps')}")
    p.add_argument(
        "--candidates", type=int, metavar="K", help=f"weighted_sum's main K, srsoup's at K {default('candidates')}"
    )
    p.add_argument("--seeds", type=int, metavar="N", help=f"number of seeds, 0..N-1 {default('seeds')}")
    p.add_argument(
        "--prompts", type=int, metavar="N", help=f"first N of the 12 bench prompts {default('prompts')}"
    )
    p.add_argument(
        "--budget-ks",
        metavar="K,...",
        help=f"equal budgets: weighted_sum's reward queries at these K {default('budget_ks')}",
    )
    p.add_argument(
        "--low-budgets",
        metavar="F,...",
        help="srsoup variants also at these fractions of weighted_sum's queries at K, where they fit "
        f"{default('low_budgets')}",
    )
    p.add_argument(
        "--methods",
        metavar="NAME,...",
        help="methods with a budget curve (weighted_sum always; default all: "
        "weighted_sum,srsoup,select,fk,best_of_n)",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE,...",
        help="an srsoup variant (repeatable; replaces one of the same name); <T>, <2/5 T>, <2K>, ... in a value "
        f"are templates over T and the run's K; the settings' variants: {json.dumps(VARIANTS)}",
    )
    p.add_argument("--variants", metavar="NAME,...", help="run only these srsoup variants (default all)")
    p.add_argument(
        "--mem-candidates", metavar="K,...", help=f"memory runs: K values, '' for none {default('mem_candidates')}"
    )
    p.add_argument("--mem-steps", type=int, metavar="T", help=f"memory runs: steps {default('mem_steps')}")
    p.add_argument(
        "--overhead",
        action=argparse.BooleanOptionalAction,
        help=f"measure the overhead (the first variant's run at K once more, alone) {default('overhead')}",
    )


def parse_args(argv: list[str]) -> tuple[Settings, argparse.Namespace]:
    """The settings of what to measure, and how to run it (jobs, threads, output folder, ...)."""
    from srsoup.bench.execute import usable_cores
    from srsoup.bench.plan import parse_variant

    parser = _parser()
    args = parser.parse_intermixed_args(argv)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        parser.error(f"{bad[0]!r} is not a KEY=VALUE override")
    variants = dict(VARIANTS)
    try:
        variants.update(parse_variant(v) for v in args.variant)
    except ValueError as err:
        parser.error(str(err))
    if args.variants is not None:
        chosen = [v for v in args.variants.split(",") if v]
        unknown = [v for v in chosen if v not in variants]
        if unknown:
            parser.error(f"--variants {unknown[0]!r} is not a variant; valid: {', '.join(variants)}")
        variants = {v: variants[v] for v in chosen}
    keys = ("steps", "candidates", "seeds", "prompts", "budget_ks", "low_budgets", "methods")
    sizes = {k: getattr(args, k) for k in (*keys, "mem_candidates", "mem_steps", "overhead")}
    args.setting = "quick" if args.quick else args.setting
    settings = Settings.of(args.setting, overrides=list(args.overrides), variants=variants, **sizes)
    args.jobs = args.jobs or usable_cores()
    args.threads = args.threads or max(1, usable_cores() // args.jobs)
    return settings, args


def main(argv: list[str] | None = None) -> int:
    """Entry point of `srsoup bench`; returns the exit code (2 on bad input)."""
    from hydra.errors import HydraException

    from srsoup.errors import SrsoupError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        settings, args = parse_args(argv)
    except SystemExit as exit_:  # the parser printed its one-line error (or --help)
        return int(exit_.code or 0)
    args.command = shown_command(argv)
    try:
        if args.render_only:
            return render_only(args.render_only, args.out or args.render_only, args.reanalyse)
        if args.merge:
            return merge_shards(args.merge, args.out, args.command)
        args.out = args.out or Path("bench") / settings.name
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        return run_bench(settings, args)
    except (SrsoupError, HydraException) as err:
        print(f"srsoup bench: error: {err}".splitlines()[0], file=sys.stderr)
        return 2


def shown_command(argv: list[str]) -> str:
    """The command line as results.md gives it to regenerate the results: paths (an argument or an override's
    value) relative to the working directory when inside it, so that no machine path is written."""
    from srsoup.bench.reuse import shown_path

    def shown(arg: str) -> str:
        key, eq, value = arg.partition("=") if "=" in arg else ("", "", arg)
        return f"{key}{eq}{shown_path(Path(value))}" if os.path.isabs(value) else arg

    return shlex.join(["srsoup", "bench", *map(shown, argv)])


def run_bench(s: Settings, args: argparse.Namespace) -> int:
    """Plan and print the plan's cost; unless a dry run: run every configuration, measure the overhead, analyse,
    and write the three outputs."""
    from srsoup.bench.analyse import analyse, memory_figures
    from srsoup.bench.execute import loadavg, run_all, run_tag
    from srsoup.bench.plan import bench_prompts, plan_runs, planned_totals
    from srsoup.bench.reuse import load_reusable, matching

    start, load_start = time.time(), loadavg()
    prompts, seeds = bench_prompts(s.prompts), list(range(s.seeds))
    plan = plan_runs(s, prompts, seeds, set(args.only.split(",")) if args.only else None)
    earlier = load_reusable(args.reuse, FORMAT) if args.reuse else None
    if args.in_process:
        plan.mem_runs = []  # in one process, peak RSS means nothing
    texts, seed_values = ran_groups(s, prompts, seeds)
    groups = len(texts) * len(seed_values)
    profile = args.profile or not s.quick
    totals = planned_totals(plan, groups, (groups + (len(seed_values) if profile else 0)) if s.overhead else 0)
    runs_dir = args.out / "runs" / run_tag(s, prompts, seeds)
    reused = matching(plan.runs, plan.plans, runs_dir, *earlier) if earlier else {}
    print_plan(s, plan, totals, reused)
    if earlier:
        names = ", ".join(reused) or "none"
        print(f"bench: {len(reused)} runs taken from {args.reuse} ({len(earlier[0])} reusable there): {names}")
    if args.dry_run:
        return 0
    runs_dir.mkdir(parents=True, exist_ok=True)
    print(f"bench: {len(plan.runs) + len(plan.mem_runs)} runs into {runs_dir}")
    jobs = [
        rd
        for rd in [*plan.runs, *plan.mem_runs]
        if not (rd.error or rd.same_as or rd.derived_from) and rd.name not in reused
    ]
    sides = run_all(jobs, runs_dir, plan.plans, groups, args.in_process, args.jobs, args.threads)
    records = _records(plan.runs, runs_dir, sides, plan.plans, reused)
    figures = {
        "analysis": analyse(records, plan.meta),
        "runs": records,
        **measure_overhead(s, plan, runs_dir, args, prompts[0], profile),
        "memory": memory_figures(_records(plan.mem_runs, runs_dir, sides, plan.plans)),
    }
    settings = _settings(s, args, texts, seed_values, records, runs_dir)
    res = _results(figures, settings, plan, totals)
    res.update(
        bench_seconds=time.time() - start, loadavg={"start": load_start, "end": loadavg()}, command=args.command
    )
    write_outputs(res, args.out)
    return 0


def print_plan(s: Settings, plan: Plan, totals: dict, reused: dict) -> None:
    """Each planned run (size, queries and evals per group; a run identical to another, picked from another's
    samples or taken from ``--reuse`` marked) and the totals, and what is left to run when runs are taken."""
    print(f"bench --setting {s.name}: T={s.steps}, K={s.candidates}, {totals['groups']} prompt x seed groups")
    print(f"  {'run':<34} {'size':>13} {'queries/group':>13} {'evals/group':>11}")
    for rd in [*plan.runs, *plan.mem_runs]:
        p = plan.plans.get(rd.name)
        if p is None:
            print(f"  {rd.name:<34} not planned: {rd.error}")
            continue
        size = "–" if rd.params.get("size") is None else f"{rd.params['size_label']}={rd.params['size']}"
        same = f"  (= {rd.same_as})" if rd.same_as else ""
        if rd.name in reused or rd.same_as in reused:
            same += "  (taken from --reuse)"
        elif rd.derived_from:
            same += f"  (first {rd.params['size']} samples of {rd.derived_from})"
        print(f"  {rd.name:<34} {size:>13} {p['reward_queries']:>13} {p['denoiser_evals']:>11}{same}")
    for skip in plan.meta["skipped"]:
        print(f"  {skip['name']:<34} left out: {skip['why']}")
    for family, f in totals["by_family"].items():
        evals, queries = f"{f['denoiser_evals']:,}", f"{f['reward_queries']:,}"
        print(f"  {family:<14} {f['runs']:>3} runs {evals:>12} denoiser evals {queries:>12} reward queries")
    t = totals["total"]
    print(f"planned in all: {t['denoiser_evals']:,} denoiser evals and {t['reward_queries']:,} reward queries")
    if reused:
        taken = sum(
            plan.plans[rd.name]["denoiser_evals"] * totals["groups"]
            for rd in plan.runs
            if rd.name in reused and not (rd.same_as or rd.derived_from)
        )
        print(f"to run here: {t['denoiser_evals'] - taken:,} denoiser evals (the runs marked taken need none)")


def _records(
    runs: list[RunDef], runs_dir: Path, sides: dict, plans: dict, reused: dict[str, dict] | None = None
) -> list[dict]:
    from srsoup.bench.analyse import derived_figures, run_figures, run_meta

    records, reused, by_name = [], reused or {}, {rd.name: rd for rd in runs}
    for rd in runs:
        src = rd.same_as or rd.name
        if src in reused:
            rec = {**reused[src], **run_meta(rd)}
        elif rd.derived_from:
            pool = by_name[rd.derived_from]
            rec = derived_figures(rd, pool, runs_dir / pool.name, plans.get(rd.name))
        else:
            rec = run_figures(rd, runs_dir / src, sides.get(src, {}), plans.get(rd.name))
        if rd.same_as:
            rec["same_as"] = rd.same_as
        records.append(rec)
    return records


def measure_overhead(
    s: Settings, plan: Plan, runs_dir: Path, args: argparse.Namespace, prompt: str, profile: bool
) -> dict:
    """The overhead run, alone with torch's threads on every core the jobs had (as a plain `srsoup run` would),
    and, when ``profile``, a cProfile of its configuration on one prompt."""
    from srsoup.bench.analyse import overhead_figures
    from srsoup.bench.execute import launch, progress
    from srsoup.bench.plan import overhead_run, quote_list

    probe = overhead_run(plan) if s.overhead else None
    out = {"overhead": None, "overhead_error": None, "profile": None}
    if probe is None:
        return out
    threads, name, start = args.jobs * args.threads, probe.name.removeprefix("overhead_"), time.time()
    side = launch(probe, runs_dir, args.in_process, threads=threads)
    progress(probe.name, side, start)
    if side.get("error"):
        return {**out, "overhead_error": side["error"]}
    out["overhead"] = overhead_figures(name, runs_dir / probe.name, side, plan.plans[name])
    # At --quick sizes the ratio is dominated by fixed costs: profile only when asked.
    if profile:
        one = RunDef(name, probe.family, [*probe.overrides, f"prompts.texts={quote_list([prompt])}"])
        txt = runs_dir / f"profile_{name}.txt"
        out["profile"] = launch(one, runs_dir, args.in_process, threads=threads, profile=txt).get("profile")
    return out


#: results.json's format: 2 since the yardstick and equal budgets for every method (1, unnumbered, before).
FORMAT = 2


def _results(figures: dict, settings: dict, plan: Plan, totals: dict) -> dict:
    """results.json: the figures with the machine, settings, plan, targets and meta they were measured under."""
    from srsoup.bench.execute import machine

    return {
        "format": FORMAT,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": settings,
        "meta": plan.meta,
        "planned": totals,
        "targets": {
            "hv_ratio": HV_TARGET,
            "ci_low": CI_LOW_TARGET,
            "overhead": OVERHEAD_TARGET,
            "memory": MEMORY_TARGET,
        },
        "peak_rss_method": "VmHWM of each child process (/proc/self/status), read at the end of its run",
        **figures,
    }


def ran_groups(s: Settings, prompts: list[str], seeds: list[int]) -> tuple[list[str], list[int]]:
    """The prompts and seeds the runs get: the setting's, unless the user's overrides (`'seeds=[2,3]'`,
    `prompts.texts=[...]`) replace them, which they do after every run's own (so the run dirs stay as planned)."""
    from srsoup.bench.plan import base_overrides, compose

    cfg = compose([*base_overrides(s, prompts, seeds), *s.overrides])
    return list(cfg.prompts.get("texts") or prompts), [int(x) for x in cfg.seeds]


def _settings(s: Settings, args, prompts, seeds, records: list[dict], runs_dir: Path) -> dict:
    return {
        "setting": s.name,
        "steps": s.steps,
        "candidates": s.candidates,
        "seeds": len(seeds),
        "prompts": len(prompts),
        "prompt_texts": prompts,
        "seed_values": seeds,
        "rewards": list(REWARDS),
        "weights": next((r["weights"] for r in records if r.get("name") == "weighted_sum" and "weights" in r), []),
        "budget_ks": s.budget_ks,
        "low_budgets": s.low_budgets,
        "methods": s.methods,
        "srsoup_variants": s.variants,
        "memory": {"candidates": s.mem_candidates, "steps": s.mem_steps, "chunk_size": MEMORY_CHUNK},
        "model": _model_name(s.overrides),
        "overrides": s.overrides,
        "in_process": args.in_process,
        "jobs": 1 if args.in_process else args.jobs,
        "threads_per_job": None if args.in_process else args.threads,
        "run_dirs": str(runs_dir.relative_to(args.out)) if runs_dir.is_relative_to(args.out) else str(runs_dir),
    }


def _model_name(overrides: list[str]) -> str:
    from srsoup.bench.plan import compose

    model = compose(overrides).model
    if model.name == "tiny" and model.get("pretrained") is None:
        return "tiny (embedded)"
    return f"{model.name} ({model.get('pretrained')})"


def write_outputs(res: dict, out: Path) -> None:
    """OUT/results.json, OUT/results.md and OUT/queries_vs_hv.png; prints the tables."""
    from srsoup.bench.render import markdown, plot
    from srsoup.bench.reuse import stored

    for rec in res["runs"]:  # the per-group rewards stay: what `--reuse` needs of a run
        if "_groups" in rec:
            rec["group_points"] = stored(rec.pop("_groups"))
    for rec in res["memory"].get("runs", []):
        rec.pop("_groups", None)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1, default=_jsonable) + "\n")
    md = markdown(res)
    (out / "results.md").write_text(md)
    plot(res, out / "queries_vs_hv.png")
    print(md)


def render_only(source: Path, out: Path | None = None, reanalyse: bool = False) -> int:
    """results.md and queries_vs_hv.png again from SOURCE/results.json (into ``out``, default SOURCE); with
    ``reanalyse``, the analysis again from the stored groups first, and results.json too."""
    from srsoup.bench.render import markdown, plot
    from srsoup.errors import SrsoupError

    if not (source / "results.json").is_file():
        raise SrsoupError(f"--render-only {source}: no results.json there")
    res = json.loads((source / "results.json").read_text())
    if res.get("format") != FORMAT:
        raise SrsoupError(
            f"--render-only {source}: results.json is of format {res.get('format', 1)}; this srsoup bench renders "
            f"format {FORMAT} (run `srsoup bench` again; the results.md beside it stands as written)"
        )
    out = out or source
    if reanalyse:
        write_outputs(reanalysed(res, source), out)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(markdown(res))
    plot(res, out / "queries_vs_hv.png")
    print(f"wrote {out / 'results.md'} and {out / 'queries_vs_hv.png'}")
    return 0


def merge_shards(sources: list[Path], out: Path | None, command: str) -> int:
    """``--merge``: the shards' results.json as one benchmark in ``out``."""
    from srsoup.bench.merge import merged_results
    from srsoup.errors import SrsoupError

    if out is None:
        raise SrsoupError("--merge needs --out DIR (where the merged results go)")
    write_outputs({**merged_results(sources, FORMAT), "command": command}, out)
    return 0


def reanalysed(res: dict, source: Path) -> dict:
    """``res`` with its analysis computed again by this version from the runs' ``group_points``."""
    from srsoup.bench.analyse import analyse
    from srsoup.bench.reuse import regrouped
    from srsoup.errors import SrsoupError

    runs = [regrouped(r) for r in res["runs"]]
    bare = [r["name"] for r in runs if r.get("status") == "complete" and "_groups" not in r]
    if bare:
        raise SrsoupError(
            f"--reanalyse {source}: no group_points for {', '.join(bare)} (run `srsoup bench` again)"
        )
    resamples = res.get("analysis", {}).get("bootstrap", {}).get("resamples", 1000)
    return {**res, "runs": runs, "analysis": analyse(runs, res["meta"], resamples)}


def _jsonable(v):
    return v.item() if hasattr(v, "item") else str(v)
