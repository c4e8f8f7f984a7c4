"""FLOPs and activation sizes of one model call from the architecture: a forward on meta tensors, per layer.

No weights and no memory are needed: the model is built on the meta device (``init=random``) and run on meta
inputs of the real shapes. Each layer's cost comes from its shapes — a linear layer 2·in·out per token, a
convolution 2·(C_in/groups)·k_h·k_w per output element, attention 4·N_q·N_k·d per head (QKᵀ and the weighted sum)
— so a count is what the architecture implies, independently of how torch dispatches it; ``tests/test_planning.py``
holds it against ``torch.utils.flop_counter`` on real random-weight models.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import suppress

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode


class FlopTally(TorchFunctionMode):
    """Counts FLOPs of the linear, convolution and attention layers run inside it, and the largest activation."""

    def __init__(self):
        super().__init__()
        self.flops = 0
        self.largest_activation = 0  # elements of the largest layer output
        self.attention_scores = 0  # elements of the largest attention score matrix (materialised by math SDPA)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is F.linear:
            x, weight = (
                (args[0], args[1])
                if len(args) > 1
                else (kwargs.get("input", args[0] if args else None), kwargs["weight"])
            )
            self.flops += 2 * (x.numel() // x.shape[-1]) * weight.shape[0] * weight.shape[1]
        elif func in (F.conv1d, F.conv2d, F.conv3d):
            weight = args[1]  # [C_out, C_in / groups, *kernel]
            self.flops += 2 * math.prod(weight.shape[1:]) * out.numel()
        elif func is F.scaled_dot_product_attention:
            q = args[0] if args else kwargs["query"]
            k = args[1] if len(args) > 1 else kwargs["key"]
            batch_heads = math.prod(q.shape[:-2])
            self.flops += 4 * batch_heads * q.shape[-2] * k.shape[-2] * q.shape[-1]
            self.attention_scores = max(self.attention_scores, batch_heads * q.shape[-2] * k.shape[-2])
        elif func in (torch.bmm, torch.matmul, torch.baddbmm) and isinstance(out, torch.Tensor):
            a = args[1] if func is torch.baddbmm else args[0]
            self.flops += 2 * out.numel() * a.shape[-1]
        if isinstance(out, torch.Tensor):
            self.largest_activation = max(self.largest_activation, out.numel())
        return out


def tally(call: Callable[[], object]) -> FlopTally:
    """The tally of one call (typically on meta tensors).

    A call that ends by copying its result off the meta device (``.cpu()``, as rewards return their scores) has
    done all its compute by then; that last copy is not counted.
    """
    counter = FlopTally()
    with counter, torch.inference_mode(), suppress(NotImplementedError):
        call()
    return counter


def parameters(module_or_parts) -> int:
    """Parameters of a module, or of every module among an object's attributes (a reward holding several)."""
    if isinstance(module_or_parts, nn.Module):
        return sum(p.numel() for p in module_or_parts.parameters())
    seen: set[int] = set()
    total = 0
    for value in vars(module_or_parts).values():
        inner = value if isinstance(value, nn.Module) else getattr(value, "model", None)
        if isinstance(inner, nn.Module):
            for p in inner.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel()
    return total
