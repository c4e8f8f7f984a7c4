"""`srsoup bench`: query efficiency, overhead and memory of srsoup's methods, every configuration a real run.

Stages: ``plan`` (the runs, deduplicated by fingerprint, and their budgets), ``execute`` (each a resumable
``runner.run`` into OUT/runs/<tag>/<name>, in its own child process so its peak RSS is its own), ``analyse``
(hypervolume of the per-weight mean rewards against ONE reference point shared by all runs, ratios to
weighted_sum with paired bootstrap intervals, equal budgets, where the target is reached, memory, overhead) and
``render`` (OUT/results.md and OUT/queries_vs_hv.png, from OUT/results.json alone).

Overhead: the srsoup run at 2/5 of T once more, alone on the machine; its wall seconds over the seconds it spent in
model calls, as the timers beside its counters recorded them (summary.json ``timing``; target <= 1.10).
Memory: srsoup at two K (chunk_size 64 rows per model batch) in separate child processes; ratio of their peak RSS
(target <= 1.2).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

from srsoup.bench.plan import (
    FULL,
    HV_TARGET,
    MEMORY_CHUNK,
    MEMORY_TARGET,
    OVERHEAD_TARGET,
    QUICK,
    REWARDS,
    SOUP_FRACTIONS,
    Plan,
    RunDef,
    Settings,
)

__all__ = ["main"]

EXAMPLES = """examples:
  srsoup bench                        the full benchmark (about 25 minutes on 2 CPU cores), into bench/
  srsoup bench --quick --out /tmp/b   a smoke run at toy sizes
  srsoup bench --quick --jobs 1 model=sd15 model.pretrained=DIR device=cuda
                                      another backbone or device (KEY=VALUE overrides go to every run;
                                      one job at a time, so that runs do not share the GPU)
  srsoup bench --render-only bench    bench/results.md and the figure again from bench/results.json
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # One line, no usage block: the contract for bad input across srsoup's commands.
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="srsoup bench",
        description="Query efficiency, overhead and memory of srsoup's methods on the embedded model (or, with "
        "overrides, another backbone or device). Every configuration is a real, resumable run in a child process "
        "of its own; writes OUT/results.json, OUT/results.md and OUT/queries_vs_hv.png.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Hydra overrides appended to every run's")
    p.add_argument("--quick", action="store_true", help="toy sizes for a smoke run: " + json.dumps(QUICK))
    _size_options(p)
    p.add_argument(
        "--out", type=Path, help="output folder (default bench, or DIR of --render-only); runs: OUT/runs/"
    )
    p.add_argument(
        "--only",
        metavar="NAME,...",
        help="comma-separated run names to run (debugging; the tables cover only these)",
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
    return p


def _size_options(p: argparse.ArgumentParser) -> None:
    f = FULL
    p.add_argument("--steps", type=int, metavar="T", help=f"denoising steps T (default {f['steps']})")
    p.add_argument(
        "--candidates",
        type=int,
        metavar="K",
        help=f"K candidates per guided chain and step (default {f['candidates']})",
    )
    p.add_argument("--seeds", type=int, metavar="N", help=f"number of seeds, 0..N-1 (default {f['seeds']})")
    p.add_argument(
        "--prompts", type=int, metavar="N", help=f"number of prompts, first N of 8 (default {f['prompts']})"
    )
    p.add_argument(
        "--budget-ks",
        metavar="K,...",
        help=f"equal budgets: weighted_sum's queries at these K (default {f['budget_ks']})",
    )
    p.add_argument(
        "--full-soup-budgets",
        metavar="F,...",
        help="srsoup with the whole chain in the soup window also at these fractions of weighted_sum's queries at "
        f"K (default {f['full_soup_budgets']})",
    )
    p.add_argument(
        "--bon-ks", metavar="K,...", help=f"best_of_n at the budgets of these K (default {f['bon_ks']})"
    )
    p.add_argument(
        "--thresholds",
        metavar="X,...",
        help=f"switch_threshold values of switch=adaptive (default {f['thresholds']})",
    )
    p.add_argument(
        "--adaptive-end",
        type=float,
        metavar="F",
        help="switch=adaptive: the soup window ends by this fraction of T (default 0.6)",
    )
    p.add_argument(
        "--mem-candidates", metavar="K,...", help=f"memory runs: K values (default {f['mem_candidates']})"
    )
    p.add_argument("--mem-steps", type=int, metavar="T", help=f"memory runs: steps (default {f['mem_steps']})")


def parse_args(argv: list[str]) -> tuple[Settings, argparse.Namespace]:
    """The settings of what to measure, and how to run it (jobs, threads, output folder, ...)."""
    from srsoup.bench.execute import usable_cores

    parser = _parser()
    args = parser.parse_intermixed_args(argv)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        parser.error(f"{bad[0]!r} is not a KEY=VALUE override")
    sizes = {k: getattr(args, k) for k in (*FULL, "adaptive_end")}
    settings = Settings.of(args.quick, overrides=list(args.overrides), **sizes)
    args.jobs = args.jobs or usable_cores()
    args.threads = args.threads or max(1, usable_cores() // args.jobs)
    return settings, args


def main(argv: list[str] | None = None) -> int:
    """Entry point of `srsoup bench`; returns the exit code (2 on bad input)."""
    from hydra.errors import HydraException

    from srsoup.errors import SrsoupError

    try:
        settings, args = parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_:  # the parser printed its one-line error (or --help)
        return int(exit_.code or 0)
    try:
        if args.render_only:
            return render_only(args.render_only, args.out or args.render_only)
        args.out = args.out or Path("bench")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        return run_bench(settings, args)
    except (SrsoupError, HydraException) as err:
        print(f"srsoup bench: error: {err}".splitlines()[0], file=sys.stderr)
        return 2


def run_bench(s: Settings, args: argparse.Namespace) -> int:
    """Plan, run every configuration, measure the overhead, analyse, and write the three outputs."""
    from srsoup.bench.analyse import analyse, memory_figures
    from srsoup.bench.execute import loadavg, run_all, run_tag
    from srsoup.bench.plan import bench_prompts, plan_runs

    start, load_start = time.time(), loadavg()
    prompts, seeds = bench_prompts(s.prompts, s.overrides), list(range(s.seeds))
    plan = plan_runs(s, prompts, seeds, set(args.only.split(",")) if args.only else None)
    plan.meta["K"] = s.candidates
    if args.in_process:
        plan.mem_runs = []  # in one process, peak RSS means nothing
    runs_dir = args.out / "runs" / run_tag(s)
    runs_dir.mkdir(parents=True, exist_ok=True)
    print(f"bench: {len(plan.runs) + len(plan.mem_runs)} runs into {runs_dir}")
    jobs = [rd for rd in [*plan.runs, *plan.mem_runs] if not rd.error and not rd.same_as]
    groups = len(prompts) * len(seeds)
    sides = run_all(jobs, runs_dir, plan.plans, groups, args.in_process, args.jobs, args.threads)
    records = _records(plan.runs, runs_dir, sides, plan.plans)
    figures = {
        "analysis": analyse(records, plan.meta),
        "runs": records,
        **measure_overhead(s, plan, runs_dir, args, prompts[0]),
        "memory": memory_figures(_records(plan.mem_runs, runs_dir, sides, plan.plans)),
    }
    settings = _settings(s, args, plan, prompts, seeds, records, runs_dir)
    res = _results(figures, settings, plan)
    res.update(bench_seconds=time.time() - start, loadavg={"start": load_start, "end": loadavg()})
    write_outputs(res, args.out)
    return 0


def _records(runs: list[RunDef], runs_dir: Path, sides: dict, plans: dict) -> list[dict]:
    from srsoup.bench.analyse import run_figures

    records = []
    for rd in runs:
        src = rd.same_as or rd.name
        rec = run_figures(rd, runs_dir / src, sides.get(src, {}), plans.get(rd.name))
        if rd.same_as:
            rec["same_as"] = rd.same_as
        records.append(rec)
    return records


def measure_overhead(s: Settings, plan: Plan, runs_dir: Path, args: argparse.Namespace, prompt: str) -> dict:
    """The overhead run, alone with torch's threads on every core the jobs had (as a plain `srsoup run` would),
    and, on the full benchmark or when asked, a cProfile of its configuration on one prompt."""
    from srsoup.bench.analyse import overhead_figures
    from srsoup.bench.execute import launch, progress
    from srsoup.bench.plan import overhead_run, quote_list

    probe = overhead_run(plan)
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
    if args.profile or not s.quick:
        one = RunDef(name, probe.family, [*probe.overrides, f"prompts.texts={quote_list([prompt])}"])
        txt = runs_dir / f"profile_{name}.txt"
        out["profile"] = launch(one, runs_dir, args.in_process, threads=threads, profile=txt).get("profile")
    return out


def _results(figures: dict, settings: dict, plan: Plan) -> dict:
    """results.json: the figures with the machine, settings, targets and meta they were measured under."""
    from srsoup.bench.execute import machine

    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": settings,
        "meta": plan.meta,
        "targets": {"hv_ratio_reach": HV_TARGET, "overhead": OVERHEAD_TARGET, "memory": MEMORY_TARGET},
        "peak_rss_method": "VmHWM of each child process (/proc/self/status), read at the end of its run",
        **figures,
    }


def _settings(s: Settings, args, plan: Plan, prompts, seeds, records: list[dict], runs_dir: Path) -> dict:
    return {
        "steps": s.steps,
        "candidates": s.candidates,
        "seeds": s.seeds,
        "prompts": s.prompts,
        "prompt_texts": prompts,
        "seed_values": seeds,
        "rewards": list(REWARDS),
        "weights": next((r["weights"] for r in records if r.get("method") == "weighted_sum"), []),
        "soup_end_fractions": list(SOUP_FRACTIONS),
        "budget_ks": s.budget_ks,
        "budgets": plan.meta["budgets"],
        "full_soup_budgets": plan.meta["full_soup_budgets"],
        "best_of_n_budget_ks": s.bon_ks,
        "adaptive_thresholds": s.thresholds,
        "adaptive_soup_end_step": plan.meta["adaptive_soup_end"],
        "memory": {"candidates": s.mem_candidates, "steps": s.mem_steps, "chunk_size": MEMORY_CHUNK},
        "model": _model_name(s.overrides),
        "overrides": s.overrides,
        "quick": s.quick,
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

    for rec in [*res["runs"], *res["memory"].get("runs", [])]:
        rec.pop("_groups", None)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1, default=_jsonable) + "\n")
    md = markdown(res)
    (out / "results.md").write_text(md)
    plot(res, out / "queries_vs_hv.png")
    print(md)


def render_only(source: Path, out: Path | None = None) -> int:
    """results.md and queries_vs_hv.png again from SOURCE/results.json (into ``out``, default SOURCE)."""
    from srsoup.bench.render import markdown, plot
    from srsoup.errors import SrsoupError

    if not (source / "results.json").is_file():
        raise SrsoupError(f"--render-only {source}: no results.json there")
    res = json.loads((source / "results.json").read_text())
    out = out or source
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(markdown(res))
    plot(res, out / "queries_vs_hv.png")
    print(f"wrote {out / 'results.md'} and {out / 'queries_vs_hv.png'}")
    return 0


def _jsonable(v):
    return v.item() if hasattr(v, "item") else str(v)
