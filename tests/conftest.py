"""Shared fixtures: a tiny random-weight model in the embedded layout, tiny copies of the hub models in their
releases' layouts, config composition, offline hub, one torch thread."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one xdist worker per core: each worker, and every process its tests start, on one thread
    # (two processes of several OpenMP threads each on 2 cores spin-wait 10-100x slower). Runs that tests compare
    # bit for bit then also share their thread count.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _environment_restored():
    """Every test leaves os.environ as it found it: an in-process command that sets a variable (``--config-dir``
    sets $SRSOUP_CONF) must not change how later tests compose their configs."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


TOY_UNET = dict(
    block_out_channels=(8, 16, 16, 16),
    norm_num_groups=8,
    cross_attention_dim=16,
    attention_head_dim=2,
    addition_embed_type_num_heads=2,
)
TOY_TEXT = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)


@pytest.fixture(scope="session")
def toy_model_dir(tmp_path_factory):
    """A random-weight model in the embedded model's diffusers layout, small enough to run in milliseconds."""
    from srsoup.tiny.components import (
        build_scheduler,
        build_text_encoder,
        build_tokenizer,
        build_unet,
        save_pipeline_folder,
    )

    torch.manual_seed(0)
    tok = build_tokenizer()
    out = tmp_path_factory.mktemp("toy_model")
    save_pipeline_folder(
        out,
        build_unet(**TOY_UNET),
        build_text_encoder(tok, **TOY_TEXT),
        tok,
        build_scheduler(),
        dtype=torch.float32,
    )
    return out


@pytest.fixture(scope="session")
def toy_backbone(toy_model_dir):
    from srsoup.backbones.ddim import DDIMBackbone

    return DDIMBackbone.from_pretrained(
        str(toy_model_dir), device=torch.device("cpu"), dtype=torch.float32, cfg_scale=3.0, chunk_size=16
    )


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Random-weight tiny copies of every hub backbone and reward in their releases' layouts (once per session)."""
    from srsoup.testing.checkpoints import make_all

    out = tmp_path_factory.mktemp("tiny_ckpts")
    make_all(out)
    return out


def compose(*overrides: str):
    """The run config as `srsoup run` composes it, with these overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from srsoup.config import register_configs

    register_configs()
    with initialize_config_module("srsoup.conf", version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


@pytest.fixture
def toy_cfg(toy_model_dir):
    """Compose a fast run on the toy model: 4 steps, K=3, one prompt, progress bars off."""

    def make(*overrides: str):
        base = [
            f"model.pretrained={toy_model_dir}",
            "sampler.steps=4",
            "guidance.num_candidates=3",
            "prompts.texts=[a red circle on a blue background]",
            "progress=false",
            "device=cpu",
        ]
        return compose(*base, *overrides)

    return make


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads; on a busy 2-core machine they spin-wait (10-100x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
