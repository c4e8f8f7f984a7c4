"""Hydra multirun sweeps through real launchers, then `srsoup report` on the sweep dir."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")


def srsoup(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "srsoup", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        timeout=600,
    )


def test_submitit_local_sweep_with_a_failed_job_then_report(toy_model_dir, tmp_path):
    sweep = tmp_path / "sweep"
    out = srsoup(
        "run",
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "guidance=srsoup,weighted_sum,none",
        "guidance.num_candidates=2",
        f"model.pretrained={toy_model_dir}",
        "sampler.steps=2",
        "progress=false",
        "prompts.texts=[a red circle on a blue background]",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert jobs == ["0", "1", "2"] and all((sweep / j / "rewards.csv").exists() for j in jobs)
    report = srsoup("report", str(sweep), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    with open(sweep / "report" / "hypervolume.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["method"] for r in rows) == ["none", "srsoup", "weighted_sum"]
    assert all(r["status"] == "complete" for r in rows)
    assert (sweep / "report" / "pareto.png").stat().st_size > 1000

    # A job that fails is reported as failed; the other job's results are kept.
    failing = tmp_path / "failing"
    out = srsoup(
        "run",
        "-m",
        "guidance.num_candidates=2,0",
        f"model.pretrained={toy_model_dir}",
        "sampler.steps=2",
        "progress=false",
        "prompts.texts=[a red circle on a blue background]",
        f"hydra.sweep.dir={failing}",
        cwd=tmp_path,
    )
    assert out.returncode != 0 and "guidance.num_candidates=0" in out.stderr
    assert (failing / "0" / "rewards.csv").exists() and not (failing / "1" / "rewards.csv").exists()
    report = srsoup("report", str(failing), cwd=tmp_path)
    assert report.returncode == 0 and "FAILED" in report.stdout
