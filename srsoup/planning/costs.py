"""What a run will cost, before anything is loaded: counts, parameters, weight memory, FLOPs, peak memory, time.

The backbone and every hub reward are built on the meta device at their published architecture (``init=random``
from the configs shipped in the package, or a local folder's configs), so nothing is downloaded or allocated;
one denoiser eval, one decode, one prompt encoding and one reward query are run on meta inputs of the real shapes
and tallied (``flops.py``). Counts come from the method's exact plan.

Peak memory = weights + the activations of the largest model batch: ``chunk_size`` rows (a CFG batch of
``chunk_size // 2`` candidates, or ``chunk_size`` decoded / scored images), or fewer when a group never makes that
many calls of a kind (a one-step unguided run batches one CFG pair), times the largest activation of one row,
times ``ACTIVATION_FACTOR`` for the tensors alive at once (skip connections, attention's q/k/v and output).
It is an estimate, stated as one. Checked against the peak RSS of full-size SD1.5 (fp32, CPU, random weights) at
chunk_size 2 and 8: 7.84 and 12.42 GiB measured, 7.57 and 13.57 GiB estimated (docs/benchmark.md, "Full size").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from srsoup.planning.flops import tally

log = logging.getLogger(__name__)

META = torch.device("meta")
ACTIVATION_FACTOR = 4.0


@dataclass
class Call:
    """One kind of model call: FLOPs of one call and the elements of its largest activation per batch row."""

    flops: int
    activation_per_row: int
    rows: int  # batch rows of one call (2 for a CFG eval, 1 otherwise)


@dataclass
class Part:
    """A model of the run (the backbone or a reward) as built on the meta device."""

    name: str
    role: str  # backbone | reward | eval reward
    params: int
    weight_bytes: int
    calls: dict[str, Call] = field(default_factory=dict)
    note: str = ""
    load_bytes: int = 0  # held beyond weight_bytes while it loads (a component loaded wider than it is stored)


def modules_of(obj) -> list[nn.Module]:
    """The distinct top-level nn.Modules an object holds in its attributes (lists and dicts included)."""
    found: dict[int, nn.Module] = {}
    values = list(vars(obj).values())
    while values:
        value = values.pop()
        if isinstance(value, nn.Module):
            found.setdefault(id(value), value)
        elif isinstance(value, list | tuple):
            values += list(value)
        elif isinstance(value, dict):
            values += list(value.values())
        elif (
            hasattr(value, "__dict__")
            and not isinstance(value, type)
            and value.__class__.__module__.startswith("srsoup")
        ):
            values += list(vars(value).values())  # a helper object holding models (e.g. a CLIP scorer)
    return list(found.values())


def _weights(modules: list[nn.Module]) -> tuple[int, int]:
    seen: set[int] = set()
    params = weight_bytes = 0
    for module in modules:
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                params += p.numel()
                weight_bytes += p.numel() * p.element_size()
    return params, weight_bytes


def _call(fn, rows: int) -> Call:
    t = tally(fn)
    return Call(flops=t.flops, activation_per_row=t.largest_activation // max(rows, 1), rows=rows)


def backbone_part(spec) -> tuple[Part, tuple[int, ...]]:
    """The backbone at its architecture on the meta device; its calls; the shape of a decoded image."""
    options = {**spec.model, "init": "random"}
    backbone = spec.backbone_cls.load(
        options,
        device=META,
        dtype=spec.dtype,
        storage_dtype=spec.storage_dtype,
        cfg_scale=spec.cfg_scale,
        chunk_size=spec.chunk_size,
        eta=spec.eta,
    )
    params, weight_bytes = _weights(modules_of(backbone))
    backbone.set_steps(spec.steps)
    x = torch.empty((1, *backbone.latent_shape), device=META)
    cond = backbone.encode_prompt(spec.prompts[0])
    image = backbone.decode(x)
    part = Part(spec.model.get("name") or spec.backbone_cls.__name__, "backbone", params, weight_bytes)
    part.load_bytes = _load_transient(backbone, spec)
    part.calls = {
        "denoiser_eval": _call(lambda: backbone.step_distribution(x, 0, cond), backbone.rows_per_eval),
        "decode": _call(lambda: backbone.decode(x), 1),
        "encode_prompt": _call(lambda: backbone.encode_prompt(spec.prompts[0]), 2),
    }
    return part, tuple(image.shape[1:])


def _load_transient(backbone, spec) -> int:
    """Bytes held beyond the stored weights while a component loads wider than it is stored (fp8 storage: made or
    loaded in 16 bits, then cast): the largest such component's wide copy (measured for sd35m's T5-XXL)."""
    from srsoup.backbones.loading import load_dtype

    storage = spec.storage_dtype
    if storage is None:
        return 0
    wide = load_dtype(storage, spec.dtype).itemsize
    if wide <= storage.itemsize:
        return 0
    return max(
        (sum(p.numel() for p in m.parameters() if p.dtype == storage) * wide for m in modules_of(backbone)),
        default=0,
    )


def reward_parts(spec, image_shape: tuple[int, ...]) -> list[Part]:
    """Every hub reward of the run (its config has ``init``) built on the meta device at random init, one query
    tallied; other rewards (functions of the pixels, or a user's own) are not built and count no memory."""
    from srsoup.rewards.base import build_rewards

    parts = []
    roles = {**{n: "reward" for n in spec.rewards}, **{n: "eval reward" for n in spec.eval_rewards}}
    for name, cfg in {**spec.rewards, **spec.eval_rewards}.items():
        if "init" not in cfg:
            parts.append(Part(name, roles[name], 0, 0, note="no model weights declared (no init key): not built"))
            continue
        try:
            fn = build_rewards({name: {**cfg, "init": "random"}}, device="meta", dtype=spec.dtype)[name]
        except Exception as err:  # noqa: BLE001 - a reward that cannot be built offline is reported, not fatal
            parts.append(Part(name, roles[name], 0, 0, note=f"not estimated: {str(err).splitlines()[0]}"))
            continue
        params, weight_bytes = _weights(modules_of(fn))
        part = Part(name, roles[name], params, weight_bytes)
        images = torch.empty((1, *image_shape), device=META)
        try:
            part.calls["query"] = _call(lambda fn=fn, images=images: fn(images, spec.prompts[:1]), 1)
        except RuntimeError as err:  # a model that reads a value on the meta device (e.g. attention masks)
            part.note = f"query FLOPs not counted (cannot run on the meta device: {str(err).splitlines()[0]})"
        parts.append(part)
    return parts
