"""Prompt adherence for the embedded model's grammar: are the background and the shape the colours asked for?"""

from __future__ import annotations

import logging

import torch

from srsoup.tiny.grammar import COLOURS, border_mask, palette_membership, parse_prompt

log = logging.getLogger(__name__)
_PALETTE = list(COLOURS)


class PromptAdherence:
    """A continuous score in [0, 1]: half background (border pixels' soft membership of the asked colour),
    half foreground (soft area of the asked colour, saturating at ``min_area`` of the image).

    Prompts outside the grammar score NaN, with one warning: the score means nothing for them.
    """

    def __init__(self, min_area: float = 0.03, temperature: float = 0.01):
        self.min_area = min_area
        self.temperature = temperature
        self._warned = False

    def __call__(self, images: torch.Tensor, prompts) -> torch.Tensor:
        member = palette_membership(images.float().clamp(0, 1), self.temperature)
        border = border_mask(images.shape[-1]).to(images.device)
        scores = torch.full((len(images),), float("nan"))
        for i, prompt in enumerate(prompts):
            scene = parse_prompt(prompt)
            if scene is None:
                if not self._warned:
                    log.warning("prompt_adherence: %r is outside the embedded grammar; its score is NaN", prompt)
                    self._warned = True
                continue
            bg = member[i, _PALETTE.index(scene.bg)][border].mean()
            fg = (member[i, _PALETTE.index(scene.fg)].mean() / self.min_area).clamp(max=1.0)
            scores[i] = 0.5 * (bg + fg)
        return scores


def adherence_hits(images: torch.Tensor, prompts, min_fraction: float = 0.02, part: str = "both") -> torch.Tensor:
    """Binary adherence, for evaluation: the background's majority colour is right (``part="background"``),
    at least ``min_fraction`` of the pixels have the foreground colour (``"foreground"``), or both. Colours are
    the nearest palette colour of each pixel. NaN for prompts outside the grammar."""
    nearest = palette_membership(images.float().clamp(0, 1), 1e-4).argmax(1)
    border = border_mask(images.shape[-1]).to(images.device)
    hits = torch.full((len(images),), float("nan"))
    for i, prompt in enumerate(prompts):
        scene = parse_prompt(prompt)
        if scene is None:
            continue
        bg_ok = nearest[i][border].mode().values.item() == _PALETTE.index(scene.bg)
        fg_ok = (nearest[i] == _PALETTE.index(scene.fg)).float().mean().item() >= min_fraction
        hits[i] = float({"both": bg_ok and fg_ok, "background": bg_ok, "foreground": fg_ok}[part])
    return hits
