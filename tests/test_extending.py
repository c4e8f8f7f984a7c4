"""docs/extending.md, run as written: a project conf/ with a reward, prompts, an experiment, a model and a
launcher of its own, found ahead of the packaged configs; one-line errors for a user's broken reward or yaml."""

from __future__ import annotations

import csv
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "extending.md"
FAST = ["sampler.steps=2", "progress=false", "device=cpu"]
#: The experiments' soup windows end at steps 6 (the doc's) and 8 (the repository's), past FAST's T (refused):
#: commands that choose an experiment end it inside T.
EXPERIMENT_WINDOW = "guidance.soup_end_step=1"


def doc_files() -> dict[str, str]:
    """The fenced blocks of docs/extending.md whose first line is `# file: NAME`."""
    files = {}
    for block in re.findall(r"```(?:python|yaml)\n(.*?)```", DOC.read_text(), re.S):
        first, _, body = block.partition("\n")
        if first.startswith("# file: "):
            files[first[len("# file: ") :].strip()] = body
    return files


def doc_commands() -> list[list[str]]:
    """The `srsoup ...` lines of the doc's bash blocks, split as a shell would."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", DOC.read_text(), re.S):
        lines += [shlex.split(ln)[1:] for ln in block.splitlines() if ln.startswith("srsoup ")]
    return lines


def srsoup(args, cwd: Path, extra_path: Path | None = None):
    path = os.pathsep.join(p for p in (str(extra_path or ""), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    env.pop("SRSOUP_CONF", None)
    return subprocess.run(
        [sys.executable, "-m", "srsoup", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("project")
    for name, text in doc_files().items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def test_the_doc_has_an_example_for_each_kind_of_extension():
    files = doc_files()
    for kind in ("reward", "rewards", "prompts", "experiment", "model", "hydra/launcher"):
        assert any(name.startswith(f"conf/{kind}/") for name in files), kind
    assert {"my_rewards.py", "my_backbones.py"} <= set(files)
    assert len(doc_commands()) >= 5


def test_every_command_of_the_doc_runs_in_a_project_folder(project, toy_model_dir):
    for i, args in enumerate(doc_commands()):
        if args[0] != "run":
            continue
        sweep = "-m" in args
        out = f"hydra.sweep.dir=sweep{i}" if sweep else f"hydra.run.dir=run{i}"
        fast = [*FAST, f"model.pretrained={toy_model_dir}", "++guidance.num_candidates=2"]
        fast += [EXPERIMENT_WINDOW] if any(a.startswith("experiment=") for a in args) else []
        done = srsoup([*args, *fast, out], cwd=project, extra_path=project)
        assert done.returncode == 0, (args, done.stderr[-3000:])
        dirs = sorted((project / f"sweep{i}").glob("[0-9]*")) if sweep else [project / f"run{i}"]
        assert dirs and all((d / "rewards.csv").exists() for d in dirs), args


def test_the_users_reward_model_and_prompts_are_used(project, toy_model_dir):
    fast = [*FAST, f"model.pretrained={toy_model_dir}", "guidance.num_candidates=2"]
    done = srsoup(["run", "rewards=red_compress", "prompts=my_set", *fast, "hydra.run.dir=red"], project, project)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(project / "red" / "rewards.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"w_redness", "r_redness"} <= set(rows[0]) and {r["prompt"] for r in rows} == {
        "a red circle on a blue background",
        "a big yellow square on a purple background",
    }
    import json

    summary = json.loads((project / "red" / "summary.json").read_text())
    assert summary["reward_queries_by_reward"]["redness"] > 0  # counted by the ledger like a built-in reward
    done = srsoup(
        ["run", "model=contrast_tiny", "guidance=none", *fast, "hydra.run.dir=contrast"], project, project
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((project / "contrast" / "summary.json").read_text())["model"] == "contrast_tiny"


def test_a_project_file_replaces_the_packaged_option_and_plan_sees_it(project, monkeypatch, capsys):
    """In-process (`srsoup plan` is a plain function): ./conf, then --config-dir, then no project configs."""
    from srsoup.planning import main as plan

    shadow = project / "shadow"
    (shadow / "conf" / "sampler").mkdir(parents=True)
    (shadow / "conf" / "sampler" / "default.yaml").write_text("steps: 7\ncfg_scale: null\neta: 1.0\n")
    monkeypatch.delenv("SRSOUP_CONF", raising=False)
    monkeypatch.chdir(shadow)
    assert plan(["device=cpu"]) == 0 and "T=7," in capsys.readouterr().out
    monkeypatch.chdir(project.parent)
    assert plan(["device=cpu", "--config-dir", str(shadow / "conf")]) == 0 and "T=7," in capsys.readouterr().out
    del os.environ["SRSOUP_CONF"]  # set by --config-dir above (not by monkeypatch, so not its to restore)
    assert plan(["device=cpu"]) == 0 and "T=30," in capsys.readouterr().out  # no conf/ here: the packaged default


BROKEN = {
    "missing": ("_target_: no_such_module.score\n", "cannot import _target_ 'no_such_module.score'"),
    "not_callable": ("_target_: my_bad.NOT_CALLABLE\n", "is a int, not a class or function"),
    "shape": ("_target_: my_bad.two_per_image\n", "returned 2 scores for 1 image;"),
    "dtype": ("_target_: my_bad.words\n", "returned a list, not numbers"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_user_reward_is_one_line(tmp_path, toy_model_dir, monkeypatch, case):
    """In-process through the runner (the CLI prints an SrsoupError as its one line; test_cli checks that)."""
    from srsoup import runner
    from srsoup.errors import SrsoupError
    from tests.conftest import compose

    (tmp_path / "my_bad.py").write_text(
        "import torch\nNOT_CALLABLE = 3\n"
        "def two_per_image(images, prompts):\n    return torch.zeros(2 * len(images))\n"
        "def words(images, prompts):\n    return ['good'] * len(images)\n"
    )
    (tmp_path / "conf" / "reward").mkdir(parents=True)
    (tmp_path / "conf" / "reward" / "bad.yaml").write_text(BROKEN[case][0])
    monkeypatch.delenv("SRSOUP_CONF", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["+reward@eval_rewards.bad=bad", "guidance=none", "prompts.texts=[a red circle on a blue background]"]
    cfg = compose(*args, *FAST, f"model.pretrained={toy_model_dir}")
    with pytest.raises(SrsoupError) as err:
        runner.run(cfg, tmp_path / "out")
    assert BROKEN[case][1] in str(err.value) and "\n" not in str(err.value)


def test_a_broken_user_yaml_names_the_file(tmp_path):
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "oops.yaml").write_text("sampler: [steps: 3\n")
    done = srsoup(["plan", "experiment=oops", "device=cpu"], cwd=tmp_path)
    assert done.returncode == 2 and "oops" in done.stderr and "Traceback" not in done.stderr


def test_the_repositorys_example_experiment_runs(toy_model_dir, tmp_path):
    args = ["run", "experiment=example", *FAST, EXPERIMENT_WINDOW, f"model.pretrained={toy_model_dir}"]
    args.append("guidance.num_candidates=2")
    done = srsoup([*args, f"hydra.run.dir={tmp_path / 'example'}", "seeds=[0]"], cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "example" / "rewards.csv").exists()
