"""srsoup.pin_revisions finds every unpinned hub revision and rewrites it in place (the hub is a stub)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from omegaconf import OmegaConf

from srsoup import pin_revisions

ROOT = Path(__file__).resolve().parents[1]


def fake_commit(repo: str, revision: str | None) -> str:
    return hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()


def test_every_unpinned_revision_is_found_and_rewritten(tmp_path, capsys):
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "srsoup" / "conf", conf)
    before = {
        (p.name, key): repo for p in (conf / "reward").glob("*.yaml") for key, repo, _ in pin_revisions.unpinned(p)
    }
    # The ones the configs say are not pinned, each with the repo its key belongs to.
    assert before[("pickscore.yaml", "revision")] == "yuvalkirstain/PickScore_v1"
    assert before[("pickscore.yaml", "processor_revision")] == "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
    assert before[("aesthetic.yaml", "mlp_revision")] == "trl-lib/ddpo-aesthetic-predictor"
    assert before[("hpsv2.yaml", "revision")] == "xswu/HPSv2"
    # Already pinned revisions are left alone.
    assert ("clipscore.yaml", "revision") not in before and ("aesthetic.yaml", "clip_revision") not in before

    assert pin_revisions.main(["--conf", str(conf)], resolve=fake_commit) == 0
    assert "pickscore.yaml: revision: None -> " in capsys.readouterr().out
    assert (conf / "reward" / "pickscore.yaml").read_text() == (
        ROOT / "srsoup/conf/reward/pickscore.yaml"
    ).read_text()

    assert pin_revisions.main(["--conf", str(conf), "--write"], resolve=fake_commit) == 0
    for path in [*(conf / "model").glob("*.yaml"), *(conf / "reward").glob("*.yaml")]:
        assert pin_revisions.unpinned(path) == []
    pick = OmegaConf.load(conf / "reward" / "pickscore.yaml")
    assert pick.revision == fake_commit("yuvalkirstain/PickScore_v1", None)
    assert pick.processor == "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
    aesthetic = OmegaConf.load(conf / "reward" / "aesthetic.yaml")
    assert aesthetic.mlp_revision == fake_commit("trl-lib/ddpo-aesthetic-predictor", "main")
    assert aesthetic.clip_revision == "32bd64288804d66eefd0ccbe215aa642df71cc41"
    text = (conf / "reward" / "aesthetic.yaml").read_text()
    assert "# LAION aesthetic predictor v2" in text and "# pinned commit (srsoup.pin_revisions)" in text


def test_a_repo_that_cannot_be_resolved_fails_after_reporting_all(tmp_path, capsys):
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "srsoup" / "conf", conf)

    def offline(repo, revision):
        raise OSError(f"cannot reach the hub for {repo}")

    assert pin_revisions.main(["--conf", str(conf), "--write"], resolve=offline) == 1
    out = capsys.readouterr().out
    assert "pickscore.yaml: revision (yuvalkirstain/PickScore_v1): cannot resolve" in out
    assert "hpsv2.yaml: revision (xswu/HPSv2): cannot resolve" in out
    assert (conf / "reward" / "hpsv2.yaml").read_text() == (ROOT / "srsoup/conf/reward/hpsv2.yaml").read_text()
