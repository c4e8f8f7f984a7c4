"""scripts/bench.py at toy sizes: the results it writes, and that every run's counts equal the plan."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from srsoup.guidance import METHODS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_results(bench, toy_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert bench.main(["--quick", "--in-process", "--model-path", str(toy_model_dir), "--out", str(out)]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_quick_bench_writes_the_three_outputs_with_the_expected_keys(quick_results):
    out, res = quick_results
    assert (out / "results.md").read_text().startswith("Embedded model")
    assert (out / "queries_vs_hv.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"date", "machine", "settings", "analysis", "runs", "overhead", "memory", "targets"} <= set(res)
    assert {"cpu", "logical_cores", "ram_gib", "torch", "torch_threads"} <= set(res["machine"])
    assert set(res["analysis"]["reference_point"]) == {"colorfulness", "jpeg_compressibility"}
    names = {r["name"] for r in res["runs"]}
    # T=5: soup ends 1/5, 2/5, 1/2, 3/5, 4/5, 1 of T → steps 1, 2, 3, 4, 5 (3 twice, deduplicated by name).
    assert {
        "none",
        "single_colorfulness",
        "single_jpeg_compressibility",
        "weighted_sum",
        "srsoup_end1",
        "srsoup_end2",
        "srsoup_end3",
        "srsoup_end4",
        "srsoup_end5",
        "srsoup_end2_exact",
        "srsoup_end2_off",
        "srsoup_adaptive0.9",
    } <= names
    budgets = res["settings"]["budgets"]
    assert len(budgets) == 2
    assert {f"weighted_sum_B{b}" for b in budgets} | {f"srsoup_end2_B{b}" for b in budgets} <= names
    # The whole-chain soup window has its own budget curve, also at budgets run for it alone (0.6 x B(K=4)).
    assert res["settings"]["full_soup_budgets"] == [120]
    assert {f"srsoup_end5_B{b}" for b in [*budgets, 120]} <= names
    assert not {"weighted_sum_B120", "srsoup_end2_B120"} & names
    qe = res["analysis"]["query_efficiency"]
    assert qe["meets"] == (qe["cheapest_run"] is not None and qe["cheapest_run"]["query_ratio"] <= 0.5)
    if "best_of_n" in METHODS:  # compared at equal budgets when the method exists
        assert {f"best_of_n_B{b}" for b in budgets} <= names


def test_every_run_makes_exactly_the_planned_queries_and_evals(quick_results):
    _, res = quick_results
    for r in res["runs"]:
        assert r["status"] == "complete", r
        assert r["counts_match_plan"], r["name"]
        if r["plan_exact"]:
            assert (
                r["reward_queries"] == r["plan_reward_queries"] and r["denoiser_evals"] == r["plan_denoiser_evals"]
            )
        assert r["hypervolume"] >= 0
        if r["budget"]:
            assert r["reward_queries_per_group"] <= r["budget"]
    ws = next(r for r in res["runs"] if r["name"] == "weighted_sum")
    assert ws["hv_ratio_ws"] == 1 and ws["query_ratio_ws"] == 1
    # weighted_sum at the budget of its own K is the same run, not run twice.
    same = [r for r in res["runs"] if r.get("same_as") == "weighted_sum"]
    assert same and all(r["reward_queries"] == ws["reward_queries"] for r in same)


def test_overhead_replays_exactly_the_calls_the_run_made(quick_results):
    _, res = quick_results
    ov = res["overhead"]
    assert ov["run"] == "srsoup_end2"
    assert ov["recorded_match_summary"] == {"denoiser_evals": True, "reward_queries": True}
    run = next(r for r in res["runs"] if r["name"] == "srsoup_end2")
    assert ov["calls"]["denoiser_items"] == run["denoiser_evals"]
    assert ov["calls"]["guidance_reward_queries"] == run["reward_queries"]
    assert ov["bare_model_seconds"] > 0 and ov["ratio_wall"] > 0


def test_child_process_reports_its_own_peak_rss(bench, toy_model_dir, tmp_path):
    """One configuration through the child-process path (as the full benchmark runs every one)."""
    args = bench.parse_args(["--quick", "--model-path", str(toy_model_dir)])
    overrides = [
        *bench.base_overrides(args, ["a red circle on a blue background"], [0]),
        "guidance=srsoup",
        "guidance.num_candidates=4",
        "guidance.soup_end_step=2",
    ]
    side = bench.launch(bench.RunDef("srsoup", "srsoup", overrides), tmp_path, in_process=False)
    assert "error" not in side, (tmp_path / "srsoup.log").read_text()
    assert 0 < side["rss_after_imports_mb"] <= side["peak_rss_mb"]
    assert json.loads((tmp_path / "srsoup" / "summary.json").read_text())["status"] == "complete"
    again = bench.launch(bench.RunDef("srsoup", "srsoup", overrides), tmp_path, in_process=False)
    assert again["cached"] and again["peak_rss_mb"] == side["peak_rss_mb"]


def test_analysis_without_weighted_sum_or_best_of_n_says_so(bench):
    """A subset (--only, or a failed baseline) yields "no runs" / "not measured", not a crash or a verdict."""
    groups = {"p0_s0": [[130.0, -1.2], [150.0, -1.3]], "p1_s0": [[132.0, -1.1], [148.0, -1.25]]}
    rec = {
        "name": "srsoup_end2",
        "family": "srsoup",
        "status": "complete",
        "budget": None,
        "points": [[131.0, -1.15], [149.0, -1.275]],
        "_groups": groups,
        "reward_queries": 10,
        "denoiser_evals": 10,
        "wall_seconds": 1.0,
        "reward_queries_per_group": 5,
    }
    meta = {"main_soup_end": 2, "budgets": [], "full_soup_budgets": [], "srsoup_curves": ["srsoup_end2"], "K": 4}
    a = bench.analyse([rec], meta, n_boot=10)
    assert all(hit is None for hit in a["reach_target"].values())
    assert a["query_efficiency"]["meets"] is False and a["query_efficiency"]["srsoup_runs"] == 0
