"""Offline rewards order constructed images the way their definitions say."""

from __future__ import annotations

import math

import torch

from srsoup.rewards.adherence import PromptAdherence, adherence_hits
from srsoup.rewards.base import CountingReward, QueryBudget
from srsoup.rewards.colorfulness import Colorfulness
from srsoup.rewards.jpeg import JpegCompressibility, JpegIncompressibility
from srsoup.tiny.grammar import Scene, render


def flat_and_noisy():
    g = torch.Generator().manual_seed(0)
    flat = torch.full((1, 3, 32, 32), 0.5)
    noisy = torch.rand((1, 3, 32, 32), generator=g)
    return torch.cat([flat, noisy])


def test_jpeg_compressibility_prefers_flat_images():
    images = flat_and_noisy()
    comp = JpegCompressibility()(images)
    incomp = JpegIncompressibility()(images)
    assert comp[0] > comp[1] and incomp[1] > incomp[0]
    assert torch.allclose(comp, -incomp)
    assert 0 < incomp[0] < incomp[1] < 10  # kB of a 32x32 JPEG


def test_colorfulness_prefers_saturated_images():
    grey = torch.full((1, 3, 16, 16), 0.5)
    pale = torch.tensor([0.6, 0.5, 0.5]).view(1, 3, 1, 1).expand(1, 3, 16, 16)
    saturated = render([Scene("red", "circle", "blue")], 16)
    scores = Colorfulness()(torch.cat([grey, pale, saturated]))
    assert scores[0] == 0 and scores[0] < scores[1] < scores[2]


def test_prompt_adherence_prefers_right_colours():
    prompt = "a red circle on a blue background"
    right = render([Scene("red", "circle", "blue")])
    wrong_bg = render([Scene("red", "circle", "green")])
    wrong_fg = render([Scene("yellow", "circle", "blue")])
    both_wrong = render([Scene("white", "square", "black")])
    scores = PromptAdherence()(torch.cat([right, wrong_bg, wrong_fg, both_wrong]), [prompt] * 4)
    assert scores[0] > 0.9 and scores[3] < 0.1
    assert scores[0] > scores[1] > scores[3] and scores[0] > scores[2] > scores[3]
    hits = adherence_hits(torch.cat([right, wrong_bg, wrong_fg]), [prompt] * 3)
    assert hits.tolist() == [1.0, 0.0, 0.0]
    assert math.isnan(float(PromptAdherence()(right, ["a photo of a cat"])[0]))


def test_counting_wrapper_counts_chunks_and_enforces_budget():
    calls = []

    def fn(images, prompts):
        calls.append(len(images))
        return images.mean(dim=(1, 2, 3))

    budget = QueryBudget(10)
    r = CountingReward("mean", fn, chunk_size=3, budget=budget)
    out = r(torch.rand(7, 3, 4, 4), ["p"] * 7)
    assert out.shape == (7,) and r.queries == 7 and calls == [3, 3, 1]
    import pytest

    from srsoup.errors import BudgetExceeded

    with pytest.raises(BudgetExceeded):
        r(torch.rand(4, 3, 4, 4), ["p"] * 4)
    assert r.queries == 7 and budget.used == 7  # the refused call was not made
