"""`run(cfg)` end to end on the toy model: output contract, determinism, resume after a crash."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from srsoup import runner


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def snapshot(run_dir: Path) -> dict:
    """Everything a rerun must reproduce: CSV rows (without timing) and the PNG bytes."""
    return {
        "rewards": (run_dir / "rewards.csv").read_text(),
        "trace": (run_dir / "trace.csv").read_text(),
        "images": {p.name: p.read_bytes() for p in sorted((run_dir / "images").glob("*.png"))},
    }


def test_output_contract(toy_cfg, tmp_path):
    cfg = toy_cfg(
        "seeds=[0,1]", "prompts.texts=[a red circle on a blue background,a big white square on a black background]"
    )
    run_dir = runner.run(cfg, tmp_path / "run")
    rows = read_csv(run_dir / "rewards.csv")
    assert list(rows[0]) == [
        "prompt_idx",
        "prompt",
        "seed",
        "weight_idx",
        "w_colorfulness",
        "w_jpeg_compressibility",
        "r_colorfulness",
        "r_jpeg_compressibility",
        "r_prompt_adherence",
        "image",
        "reward_queries",
        "denoiser_evals",
    ]
    assert len(rows) == 2 * 2 * 6
    for r in rows:
        p, s, w = int(r["prompt_idx"]), int(r["seed"]), int(r["weight_idx"])
        assert r["image"] == f"images/p{p:03d}_s{s}_w{w:02d}.png"
        with Image.open(run_dir / r["image"]) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
        assert abs(float(r["w_colorfulness"]) + float(r["w_jpeg_compressibility"]) - 1) < 1e-9
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["method"] == "srsoup"
    assert summary["num_candidates"] == 3 and summary["steps"] == 4
    # T=4, K=3, S=min(20, T)=4 soup steps → all steps are soup steps; M=2, L=6.
    per_group_q, per_group_e = 4 * 2 * 3, 4 * 6 + 3 * 2 * 3
    assert summary["reward_queries"] == 4 * per_group_q == sum(summary["reward_queries_by_reward"].values())
    assert summary["denoiser_evals"] == 4 * per_group_e
    assert summary["plan"]["per_group"]["reward_queries"] == per_group_q
    assert sum(int(r["reward_queries"]) for r in rows) == summary["reward_queries"]
    assert {"torch", "diffusers", "transformers"} <= set(summary["versions"])
    trace = read_csv(run_dir / "trace.csv")
    assert len(trace) == 4 * 4 * 6 and {t["phase"] for t in trace} == {"soup", "soup_anchor"}


@pytest.mark.parametrize("method", ["weighted_sum", "single", "none"])
def test_other_methods_run(toy_cfg, tmp_path, method):
    run_dir = runner.run(toy_cfg(f"guidance={method}", "guidance.num_candidates=2"), tmp_path / method)
    rows = read_csv(run_dir / "rewards.csv")
    summary = json.loads((run_dir / "summary.json").read_text())
    T, K = 4, 2
    expected = {"weighted_sum": (T * K * 10, 6), "single": (T * K, 1), "none": (0, 1)}[method]
    assert summary["reward_queries"] == expected[0] and len(rows) == expected[1]


def test_same_config_twice_is_byte_identical(toy_cfg, tmp_path):
    a = runner.run(toy_cfg("guidance=weighted_sum"), tmp_path / "a")
    b = runner.run(toy_cfg("guidance=weighted_sum"), tmp_path / "b")
    assert snapshot(a) == snapshot(b)


def test_rerun_skips_complete_groups_and_repairs_torn_writes(toy_cfg, tmp_path):
    cfg = toy_cfg("seeds=[0,1,2]")
    ref = snapshot(runner.run(cfg, tmp_path / "ref"))
    run_dir = tmp_path / "crashed"
    runner.run(toy_cfg("seeds=[0,1]"), run_dir)  # two groups done ...
    # ... then a crash in the middle of the third group's commit: a stray temp PNG, a torn trace line.
    (run_dir / "images" / "p000_s2_w00.png.tmp").write_bytes(b"partial")
    with open(run_dir / "trace.csv", "a") as f:
        f.write("0,2,0,0,1.0,soup_anc")
    with open(run_dir / "rewards.csv", "a") as f:
        f.write("0,a red circle on a blue background,2,0,0.0,1.0,12.")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["fingerprint"] = runner.build_spec(cfg).fingerprint()
    (run_dir / "summary.json").write_text(json.dumps(summary))
    runner.run(cfg, run_dir)
    assert snapshot(run_dir) == ref
    assert not list((run_dir / "images").glob("*.tmp"))
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "complete"


def test_resume_refuses_other_settings(toy_cfg, tmp_path):
    from srsoup.errors import SrsoupError

    runner.run(toy_cfg(), tmp_path / "r")
    with pytest.raises(SrsoupError, match="other settings"):
        runner.run(toy_cfg("guidance.num_candidates=4"), tmp_path / "r")


def test_resume_with_another_thread_count_warns(toy_cfg, tmp_path, caplog):
    """Each CPU group records its torch thread count; resuming with another one warns (the bytes may differ)."""
    import torch

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        runner.run(toy_cfg("seeds=[0]"), tmp_path / "r")
        groups = json.loads((tmp_path / "r" / "summary.json").read_text())["groups"]
        assert [g["torch_threads"] for g in groups.values()] == [1]
        with caplog.at_level("INFO", logger="srsoup"):
            runner.run(toy_cfg("seeds=[0,1]"), tmp_path / "r")  # same thread count: no warning
        assert "torch threads" not in caplog.text
        # Without a progress bar, a line per group committed here (the resumed one is counted, not run).
        assert "group 2 of 2 (prompt 0, seed 1) committed in" in caplog.text
        assert "group 1 of 2" not in caplog.text
        torch.set_num_threads(2)
        with caplog.at_level("WARNING", logger="srsoup"):
            runner.run(toy_cfg("seeds=[0,1,2]"), tmp_path / "r")
        assert "resuming with 2 torch threads; the committed groups were made with 1" in caplog.text
        groups = json.loads((tmp_path / "r" / "summary.json").read_text())["groups"]
        assert sorted(g["torch_threads"] for g in groups.values()) == [1, 1, 2]
    finally:
        torch.set_num_threads(threads)


KILL_SCRIPT = """
import sys
from srsoup import runner
from tests.conftest import compose
cfg = compose(*sys.argv[2:])
runner.run(cfg, sys.argv[1])
"""


def test_kill_9_then_rerun_equals_uninterrupted_run(toy_model_dir, tmp_path):
    overrides = [
        f"model.pretrained={toy_model_dir}",
        "sampler.steps=3",
        "guidance.num_candidates=2",
        "seeds=[0,1,2,3,4,5]",
        "prompts.texts=[a red circle on a blue background]",
        "progress=false",
        "device=cpu",
    ]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(ref_dir), *overrides], env=env, check=True, capture_output=True
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(run_dir), *overrides],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once at least one group is committed, mid-run
        rewards = run_dir / "rewards.csv"
        if rewards.exists() and len(rewards.read_text().splitlines()) > 6:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # What a full disk or a crash between create and write can leave besides: a 0-byte summary.json, and a
    # 0-byte PNG of the last complete group (that group is computed again, in its place).
    (run_dir / "summary.json").write_bytes(b"")
    text = (run_dir / "rewards.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(text[: text.rfind("\n") + 1])))
    groups = [(r["prompt_idx"], r["seed"]) for r in rows]
    last = [g for g in dict.fromkeys(groups) if groups.count(g) == 6][-1]
    (run_dir / "images" / f"p{int(last[0]):03d}_s{last[1]}_w05.png").write_bytes(b"")
    subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(run_dir), *overrides], env=env, check=True, capture_output=True
    )
    assert snapshot(run_dir) == snapshot(ref_dir)
    rows = read_csv(run_dir / "rewards.csv")
    assert len(rows) == len({(r["prompt_idx"], r["seed"], r["weight_idx"]) for r in rows}) == 36


def test_a_full_disk_mid_run_is_one_line_and_the_rerun_completes(toy_cfg, tmp_path, monkeypatch):
    from srsoup import outputs
    from srsoup.errors import SrsoupError

    cfg = toy_cfg("guidance=none", "seeds=[0,1,2]")
    real, ends = outputs._write_all, [0]

    def counting(fd, data):
        ends.append(ends[-1] + len(data))
        real(fd, data)

    monkeypatch.setattr(outputs, "_write_all", counting)
    ref = snapshot(runner.run(cfg, tmp_path / "ref"))
    for cut in (ends[-1] * 2 // 5, ends[-1] * 3 // 4):

        def full_disk(fd, data, left=[cut]):  # noqa: B006 - the bytes left on this simulated disk
            n = min(len(data), left[0])
            real(fd, data[:n])
            left[0] -= n
            if n < len(data):
                raise OSError(28, "No space left on device", str(tmp_path / "disk"))

        monkeypatch.setattr(outputs, "_write_all", full_disk)
        with pytest.raises(SrsoupError) as e:
            runner.run(cfg, tmp_path / f"cut{cut}")
        assert "No space left on device" in str(e.value) and "rerun the same command to resume" in str(e.value)
        assert "\n" not in str(e.value)
        monkeypatch.setattr(outputs, "_write_all", real)
        assert snapshot(runner.run(cfg, tmp_path / f"cut{cut}")) == ref
