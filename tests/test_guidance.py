"""The algorithm of DESIGN §1 on tiny components: exact counts, equivalences, corrections, fallbacks, budget."""

from __future__ import annotations

import math

import pytest
import torch

from srsoup.guidance import METHODS
from srsoup.guidance.srsoup import corrected_directions, soup_weights
from srsoup.guidance.steps import compress_trick, keep_top, normalize_rewards, step_noise
from srsoup.rewards.base import CountingReward
from srsoup.rewards.colorfulness import Colorfulness
from srsoup.rewards.jpeg import JpegCompressibility
from srsoup.sampling import sample_group
from srsoup.spec import weight_grid


def brightness(images, prompts):
    return images.mean(dim=(1, 2, 3))


REWARD_FNS = {
    "colorfulness": Colorfulness(),
    "jpeg_compressibility": JpegCompressibility(),
    "brightness": brightness,
}


def run_group(backbone, method, names, weights, steps, seed=0, **kwargs):
    rewards = {n: CountingReward(n, REWARD_FNS[n], chunk_size=7) for n in names}
    if method == "single":  # single guidance takes its reward by name, here the one-hot weight's
        kwargs.setdefault("reward", names[max(range(len(names)), key=lambda m: weights[0][m])])
    cls = METHODS[method]
    g = cls(**{k: v for k, v in kwargs.items() if k in cls.option_names()})  # as the spec passes options
    g.setup(torch.tensor(weights, dtype=torch.float64), names)
    evals_before = backbone.denoiser_evals
    result = sample_group(
        backbone=backbone,
        method=g,
        rewards=rewards,
        prompt="a red circle on a blue background",
        seed=seed,
        num_steps=steps,
        progress=False,
    )
    return result, g, backbone.denoiser_evals - evals_before, rewards


CASES = [  # (T, K, S, divisions, M)
    (4, 3, 2, 2, 2),
    (5, 2, 3, 5, 2),
    (3, 4, 1, 1, 2),
    (4, 2, 2, None, 3),
]


@pytest.mark.parametrize("T,K,S,div,M", CASES)
@pytest.mark.parametrize("method", ["weighted_sum", "srsoup"])
def test_exact_counts_multi_reward(toy_backbone, method, T, K, S, div, M):
    names = list(REWARD_FNS)[:M]
    weights = weight_grid(None, div, names)
    L = len(weights)
    nz = sum(sum(1 for x in w if x > 0) for w in weights)
    result, g, evals, rewards = run_group(
        toy_backbone, method, names, weights, T, num_candidates=K, soup_end_step=S
    )
    if method == "weighted_sum":
        q, e = T * K * nz, T * L + (T - 1) * L * K
    else:
        q, e = S * M * K + (T - S) * K * nz, T * L + S * M * K + (T - 1 - S) * L * K
    plan = g.plan(T)
    assert plan.reward_queries == q and plan.denoiser_evals == e
    assert int(result.queries.sum()) == q == sum(r.queries for r in rewards.values())
    assert int(result.evals.sum()) == e == evals
    assert sum(result.queries_by_reward.values()) == q
    assert plan.reward_queries_by_reward == result.queries_by_reward
    if method == "srsoup":
        # Per-chain attribution: non-anchor chains query nothing in the soup phase.
        anchors = [i for i, w in enumerate(weights) if max(w) == 1]
        for c, w in enumerate(weights):
            expected = K * sum(1 for x in w if x > 0) * ((T - S) + (S if c in anchors else 0))
            assert int(result.queries[c]) == expected


@pytest.mark.parametrize("T,K", [(4, 3), (6, 2), (1, 5)])
def test_exact_counts_single_and_none(toy_backbone, T, K):
    result, _, evals, _ = run_group(toy_backbone, "single", ["colorfulness"], [[1.0]], T, num_candidates=K)
    assert int(result.queries.sum()) == T * K
    assert int(result.evals.sum()) == evals == T + (T - 1) * K
    result, _, evals, _ = run_group(toy_backbone, "none", ["colorfulness"], [[0.0]], T)
    assert int(result.queries.sum()) == 0 and evals == T


def test_anchor_chains_equal_single_guidance(toy_backbone, monkeypatch):
    # One item per forward pass, so batch composition cannot change the network's float rounding; what is left
    # is reduction order (threads, [L, d] vs [1, d] tensors): ~1e-5, far below a PNG level (1/255).
    monkeypatch.setattr(toy_backbone, "chunk_size", 1)
    names = ["colorfulness", "jpeg_compressibility"]
    weights = weight_grid(None, 2, names)  # [[0,1],[.5,.5],[1,0]]
    soup, *_ = run_group(toy_backbone, "srsoup", names, weights, 5, seed=3, num_candidates=4, soup_end_step=3)
    for m in range(len(names)):
        onehot = [1.0 if i == m else 0.0 for i in range(2)]
        single, *_ = run_group(toy_backbone, "single", names, [onehot], 5, seed=3, num_candidates=4)
        torch.testing.assert_close(soup.images[weights.index(onehot)], single.images[0], atol=1e-4, rtol=0)
    assert (soup.images[0] - soup.images[2]).abs().max() > 0.1  # the two anchors really differ
    # ... and the middle chain is a different image: it was steered by both rewards.
    assert not torch.allclose(soup.images[1], soup.images[0], atol=1e-3)


@pytest.mark.parametrize("chunk", [1, 5, 8])
def test_chunk_size_bounds_the_rows_of_every_denoiser_batch(toy_backbone, monkeypatch, chunk):
    """A CFG batch carries two rows per candidate: at most chunk_size rows go through the UNet at once (at least
    one candidate, so chunk_size 1 still runs), and every candidate is still evaluated exactly once."""
    monkeypatch.setattr(toy_backbone, "chunk_size", chunk)
    rows = []
    forward = toy_backbone.unet.forward

    def spy(sample, *a, **kw):
        rows.append(len(sample))
        return forward(sample, *a, **kw)

    monkeypatch.setattr(toy_backbone.unet, "forward", spy)
    _, _, evals, _ = run_group(toy_backbone, "weighted_sum", ["colorfulness"], [[1.0], [1.0]], 3, num_candidates=6)
    assert max(rows) == max(2, chunk - chunk % 2)  # full chunks of pairs (one pair when chunk_size is 1)
    assert sum(rows) == 2 * evals == 2 * (3 * 2 + 2 * 2 * 6)  # chain means at 3 steps, candidates at 2 of them


def test_weighted_sum_with_one_reward_equals_single(toy_backbone):
    ws, *_ = run_group(toy_backbone, "weighted_sum", ["colorfulness"], [[1.0]], 4, seed=1, num_candidates=3)
    single, *_ = run_group(toy_backbone, "single", ["colorfulness"], [[1.0]], 4, seed=1, num_candidates=3)
    assert torch.equal(ws.images, single.images)


def test_constant_reward_falls_back_to_plain_sampling(toy_backbone):
    REWARD_FNS["constant"] = lambda images, prompts: torch.full((len(images),), 2.5)
    try:
        guided, *_ = run_group(toy_backbone, "single", ["constant"], [[1.0]], 4, seed=2, num_candidates=3)
        plain, *_ = run_group(toy_backbone, "none", ["constant"], [[0.0]], 4, seed=2)
    finally:
        del REWARD_FNS["constant"]
    assert torch.equal(guided.images, plain.images)


@pytest.mark.parametrize("name", ["brightness", "colorfulness"])
def test_search_gradient_raises_reward_over_plain_sampling(toy_backbone, name):
    gains = []
    for seed in range(3):
        guided, *_ = run_group(toy_backbone, "single", [name], [[1.0]], 5, seed=seed, num_candidates=6)
        plain, *_ = run_group(toy_backbone, "none", [name], [[0.0]], 5, seed=seed)
        gains.append(float(REWARD_FNS[name](guided.images, None) - REWARD_FNS[name](plain.images, None)))
    assert all(g > 0 for g in gains), gains


def test_mean_correction_exact_reproduces_anchor_candidates():
    torch.manual_seed(0)
    eps = torch.randn(5, 3, 4, 4)
    mu_m, mu_w, sigma = torch.randn(3, 4, 4), torch.randn(3, 4, 4), torch.tensor(0.37)
    tilde = corrected_directions(eps, mu_m, mu_w, sigma, "exact")
    torch.testing.assert_close(mu_w + sigma * tilde, mu_m + sigma * eps)


def test_mean_correction_reference_matches_design_on_hand_tensors():
    eps = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[0.0, -2.0], [0.0, 0.0]]]])  # K=2, d=4
    mu_m = torch.tensor([[[0.0, 0.0], [3.0, 0.0]]])
    mu_w = torch.tensor([[[0.0, 0.0], [1.0, 0.0]]])  # μ_m − μ_w = 2 at position (1, 0)
    tilde = corrected_directions(eps, mu_m, mu_w, torch.tensor(0.5), "reference")
    # ε̃_1 = (1,0,2,0) → ×√4/√5; ε̃_2 = (0,−2,2,0) → ×2/√8 (σ plays no part in the reference correction).
    expected = torch.tensor([[[[1.0, 0.0], [2.0, 0.0]]], [[[0.0, -2.0], [2.0, 0.0]]]])
    expected[0] *= 2 / math.sqrt(5)
    expected[1] *= 2 / math.sqrt(8)
    torch.testing.assert_close(tilde, expected)
    assert torch.equal(corrected_directions(eps, mu_m, mu_w, torch.tensor(0.5), "off"), eps)


def test_normalizers():
    r = torch.tensor([1.0, 2.0, 4.0, 7.0])
    z = normalize_rewards(r, "zscore")
    assert abs(float(z.mean())) < 1e-6 and abs(float(z.std(unbiased=False)) - 1) < 1e-6
    assert torch.equal(normalize_rewards(r, "rank"), torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0]))
    assert torch.allclose(normalize_rewards(r, "tanh"), torch.tanh(z))
    assert torch.allclose(normalize_rewards(r, "minmax"), torch.tensor([0.0, 1 / 6, 0.5, 1.0]))
    for method in ("zscore", "tanh", "minmax", "rank"):
        assert torch.equal(normalize_rewards(torch.full((5,), 3.0), method), torch.zeros(5))


def test_step_noise_is_keyed_by_seed_and_step_and_antithetic():
    a, b = step_noise(7, 3, 4, (2, 2)), step_noise(7, 3, 6, (2, 2))
    assert torch.equal(a, b[:4])  # ε_1..ε_4 do not depend on K
    assert not torch.equal(a, step_noise(7, 4, 4, (2, 2)))
    anti = step_noise(7, 3, 4, (2, 2), antithetic=True)
    assert torch.equal(anti[2:], -anti[:2])


def test_trace_reports_phases_and_bhattacharyya(toy_backbone):
    names = ["colorfulness", "jpeg_compressibility"]
    weights = weight_grid(None, 2, names)
    result, *_ = run_group(toy_backbone, "srsoup", names, weights, 4, num_candidates=2, soup_end_step=2)
    rows = [r for r in result.trace if r["weight_idx"] == 1]
    assert [r["phase"] for r in rows] == ["soup", "soup", "weighted_sum", "weighted_sum"]
    assert all(0 <= r["bc_colorfulness"] <= 1 for r in rows)
    anchor = [r for r in result.trace if r["weight_idx"] == 2]
    assert all(r["bc_colorfulness"] == 1.0 for r in anchor)
    assert math.isnan(rows[0]["reward_mean_colorfulness"]) and not math.isnan(rows[2]["reward_mean_colorfulness"])


def test_best_of_n_counts_and_selection(toy_backbone):
    names = ["colorfulness", "brightness"]
    weights = weight_grid(None, 2, names)
    result, g, evals, rewards = run_group(toy_backbone, "best_of_n", names, weights, 3, num_candidates=4)
    assert (
        int(result.queries.sum()) == 4 * 2 == sum(r.queries for r in rewards.values()) == g.plan(3).reward_queries
    )
    assert evals == 4 * 3 == int(result.evals.sum()) == g.plan(3).denoiser_evals
    # Each anchor row holds the best of the N samples under its reward (every row is one of the N samples).
    bright = brightness(result.images, None)
    assert float(bright[weights.index([0.0, 1.0])]) == float(bright.max())
    colorful = REWARD_FNS["colorfulness"](result.images)
    assert float(colorful[weights.index([1.0, 0.0])]) == float(colorful.max())
    # With N = 1 the one sample is the unguided sample of the seed.
    one, *_ = run_group(toy_backbone, "best_of_n", names, weights, 3, num_candidates=1)
    plain, *_ = run_group(toy_backbone, "none", names, [[0.0, 0.0]], 3)
    assert all(torch.equal(im, plain.images[0]) for im in one.images)


def test_zero_terminal_snr_scheduler_is_refused_before_it_makes_nan(toy_model_dir):
    """diffusers' DDIM at eta > 0 from alpha_bar = 0 is NaN (diffusers 0.42); the backbone refuses such a
    scheduler with one line instead of sampling NaN images."""
    from srsoup.backbones.ddim import DDIMBackbone
    from srsoup.errors import SrsoupError
    from srsoup.tiny.components import build_scheduler

    backbone = DDIMBackbone.from_pretrained(
        str(toy_model_dir), device=torch.device("cpu"), dtype=torch.float32, cfg_scale=3.0
    )
    zsnr = build_scheduler(rescale_betas_zero_snr=True)

    backbone.scheduler = zsnr
    with pytest.raises(SrsoupError, match="rescale_betas_zero_snr"):
        backbone.set_steps(4)
    backbone.scheduler = build_scheduler()  # the embedded model's sampling schedule: starts at alpha_bar > 0
    assert backbone.set_steps(4)[0] == 999.0


@pytest.mark.parametrize("k_soup,extra", [(6, []), (2, [[0.5, 0.5]]), (4, [[0.25, 0.75], [0.75, 0.25]])])
def test_srsoup_anchor_k_and_extra_anchors_count_exactly(toy_backbone, k_soup, extra):
    names = ["colorfulness", "brightness"]
    weights = weight_grid(None, 4, names)  # 0, .25, .5, .75, 1: L=5
    T, K, S = 4, 3, 3
    result, g, evals, rewards = run_group(
        toy_backbone,
        "srsoup",
        names,
        weights,
        T,
        num_candidates=K,
        soup_end_step=S,
        soup_candidate_factor=k_soup / K,
        extra_anchors=extra,
    )
    nz = sum(sum(1 for x in w if x > 0) for w in weights)
    sharers = 2 + len(extra)
    sharer_nz = 2 + 2 * len(extra)
    queries = S * k_soup * sharer_nz + (T - S) * K * nz
    evals_expected = T * len(weights) + S * k_soup * sharers + (T - 1 - S) * len(weights) * K
    plan = g.plan(T)
    assert plan.reward_queries == queries == int(result.queries.sum()) == sum(r.queries for r in rewards.values())
    assert plan.denoiser_evals == evals_expected == evals == int(result.evals.sum())
    # Extra anchors query their own candidates in the soup window; the other mixed chains query nothing there.
    soup_rows = [r for r in result.trace if r["step"] < S]
    for c, w in enumerate(weights):
        phases = {r["phase"] for r in soup_rows if r["weight_idx"] == c}
        assert phases == ({"soup_anchor"} if max(w) == 1 or w in extra else {"soup"}), (c, phases)


def test_srsoup_extra_anchor_must_be_a_grid_weight():
    from srsoup.errors import SrsoupError
    from srsoup.spec import build_spec
    from tests.conftest import compose

    with pytest.raises(SrsoupError, match=r"extra_anchors: \[0.3, 0.7\] is not a weight of the grid"):
        build_spec(compose("device=cpu", "guidance.extra_anchors=[[0.3,0.7]]"))


def test_importance_weights_point_the_shared_samples_at_the_chains_own_gradient():
    # r(x) = −‖x − c‖²: the search gradient of chain w is −2(μ_w − c); the anchor's samples around μ_m, reused
    # unweighted, estimate the anchor's own −2(μ_m − c). Self-normalized weights p_w/p_m recover the chain's.
    from srsoup.guidance.srsoup import importance_log_ratios, importance_weighted, tempered_weights

    gen = torch.Generator().manual_seed(0)
    eps = torch.randn(4000, 2, generator=gen, dtype=torch.float64)
    sigma = torch.tensor(1.0, dtype=torch.float64)
    mu_m, mu_w, c = torch.tensor([0.0, 0.0]), torch.tensor([1.2, -0.4]), torch.tensor([0.0, 2.0])
    r = -((mu_m + sigma * eps - c) ** 2).sum(1)
    z = normalize_rewards(r).double()
    tilde = corrected_directions(eps, mu_m.double(), mu_w.double(), sigma, "exact")
    truth = -2 * (mu_w - c).double()
    log_ratio = importance_log_ratios(eps, mu_m, mu_w, sigma)
    rho, ess, beta = tempered_weights(log_ratio, 0.05)
    assert beta == 1.0 and 0.05 <= ess < 1
    plain = z @ tilde
    weighted = importance_weighted(z, rho) @ tilde

    def cos(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    assert cos(weighted, truth) > 0.98 > 0.9 > cos(plain, truth), (cos(weighted, truth), cos(plain, truth))


def test_tempered_weights_keep_the_effective_sample_size():
    from srsoup.guidance.srsoup import importance_weighted, tempered_weights

    log_ratio = torch.tensor([0.0, -1.0, -8.0, -12.0, 3.0, 0.5], dtype=torch.float64)
    plain, ess, beta = tempered_weights(log_ratio, 0.0001)
    torch.testing.assert_close(plain, torch.softmax(log_ratio, 0))
    assert beta == 1.0
    w, ess, beta = tempered_weights(log_ratio, 0.6)
    assert 0 < beta < 1 and abs(ess - 0.6) < 1e-6 and abs(float(1 / (w * w).sum()) / 6 - ess) < 1e-12
    # Uniform weights leave z-scored rewards as they are.
    z = normalize_rewards(torch.tensor([1.0, 4.0, 2.0, 8.0, 5.0, 0.0]))
    torch.testing.assert_close(importance_weighted(z, torch.full((6,), 1 / 6, dtype=torch.float64)), z)


def test_importance_weights_change_only_the_soup_chains_and_no_count(toy_backbone):
    names = ["colorfulness", "jpeg_compressibility"]
    weights = weight_grid(None, 4, names)
    common = dict(num_candidates=4, soup_end_step=3, mean_correction="exact")
    off, g_off, evals_off, _ = run_group(toy_backbone, "srsoup", names, weights, 4, seed=1, **common)
    on, g_on, evals_on, rewards = run_group(
        toy_backbone, "srsoup", names, weights, 4, seed=1, importance_weights=True, **common
    )
    assert evals_on == evals_off == g_on.plan(4).denoiser_evals
    assert int(on.queries.sum()) == int(off.queries.sum()) == sum(r.queries for r in rewards.values())
    for c in (0, len(weights) - 1):  # the anchors step as single-reward guidance either way
        torch.testing.assert_close(on.images[c], off.images[c], atol=1e-6, rtol=0)
    diff = max(float((on.images[c] - off.images[c]).abs().max()) for c in range(1, len(weights) - 1))
    assert diff > 2e-2, diff
    # At step 0 every chain has the same step distribution (same x_T, same prompt): the weights are uniform
    # and a one-step window gives the unweighted run (rewards continuous in the image: JPEG sizes would turn
    # the float rounding of batched step means into whole bytes).
    common["soup_end_step"] = 1
    names = ["colorfulness", "brightness"]
    off1, *_ = run_group(toy_backbone, "srsoup", names, weights, 4, seed=1, **common)
    on1, *_ = run_group(toy_backbone, "srsoup", names, weights, 4, seed=1, importance_weights=True, **common)
    torch.testing.assert_close(on1.images, off1.images, atol=1e-3, rtol=0)  # batched float rounding only


def test_soup_weight_power_is_the_soup_run_at_the_tilted_weight(toy_backbone):
    # A soup chain with power γ steps as a power-1 soup chain at the weight w^γ/Σw^γ would; with the whole chain
    # as window nothing else uses the weight, so the two runs' images agree (rewards continuous in the image).
    names = ["colorfulness", "brightness"]
    common = dict(num_candidates=4, soup_end_step=None, mean_correction="exact")
    tilted = [0.2**0.5 / (0.2**0.5 + 0.8**0.5), 0.8**0.5 / (0.2**0.5 + 0.8**0.5)]
    power, *_ = run_group(
        toy_backbone, "srsoup", names, [[1, 0], [0.2, 0.8], [0, 1]], 4, seed=2, soup_weight_power=0.5, **common
    )
    plain, *_ = run_group(toy_backbone, "srsoup", names, [[1, 0], tilted, [0, 1]], 4, seed=2, **common)
    torch.testing.assert_close(power.images, plain.images, atol=1e-4, rtol=0)
    untilted, *_ = run_group(toy_backbone, "srsoup", names, [[1, 0], [0.2, 0.8], [0, 1]], 4, seed=2, **common)
    assert float((untilted.images[1] - power.images[1]).abs().max()) > 1e-2
    torch.testing.assert_close(untilted.images[0], power.images[0], atol=1e-6, rtol=0)  # anchors unchanged
    assert soup_weights(torch.tensor([0.0, 0.25, 0.75]), 1.0).tolist() == [0.0, 0.25, 0.75]
    torch.testing.assert_close(soup_weights(torch.tensor([0.0, 0.25, 0.75]), 2.0), torch.tensor([0.0, 0.1, 0.9]))


def test_soup_cross_score_counts_and_steps_as_documented(toy_backbone):
    """soup_cross_score: the anchors score their soup candidates under every reward the soup chains weigh (M·M·K
    queries a soup step with M anchors) and still step as single-reward guidance; a soup chain weighs anchor m's
    candidates with its own weighted sum Σ_r w_r z_r. An adaptive switch's bound counts the cross-scoring too."""
    names = ["colorfulness", "brightness"]
    weights = weight_grid(None, 4, names)  # L=5: 3 mixed chains weighing both rewards, nz=8
    T, K, S = 4, 3, 3
    opts = dict(num_candidates=K, soup_end_step=S, seed=5)
    cross, g, evals, rewards = run_group(toy_backbone, "srsoup", names, weights, T, soup_cross_score=True, **opts)
    plain, *_ = run_group(toy_backbone, "srsoup", names, weights, T, **opts)
    queries = S * 2 * 2 * K + (T - S) * K * 8
    assert (
        g.plan(T).reward_queries == queries == int(cross.queries.sum()) == sum(r.queries for r in rewards.values())
    )
    assert g.plan(T).reward_queries_by_reward == cross.queries_by_reward == {n: queries // 2 for n in names}
    assert g.plan(T).denoiser_evals == evals
    for c in (0, len(weights) - 1):  # anchors: single-reward guidance whatever else they score
        torch.testing.assert_close(cross.images[c], plain.images[c], atol=1e-6, rtol=0)
    assert float((cross.images[1:-1] - plain.images[1:-1]).abs().max()) > 1e-2
    assert g.summary_fields()["soup_cross_score"] is True

    # An adaptive switch: the bound holds every chain drawing its own and the anchors cross-scoring throughout.
    adaptive, g_adaptive, _, rewards = run_group(
        toy_backbone,
        "srsoup",
        names,
        weights,
        T,
        soup_cross_score=True,
        switch="adaptive",
        switch_threshold=0.9999,
        **opts,
    )
    assert (
        int(adaptive.queries.sum())
        == sum(r.queries for r in rewards.values())
        <= g_adaptive.plan(T).reward_queries
    )
    assert g_adaptive.plan(T).reward_queries == S * (2 * 2 + 3 * 2) * K + (T - S) * K * 8

    z = {(0, 0): torch.tensor([1.0, -1.0]), (0, 1): torch.tensor([0.5, -0.5])}
    g.weights = torch.tensor([[1.0, 0.0], [0.25, 0.75], [0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(g.pool_rewards(z, 0, 0, 1), torch.tensor([0.625, -0.625]))


@pytest.mark.parametrize(
    "option,value,match",
    [
        ("soup_cross_score", "yes", r"soup_cross_score='yes' must be true or false"),
        ("importance_min_ess", 0.0, r"importance_min_ess=0.0 must be in \(0, 1\]"),
        ("importance_min_ess", 1.5, r"importance_min_ess=1.5 must be in \(0, 1\]"),
        ("importance_weights", "yes", r"importance_weights='yes' must be true or false"),
        ("soup_weight_power", 0.0, r"soup_weight_power=0.0 must be a number > 0"),
        ("soup_weight_power", True, r"soup_weight_power=True must be a number > 0"),
        ("soup_weight_power", "abc", r"soup_weight_power='abc' must be a number > 0"),
        ("soup_candidate_factor", "abc", r"soup_candidate_factor='abc' must be a number > 0"),
    ],
)
def test_importance_options_are_checked(option, value, match):
    with pytest.raises(ValueError, match=match):
        METHODS["srsoup"](**{option: value})


@pytest.mark.parametrize("switch", ["adaptive", "adaptive_weighted"])
@pytest.mark.parametrize("threshold", [1e-12, 0.9999, 1.0])
def test_srsoup_adaptive_switch_counts_what_its_chains_did_within_its_bound(toy_backbone, threshold, switch):
    """switch=adaptive: a chain that leaves the soup draws K candidates of its own (not the anchors' K_soup: it
    shares them with no one) and queries every reward it weighs; the ledger is what the trace's phases say, never
    above the plan's bound; a threshold no coefficient falls below leaves the fixed window's run unchanged."""
    names = ["colorfulness", "brightness"]
    weights = weight_grid(None, 4, names)  # L=5: 3 mixed chains
    T, K, S, k_soup = 5, 2, 4, 4
    opts = dict(num_candidates=K, soup_end_step=S, soup_candidate_factor=k_soup / K, seed=3)
    adaptive, g, evals, rewards = run_group(
        toy_backbone, "srsoup", names, weights, T, switch=switch, switch_threshold=threshold, **opts
    )
    bound = g.plan(T)
    assert not bound.exact
    nz = [sum(1 for x in w if x > 0) for w in weights]
    drew = [r for r in adaptive.trace if r["phase"] != "soup"]
    anchors = {0, len(weights) - 1}
    did = sum((k_soup if r["step"] < S and r["weight_idx"] in anchors else K) * nz[r["weight_idx"]] for r in drew)
    assert int(adaptive.queries.sum()) == did == sum(r.queries for r in rewards.values()) <= bound.reward_queries
    assert int(adaptive.evals.sum()) == evals <= bound.denoiser_evals
    left = {r["weight_idx"] for r in adaptive.trace if r["step"] < S and r["phase"] == "weighted_sum"}
    fixed, g_fixed, _, _ = run_group(toy_backbone, "srsoup", names, weights, T, **opts)
    if threshold < 1e-6:  # nobody leaves: the fixed window's run
        assert not left and int(adaptive.queries.sum()) == g_fixed.plan(T).reward_queries
        assert torch.equal(adaptive.images, fixed.images)
    else:  # every mixed chain leaves once its mean moves off the anchors'
        assert left == {1, 2, 3} and did > g_fixed.plan(T).reward_queries


def test_soup_candidate_factor_buys_candidates_for_the_anchors_only(toy_backbone):
    """With an adaptive switch the mixed chains that left the soup draw K, whatever soup_candidate_factor gives
    the anchors: their queries are those of factor 1, the anchors' grow with K_soup."""
    names = ["colorfulness", "brightness"]
    weights = weight_grid(None, 4, names)
    T, K = 4, 2
    rows = {}
    for factor in (1.0, 3.0):
        result, _, _, _ = run_group(
            toy_backbone,
            "srsoup",
            names,
            weights,
            T,
            num_candidates=K,
            soup_end_step=None,
            soup_candidate_factor=factor,
            switch="adaptive",
            switch_threshold=1.0,  # every mixed chain leaves once its mean moves off the anchors' (step 1)
        )
        rows[factor] = result.queries.tolist()
    assert rows[3.0][1:-1] == rows[1.0][1:-1] == [(T - 1) * K * 2] * 3
    assert rows[3.0][0] == rows[3.0][-1] == T * 3 * K == 3 * rows[1.0][0]


def test_compress_tricks_normalize_only_candidates_above_the_target_size():
    """The reference's compressibility normalization (sd15_aes_compress): candidates larger than the target get
    z-scores among themselves (population std), the rest 0; one such candidate gets 1; none, candidate 0 gets 1.
    The compressibility anchor keeps only its top weights."""
    r = torch.tensor([-20.0, -10.0, -30.0, -16.0, -12.0], dtype=torch.float64)  # −kB
    z = compress_trick(normalize_rewards(r), r, 15.0, "zscore")
    big = r[[0, 2, 3]]
    torch.testing.assert_close(z[[0, 2, 3]].double(), (big - big.mean()) / big.std(unbiased=False))
    assert z[1] == z[4] == 0
    one = torch.tensor([-10.0, -18.0, -12.0])
    assert compress_trick(normalize_rewards(one), one, 15.0, "zscore").tolist() == [0.0, 1.0, 0.0]
    none = torch.tensor([-10.0, -11.0, -12.0])
    assert compress_trick(normalize_rewards(none), none, 15.0, "zscore").tolist() == [1.0, 0.0, 0.0]
    assert keep_top(torch.tensor([0.3, -1.0, 2.0, 0.5, 0.1, -0.2]), 2).tolist() == [0, 0, 2.0, 0.5, 0, 0]


def test_compress_tricks_steer_only_the_compressibility_anchor_in_the_soup(toy_backbone, monkeypatch):
    """With every candidate above the target (0 kB) and the whole top kept, the tricks change nothing; keeping the
    top sixth changes the compressibility anchor's chain and leaves the other anchor's as it was."""
    monkeypatch.setattr(toy_backbone, "chunk_size", 1)  # rows alike whatever the batch (as for the anchors above)
    names = ["colorfulness", "jpeg_compressibility"]
    weights = weight_grid(None, 2, names)  # [[0,1],[.5,.5],[1,0]]
    opts = dict(seed=3, num_candidates=6, soup_end_step=3)

    def run(**tricks):
        return run_group(toy_backbone, "srsoup", names, weights, 5, **opts, **tricks)[0].images

    off = run()
    torch.testing.assert_close(run(compress_tricks=True, compress_target_kb=0.0, compress_top_fraction=1.0), off)
    top = run(compress_tricks=True, compress_target_kb=0.0)
    torch.testing.assert_close(top[2], off[2], atol=1e-4, rtol=0)  # the colourfulness anchor
    assert (top[0] - off[0]).abs().max() > 1e-2  # the compressibility anchor followed its top candidate only


def test_srsoup_window_may_start_late_and_counts_exactly(toy_backbone):
    """soup_start_step > 0: weighted-sum steps before the window, the soup inside it, weighted sum after."""
    names = ["colorfulness", "brightness"]
    weights = weight_grid(None, 2, names)  # L=3, nz=4
    T, K, start, end = 5, 3, 1, 3
    result, g, evals, rewards = run_group(
        toy_backbone, "srsoup", names, weights, T, num_candidates=K, soup_start_step=start, soup_end_step=end
    )
    queries = (T - (end - start)) * K * 4 + (end - start) * K * 2
    assert g.plan(T).reward_queries == queries == int(result.queries.sum())
    assert sum(r.queries for r in rewards.values()) == queries and g.plan(T).denoiser_evals == evals
    phases = {(r["step"], r["weight_idx"]): r["phase"] for r in result.trace}
    after = ["weighted_sum"] * (T - end)
    assert [phases[(s, 1)] for s in range(T)] == ["weighted_sum", "soup", "soup", *after]
    assert [phases[(s, 0)] for s in range(T)] == ["weighted_sum", "soup_anchor", "soup_anchor", *after]


@pytest.mark.parametrize("switch,left", [("adaptive", {1, 3}), ("adaptive_weighted", {3})])
def test_adaptive_switches_weigh_the_anchors_as_documented(switch, left):
    """Chain 1 (0.25/0.75) sits on the anchor it weighs 0.75 and far from the other; chain 3 (0.75/0.25) the other
    way round; chain 2 (0.5/0.5) midway. `adaptive` takes the least overlap (both 1 and 3 leave at 0.8),
    `adaptive_weighted` the w-weighted one (0.25·0.61 + 0.75·1 = 0.90 stays, 0.75·0.61 + 0.25·1 = 0.71 leaves)."""
    from types import SimpleNamespace

    g = METHODS["srsoup"](num_candidates=2, soup_end_step=None, switch=switch, switch_threshold=0.8)
    g.setup(torch.tensor(weight_grid(None, 4, ["a", "b"]), dtype=torch.float64), ["a", "b"])
    assert g.anchors == {0: 4, 1: 0}  # reward a's anchor is the last weight (1, 0)
    mean = torch.tensor([0.0, 0.0, 1.0, 0.0, 2.0]).unsqueeze(1).repeat(1, 8)  # chain 2 midway between anchors
    g.start_group()
    g._update_switch(SimpleNamespace(step=0, dist=SimpleNamespace(mean=mean, sigma=torch.tensor(1.0))))
    assert g._left == left


def test_soup_share_radius_pools_every_sharers_gradient_and_counts_exactly(toy_backbone, monkeypatch):
    """extra_anchors=all with soup_share_radius=1: every chain draws K_soup candidates of its own and each reward's
    gradient pools every chain that scored it, so a mixed chain's unnormalized g is w_1·g(anchor 1) + w_2·g(anchor
    2) at every step (rewards normalized per sharer); counts are those of K_soup for every chain."""
    from srsoup.guidance.steps import StepContext

    names = ["colorfulness", "brightness"]
    weights = weight_grid(None, 4, names)  # 0, .25, .5, .75, 1: L=5, nz=8
    steps_g = []
    move = StepContext.move

    def spy(ctx, mean, g):
        steps_g.append(g.clone())
        return move(ctx, mean, g)

    monkeypatch.setattr(StepContext, "move", spy)
    T, K = 4, 6
    opts = dict(num_candidates=K, soup_end_step=None, soup_candidate_factor=0.5, extra_anchors="all", seed=4)
    result, g, evals, rewards = run_group(toy_backbone, "srsoup", names, weights, T, soup_share_radius=1.0, **opts)
    assert g.pool == {c: [0, 1, 2, 3, 4] for c in range(5)}
    k_soup = 3
    assert g.plan(T).reward_queries == T * k_soup * 8 == int(result.queries.sum())
    assert sum(r.queries for r in rewards.values()) == T * k_soup * 8
    assert g.plan(T).denoiser_evals == evals == T * 5 + (T - 1) * 5 * k_soup
    assert len(steps_g) == T
    assert {r["phase"] for r in result.trace} == {"soup_pool"}  # every chain draws and pools at every step
    for step_g in steps_g:
        # weights[0] is the brightness anchor (0, 1), weights[4] the colourfulness one (1, 0).
        for c, (w1, w2) in enumerate(weights):
            torch.testing.assert_close(step_g[c], w1 * step_g[4] + w2 * step_g[0], atol=1e-4, rtol=1e-4)
    # Without pooling the mixed chains' own candidates alone steer them: not the same combination.
    steps_g.clear()
    run_group(toy_backbone, "srsoup", names, weights, T, **opts)
    mixed = steps_g[1][2]
    assert float((mixed - 0.5 * steps_g[1][4] - 0.5 * steps_g[1][0]).abs().max()) > 1e-2


@pytest.mark.parametrize("antithetic", [False, True])
def test_soup_share_radius_gives_each_sharer_its_own_noise(antithetic):
    """Pooling sharers draw disjoint slices of one index-keyed noise set (antithetic pairs kept within a slice);
    the radius picks who pools whom (max |w − w'|)."""
    import types

    g = METHODS["srsoup"](
        num_candidates=4, soup_end_step=None, extra_anchors="all", soup_share_radius=0.25, antithetic=antithetic
    )
    g.setup(torch.tensor(weight_grid(None, 4, ["a", "b"]), dtype=torch.float64), ["a", "b"])
    assert g.pool == {0: [0, 1], 1: [0, 1, 2], 2: [1, 2, 3], 3: [2, 3, 4], 4: [3, 4]}
    shape = (2, 3)
    ctx = types.SimpleNamespace(step=1, noise=lambda k, anti=False: step_noise(7, 1, k, shape, anti), num_steps=4)
    eps = g.noise_sets(ctx, [0, 1, 2, 3, 4], [4] * 5)
    flat = torch.cat([eps[c] for c in range(5)])
    if antithetic:
        draws = step_noise(7, 1, 10, shape)
        for c in range(5):
            torch.testing.assert_close(eps[c], torch.cat([draws[2 * c : 2 * c + 2], -draws[2 * c : 2 * c + 2]]))
    else:
        torch.testing.assert_close(flat, step_noise(7, 1, 20, shape))
    assert len({tuple(e.flatten().tolist()) for e in flat}) == 20
    plain = METHODS["srsoup"](num_candidates=4, soup_end_step=None, extra_anchors="all", antithetic=antithetic)
    plain.setup(torch.tensor(weight_grid(None, 4, ["a", "b"]), dtype=torch.float64), ["a", "b"])
    shared = plain.noise_sets(ctx, [0, 1, 2, 3, 4], [4] * 5)
    assert all(torch.equal(shared[c], shared[0]) for c in range(5))  # one set shared by all, as in the paper


@pytest.mark.parametrize(
    "option,value,match",
    [
        ("soup_share_radius", -0.1, r"soup_share_radius=-0.1 must be a number >= 0"),
        ("soup_share_radius", "near", r"soup_share_radius='near' must be a number >= 0"),
        ("extra_anchors", "every", r"extra_anchors='every'; valid: all, or a list of grid weights"),
    ],
)
def test_share_options_are_checked(option, value, match):
    with pytest.raises(ValueError, match=match):
        METHODS["srsoup"](**{option: value})
