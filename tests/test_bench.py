"""`srsoup bench`: every method at each quick budget within it and as planned, a variant from the command line,
the yardstick from none and single alone, paired bootstrap over shared groups, the figure, the dry run of the paper
setting, overhead from timers, child processes, another backbone by overrides, and results re-rendered byte for
byte."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from srsoup import bench
from srsoup.bench import analyse, execute, plan, reuse
from srsoup.report.compare import PairedBootstrap, Yardstick
from srsoup.tiny.grammar import HELD_OUT, parse_prompt

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
#: A variant given on the command line: the paper's window, its anchors at twice K inside it.
CLI_VARIANT = "k2:guidance.soup_end_step=<2/5 T>,guidance.soup_candidate_factor=2"


# conftest's one_torch_thread for every test of this module.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def quick_results(toy_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    argv = [
        "--quick",
        "--in-process",
        "--out",
        str(out),
        "--variant",
        CLI_VARIANT,
        f"model.pretrained={toy_model_dir}",
    ]
    assert bench.main(argv) == 0
    return out, json.loads((out / "results.json").read_text())


def _runs(res: dict) -> dict[str, dict]:
    return {r["name"]: r for r in res["runs"]}


def test_quick_bench_writes_the_outputs_and_the_figure(quick_results):
    out, res = quick_results
    assert res["format"] == 2 and res["settings"]["setting"] == "quick"
    assert {"date", "machine", "settings", "planned", "analysis", "runs", "overhead", "memory", "targets"} <= set(
        res
    )
    md = (out / "results.md").read_text()
    assert md.startswith("Setting `quick`: embedded model")
    for section in ("**Yardstick**", "**All runs**", "**Equal reward-query budgets**", "**Query efficiency**"):
        assert section in md
    assert (out / "queries_vs_hv.png").read_bytes()[:8] == PNG
    assert "queries_vs_hv.png" in md
    # The curves: weighted_sum, the setting's three variants and the one given, select, fk, best_of_n.
    curves = [
        "weighted_sum",
        "srsoup_paper",
        "srsoup_whole",
        "srsoup_pool",
        "srsoup_k2",
        "select",
        "fk",
        "best_of_n",
    ]
    assert res["meta"]["curves"] == curves
    assert {q["curve"] for q in res["analysis"]["query_efficiency"]} == set(curves)
    assert [row["curve"] for row in res["analysis"]["equal_budget"]] == curves


def test_every_method_runs_at_each_quick_budget_within_it(quick_results):
    _, res = quick_results
    runs, meta = _runs(res), res["meta"]
    assert meta["budgets"] == [100, 200]  # weighted_sum's queries at K = 2 and 4 (T = 5, 10 queries per K-step)
    for curve in meta["curves"]:
        for b in meta["budgets"]:
            r = runs[f"{curve}_B{b}"]
            assert r["status"] == "complete" and r["budget"] == b, r
            assert 0 < r["reward_queries_per_group"] <= b, r["name"]
            assert r["size"] >= 2
    # fk sizes particles, best_of_n samples: each the largest that fits (fk: 2 scorings a particle at T = 5).
    assert (runs["fk_B100"]["size_label"], runs["fk_B100"]["size"]) == ("particles", 5)
    assert (runs["best_of_n_B200"]["size_label"], runs["best_of_n_B200"]["size"]) == ("N", 100)
    # The low budget (0.3 x weighted_sum's queries at K) runs the variants that fit there, and only them.
    assert meta["low_budgets"] == [60]
    assert [n for n in runs if n.endswith("_B60")] == ["srsoup_whole_B60", "srsoup_pool_B60"]
    assert [s["name"] for s in meta["skipped"]] == ["srsoup_paper_B60", "srsoup_k2_B60"]
    assert all("too small" in s["why"] for s in meta["skipped"])


def test_every_run_makes_exactly_the_planned_queries_and_evals(quick_results):
    _, res = quick_results
    for r in res["runs"]:
        assert r["status"] == "complete", r
        assert r["counts_match_plan"] and r["plan_exact"], r["name"]
        assert r["reward_queries"] == r["plan_reward_queries"] and r["denoiser_evals"] == r["plan_denoiser_evals"]
        assert r["hypervolume"] >= 0
    ws = _runs(res)["weighted_sum"]
    assert ws["hv_ratio_ws"] == 1 and ws["query_ratio_ws"] == 1
    # weighted_sum at the budget of its own K is the same run, not run twice; the plan counted it once.
    assert _runs(res)["weighted_sum_B200"]["same_as"] == "weighted_sum"
    planned = sum(r["plan_denoiser_evals"] for r in res["runs"] if not (r.get("same_as") or r.get("derived_from")))
    by_family = res["planned"]["by_family"]
    assert planned == sum(f["denoiser_evals"] for k, f in by_family.items() if k not in ("overhead", "memory"))


def test_a_variant_given_on_the_command_line_runs_with_its_templates(quick_results):
    out, res = quick_results
    variant = ["guidance.soup_end_step=<2/5 T>", "guidance.soup_candidate_factor=2"]
    assert res["settings"]["srsoup_variants"]["k2"] == variant
    runs_dir = out / res["settings"]["run_dirs"]
    k2 = [r for r in res["runs"] if r.get("variant") == "k2"]
    assert [r["name"] for r in k2] == ["srsoup_k2", "srsoup_k2_B100", "srsoup_k2_B200"]  # too small for B = 60
    for r in k2:
        summary = json.loads((runs_dir / r["name"] / "summary.json").read_text())
        assert summary["soup_end_step"] == 2 and summary["soup_num_candidates"] == 2 * summary["num_candidates"]
        assert summary["num_candidates"] == r["size"]
        # 2 soup steps x 2 anchors x 2K candidates + 3 steps x 10 scored chain-rewards x K = 38 K queries.
        assert r["reward_queries_per_group"] == 38 * r["size"]
        if r["budget"]:
            assert r["reward_queries_per_group"] <= r["budget"] < 38 * (r["size"] + 1)  # the largest K that fits


def test_best_of_n_at_a_smaller_budget_is_derived_from_the_largest_and_equals_its_own_run(quick_results, tmp_path):
    """best_of_n's smaller budget does not run: it is picked from the first N samples of the largest run's
    samples.csv, and equals a run of its own at that N (rows, counts, adherence)."""
    import pandas as pd

    from srsoup import runner
    from srsoup.report.compare import group_points

    out, res = quick_results
    runs, runs_dir = _runs(res), out / res["settings"]["run_dirs"]
    small = runs["best_of_n_B100"]
    assert (
        small["derived_from"] == "best_of_n_B200"
        and small["size"] == 50
        and not (runs_dir / small["name"]).exists()
    )
    assert "(first 50 samples of `best_of_n_B200`)" in (out / "results.md").read_text()
    own = runner.run(plan.compose(small["overrides"]), tmp_path / "own")
    rows = pd.read_csv(own / "rewards.csv")
    assert small["group_points"] == {k: v.tolist() for k, v in group_points(rows, list(plan.REWARDS)).items()}
    summary = json.loads((own / "summary.json").read_text())
    assert (small["reward_queries"], small["denoiser_evals"]) == (
        summary["reward_queries"],
        summary["denoiser_evals"],
    )
    assert small["adherence_mixed"] == analyse.mixed_adherence(rows)
    assert small["wall_seconds"] is None and small["counts_match_plan"]


def test_overhead_comes_from_the_runs_own_timers(quick_results):
    out, res = quick_results
    ov = res["overhead"]
    assert ov["run"] == "srsoup_paper" and ov["run_dir"] == "overhead_srsoup_paper"
    run = _runs(res)["srsoup_paper"]
    assert ov["counts"]["denoiser_evals"] == ov["plan_denoiser_evals"] == run["denoiser_evals"]
    assert ov["counts"]["reward_queries"] == run["reward_queries"]
    summary = json.loads((out / res["settings"]["run_dirs"] / ov["run_dir"] / "summary.json").read_text())
    assert ov["model_seconds"] == summary["timing"]["model_seconds"]
    assert 0 < ov["model_seconds"] <= ov["wall_seconds"] and ov["ratio_wall"] >= 1
    # the prompt encodes (one a group) are model time too, timed beside the denoiser and decoder
    assert ov["counts"]["encodes"] == ov["groups"] and 0 < ov["in_run_seconds"]["encode"] < ov["model_seconds"]
    assert sum(ov["in_run_seconds"].values()) == pytest.approx(ov["model_seconds"], abs=0.01)
    assert "| prompt encode (one a group) |" in (out / "results.md").read_text()
    assert "from the timers beside its counters" in (out / "results.md").read_text()


def test_quick_results_re_render_byte_for_byte(quick_results, tmp_path):
    out, _ = quick_results
    assert bench.main(["--render-only", str(out), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "results.md").read_bytes() == (out / "results.md").read_bytes()
    assert (tmp_path / "queries_vs_hv.png").read_bytes()[:8] == PNG


def test_reuse_takes_runs_from_an_earlier_results_json_and_every_figure_comes_out_the_same(
    quick_results, toy_model_dir, tmp_path, capsys, monkeypatch
):
    """`--reuse FILE`: the runs recorded there are not run again (no run dirs needed), the others run, and the
    analysis (ratios, paired intervals, equal budgets, query efficiency) equals that of all runs together."""
    out, res = quick_results
    earlier = json.loads((out / "results.json").read_text())
    assert all(len(r["group_points"]) == 1 for r in earlier["runs"])  # the quick setting's one group, kept
    # `none` lost its groups (as in a results.json of an older version): it runs again; one more differs in its
    # overrides: it runs again too; best_of_n's smaller budget is missing: its pool runs again to pick it from.
    for r in earlier["runs"]:
        if r["name"] == "none":
            del r["group_points"]
        if r["name"] == "select_B100":
            r["overrides"] = [*r["overrides"], "guidance.alpha=9"]
    earlier["runs"] = [r for r in earlier["runs"] if r["name"] != "best_of_n_B100"]
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    again = tmp_path / "again"
    argv = ["--quick", "--in-process", "--no-overhead", "--out", str(again), "--variant", CLI_VARIANT]
    argv += ["--reuse", str(tmp_path / "earlier.json"), f"model.pretrained={toy_model_dir}"]
    # a dry run says what it would take and what is left to run, and writes nothing
    assert bench.main([*argv, "--dry-run"]) == 0
    said: dict[str, str] = {}  # each run's row (the family totals below them start alike)
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("  "):
            said.setdefault(line.split()[0], line)
    assert "(taken from --reuse)" in said["weighted_sum"] and "taken" not in said["none"]
    assert "(first 50 samples of best_of_n_B200)" in said["best_of_n_B100"]
    assert "taken" not in said["best_of_n_B200"]
    assert not again.exists()
    assert bench.main(argv) == 0
    new = json.loads((again / "results.json").read_text())
    ran = sorted(p.name for p in (again / new["settings"]["run_dirs"]).iterdir() if p.is_dir())
    assert ran == ["best_of_n_B200", "none", "select_B100"]
    out_text = capsys.readouterr().out
    assert "runs taken from" in out_text
    to_run = next(x for x in out_text.splitlines() if x.startswith("to run here:")).split()[3]
    plans = {r["name"]: r["plan_denoiser_evals"] for r in res["runs"]}
    assert int(to_run.replace(",", "")) == plans["none"] + plans["select_B100"] + plans["best_of_n_B200"]
    # every figure as when all ran together (but seconds: the two runs that ran again took their own)
    assert _without_seconds(new["analysis"]) == _without_seconds(res["analysis"])
    for r in new["runs"]:
        old = _runs(res)[r["name"]]
        assert r["group_points"] == old["group_points"], r["name"]
        for key in ("hypervolume", "hv_ratio_ws", "hv_ratio_ws_ci95", "reward_queries", "denoiser_evals"):
            assert r[key] == old[key], (r["name"], key)
        assert bool(r.get("reused_from")) == ((r.get("same_as") or r.get("derived_from") or r["name"]) not in ran)
    assert "with `--reuse`" in (again / "results.md").read_text()
    monkeypatch.chdir(tmp_path)  # a FILE inside the working directory is named relative to it, however given
    assert reuse.load_reusable(tmp_path / "earlier.json", earlier["format"])[1]["file"] == "earlier.json"
    # a missing file: one line, exit 2, nothing written
    argv[argv.index(str(again))] = str(tmp_path / "never")
    argv[argv.index(str(tmp_path / "earlier.json"))] = str(tmp_path / "nope.json")
    assert bench.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope.json" in err and not (tmp_path / "never").exists()


def test_merge_of_shards_equals_the_groups_run_together(toy_model_dir, tmp_path, capsys):
    """`--merge A --merge B`: two shards of a setting (seed 0, seed 1) give the figures of one benchmark over both
    groups (fronts, hypervolumes, ratios and paired intervals, counts); a group in both, another setting, or no
    --out is one line and exit 2, and nothing is written."""
    argv = ["--quick", "--in-process", "--no-overhead", "--mem-candidates", "", "--methods", "weighted_sum,srsoup"]
    argv += [
        "--budget-ks",
        "4",
        "--low-budgets",
        "",
        "--only",
        "srsoup_paper",
        f"model.pretrained={toy_model_dir}",
    ]
    for name, seeds in (("a", "[0]"), ("b", "[1]"), ("together", "[0,1]")):
        assert bench.main([*argv, "--out", str(tmp_path / name), f"seeds={seeds}"]) == 0
    assert (
        bench.main(["--merge", str(tmp_path / "a"), "--merge", str(tmp_path / "b"), "--out", str(tmp_path / "m")])
        == 0
    )
    merged, together = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("m", "together"))
    assert merged["settings"]["seed_values"] == [0, 1] and merged["analysis"]["bootstrap"]["groups"] == 2
    # each benchmark's settings name the seeds its runs got from the `seeds=` override, not --quick's 0..N-1
    for name, seeds in (("a", [0]), ("b", [1]), ("together", [0, 1])):
        settings = json.loads((tmp_path / name / "results.json").read_text())["settings"]
        assert (settings["seed_values"], settings["seeds"]) == (seeds, len(seeds)), name
    # each results.md ends with the command that made it, the merge's too
    md = {name: (tmp_path / name / "results.md").read_text() for name in ("together", "m")}
    assert "Regenerate with `srsoup bench --quick --in-process" in md["together"]
    assert "Regenerate with `srsoup bench --merge " in md["m"]
    assert [r["name"] for r in merged["runs"]] == [r["name"] for r in together["runs"]]
    for r in merged["runs"]:
        t = _runs(together)[r["name"]]
        assert r["group_points"] == t["group_points"], r["name"]
        for key in ("groups", "reward_queries", "denoiser_evals", "reward_queries_by_reward", "counts_match_plan"):
            assert r[key] == t[key], (r["name"], key)
        for key in ("points", "hypervolume", "hv_ratio_ws", "hv_ratio_ws_ci95", "adherence_mixed"):
            np.testing.assert_allclose(np.array(r[key], dtype=float), np.array(t[key], dtype=float), rtol=1e-9)
    md = (tmp_path / "m" / "results.md").read_text()
    assert (
        "12 prompts" not in md
        and "1 prompts × 2 seeds (2 groups)" in md
        and "Merged with `srsoup bench --merge`" in md
    )
    capsys.readouterr()
    for bad, said in (
        (["--merge", str(tmp_path / "a"), "--merge", str(tmp_path / "a")], "is in"),
        (["--merge", str(tmp_path / "a"), "--merge", str(ROOT / "bench" / "t20_s23")], "steps=20"),
    ):
        assert bench.main([*bad, "--out", str(tmp_path / "never")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and said in err, err
    assert bench.main(["--merge", str(tmp_path / "a"), "--merge", str(tmp_path / "b")]) == 2
    assert "--merge needs --out" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def _without_seconds(tree):
    if isinstance(tree, dict):
        return {k: _without_seconds(v) for k, v in tree.items() if k != "wall_seconds"}
    return [_without_seconds(v) for v in tree] if isinstance(tree, list) else tree


# --- the analysis on synthetic groups ---------------------------------------------------------------------------
def _record(name: str, family: str, groups: dict, queries: int = 100, curve: str | None = None) -> dict:
    groups = {k: np.asarray(v, dtype=float) for k, v in groups.items()}
    return {
        "name": name,
        "family": family,
        "curve": curve,
        "status": "complete",
        "budget": None,
        "points": np.mean([groups[k] for k in sorted(groups)], axis=0).tolist(),
        "_groups": groups,
        "reward_queries": queries * len(groups),
        "reward_queries_per_group": queries,
        "denoiser_evals": 10,
        "wall_seconds": 1.0,
    }


def _front(rng, shift: float, keys=("p0_s0", "p1_s0", "p2_s0", "p3_s0")) -> dict:
    """A 3-weight front per group around (shift, shift), noisy per group."""
    base = np.array([[0.0, 1.0], [0.6, 0.6], [1.0, 0.0]]) + shift
    return {k: base + rng.normal(0, 0.05, base.shape) for k in keys}


def _synthetic(rng) -> list[dict]:
    one = lambda x, y: {k: [[x + rng.normal(0, 0.05), y]] for k in ("p0_s0", "p1_s0", "p2_s0", "p3_s0")}  # noqa: E731
    return [
        _record("none", "none", one(0.0, 0.0), 0),
        _record("single_a", "single", one(1.2, -0.2)),
        _record("single_b", "single", one(-0.3, 1.1)),
        _record("weighted_sum", "weighted_sum", _front(rng, 0.1), 400, "weighted_sum"),
        _record("srsoup_x", "srsoup", _front(rng, 0.05), 200, "srsoup_x"),
    ]


META = {"budgets": [], "low_budgets": [], "curves": ["weighted_sum", "srsoup_x", "srsoup_y"], "K": 4}


def test_yardstick_comes_from_none_and_single_alone_and_adding_a_run_changes_no_other_ratio():
    rng = np.random.default_rng(0)
    records = _synthetic(rng)
    a = analyse.analyse(records, META, n_boot=200)
    refs = [r for r in records if r["family"] in ("none", "single")]
    stick = Yardstick(np.array([p for r in refs for p in r["points"]]))
    assert a["yardstick"]["runs"] == ["none", "single_a", "single_b"]
    assert list(a["yardstick"]["low"].values()) == pytest.approx(stick.low)
    assert list(a["yardstick"]["high"].values()) == pytest.approx(stick.high)
    before = {r["name"]: (r["hypervolume"], r["hv_ratio_ws"], r["hv_ratio_ws_ci95"]) for r in records}
    assert before["srsoup_x"][1] == pytest.approx(
        stick.hypervolume(records[4]["points"]) / records[3]["hypervolume"]
    )
    # A far better run (beyond every yardstick run) changes nothing else: not the yardstick, no ratio, no interval.
    grown = [
        *_synthetic(np.random.default_rng(0)),
        _record("srsoup_y", "srsoup", _front(rng, 0.8), 150, "srsoup_y"),
    ]
    b = analyse.analyse(grown, META, n_boot=200)
    assert b["yardstick"] == a["yardstick"]
    for r in grown[:-1]:
        assert (r["hypervolume"], r["hv_ratio_ws"], r["hv_ratio_ws_ci95"]) == before[r["name"]]
    assert grown[-1]["hv_ratio_ws"] > 1
    (y,) = [q for q in b["query_efficiency"] if q["curve"] == "srsoup_y"]
    assert y["cheapest"]["name"] == "srsoup_y" and y["interpolated_query_ratio"] == pytest.approx(150 / 400)


def test_paired_bootstrap_pairs_each_run_with_weighted_sum_over_their_shared_groups():
    rng = np.random.default_rng(1)
    records = _synthetic(rng)
    ws = records[3]
    partial = _front(rng, 0.05, keys=("p0_s0", "p1_s0", "p2_s0"))  # one group fewer
    records.append(_record("srsoup_y", "srsoup", partial, 150, "srsoup_y"))
    a = analyse.analyse(records, META, n_boot=200)
    stick = Yardstick(np.array([p for r in records[:3] for p in r["points"]]))
    shared = {k: stick.normalize(ws["_groups"][k]) for k in partial}
    boot = PairedBootstrap(
        {"y": {k: stick.normalize(v) for k, v in partial.items()}, "ws": shared}, np.zeros(2), 200
    )
    assert boot.keys == ["p0_s0", "p1_s0", "p2_s0"]
    assert records[-1]["hv_ratio_ws_ci95"] == boot.ratio_ci("y", "ws")
    # The run missing a group changes no other run's interval (they resample all four groups, as without it).
    alone = _synthetic(np.random.default_rng(1))
    analyse.analyse(alone, META, n_boot=200)
    assert [r["hv_ratio_ws_ci95"] for r in alone] == [r["hv_ratio_ws_ci95"] for r in records[:-1]]
    assert a["bootstrap"]["groups"] == 4


def test_analysis_without_the_yardstick_runs_or_weighted_sum_says_so():
    rng = np.random.default_rng(2)
    records = _synthetic(rng)
    no_stick = analyse.analyse([r for r in records if r["family"] != "single"], META, n_boot=10)
    assert "error" in no_stick["yardstick"] and no_stick["query_efficiency"] == []
    no_ws = analyse.analyse([r for r in records if r["name"] != "weighted_sum"], META, n_boot=10)
    assert no_ws["query_efficiency"] == [] and "hv_ratio_ws" not in records[4]


def test_equal_budget_takes_weighted_sum_at_k_as_its_largest_budget_run():
    """`--only` without weighted_sum_B{K}: weighted_sum at K (the same queries) fills that budget's cells."""
    rng = np.random.default_rng(3)
    records = [
        *_synthetic(rng),
        _record("weighted_sum_B200", "weighted_sum", _front(rng, 0.0), 200, "weighted_sum"),
        _record("best_of_n_B400", "best_of_n", _front(rng, 0.2), 400, "best_of_n"),
    ]
    meta = {"budgets": [200, 400], "low_budgets": [], "curves": ["weighted_sum", "srsoup_x", "best_of_n"], "K": 4}
    rows = {row["curve"]: row["cells"] for row in analyse.analyse(records, meta, n_boot=50)["equal_budget"]}
    by_name = {r["name"]: r for r in records}
    assert rows["weighted_sum"]["400"]["name"] == "weighted_sum" and rows["weighted_sum"]["200"]["over_ws"] == 1
    best = rows["best_of_n"]["400"]
    assert best["over_ws"] == by_name["best_of_n_B400"]["hv_ratio_ws"] != 1
    assert best["over_ws_ci95"] == by_name["best_of_n_B400"]["hv_ratio_ws_ci95"]
    # Any curve's run at K that spends exactly a budget is its cell there, against weighted_sum at that budget.
    assert list(rows["srsoup_x"]) == ["200"] and rows["srsoup_x"]["200"]["name"] == "srsoup_x"
    assert rows["srsoup_x"]["200"]["over_ws"] == pytest.approx(
        by_name["srsoup_x"]["hypervolume"] / by_name["weighted_sum_B200"]["hypervolume"]
    )


# --- plan, templates and the command line -----------------------------------------------------------------------
def test_templates_variants_and_prompts():
    assert plan.template_value("2/5 T", 20, 8) == 8 and plan.template_value("2/5 T", 50, 16) == 20
    assert plan.template_value("T", 5, 4) == 5 and plan.template_value("2K", 5, 4) == 8
    assert plan.template_value("(K + 1) * 2", 5, 3) == 8
    assert plan.expand(["guidance.soup_end_step=<2/5 T>", "x=<K>"], 10, 3) == ["guidance.soup_end_step=4", "x=3"]
    assert plan.uses_k(["a=<2K>"]) and plan.uses_k(["a=<K * 2>"]) and not plan.uses_k(["a=<2/5 T>"])
    name, overrides = plan.parse_variant("mixed:guidance.extra_anchors=[[0.6,0.4],[0.4,0.6]],guidance.x=1")
    assert name == "mixed" and overrides == ["guidance.extra_anchors=[[0.6,0.4],[0.4,0.6]]", "guidance.x=1"]
    with pytest.raises(ValueError, match="NAME:KEY=VALUE"):
        plan.parse_variant("no overrides")
    with pytest.raises(ValueError, match="cannot read"):
        plan.template_value("2 x T", 5, 4)
    # Twelve seen-combination prompts of the grammar, none of those the methods were tuned on.
    assert len(set(plan.BENCH_PROMPTS)) == 12 and not set(plan.BENCH_PROMPTS) & set(plan.TUNING_PROMPTS)
    scenes = [parse_prompt(p) for p in plan.BENCH_PROMPTS]
    assert all(s is not None and (s.fg, s.shape, s.bg) not in HELD_OUT for s in scenes)
    for name in ("t20", "paper"):
        s = plan.Settings.of(name)
        assert s.seeds * s.prompts >= 24 and s.variants == plan.VARIANTS


def test_bad_variant_flag_is_one_line_and_exit_2(capsys):
    assert bench.main(["--variant", "k2", "--dry-run"]) == 2
    assert bench.main(["--variants", "nope", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "NAME:KEY=VALUE" in err[0] and "valid: paper, whole, pool" in err[1]


def test_the_command_results_md_gives_writes_no_machine_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["--out", str(tmp_path / "b"), f"model.pretrained={tmp_path / 'm'}", "seeds=[2,3]", "--only", "a,b"]
    assert bench.shown_command(argv) == "srsoup bench --out b model.pretrained=m 'seeds=[2,3]' --only a,b"


def test_dry_run_of_the_paper_setting_plans_and_prints_the_eval_total(tmp_path, capsys):
    assert bench.main(["--setting", "paper", "--dry-run", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "bench --setting paper: T=50, K=16, 24 prompt x seed groups" in out
    # weighted_sum at K = 16: 6 chains x 50 steps + 16 candidates x 6 chains x 49 steps = 5,004 evals per group.
    assert "weighted_sum" in out and " 5004" in out
    total = int(out.split("planned in all: ")[1].split(" denoiser evals")[0].replace(",", ""))
    assert total > 24 * 5004
    assert not (tmp_path / "out").exists()  # nothing run, nothing written


# --- processes, other backbones, committed results --------------------------------------------------------------
def test_child_process_reports_its_own_peak_rss(toy_model_dir, tmp_path):
    """One configuration through the child-process path (as the full benchmark runs every one)."""
    settings = plan.Settings.of("quick")
    overrides = [
        *plan.base_overrides(settings, ["a red circle on a blue background"], [0]),
        "guidance=srsoup",
        "guidance.num_candidates=4",
        "guidance.soup_end_step=2",
        f"model.pretrained={toy_model_dir}",
    ]
    side = execute.launch(plan.RunDef("srsoup", "srsoup", overrides), tmp_path, in_process=False)
    assert "error" not in side, (tmp_path / "srsoup.log").read_text()
    assert 0 < side["rss_after_imports_mb"] <= side["peak_rss_mb"]
    assert json.loads((tmp_path / "srsoup" / "summary.json").read_text())["status"] == "complete"
    assert "group 1 of 1 (prompt 0, seed 0) committed in" in (tmp_path / "srsoup.log").read_text()  # progress
    again = execute.launch(plan.RunDef("srsoup", "srsoup", overrides), tmp_path, in_process=False)
    assert again["cached"] and again["peak_rss_mb"] == side["peak_rss_mb"]


def test_overrides_run_the_bench_on_another_backbone(tiny, tmp_path):
    """`srsoup bench ... model=sd15 model.pretrained=DIR` plans and runs on the tiny SD1.5 copy as planned."""
    sd15 = f"model.pretrained={tiny / 'sd15'}"
    argv = ["--quick", "--steps", "2", "--candidates", "2", "--only", "srsoup_paper", "--in-process"]
    assert bench.main([*argv, "--out", str(tmp_path), "model=sd15", sd15]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["settings"]["model"] == f"sd15 ({tiny / 'sd15'})"
    # --only keeps the baseline and the yardstick runs.
    names = ["none", "single_colorfulness", "single_jpeg_compressibility", "weighted_sum", "srsoup_paper"]
    assert [r["name"] for r in res["runs"]] == names
    for r in res["runs"]:
        assert r["status"] == "complete" and r["counts_match_plan"] and r["plan_exact"], r
        assert r["overrides"][-2:] == ["model=sd15", sd15]
        summary = json.loads((tmp_path / res["settings"]["run_dirs"] / r["name"] / "summary.json").read_text())
        assert summary["model"] == "sd15" and summary["steps"] == 2
    assert res["overhead"]["run"] == "srsoup_paper"
    assert (tmp_path / "results.md").read_text().startswith(f"Setting `quick`: model `sd15 ({tiny / 'sd15'})`")
    assert (tmp_path / "queries_vs_hv.png").read_bytes()[:8] == PNG


# bench/realsize holds `python -m srsoup.bench.realsize`'s results (another format, no figure).
COMMITTED = sorted(
    p.parent for p in (ROOT / "bench").rglob("results.json") if not {"archive", "realsize"} & set(p.parts)
)


@pytest.mark.parametrize("folder", COMMITTED, ids=[str(p.relative_to(ROOT)) for p in COMMITTED])
def test_committed_results_re_render_byte_for_byte(folder, tmp_path):
    """results.md and the figure from each committed results.json (bench/archive: older formats, as written)."""
    assert bench.main(["--render-only", str(folder), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "results.md").read_bytes() == (folder / "results.md").read_bytes()
    assert (tmp_path / "queries_vs_hv.png").read_bytes()[:8] == PNG


def _has_groups(folder: Path) -> bool:
    runs = json.loads((folder / "results.json").read_text())["runs"]
    return all(r.get("group_points") for r in runs if r.get("status") == "complete")


REANALYSABLE = [p for p in COMMITTED if _has_groups(p)]


@pytest.mark.parametrize("folder", REANALYSABLE, ids=[str(p.relative_to(ROOT)) for p in REANALYSABLE])
def test_committed_results_reanalyse_to_the_figures_they_show(folder, tmp_path):
    """The analysis computed again from the stored groups by this version (yardstick, bootstrap, tables) gives
    the results.md committed: the committed figures are what this version's analysis says."""
    assert bench.main(["--render-only", str(folder), "--reanalyse", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "results.md").read_text() == (folder / "results.md").read_text()
    again, held = (json.loads((d / "results.json").read_text())["runs"] for d in (tmp_path, folder))
    assert [r.get("hypervolume") for r in again] == pytest.approx([r.get("hypervolume") for r in held], rel=1e-9)


def test_reanalyse_needs_every_runs_groups_and_writes_nothing_without_them(tmp_path, capsys):
    folder = next(p for p in COMMITTED if not _has_groups(p))
    assert len(REANALYSABLE) >= 5 and folder not in REANALYSABLE
    assert bench.main(["--render-only", str(folder), "--reanalyse", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no group_points for none" in err
    assert not (tmp_path / "out").exists()


def test_an_older_results_json_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "results.json").write_text(json.dumps({"runs": []}))
    assert bench.main(["--render-only", str(tmp_path)]) == 2
    assert "format 1" in capsys.readouterr().err


def test_realsize_keeps_earlier_cases_and_says_which_were_not_run(tmp_path, monkeypatch, capsys):
    """`python -m srsoup.bench.realsize --cases` adds to the folder's results; full-size runs are faked here."""
    from srsoup.bench import execute, realsize

    monkeypatch.setattr(
        execute, "machine", lambda: {"cpu": "CPU", "logical_cores": 2, "ram_gib": 20.0, "torch": "t"}
    )
    too_big = {"model=flux_dev", "model=flux_schnell"}

    def estimate(o):  # sd35m fits only with fp8 weights
        big = too_big & set(o) or {"model=sd35m", "storage_dtype=bf16"} <= set(o)
        return {"weights_gib": 1.0, "estimate_gib": 99.0 if big else 2.0}

    monkeypatch.setattr(realsize, "estimate_gib", estimate)
    ran = []

    def fake_case(name, overrides, runs, threads):
        ran.append(name)
        timings = dict(
            denoiser_eval_s=1.5, decode_s=2.5, encode_s=0.5, reward_query_s=None, load_s=3.0, overhead=1.01
        )
        record = {"case": name, "overrides": overrides, "threads": 1, **realsize.estimate_gib(overrides)}
        return {**record, **timings, "peak_rss_gib": 4.0}

    def results():
        return {r["case"]: r for r in json.loads((tmp_path / "results.json").read_text())["results"]}

    monkeypatch.setattr(realsize, "run_case", fake_case)
    assert realsize.main(["--out", str(tmp_path), "--cases", "sdxl"]) == 0
    assert realsize.main(["--out", str(tmp_path), "--cases", "sana"]) == 0
    assert ran == ["sdxl", "sana"]  # sdxl's figures were kept, not measured again
    assert results()["sdxl"]["denoiser_eval_s"] == 1.5 and results()["sana"]["decode_s"] == 2.5
    assert results()["sd15"]["not_run"] == "not run yet" and results()["flux_dev"]["not_run"].startswith(
        "does not"
    )
    assert "storage_dtype=fp8_e4m3" in results()["sd35m"]["overrides"]
    md = (tmp_path / "results.md").read_text()
    assert "| sdxl | 1 | 1.5 | 2.5 | 0.5 | – | 3.0 | 1.01 | 4.0 | 1.0 / 2.0 |" in md and "not run yet" in md
    assert "| sana (bf16 weights) | 1 | 1.5 | 2.5 | 0.5 |" in md
    assert (
        "| sd35m (fp8_e4m3 weights) |" + " – |" * 8 + " 1.0 / 2.0 (not run yet) |" in md
        and "| flux_dev (fp8_e4m3 weights) | – |" in md
    )
    # A case whose overrides changed since it was measured is not kept.
    monkeypatch.setitem(realsize.CASES, "sdxl", [*realsize.CASES["sdxl"], "chunk_size=1"])
    assert realsize.main(["--out", str(tmp_path), "--cases", "sana"]) == 0
    assert results()["sdxl"]["not_run"] == "not run yet" and results()["sana"]["decode_s"] == 2.5
    capsys.readouterr()
    assert realsize.main(["--out", str(tmp_path), "--cases", "sdxl,nope"]) == 2
    assert "--cases nope: valid cases are sd15," in capsys.readouterr().err and ran == ["sdxl", "sana", "sana"]
