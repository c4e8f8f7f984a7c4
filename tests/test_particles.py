"""FK steering and per-step selection: exact counts, budget fit, determinism, resume, equivalences, errors."""

from __future__ import annotations

import json

import pytest
import torch

from srsoup import runner
from srsoup.errors import SrsoupError
from srsoup.guidance import METHODS
from srsoup.guidance.fk import FK, effective_sample_size, resample_indices
from srsoup.spec import build_spec, weight_grid
from tests.conftest import compose
from tests.test_guidance import REWARD_FNS, brightness, run_group
from tests.test_runner import read_csv, snapshot


def counts(backbone, method, names, weights, T, **options):
    """Plan and what one group really did, side by side."""
    decodes = backbone.decodes
    result, g, evals, rewards = run_group(backbone, method, names, weights, T, **options)
    plan = g.plan(T)
    actual = dict(
        queries=int(result.queries.sum()),
        counted=sum(r.queries for r in rewards.values()),
        by_reward=result.queries_by_reward,
        evals=evals,
        row_evals=int(result.evals.sum()),
        decodes=backbone.decodes - decodes,
    )
    return plan, actual, result, g


FK_CASES = [  # (T, P, divisions, M, frequency, start, end, ess_threshold)
    (4, 3, 2, 2, 1, 0, None, None),
    (5, 2, 1, 1, 2, 1, 4, None),
    (6, 2, None, 3, 2, 0, None, 0.9),
    (3, 1, 2, 2, 1, 0, None, None),
    (4, 4, 2, 2, 5, 3, None, None),  # the only step of the window is the last: no resampling at all
]


@pytest.mark.parametrize("T,P,div,M,freq,start,end,ess", FK_CASES)
def test_fk_counts_are_exact(toy_backbone, T, P, div, M, freq, start, end, ess):
    names = list(REWARD_FNS)[:M]
    weights = weight_grid(None, div, names)
    L, nz = len(weights), sum(sum(1 for x in w if x > 0) for w in weights)
    options = dict(
        num_particles=P, resample_frequency=freq, resampling_t_start=start, resampling_t_end=end, ess_threshold=ess
    )
    plan, actual, result, g = counts(toy_backbone, "fk", names, weights, T, **options)
    S = len([s for s in range(start, end or T, freq) if s < T - 1])
    assert plan.reward_queries == P * (S + 1) * nz == actual["queries"] == actual["counted"]
    assert plan.reward_queries_by_reward == actual["by_reward"]
    assert plan.denoiser_evals == L * P * (T + S) == actual["evals"] == actual["row_evals"]
    assert plan.decodes == L * P * (S + 1) == actual["decodes"]
    assert sum(p["reward_queries"] for p in plan.phases.values()) == plan.reward_queries
    assert sum(p["denoiser_evals"] for p in plan.phases.values()) == plan.denoiser_evals
    assert result.images.shape[0] == L and len(result.trace) == T * L * P
    # Each weight's row carries the queries of its own particles: P per scoring and reward it weighs.
    for w, row in zip(weights, result.queries.tolist()):
        assert row == P * (S + 1) * sum(1 for x in w if x > 0)


SELECT_CASES = [(4, 3, 2, 2), (3, 1, 1, 1), (5, 2, None, 3)]  # (T, K, divisions, M)


@pytest.mark.parametrize("T,K,div,M", SELECT_CASES)
def test_select_costs_exactly_what_weighted_sum_costs(toy_backbone, T, K, div, M):
    names = list(REWARD_FNS)[:M]
    weights = weight_grid(None, div, names)
    plan, actual, *_ = counts(toy_backbone, "select", names, weights, T, num_candidates=K)
    ws_plan, ws_actual, *_ = counts(toy_backbone, "weighted_sum", names, weights, T, num_candidates=K)
    assert actual == ws_actual
    assert plan.reward_queries == ws_plan.reward_queries == actual["queries"] == actual["counted"]
    assert plan.reward_queries_by_reward == actual["by_reward"]
    assert plan.denoiser_evals == actual["evals"] == actual["row_evals"]
    assert plan.decodes == actual["decodes"]


def test_fk_queries_grow_with_particles_so_fit_can_lower_them():
    spec = build_spec(compose("device=cpu", "guidance=fk", "sampler.steps=10"))
    method = spec.build_method()
    methods = [METHODS["fk"](**{**spec.guidance, "num_particles": p}) for p in range(1, 9)]
    for g in methods:
        g.setup(method.weights, spec.reward_names)
    totals = [g.plan(10).reward_queries for g in methods]
    assert totals == sorted(totals) and len(set(totals)) == len(totals)


@pytest.mark.parametrize(
    "method,extra,key,start,budget,expected",
    [
        # fk, T=4, L=6, Σnz=10, frequency 1: S=3 resampling steps, (3+1)·10 = 40 queries per particle.
        ("fk", ["guidance.resample_frequency=1"], "num_particles", 6, 130, 3),
        # select, T=4: as weighted_sum, 4·10 = 40 queries per candidate.
        ("select", [], "num_candidates", 6, 170, 4),
    ],
)
def test_budget_fit_lowers_the_size_and_the_ledger_stays_within(
    toy_cfg, tmp_path, method, extra, key, start, budget, expected
):
    cfg = toy_cfg(
        f"guidance={method}",
        *extra,
        f"guidance.{key}={start}",
        "budget=fit",
        f"budget.max_reward_queries={budget}",
        "seeds=[0,1]",
    )
    spec = build_spec(cfg)
    assert spec.guidance[key] == expected and spec.fitted_from == start
    run_dir = runner.run(cfg, tmp_path / method)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary[key] == expected
    per_group = summary["plan"]["per_group"]["reward_queries"]
    assert per_group == 40 * expected <= budget
    assert summary["reward_queries"] == 2 * per_group == sum(summary["reward_queries_by_reward"].values())
    assert all(sum(g["reward_queries_by_reward"].values()) <= budget for g in summary["groups"].values())


@pytest.mark.parametrize(
    "method,options",
    [
        ("fk", dict(num_particles=3, resample_frequency=1)),
        ("fk", dict(num_particles=3, resample_frequency=1, resampler="systematic", potential="sum")),
        ("fk", dict(num_particles=4, resample_frequency=1, ess_threshold=0.9, potential="difference")),
        ("select", dict(num_candidates=3, selection="softmax", alpha=0.5)),
    ],
)
def test_same_settings_give_the_same_images(toy_backbone, method, options):
    names = ["colorfulness", "brightness"]
    weights = weight_grid(None, 2, names)
    a, *_ = run_group(toy_backbone, method, names, weights, 4, seed=5, **options)
    b, *_ = run_group(toy_backbone, method, names, weights, 4, seed=5, **options)
    assert torch.equal(a.images, b.images) and [r["phase"] for r in a.trace] == [r["phase"] for r in b.trace]
    other, *_ = run_group(toy_backbone, method, names, weights, 4, seed=6, **options)
    assert not torch.equal(a.images, other.images)


@pytest.mark.parametrize("method", ["fk", "select", "best_of_n"])
def test_rerun_resumes_and_adds_seeds_as_one_run_would(toy_cfg, tmp_path, method):
    opts = [f"guidance={method}", *(["guidance.resample_frequency=2"] if method == "fk" else [])]
    ref = runner.run(toy_cfg(*opts, "seeds=[0,1]"), tmp_path / "ref")
    run_dir = tmp_path / "resumed"
    runner.run(toy_cfg(*opts, "seeds=[0]"), run_dir)
    runner.run(toy_cfg(*opts, "seeds=[0,1]"), run_dir)  # group (0, 0) is skipped, (0, 1) is added
    assert snapshot(run_dir) == snapshot(ref)
    runner.run(toy_cfg(*opts, "seeds=[0,1]"), run_dir)  # nothing left to do: nothing changes
    assert snapshot(run_dir) == snapshot(ref)
    rows = read_csv(run_dir / "rewards.csv")
    assert len(rows) == len({(r["seed"], r["weight_idx"]) for r in rows}) == 2 * 6


def test_fk_with_one_particle_is_unguided_sampling(toy_backbone):
    """P = 1: resampling one particle keeps it, so every weight's image is the seed's unguided image."""
    names = ["colorfulness", "brightness"]
    plain, *_ = run_group(toy_backbone, "none", names, [[0.0, 0.0]], 4, seed=4)
    one, *_ = run_group(toy_backbone, "fk", names, [[1.0, 0.0]], 4, seed=4, num_particles=1, resample_frequency=1)
    assert torch.equal(one.images[0], plain.images[0])
    grid, *_ = run_group(toy_backbone, "fk", names, weight_grid(None, 2, names), 4, seed=4, num_particles=1)
    torch.testing.assert_close(grid.images, plain.images.expand_as(grid.images), atol=1e-4, rtol=0)


def test_fk_particle_zero_is_unguided_until_it_is_resampled(toy_backbone):
    """No resampling step (the window is the last step only): the final particles are P unguided samples, each
    weight picks one, and that weight's best is at least as good as particle 0, the unguided sample."""
    plain, *_ = run_group(toy_backbone, "none", ["brightness"], [[0.0]], 4, seed=2)
    fk, *_ = run_group(
        toy_backbone, "fk", ["brightness"], [[1.0]], 4, seed=2, num_particles=4, resampling_t_start=3
    )
    assert float(brightness(fk.images, None)[0]) >= float(brightness(plain.images, None)[0])


def test_select_with_one_candidate_is_unguided_sampling(toy_backbone):
    """K = 1: the one candidate is μ + σ·ε_1, the unguided step (its queries are still made and counted)."""
    plain, *_ = run_group(toy_backbone, "none", ["colorfulness"], [[0.0]], 4, seed=3)
    one, *_ = run_group(toy_backbone, "select", ["colorfulness"], [[1.0]], 4, seed=3, num_candidates=1)
    assert torch.equal(one.images, plain.images) and int(one.queries.sum()) == 4


def test_select_raises_its_reward_over_plain_sampling_on_the_toy_model(toy_backbone):
    gains = []
    for seed in range(3):
        guided, *_ = run_group(toy_backbone, "select", ["brightness"], [[1.0]], 5, seed=seed, num_candidates=4)
        plain, *_ = run_group(toy_backbone, "none", ["brightness"], [[0.0]], 5, seed=seed)
        gains.append(float(brightness(guided.images, None) - brightness(plain.images, None)))
    assert all(g > 0 for g in gains), gains


@pytest.mark.parametrize("potential", ["max", "sum", "difference"])
def test_fk_resamples_towards_the_best_particle(toy_backbone, monkeypatch, potential):
    """A huge λ puts all the weight on the best particle: after the first resampling (where every potential is
    exp(λ·value)) every particle is a copy of it."""
    seen = []
    reweigh = FK.reweigh

    def spy(self, ctx, x):
        out = reweigh(self, ctx, x)
        seen.append((x.clone(), out, [ctx.stats.reward_mean[(c, "brightness")] for c in range(len(x))]))
        return out

    monkeypatch.setattr(FK, "reweigh", spy)
    options = dict(num_particles=4, lmbda=1e6, resample_frequency=1, potential=potential)
    result, *_ = run_group(toy_backbone, "fk", ["brightness"], [[1.0]], 3, **options)
    assert [r["phase"] for r in result.trace] == ["resample"] * 8 + ["sample"] * 4  # the last step picks the best
    x, out, scores = seen[0]
    best = max(range(4), key=scores.__getitem__)
    assert len(set(scores)) == 4 and all(torch.equal(row, x[best]) for row in out)


def test_resamplers_and_ess():
    gen = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    for method in ("multinomial", "systematic"):
        assert resample_indices(probs, method, gen).tolist() == [1, 1, 1]
    # Systematic resampling keeps each particle floor(P·w) or ceil(P·w) times.
    probs = torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64)
    for _ in range(20):
        idx = resample_indices(probs, "systematic", gen)
        kept = torch.bincount(idx, minlength=4).tolist()
        assert kept[0] == 2 and kept[1] == 1 and kept[2] + kept[3] == 1
    assert effective_sample_size(torch.zeros(5)) == pytest.approx(5)
    assert effective_sample_size(torch.tensor([0.0, -1e9, -1e9])) == pytest.approx(1)


BAD = [
    (["guidance=fk", "guidance.num_particles=0"], "guidance.num_particles=0 must be >= 1"),
    (["guidance=fk", "guidance.lmbda=0"], "guidance.lmbda=0 must be a finite number > 0"),
    (["guidance=fk", "guidance.lmbda=nan"], "guidance.lmbda=nan must be a finite number > 0"),
    (["guidance=fk", "guidance.potential=min"], "guidance.potential='min'; valid: sum, max, difference"),
    (["guidance=fk", "guidance.resampler=stratified"], "valid: multinomial, systematic"),
    (["guidance=fk", "sampler.steps=4", "guidance.resampling_t_start=4"], "resampling_t_start=4 is outside"),
    (["guidance=fk", "sampler.steps=4", "guidance.resampling_t_end=5"], "resampling_t_end=5 is past the last"),
    (["guidance=fk", "guidance.resampling_t_start=3", "guidance.resampling_t_end=2"], "resampling_t_end=2 must"),
    (["guidance=fk", "guidance.resample_frequency=0"], "guidance.resample_frequency=0 must be >= 1"),
    (["guidance=fk", "guidance.ess_threshold=1.5"], "guidance.ess_threshold=1.5 must be in (0, 1]"),
    (["guidance=fk", "guidance.scale=fixed"], "guidance.reward_scales="),
    (["guidance=fk", "guidance.scale=fixed", "guidance.reward_scales={colorfulness:50}"], "no scale for jpeg"),
    (["guidance=fk", "sampler.eta=0"], "guidance=fk needs a stochastic step, but sampler.eta=0"),
    (["guidance=fk", "budget=fit", "budget.max_reward_queries=10"], "too small even for particles=2"),
    (["guidance=select", "guidance.selection=best"], "guidance.selection='best'; valid: greedy, softmax"),
    (["guidance=select", "guidance.alpha=0"], "guidance.alpha=0 must be a number > 0"),
    (["guidance=select", "sampler.eta=0"], "guidance=select needs a stochastic step, but sampler.eta=0"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[" ".join(b[0][1:]) for b in BAD])
def test_bad_settings_are_one_clear_error(overrides, message):
    with pytest.raises(SrsoupError) as info:
        build_spec(compose("device=cpu", *overrides))
    text = str(info.value)
    assert message in text and "\n" not in text


def test_summary_says_particles_and_schedule(toy_cfg, tmp_path):
    run_dir = runner.run(
        toy_cfg("guidance=fk", "guidance.num_particles=2", "guidance.resample_frequency=2"), tmp_path
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == "fk" and summary["num_particles"] == 2 and summary["resample_frequency"] == 2
    assert summary["potential"] == "sum" and summary["scale"] == "zscore"
    assert summary["plan"]["phases"]["resample"]["steps"] == 2  # steps 0 and 2 of 4 (3 is the last)
    trace = read_csv(run_dir / "trace.csv")
    assert len(trace) == 4 * 6 * 2 and {t["phase"] for t in trace} == {"sample", "resample"}


def test_fk_and_select_raise_each_anchor_reward_on_the_embedded_model(tmp_path):
    """On the shipped weights, each one-hot weight's images beat unguided sampling on that reward (same prompts,
    seeds and x_T), for both methods at a small size."""
    base = [
        "sampler.steps=10",
        "progress=false",
        "device=cpu",
        "seeds=[0,1]",
        "prompts.texts=[a red circle on a blue background,a small white triangle on a green background]",
        "weights.grid=[[1.0,0.0],[0.0,1.0]]",
    ]

    def mean_reward(run_dir, reward, weight=None):
        rows = read_csv(run_dir / "rewards.csv")
        rows = [r for r in rows if weight is None or float(r[f"w_{reward}"]) == weight]
        return sum(float(r[f"r_{reward}"]) for r in rows) / len(rows)

    plain = runner.run(compose(*base, "guidance=none"), tmp_path / "none")
    runs = {
        "fk": ["guidance.num_particles=6", "guidance.resample_frequency=3"],
        "select": ["guidance.num_candidates=4"],
    }
    for method, options in runs.items():
        guided = runner.run(compose(*base, f"guidance={method}", *options), tmp_path / method)
        for reward in ("colorfulness", "jpeg_compressibility"):
            assert mean_reward(guided, reward, 1.0) > mean_reward(plain, reward), (method, reward)


def test_best_of_n_keeps_its_samples_and_a_smaller_n_is_their_first_rows(toy_cfg, tmp_path):
    """samples.csv: every sample's scores under every reward (guided and eval); each rewards.csv row is the
    sample ``choose`` picks from them; a run at N' < N draws the first N' samples of the run at N exactly, so it
    picks what ``choose`` picks from those rows (what `srsoup bench` derives its smaller budgets from)."""
    from srsoup.guidance.best_of_n import choose

    def picks(samples: list[dict], rows: list[dict], n: int) -> list[dict]:
        rewards = ["colorfulness", "jpeg_compressibility"]
        out = []
        for seed in (0, 1):
            pool = [r for r in samples if int(r["seed"]) == seed and int(r["sample"]) < n]
            weights = [[float(r[f"w_{m}"]) for m in rewards] for r in rows if int(r["seed"]) == seed]
            scores = [torch.tensor([float(r[f"r_{m}"]) for r in pool], dtype=torch.float64) for m in rewards]
            out += [pool[c] for c in choose(torch.tensor(weights), scores).tolist()]
        return out

    scored = ["r_colorfulness", "r_jpeg_compressibility", "r_prompt_adherence"]
    big = runner.run(toy_cfg("guidance=best_of_n", "guidance.num_candidates=6", "seeds=[0,1]"), tmp_path / "n6")
    samples, rows = read_csv(big / "samples.csv"), read_csv(big / "rewards.csv")
    assert list(samples[0]) == ["prompt_idx", "seed", "sample", *scored]
    assert [(int(r["seed"]), int(r["sample"])) for r in samples] == [(s, i) for s in (0, 1) for i in range(6)]
    assert [[r[c] for c in scored] for r in rows] == [[r[c] for c in scored] for r in picks(samples, rows, 6)]
    small = runner.run(toy_cfg("guidance=best_of_n", "guidance.num_candidates=3", "seeds=[0,1]"), tmp_path / "n3")
    first = [r for r in samples if int(r["sample"]) < 3]
    assert read_csv(small / "samples.csv") == first
    small_rows = read_csv(small / "rewards.csv")
    assert [[r[c] for c in scored] for r in small_rows] == [
        [r[c] for c in scored] for r in picks(samples, small_rows, 3)
    ]
    assert not (runner.run(toy_cfg("guidance=none"), tmp_path / "none") / "samples.csv").exists()
