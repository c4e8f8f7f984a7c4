"""`model.init=random` / `rewards.<name>.init=random`: every shipped architecture at its published size (built on
the meta device), reward models scoring real-size images through their own code, one-line errors, and `srsoup run`
writing which parts are random."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra.utils import get_class, get_object

from srsoup.backbones.loading import CONFIGS as MODEL_CONFIGS
from srsoup.backbones.loading import open_components, separate_vae
from srsoup.errors import SrsoupError
from srsoup.rewards import shipped
from srsoup.rewards.base import build_rewards
from srsoup.standins import stored_numel

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "srsoup" / "conf"
META = torch.device("meta")
MODEL_FOLDERS = sorted(p for p in MODEL_CONFIGS.iterdir() if p.is_dir())
REWARD_FOLDERS = sorted(p for p in shipped.CONFIGS.iterdir() if p.is_dir())
PROMPTS = ["a photo of a cat", "an oil painting of a lighthouse at dusk, " * 8]  # the second one is truncated


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reward_yaml(name: str) -> dict:
    return yaml.safe_load((CONF / "reward" / f"{name}.yaml").read_text())


def assert_published(built: int, published: dict, what: str) -> None:
    assert "cite" in published and published["cite"].strip(), f"{what}: published_parameters without a cite"
    assert abs(built - published["count"]) <= 0.01 * published["count"], (
        f"{what}: built {built:,} vs published {published['count']:,}"
    )


# --- (a) published sizes, on the meta device -------------------------------------------------------------------
@pytest.mark.parametrize("folder", MODEL_FOLDERS, ids=lambda p: p.name)
def test_shipped_model_builds_at_its_published_size(folder):
    source = json.loads((folder / "source.json").read_text())
    assert source["repo"].replace("/", "--") == folder.name
    parts = open_components(source["repo"], source["revision"], None, torch.float32, "random", META)
    # Every model config in the folder is counted: subfolders with a config.json, or the folder's own (a bare VAE).
    models = {p.parent.name for p in folder.glob("*/config.json")}
    published = source["published_parameters"]
    if (folder / "config.json").is_file():
        assert len(published) == 1, f"{folder.name}: a bare model folder has one published figure"
        models.add(next(iter(published)))
    assert set(published) == models, f"{folder.name}: published_parameters must name exactly its model configs"
    for name, figure in published.items():
        module = parts.component(name if (folder / name).is_dir() else None)
        assert all(t.is_meta for t in module.parameters())
        assert_published(stored_numel(module), figure, f"{folder.name}/{name}")
    # Tokenizer stand-ins: the release's sequence length, ids inside the paired text encoder's vocabulary.
    for tok_dir in folder.glob("tokenizer*/"):
        tok = parts.tokenizer(tok_dir.name)
        config = json.loads((tok_dir / "tokenizer_config.json").read_text())
        assert tok.model_max_length == config["model_max_length"]
        encoder = json.loads(
            (folder / tok_dir.name.replace("tokenizer", "text_encoder") / "config.json").read_text()
        )
        ids = tok(PROMPTS, padding="max_length", truncation=True, max_length=77).input_ids
        assert max(max(row) for row in ids) < encoder["vocab_size"]


def model_yaml_sources() -> list[tuple[str, str, str | None]]:
    """(yaml key, hub id, revision) of every hub model a model yaml names (pretrained, a separate vae)."""
    out = []
    for path in sorted((CONF / "model").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        for key, rev in (("pretrained", "revision"), ("vae", "vae_revision")):
            if cfg.get(key):
                out.append((f"{path.stem}.{key}", cfg[key], cfg.get(rev)))
    return out


@pytest.mark.parametrize("key,repo,revision", model_yaml_sources(), ids=[k for k, _, _ in model_yaml_sources()])
def test_model_yamls_cite_the_revision_their_configs_were_shipped_at(key, repo, revision):
    folder = MODEL_CONFIGS / repo.replace("/", "--")
    if not folder.is_dir():
        pytest.skip(f"{repo} has no shipped configs (init=random names the valid ones)")
    assert json.loads((folder / "source.json").read_text())["revision"] == revision, key


def test_every_hub_reward_has_shipped_configs_that_its_defaults_accept():
    with_init = {p.stem for p in (CONF / "reward").glob("*.yaml") if "init" in reward_yaml(p.stem)}
    assert with_init == {p.name for p in REWARD_FOLDERS} == set(shipped.shipped_rewards())
    for name in with_init:
        cfg = reward_yaml(name)
        settings = shipped.source(name)["settings"]
        assert shipped.shipped_folder(name, "random", **{k: cfg[k] for k in settings}) == shipped.CONFIGS / name


@pytest.mark.parametrize("folder", REWARD_FOLDERS, ids=lambda p: p.name)
def test_shipped_reward_builds_at_its_published_size(folder):
    source = shipped.source(folder.name)
    parts = get_object(source["build"])(folder, device=META, dtype=torch.float32)
    models = {k: v for k, v in parts.items() if isinstance(v, torch.nn.Module)}
    assert set(models) == set(source["published_parameters"]), f"{folder.name}: one published figure per model"
    for name, module in models.items():
        assert all(t.is_meta for t in module.parameters())
        assert_published(stored_numel(module), source["published_parameters"][name], f"{folder.name}/{name}")


# --- (b) scoring real-size images --------------------------------------------------------------------------------
SMALL = dict(  # widths and depths only: image size, patch size, vocabularies and sequence lengths stay real
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    projection_dim=16,
    width=32,
    layers=1,
    heads=2,
    head_width=16,
    embed_dim=16,
)


def shrunk(value):
    if isinstance(value, dict):
        return {k: SMALL[k] if k in SMALL else shrunk(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def narrow_reward_configs(tmp_path_factory):
    """The shipped reward configs, narrowed (SMALL): each reward's own init=random code runs in milliseconds."""
    out = tmp_path_factory.mktemp("reward_configs")
    for path in shipped.CONFIGS.rglob("*.json"):
        target = out / path.relative_to(shipped.CONFIGS)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = json.loads(path.read_text())
        target.write_text(json.dumps(data if path.name == "source.json" else shrunk(data)))
    return out


@pytest.mark.parametrize("name", [p.name for p in REWARD_FOLDERS])
def test_reward_at_random_init_scores_real_size_images_through_its_own_code(
    name, narrow_reward_configs, monkeypatch
):
    monkeypatch.setattr(shipped, "CONFIGS", narrow_reward_configs)
    reward = build_rewards({name: {**reward_yaml(name), "init": "random"}})[name]
    torch.manual_seed(0)
    scores = reward(torch.rand(2, 3, 512, 512), PROMPTS)  # SD1.5's image size, preprocessed to 224 px
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    if name != "aesthetic":  # the one that reads no prompt
        tok = reward.tokenizer if name == "imagereward" else reward.scorer.tokenizer
        assert tok.model_max_length == (512 if name == "imagereward" else 77)  # bert-base-uncased's, CLIP's


def test_clipscore_at_full_size_scores_with_random_weights():
    """CLIP ViT-L/14 (428M) with random weights: one real forward of both towers at 224 px and 77 tokens (the
    random init alone takes 7 s of CPU; ViT-H/14 and ImageReward are sized on the meta device above)."""
    torch.manual_seed(0)
    reward = build_rewards({"clipscore": {**reward_yaml("clipscore"), "init": "random"}})["clipscore"]
    model = reward.scorer.model
    assert stored_numel(model) == shipped.source("clipscore")["published_parameters"]["clip"]["count"]
    assert reward.scorer.max_length == 77 and model.config.vision_config.image_size == 224
    scores = reward(torch.rand(1, 3, 512, 512), PROMPTS[1:])  # one image: about 3 s of CPU
    assert scores.shape == (1,) and torch.isfinite(scores).all() and (scores >= 0).all()


# --- (c) bad input: one line naming the value and the valid choices ----------------------------------------------
def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_model_init_errors_are_one_line():
    sdxl = "stabilityai/stable-diffusion-xl-base-1.0"
    with pytest.raises(SrsoupError) as err:
        open_components(sdxl, "0123abc", None, torch.float32, "random", META)
    message = one_line(err)
    assert "model.revision='0123abc'" in message and "462165984030d82259a11f4367a4eed129e94a7b or null" in message
    with pytest.raises(SrsoupError) as err:  # configs cited at no pinned commit: main or null
        open_components("stabilityai/stable-diffusion-3.5-medium", "0123abc", None, torch.float32, "random", META)
    assert "valid: main or null" in one_line(err)
    with pytest.raises(SrsoupError) as err:
        separate_vae("madebyollin/sdxl-vae-fp16-fix", "0123abc", None, torch.float32, "random", META)
    assert "model.vae_revision='0123abc'" in one_line(err)
    with pytest.raises(SrsoupError) as err:
        open_components(sdxl, None, None, torch.float32, "randm", META)
    assert one_line(err) == "model.init='randm'; valid: pretrained, random"
    with pytest.raises(SrsoupError) as err:
        open_components("someone/unknown-model", None, None, torch.float32, "random", META)
    assert "stabilityai/stable-diffusion-xl-base-1.0" in one_line(err)  # names the shipped architectures


@pytest.mark.parametrize(
    "name,overrides,expected",
    [
        ("aesthetic", {"init": "randm"}, "rewards.aesthetic.init='randm'; valid: pretrained, random"),
        ("aesthetic", {"init": "random", "pretrained": "/data/aes"}, "rewards.aesthetic.pretrained='/data/aes'"),
        (
            "clipscore",
            {"init": "random", "revision": "0123abc"},
            "32bd64288804d66eefd0ccbe215aa642df71cc41 or null",
        ),
        ("pickscore", {"init": "random", "revision": "0123abc"}, "rewards.pickscore.revision='0123abc'"),
        ("hpsv2", {"init": "random", "tokenizer": "laion/other"}, "valid: openai/clip-vit-large-patch14 or null"),
        ("imagereward", {"init": "random", "pretrained": "/data/ir"}, "valid: THUDM/ImageReward or null"),
    ],
)
def test_reward_init_errors_are_one_line(name, overrides, expected):
    with pytest.raises(SrsoupError) as err:
        build_rewards({name: {**reward_yaml(name), **overrides}})
    assert expected in one_line(err)


def test_spec_lists_random_rewards_and_eval_rewards():
    from srsoup.spec import build_spec
    from tests.conftest import compose

    spec = build_spec(
        compose(
            "rewards=aes_hps",
            "rewards.hpsv2.init=random",
            "eval_rewards=paper",
            "eval_rewards.clipscore.init=random",
            "device=cpu",
        )
    )
    assert spec.random_weights() == ["hpsv2", "clipscore"]
    assert get_class(spec.rewards["hpsv2"]["_target_"]).__name__ == "HPSv2"


# --- (d) end to end ----------------------------------------------------------------------------------------------
def test_run_with_random_model_weights_says_so(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "srsoup", "run", "model.init=random", "sampler.steps=2", "guidance=none"]
        + ["progress=false", "prompts.texts=[a red circle on a blue background]", "device=cpu"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    (run_dir,) = [p.parent for p in tmp_path.glob("outputs/*/*/summary.json")]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["random_weights"] == ["model"] and summary["status"] == "complete"
    assert summary["fingerprint"]["model"]["init"] == "random"  # a resumed run cannot mix in pretrained images
    assert "RANDOM WEIGHTS (init=random) for model" in (run_dir / "srsoup.log").read_text()
