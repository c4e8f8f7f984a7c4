"""`srsoup bench` at toy sizes: its outputs, counts equal to the plan, overhead from timers, child processes,
the analysis of a subset, another backbone by overrides, and the committed results re-rendered byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from srsoup import bench
from srsoup.bench import analyse, execute, plan
from srsoup.guidance import METHODS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads; on a busy 2-core machine they spin-wait (10-100x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def quick_results(toy_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    argv = ["--quick", "--in-process", "--out", str(out), f"model.pretrained={toy_model_dir}"]
    assert bench.main(argv) == 0
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
    assert "best_of_n" in METHODS and {f"best_of_n_B{b}" for b in budgets} <= names


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


def test_overhead_comes_from_the_runs_own_timers(quick_results):
    out, res = quick_results
    ov = res["overhead"]
    assert ov["run"] == "srsoup_end2" and ov["run_dir"] == "overhead_srsoup_end2"
    run = next(r for r in res["runs"] if r["name"] == "srsoup_end2")
    # The overhead run is the same configuration as srsoup_end2, counted alike and as planned.
    assert ov["counts"]["denoiser_evals"] == ov["plan_denoiser_evals"] == run["denoiser_evals"]
    assert ov["counts"]["reward_queries"] == run["reward_queries"]
    summary = json.loads((out / res["settings"]["run_dirs"] / ov["run_dir"] / "summary.json").read_text())
    assert ov["model_seconds"] == summary["timing"]["model_seconds"]
    assert ov["in_run_seconds"]["denoiser"] > 0 and ov["load_seconds"] > 0
    assert 0 < ov["model_seconds"] <= ov["wall_seconds"] and ov["ratio_wall"] >= 1
    assert 0 < ov["group_model_seconds"] <= ov["group_loop_seconds"] <= ov["wall_seconds"]
    assert ov["ratio_group_loop"] == pytest.approx(ov["group_loop_seconds"] / ov["group_model_seconds"], abs=2e-3)
    assert "from the timers beside its counters" in (out / "results.md").read_text()


def test_child_process_reports_its_own_peak_rss(toy_model_dir, tmp_path):
    """One configuration through the child-process path (as the full benchmark runs every one)."""
    settings = plan.Settings.of(quick=True)
    overrides = [
        *plan.base_overrides(settings, ["a red circle on a blue background"], [0]),
        *plan.srsoup(4, 2),
        f"model.pretrained={toy_model_dir}",
    ]
    side = execute.launch(plan.RunDef("srsoup", "srsoup", overrides), tmp_path, in_process=False)
    assert "error" not in side, (tmp_path / "srsoup.log").read_text()
    assert 0 < side["rss_after_imports_mb"] <= side["peak_rss_mb"]
    assert json.loads((tmp_path / "srsoup" / "summary.json").read_text())["status"] == "complete"
    again = execute.launch(plan.RunDef("srsoup", "srsoup", overrides), tmp_path, in_process=False)
    assert again["cached"] and again["peak_rss_mb"] == side["peak_rss_mb"]


def test_analysis_without_weighted_sum_or_best_of_n_says_so():
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
    a = analyse.analyse([rec], meta, n_boot=10)
    assert all(hit is None for hit in a["reach_target"].values())
    assert a["query_efficiency"]["meets"] is False and a["query_efficiency"]["srsoup_runs"] == 0


def test_overrides_run_the_bench_on_another_backbone(tiny, tmp_path):
    """`srsoup bench ... model=sd15 model.pretrained=DIR` plans and runs on the tiny SD1.5 copy as planned."""
    sd15 = f"model.pretrained={tiny / 'sd15'}"
    argv = ["--quick", "--steps", "2", "--candidates", "2", "--only", "none,srsoup_end1", "--in-process"]
    assert bench.main([*argv, "--out", str(tmp_path), "model=sd15", sd15]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["settings"]["model"] == f"sd15 ({tiny / 'sd15'})"
    assert [r["name"] for r in res["runs"]] == ["none", "weighted_sum", "srsoup_end1"]  # --only keeps the baseline
    for r in res["runs"]:
        assert r["status"] == "complete" and r["counts_match_plan"] and r["plan_exact"], r
        assert r["overrides"][-2:] == ["model=sd15", sd15]
        summary = json.loads((tmp_path / res["settings"]["run_dirs"] / r["name"] / "summary.json").read_text())
        assert summary["model"] == "sd15" and summary["steps"] == 2 and summary["images"] == 6 ** (r["K"] > 0)
    assert res["overhead"]["run"] == "srsoup_end1"
    assert res["overhead"]["counts"]["denoiser_evals"] == res["overhead"]["plan_denoiser_evals"] > 0
    assert (tmp_path / "results.md").read_text().startswith(f"Model `sd15 ({tiny / 'sd15'})` with overrides")
    assert (tmp_path / "queries_vs_hv.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("folder", ["bench", "bench/t20"])
def test_committed_results_re_render_byte_for_byte(folder, tmp_path):
    """results.md and the figure from the committed results.json (written before the overhead came from timers)."""
    assert bench.main(["--render-only", str(ROOT / folder), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "results.md").read_bytes() == (ROOT / folder / "results.md").read_bytes()
    assert (tmp_path / "queries_vs_hv.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
