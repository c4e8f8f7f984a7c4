"""The `srsoup` command in subprocesses, from a temporary directory, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def srsoup(*args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "srsoup", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        timeout=300,
    )


def test_help_and_unknown_command(tmp_path):
    out = srsoup("--help", cwd=tmp_path)
    assert out.returncode == 0 and "run" in out.stdout and "report" in out.stdout
    out = srsoup("frobnicate", cwd=tmp_path)
    assert (
        out.returncode == 2
        and "unknown command 'frobnicate'" in out.stderr
        and "run, plan, report, bench" in out.stderr
    )
    out = srsoup("run", "--help", cwd=tmp_path)
    models = "model: flux_dev, flux_schnell, sana, sd15, sd35l, sd35m, sdxl, tiny"
    assert out.returncode == 0 and models in out.stdout
    out = srsoup("run", "--cfg", "job", cwd=tmp_path)
    assert out.returncode == 0 and "num_candidates: 8" in out.stdout


def test_run_from_any_directory(toy_model_dir, tmp_path):
    out = srsoup(
        "run",
        f"model.pretrained={toy_model_dir}",
        "sampler.steps=2",
        "guidance.num_candidates=2",
        "progress=false",
        "prompts.texts=[a red circle on a blue background]",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    (run_dir,) = [p.parent for p in tmp_path.glob("outputs/*/*/rewards.csv")]
    assert len((run_dir / "rewards.csv").read_text().splitlines()) == 7
    assert (run_dir / "srsoup.log").read_text().count("srsoup: 6 images") == 1
    assert f"in {run_dir.relative_to(tmp_path)}/images" in out.stdout


@pytest.mark.parametrize(
    "override,message",
    [
        ("model=sd14", "Could not find 'model/sd14'"),
        ("guidance.num_candidates=0", "guidance.num_candidates=0 must be >= 1"),
        ("weights.grid=[[0.3,0.3]]", "off the simplex"),
        ("device=cuda", "CUDA is not available"),
        ("prompts.texts=[]", "prompts.texts=[]"),
        ("budget.max_reward_queries=10", "too small"),
        ("model.pretrained=./missing_model", "does not exist"),
    ],
)
def test_bad_input_exit_2_without_traceback_or_outputs(tmp_path, override, message):
    out = srsoup("run", override, "hydra.run.dir=run", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "run" / "rewards.csv").exists()
    if not override.startswith("model="):
        assert [ln for ln in out.stderr.splitlines() if ln.startswith("srsoup: error:")] and len(
            [ln for ln in out.stderr.splitlines() if "error" in ln]
        ) == 1
    else:
        assert "Available options in 'model'" in out.stderr and "tiny" in out.stderr


def test_non_editable_install_runs_from_anywhere(toy_model_dir, tmp_path):
    """Build and install the wheel (not the checkout) and run it from an unrelated directory."""
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (target / "srsoup" / "conf" / "config.yaml").exists()
    assert (target / "srsoup" / "conf" / "model" / "tiny.yaml").exists()
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PYTHONPATH": str(target)}
    code = "import srsoup, sys; print(srsoup.__file__)"
    where = subprocess.run(
        [sys.executable, "-c", code], cwd=work, env={**os.environ, **env}, capture_output=True, text=True
    ).stdout
    assert where.startswith(str(target))
    out = srsoup(
        "run",
        f"model.pretrained={toy_model_dir}",
        "sampler.steps=2",
        "guidance=none",
        "progress=false",
        "prompts.texts=[a red circle on a blue background]",
        "hydra.run.dir=out",
        cwd=work,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert (work / "out" / "rewards.csv").exists()
