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


def test_readme_grid_of_integers_and_a_model_window_past_short_runs():
    spec = build_spec(compose("device=cpu", "weights.grid=[[1,0],[0.5,0.5],[0,1]]"))
    assert spec.weights == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    # The model's default window (12 of 30) on a 4-step run covers the whole chain, as before; an explicit
    # value past the steps is an error (BAD below), as is sampler.steps=0 (which once ran the default 30).
    assert build_spec(compose("device=cpu", "sampler.steps=4")).steps == 4
    assert build_spec(compose("device=cpu", "seeds=[18446744073709551615]")).seeds == [2**64 - 1]


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
    (["sampler.steps=0"], "sampler.steps=0 must be an integer >= 1 (or null for the model's 30)"),
    (["sampler.eta=nan"], "sampler.eta=nan is not valid; valid: a number from 0 to 1"),
    (["sampler.eta=-1"], "sampler.eta=-1.0 is not valid; valid: a number from 0 to 1"),
    (["sampler.eta=1.5"], "sampler.eta=1.5 is not valid"),
    (["sampler.cfg_scale=nan"], "sampler.cfg_scale=nan is not valid; valid: a finite number >= 0"),
    (["sampler.cfg_scale=-inf"], "sampler.cfg_scale=-inf is not valid"),
    (["weights.grid=[[nan,1]]"], "weights.grid[0]=[nan, 1.0] is off the simplex"),
    (["weights.grid=[[a,1]]"], "weights.grid[0]=['a', 1] holds 'a', not a number"),
    (["weights.grid=0.5"], "weights.grid=0.5 must be a list of weight lists"),
    (["chunk_size=0"], "chunk_size=0 must be an integer >= 1"),
    (["guidance.soup_end_step=40"], "guidance.soup_end_step=40 is past sampler.steps=30; valid: 0 to 30"),
    (["guidance.switch_threshold=0"], "guidance.switch_threshold=0 must be in (0, 1]"),
    (["guidance.compress_top_fraction=0"], "guidance.compress_top_fraction=0 must be in (0, 1]"),
    (["guidance.compress_target_kb=-1"], "guidance.compress_target_kb=-1 must be a number of kB >= 0"),
    (["guidance.compress_tricks=maybe"], "guidance.compress_tricks='maybe' must be true or false"),
    (["guidance.switch_threshold=1.5"], "guidance.switch_threshold=1.5 must be in (0, 1]"),
    (["seeds=[-1]"], "seeds: -1 is out of range; valid: integers from 0 to 18446744073709551615"),
    (["seeds=[18446744073709551616]"], "seeds: 18446744073709551616 is out of range"),
    (["prompts.num_shards=2", "prompts.shard=2"], "prompts.shard=2 is out of range for prompts.num_shards=2"),
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


@pytest.mark.parametrize("budget,k", [(528, 5), (799, 7), (800, 8), (400, 4), (399, 3)])
def test_budget_fit_finds_the_largest_k_when_queries_are_not_proportional_to_it(budget, k):
    # The whole chain as soup with K_soup = round(2.5·K): queries = 2 anchors · 20 steps · K_soup, so K = 1 costs
    # 120 (3 candidates) and K = 5 costs 520, not 5·120: a proportional guess from K = 1 would stop at 4.
    opts = ["guidance.soup_end_step=null", "guidance.soup_candidate_factor=2.5", "sampler.steps=20"]
    spec = build_spec(compose("device=cpu", *opts, "budget=fit", f"budget.max_reward_queries={budget}"))
    assert spec.guidance["num_candidates"] == k
    assert spec.plan.reward_queries <= budget < 40 * (int(2.5 * (k + 1) + 0.5))
    # With antithetic pairs only even K can be built: the search steps over the odd ones, down and up.
    spec = build_spec(
        compose(
            "device=cpu", *opts, "guidance.antithetic=true", "budget=fit", f"budget.max_reward_queries={budget}"
        )
    )
    even = k - k % 2
    assert spec.guidance["num_candidates"] == even and spec.plan.reward_queries <= budget


def test_srsoup_pool_is_srsoup_with_every_chain_sharing_at_half_the_queries(toy_cfg):
    """guidance=srsoup_pool: the srsoup class with the whole chain as window, every mixed weight a sharer pooling
    every other at K_soup = K/2: half weighted_sum's reward queries at the same K, and its evals at K/2."""
    pool = build_spec(compose("device=cpu", "guidance=srsoup_pool"))
    ws = build_spec(compose("device=cpu", "guidance=weighted_sum"))
    half = build_spec(compose("device=cpu", "guidance=weighted_sum", "guidance.num_candidates=4"))
    assert pool.method_cls is build_spec(compose("device=cpu")).method_cls
    assert pool.guidance["soup_end_step"] is None and pool.guidance["extra_anchors"] == "all"
    assert pool.guidance["soup_share_radius"] == 1.0 and pool.guidance["soup_candidate_factor"] == 0.5
    assert pool.guidance["num_candidates"] == ws.guidance["num_candidates"] == 8
    assert 2 * pool.plan.reward_queries == ws.plan.reward_queries
    assert pool.plan.denoiser_evals == half.plan.denoiser_evals
