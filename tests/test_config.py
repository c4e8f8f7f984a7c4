"""Every config option composes; bad input is one clear SrsoupError naming the value and the choices."""

from __future__ import annotations

from pathlib import Path

import pytest

from srsoup.errors import SrsoupError
from srsoup.spec import build_spec
from tests.conftest import compose

CONF = Path(__file__).resolve().parents[1] / "srsoup" / "conf"
GROUPS = ["model", "rewards", "eval_rewards", "weights", "guidance", "budget", "prompts", "sampler", "experiment"]


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_option_composes(group):
    opts = options(group)
    if group != "experiment":
        assert opts, f"group {group} has no options"
    for opt in opts:
        cfg = compose(f"{group}={opt}")
        assert cfg is not None


def test_contract_keys_exist():
    cfg = compose()
    for key in (
        "prompts.texts",
        "prompts.path",
        "seeds",
        "sampler.steps",
        "sampler.cfg_scale",
        "guidance.num_candidates",
        "guidance.soup_end_step",
        "budget.max_reward_queries",
        "budget.fit_candidates",
        "device",
        "dtype",
    ):
        node, *rest = key.split(".")
        assert node in cfg and (not rest or rest[0] in cfg[node]), key
    assert cfg.model.name == "tiny" and list(cfg.rewards) == ["colorfulness", "jpeg_compressibility"]
    assert cfg.guidance._target_ == "srsoup.guidance.srsoup.SRSoup"
    assert "reward" in compose("guidance=single").guidance  # the key of guidance=single


def test_default_plan(toy_cfg):
    spec = build_spec(compose("device=cpu"))
    assert spec.weights == [[0.0, 1.0], [0.2, 0.8], [0.4, 0.6], [0.6, 0.4], [0.8, 0.2], [1.0, 0.0]]
    assert spec.steps == 30 and spec.cfg_scale == 3.0 and spec.guidance["soup_end_step"] == 12
    three = build_spec(compose("device=cpu", "rewards=colorful_compress_adherence"))
    assert len(three.weights) == 13 and all(abs(sum(w) - 1) < 1e-9 for w in three.weights)


def test_missing_anchors_are_added():
    spec = build_spec(compose("device=cpu", "weights.grid=[[0.5,0.5]]"))
    assert spec.weights == [[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]]


BAD = [
    (["guidance.num_candidates=0"], "guidance.num_candidates=0"),
    (["weights.grid=[[0.5,0.6]]"], "off the simplex"),
    (["weights.grid=[[-0.5,1.5]]"], "off the simplex"),
    (["weights.grid=[[0.2,0.3,0.5]]"], "has 3 entries but the reward set has 2"),
    (["budget.max_reward_queries=100"], "this plan needs 1632 reward queries"),
    (["budget=fit", "budget.max_reward_queries=10"], "too small even for K=2"),
    (["device=cuda"], "device='cuda' but CUDA is not available"),
    (["device=tpu"], "device='tpu'"),
    (["dtype=fp16"], "dtype='fp16' needs a GPU"),
    (["prompts.texts=[]"], "prompts.texts=[]"),
    (["prompts=file", "prompts.path=no/such/file.txt"], "prompts.path='no/such/file.txt' does not exist"),
    (["prompts=file"], "or prompts.path=FILE"),
    (["budget=fit"], "budget.fit_candidates=true needs a budget"),
    (["model.pretrained=./no/such/model"], "model path './no/such/model' does not exist"),
    (["guidance=single", "guidance.reward=aesthetic"], "guidance.reward='aesthetic' is not in the reward set"),
    (["guidance.normalize=softmax"], "guidance.normalize='softmax'; valid: zscore, tanh, minmax, rank"),
    (["guidance.mean_correction=magic"], "valid: reference, exact, off"),
    (["guidance.antithetic=true", "guidance.num_candidates=3"], "must be even"),
    (["seeds=[]"], "seeds=[]"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[b[1][:40] for b in BAD])
def test_bad_input_is_one_clear_error(overrides, message):
    with pytest.raises(SrsoupError) as info:
        build_spec(compose(*overrides))
    text = str(info.value)
    assert message in text and "\n" not in text


def test_budget_fit_picks_largest_k():
    # srsoup, T=30, S=12, L=6, M=2: queries = K·(12·2 + 18·10) = 204·K.
    spec = build_spec(compose("device=cpu", "budget=fit", "budget.max_reward_queries=1000"))
    assert spec.guidance["num_candidates"] == 4 and spec.fitted_from == 8
    assert spec.plan.reward_queries == 816 <= 1000
    exact = build_spec(compose("device=cpu", "budget.max_reward_queries=1632"))
    assert exact.guidance["num_candidates"] == 8 and exact.plan.reward_queries == 1632
