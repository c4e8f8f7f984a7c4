"""Tests of `srsoup report` on synthetic run dirs with known per-weight points."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from srsoup.report import main
from srsoup.report.build import analyse, build_report
from srsoup.report.load import find_runs
from srsoup.report.pareto import default_ref, hypervolume, mean_ci, nondominated, t_critical

# Offsets over 2 prompts × 2 seeds that average to zero: each weight's mean is its point exactly.
OFFSETS = (-0.1, 0.1, -0.2, 0.2)


def make_run(
    path: Path,
    points,
    method="srsoup",
    rewards=("a", "b"),
    status="complete",
    reward_queries=1000,
    eval_rewards=(),
    weights=None,
    config=None,
    seeds=(0, 1),
    preset=None,
):
    """A run dir whose weight k has mean rewards points[k] over prompts × seeds."""
    (path / "images").mkdir(parents=True)
    weights = weights or [np.eye(len(rewards))[k % len(rewards)] for k in range(len(points))]
    rows, rng = [], np.random.default_rng(0)
    for k, point in enumerate(points):
        for j, (prompt_idx, seed) in enumerate((p, s) for p in (0, 1) for s in seeds):
            image = f"images/p{prompt_idx:03d}_s{seed}_w{k:02d}.png"
            pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path / image)
            row = {
                "prompt_idx": prompt_idx,
                "prompt": f"a red circle number {prompt_idx}",
                "seed": seed,
                "weight_idx": k,
            }
            row |= {f"w_{r}": float(weights[k][m]) for m, r in enumerate(rewards)}
            row |= {f"r_{r}": point[m] + OFFSETS[j % 4] for m, r in enumerate(rewards)}
            row |= {f"r_{r}": 5.0 for r in eval_rewards}
            rows.append(row | {"image": image, "reward_queries": 10, "denoiser_evals": 20})
    pd.DataFrame(rows).to_csv(path / "rewards.csv", index=False)
    summary = {
        "method": method,
        "num_candidates": 8,
        "steps": 20,
        "reward_queries": reward_queries,
        "reward_queries_by_reward": {},
        "denoiser_evals": 2 * reward_queries,
        "wall_seconds": 1.0,
        "status": status,
        "rewards": list(rewards),
    }
    if config is not None:
        summary["config"] = config
    if preset is not None:
        summary["guidance_preset"] = preset
    (path / "summary.json").write_text(json.dumps(summary))
    return path


FRONT_2D = [(1, 3), (2, 2), (3, 1), (1, 1), (2, 0.5)]  # the first three are non-dominated


def test_t_critical_and_ci_match_tables():
    assert t_critical(3) == pytest.approx(3.182)
    assert t_critical(60) == pytest.approx(2.0003, abs=2e-4)  # tables: 2.000
    mean, half = mean_ci(np.array(OFFSETS) + 2.0)
    assert mean == pytest.approx(2.0)
    assert half == pytest.approx(3.182 * np.std(OFFSETS, ddof=1) / 2)


def test_per_weight_means_ci_and_nondominated_set(tmp_path):
    make_run(tmp_path / "run", FRONT_2D, eval_rewards=("clip",))
    report = analyse(find_runs([tmp_path / "run"]))
    means = report.means.set_index("weight_idx")
    assert means[["mean_a", "mean_b"]].to_numpy() == pytest.approx(np.array(FRONT_2D, float))
    assert means["n"].tolist() == [4] * 5
    assert means["ci_a"].tolist() == pytest.approx([3.182 * np.std(OFFSETS, ddof=1) / 2] * 5)
    assert means["mean_clip"].tolist() == pytest.approx([5.0] * 5)  # eval-only reward reported
    assert report.objectives == ["a", "b"]  # ...but it does not define the objective space
    assert means["nondominated"].tolist() == [True, True, True, False, False]


def test_hypervolume_by_hand():
    assert hypervolume(np.array([(1, 3), (2, 2), (3, 1)]), np.zeros(2)) == pytest.approx(6.0)
    # Three boxes of volume 2 meeting pairwise and all together in the unit cube:
    # 3·2 − 3·1 + 1 = 4 (inclusion–exclusion); the dominated (1,1,1) adds nothing.
    cube = np.array([(2, 1, 1), (1, 2, 1), (1, 1, 2), (1, 1, 1)])
    assert hypervolume(cube, np.zeros(3)) == pytest.approx(4.0)
    assert nondominated(cube).tolist() == [True, True, True, False]


def test_default_ref_is_min_minus_margin_of_range():
    points = np.array([(1, 3), (2, 2), (3, 1)], float)
    assert default_ref(points) == pytest.approx([0.9, 0.9])
    assert default_ref(points, margin=0.5) == pytest.approx([0.0, 0.0])
    assert default_ref(np.array([(2.0, -4.0)])) == pytest.approx([1.9, -4.2])  # zero range


def test_report_2d_default_and_given_ref(tmp_path, capsys):
    run = make_run(tmp_path / "run", FRONT_2D[:3])
    assert main([str(run)]) == 0
    table = pd.read_csv(run / "report" / "hypervolume.csv")
    # ref (0.9, 0.9): staircase 0.1·2.1 + 1.0·1.1 + 1.0·0.1
    assert table.loc[0, "hypervolume"] == pytest.approx(1.41)
    assert table.loc[0, "ref_point"] == "0.9;0.9"
    assert list(table.columns[:7]) == [
        "run",
        "method",
        "reward_queries",
        "denoiser_evals",
        "hypervolume",
        "ref_point",
        "status",
    ]
    assert main([str(run), "--ref", "0,0", "--out", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "hypervolume.csv")
    assert table.loc[0, "hypervolume"] == pytest.approx(6.0)
    assert "0;0 (given by --ref)" in (tmp_path / "out" / "summary.md").read_text()
    assert "HV=6" in capsys.readouterr().out


def test_report_3d_with_margin_option(tmp_path):
    run = make_run(tmp_path / "run", [(2, 1, 1), (1, 2, 1), (1, 1, 2)], rewards=("a", "b", "c"))
    report = build_report([run], out=tmp_path / "out", margin=0.1)
    assert report.ref == pytest.approx([0.9, 0.9, 0.9])
    # Shifted by the reference: boxes (1.1,.1,.1), (.1,1.1,.1), (.1,.1,1.1), inclusion–exclusion.
    expected = 3 * 1.1 * 0.01 - 3 * 0.001 + 0.001
    assert report.series[0].hypervolume == pytest.approx(expected)
    with Image.open(tmp_path / "out" / "pareto.png") as im:
        assert im.width > 2 * im.height  # three pairwise projections side by side


def test_partial_run_is_flagged(tmp_path):
    make_run(tmp_path / "full", FRONT_2D[:3])
    make_run(tmp_path / "cut", [(1.5, 1.5)], method="weighted_sum", status="partial")
    report = build_report([tmp_path / "full", tmp_path / "cut"], out=tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "hypervolume.csv").set_index("run")
    assert table.loc["cut", "status"] == "partial"
    assert table.loc["full", "status"] == "complete"
    assert [s.label for s in report.series] == ["srsoup", "weighted_sum (partial)"]
    assert "PARTIAL runs (not all prompts×seeds finished): cut" in (tmp_path / "out" / "summary.md").read_text()


def make_sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "multirun"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    make_run(sweep / "0", FRONT_2D[:3], reward_queries=1000)
    make_run(sweep / "1", [(0.8, 2.5), (2.5, 0.8)], method="weighted_sum", reward_queries=3000)
    make_run(sweep / "2", [(0.5, 0.5)], method="none", reward_queries=0)
    (sweep / "3" / ".hydra").mkdir(parents=True)  # crashed before writing anything
    (sweep / "4").mkdir()
    (sweep / "4" / "FAILED").write_text("CUDA out of memory\ntraceback...\n")
    return sweep


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])


def test_sweep_lists_failed_jobs_and_writes_everything(tmp_path):
    sweep = make_sweep(tmp_path)
    assert main([str(sweep)]) == 0
    out = sweep / "report"
    table = pd.read_csv(out / "hypervolume.csv", dtype={"run": str}).set_index("run")
    assert table.loc[["3", "4"], "status"].tolist() == ["failed", "failed"]
    assert table.loc["3", "note"] == "no rewards.csv"
    assert table.loc["4", "note"] == "CUDA out of memory"
    assert table.loc[["0", "1", "2"], "method"].tolist() == ["srsoup", "weighted_sum", "none"]
    for text in ((out / "summary.md").read_text(), (out / "report.html").read_text()):
        assert "Failed jobs" in text and "CUDA out of memory" in text
    expected = {"pareto.png", "queries_vs_hv.png", "grid.png", "grid_1.png", "grid_2.png"}
    assert expected <= {p.name for p in out.iterdir()}

    parser = _Collector()
    parser.feed((out / "report.html").read_text())
    assert parser.tags.count("table") == 2
    assert len(parser.images) == len(expected)
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            assert im.width >= 190 + 96 and im.height >= 96

    with Image.open(out / "grid.png") as grid:
        # 4 prompt×seed rows by 3 weights of 32 px images, enlarged to at least 96 px cells.
        assert grid.width >= 3 * 96 and grid.height >= 4 * 96
    with Image.open(out / "pareto.png") as im:
        assert 500 <= im.width <= 3000 and 400 <= im.height <= 3000


def test_grid_enlarges_with_nearest_neighbour(tmp_path):
    from srsoup.report.plots import image_grid

    run_dir = make_run(tmp_path / "run", [(1, 1)])
    image_grid(find_runs([run_dir])[0], tmp_path / "g.png", max_rows=1)
    with Image.open(run_dir / "images" / "p000_s0_w00.png") as small:
        source = np.asarray(small.convert("RGB"))
    grid = np.asarray(Image.open(tmp_path / "g.png").convert("RGB"))
    # The single cell is the only 96×96 block equal to the 3× nearest-neighbour enlargement.
    big = source.repeat(3, axis=0).repeat(3, axis=1)
    ys, xs = np.nonzero((grid[:-95, :-95] == big[0, 0]).all(axis=2))
    assert any((grid[y : y + 96, x : x + 96] == big).all() for y, x in zip(ys, xs))


def test_runs_of_one_config_are_pooled(tmp_path):
    config = {"guidance": {"name": "srsoup"}, "budget": {"k": 8}}
    make_run(tmp_path / "s0", [(1, 2)], config=config | {"seeds": [0]}, seeds=(0,))
    make_run(tmp_path / "s1", [(1, 2)], config=config | {"seeds": [1]}, seeds=(1,))
    make_run(tmp_path / "k16", [(2, 3)], config={**config, "budget": {"k": 16}})
    report = analyse(find_runs([tmp_path / "s0", tmp_path / "s1", tmp_path / "k16"]))
    assert [s.name for s in report.series] == ["s0+s1", "k16"]
    assert [s.label for s in report.series] == ["srsoup [k=8]", "srsoup [k=16]"]
    assert report.series[0].stats["n"].tolist() == [4]
    assert report.hv_table["reward_queries"].tolist() == [2000, 1000]


def test_series_are_labelled_by_their_guidance_preset(tmp_path):
    """A preset of a method (guidance=srsoup_pool) is labelled as chosen; runs of one preset that differ still
    say how; runs from before summary.json named the preset are labelled by their method."""
    config = {"guidance": {"name": "srsoup"}, "budget": {"k": 8}}
    make_run(tmp_path / "paper", [(1, 2)], config=config, preset="srsoup")
    make_run(tmp_path / "pool", [(2, 1)], config={**config, "share": 1.0}, preset="srsoup_pool")
    pool16 = {**config, "share": 1.0, "budget": {"k": 16}}
    make_run(tmp_path / "pool16", [(2, 2)], config=pool16, preset="srsoup_pool")
    make_run(tmp_path / "old", [(1, 1)], config={**config, "budget": {"k": 4}})
    report = analyse(find_runs([tmp_path / n for n in ("paper", "pool", "pool16", "old")]))
    labels = [s.label for s in report.series]
    assert labels == ["srsoup [k=8]", "srsoup_pool [k=8]", "srsoup_pool [k=16]", "srsoup [k=4]"]
    assert report.hv_table["method"].tolist() == ["srsoup"] * 4


def test_shards_of_one_config_merge_and_list_what_is_missing_or_failed(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    config = {"guidance": {"name": "srsoup"}, "prompts": {"texts": ["a", "b"], "num_shards": 4}}
    for shard in (0, 2, 3):
        make_run(sweep / str(shard), [(1, 2)], config={**config, "prompts": {**config["prompts"], "shard": shard}})
    failed = json.loads((sweep / "3" / "summary.json").read_text()) | {"status": "failed", "error": "CUDA OOM"}
    (sweep / "3" / "summary.json").write_text(json.dumps(failed))
    make_run(tmp_path / "other", [(2, 1)], config={**config, "prompts": {"texts": ["c"], "shard": 0}})
    assert main([str(sweep), str(tmp_path / "other"), "--out", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "hypervolume.csv", dtype={"run": str}).set_index("run")
    assert table.loc["0+2", "status"] == "partial"
    assert table.loc["0+2", "note"] == "2 of 4 shards merged; missing shards 1; failed shards 3"
    assert table.loc["other", "status"] == "complete"  # another prompt set: its own series, not a shard
    assert "missing shards 1; failed shards 3" in capsys.readouterr().out


def test_report_draws_no_image_from_outside_the_run_dir(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path / "run", [(1, 2), (2, 1)])
    outside = tmp_path / "secret.png"
    Image.new("RGB", (32, 32), "red").save(outside)
    rows = pd.read_csv(run_dir / "rewards.csv")
    rows.loc[0, "image"] = str(outside)  # absolute
    rows.loc[1, "image"] = "../secret.png"  # relative, climbing out
    rows.loc[2, "image"] = "images/../../secret.png"
    rows.to_csv(run_dir / "rewards.csv", index=False)
    (run_dir / "images" / "link.png").symlink_to(outside)
    rows.loc[3, "image"] = "images/link.png"  # a link out of the run dir
    rows.to_csv(run_dir / "rewards.csv", index=False)
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: opened.append(Path(fp)) or real_open(fp, *a, **k))
    (run,) = find_runs([run_dir])
    assert run.image_path(str(outside)) is None and run.image_path("../secret.png") is None
    assert run.image_path("images/p000_s0_w00.png") == (run_dir / "images" / "p000_s0_w00.png").resolve()
    build_report([run_dir], out=tmp_path / "out")
    drawn = [p for p in opened if p.suffix == ".png" and "out" not in p.parts]
    assert drawn and all(p.resolve().is_relative_to(run_dir.resolve()) for p in drawn)
    assert outside.resolve() not in {p.resolve() for p in drawn}


def test_single_and_none_are_compared_in_the_guided_space(tmp_path):
    make_run(tmp_path / "soup", FRONT_2D[:3])
    single = make_run(tmp_path / "single", [(3.5, 0.2)], method="single", rewards=("a",))
    df = pd.read_csv(single / "rewards.csv").assign(r_b=0.2)  # scored under every reward
    df.to_csv(single / "rewards.csv", index=False)
    report = analyse(find_runs([tmp_path / "soup", single]), ref=[0, 0])
    assert report.objectives == ["a", "b"]
    assert report.hv_table["hypervolume"].tolist() == pytest.approx([6.0, 3.5 * 0.2])


def _one_error_line(capsys, *needles):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("srsoup report: error: ")
    for needle in needles:
        assert needle in err
    assert "Traceback" not in err


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    _one_error_line(capsys, "empty", "neither a run dir")
    assert main([str(tmp_path / "nope")]) == 2
    _one_error_line(capsys, "nope")

    run = make_run(tmp_path / "run", FRONT_2D[:3])
    assert main([str(run), "--ref", "0,0,0"]) == 2
    _one_error_line(capsys, "--ref) 0,0,0 has 3 values", "expected 2", "'a', 'b'")
    assert main([str(run), "--ref", "0,x"]) == 2
    _one_error_line(capsys, "'0,x'")
    assert not (run / "report").exists()  # nothing half-written

    make_run(tmp_path / "other", FRONT_2D[:3], method="weighted_sum", rewards=("a", "c"))
    assert main([str(run), str(tmp_path / "other")]) == 2
    _one_error_line(capsys, "different guided reward sets", "'c'")


def test_importing_report_does_not_load_heavy_libraries():
    code = (
        "import sys, srsoup.report; print(sorted({'pandas', 'matplotlib', 'moocore', 'PIL'} & set(sys.modules)))"
    )
    cwd = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd)
    assert out.stdout.strip() == "[]", out.stderr


def _single(path: Path, point, reward: str) -> Path:
    """A single-reward run guided by ``reward`` and scored under both rewards."""
    mine, other = (0, 1) if reward == "a" else (1, 0)
    run = make_run(path, [(point[mine],)], method="single", rewards=(reward,))
    rows = pd.read_csv(run / "rewards.csv").assign(**{f"r_{'ab'[other]}": point[other]})
    rows.to_csv(run / "rewards.csv", index=False)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "reward": reward}))
    return run


def test_yardstick_from_unguided_and_single_runs_fixes_the_scale(tmp_path):
    """With `none` and a `single` run per reward, hypervolume is of rewards normalised by their range: adding
    another run changes no other run's score (the reference point no longer moves with the runs compared)."""
    none = make_run(tmp_path / "none", [(1.0, 1.0)], method="none")
    single_a = _single(tmp_path / "single_a", (3.0, 0.5), "a")
    single_b = _single(tmp_path / "single_b", (0.5, 3.0), "b")
    soup = make_run(tmp_path / "soup", [(2.0, 2.0), (3.0, 1.0)])
    base = [none, single_a, single_b, soup]
    report = analyse(find_runs(base))
    assert report.ref_source.startswith("yardstick") and list(report.ref) == [0.5, 0.5]
    hv = dict(zip(report.hv_table["run"], report.hv_table["hypervolume"]))
    # Normalised by the range 0.5..3.0 in both rewards: (2,2) → (0.6,0.6), (3,1) → (1,0.2).
    assert hv["soup"] == pytest.approx(0.6 * 0.6 + (1 - 0.6) * 0.2)
    worse = make_run(tmp_path / "worse", [(-5.0, -5.0), (0.0, 0.6)])
    again = dict(zip(*analyse(find_runs([*base, worse])).hv_table[["run", "hypervolume"]].T.to_numpy()))
    assert again["soup"] == pytest.approx(hv["soup"]) and again["worse"] == pytest.approx(0.0)
    # Without the single runs the old default (min − 5% of the range over all points) applies.
    assert analyse(find_runs([none, soup])).ref_source.startswith("default")
