"""The `srsoup` command in subprocesses, from a temporary directory, as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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
    assert json.loads((run_dir / "summary.json").read_text())["guidance_preset"] == "srsoup"
    # A preset of a method is named as chosen (summary.json's method stays the class's).
    pool = srsoup(
        "run",
        f"model.pretrained={toy_model_dir}",
        "guidance=srsoup_pool",
        "sampler.steps=2",
        "guidance.num_candidates=2",
        "progress=false",
        "prompts.texts=[a red circle on a blue background]",
        "hydra.run.dir=pool",
        cwd=tmp_path,
    )
    assert pool.returncode == 0, pool.stderr
    assert "(1 prompts x 1 seeds x 6 weights, srsoup_pool) in pool/images" in pool.stdout
    summary = json.loads((tmp_path / "pool" / "summary.json").read_text())
    assert summary["method"] == "srsoup" and summary["guidance_preset"] == "srsoup_pool"
    # Bad input into this run's dir is refused and leaves the run as it was (only a dir of Hydra's files goes).
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    out = srsoup(
        "run",
        f"model.pretrained={toy_model_dir}",
        "guidance.num_candidates=0",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert out.returncode == 2 and "guidance.num_candidates=0" in out.stderr
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before


@pytest.mark.parametrize(
    "override,message",
    [
        ("model=sd14", "Could not find 'model/sd14'"),
        ("guidance.num_candidates=0", "guidance.num_candidates=0 must be >= 1"),
        ("weights.grid=[[0.3,0.3]]", "off the simplex"),
        ("device=cuda", "CUDA is not available"),
        ("storage_dtype=fp64", "storage_dtype='fp64' is not supported; valid: null, bf16"),
        ("prompts.texts=[]", "prompts.texts=[]"),
        ("budget.max_reward_queries=10", "too small"),
        ("model.pretrained=./missing_model", "does not exist"),
    ],
)
def test_bad_input_exit_2_without_traceback_or_outputs(tmp_path, override, message):
    out = srsoup("run", override, "hydra.run.dir=run", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()  # not even Hydra's .hydra/ and srsoup.log: no dir that is no run
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


def test_ctrl_c_is_one_line_and_a_second_process_is_refused(toy_model_dir, tmp_path):
    """Ctrl-C ends with one line naming what is complete (exit 130); a second process into the same run dir is
    refused with one line naming the first one's pid, and writes nothing."""
    # Far more groups than it can finish while the second process starts (40 were done within that on a slow
    # machine): the interrupt must land inside the loop, not in the exit after the last group.
    seeds = ",".join(map(str, range(1000)))
    args = [
        "run",
        f"model.pretrained={toy_model_dir}",
        "sampler.steps=3",
        "guidance.num_candidates=2",
        f"seeds=[{seeds}]",
        "prompts.texts=[a red circle on a blue background]",
        "progress=false",
        "hydra.run.dir=run",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "srsoup", *args], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    rewards = tmp_path / "run" / "rewards.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (rewards.exists() and len(rewards.read_text().splitlines()) > 6):
        time.sleep(0.05)
    second = srsoup(*args, cwd=tmp_path)
    assert second.returncode == 2, second.stderr
    errors = [ln for ln in second.stderr.splitlines() if "error" in ln]
    assert errors == [ln for ln in errors if ln.startswith("srsoup: error: run dir ")] and len(errors) == 1
    assert f"is in use by process {first.pid} on " in errors[0] and "Traceback" not in second.stderr
    assert first.poll() is None, "the first run ended before it could be interrupted"
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130 and "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("srsoup: interrupted; ") and last.endswith(
        "of 1000 groups complete in run; rerun the same command to resume"
    )
    complete = int(last.split("; ")[1].split()[0])
    rows = rewards.read_text().splitlines()[1:]
    assert complete >= 1 and len(rows) == 6 * complete == len(set(rows))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "partial" and summary["error"] == "interrupted (KeyboardInterrupt)"
    assert summary["groups_complete"] == complete


def test_an_unusable_run_dir_or_a_full_disk_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("not a directory")
    out = srsoup("run", "hydra.run.dir=afile/run", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        "srsoup: error: hydra.run.dir='afile/run' cannot be created or written (Not a directory); choose a "
        "directory you can write, e.g. hydra.run.dir=outputs/my_run"
    ]
    out = srsoup("run", "-m", "hydra.sweep.dir=afile/sweep", "seeds=[0],[1]", cwd=tmp_path)
    assert out.returncode == 2 and "hydra.sweep.dir='afile/sweep' cannot be created" in out.stderr

    full_disk = (
        "import errno, os, sys\n"
        "import srsoup.outputs as o\n"
        "real, left = o._write_all, [20000]\n"
        "def cut(fd, data):\n"
        "    n = min(len(data), left[0]); real(fd, data[:n]); left[0] -= n\n"
        "    if n < len(data): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), 'run/x')\n"
        "o._write_all = cut\n"
        "from srsoup.cli import console_main\n"
        "sys.argv = ['srsoup', *sys.argv[1:]]\n"
        "console_main()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", full_disk, "run", "guidance=none", "sampler.steps=2", "hydra.run.dir=run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("srsoup: error:")]
    assert len(errors) == 1 and "No space left on device (run/x)" in errors[0]
    assert "free some space, then rerun the same command to resume" in errors[0]
