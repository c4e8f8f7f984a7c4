"""Colourfulness of Hasler & Süsstrunk (2003), "Measuring colourfulness in natural images", eq. (3)."""

from __future__ import annotations

import torch


class Colorfulness:
    """M = sqrt(σ_rg² + σ_yb²) + 0.3·sqrt(μ_rg² + μ_yb²) on 0–255 RGB, with rg = R−G and yb = (R+G)/2 − B."""

    def __call__(self, images: torch.Tensor, prompts=None) -> torch.Tensor:
        rgb = images.float().clamp(0, 1) * 255.0
        r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
        rg = (r - g).flatten(1)
        yb = (0.5 * (r + g) - b).flatten(1)
        std = torch.sqrt(rg.var(1, unbiased=False) + yb.var(1, unbiased=False))
        mean = torch.sqrt(rg.mean(1) ** 2 + yb.mean(1) ** 2)
        return std + 0.3 * mean
