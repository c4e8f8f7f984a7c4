"""``srsoup plan [overrides]``: what a run will cost, printed before anything is loaded or written.

Counts per group and in total (reward queries per reward, denoiser evals, decodes), parameters and weight memory
of every model in the run's dtype, FLOPs per call and in total, an estimate of peak accelerator memory for the
chosen ``chunk_size``, and an estimated wall time on a named accelerator class at a stated utilisation. The same
memory estimate lets ``srsoup run`` refuse a run that cannot fit, up front.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field

from srsoup.errors import SrsoupError
from srsoup.planning.costs import ACTIVATION_FACTOR, Part, backbone_part, reward_parts
from srsoup.planning.hardware import ACCELERATORS, GIB, Accelerator, device_memory_bytes

__all__ = ["Estimate", "check_memory", "estimate", "main"]


@dataclass
class Estimate:
    groups: int
    per_group: dict[str, int]  # reward_queries, denoiser_evals, decodes, encode_prompt, eval_scores
    queries_by_reward: dict[str, int]  # per group
    parts: list[Part]
    flops_per_group: float
    weight_bytes: int
    activation_bytes: int
    chunk_size: int
    notes: list[str] = field(default_factory=list)
    load_bytes: int = 0  # beyond the weights while a component loads wider than it is stored (storage_dtype fp8)

    @property
    def peak_bytes(self) -> int:
        return self.weight_bytes + max(self.activation_bytes, self.load_bytes)

    @property
    def flops_total(self) -> float:
        return self.flops_per_group * self.groups

    def seconds(self, accelerator: Accelerator, dtype: str, utilization: float) -> float:
        return self.flops_total / (accelerator.tflops[dtype] * 1e12 * utilization)


def estimate(spec) -> Estimate:
    """Counts from the method's plan; models, FLOPs and memory from their architectures on the meta device."""
    backbone, image_shape = backbone_part(spec)
    parts = [backbone, *reward_parts(spec, image_shape)]
    plan, chains = spec.plan, len(spec.weights)
    per_group = {
        "reward_queries": plan.reward_queries,
        "denoiser_evals": plan.denoiser_evals,
        "decodes": plan.decodes,
        "encode_prompt": 1,
        "eval_scores": chains * (len(spec.rewards) + len(spec.eval_rewards)),
    }
    flops = backbone.calls["denoiser_eval"].flops * plan.denoiser_evals
    flops += backbone.calls["decode"].flops * plan.decodes + backbone.calls["encode_prompt"].flops
    for part in parts[1:]:
        if "query" in part.calls:
            n = plan.reward_queries_by_reward.get(part.name, 0) + chains
            flops += part.calls["query"].flops * n
    element = _element_size(spec.dtype)
    # Rows of the largest batch of each kind of call: chunk_size (a CFG batch holds chunk_size // 2 pairs, at least
    # one), and never more items than the group makes of that call in all (a group's calls are never batched with
    # another group's), so that a short run is not refused for a batch it never builds.
    per_eval = backbone.calls["denoiser_eval"].rows
    scored = max(plan.decodes, chains)  # images scored in one call: decoded candidates or the chains' final images
    rows = {
        "denoiser_eval": min(max(spec.chunk_size, per_eval), per_eval * max(plan.denoiser_evals, 1)),
        "decode": min(spec.chunk_size, max(plan.decodes, 1)),
        "encode_prompt": 2,
        "query": min(spec.chunk_size, max(scored, 1)),
    }
    activation = max(
        rows[kind] * call.activation_per_row * element * ACTIVATION_FACTOR
        for part in parts
        for kind, call in part.calls.items()
    )
    notes = [f"{p.name}: {p.note}" for p in parts if p.note.startswith(("not estimated", "query FLOPs"))]
    return Estimate(
        groups=len(spec.groups),  # this job's shard of the prompts x seeds
        per_group=per_group,
        queries_by_reward=dict(plan.reward_queries_by_reward),
        parts=parts,
        flops_per_group=float(flops),
        weight_bytes=sum(p.weight_bytes for p in parts),
        activation_bytes=int(activation),
        chunk_size=spec.chunk_size,
        notes=notes,
        load_bytes=sum(p.load_bytes for p in parts),
    )


def _element_size(dtype) -> int:
    import torch

    return torch.empty((), dtype=dtype).element_size()


def check_memory(spec) -> Estimate | None:
    """Refuse, with one line, a run whose estimated peak memory exceeds its device's; None when not estimable."""
    capacity = device_memory_bytes(spec.device)
    if capacity is None:
        return None
    try:
        est = estimate(spec)
    except SrsoupError:
        raise
    except Exception as err:  # noqa: BLE001 - a model the estimator cannot build (e.g. a user backbone) is not refused
        import logging

        logging.getLogger("srsoup").info("no memory estimate for this model: %s", str(err).splitlines()[0])
        return None
    if est.peak_bytes > capacity:
        raise SrsoupError(
            f"estimated peak memory {est.peak_bytes / GIB:.1f} GiB (weights {est.weight_bytes / GIB:.1f} GiB + "
            f"{_beyond_weights(est, 1)}) exceeds "
            f"{spec.device}'s {capacity / GIB:.1f} GiB; lower chunk_size, use dtype=bf16/fp16 on a GPU, or store "
            "the weights narrower (storage_dtype=bf16 or fp8_e4m3)"
        )
    return est


def _beyond_weights(est: Estimate, digits: int) -> str:
    """What the peak holds beyond the weights: the activations, or a component's wide copy while it loads."""
    act = f"{est.activation_bytes / GIB:.{digits}f} GiB activations at chunk_size={est.chunk_size}"
    if est.load_bytes <= est.activation_bytes:
        return act
    load = f"{est.load_bytes / GIB:.{digits}f} GiB while loading"
    return f"{load} (a component's copy before it is cast to storage_dtype; {act})"


def _num(n: float) -> str:
    for unit, size in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.3g}"


def render(spec, est: Estimate, accelerator: Accelerator, utilization: float) -> str:
    """The plan as text: one block each for the run, counts, models, FLOPs, memory and time."""
    from srsoup.devices import dtype_name

    dtype = dtype_name(spec.dtype)
    stored = spec.storage_dtype
    precision = f"{dtype}, weights stored in {dtype_name(stored)}" if stored is not None else dtype
    g = est.groups
    lines = [
        f"srsoup plan: {spec.method} on {spec.model.get('name')} ({precision}, {spec.device}), T={spec.steps}, "
        f"{len(spec.weights)} weights x {len(spec.rewards)} rewards; {len(spec.prompt_indices)} prompts x "
        f"{len(spec.seeds)} seeds = {g} groups",
        "",
        f"{'counts':<22}{'per group':>14}{'total':>16}",
    ]
    for key, label in (
        ("reward_queries", "reward queries"),
        ("denoiser_evals", "denoiser evals"),
        ("decodes", "decodes"),
        ("eval_scores", "final-image scores"),
    ):
        lines.append(f"  {label:<20}{est.per_group[key]:>14,}{est.per_group[key] * g:>16,}")
    for name, q in est.queries_by_reward.items():
        lines.append(f"    {name:<18}{q:>14,}{q * g:>16,}")
    width = max(len(f"{p.name} ({p.role})") for p in est.parts) + 2
    lines += ["", f"{'models':<{width + 2}}{'params':>8}{'weights':>12}   GFLOP per call"]
    for p in est.parts:
        calls = ", ".join(f"{k.replace('_', ' ')} {c.flops / 1e9:,.1f}" for k, c in p.calls.items()) or p.note
        label = f"{p.name} ({p.role})"
        lines.append(f"  {label:<{width}}{_num(p.params):>8}{p.weight_bytes / GIB:>8.2f} GiB   {calls}")
    seconds = est.seconds(accelerator, dtype, utilization)
    lines += [
        "",
        f"FLOPs: {_num(est.flops_per_group)} per group, {_num(est.flops_total)} in all",
        f"peak memory (estimate): {est.weight_bytes / GIB:.2f} GiB weights + {_beyond_weights(est, 2)} = "
        f"{est.peak_bytes / GIB:.2f} GiB ({accelerator.name}: {accelerator.memory_gib:g} GiB)",
        f"time (estimate): {accelerator.name} at {accelerator.tflops[dtype]:g} TFLOP/s {dtype} peak x "
        f"{utilization:.0%} utilisation = {seconds / g:,.1f} s per group, {seconds / 3600:,.2f} h in all",
    ]
    lines += [f"note: {n}" for n in est.notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """Entry point of ``srsoup plan``; returns the exit code (2 on bad input)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="srsoup plan",
        description="What a run will cost, before anything is loaded or written: counts, parameters and weight "
        "memory, FLOPs, peak memory and wall time (estimates). Takes the overrides of srsoup run.",
    )
    parser.add_argument(
        "--accelerator",
        choices=sorted(ACCELERATORS),
        help="accelerator class for the time estimate (default: this machine's GPU if known, else h100)",
    )
    parser.add_argument("--utilization", type=float, default=0.35, help="fraction of peak FLOP/s (default 0.35)")
    parser.add_argument("--json", action="store_true", help="print the estimate as JSON")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for srsoup run")
    from srsoup.compose import take_config_dir

    args = parser.parse_args(take_config_dir(list(argv)))
    if not 0 < args.utilization <= 1:
        print(f"srsoup plan: error: --utilization={args.utilization} must be in (0, 1]", file=sys.stderr)
        return 2
    import os

    from srsoup.compose import compose
    from srsoup.spec import build_spec

    os.environ["HF_HUB_OFFLINE"] = "1"  # a plan never downloads: hub models and rewards are built at random init

    try:
        spec = build_spec(compose(args.overrides), planning=True)
        est = estimate(spec)
    except SrsoupError as err:
        print(f"srsoup plan: error: {err}", file=sys.stderr)
        return 2
    from srsoup.planning.hardware import detect_accelerator

    accelerator = (
        ACCELERATORS[args.accelerator] if args.accelerator else detect_accelerator() or ACCELERATORS["h100"]
    )
    if args.json:
        print(json.dumps(asdict(est), indent=2, default=str))
    else:
        print(render(spec, est, accelerator, args.utilization), end="")
    return 0
