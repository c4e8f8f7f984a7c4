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


@pytest.mark.usefixtures("one_torch_thread")  # the reference runs on the job's one thread (see below)
def test_a_preempted_submitit_job_is_requeued_and_resumes_into_its_run_dir(toy_model_dir, tmp_path):
    """USR2 is what Slurm sends a submitit job at preemption (and signal_delay_s before its time limit): submitit
    requeues the job with the same arguments, and it resumes into its own run dir to the uninterrupted result."""
    import json
    import signal
    import time

    from srsoup import runner
    from tests.conftest import compose
    from tests.test_runner import snapshot

    overrides = [
        f"model.pretrained={toy_model_dir}",
        "sampler.steps=3",
        "guidance.num_candidates=2",
        "seeds=[0,1,2,3,4,5,6,7,8,9]",
        "prompts.texts=[a red circle on a blue background]",
        "progress=false",
        "device=cpu",
    ]
    sweep = tmp_path / "sweep"
    sweep_run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "srsoup",
            "run",
            "-m",
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=10",
            *overrides,
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    job, deadline = sweep / "0", time.time() + 300
    while time.time() < deadline and not (
        (job / "rewards.csv").exists() and len((job / "rewards.csv").read_text().splitlines()) > 6
    ):
        time.sleep(0.05)
    first_pid = int((job / ".srsoup" / "lock").read_text().split()[0])
    os.kill(first_pid, signal.SIGUSR2)
    _, stderr = sweep_run.communicate(timeout=600)
    assert sweep_run.returncode == 0, stderr[-2000:]
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*.err"))
    # (submitit's local executor calls every USR2 a time-out; on Slurm a preemption is requeued the same way)
    assert "Caught signal SIGUSR2" in logs and "Requeued job" in logs and "groups already complete" in logs
    assert int((job / ".srsoup" / "lock").read_text().split()[0]) != first_pid  # a second process finished it
    assert json.loads((job / "summary.json").read_text())["status"] == "complete"
    # In-process on the job's one thread (one_torch_thread): float32 reductions over 2 threads may differ in the
    # last bit.
    ref = runner.run(compose(*overrides), tmp_path / "ref")
    assert snapshot(job) == snapshot(ref)


def test_the_slurm_launcher_requeues_at_its_time_limit():
    from hydra import compose, initialize_config_module

    from srsoup.config import register_configs

    register_configs()
    with initialize_config_module("srsoup.conf", version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.max_num_timeout == 3
    assert 0 < launcher.signal_delay_s < 60 * launcher.timeout_min
