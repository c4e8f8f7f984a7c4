"""Full-size models on this machine's CPU, random weights, no download: seconds per call, peak RSS, overhead.

    python -m srsoup.bench.realsize --out bench/realsize      # about an hour on 2 cores; writes results.{json,md}

``--cases`` runs a subset and keeps the figures of the folder's other cases (a complete run is not run again);
cases that fit but were never run are listed as such. Every case is a real ``srsoup run`` in its own child process
(``srsoup.bench.execute``), so its peak RSS is its own; seconds per denoiser eval, decode and reward query come
from the run's own timers (summary.json ``timing``) divided by its counts. Cases:

- ``sd15``: SD1.5 at 512 px, a short srsoup run (T = 2, K = 2, 3 weights, aesthetic at random init vs JPEG
  compressibility): every kind of call, and the whole-run overhead ratio (wall / time in model calls).
- ``sd15_chunk{2,8,32}``: the same model with 16 candidates a step at three ``chunk_size`` values: peak RSS
  against the batch rows, beside ``srsoup plan``'s estimate; ``sd15_chunk8_bf16`` as ``sd15_chunk8`` with the
  weights stored in bf16 (``storage_dtype``): what layerwise casting costs in time and saves in memory.
- ``sdxl``: SDXL at 1024 px, one unguided step (one eval, one decode; its calls are minutes each on a CPU).
- the other models: one unguided step computed in fp32 with the weights stored in bf16, or in fp8_e4m3 where bf16
  does not fit (``storage_dtype``; bf16 compute runs far below fp32 speed on a CPU without native bf16), where
  ``srsoup plan`` says they fit in ``FIT`` (90%) of this machine's RAM, else recorded as not fitting, with the
  estimate.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

PROMPT = "prompts.texts=[a photo of a hippopotamus]"
COMMON = [PROMPT, "seeds=[0]", "device=cpu", "eval_rewards=none", "model.init=random", "progress=false"]
SRSOUP = ["guidance=srsoup", "weights=coarse", "rewards=aes_compress", "rewards.aesthetic.init=random"]
ONE_STEP = ["guidance=none", "sampler.steps=1", "rewards=colorful_compress"]
CASES = {
    # chunk_size 8: SD1.5's default 32 is refused by the memory check on a 24 GiB machine (37.6 GiB estimated).
    "sd15": [
        "model=sd15",
        *SRSOUP,
        "sampler.steps=2",
        "guidance.num_candidates=2",
        "guidance.soup_end_step=1",
        "chunk_size=8",
    ],
    **{
        f"sd15_chunk{c}": [
            "model=sd15",
            *SRSOUP,
            "sampler.steps=1",
            "guidance.num_candidates=8",
            f"chunk_size={c}",
        ]
        for c in (2, 8, 32)
    },
    # storage_dtype's cost and saving at full size: sd15_chunk8 with the UNet and text encoder stored in bf16
    "sd15_chunk8_bf16": [
        "model=sd15",
        *SRSOUP,
        "sampler.steps=1",
        "guidance.num_candidates=8",
        "chunk_size=8",
        "storage_dtype=bf16",
    ],
    "sdxl": ["model=sdxl", *ONE_STEP],
}
OTHERS = ("sd35m", "sd35l", "flux_dev", "flux_schnell", "sana")
STORAGES = ("bf16", "fp8_e4m3")  # the others' weights, the widest that fits first
# Share of RAM a case's estimated peak may take. sd35m with fp8 weights peaked at 20.9 GiB of 23.5 (estimate 20.45,
# its T5-XXL's 16-bit copy while it loads included); the other processes of a benchmark machine need the rest.
FIT = 0.9


def per_call(summary: dict) -> dict:
    """Seconds per denoiser eval, decode and reward query of a run, from its timers and counts."""
    timing, plan = summary["timing"], summary["plan"]["per_group"]
    groups = summary["groups_complete"] or 1
    queries = summary["reward_queries"]
    return {
        "denoiser_eval_s": round(timing.get("denoiser_seconds", 0) / max(summary["denoiser_evals"], 1), 3),
        "decode_s": round(timing.get("decode_seconds", 0) / max(plan["decodes"] * groups, 1), 3),
        "encode_s": round(timing["encode_seconds"] / groups, 3) if "encode_seconds" in timing else None,
        "reward_query_s": round(timing.get("reward_seconds", 0) / queries, 4) if queries else None,
        "load_s": timing.get("load_seconds"),
        "model_s": timing.get("model_seconds"),
        "wall_s": summary["wall_seconds"],
        "overhead": round(summary["wall_seconds"] / (timing["model_seconds"] + timing["load_seconds"]), 3),
    }


def estimate_gib(overrides: list[str]) -> dict:
    """``srsoup plan``'s weights and peak memory for a configuration (GiB); each configuration is built on the
    meta device once per invocation (the fit check, a kept case's refresh and a case's record share it)."""
    return dict(_estimate_gib(tuple(overrides)))


@functools.cache
def _estimate_gib(overrides: tuple[str, ...]) -> dict:
    from srsoup.compose import compose
    from srsoup.planning import estimate
    from srsoup.spec import build_spec

    est = estimate(build_spec(compose(list(overrides)), planning=True))
    return {"weights_gib": round(est.weight_bytes / 2**30, 2), "estimate_gib": round(est.peak_bytes / 2**30, 2)}


def run_case(name: str, overrides: list[str], runs: Path, threads: int) -> dict:
    from srsoup.bench.execute import launch
    from srsoup.bench.plan import RunDef

    side = launch(RunDef(name, "realsize", overrides), runs, in_process=False, threads=threads)
    record = {"case": name, "overrides": overrides, **estimate_gib(overrides)}
    if side.get("error"):
        return {**record, "error": side["error"]}
    record["threads"] = side["threads"]  # the child's own torch threads (also for a reused, complete run)
    summary = json.loads((runs / name / "summary.json").read_text())
    return {**record, **per_call(summary), "peak_rss_gib": round(side["peak_rss_mb"] / 1024, 2)}


def other_cases(ram_gib: float) -> tuple[dict[str, list[str]], list[dict]]:
    """One fp32 unguided step of each other model, its weights stored in the widest of ``STORAGES`` with which
    ``srsoup plan`` says it fits in ``FIT`` of the RAM; the others as records, in a fixed order, with the estimate
    at the narrowest storage."""
    cases, too_big = {}, []
    for model in OTHERS:
        for storage in STORAGES:
            overrides = [f"model={model}", *ONE_STEP, "dtype=fp32", f"storage_dtype={storage}"]
            est = estimate_gib([*overrides, *COMMON])
            if est["estimate_gib"] <= FIT * ram_gib:
                cases[model] = overrides
                break
        else:
            too_big.append(
                {"case": model, "overrides": overrides, **est, "not_run": f"does not fit in {FIT:.0%} of RAM"}
            )
    return cases, too_big


def _label(record: dict) -> str:
    """The case's name, with its weights' storage dtype when it has one."""
    stored = [o.split("=", 1)[1] for o in record.get("overrides", []) if o.startswith("storage_dtype=")]
    return f"{record['case']} ({stored[0]} weights)" if stored else record["case"]


def _earlier(path: Path) -> list[dict]:
    return json.loads(path.read_text())["results"] if path.exists() else []


def markdown(results: list[dict], machine: dict) -> str:
    lines = [
        f"Full size on {machine['cpu']} ({machine['logical_cores']} cores, {machine['ram_gib']} GiB RAM), "
        f"torch {machine['torch']}, random weights (`init=random`), one child process a case.",
        "",
        "| case | threads | s / eval | s / decode | s / prompt encode | s / query | load s | "
        "wall / (model + load) | peak RSS GiB | plan: weights / peak GiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r or "not_run" in r:
            why = r.get("error") or r["not_run"]
            lines.append(f"| {_label(r)} |{' – |' * 8} {r['weights_gib']} / {r['estimate_gib']} ({why}) |")
            continue
        lines.append(
            f"| {_label(r)} | {r.get('threads', '–')} | {r['denoiser_eval_s']} | {r['decode_s']} | "
            f"{r.get('encode_s') or '–'} | {r['reward_query_s'] or '–'} | {r['load_s']} | {r['overhead']} | "
            f"{r['peak_rss_gib']} | "
            f"{r['weights_gib']} / {r['estimate_gib']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m srsoup.bench.realsize", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/realsize", help="output folder (default bench/realsize)")
    parser.add_argument("--cases", help="comma-separated subset of the cases")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per child (0 = all cores)")
    args = parser.parse_args(argv)
    from srsoup.bench.execute import machine

    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    info = machine()
    fitting, too_big = other_cases(info["ram_gib"])
    cases = {name: [*overrides, *COMMON] for name, overrides in {**CASES, **fitting}.items()}
    chosen = args.cases.split(",") if args.cases else list(cases)
    unknown = [name for name in chosen if name not in {*cases, *OTHERS}]
    if unknown:
        print(f"realsize: error: --cases {','.join(unknown)}: valid cases are {', '.join(cases)}", file=sys.stderr)
        return 2
    # Cases measured by an earlier invocation into the same folder are kept unless run again or changed since;
    # their estimates are srsoup plan's of today.
    done = {
        r["case"]: {**r, **estimate_gib(r["overrides"])}
        for r in _earlier(out / "results.json")
        if "not_run" not in r and r["overrides"] == cases.get(r["case"]) and r["case"] not in chosen
    }
    for name in chosen:
        if name in cases:
            done[name] = run_case(name, cases[name], out / "runs", args.threads)
    results = [
        done.get(name)
        or {"case": name, "overrides": overrides, **estimate_gib(overrides), "not_run": "not run yet"}
        for name, overrides in cases.items()
    ]
    results += too_big
    (out / "results.json").write_text(json.dumps({"machine": info, "results": results}, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results, info))
    print(markdown(results, info), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
