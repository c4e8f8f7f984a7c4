"""The benchmark's plan: the named settings (t20, paper, quick), their runs deduplicated by fingerprint, budgets.

Every method runs at the same reward-query budgets B (weighted_sum's queries per prompt x seed group at the
setting's ``budget_ks``), each at the largest size that fits (``budget=fit`` lowers the method's ``budget_key``
from ``BIG_K``), beside ``none`` and one ``single`` run per reward, which fix the yardstick. SRSoup runs once per
variant, a variant being data: a name and the Hydra overrides that make it, with templates such as ``<2/5 T>``
(``expand``). Variants also run at the setting's low budgets (fractions of weighted_sum's queries at K), where the
whole-chain soup needs them; a variant that does not fit there is left out, not run.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
from dataclasses import dataclass, field

#: The benchmark's prompts: seen combinations of the embedded grammar (none of grammar.HELD_OUT), drawn by
#: ``grammar.sample_scenes(40, random.Random(2024))``, without repeats and without TUNING_PROMPTS.
BENCH_PROMPTS = (
    "a purple circle on a black background",
    "a white circle on a blue background",
    "a big black square on a yellow background",
    "a orange circle on a red background",
    "a small purple square on a black background",
    "a small yellow circle on a green background",
    "a big white square at the bottom on a yellow background",
    "a big purple circle on a white background",
    "a big blue circle at the right on a white background",
    "a small red triangle on a black background",
    "a purple circle on a white background",
    "a small blue circle at the left on a green background",
)
#: The prompts (with seeds 10 and 11) the methods' options were tuned on: never benchmarked on.
TUNING_PROMPTS = (
    "a white square at the top on a green background",
    "a big green circle at the top on a white background",
    "a purple triangle at the right on a red background",
    "a black square at the right on a orange background",
)
REWARDS = ("colorfulness", "jpeg_compressibility")
#: Methods with a budget curve (srsoup: one curve per variant); none and single always run (the yardstick).
CURVE_METHODS = ("weighted_sum", "srsoup", "select", "fk", "best_of_n")
#: SRSoup variants of every setting: the paper's window (2/5 of T), the whole chain as soup window, and every
#: chain sharing over the whole chain (``guidance=srsoup_pool``'s options).
VARIANTS = {
    "paper": ["guidance.soup_end_step=<2/5 T>"],
    "whole": ["guidance.soup_end_step=<T>"],
    "pool": [
        "guidance.soup_end_step=<T>",
        "guidance.soup_candidate_factor=0.5",
        "guidance.extra_anchors=all",
        "guidance.soup_share_radius=1.0",
    ],
}
HV_TARGET = 0.97  # "reaches weighted_sum's hypervolume" means >= 0.97x of it ...
CI_LOW_TARGET = 0.90  # ... with the lower end of its 95% interval >= 0.90x
OVERHEAD_TARGET = 1.10
MEMORY_TARGET = 1.2
MEMORY_CHUNK = 64  # chunk_size of the memory runs: rows per model batch
BIG_K = 4096  # budget runs start from this size so that budget=fit always lowers it to what the budget allows

# Each setting's defaults; every one is also a flag of `srsoup bench`. Low budgets are fractions of
# weighted_sum's queries at K, for the variants only (the whole chain reaches weighted_sum's front well below
# the smallest equal budget).
SETTINGS = {
    # T = 20 at weighted_sum's K = 8, budgets of K = 2, 4, 8; memory and overhead measured here.
    "t20": dict(
        steps=20,
        candidates=8,
        seeds=2,
        prompts=12,
        budget_ks="2,4,8",
        low_budgets="0.1,0.15",
        mem_candidates="8,64",
        mem_steps=5,
        overhead=True,
    ),
    # Paper-shaped: T = 50, K = 16 (the paper's SD runs use K = 30); budgets of K = 4, 8, 16.
    "paper": dict(
        steps=50,
        candidates=16,
        seeds=2,
        prompts=12,
        budget_ks="4,8,16",
        low_budgets="0.1,0.15",
        mem_candidates="",
        mem_steps=0,
        overhead=False,
    ),
    # Toy sizes for tests and smoke runs (--quick).
    "quick": dict(
        steps=5,
        candidates=4,
        seeds=1,
        prompts=1,
        budget_ks="2,4",
        low_budgets="0.3",
        mem_candidates="4,16",
        mem_steps=3,
        overhead=True,
    ),
}


@dataclass
class Settings:
    """What the benchmark measures: a named setting's sizes, budgets, methods and variants, user overrides."""

    name: str
    steps: int
    candidates: int
    seeds: int
    prompts: int
    budget_ks: str
    low_budgets: str
    mem_candidates: str
    mem_steps: int
    overhead: bool
    methods: str = ",".join(CURVE_METHODS)
    variants: dict[str, list[str]] = field(default_factory=lambda: copy.deepcopy(VARIANTS))
    overrides: list[str] = field(default_factory=list)  # appended to every run's overrides

    @classmethod
    def of(cls, name: str = "t20", **given) -> Settings:
        """The setting ``name`` with the values given (None = the setting's default)."""
        from srsoup.errors import SrsoupError

        if name not in SETTINGS:
            raise SrsoupError(f"--setting {name!r} is not a setting; valid: {', '.join(SETTINGS)}")
        values = {**SETTINGS[name], **{k: v for k, v in given.items() if v is not None}}
        return cls(name=name, **values)

    @property
    def quick(self) -> bool:
        return self.name == "quick"


@dataclass
class RunDef:
    """One benchmark configuration: a name, the Hydra overrides and what it varies (for the tables)."""

    name: str
    family: str  # the method (none | single | weighted_sum | srsoup | select | fk | best_of_n), memory, overhead
    overrides: list[str]
    params: dict = field(default_factory=dict)
    budget: int | None = None
    curve: str | None = None  # the budget curve it is a point of (weighted_sum, srsoup_<variant>, fk, ...)
    variant: str | None = None
    same_as: str | None = None  # an earlier run with the identical plan and fingerprint: not run again
    derived_from: str | None = None  # best_of_n: the larger run whose first N samples it is (samples.csv): not run
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


def quote_list(values) -> str:
    return "[" + ",".join(f"'{v}'" for v in values) + "]"


# --- variants and their templates -------------------------------------------------------------------------------
_TEMPLATE = re.compile(r"<([^<>]*)>")
_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?)|([TK])\b|([-+*/()]))")
VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def template_value(expr: str, steps: int, k: int) -> int:
    """A template's value: arithmetic over T (steps) and K (the run's size), juxtaposition multiplies ("2/5 T",
    "2K"), rounded half up to a whole number."""
    tokens, pos, code = [], 0, ""
    while pos < len(expr.rstrip()):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise ValueError(
                f"template <{expr}>: cannot read {expr[pos:]!r} (numbers, T, K, + - * / and brackets)"
            )
        tokens.append(m.group(m.lastindex))
        pos = m.end()
    for prev, tok in zip([None, *tokens], tokens):
        operand_end = prev is not None and (prev[0].isalnum() or prev == ")")
        if operand_end and (tok[0].isalnum() or tok == "("):
            code += "*"  # juxtaposition: "2/5 T" = 2/5*T, "2K" = 2*K
        code += {"T": str(steps), "K": str(k)}.get(tok, tok)
    try:
        value = eval(code, {"__builtins__": {}})  # noqa: S307 - only numbers and + - * / ( ), checked above
    except (SyntaxError, ZeroDivisionError) as err:
        raise ValueError(f"template <{expr}> does not evaluate ({err})") from None
    return math.floor(value + 0.5)


def expand(overrides: list[str], steps: int, k: int) -> list[str]:
    """The overrides with every ``<template>`` replaced by its value at T = ``steps`` and K = ``k``."""
    return [_TEMPLATE.sub(lambda m: str(template_value(m.group(1), steps, k)), o) for o in overrides]


def uses_k(overrides: list[str]) -> bool:
    """Whether a template depends on K (then the bench, not budget=fit, finds the size that fits a budget)."""
    return any(re.search(r"\bK\b|\dK", t) for o in overrides for t in _TEMPLATE.findall(o))


def split_overrides(text: str) -> list[str]:
    """Comma-separated overrides, commas inside brackets or quotes kept: "a=1,b=[[0.6,0.4]]" → two overrides."""
    parts, depth, quote, current = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[({":
            depth += 1
        elif ch in "])}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        current += ch
    return [p for p in [*parts, current.strip()] if p]


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME:OVERRIDE,OVERRIDE`` (a --variant flag) → (name, overrides); ValueError naming what is wrong."""
    name, colon, rest = text.partition(":")
    if not colon or not VARIANT_NAME.match(name):
        raise ValueError(f"--variant {text!r}: expected NAME:KEY=VALUE,... with NAME of letters, digits, _ . -")
    overrides = split_overrides(rest)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ValueError(f"--variant {text!r}: {bad[0]!r} is not a KEY=VALUE override")
    return name, overrides


# --- the runs ---------------------------------------------------------------------------------------------------
def bench_prompts(count: int) -> list[str]:
    """The first ``count`` of BENCH_PROMPTS."""
    from srsoup.errors import SrsoupError

    if not 1 <= count <= len(BENCH_PROMPTS):
        raise SrsoupError(f"--prompts={count} must be 1..{len(BENCH_PROMPTS)}")
    return list(BENCH_PROMPTS[:count])


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


def reference_runs(s: Settings) -> list[RunDef]:
    """none and single at K for each reward: the runs that fix the yardstick."""
    kk = f"guidance.num_candidates={s.candidates}"
    runs = [RunDef("none", "none", ["guidance=none"])]
    for r in REWARDS:
        runs.append(
            RunDef(f"single_{r}", "single", ["guidance=single", kk, f"guidance.reward={r}"], {"reward": r})
        )
    return runs


def curves(s: Settings) -> list[tuple[str, str, str | None, list[str]]]:
    """The budget curves, (curve, method, variant, overrides), of the methods asked for: weighted_sum always."""
    from srsoup.errors import SrsoupError

    methods = numbers(s.methods, str)
    unknown = sorted(set(methods) - set(CURVE_METHODS))
    if unknown:
        raise SrsoupError(
            f"--methods {unknown[0]!r} is not a benchmarked method; valid: {', '.join(CURVE_METHODS)}"
        )
    out = [("weighted_sum", "weighted_sum", None, ["guidance=weighted_sum"])]
    for method in [m for m in CURVE_METHODS[1:] if m in methods]:
        if method == "srsoup":
            out += [(f"srsoup_{v}", "srsoup", v, ["guidance=srsoup", *o]) for v, o in s.variants.items()]
        else:
            out.append((method, method, None, [f"guidance={method}"]))
    return out


def curve_runs(s: Settings, equal: list[int], low: list[int]) -> list[RunDef]:
    """weighted_sum and each srsoup variant at K, every curve at each budget, and the variants at the low ones."""
    runs = []
    for curve, method, variant, overrides in curves(s):
        if method in ("weighted_sum", "srsoup"):
            at_k = [overrides[0], f"guidance.num_candidates={s.candidates}", *overrides[1:]]  # a variant may set K
            runs.append(RunDef(curve, method, at_k, {"variant": variant}, curve=curve, variant=variant))
        for b in [*equal, *(low if method == "srsoup" else [])]:
            params = {"variant": variant, "budget": b}
            runs.append(RunDef(f"{curve}_B{b}", method, overrides, params, b, curve, variant))
    return runs


def budgets(s: Settings, ws_queries_per_k: int) -> tuple[list[int], list[int]]:
    """Equal budgets B (weighted_sum's queries per group at --budget-ks) and the variants' low budgets
    (--low-budgets, fractions of weighted_sum's queries at K; those equal to a budget run once)."""
    equal = [ws_queries_per_k * k for k in numbers(s.budget_ks, int)]
    low = {round(f * ws_queries_per_k * s.candidates) for f in numbers(s.low_budgets)}
    return equal, sorted(low - set(equal))


def memory_runs(s: Settings, prompt: str) -> list[RunDef]:
    """srsoup (the paper's window) at each --mem-candidates K on one prompt and seed, for its own peak RSS."""
    end = template_value("2/5 T", s.mem_steps, 0)
    return [
        RunDef(
            f"mem_K{m}",
            "memory",
            [
                "guidance=srsoup",
                f"guidance.num_candidates={m}",
                f"guidance.soup_end_step={end}",
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

    ``only``: the names to keep (and the baseline and yardstick runs), before their specs are built.
    """
    from srsoup.spec import build_spec

    base = base_overrides(s, prompts, seeds)
    ws = build_spec(compose([*base, "guidance=weighted_sum", "guidance.num_candidates=1", *s.overrides]))
    per_k = ws.plan.reward_queries
    equal, low = budgets(s, per_k)
    runs = [*reference_runs(s), *curve_runs(s, equal, low)]
    mem_runs = memory_runs(s, prompts[0])
    if only is not None:
        keep = {"weighted_sum", *(r.name for r in reference_runs(s))}
        runs = [r for r in runs if r.name in only | keep]
        mem_runs = [r for r in mem_runs if r.name in only]
    for rd in runs:
        rd.overrides = sized_overrides(rd, s, base)
    for rd in mem_runs:
        rd.overrides = [*base, *rd.overrides, *s.overrides]
    plans = resolve(runs, mem_runs)
    nest_pools(runs)
    skipped = [{"name": r.name, "why": r.error} for r in runs if r.error and r.budget in low]
    runs = [r for r in runs if not (r.error and r.budget in low)]
    meta = {
        "setting": s.name,
        "K": s.candidates,
        "ws_queries_per_k": per_k,
        "budgets": equal,
        "low_budgets": low,
        "curves": [c[0] for c in curves(s)],
        "skipped": skipped,
    }
    return Plan(runs, mem_runs, plans, meta)


def sized_overrides(rd: RunDef, s: Settings, base: list[str]) -> list[str]:
    """A run's full overrides: its templates expanded, and at a budget the size that fits it.

    The size is budget=fit's (lowered from BIG_K), except for a variant whose templates depend on K: there the
    bench finds the largest K whose plan, templates evaluated at that K, fits, and budget=fit only checks it.
    """
    from srsoup.guidance import METHODS

    head = [*base, *rd.overrides]
    if rd.budget is None:
        return [*expand(head, s.steps, s.candidates), *s.overrides]
    key = METHODS[rd.family].budget_key
    fit = ["budget=fit", f"budget.max_reward_queries={rd.budget}"]
    if not uses_k(rd.overrides):
        return [*expand(head, s.steps, 0), f"guidance.{key}={BIG_K}", *fit, *s.overrides]
    k = fit_templated(head, s, key, rd.budget)
    return [*expand(head, s.steps, k), f"guidance.{key}={k}", *fit, *s.overrides]


def fit_templated(overrides: list[str], s: Settings, key: str, budget: int) -> int:
    """The largest size whose plan, with the K templates evaluated at it, makes at most ``budget`` queries per
    group (the method's smallest size when none does: budget=fit then says that the budget is too small, and a
    variant that does not compose is reported by the run's own spec)."""
    import yaml

    from srsoup.errors import SrsoupError
    from srsoup.spec import build_method, build_spec

    try:
        spec = build_spec(compose([*expand(overrides, s.steps, 2), *s.overrides]))
    except Exception:  # noqa: BLE001 - the run's own spec reports it (``_spec``), as for every other run
        return 2
    cls = spec.method_cls
    templated = {}
    for o in overrides:
        name, _, value = o.partition("=")
        if name.startswith("guidance.") and uses_k([o]):
            templated[name.removeprefix("guidance.")] = value
    best = cls.budget_min
    for k in range(cls.budget_min, budget + 1):
        sized = {n: yaml.safe_load(expand([v], s.steps, k)[0]) for n, v in templated.items()}
        options = {**spec.guidance, **sized, key: k}
        try:
            queries = build_method(cls, options, spec.grid, spec.reward_names).plan(spec.steps).reward_queries
        except SrsoupError:
            continue  # e.g. an odd K with antithetic pairs
        if queries > budget:
            break
        best = k
    return best


def resolve(runs: list[RunDef], mem_runs: list[RunDef]) -> dict[str, dict]:
    """Build each run's spec: its planned counts, its size, and ``same_as`` where an earlier run is identical."""
    seen: dict[str, str] = {}
    plans: dict[str, dict] = {}
    for rd in [*runs, *mem_runs]:
        spec = _spec(rd)
        if spec is None:
            continue
        key = spec.method_cls.budget_key
        rd.params["size"] = spec.guidance.get(key) if key else None
        rd.params["size_label"] = spec.method_cls.budget_label
        plans[rd.name] = {
            "reward_queries": spec.plan.reward_queries,
            "denoiser_evals": spec.plan.denoiser_evals,
            "exact": spec.plan.exact,
            "phases": spec.plan.phases,
        }
        fingerprint = json.dumps([spec.fingerprint(), spec.seeds], sort_keys=True, default=str)
        if fingerprint in seen and rd.family != "memory":
            rd.same_as = seen[fingerprint]
        else:
            seen.setdefault(fingerprint, rd.name)
    return plans


def nest_pools(runs: list[RunDef]) -> None:
    """best_of_n's smaller budgets are the first N samples of its largest run (sample n is the same whatever N
    is): mark them ``derived_from`` it, so that only the largest runs (``analyse.derived_figures`` picks from its
    samples.csv as ``BestOfN.finish`` would)."""
    pools = [r for r in runs if r.family == "best_of_n" and not (r.error or r.same_as) and r.params.get("size")]
    if len(pools) < 2:
        return
    largest = max(pools, key=lambda r: r.params["size"])
    for rd in pools:
        if rd is not largest:
            rd.derived_from = largest.name


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
    """The srsoup run at K of the first variant (the paper's window by default) once more, in its own run dir, to
    be run alone for the overhead."""
    first = next((r for r in plan.runs if r.family == "srsoup" and r.budget is None), None)
    if first is None or first.error:
        return None
    return RunDef(f"overhead_{first.name}", "overhead", first.overrides, dict(first.params))


def planned_totals(plan: Plan, groups: int, overhead_groups: int) -> dict:
    """Denoiser evals and reward queries the plan will make, by method and in all: each run over the ``groups``
    (a run identical to an earlier one counted once), the overhead run (and its profile) over ``overhead_groups``,
    each memory run on one group."""
    by_family: dict[str, dict[str, int]] = {}

    def add(family: str, name: str, times: int) -> None:
        p = plan.plans.get(name)
        if p is None or not times:
            return
        f = by_family.setdefault(family, {"runs": 0, "denoiser_evals": 0, "reward_queries": 0})
        f["runs"] += 1
        f["denoiser_evals"] += p["denoiser_evals"] * times
        f["reward_queries"] += p["reward_queries"] * times

    for rd in plan.runs:
        if not (rd.same_as or rd.derived_from or rd.error):
            add(rd.family, rd.name, groups)
    probe = overhead_run(plan)
    if probe is not None:
        add("overhead", probe.name.removeprefix("overhead_"), overhead_groups)
    for rd in plan.mem_runs:
        add("memory", rd.name, 1)
    total = {k: sum(f[k] for f in by_family.values()) for k in ("runs", "denoiser_evals", "reward_queries")}
    return {"by_family": by_family, "total": total, "groups": groups}
