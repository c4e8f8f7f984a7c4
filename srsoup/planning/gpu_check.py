"""``make gpu-check``: the paper's SD1.5 setting and FLUX.1-dev at full size, random weights, on one CUDA device.

    python -m srsoup.planning.gpu_check --out gpu-check            # on a CUDA machine (no network needed)
    python -m srsoup.planning.gpu_check --out /tmp/g --tiny DIR    # the same path on the CPU with tiny copies

Each case is a real ``srsoup run`` (the runner, the method, the ledger) with ``init=random`` for the model and
every hub reward, so nothing is downloaded. For each it records the wall time, the time in model calls (the
timers beside the eval/decode/query counters), the overhead ratio (wall / model time), peak GPU memory, denoiser
evals per second, and the achieved FLOP/s against ``srsoup plan``'s FLOP count at the device's peak (how close
the run comes to the physical limit). Writes ``results.json`` and ``results.md`` into ``--out``.

Cases: ``sd15``: SD1.5 512 px, T = 50, K = 30, the 6-weight grid, aesthetic vs JPEG compressibility, one prompt,
bf16 (the paper's setting, ``experiment=sd15_aes_compress``); ``flux_dev``: FLUX.1-dev 1024 px at T = 8, K = 8,
``chunk_size`` 8 (12B transformer: fewer steps keep the check within ten minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

CASES = {
    "sd15": [
        "experiment=sd15_aes_compress",
        "model.init=random",
        "rewards.aesthetic.init=random",
        "eval_rewards=none",
        "prompts.texts=[a photo of a hippopotamus]",
        "seeds=[0]",
        "dtype=bf16",
    ],
    "flux_dev": [
        "model=flux_dev",
        "model.init=random",
        "rewards=aes_compress",
        "rewards.aesthetic.init=random",
        "eval_rewards=none",
        "prompts.texts=[a photo of a hippopotamus]",
        "seeds=[0]",
        "sampler.steps=8",
        "guidance.num_candidates=8",
        "guidance.soup_end_step=3",
        "chunk_size=8",
        "dtype=bf16",
    ],
}
# The same cases on the CPU with the tiny copies of ``python -m srsoup.testing.checkpoints`` (a smoke test).
TINY = ["dtype=fp32", "device=cpu", "sampler.steps=2", "guidance.num_candidates=2", "guidance.soup_end_step=1"]


def tiny_overrides(name: str, folder: Path) -> list[str]:
    extra = ["model.resolution=32"] if name == "flux_dev" else []
    return [
        f"model.pretrained={folder / name}",
        "model.init=pretrained",
        f"rewards.aesthetic.pretrained={folder / 'aesthetic'}",
        "rewards.aesthetic.init=pretrained",
        *extra,
        *TINY,
    ]


def run_case(name: str, overrides: list[str], out: Path, accelerator) -> dict:
    """One case: plan it, run it, and put the run's own timers beside the plan's FLOPs."""
    import torch

    from srsoup import runner
    from srsoup.compose import compose
    from srsoup.planning import estimate
    from srsoup.spec import build_spec

    cfg = compose(overrides)
    spec = build_spec(cfg)
    est = estimate(spec)
    if spec.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(spec.device)
    start = time.perf_counter()
    run_dir = runner.run(cfg, out / name)
    wall = time.perf_counter() - start
    summary = json.loads((run_dir / "summary.json").read_text())
    timing = summary["timing"]
    model_seconds = timing["model_seconds"]
    dtype = summary["dtype"].replace("float32", "fp32").replace("bfloat16", "bf16").replace("float16", "fp16")
    achieved = est.flops_total / model_seconds if model_seconds else 0.0
    peak = accelerator.tflops[dtype] * 1e12 if accelerator else None
    return {
        "case": name,
        "overrides": overrides,
        "device": torch.cuda.get_device_name(spec.device) if spec.device.type == "cuda" else str(spec.device),
        "wall_seconds": round(wall, 2),
        "load_seconds": timing["load_seconds"],
        "model_seconds": model_seconds,
        "seconds": {k: v for k, v in timing.items() if k.endswith("_seconds")},
        # The run's own wall time after loading, over the time its model calls took (1.0 = no overhead).
        "overhead_ratio": round((summary["wall_seconds"] - timing["load_seconds"]) / model_seconds, 3)
        if model_seconds
        else None,
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated(spec.device) / 2**30, 2)
        if spec.device.type == "cuda"
        else None,
        "estimated_peak_gib": round(est.peak_bytes / 2**30, 2),
        "denoiser_evals": summary["denoiser_evals"],
        "reward_queries": summary["reward_queries"],
        "evals_per_second": round(summary["denoiser_evals"] / timing["denoiser_seconds"], 2),
        "plan_flops": est.flops_total,
        "achieved_tflops": round(achieved / 1e12, 2),
        "fraction_of_peak": round(achieved / peak, 3) if peak else None,
    }


def markdown(results: list[dict], accelerator) -> str:
    head = f"GPU check on {results[0]['device']}" + (f" ({accelerator.name} class)" if accelerator else "")
    lines = [
        head,
        "",
        "| case | wall s | model s | overhead | peak GiB (est.) | evals/s | TFLOP/s | of peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['case']} | {r['wall_seconds']} | {r['model_seconds']} | {r['overhead_ratio']} | "
            f"{r['peak_gpu_memory_gib']} ({r['estimated_peak_gib']}) | {r['evals_per_second']} | "
            f"{r['achieved_tflops']} | {r['fraction_of_peak']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m srsoup.planning.gpu_check", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", default="gpu-check", help="output folder (default gpu-check)")
    parser.add_argument("--tiny", help="run on the CPU with the tiny copies in this folder (smoke test)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    args = parser.parse_args(argv)
    import torch

    from srsoup.planning.hardware import detect_accelerator

    if not args.tiny and not torch.cuda.is_available():
        print("gpu-check: error: no CUDA device; use --tiny DIR for the CPU smoke test", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    accelerator = detect_accelerator()
    results = []
    for name in args.cases.split(","):
        overrides = CASES[name] + (tiny_overrides(name, Path(args.tiny)) if args.tiny else ["device=cuda"])
        results.append(run_case(name, overrides, out / "runs", accelerator))
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results, accelerator))
    print(markdown(results, accelerator), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
