"""Every backbone against its own diffusers pipeline (DESIGN §5): a deterministic run (``guidance=none``;
``sampler.eta=0`` for DDIM models, ``model.noise_level=0`` for flow models) through ``srsoup.runner.run`` writes
the pipeline's image pixel for pixel from the same x_T, prompt, steps, CFG scale and resolution; and at each
model's default stochastic setting the candidates of one step differ. FLUX.1's parity is in tests/test_flux.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srsoup import runner
from srsoup.guidance import METHODS
from srsoup.rewards.base import CountingReward
from srsoup.sampling import sample_group
from tests.conftest import compose
from tests.test_hub_models import brightness

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted(p.stem for p in (ROOT / "srsoup" / "conf" / "model").glob("*.yaml"))
HUB_PROMPT = "A photo of a Cat"  # capitals: Sana's pipeline lowercases, so a missed step would show
TINY_PROMPT = "a red circle on a blue background"  # inside the embedded model's grammar
STEPS, SEED, CFG, SIDE = 3, 7, 4.0, 32


def no_progress(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def embedded_pipeline(tiny: Path, prompt: str, **call) -> Image.Image:
    """The embedded model (pixel space, no VAE) through StableDiffusionPipeline with ``vae=None``: the pipeline
    runs prompt encoding, CFG and DDIM(η = 0); ``output_type="latent"`` returns the final sample, which for a
    pixel-space model is the image in [-1, 1]; the pipeline's own image processor turns it into a PIL image."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    from srsoup.tiny import WEIGHTS_DIR

    folder = str(WEIGHTS_DIR)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=torch.float32)
    pipe = StableDiffusionPipeline(
        vae=None,
        text_encoder=CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=torch.float32),
        tokenizer=AutoTokenizer.from_pretrained(folder, subfolder="tokenizer"),
        unet=unet,
        scheduler=DDIMScheduler.from_pretrained(folder, subfolder="scheduler"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    side = unet.config.sample_size * pipe.vae_scale_factor  # latents of the sample size: the image itself
    x0 = no_progress(pipe)(prompt, height=side, width=side, eta=0.0, output_type="latent", **call).images
    return pipe.image_processor.postprocess(x0, output_type="pil")[0]


def sd15_pipeline(tiny: Path, prompt: str, **call) -> Image.Image:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny / "sd15"))
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # the release's PNDM config, stepped by DDIM
    return no_progress(pipe)(prompt, height=SIDE, width=SIDE, eta=0.0, **call).images[0]


def sdxl_pipeline(tiny: Path, prompt: str, **call) -> Image.Image:
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionXLPipeline

    fix = AutoencoderKL.from_pretrained(str(tiny / "sdxl-vae-fp16-fix"))  # the separate fp16-fix VAE folder
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny / "sdxl"), vae=fix)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # the release's Euler config, as DDIM
    return no_progress(pipe)(prompt, height=SIDE, width=SIDE, eta=0.0, **call).images[0]


def sd3_pipeline(name: str) -> Callable[..., Image.Image]:
    def run(tiny: Path, prompt: str, **call) -> Image.Image:
        from diffusers import StableDiffusion3Pipeline

        pipe = StableDiffusion3Pipeline.from_pretrained(str(tiny / name))  # its own FlowMatchEuler scheduler
        return no_progress(pipe)(prompt, height=SIDE, width=SIDE, **call).images[0]

    return run


def sana_pipeline(tiny: Path, prompt: str, **call) -> Image.Image:
    """SanaPipeline with a FlowMatchEulerDiscreteScheduler built from the release's config, ``flow_shift`` as its
    ``shift`` (the pipeline accepts any scheduler: it calls ``set_timesteps(T)`` and ``step``, and passes the
    scheduler's timesteps σ·1000 times ``timestep_scale`` to the transformer). ``use_resolution_binning=False``:
    binning needs a transformer sample size of 16-128 (512-4096 px releases) and maps 32 px to a 512 px bin; at the
    release's own 1024 px it maps 1024 to 1024, so a full-size run is unaffected."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SanaPipeline

    pipe = SanaPipeline.from_pretrained(str(tiny / "sana"))
    release = pipe.scheduler.config
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(release, shift=release.flow_shift)
    return no_progress(pipe)(prompt, height=SIDE, width=SIDE, use_resolution_binning=False, **call).images[0]


#: model yaml → (the pipeline's image, the override that makes our step deterministic, our extra overrides).
PIPELINES: dict[str, tuple[Callable[..., Image.Image], str, tuple[str, ...]]] = {
    "tiny": (embedded_pipeline, "sampler.eta=0", ()),
    "sd15": (sd15_pipeline, "sampler.eta=0", ()),
    "sdxl": (sdxl_pipeline, "sampler.eta=0", ("model.vae={tiny}/sdxl-vae-fp16-fix",)),
    "sd35m": (sd3_pipeline("sd35m"), "model.noise_level=0", ()),
    "sd35l": (sd3_pipeline("sd35l"), "model.noise_level=0", ()),
    "sana": (sana_pipeline, "model.noise_level=0", ()),
}
FLUX = ("flux_dev", "flux_schnell")  # tests/test_flux.py


def model_overrides(name: str, tiny: Path) -> list[str]:
    """The model yaml pointed at its tiny copy (the embedded model is its own)."""
    if name == "tiny":
        return ["model=tiny"]
    extra = ["model.resolution=32"] if name in FLUX else [e.format(tiny=tiny) for e in PIPELINES[name][2]]
    return [f"model={name}", f"model.pretrained={tiny / name}", *extra]


def test_every_model_yaml_has_a_parity_test():
    assert set(PIPELINES) | set(FLUX) == set(MODELS)


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_deterministic_run_matches_its_diffusers_pipeline_pixel_for_pixel(tiny, tmp_path, name):
    pipeline, deterministic, _ = PIPELINES[name]
    prompt = TINY_PROMPT if name == "tiny" else HUB_PROMPT
    cfg = compose(
        *model_overrides(name, tiny),
        deterministic,
        "guidance=none",
        "eval_rewards=none",
        f"sampler.steps={STEPS}",
        f"sampler.cfg_scale={CFG}",
        f"seeds=[{SEED}]",
        f"prompts.texts=[{prompt}]",
        "progress=false",
        "device=cpu",
    )
    ours = np.array(Image.open(runner.run(cfg, tmp_path / "run") / "images" / f"p000_s{SEED}_w00.png"))
    # The pipeline draws its own x_T from the same seed: torch.randn(latent_shape, generator) on the CPU.
    theirs = pipeline(
        tiny, prompt, num_inference_steps=STEPS, guidance_scale=CFG, generator=torch.Generator().manual_seed(SEED)
    )
    assert ours.shape == (SIDE, SIDE, 3) and ours.std() > 0
    assert np.array_equal(ours, np.array(theirs))


@pytest.mark.parametrize("name", MODELS)
def test_candidates_of_a_step_differ_at_the_default_stochastic_setting(tiny, name):
    """η = 1 (DDIM) or the yaml's noise level (flow) as the yamls and the sampler default them: σ > 0 and the K
    candidates decode to different images (their rewards spread)."""
    spec = runner.build_spec(compose(*model_overrides(name, tiny), "device=cpu"))
    assert spec.backbone_cls.deterministic_reason(spec.model, spec.eta) is None
    backbone = spec.backbone_cls.load(
        spec.model, device=torch.device("cpu"), dtype=torch.float32, cfg_scale=spec.cfg_scale, eta=spec.eta
    )
    method = METHODS["single"](num_candidates=3)
    method.setup(torch.tensor([[1.0]], dtype=torch.float64), ["brightness"])
    rewards = {"brightness": CountingReward("brightness", brightness)}
    prompt = TINY_PROMPT if name == "tiny" else HUB_PROMPT
    result = sample_group(
        backbone=backbone, method=method, rewards=rewards, prompt=prompt, seed=0, num_steps=2, progress=False
    )
    first = result.trace[0]
    assert first["step"] == 0 and first["sigma"] > 0
    assert first["reward_std_brightness"] > 0
