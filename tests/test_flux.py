"""FLUX.1 dev and schnell on tiny random-weight copies in the releases' layout: pixel parity with diffusers'
FluxPipeline, stochastic candidates, one transformer pass per denoiser eval, init=random (local and shipped
configs at full size on the meta device) and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srsoup import runner
from srsoup.backbones.flux import FluxBackbone
from srsoup.backbones.loading import CONFIGS
from srsoup.errors import SrsoupError
from srsoup.guidance import METHODS
from srsoup.rewards.base import CountingReward
from srsoup.sampling import sample_group
from srsoup.spec import weight_grid
from tests.conftest import compose
from tests.test_hub_models import PROMPT, brightness, contrast

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VARIANTS = ["flux_dev", "flux_schnell"]
CPU = dict(device=torch.device("cpu"), dtype=torch.float32, cfg_scale=3.5, chunk_size=3)


def load(tiny: Path, variant: str, **kwargs) -> FluxBackbone:
    return FluxBackbone.from_pretrained(str(tiny / variant), **{"resolution": 32, **CPU, **kwargs})


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("variant", VARIANTS)
def test_deterministic_run_matches_flux_pipeline_pixel_for_pixel(tiny, tmp_path, variant):
    from diffusers import FluxPipeline

    steps, seed, guidance = 3, 7, 2.5
    cfg = compose(
        f"model={variant}",
        f"model.pretrained={tiny / variant}",
        "model.resolution=32",
        "model.noise_level=0",
        "guidance=none",
        "eval_rewards=none",
        f"sampler.steps={steps}",
        f"sampler.cfg_scale={guidance}",
        f"seeds=[{seed}]",
        f"prompts.texts=[{PROMPT}]",
        "progress=false",
        "device=cpu",
    )
    ours = np.array(Image.open(runner.run(cfg, tmp_path / "run") / "images" / f"p000_s{seed}_w00.png"))
    pipe = FluxPipeline.from_pretrained(str(tiny / variant))
    pipe.set_progress_bar_config(disable=True)
    # The pipeline draws its own x_T from the same seed (prepare_latents: unpacked, then packed).
    theirs = pipe(
        PROMPT,
        height=32,
        width=32,
        num_inference_steps=steps,
        guidance_scale=guidance,
        max_sequence_length=cfg.model.max_sequence_length,
        generator=torch.Generator().manual_seed(seed),
    ).images[0]
    assert ours.shape == (32, 32, 3) and ours.std() > 0
    assert np.array_equal(ours, np.array(theirs))


def test_candidates_of_a_step_differ_at_the_default_noise_level(tiny):
    backbone = load(tiny, "flux_dev")  # noise_level 0.8, the yaml's default
    method = METHODS["single"](num_candidates=3)
    method.setup(torch.tensor([[1.0]], dtype=torch.float64), ["brightness"])
    rewards = {"brightness": CountingReward("brightness", brightness)}
    result = sample_group(
        backbone=backbone, method=method, rewards=rewards, prompt=PROMPT, seed=0, num_steps=2, progress=False
    )
    first = result.trace[0]
    assert first["step"] == 0 and first["sigma"] > 0
    assert first["reward_std_brightness"] > 0  # the K candidates decode to different images
    still = load(tiny, "flux_dev", noise_level=0.0)
    still.set_steps(2)
    x = still.initial_latents(torch.Generator().manual_seed(0))
    assert float(still.step_distribution(x, 0, still.encode_prompt(PROMPT)).sigma) == 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_two_step_srsoup_group_counts_one_transformer_pass_per_eval(tiny, variant):
    backbone = load(tiny, variant)
    rows: list[int] = []
    backbone.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: rows.append(len(kwargs["hidden_states"])), with_kwargs=True
    )
    names = ["brightness", "contrast"]
    method = METHODS["srsoup"](num_candidates=2, soup_end_step=1)
    method.setup(torch.tensor(weight_grid(None, 2, names), dtype=torch.float64), names)
    rewards = {n: CountingReward(n, f) for n, f in (("brightness", brightness), ("contrast", contrast))}
    result = sample_group(
        backbone=backbone, method=method, rewards=rewards, prompt=PROMPT, seed=0, num_steps=2, progress=False
    )
    T, K, S, L, M, nz = 2, 2, 1, 3, 2, 4
    evals = T * L + S * M * K  # chains + soup anchors' candidates (the last step's are decoded, not evaluated)
    assert backbone.denoiser_evals == int(result.evals.sum()) == evals == method.plan(T).denoiser_evals
    assert sum(rows) == evals and max(rows) <= CPU["chunk_size"]  # no CFG pair: one row per eval, chunked
    assert int(result.queries.sum()) == S * M * K + (T - S) * K * nz
    assert backbone.latent_shape == (16, 16) and result.images.shape == (3, 3, 32, 32)
    assert backbone.guidance_embeds == (variant == "flux_dev")


def test_init_random_builds_from_a_local_folder_and_the_shipped_configs(tiny):
    local = load(tiny, "flux_schnell", init="random")
    pretrained = load(tiny, "flux_schnell")
    name, weight = next(iter(pretrained.transformer.state_dict().items()))
    assert not torch.equal(local.transformer.state_dict()[name], weight)  # same architecture, new weights
    local.set_steps(1)
    x = local.initial_latents(torch.Generator().manual_seed(0))
    assert torch.isfinite(local.step_distribution(x, 0, local.encode_prompt(PROMPT)).mean).all()

    meta = dict(CPU, device=torch.device("meta"), dtype=torch.bfloat16)
    for variant in ("dev", "schnell"):
        repo = f"black-forest-labs/FLUX.1-{variant}"
        full = FluxBackbone.from_pretrained(repo, init="random", **meta)
        assert full.resolution == 1024 and full.latent_shape == (4096, 64) and full.max_sequence_length == 512
        assert full.guidance_embeds == (variant == "dev")
        published = json.loads((CONFIGS / repo.replace("/", "--") / "source.json").read_text())
        for component, figure in published["published_parameters"].items():
            count = sum(p.numel() for p in getattr(full, component).parameters())
            assert abs(count - figure["count"]) <= 0.01 * figure["count"], (variant, component, count)
        # FluxPipeline's schedule: sigmas linspace(1, 1/T, T), shifted by mu(4096 tokens) = 1.15 for dev only.
        sigmas = np.linspace(1.0, 1 / 4, 4)
        if variant == "dev":
            sigmas = np.exp(1.15) / (np.exp(1.15) + (1 / sigmas - 1))
        np.testing.assert_allclose(full.set_steps(4), sigmas, rtol=1e-6)


def test_bad_resolution_and_sequence_length_are_one_line(tiny):
    with pytest.raises(SrsoupError) as e:
        load(tiny, "flux_dev", resolution=36)
    assert one_line(e) == (
        "model.resolution=36 must be a positive multiple of 8 (VAE factor 4 x 2x2 latent packing)"
    )
    meta = dict(CPU, device=torch.device("meta"))
    with pytest.raises(
        SrsoupError, match=r"model.resolution=1000 must be a positive multiple of 16 \(VAE factor 8"
    ):
        FluxBackbone.from_pretrained("black-forest-labs/FLUX.1-schnell", init="random", resolution=1000, **meta)
    with pytest.raises(SrsoupError) as e:
        load(tiny, "flux_schnell", max_sequence_length=600)
    assert "model.max_sequence_length=600 must be between 1 and 512" in one_line(e)


@pytest.mark.parametrize(
    ("variant", "steps", "cfg_scale", "soup_end"), [("flux_dev", 28, 3.5, 11), ("flux_schnell", 4, 0.0, 2)]
)
def test_model_yamls_give_the_pipeline_defaults(variant, steps, cfg_scale, soup_end):
    spec = runner.build_spec(compose(f"model={variant}", "device=cpu"))
    assert (spec.steps, spec.cfg_scale, spec.guidance["soup_end_step"]) == (steps, cfg_scale, soup_end)
    assert spec.backbone_cls is FluxBackbone
