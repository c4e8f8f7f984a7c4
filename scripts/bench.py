"""Query-efficiency, overhead and memory benchmark of srsoup on the embedded model (GitHub issue 8).

Every configuration is a real run, ``srsoup.runner.run(cfg, bench/runs/<tag>/<name>)`` (resumable), made in its
own child process so its peak memory is its own. From the run dirs it computes reward queries, denoiser evals,
wall seconds and the hypervolume of the per-weight mean rewards against ONE reference point shared by all runs
(per-reward minimum over all runs' points minus 5% of the range), then writes bench/results.json,
bench/results.md and bench/queries_vs_hv.png and prints the tables.

Overhead: the srsoup run at 2/5 of T records the sizes of every CFG denoiser call, decode and reward call it
makes; afterwards, in the same process, the same calls are replayed bare (UNet forward of the CFG batch, decode,
reward function) and timed; wall / bare model time is the overhead ratio (target <= 1.10).
Memory: srsoup at K=64 and K=8 (chunk_size 64 rows per model batch) in separate child processes; ratio of peak
RSS (target <= 1.2).

    python scripts/bench.py                 # the full benchmark (about 25 minutes on 2 CPU cores)
    python scripts/bench.py --quick         # a smoke run at toy sizes
    python scripts/bench.py --model-path DIR --out /tmp/b --quick --in-process   # what tests/test_bench.py does
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import functools
import hashlib
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Four more prompts of the embedded grammar, all seen combinations in training (none of grammar.HELD_OUT).
EXTRA_PROMPTS = (
    "a green triangle on a white background",
    "a small orange square at the left on a black background",
    "a big purple circle on a yellow background",
    "a white triangle at the bottom on a red background",
)
REWARDS = ("colorfulness", "jpeg_compressibility")
SOUP_FRACTIONS = (1 / 5, 2 / 5, 1 / 2, 3 / 5, 4 / 5, 1)  # 4/5 and 1 (the whole chain) go past the paper's windows
MAIN_FRACTION = 2 / 5
HV_TARGET = 0.97  # "reaches weighted_sum's hypervolume" means >= 0.97x of it
QUERY_TARGET = 0.50  # ... with at most this fraction of its reward queries
OVERHEAD_TARGET = 1.10
MEMORY_TARGET = 1.2
BIG_K = 4096  # budget runs start from this K so that budget=fit always lowers it to what the budget allows

# Sized for about 25 minutes on 2 CPU cores: one CFG denoiser eval of the embedded model costs 30-60 ms on one
# core (fp32, depending on what else runs) and the benchmark makes ~87k of them, two child processes at a time.
# Larger settings (--steps 30 --candidates 8) need a faster machine.
FULL = dict(
    steps=10,
    candidates=4,
    seeds=2,
    prompts=8,
    budget_ks="2,3,4",
    full_soup_budgets="0.3,0.4",
    bon_ks="2",
    # At T=8-10 a mixed chain's Bhattacharyya coefficient to the anchors it weighs falls from 1 to about 0.6-0.8
    # over the first 6 steps (it is a per-step quantity: lower thresholds bind at larger T).
    thresholds="0.8,0.7",
    mem_candidates="8,64",
    mem_steps=5,
)
QUICK = dict(
    steps=5,
    candidates=4,
    seeds=1,
    prompts=1,
    budget_ks="2,4",
    full_soup_budgets="0.6",
    bon_ks="2,4",
    thresholds="0.9",
    mem_candidates="4,16",
    mem_steps=3,
)


# --- configuration ------------------------------------------------------------------------------------------
def compose(overrides: list[str]):
    """The run config exactly as ``srsoup run`` composes it, with these overrides (a copy: callers may keep it)."""
    return copy.deepcopy(_compose(tuple(overrides)))


@functools.cache
def _compose(overrides: tuple[str, ...]):
    # Hydra composition takes about half a second; planning and in-process runs compose each config twice.
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from srsoup.config import register_configs

    register_configs()
    with initialize_config_module("srsoup.conf", version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


@dataclass
class RunDef:
    """One benchmark configuration: a name, the Hydra overrides and what it varies (for the tables)."""

    name: str
    family: str  # none | single | weighted_sum | srsoup | srsoup_correction | srsoup_adaptive | best_of_n
    overrides: list[str]
    params: dict = field(default_factory=dict)
    budget: int | None = None
    instrument: bool = False
    same_as: str | None = None  # an earlier run with the identical plan and fingerprint: not run again
    error: str | None = None  # why it could not be planned (reported, not fatal)


def soup_end(steps: int, fraction: float) -> int:
    return max(1, int(fraction * steps + 0.5))


def quote_list(values) -> str:
    return "[" + ",".join(f"'{v}'" for v in values) + "]"


def base_overrides(args, prompts: list[str], seeds: list[int]) -> list[str]:
    out = [
        f"sampler.steps={args.steps}",
        f"seeds=[{','.join(map(str, seeds))}]",
        f"prompts.texts={quote_list(prompts)}",
        "rewards=colorful_compress",
        "weights=default",
        "progress=false",
        "device=cpu",
        "dtype=fp32",
    ]
    if args.model_path:
        out.append(f"model.pretrained={args.model_path}")
    return out


def plan_runs(args, prompts: list[str], seeds: list[int]) -> tuple[list[RunDef], list[RunDef], dict]:
    """The benchmark's runs and memory runs, deduplicated by fingerprint; budgets in reward queries per group."""
    from srsoup import runner
    from srsoup.errors import SrsoupError
    from srsoup.guidance import METHODS

    base = base_overrides(args, prompts, seeds)
    t, k = args.steps, args.candidates
    main_end = soup_end(t, MAIN_FRACTION)
    kk = f"guidance.num_candidates={k}"
    srs = ["guidance=srsoup", kk]
    runs = [RunDef("none", "none", ["guidance=none"])]
    runs += [
        RunDef(f"single_{r}", "single", ["guidance=single", kk, f"guidance.reward={r}"], {"K": k, "reward": r})
        for r in REWARDS
    ]
    runs.append(RunDef("weighted_sum", "weighted_sum", ["guidance=weighted_sum", kk], {"K": k}))
    ends = {}
    for frac in SOUP_FRACTIONS:
        ends.setdefault(soup_end(t, frac), frac)  # small T can map two fractions to one step: run it once
    for end, frac in ends.items():
        runs.append(
            RunDef(
                f"srsoup_end{end}",
                "srsoup",
                [*srs, f"guidance.soup_end_step={end}"],
                {"K": k, "soup_end_step": end, "fraction": round(frac, 3), "mean_correction": "reference"},
            )
        )
    for corr in ("exact", "off"):
        runs.append(
            RunDef(
                f"srsoup_end{main_end}_{corr}",
                "srsoup_correction",
                [*srs, f"guidance.soup_end_step={main_end}", f"guidance.mean_correction={corr}"],
                {"K": k, "soup_end_step": main_end, "mean_correction": corr},
            )
        )
    adaptive_end = soup_end(t, args.adaptive_end)
    for thr in [float(x) for x in args.thresholds.split(",") if x]:
        runs.append(
            RunDef(
                f"srsoup_adaptive{thr:g}",
                "srsoup_adaptive",
                [
                    *srs,
                    "guidance.switch=adaptive",
                    f"guidance.switch_threshold={thr}",
                    f"guidance.soup_end_step={adaptive_end}",
                ],
                {"K": k, "switch": "adaptive", "switch_threshold": thr, "soup_end_step": adaptive_end},
            )
        )

    # Equal budgets: B = weighted_sum's reward queries per group at K in --budget-ks.
    ws_per_k = runner.build_spec(compose([*base, "guidance=weighted_sum", "guidance.num_candidates=1"])).plan
    budgets = [ws_per_k.reward_queries * int(x) for x in args.budget_ks.split(",") if x]
    # SRSoup has two budget curves: the paper's window (2/5 of T) and the whole chain in the soup window, which
    # spends queries on the anchors only and so also runs at small budgets where the other methods could fit no
    # more than K=1 or 2 (--full-soup-budgets, fractions of weighted_sum's queries at K; run for this curve only).
    curve_ends = sorted({main_end, t})
    budget_methods = [
        ("weighted_sum", "weighted_sum", ["guidance=weighted_sum"]),
        *[(f"srsoup_end{e}", "srsoup", ["guidance=srsoup", f"guidance.soup_end_step={e}"]) for e in curve_ends],
    ]
    low_budgets = sorted(
        {round(float(x) * ws_per_k.reward_queries * k) for x in args.full_soup_budgets.split(",") if x}
        - set(budgets)
    )
    if "best_of_n" in METHODS:  # added after this script; compared when present
        import srsoup.conf

        conf = Path(srsoup.conf.__file__).parent / "guidance" / "best_of_n.yaml"
        group = "best_of_n" if conf.exists() else "weighted_sum"
        budget_methods.append(("best_of_n", "best_of_n", [f"guidance={group}", "guidance.method=best_of_n"]))
    # best_of_n spends N·T denoiser evals for N·M queries (N = B/M): at equal queries it makes several times the
    # evals of the guided methods, so by default it runs at the smallest budget only (--bon-ks).
    bon_budgets = {ws_per_k.reward_queries * int(x) for x in args.bon_ks.split(",") if x}
    for b in [*budgets, *low_budgets]:
        for prefix, family, overrides in budget_methods:
            if (family == "best_of_n" and b not in bon_budgets) or (
                b in low_budgets and prefix != f"srsoup_end{t}"
            ):
                continue
            runs.append(
                RunDef(
                    f"{prefix}_B{b}",
                    family,
                    [
                        *overrides,
                        f"guidance.num_candidates={BIG_K}",
                        "budget=fit",
                        f"budget.max_reward_queries={b}",
                    ],
                    {"budget": b},
                    budget=b,
                )
            )

    mem_end = soup_end(args.mem_steps, MAIN_FRACTION)
    mem_runs = [
        RunDef(
            f"mem_K{m}",
            "memory",
            [
                "guidance=srsoup",
                f"guidance.num_candidates={m}",
                "guidance.chunk_size=64",
                f"guidance.soup_end_step={mem_end}",
                f"sampler.steps={args.mem_steps}",
                f"prompts.texts={quote_list(prompts[:1])}",
                "seeds=[0]",
            ],
            {"K": m, "chunk_size": 64, "steps": args.mem_steps, "soup_end_step": mem_end},
        )
        for m in (int(x) for x in args.mem_candidates.split(","))
    ]

    seen: dict[str, str] = {}
    plans: dict[str, dict] = {}
    for rd in [*runs, *mem_runs]:
        rd.overrides = [*base, *rd.overrides]
        try:
            spec = runner.build_spec(compose(rd.overrides))
        except SrsoupError as err:
            rd.error = str(err)
            continue
        except Exception as err:  # noqa: BLE001 - e.g. a method whose config this script does not know
            rd.error = f"{type(err).__name__}: {err}".splitlines()[0]
            continue
        rd.params.setdefault("K", spec.guidance.get("num_candidates", 0) if spec.method != "none" else 0)
        if rd.budget is not None:
            rd.params["K"] = spec.guidance["num_candidates"]
        plans[rd.name] = {
            "reward_queries": spec.plan.reward_queries,
            "denoiser_evals": spec.plan.denoiser_evals,
            "exact": spec.plan.exact,
            "phases": spec.plan.phases,
        }
        key = json.dumps([spec.fingerprint(), spec.seeds], sort_keys=True, default=str)
        if key in seen and rd.family != "memory":
            rd.same_as = seen[key]
        else:
            seen.setdefault(key, rd.name)
    return (
        runs,
        mem_runs,
        {
            "ws_queries_per_k": ws_per_k.reward_queries,
            "budgets": budgets,
            "full_soup_budgets": low_budgets,
            "srsoup_curves": [f"srsoup_end{e}" for e in curve_ends],
            "plans": plans,
            "main_soup_end": main_end,
            "adaptive_soup_end": adaptive_end,
        },
    )


# --- one configuration (in a child process) -------------------------------------------------------------------
def peak_rss_mb() -> float:
    """Peak RSS of this process's own address space (VmHWM).

    Not ``ru_maxrss``: Linux carries the parent's high-water mark across fork+exec into the child's ru_maxrss,
    so a child started by a large parent would report at least the parent's size.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Recorder:
    """Sizes and in-run seconds of every model call a run makes, and a reservoir of real candidate images."""

    def __init__(self, reservoir: int = 256, seed: int = 0):
        self.eps_chunks: list[tuple[int, int]] = []  # (items in the CFG chunk, timestep)
        self.decode_calls: list[int] = []
        self.reward_calls: list[tuple[str, str, int]] = []  # (reward, guide|eval, images)
        self.seconds = {"denoiser": 0.0, "decode": 0.0, "reward": 0.0, "load_backbone": 0.0, "build_rewards": 0.0}
        self.images = []  # uint8 [3, H, W] tensors
        self.seen = 0
        self.capacity = reservoir
        self.rng = random.Random(seed)

    def keep(self, images) -> None:
        """Reservoir sampling over the first two images of each reward call (cheap, spans all steps)."""
        for img in images[:2]:
            self.seen += 1
            if len(self.images) < self.capacity:
                self.images.append((img.float().clamp(0, 1) * 255).round().byte().cpu())
            elif (j := self.rng.randrange(self.seen)) < self.capacity:
                self.images[j] = (img.float().clamp(0, 1) * 255).round().byte().cpu()


@contextlib.contextmanager
def instrumented(rec: Recorder):
    """Wrap DDIMBackbone._cfg_eps / decode, CountingReward.__call__ and model loading to record every call."""
    from srsoup import runner
    from srsoup.backbones.ddim import DDIMBackbone
    from srsoup.rewards.base import CountingReward

    orig_eps, orig_decode, orig_reward = DDIMBackbone._cfg_eps, DDIMBackbone.decode, CountingReward.__call__
    orig_load, orig_build = runner.load_backbone, runner.build_rewards

    def cfg_eps(self, x, t, cond):
        rec.eps_chunks += [(sl.stop - sl.start, int(t)) for sl in self._chunks(len(x), rows_per_item=2)]
        start = time.perf_counter()
        try:
            return orig_eps(self, x, t, cond)
        finally:
            rec.seconds["denoiser"] += time.perf_counter() - start

    def decode(self, x0):
        rec.decode_calls.append(len(x0))
        start = time.perf_counter()
        try:
            return orig_decode(self, x0)
        finally:
            rec.seconds["decode"] += time.perf_counter() - start

    def reward(self, images, prompts):
        rec.reward_calls.append((self.name, "guide" if self.budget is not None else "eval", len(images)))
        rec.keep(images)
        start = time.perf_counter()
        try:
            return orig_reward(self, images, prompts)
        finally:
            rec.seconds["reward"] += time.perf_counter() - start

    def timed(fn, key):
        def wrapper(*a, **kw):
            start = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                rec.seconds[key] += time.perf_counter() - start

        return wrapper

    DDIMBackbone._cfg_eps, DDIMBackbone.decode, CountingReward.__call__ = cfg_eps, decode, reward
    runner.load_backbone, runner.build_rewards = (
        timed(orig_load, "load_backbone"),
        timed(orig_build, "build_rewards"),
    )
    try:
        yield rec
    finally:
        DDIMBackbone._cfg_eps, DDIMBackbone.decode, CountingReward.__call__ = orig_eps, orig_decode, orig_reward
        runner.load_backbone, runner.build_rewards = orig_load, orig_build


def replay(rec: Recorder, cfg) -> dict:
    """Time the recorded calls bare: same batch sizes, same counts, fresh model, no runner or guidance code."""
    import torch

    from srsoup import runner
    from srsoup.rewards.base import build_rewards

    spec = runner.build_spec(cfg)
    backbone = runner.load_backbone(spec)
    fns = build_rewards({**spec.rewards, **spec.eval_rewards}, device=str(spec.device), dtype=spec.dtype)
    chunk = spec.chunk_size
    shape = backbone.latent_shape
    gen = torch.Generator().manual_seed(0)
    secs = {"denoiser": 0.0, "decode": 0.0, "reward": 0.0}
    with torch.inference_mode():
        cond = backbone.encode_prompt(spec.prompts[0])
        hidden = {}

        def cfg_batch(n: int, t: int) -> float:
            x = torch.randn((n, *shape), generator=gen).to(backbone.device)
            h = hidden.setdefault(n, cond.hidden.repeat_interleave(n, dim=0))
            start = time.perf_counter()
            model_in = torch.cat([x, x]).to(backbone.dtype)
            pred = backbone.unet(model_in, t, encoder_hidden_states=h).sample.float()
            _ = pred[:n] + backbone.cfg_scale * (pred[n:] - pred[:n])
            return time.perf_counter() - start

        cfg_batch(max(n for n, _ in rec.eps_chunks), rec.eps_chunks[0][1])  # warm-up, not counted
        for n, t in rec.eps_chunks:
            secs["denoiser"] += cfg_batch(n, t)
        for n in rec.decode_calls:
            x0 = torch.rand((n, *shape), generator=gen).to(backbone.device) * 2 - 1
            start = time.perf_counter()
            backbone.decode(x0)
            secs["decode"] += time.perf_counter() - start
        pool = torch.stack(rec.images).float() / 255
        cursor = 0
        for name, _, n in rec.reward_calls:
            for lo in range(0, n, chunk):  # CountingReward calls the reward in chunks of chunk_size
                m = min(chunk, n - lo)
                idx = torch.arange(cursor, cursor + m) % len(pool)
                cursor += m
                images = pool[idx].to(backbone.device)
                start = time.perf_counter()
                fns[name](images, [spec.prompts[0]] * m)
                secs["reward"] += time.perf_counter() - start
    return secs


def _short_path(path: str) -> str:
    """A profiled file as the results show it: package-relative, never a path of this machine."""
    import sysconfig

    path = path.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
    stdlib = sysconfig.get_paths()["stdlib"] + "/"
    if path.startswith(stdlib):
        return "stdlib/" + path[len(stdlib) :]
    return path if not path.startswith("/") else "…/" + "/".join(path.split("/")[-2:])


def profile_run(cfg, run_dir: Path, out_txt: Path, top: int = 25) -> dict:
    """cProfile of a run: srsoup's functions by cumulative time and all functions by own time (file:line(name))."""
    import cProfile
    import io
    import pstats

    from srsoup import runner

    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    runner.run(cfg, run_dir)
    prof.disable()
    seconds = time.perf_counter() - start
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("cumulative").print_stats(r"srsoup", top)
    stats.sort_stats("tottime").print_stats(top)
    out_txt.write_text(buf.getvalue())
    rows = []
    for (path, line, func), (_, calls, tottime, cumtime, _) in stats.stats.items():
        short = _short_path(path)
        rows.append(
            {
                "where": f"{short}:{line}({func})",
                "calls": calls,
                "tottime": round(tottime, 3),
                "cumtime": round(cumtime, 3),
                "srsoup": short.startswith("srsoup/"),
            }
        )
    return {
        "seconds": seconds,
        "srsoup_cumulative": sorted((r for r in rows if r["srsoup"]), key=lambda r: -r["cumtime"])[:top],
        "own_time": sorted(rows, key=lambda r: -r["tottime"])[:top],
    }


def execute(job: dict) -> dict:
    """Run one configuration in this process and return its figures (the 'sidecar' of the run dir)."""
    import torch

    from srsoup import runner

    rss_imports = peak_rss_mb()
    cfg = compose(job["overrides"])
    run_dir = Path(job["run_dir"])
    before = _summary(run_dir)
    done_before = set(before.get("groups", {})) if before.get("status") in ("complete", "partial") else set()
    side: dict = {"threads": torch.get_num_threads()}
    if job.get("profile"):
        side["profile"] = profile_run(cfg, run_dir, Path(job["profile"]))
        return side
    rec = Recorder() if job.get("instrument") else None
    start = time.perf_counter()
    with instrumented(rec) if rec else contextlib.nullcontext():
        runner.run(cfg, run_dir)
    side["process_run_seconds"] = time.perf_counter() - start
    summary = _summary(run_dir)
    ran_here = [g for g in summary.get("groups", {}) if g not in done_before]
    side["groups_run_here"] = len(ran_here)
    side["fresh"] = not done_before
    if job.get("child"):
        side["peak_rss_mb"] = round(peak_rss_mb(), 1)
        side["rss_after_imports_mb"] = round(rss_imports, 1)
    if rec is not None and ran_here:
        side["overhead"] = overhead_figures(rec, cfg, summary, ran_here, side["process_run_seconds"])
    return side


def overhead_figures(rec: Recorder, cfg, summary: dict, ran_here: list[str], run_seconds: float) -> dict:
    bare = replay(rec, cfg)
    bare_total = sum(bare.values())
    group_seconds = sum(summary["groups"][g]["wall_seconds"] for g in ran_here)
    guide_queries = sum(n for _, kind, n in rec.reward_calls if kind == "guide")
    evals = sum(n for n, _ in rec.eps_chunks)
    return {
        "groups": len(ran_here),
        "calls": {
            "cfg_chunks": len(rec.eps_chunks),
            "denoiser_items": evals,
            "decode_calls": len(rec.decode_calls),
            "decode_items": sum(rec.decode_calls),
            "reward_calls": len(rec.reward_calls),
            "reward_items": sum(n for _, _, n in rec.reward_calls),
            "guidance_reward_queries": guide_queries,
        },
        "cfg_chunk_sizes": _histogram(n for n, _ in rec.eps_chunks),
        # Per-row denoiser evals come from the guidance methods' own accounting: an independent check.
        "recorded_match_summary": {
            "denoiser_evals": evals == sum(summary["groups"][g]["denoiser_evals"] for g in ran_here),
            "reward_queries": guide_queries
            == sum(sum(summary["groups"][g]["reward_queries_by_reward"].values()) for g in ran_here),
        },
        "bare_seconds": {k: round(v, 3) for k, v in bare.items()},
        "bare_model_seconds": round(bare_total, 3),
        "in_run_seconds": {k: round(v, 3) for k, v in rec.seconds.items()},
        "wall_seconds": round(run_seconds, 3),
        "group_loop_seconds": round(group_seconds, 3),
        "ratio_wall": round(run_seconds / bare_total, 3),
        "ratio_group_loop": round(group_seconds / bare_total, 3),
        "target": OVERHEAD_TARGET,
    }


def _histogram(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def _summary(run_dir: Path) -> dict:
    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {}


def child_main(job_path: str) -> int:
    """Entry of a child process: run the job, write its figures next to it, exit non-zero on failure."""
    job = json.loads(Path(job_path).read_text())
    if job.get("threads"):
        import torch

        torch.set_num_threads(job["threads"])
    try:
        side = execute({**job, "child": True})
    except Exception as err:  # noqa: BLE001 - the parent reports it and goes on with the other runs
        import traceback

        traceback.print_exc()
        Path(job["sidecar"]).write_text(json.dumps({"error": f"{type(err).__name__}: {err}".splitlines()[0]}))
        return 1
    Path(job["sidecar"]).write_text(json.dumps({**side, "overrides": job["overrides"]}, indent=1))
    return 0


def launch(rd: RunDef, runs_dir: Path, in_process: bool, threads: int = 0, profile: Path | None = None) -> dict:
    """Run a configuration (child process unless ``in_process``); reuses the figures of a complete earlier run.

    ``threads`` > 0 sets the child's torch/OpenMP threads (0 keeps torch's default).
    """
    # A profile always runs afresh (a resumed, complete run would profile nothing).
    run_dir = runs_dir / (rd.name if profile is None else f"profile_{rd.name}_{int(time.time())}")
    sidecar = runs_dir / f"{run_dir.name}.bench.json"
    cached = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    if (
        profile is None
        and _summary(run_dir).get("status") == "complete"
        and cached.get("overrides") == rd.overrides
        and not cached.get("error")
    ):
        return {**cached, "cached": True}
    job = {
        "overrides": rd.overrides,
        "run_dir": str(run_dir),
        "sidecar": str(sidecar),
        "instrument": rd.instrument,
        "profile": str(profile) if profile else None,
        "threads": threads,
    }
    if in_process:
        return execute(job)
    job_path = runs_dir / f"{run_dir.name}.job.json"
    job_path.write_text(json.dumps(job, indent=1))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(runs_dir / f"{run_dir.name}.log", "w") as log:
        code = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", str(job_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        ).returncode
    side = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    if code != 0:
        side.setdefault("error", f"child exited with {code}; see {run_dir.name}.log")
    return side


# --- analysis -------------------------------------------------------------------------------------------------
def run_figures(rd: RunDef, run_dir: Path, side: dict, plan: dict | None) -> dict:
    """Counts, time, memory and per-weight mean rewards of one finished run."""
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
    summary = _summary(run_dir)
    groups = summary["groups_complete"]
    rows = pd.read_csv(run_dir / "rewards.csv")
    means = rows.groupby("weight_idx")[[f"r_{r}" for r in REWARDS]].mean()
    eval_cols = [c for c in rows.columns if c.startswith("r_") and c[2:] not in REWARDS]
    plan_q = plan["reward_queries"] * groups
    plan_e = plan["denoiser_evals"] * groups
    rec.update(
        status=summary["status"],
        method=summary["method"],
        K=summary["num_candidates"],
        steps=summary["steps"],
        soup_end_step=summary.get("soup_end_step"),
        groups=groups,
        images=summary["images"],
        reward_queries=summary["reward_queries"],
        reward_queries_by_reward=summary["reward_queries_by_reward"],
        reward_queries_per_group=summary["reward_queries"] / groups,
        denoiser_evals=summary["denoiser_evals"],
        denoiser_evals_per_group=summary["denoiser_evals"] / groups,
        plan_reward_queries=plan_q,
        plan_denoiser_evals=plan_e,
        plan_exact=plan["exact"],
        # Exact plans must be met exactly; adaptive plans are upper bounds.
        counts_match_plan=(summary["reward_queries"] == plan_q and summary["denoiser_evals"] == plan_e)
        if plan["exact"]
        else (summary["reward_queries"] <= plan_q and summary["denoiser_evals"] <= plan_e),
        wall_seconds=summary["wall_seconds"],
        peak_rss_mb=side.get("peak_rss_mb"),
        rss_after_imports_mb=side.get("rss_after_imports_mb"),
        threads=side.get("threads"),
        measured_fresh=side.get("fresh"),
        cached=bool(side.get("cached")),
        points=[[float(v) for v in row] for row in means.to_numpy()],
        # Per (prompt, seed) group, per weight: the raw rewards, for the bootstrap (not written out).
        _groups={
            f"p{p}_s{sd}": g.sort_values("weight_idx")[[f"r_{r}" for r in REWARDS]].to_numpy().tolist()
            for (p, sd), g in rows.groupby(["prompt_idx", "seed"])
        },
        weights=summary["weights"],
        eval_means={c[2:]: float(rows[c].mean()) for c in eval_cols},
    )
    if "overhead" in side:
        rec["overhead"] = side["overhead"]
    return rec


def analyse(records: list[dict], meta: dict, n_boot: int = 1000) -> dict:
    """Shared reference point, hypervolumes, ratios to weighted_sum (with paired bootstrap intervals over the
    prompt x seed groups), equal-budget comparisons, and where each budget curve reaches the target."""
    import numpy as np

    from srsoup.report.pareto import default_ref, hypervolume

    ok = [r for r in records if r.get("status") == "complete"]
    all_points = np.array([p for r in ok for p in r["points"]])
    ref = default_ref(all_points, margin=0.05)
    for r in ok:
        r["hypervolume"] = hypervolume(np.array(r["points"]), ref)
    ws = next((r for r in ok if r["name"] == "weighted_sum"), None)

    # Paired bootstrap: resample the (prompt, seed) groups with replacement, the same draw for every run, and
    # recompute each run's per-weight means and hypervolume against the fixed reference point.
    keys = sorted(set.intersection(*(set(r["_groups"]) for r in ok))) if ok else []
    rng = np.random.default_rng(0)
    counts = rng.multinomial(len(keys), [1 / len(keys)] * len(keys), size=n_boot) if keys else np.zeros((0, 0))
    boot = {}
    for r in ok:
        pts = np.array([r["_groups"][k] for k in keys])  # [G, L, M]
        means = np.einsum("bg,glm->blm", counts, pts) / len(keys)
        boot[r["name"]] = np.array([hypervolume(m, ref) for m in means])

    def ratio_ci(num: str, den: str) -> list[float] | None:
        if num not in boot or den not in boot:
            return None
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = boot[num] / boot[den]
        # A resample can give the baseline zero hypervolume (all its points beyond the reference): the ratio is
        # then inf (or nan for 0/0, dropped), and an interval that reaches it is reported as unbounded ("inf").
        ratios = ratios[~np.isnan(ratios)]
        if not len(ratios):
            return None
        return [float(x) for x in np.percentile(ratios, [2.5, 97.5], method="nearest")]

    for r in ok:
        if ws:
            r["hv_ratio_ws"] = r["hypervolume"] / ws["hypervolume"] if ws["hypervolume"] else float("nan")
            r["hv_ratio_ws_ci95"] = ratio_ci(r["name"], ws["name"])
            r["query_ratio_ws"] = r["reward_queries"] / ws["reward_queries"]
            r["eval_ratio_ws"] = r["denoiser_evals"] / ws["denoiser_evals"]
            r["wall_ratio_ws"] = r["wall_seconds"] / ws["wall_seconds"]
            r["reaches_target"] = bool(r["hv_ratio_ws"] >= HV_TARGET)

    by_name = {r["name"]: r for r in ok}
    # weighted_sum's hypervolume at any query count inside its measured range, by linear interpolation along its
    # budget curve: the "equal budget" reference for runs whose query count no weighted_sum run matches.
    ws_curve = sorted(
        {(r["reward_queries_per_group"], r["hypervolume"]) for r in ok if r["family"] == "weighted_sum"}
    )
    if len(ws_curve) > 1:
        qs, hvs = zip(*ws_curve)
        for r in ok:
            q = r["reward_queries_per_group"]
            if r["family"] not in ("none", "single") and qs[0] <= q <= qs[-1]:
                r["hv_ratio_ws_equal_queries"] = r["hypervolume"] / float(np.interp(q, qs, hvs))
    srsoup_curves = meta["srsoup_curves"]
    all_budgets = sorted({*meta["budgets"], *meta.get("full_soup_budgets", [])})
    budget_rows = []
    for b in all_budgets:
        row = {"budget": b}
        for prefix in ("weighted_sum", *srsoup_curves, "best_of_n"):
            r = by_name.get(f"{prefix}_B{b}")
            if r:
                row[prefix] = {
                    "K": r["K"],
                    "reward_queries_per_group": r["reward_queries_per_group"],
                    "hypervolume": r["hypervolume"],
                    "hv_ratio_ws": r.get("hv_ratio_ws"),
                }
        w = row.get("weighted_sum")
        for prefix in (*srsoup_curves, "best_of_n"):
            if w and w["hypervolume"] and prefix in row:
                row[prefix]["over_ws_same_budget"] = row[prefix]["hypervolume"] / w["hypervolume"]
                row[prefix]["over_ws_same_budget_ci95"] = ratio_ci(f"{prefix}_B{b}", f"weighted_sum_B{b}")
        budget_rows.append(row)

    def reach(names: list[str]) -> dict | None:
        """The cheapest measured run of a curve at >= HV_TARGET, and the linear interpolation of where the
        curve (runs ordered by queries) first crosses it; None when the curve has no runs, "run": None when no run
        reaches the target."""
        pts = sorted(
            (by_name[n] for n in set(names) if n in by_name and "query_ratio_ws" in by_name[n]),
            key=lambda r: r["query_ratio_ws"],
        )
        if not pts:
            return None
        hits = [r for r in pts if r.get("reaches_target")]
        if not hits:
            return {"run": None, "query_ratio": None, "hv_ratio": None, "interpolated_query_ratio": None}
        best = min(hits, key=lambda r: r["query_ratio_ws"])
        crossing = None
        for lo, hi in zip([None, *pts[:-1]], pts):
            if hi["hv_ratio_ws"] >= HV_TARGET:
                if lo is None or lo["hv_ratio_ws"] >= HV_TARGET:
                    crossing = hi["query_ratio_ws"]
                else:
                    f = (HV_TARGET - lo["hv_ratio_ws"]) / (hi["hv_ratio_ws"] - lo["hv_ratio_ws"])
                    crossing = lo["query_ratio_ws"] + f * (hi["query_ratio_ws"] - lo["query_ratio_ws"])
                break
        return {
            "run": best["name"],
            "query_ratio": best["query_ratio_ws"],
            "hv_ratio": best["hv_ratio_ws"],
            "interpolated_query_ratio": crossing,
        }

    def label(prefix: str) -> str:
        return f"{prefix} (K={meta['K']} and budgets)"

    curves = {label(p): reach([p, *[f"{p}_B{b}" for b in all_budgets]]) for p in ("weighted_sum", *srsoup_curves)}
    curves["best_of_n (budgets)"] = reach([f"best_of_n_B{b}" for b in all_budgets])
    for r in ok:
        if r["family"].startswith("srsoup"):
            curve = next((p for p in srsoup_curves if r["name"] == p or r["name"].startswith(f"{p}_B")), None)
            if curve:
                hit = curves[label(curve)]
            elif r.get("reaches_target"):
                hit = {"run": r["name"], "query_ratio": r["query_ratio_ws"], "hv_ratio": r["hv_ratio_ws"]}
            else:
                hit = None
            r["smallest_query_ratio_reaching_target"] = hit if hit and hit["run"] else None
    # The query-efficiency target: the cheapest srsoup run (any window, any K or budget) at >= HV_TARGET.
    srsoup_runs = [r for r in ok if r["family"].startswith("srsoup") and "query_ratio_ws" in r]
    hits = [r for r in srsoup_runs if r.get("reaches_target")]
    best = min(hits, key=lambda r: r["query_ratio_ws"], default=None)
    crossings = [
        c["interpolated_query_ratio"]
        for p in srsoup_curves
        if (c := curves[label(p)]) and c["interpolated_query_ratio"] is not None
    ]
    query_efficiency = {
        "srsoup_runs": len(srsoup_runs),
        "target_query_ratio": QUERY_TARGET,
        "target_hv_ratio": HV_TARGET,
        "cheapest_run": {
            "run": best["name"],
            "query_ratio": best["query_ratio_ws"],
            "hv_ratio": best["hv_ratio_ws"],
        }
        if best
        else None,
        "smallest_interpolated_query_ratio": min(crossings, default=None),
        "meets": bool(best and best["query_ratio_ws"] <= QUERY_TARGET),
    }
    return {
        "reference_point": {n: float(v) for n, v in zip(REWARDS, ref)},
        "bootstrap": {
            "resamples": n_boot,
            "groups": len(keys),
            "seed": 0,
            "what": "paired resampling of prompt x seed groups; 95% percentile intervals of HV ratios",
        },
        "equal_budget": budget_rows,
        "reach_target": curves,
        "query_efficiency": query_efficiency,
    }


def memory_figures(records: list[dict]) -> dict:
    ok = sorted([r for r in records if r.get("peak_rss_mb")], key=lambda r: r["K"])
    if len(ok) < 2:
        return {"runs": ok}
    small, big = ok[0], ok[-1]
    return {
        "runs": [
            {
                k: r.get(k)
                for k in (
                    "name",
                    "K",
                    "peak_rss_mb",
                    "rss_after_imports_mb",
                    "wall_seconds",
                    "denoiser_evals",
                    "reward_queries",
                )
            }
            for r in ok
        ],
        "ratio": big["peak_rss_mb"] / small["peak_rss_mb"],
        "ratio_above_imports": (big["peak_rss_mb"] - big["rss_after_imports_mb"])
        / max(1e-9, small["peak_rss_mb"] - small["rss_after_imports_mb"]),
        "target": MEMORY_TARGET,
    }


def machine() -> dict:
    import torch

    cpu = (
        next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else ""
    )
    mem = (
        next(
            (
                int(ln.split()[1]) / 2**20
                for ln in Path("/proc/meminfo").read_text().splitlines()
                if ln.startswith("MemTotal")
            ),
            None,
        )
        if Path("/proc/meminfo").exists()
        else None
    )
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": round(mem, 1) if mem else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# --- output ---------------------------------------------------------------------------------------------------
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


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(res: dict) -> str:
    s, m, a = res["settings"], res["machine"], res["analysis"]
    ref = a["reference_point"]
    sharing = (
        f"Runs went {s['jobs']} at a time, each a child process with {s['threads_per_job']} torch thread(s), so "
        f"wall seconds include that sharing of the machine. "
        if s["jobs"] > 1
        else ""
    )
    out = [
        f"Embedded model (`model=tiny`), rewards `colorful_compress` (colourfulness, JPEG compressibility), "
        f"{len(s['weights'])}-weight grid, T={s['steps']} steps, K={s['candidates']}, {s['prompts']} prompts × "
        f"{s['seeds']} seeds; {m['cpu']}, {m['usable_cores']} cores, {m['ram_gib']} GiB, torch {m['torch']}, "
        f"{res['date'][:10]}. {sharing}Hypervolume of the per-weight mean rewards (over prompts × seeds) against "
        f"one reference point for all runs: colourfulness {ref['colorfulness']:.4g}, JPEG compressibility "
        f"{ref['jpeg_compressibility']:.4g} (per-reward minimum over all runs' points minus 5% of the range). "
        f"Ratios are to `weighted_sum` at K={s['candidates']}.",
        "",
        "**All runs** (queries and evals per prompt × seed group; wall seconds and peak RSS of the whole run):",
        "",
    ]
    rows = []
    for r in res["runs"]:
        if r.get("status") != "complete":
            rows.append([r["name"], r.get("error", "not run")[:60], *[None] * 9])
            continue
        p = r["params"]
        variant = ", ".join(f"{k}={v}" for k, v in p.items() if k not in ("K", "fraction"))
        if r.get("same_as"):
            variant += f" (same run as `{r['same_as']}`)"
        rows.append(
            [
                f"`{r['name']}`",
                variant or "",
                r["K"],
                r["reward_queries_per_group"],
                r.get("query_ratio_ws"),
                r["denoiser_evals_per_group"],
                r["wall_seconds"],
                r["peak_rss_mb"],
                r["hypervolume"],
                _with_ci(r.get("hv_ratio_ws"), r.get("hv_ratio_ws_ci95")),
                r["eval_means"].get("prompt_adherence"),
            ]
        )
    out.append(
        _table(
            [
                "run",
                "variant",
                "K",
                "queries",
                "× WS queries",
                "denoiser evals",
                "wall s",
                "peak RSS MB",
                "hypervolume",
                "× WS HV (95% CI)",
                "adherence",
            ],
            rows,
        )
    )
    out += [
        "",
        "**Equal reward-query budgets** (`budget=fit`, B = reward queries per group; K is the largest that fits):",
        "",
    ]
    curves = res["meta"]["srsoup_curves"]
    others = [*curves, "best_of_n"]
    brows = []
    for b in a["equal_budget"]:
        w = b.get("weighted_sum", {})
        row = [b["budget"], w.get("K"), w.get("hypervolume")]
        for prefix in others:
            o = b.get(prefix, {})
            row += [
                o.get("K"),
                o.get("hypervolume"),
                _with_ci(o.get("over_ws_same_budget"), o.get("over_ws_same_budget_ci95")),
            ]
        brows.append(row)
    header = ["B", "WS K", "WS HV"]
    for prefix in others:
        header += [f"`{prefix}` K", "HV", "/ WS HV"]
    out.append(_table(header, brows))
    out += (
        [
            "",
            f"`{curves[-1]}` has the whole chain in the soup window (beyond the paper's windows): it queries the "
            "anchors only, so it also runs at budgets where the other methods were not run (no WS column there; "
            "its ratio to weighted_sum at K is in the table of all runs).",
        ]
        if len(curves) > 1
        else []
    )
    out += [
        "",
        f"**Smallest query ratio reaching ≥ {HV_TARGET}× the hypervolume of `weighted_sum` (K="
        f"{s['candidates']})**: the cheapest measured run that does, and where the curve through the measured "
        f"runs (ordered by queries) crosses {HV_TARGET} by linear interpolation:",
        "",
    ]
    for label, hit in a["reach_target"].items():
        out.append(
            f"- {label}: "
            + (
                f"{hit['query_ratio']:.2f}× the queries (`{hit['run']}`, HV ratio {hit['hv_ratio']:.3f}); "
                f"interpolated crossing at {hit['interpolated_query_ratio']:.2f}×"
                if hit and hit["run"]
                else ("not reached at any measured point" if hit else "no runs")
            )
        )
    qe = a.get("query_efficiency")
    if qe:
        best = qe["cheapest_run"]
        out += [
            "",
            f"Target ≤ {qe['target_query_ratio']}× the queries for ≥ {qe['target_hv_ratio']}× the hypervolume: "
            + (
                f"**{'met' if qe['meets'] else 'not met'}**; the cheapest srsoup run that reaches it is "
                f"`{best['run']}` at {best['query_ratio']:.2f}× the queries (HV ratio {best['hv_ratio']:.3f})"
                if best
                else "**not met**; no srsoup run reaches it"
                if qe.get("srsoup_runs", 1)
                else "not measured (no srsoup run)"
            )
            + (
                ", and the interpolated crossing of the srsoup curves is at "
                f"{qe['smallest_interpolated_query_ratio']:.2f}×."
                if qe.get("smallest_interpolated_query_ratio") is not None
                else "."
            ),
        ]
    srs = [
        r
        for r in res["runs"]
        if r.get("status") == "complete" and r["family"].startswith("srsoup") and not r["budget"]
    ]
    out += [
        "",
        f"**SRSoup variants at K={s['candidates']}** against `weighted_sum` at K={s['candidates']}, and against "
        f"`weighted_sum`'s budget curve interpolated to the same number of queries:",
        "",
    ]
    out.append(
        _table(
            ["run", "× WS queries", "× WS HV (95% CI)", f"≥ {HV_TARGET}×", "× WS HV at equal queries"],
            [
                [
                    f"`{r['name']}`",
                    r["query_ratio_ws"],
                    _with_ci(r["hv_ratio_ws"], r.get("hv_ratio_ws_ci95")),
                    "yes" if r.get("reaches_target") else "no",
                    r.get("hv_ratio_ws_equal_queries"),
                ]
                for r in srs
                if "query_ratio_ws" in r
            ],
        )
    )
    ov = res.get("overhead")
    if ov:
        out += [
            "",
            f"**Overhead** (`{ov['run']}` on {ov['groups']} groups, run alone with {ov.get('threads')} torch "
            f"thread(s)): wall time of the run over the time of the same model calls made bare (same batch sizes "
            f"and counts, same process, after the run):",
            "",
        ]
        b, i = ov["bare_seconds"], ov["in_run_seconds"]
        c = ov["calls"]
        out.append(
            _table(
                ["part", "calls", "items", "bare s", "in the run s"],
                [
                    [
                        "denoiser (UNet, CFG batch)",
                        c["cfg_chunks"],
                        c["denoiser_items"],
                        b["denoiser"],
                        i["denoiser"],
                    ],
                    ["decode", c["decode_calls"], c["decode_items"], b["decode"], i["decode"]],
                    [
                        "rewards (guidance + final scoring)",
                        c["reward_calls"],
                        c["reward_items"],
                        b["reward"],
                        i["reward"],
                    ],
                    ["model load + reward build", "", "", "", i["load_backbone"] + i["build_rewards"]],
                    [
                        "**model calls, total**",
                        "",
                        "",
                        ov["bare_model_seconds"],
                        i["denoiser"] + i["decode"] + i["reward"],
                    ],
                    ["**wall, run()**", "", "", ov["wall_seconds"], ""],
                    ["**wall, group loop**", "", "", ov["group_loop_seconds"], ""],
                ],
            )
        )
        verdict = "meets" if ov["ratio_wall"] <= OVERHEAD_TARGET else "misses"
        out += [
            "",
            f"Wall / model-call time: **{ov['ratio_wall']:.3f}** for the whole `run()` (model loading "
            f"included), {ov['ratio_group_loop']:.3f} for the group loop alone; target ≤ {OVERHEAD_TARGET}: "
            f"{verdict} it.",
        ]
        prof = res.get("profile")
        if prof:
            out += [
                "",
                f"Where the time goes (cProfile of `{ov['run']}` on the first prompt, {prof['seconds']:.1f} s "
                f"under the profiler): srsoup's own functions by cumulative time, then everything by own time.",
                "",
            ]
            out.append(
                _table(
                    ["srsoup function", "calls", "cumulative s"],
                    [[f"`{p['where']}`", p["calls"], p["cumtime"]] for p in prof["srsoup_cumulative"][:14]],
                )
            )
            out.append("")
            out.append(
                _table(
                    ["function", "calls", "own s"],
                    [[f"`{p['where']}`", p["calls"], p["tottime"]] for p in prof["own_time"][:10]],
                )
            )
    if not ov and res.get("overhead_error"):
        out += ["", f"**Overhead**: not measured ({res['overhead_error']})."]
    mem = res.get("memory", {})
    if mem.get("ratio"):
        out += [
            "",
            "**Memory** (srsoup, chunk_size 64: at most 64 rows per model batch, i.e. 32 candidates per CFG "
            "denoiser batch; 1 prompt × 1 seed, separate child processes; peak RSS = VmHWM of the child):",
            "",
        ]
        out.append(
            _table(
                ["K", "peak RSS MB", "RSS after imports MB", "denoiser evals", "reward queries", "wall s"],
                [
                    [
                        r["K"],
                        r["peak_rss_mb"],
                        r["rss_after_imports_mb"],
                        r["denoiser_evals"],
                        r["reward_queries"],
                        r["wall_seconds"],
                    ]
                    for r in mem["runs"]
                ],
            )
        )
        verdict = "meets" if mem["ratio"] <= MEMORY_TARGET else "misses"
        out += [
            "",
            f"Peak RSS ratio K={mem['runs'][-1]['K']} / K={mem['runs'][0]['K']}: **{mem['ratio']:.3f}** "
            f"(target ≤ {MEMORY_TARGET}: {verdict} it); growth above the post-import baseline: "
            f"{mem['ratio_above_imports']:.2f}×.",
        ]
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
    out += [
        "",
        f"Benchmark wall time {res['bench_seconds'] / 60:.1f} min.{reused_text}{load_text} Regenerate with "
        "`make bench`.",
    ]
    return "\n".join(out) + "\n"


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
    ok = [r for r in res["runs"] if r.get("status") == "complete" and not r.get("same_as")]
    curves = res["meta"]["srsoup_curves"]
    guided = [r["hypervolume"] for r in ok if r["family"] != "best_of_n"]
    top = 1.3 * max(guided) if guided else None
    shown = {r["name"]: min(r["hypervolume"], 0.95 * top) if top else r["hypervolume"] for r in ok}
    xmax = max(r["reward_queries_per_group"] for r in ok) or 1
    labels: dict[tuple, list[str]] = {}
    for family, (colour, marker) in FAMILY_STYLE.items():
        pts = [r for r in ok if r["family"] == family]
        if not pts:
            continue
        ax.scatter(
            [r["reward_queries_per_group"] for r in pts],
            [shown[r["name"]] for r in pts],
            c=colour,
            marker=marker,
            label=family,
            s=42,
            zorder=3,
            clip_on=False,
        )
        for r in pts:
            name = r["name"].replace("srsoup_", "").replace("weighted_sum", "ws")
            if shown[r["name"]] < r["hypervolume"]:
                name += f" (HV {r['hypervolume']:.3g}, off scale)"
            key = (round(r["reward_queries_per_group"], 3), round(shown[r["name"]], 9))
            labels.setdefault(key, []).append(name)
    # Coincident points share one label; labels of nearby points are stacked downwards instead of overlapping.
    span = (top or max(shown.values())) or 1
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
    lines = [
        ("weighted_sum", "tab:blue", "-"),
        *[(c, "tab:red", ("-", "--")[i % 2]) for i, c in enumerate(curves)],
    ]
    for prefix, colour, style in [*lines, ("best_of_n", "tab:green", "-")]:
        series = sorted(
            [r for r in ok if r["name"].startswith(f"{prefix}_B") or r["name"] == prefix],
            key=lambda r: r["reward_queries_per_group"],
        )
        if len(series) > 1:
            ax.plot(
                [r["reward_queries_per_group"] for r in series],
                [shown[r["name"]] for r in series],
                c=colour,
                ls=style,
                lw=1,
                alpha=0.6,
                zorder=2,
                label=f"{prefix}: budgets"
                if prefix == "best_of_n"
                else f"{prefix}: K={res['settings']['candidates']} and budgets",
            )
    if top:
        ax.set_ylim(0, top)
    ax.set_xlabel("reward queries per prompt × seed group")
    ax.set_ylabel("hypervolume of the per-weight mean rewards")
    s = res["settings"]
    ax.set_title(
        f"embedded model, colourfulness vs JPEG compressibility, T={s['steps']}, K={s['candidates']}, "
        f"{s['prompts']} prompts × {s['seeds']} seeds",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --- main -----------------------------------------------------------------------------------------------------
def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="toy sizes for a smoke run: " + json.dumps(QUICK))
    p.add_argument("--steps", type=int, help=f"denoising steps T (default {FULL['steps']})")
    p.add_argument(
        "--candidates", type=int, help=f"K candidates per guided chain and step (default {FULL['candidates']})"
    )
    p.add_argument("--seeds", type=int, help=f"number of seeds, 0..N-1 (default {FULL['seeds']})")
    p.add_argument("--prompts", type=int, help=f"number of prompts, first N of 8 (default {FULL['prompts']})")
    p.add_argument(
        "--budget-ks",
        help=f"equal budgets: B = weighted_sum's queries per group at these K (default {FULL['budget_ks']})",
    )
    p.add_argument(
        "--full-soup-budgets",
        help="srsoup with the whole chain in the soup window also at these fractions of weighted_sum's queries at "
        f"K (default {FULL['full_soup_budgets']})",
    )
    p.add_argument(
        "--bon-ks",
        help=f"best_of_n (when the method exists) at the budgets of these K (default {FULL['bon_ks']})",
    )
    p.add_argument(
        "--thresholds", help=f"switch_threshold values of switch=adaptive (default {FULL['thresholds']})"
    )
    p.add_argument(
        "--adaptive-end",
        type=float,
        default=3 / 5,
        help="switch=adaptive: the soup window ends at this fraction of T at the latest (default 0.6)",
    )
    p.add_argument("--mem-candidates", help=f"memory runs: K values (default {FULL['mem_candidates']})")
    p.add_argument("--mem-steps", type=int, help=f"memory runs: steps (default {FULL['mem_steps']})")
    p.add_argument("--model-path", help="a model folder instead of the embedded weights (model.pretrained)")
    p.add_argument("--out", type=Path, default=ROOT / "bench", help="output folder (runs go to OUT/runs/)")
    p.add_argument("--only", help="comma-separated run names to run (debugging; the tables cover only these)")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run every configuration in this process (fast; no per-run peak RSS, no memory runs)",
    )
    p.add_argument("--profile", action="store_true", help="profile the overhead run even if it meets the target")
    p.add_argument("--jobs", type=int, help="child processes at a time (default: the usable cores)")
    p.add_argument("--threads", type=int, help="torch threads per child (default: usable cores // jobs)")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    args.jobs = args.jobs or cores
    args.threads = args.threads or max(1, cores // args.jobs)
    return args


def run_tag(args) -> str:
    """Run dirs are keyed by the settings and the model weights, so other settings never resume them."""
    from srsoup.tiny import WEIGHTS_DIR

    folder = Path(args.model_path) if args.model_path else WEIGHTS_DIR
    digest = hashlib.sha1()
    for f in sorted(folder.rglob("*.safetensors")):
        digest.update(f.read_bytes())
    return f"T{args.steps}_K{args.candidates}_p{args.prompts}_s{args.seeds}_{digest.hexdigest()[:8]}"


def _progress(name: str, side: dict, start: float) -> None:
    state = "cached" if side.get("cached") else ("error" if side.get("error") else "done")
    print(f"  {name:<32} {state:<7} t+{time.time() - start:6.0f} s  {side.get('error', '')}", flush=True)


def run_all(jobs: list[RunDef], runs_dir: Path, args, plans: dict, groups: int) -> dict[str, dict]:
    """Run the configurations, ``args.jobs`` child processes at a time, the most expensive first."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    if args.in_process:
        sides = {}
        for rd in jobs:
            start = time.time()
            sides[rd.name] = launch(rd, runs_dir, True)
            _progress(rd.name, sides[rd.name], start)
        return sides

    def cost(rd: RunDef) -> int:
        return plans[rd.name]["denoiser_evals"] * (1 if rd.family == "memory" else groups)

    ordered = sorted(jobs, key=cost, reverse=True)
    sides, start = {}, time.time()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(launch, rd, runs_dir, False, args.threads): rd for rd in ordered}
        for fut in as_completed(futures):
            rd = futures[fut]
            sides[rd.name] = fut.result()
            _progress(rd.name, sides[rd.name], start)
    return sides


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        return child_main(argv[1])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    bench_start = time.time()
    load_start = _loadavg()
    all_prompts = [*compose(["prompts=tiny"]).prompts.texts, *EXTRA_PROMPTS]
    if not 1 <= args.prompts <= len(all_prompts):
        raise SystemExit(f"bench: --prompts must be 1..{len(all_prompts)}")
    prompts, seeds = all_prompts[: args.prompts], list(range(args.seeds))
    runs, mem_runs, meta = plan_runs(args, prompts, seeds)
    meta["K"] = args.candidates
    if args.only:
        keep = set(args.only.split(","))
        runs = [r for r in runs if r.name in keep or r.name == "weighted_sum"]
        mem_runs = [r for r in mem_runs if r.name in keep]
    if args.in_process:
        mem_runs = []
    runs_dir = args.out / "runs" / run_tag(args)
    runs_dir.mkdir(parents=True, exist_ok=True)
    print(f"bench: {len(runs) + len(mem_runs)} runs into {runs_dir}")

    jobs = [rd for rd in [*runs, *mem_runs] if not rd.error and not rd.same_as]
    sides = run_all(jobs, runs_dir, args, meta["plans"], len(prompts) * len(seeds))

    records = []
    for rd in runs:
        src = rd.same_as or rd.name
        rec = run_figures(rd, runs_dir / src, sides.get(src, {}), meta["plans"].get(rd.name))
        if rd.same_as:
            rec["same_as"] = rd.same_as
        records.append(rec)
    mem_records = [
        run_figures(rd, runs_dir / rd.name, sides.get(rd.name, {}), meta["plans"].get(rd.name)) for rd in mem_runs
    ]
    analysis = analyse(records, meta)

    # Overhead: the srsoup run at 2/5 of T once more, in its own run dir, alone on the machine with torch's threads
    # on every usable core as a plain `srsoup run` would have them, then its model calls replayed bare.
    overhead_threads = args.jobs * args.threads
    main = next((r for r in runs if r.name == f"srsoup_end{meta['main_soup_end']}"), None)
    overhead = profile = overhead_error = None
    if main is not None and not main.error:
        probe = RunDef(
            f"overhead_{main.name}",
            "overhead",
            main.overrides,
            instrument=True,
        )
        start = time.time()
        side = launch(probe, runs_dir, args.in_process, threads=overhead_threads)
        _progress(probe.name, side, start)
        if side.get("error"):
            overhead_error = side["error"]
        if side.get("overhead"):
            overhead = {
                "run": main.name,
                "run_dir": probe.name,
                "threads": side.get("threads"),
                **side["overhead"],
            }
        # The full benchmark always profiles the overhead configuration on one prompt (where the time goes); at
        # --quick sizes the ratio is dominated by fixed costs: profile only when asked.
        if overhead and (args.profile or not args.quick):
            one = RunDef(main.name, main.family, [*main.overrides, f"prompts.texts={quote_list(prompts[:1])}"])
            side = launch(
                one,
                runs_dir,
                args.in_process,
                threads=overhead_threads,
                profile=runs_dir / f"profile_{main.name}.txt",
            )
            profile = side.get("profile")

    settings = {
        "steps": args.steps,
        "candidates": args.candidates,
        "seeds": args.seeds,
        "prompts": args.prompts,
        "prompt_texts": prompts,
        "seed_values": seeds,
        "rewards": list(REWARDS),
        "weights": next((r["weights"] for r in records if r.get("method") == "weighted_sum"), []),
        "soup_end_fractions": list(SOUP_FRACTIONS),
        "budget_ks": args.budget_ks,
        "budgets": meta["budgets"],
        "full_soup_budgets": meta["full_soup_budgets"],
        "best_of_n_budget_ks": args.bon_ks,
        "adaptive_thresholds": args.thresholds,
        "adaptive_soup_end_step": meta["adaptive_soup_end"],
        "memory": {"candidates": args.mem_candidates, "steps": args.mem_steps, "chunk_size": 64},
        "model": args.model_path or "tiny (embedded)",
        "quick": args.quick,
        "in_process": args.in_process,
        "jobs": 1 if args.in_process else args.jobs,
        "threads_per_job": None if args.in_process else args.threads,
        "run_dirs": str(runs_dir.relative_to(args.out)) if runs_dir.is_relative_to(args.out) else str(runs_dir),
    }
    res = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": settings,
        "meta": {k: v for k, v in meta.items() if k != "plans"},
        "targets": {"hv_ratio_reach": HV_TARGET, "overhead": OVERHEAD_TARGET, "memory": MEMORY_TARGET},
        "peak_rss_method": "VmHWM of each child process (/proc/self/status), read at the end of its run",
        "analysis": analysis,
        "runs": records,
        "overhead": overhead,
        "overhead_error": overhead_error,
        "profile": profile,
        "memory": memory_figures(mem_records),
        "bench_seconds": time.time() - bench_start,
        # Other processes on the machine slow every timing here; the load averages say whether there were any.
        "loadavg": {"start": load_start, "end": _loadavg()},
    }
    for rec in [*records, *mem_records]:
        rec.pop("_groups", None)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(res, indent=1, default=_jsonable) + "\n")
    md = markdown(res)
    (args.out / "results.md").write_text(md)
    plot(res, args.out / "queries_vs_hv.png")
    print(md)
    return 0


def _loadavg() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _jsonable(v):
    if hasattr(v, "item"):
        return v.item()
    if hasattr(v, "__dataclass_fields__"):
        return asdict(v)
    return str(v)


if __name__ == "__main__":
    sys.exit(main())
