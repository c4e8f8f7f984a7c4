"""The benchmark's plan: settings (FULL, QUICK), the runs it makes, deduplicated by fingerprint, and budgets."""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass, field

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
MEMORY_CHUNK = 64  # chunk_size of the memory runs: rows per model batch
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


@dataclass
class Settings:
    """What the benchmark measures: sizes, the budget and variant lists (comma-separated), user overrides."""

    steps: int
    candidates: int
    seeds: int
    prompts: int
    budget_ks: str
    full_soup_budgets: str
    bon_ks: str
    thresholds: str
    mem_candidates: str
    mem_steps: int
    adaptive_end: float = 3 / 5
    overrides: list[str] = field(default_factory=list)  # appended to every run's overrides
    quick: bool = False

    @classmethod
    def of(cls, quick: bool = False, **given) -> Settings:
        """QUICK or FULL, with the values given (None = the default)."""
        values = {**(QUICK if quick else FULL), **{k: v for k, v in given.items() if v is not None}}
        return cls(quick=quick, **values)


@dataclass
class RunDef:
    """One benchmark configuration: a name, the Hydra overrides and what it varies (for the tables)."""

    name: str
    family: str  # none | single | weighted_sum | srsoup | srsoup_correction | srsoup_adaptive | best_of_n | memory
    overrides: list[str]
    params: dict = field(default_factory=dict)
    budget: int | None = None
    same_as: str | None = None  # an earlier run with the identical plan and fingerprint: not run again
    error: str | None = None  # why it could not be planned (reported, not fatal)


@dataclass
class Plan:
    """The runs (analysed together), the memory runs (apart), each run's planned counts, and the budgets."""

    runs: list[RunDef]
    mem_runs: list[RunDef]
    plans: dict[str, dict]
    meta: dict


def numbers(text: str, kind=float) -> list:
    """The values of a comma-separated list option ("" = none)."""
    return [kind(x) for x in text.split(",") if x]


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


def soup_end(steps: int, fraction: float) -> int:
    return max(1, int(fraction * steps + 0.5))


def quote_list(values) -> str:
    return "[" + ",".join(f"'{v}'" for v in values) + "]"


def bench_prompts(count: int, overrides: list[str]) -> list[str]:
    """The first ``count`` of the embedded grammar's prompts (prompts=tiny) and EXTRA_PROMPTS."""
    from srsoup.errors import SrsoupError

    prompts = [*compose([*overrides, "prompts=tiny"]).prompts.texts, *EXTRA_PROMPTS]
    if not 1 <= count <= len(prompts):
        raise SrsoupError(f"--prompts={count} must be 1..{len(prompts)}")
    return prompts[:count]


def base_overrides(s: Settings, prompts: list[str], seeds: list[int]) -> list[str]:
    """What every run shares (the user's overrides come last, after each run's own)."""
    return [
        f"sampler.steps={s.steps}",
        f"seeds=[{','.join(map(str, seeds))}]",
        f"prompts.texts={quote_list(prompts)}",
        "rewards=colorful_compress",
        "weights=default",
        "progress=false",
        "device=cpu",
        "dtype=fp32",
    ]


def method_runs(s: Settings) -> list[RunDef]:
    """Every method at K: none, single, weighted_sum, srsoup's soup windows, corrections and adaptive switch."""
    k, main_end = s.candidates, soup_end(s.steps, MAIN_FRACTION)
    kk = f"guidance.num_candidates={k}"
    runs = [RunDef("none", "none", ["guidance=none"])]
    runs += [
        RunDef(f"single_{r}", "single", ["guidance=single", kk, f"guidance.reward={r}"], {"K": k, "reward": r})
        for r in REWARDS
    ]
    runs.append(RunDef("weighted_sum", "weighted_sum", ["guidance=weighted_sum", kk], {"K": k}))
    ends = {}
    for frac in SOUP_FRACTIONS:
        ends.setdefault(soup_end(s.steps, frac), frac)  # small T can map two fractions to one step: run it once
    for end, frac in ends.items():
        params = {"K": k, "soup_end_step": end, "fraction": round(frac, 3), "mean_correction": "reference"}
        runs.append(RunDef(f"srsoup_end{end}", "srsoup", srsoup(k, end), params))
    for corr in ("exact", "off"):
        params = {"K": k, "soup_end_step": main_end, "mean_correction": corr}
        overrides = [*srsoup(k, main_end), f"guidance.mean_correction={corr}"]
        runs.append(RunDef(f"srsoup_end{main_end}_{corr}", "srsoup_correction", overrides, params))
    return runs + adaptive_runs(s)


def srsoup(k: int, end: int) -> list[str]:
    return ["guidance=srsoup", f"guidance.num_candidates={k}", f"guidance.soup_end_step={end}"]


def adaptive_runs(s: Settings) -> list[RunDef]:
    """srsoup with switch=adaptive at each threshold, the window ending at ``adaptive_end`` of T at the latest."""
    end = soup_end(s.steps, s.adaptive_end)
    runs = []
    for thr in numbers(s.thresholds):
        overrides = [*srsoup(s.candidates, end), "guidance.switch=adaptive", f"guidance.switch_threshold={thr}"]
        params = {"K": s.candidates, "switch": "adaptive", "switch_threshold": thr, "soup_end_step": end}
        runs.append(RunDef(f"srsoup_adaptive{thr:g}", "srsoup_adaptive", overrides, params))
    return runs


def budgets(s: Settings, ws_queries_per_k: int) -> tuple[list[int], list[int], list[int]]:
    """Equal budgets B (weighted_sum's queries per group at --budget-ks), the whole-chain soup's extra low budgets
    (--full-soup-budgets, fractions of weighted_sum's queries at K), and best_of_n's budgets (--bon-ks)."""
    equal = [ws_queries_per_k * k for k in numbers(s.budget_ks, int)]
    low = {round(f * ws_queries_per_k * s.candidates) for f in numbers(s.full_soup_budgets)}
    return equal, sorted(low - set(equal)), [ws_queries_per_k * k for k in numbers(s.bon_ks, int)]


def budget_runs(s: Settings, equal: list[int], low: list[int], bon: list[int]) -> list[RunDef]:
    """Each method at each budget (``budget=fit`` lowers K from BIG_K to what fits).

    SRSoup has two budget curves: the paper's window (2/5 of T) and the whole chain in the soup window, which
    spends queries on the anchors only and so also runs at the low budgets, where the other methods could fit no
    more than K=1 or 2. best_of_n spends N·T denoiser evals for N·M queries (N = B/M): at equal queries it makes
    several times the evals of the guided methods, so it runs at its own (by default the smallest) budgets only.
    """
    whole = f"srsoup_end{s.steps}"
    methods = [("weighted_sum", "weighted_sum", ["guidance=weighted_sum"])]
    for end in curve_ends(s):
        methods.append((f"srsoup_end{end}", "srsoup", ["guidance=srsoup", f"guidance.soup_end_step={end}"]))
    methods.append(("best_of_n", "best_of_n", ["guidance=best_of_n"]))
    runs = []
    for b in [*equal, *low]:
        for prefix, family, overrides in methods:
            if (family == "best_of_n" and b not in bon) or (b in low and prefix != whole):
                continue
            fit = [f"guidance.num_candidates={BIG_K}", "budget=fit", f"budget.max_reward_queries={b}"]
            runs.append(RunDef(f"{prefix}_B{b}", family, [*overrides, *fit], {"budget": b}, budget=b))
    return runs


def curve_ends(s: Settings) -> list[int]:
    """Soup windows with a budget curve: the paper's 2/5 of T and the whole chain."""
    return sorted({soup_end(s.steps, MAIN_FRACTION), s.steps})


def memory_runs(s: Settings, prompt: str) -> list[RunDef]:
    """srsoup at each --mem-candidates K on one prompt and seed, for the peak RSS of its own child process."""
    end = soup_end(s.mem_steps, MAIN_FRACTION)
    return [
        RunDef(
            f"mem_K{m}",
            "memory",
            [
                *srsoup(m, end),
                f"chunk_size={MEMORY_CHUNK}",
                f"sampler.steps={s.mem_steps}",
                f"prompts.texts={quote_list([prompt])}",
                "seeds=[0]",
            ],
            {"K": m, "chunk_size": MEMORY_CHUNK, "steps": s.mem_steps, "soup_end_step": end},
        )
        for m in numbers(s.mem_candidates, int)
    ]


def plan_runs(s: Settings, prompts: list[str], seeds: list[int], only: set[str] | None = None) -> Plan:
    """The benchmark's runs and memory runs, deduplicated by fingerprint; budgets in reward queries per group.

    ``only``: the names to keep (and weighted_sum, the baseline), before their specs are built.
    """
    from srsoup.spec import build_spec

    base = base_overrides(s, prompts, seeds)
    ws = build_spec(compose([*base, "guidance=weighted_sum", "guidance.num_candidates=1", *s.overrides]))
    per_k = ws.plan.reward_queries
    equal, low, bon = budgets(s, per_k)
    runs = [*method_runs(s), *budget_runs(s, equal, low, bon)]
    mem_runs = memory_runs(s, prompts[0])
    if only is not None:
        runs = [r for r in runs if r.name in only or r.name == "weighted_sum"]
        mem_runs = [r for r in mem_runs if r.name in only]
    for rd in [*runs, *mem_runs]:
        rd.overrides = [*base, *rd.overrides, *s.overrides]
    meta = {
        "ws_queries_per_k": per_k,
        "budgets": equal,
        "full_soup_budgets": low,
        "srsoup_curves": [f"srsoup_end{e}" for e in curve_ends(s)],
        "main_soup_end": soup_end(s.steps, MAIN_FRACTION),
        "adaptive_soup_end": soup_end(s.steps, s.adaptive_end),
    }
    return Plan(runs, mem_runs, resolve(runs, mem_runs), meta)


def resolve(runs: list[RunDef], mem_runs: list[RunDef]) -> dict[str, dict]:
    """Build each run's spec: its planned counts, K, and ``same_as`` for a run identical to an earlier one."""
    seen: dict[str, str] = {}
    plans: dict[str, dict] = {}
    for rd in [*runs, *mem_runs]:
        spec = _spec(rd)
        if spec is None:
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
    return plans


def _spec(rd: RunDef):
    """The run's spec, or None with ``rd.error`` set (a run that cannot be planned is reported, not fatal)."""
    from srsoup.errors import SrsoupError
    from srsoup.spec import build_spec

    try:
        return build_spec(compose(rd.overrides))
    except SrsoupError as err:
        rd.error = str(err)
    except Exception as err:  # noqa: BLE001 - e.g. an override this configuration does not take
        rd.error = f"{type(err).__name__}: {err}".splitlines()[0]
    return None


def overhead_run(plan: Plan) -> RunDef | None:
    """The srsoup run at the paper's window once more, in its own run dir, to be run alone for the overhead."""
    main = next((r for r in plan.runs if r.name == f"srsoup_end{plan.meta['main_soup_end']}"), None)
    if main is None or main.error:
        return None
    return RunDef(f"overhead_{main.name}", "overhead", main.overrides, dict(main.params))
