"""Hub backbones and hub rewards on tiny random-weight copies in their releases' layouts: loading, exact counts,
the flow SDE step, reward shapes, one-line errors offline, and `run` end to end."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from srsoup import runner
from srsoup.errors import SrsoupError
from srsoup.guidance import METHODS
from srsoup.rewards.base import CountingReward
from srsoup.sampling import sample_group
from srsoup.spec import weight_grid
from tests.conftest import compose

ROOT = Path(__file__).resolve().parents[1]
CPU = dict(device=torch.device("cpu"), dtype=torch.float32, cfg_scale=5.0, chunk_size=3)
PROMPT = "a photo of a cat"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def load(name: str, tiny: Path, **kwargs):
    if name == "sd15":
        from srsoup.backbones.ddim import DDIMBackbone

        return DDIMBackbone.from_pretrained(str(tiny / "sd15"), **CPU, **kwargs)
    if name == "sdxl":
        from srsoup.backbones.sdxl import SDXLBackbone

        return SDXLBackbone.from_pretrained(
            str(tiny / "sdxl"), vae=str(tiny / "sdxl-vae-fp16-fix"), **CPU, **kwargs
        )
    if name == "sana":
        from srsoup.backbones.sana import SanaBackbone

        return SanaBackbone.from_pretrained(str(tiny / name), **CPU, **kwargs)
    from srsoup.backbones.sd3 import SD3Backbone

    return SD3Backbone.from_pretrained(str(tiny / name), **CPU, **kwargs)


def brightness(images, prompts):
    return images.mean(dim=(1, 2, 3))


def contrast(images, prompts):
    return images.std(dim=(1, 2, 3))


# --- backbones -----------------------------------------------------------------------------------------------
LATENTS = {"sd15": (4, 8, 8), "sdxl": (4, 8, 8), "sd35m": (4, 8, 8), "sd35l": (4, 8, 8), "sana": (8, 8, 8)}


@pytest.mark.parametrize("name", list(LATENTS))
def test_backbone_runs_a_two_step_srsoup_group_with_exact_counts(tiny, name):
    backbone = load(name, tiny)
    names = ["brightness", "contrast"]
    weights = weight_grid(None, 2, names)  # [[0,1],[.5,.5],[1,0]]: L=3, M=2, 4 nonzero weights
    method = METHODS["srsoup"](num_candidates=2, soup_end_step=1)
    method.setup(torch.tensor(weights, dtype=torch.float64), names)
    rewards = {
        "brightness": CountingReward("brightness", brightness),
        "contrast": CountingReward("contrast", contrast),
    }
    before = backbone.denoiser_evals
    result = sample_group(
        backbone=backbone, method=method, rewards=rewards, prompt=PROMPT, seed=0, num_steps=2, progress=False
    )
    T, K, S, L, M, nz = 2, 2, 1, 3, 2, 4
    evals = T * L + S * M * K + (T - 1 - S) * L * K  # chains + soup anchors' candidates (last step: no eval)
    queries = S * M * K + (T - S) * K * nz
    assert backbone.denoiser_evals - before == int(result.evals.sum()) == evals == method.plan(T).denoiser_evals
    assert int(result.queries.sum()) == queries == sum(r.queries for r in rewards.values())
    assert backbone.latent_shape == LATENTS[name]
    assert result.images.shape == (3, 3, 32, 32)
    assert torch.isfinite(result.images).all() and 0 <= result.images.min() and result.images.max() <= 1


def test_sdxl_conditioning_and_separate_vae(tiny):
    backbone = load("sdxl", tiny)
    cond = backbone.encode_prompt(PROMPT)
    assert cond.hidden.shape == (2, 77, 32)  # CLIP-L and CLIP-G penultimate states side by side
    assert cond.extra["text_embeds"].shape == (2, 16) and cond.extra["time_ids"].shape == (2, 6)
    assert cond.extra["time_ids"].tolist() == [[32, 32, 0, 0, 32, 32]] * 2
    assert not cond.hidden[0].any() and not cond.extra["text_embeds"][0].any()  # force_zeros_for_empty_prompt
    assert cond.hidden[1].any()
    assert backbone.vae.config.force_upcast is False  # the fp16-fix VAE replaced the pipeline's own

    from srsoup.backbones.loading import PipelineFolder
    from srsoup.backbones.sdxl import SDXLBackbone
    from srsoup.hub import Source

    small = SDXLBackbone.from_pretrained(str(tiny / "sdxl"), resolution=16, **CPU)
    assert small.latent_shape == (4, 4, 4) and small.vae.config.force_upcast is True
    # fp16 runs keep a VAE that overflows in fp16 (force_upcast) in fp32, and the fp16-fix VAE in fp16.
    assert PipelineFolder(Source.resolve(str(tiny / "sdxl")), torch.float16).vae().dtype == torch.float32
    fix = PipelineFolder(Source.resolve(str(tiny / "sdxl-vae-fp16-fix")), torch.float16)
    assert fix.vae(None).dtype == torch.float16


def test_flow_conditioning_with_and_without_t5(tiny, tmp_path):
    backbone = load("sd35m", tiny)
    cond = backbone.encode_prompt(PROMPT)
    assert cond.hidden.shape == (2, 77 + 256, 32) and cond.pooled.shape == (2, 32)
    assert cond.hidden[1, 77:].any()  # T5 tokens
    no_t5 = tmp_path / "sd35m_no_t5"
    shutil.copytree(tiny / "sd35m", no_t5)
    index = json.loads((no_t5 / "model_index.json").read_text())
    index["text_encoder_3"] = index["tokenizer_3"] = [None, None]
    (no_t5 / "model_index.json").write_text(json.dumps(index))
    shutil.rmtree(no_t5 / "text_encoder_3")
    shutil.rmtree(no_t5 / "tokenizer_3")
    backbone = load(str(no_t5.relative_to(tmp_path)), tmp_path)
    cond = backbone.encode_prompt(PROMPT)
    assert cond.hidden.shape == (2, 77 + 256, 32) and not cond.hidden[:, 77:].any()
    assert compose("model=sd35m").model.default_soup_end_step == 10


def test_sana_conditioning_schedule_and_cfg_batches(tiny):
    from srsoup.backbones.sana import pipeline_instruction

    backbone = load("sana", tiny)
    assert backbone.scheduler.config.shift == 3.0  # the release's flow_shift (Flow-DPM-Solver's key)
    assert backbone.tokenizer.padding_side == "right" and backbone.vae_scale_factor == 4
    assert backbone.instruction == "\n".join(pipeline_instruction()) and backbone.instruction.startswith("Given")
    cond = backbone.encode_prompt("  A Cat ")
    assert cond.hidden.shape == (2, 300, 16) and cond.mask.shape == (2, 300)
    # uncond "" is <bos> alone; the prompt keeps <bos>, the instruction's last token and "a cat" (5 characters)
    assert cond.mask.sum(dim=1).tolist() == [1, 1 + 1 + 5]
    bare = load("sana", tiny, complex_human_instruction=False, max_sequence_length=12)
    plain = bare.encode_prompt("A Cat")
    assert plain.mask.tolist() == [[1] + [0] * 11, [1] * 6 + [0] * 6]
    torch.testing.assert_close(plain.hidden[0], cond.hidden[0, :12])  # uncond: the same at any length
    assert not torch.allclose(plain.hidden[1, 1:6], cond.hidden[1, 2:7])  # the instruction reaches the prompt

    rows: list[tuple[int, int]] = []
    backbone.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: rows.append((len(args[0]), len(kwargs["encoder_attention_mask"]))),
        with_kwargs=True,
    )
    backbone.set_steps(2)
    x = torch.randn(5, *backbone.latent_shape, generator=torch.Generator().manual_seed(0))
    dist = backbone.step_distribution(x, 0, cond)
    assert dist.mean.shape == x.shape and float(dist.sigma) > 0
    assert rows == [(2, 2)] * 5 and backbone.denoiser_evals == 5  # chunk_size 3: one CFG pair per batch


def test_sana_refuses_sprint_and_bad_lengths_in_one_line(tiny, tmp_path):
    from srsoup.backbones.sana import SanaBackbone

    sprint = tmp_path / "sprint"
    shutil.copytree(tiny / "sana", sprint)
    config = json.loads((sprint / "transformer" / "config.json").read_text())
    (sprint / "transformer" / "config.json").write_text(json.dumps({**config, "guidance_embeds": True}))
    with pytest.raises(SrsoupError) as e:
        SanaBackbone.from_pretrained(str(sprint), init="random", **CPU)
    assert "guidance embedding (Sana-Sprint, SanaSprintPipeline): not supported" in one_line(e)
    with pytest.raises(SrsoupError) as e:
        load("sana", tiny, complex_human_instruction="describe it")
    assert "must be true (SanaPipeline's), false (none) or a list of lines" in one_line(e)
    with pytest.raises(SrsoupError) as e:
        load("sana", tiny, max_sequence_length=0)
    assert one_line(e) == "model.max_sequence_length=0 must be a positive whole number"
    with pytest.raises(SrsoupError) as e:
        load("sana", tiny, resolution=30)
    assert one_line(e) == "model.resolution=30 must be a positive multiple of 4 (DC-AE factor 4 x patch size 1)"


def test_flow_sde_step_matches_design_on_hand_numbers():
    from srsoup.backbones.flow import sde_step

    x, v = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 1.5])
    # σ=0.6 → σ'=0.4, noise 0.8: std² = 0.64·0.6/0.4 = 0.96, μ = x(1 − 0.96·0.2/1.2) − v(1 + 0.96·0.4/1.2)·0.2
    mean, scale = sde_step(x, v, 0.6, 0.4, 0.9, 0.8)
    torch.testing.assert_close(mean, 0.84 * x - 0.264 * v)
    torch.testing.assert_close(mean, torch.tensor([0.708, -2.076]))
    assert scale == pytest.approx(math.sqrt(0.96) * math.sqrt(0.2))
    # σ=1 uses σ̂ = σ_1 = 0.9: std² = 0.64/0.1 = 6.4, μ = x(1 − 6.4·0.1/2) − 0.1·v, scale = √6.4·√0.1 = 0.8
    mean, scale = sde_step(x, v, 1.0, 0.9, 0.9, 0.8)
    torch.testing.assert_close(mean, 0.68 * x - 0.1 * v)
    assert scale == pytest.approx(0.8)


def test_flow_backbone_uses_scheduler_sigmas_and_counts_evals(tiny, monkeypatch):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from srsoup.backbones.flow import sde_step

    backbone = load("sd35m", tiny)
    steps = backbone.set_steps(3)
    ref = FlowMatchEulerDiscreteScheduler(shift=3.0)
    ref.set_timesteps(3)
    assert backbone.sigmas == [float(s) for s in ref.sigmas] and steps == backbone.sigmas[:-1]
    assert backbone.sigmas[0] == 1.0 and backbone.sigmas[-1] == 0.0
    v_const = torch.full((2, 4, 8, 8), 0.3)
    calls = []

    def fake_velocity(x, t, cond):
        calls.append(t)
        backbone.denoiser_evals += len(x)
        return v_const[: len(x)]

    monkeypatch.setattr(backbone, "_velocity", fake_velocity)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    s = backbone.sigmas
    for step in range(3):
        dist = backbone.step_distribution(x, step, None)
        mean, scale = sde_step(x, v_const, s[step], s[step + 1], s[1], 0.8)
        torch.testing.assert_close(dist.mean, mean)
        assert float(dist.sigma) == pytest.approx(scale)
        assert calls[-1] == backbone.timesteps[step]
    x_next = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(backbone.candidate_x0(x_next, 0, None), x_next - s[1] * v_const)
    evals = backbone.denoiser_evals
    assert torch.equal(backbone.candidate_x0(x_next, 2, None), x_next) and backbone.denoiser_evals == evals


# --- rewards -------------------------------------------------------------------------------------------------
def hub_reward(name: str, tiny: Path):
    from srsoup.rewards.aesthetic import AestheticScore
    from srsoup.rewards.clipscore import CLIPScore
    from srsoup.rewards.hpsv2 import HPSv2
    from srsoup.rewards.imagereward import ImageRewardScore
    from srsoup.rewards.pickscore import PickScore

    cls = {
        "aesthetic": AestheticScore,
        "pickscore": PickScore,
        "clipscore": CLIPScore,
        "hpsv2": HPSv2,
        "imagereward": ImageRewardScore,
    }[name]
    return cls(pretrained=str(tiny / name), device="cpu", dtype=torch.float32)


@pytest.mark.parametrize("name", ["aesthetic", "pickscore", "clipscore", "hpsv2", "imagereward"])
def test_hub_reward_loads_offline_and_scores(tiny, name):
    reward = hub_reward(name, tiny)
    images = torch.rand(5, 3, 40, 48, generator=torch.Generator().manual_seed(1))  # not square, not 32 px
    scores = reward(images, [PROMPT] * 4 + ["a dog"])
    assert scores.shape == (5,) and scores.dtype == torch.float32 and torch.isfinite(scores).all()
    assert len(set(scores.tolist())) > 1  # depends on the image
    torch.testing.assert_close(reward(images[:2], [PROMPT] * 2), scores[:2])  # batch-independent


def test_aesthetic_mlp_keys_and_file(tiny):
    from srsoup.rewards.aesthetic import MLP_FILENAME, MLP_KEYS, AestheticMLP

    assert sorted(AestheticMLP().state_dict()) == sorted(MLP_KEYS)
    assert MLP_KEYS == [f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")]
    state = torch.load(tiny / "aesthetic" / MLP_FILENAME, weights_only=True)
    assert sorted(state) == sorted(MLP_KEYS) and state["layers.0.weight"].shape == (1024, 768)


def test_pickscore_and_clipscore_are_scaled_cosines(tiny):
    # The tiny PickScore and CLIPScore folders hold the same random CLIP (same seed): one cosine, two scales.
    pick, clip = hub_reward("pickscore", tiny), hub_reward("clipscore", tiny)
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    cos = pick.scorer.cosine(images, [PROMPT] * 6)
    torch.testing.assert_close(pick(images, [PROMPT] * 6), pick.scale * cos)
    assert pick.scale == pytest.approx(math.exp(pick.scorer.model.logit_scale.item()))
    torch.testing.assert_close(clip(images, [PROMPT] * 6), (100 * cos).clamp(min=0))


def test_hps_checkpoint_conversion_round_trips_and_rejects_other_layouts(tiny):
    from srsoup.rewards.hpsv2 import hf_to_open_clip_state_dict, open_clip_to_hf_state_dict

    state = torch.load(tiny / "hpsv2" / "HPS_v2.1_compressed.pt", weights_only=True)["state_dict"]
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" in state and "text_projection" in state
    hf = open_clip_to_hf_state_dict({f"module.{k}": v for k, v in state.items()})
    assert "text_model.encoder.layers.0.self_attn.q_proj.weight" in hf
    back = hf_to_open_clip_state_dict(hf)
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
    with pytest.raises(ValueError, match="unexpected"):
        open_clip_to_hf_state_dict({**state, "visual.head.weight": torch.zeros(1)})


def test_hps_from_an_already_converted_folder_scores_the_same(tiny, tmp_path):
    from srsoup.rewards.hpsv2 import HPSv2

    original = hub_reward("hpsv2", tiny)
    original.scorer.model.save_pretrained(tmp_path)
    original.scorer.tokenizer.save_pretrained(tmp_path)
    converted = HPSv2(pretrained=str(tmp_path))
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(converted(images, [PROMPT] * 3), original(images, [PROMPT] * 3))


def image_reward_reference(state: dict, med: dict, heads: int, pixels, input_ids, attention_mask):
    """ImageReward's score from its raw state dict, in plain torch after the original BLIP code: a timm ViT
    (pre-norm blocks, fused qkv, exact GELU, LayerNorm eps 1e-6, all tokens after the final norm), BLIP's BERT
    (post-LN; self-attention with BLIP's additive -10000 padding mask, cross-attention to every image token, FFN),
    the 5 linear layers of the MLP on [CLS], then the standardization."""
    F = torch.nn.functional

    def linear(x, name):
        return F.linear(x, state[f"{name}.weight"], state[f"{name}.bias"])

    def norm(x, name, eps):
        return F.layer_norm(x, x.shape[-1:], state[f"{name}.weight"], state[f"{name}.bias"], eps)

    def attend(q, k, v, n_heads, mask=None):
        b, n, d = q.shape
        q, k, v = (t.reshape(b, -1, n_heads, d // n_heads).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // n_heads)
        if mask is not None:
            scores = scores + mask
        return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)

    v = "blip.visual_encoder."
    weight = state[v + "patch_embed.proj.weight"]
    x = F.conv2d(pixels, weight, state[v + "patch_embed.proj.bias"], stride=weight.shape[-1])
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([state[v + "cls_token"].expand(len(x), -1, -1), x], dim=1) + state[v + "pos_embed"]
    blocks = {int(k.split(".")[3]) for k in state if k.startswith(v + "blocks.")}
    for i in sorted(blocks):
        b = f"{v}blocks.{i}."
        q, k, val = linear(norm(x, b + "norm1", 1e-6), b + "attn.qkv").chunk(3, dim=-1)
        x = x + linear(attend(q, k, val, heads), b + "attn.proj")
        x = x + linear(F.gelu(linear(norm(x, b + "norm2", 1e-6), b + "mlp.fc1")), b + "mlp.fc2")
    image = norm(x, v + "norm", 1e-6)

    e, eps, n_heads = "blip.text_encoder.", med["layer_norm_eps"], med["num_attention_heads"]
    positions = torch.arange(input_ids.shape[1])
    h = state[e + "embeddings.word_embeddings.weight"][input_ids]
    h = norm(h + state[e + "embeddings.position_embeddings.weight"][positions], e + "embeddings.LayerNorm", eps)
    pad_mask = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0
    for i in range(med["num_hidden_layers"]):
        b = f"{e}encoder.layer.{i}."
        for attn, kv, mask in (("attention", h, pad_mask), ("crossattention", image, None)):
            s = f"{b}{attn}.self."
            out = attend(linear(h, s + "query"), linear(kv, s + "key"), linear(kv, s + "value"), n_heads, mask)
            h = norm(linear(out, f"{b}{attn}.output.dense") + h, f"{b}{attn}.output.LayerNorm", eps)
        ffn = linear(F.gelu(linear(h, b + "intermediate.dense")), b + "output.dense")
        h = norm(ffn + h, b + "output.LayerNorm", eps)
    r = h[:, 0]
    for i in (0, 2, 4, 6, 7):  # dropouts between, no activations
        r = linear(r, f"mlp.layers.{i}")
    return (r.squeeze(1) - 0.16717362830052426) / 1.0333394966054072


def test_imagereward_conversion_matches_a_forward_from_the_original_keys(tiny):
    from srsoup.rewards.clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    folder = tiny / "imagereward"
    reward = hub_reward("imagereward", tiny)
    state = torch.load(folder / "ImageReward.pt", weights_only=True)
    med = json.loads((folder / "med_config.json").read_text())
    heads = json.loads((folder / "vision_config.json").read_text())["num_attention_heads"]
    assert "blip.vision_proj.weight" in state and "blip.text_encoder.embeddings.position_ids" in state  # tolerated
    # LayerNorm eps moves the scores by less than the tolerance below: BLIP's ViT uses 1e-6, its BERT med_config's.
    assert reward.vision.config.layer_norm_eps == 1e-6
    assert reward.text.config.layer_norm_eps == med["layer_norm_eps"] == 1e-12
    # BLIP's tokenizer: bert-base-uncased's + [DEC] (bos) and [ENC], prompts padded to 35 tokens.
    tok = reward.tokenizer
    assert len(tok) == med["vocab_size"] and tok.bos_token == "[DEC]" and "[ENC]" in tok.get_vocab()
    prompts = ["a photo of a cat", "A Dog!", "a photo of a cat", "x" * 60]  # 14, 7, 14, 35 tokens (truncated)
    enc = tok(prompts, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    assert enc.input_ids.shape == (4, 35) and enc.attention_mask.sum(1).tolist() == [14, 7, 14, 35]
    assert enc.input_ids[:, 0].tolist() == [tok.cls_token_id] * 4
    # 32 px images: the model's input size, so preprocessing is only the OpenAI mean/std normalization.
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    pixels = (images - torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1)) / torch.tensor(OPENAI_CLIP_STD).view(3, 1, 1)
    ref = image_reward_reference(state, med, heads, pixels, enc.input_ids, enc.attention_mask)
    scores = reward(images, prompts)
    torch.testing.assert_close(scores, ref, atol=1e-5, rtol=1e-5)
    assert scores.std() > 0.1 and (scores[0] - scores[2]).abs() > 1e-3  # depends on the image, not only the prompt
    torch.testing.assert_close(reward(images.flip(0), prompts[::-1]), scores.flip(0))  # batch order is kept


def test_imagereward_checkpoint_keys_are_checked_in_one_line(tiny, tmp_path):
    from srsoup.rewards.imagereward import ImageRewardScore

    folder = tmp_path / "ir"
    shutil.copytree(tiny / "imagereward", folder)
    state = torch.load(folder / "ImageReward.pt", weights_only=True)
    for change, words in (
        ({"blip.itm_head.weight": torch.zeros(2, 16)}, "unexpected ['blip.itm_head.weight']"),
        ({"blip.visual_encoder.blocks.0.attn.relative_bias": torch.zeros(1)}, "unexpected"),
        ({"blip.text_encoder.encoder.layer.0.attention.self.query_extra.weight": torch.zeros(1)}, "unexpected"),
    ):
        torch.save({**state, **change}, folder / "ImageReward.pt")
        with pytest.raises(SrsoupError) as e:
            ImageRewardScore(pretrained=str(folder))
        assert words in one_line(e)
    for dropped in (
        "blip.visual_encoder.blocks.1.norm2.bias",
        "blip.text_encoder.encoder.layer.1.output.dense.weight",
    ):
        torch.save({k: v for k, v in state.items() if k != dropped}, folder / "ImageReward.pt")
        with pytest.raises(SrsoupError) as e:
            ImageRewardScore(pretrained=str(folder))
        assert "missing" in one_line(e) and dropped.split(".", 2)[-1] in one_line(e)
    (folder / "ImageReward.pt").unlink()
    with pytest.raises(SrsoupError) as e:
        ImageRewardScore(pretrained=str(folder))
    assert one_line(e) == f"reward 'imagereward': {folder / 'ImageReward.pt'} is missing"


def test_clip_preprocess_matches_pil_resize_and_crop():
    import numpy as np
    from PIL import Image

    from srsoup.rewards.clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ClipImagePreprocess

    g = torch.Generator().manual_seed(3)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 8, generator=g), size=(60, 80), mode="bilinear")
    ours = ClipImagePreprocess(32)(smooth, torch.device("cpu"), torch.float32)
    pil = Image.fromarray((smooth[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    pil = pil.resize((43, 32), Image.BICUBIC)  # short side 32 → 42.67 rounds to 43
    arr = torch.from_numpy(np.array(pil)).permute(2, 0, 1).float() / 255
    left = (43 - 32) // 2
    ref = (arr[:, :, left : left + 32] - torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1)) / torch.tensor(
        OPENAI_CLIP_STD
    ).view(3, 1, 1)
    assert ours.shape == (1, 3, 32, 32)
    assert (ours[0] - ref).abs().mean() < 0.03  # PIL's 8-bit rounding and kernel details aside
    square = torch.rand(2, 3, 50, 50, generator=g)
    crop = ClipImagePreprocess(32, mode="crop")(square, torch.device("cpu"), torch.float32)
    pad = ClipImagePreprocess(32, mode="pad")(square, torch.device("cpu"), torch.float32)
    assert torch.equal(crop, pad)


# --- one-line errors -----------------------------------------------------------------------------------------
def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_missing_hub_rewards_say_how_to_get_them():
    from srsoup.rewards.aesthetic import AestheticScore
    from srsoup.rewards.clipscore import CLIPScore
    from srsoup.rewards.hpsv2 import HPSv2
    from srsoup.rewards.imagereward import ImageRewardScore
    from srsoup.rewards.pickscore import PickScore

    with pytest.raises(SrsoupError) as e:
        CLIPScore(pretrained="srsoup-test/missing-clip", revision="0123abc")
    msg = one_line(e)
    assert msg.startswith("reward 'clipscore': srsoup-test/missing-clip is not available locally")
    assert "`huggingface-cli download srsoup-test/missing-clip --revision 0123abc`" in msg
    assert "rewards.clipscore.pretrained=<folder>" in msg
    with pytest.raises(SrsoupError) as e:
        AestheticScore(clip="srsoup-test/missing-clip", mlp_repo="srsoup-test/missing-mlp")
    msg = one_line(e)
    assert msg.startswith("reward 'aesthetic': srsoup-test/missing-mlp aesthetic-model.pth is not available")
    assert "huggingface-cli download srsoup-test/missing-mlp aesthetic-model.pth" in msg
    with pytest.raises(SrsoupError) as e:
        PickScore(pretrained="srsoup-test/missing-pick")
    assert "reward 'pickscore'" in one_line(e)
    with pytest.raises(SrsoupError) as e:
        HPSv2(repo="srsoup-test/missing-hps")
    assert "`huggingface-cli download srsoup-test/missing-hps HPS_v2.1_compressed.pt`" in one_line(e)
    with pytest.raises(SrsoupError) as e:
        ImageRewardScore(pretrained="srsoup-test/missing-ir", revision="0123abc")
    msg = one_line(e)
    assert msg.startswith("reward 'imagereward': srsoup-test/missing-ir ImageReward.pt med_config.json is not")
    assert (
        "`huggingface-cli download srsoup-test/missing-ir ImageReward.pt med_config.json --revision 0123abc`"
        in msg
    )
    with pytest.raises(SrsoupError, match=r"reward 'aesthetic': '/no/such/folder' does not exist"):
        AestheticScore(pretrained="/no/such/folder")


def test_incomplete_local_reward_folder_is_one_line(tiny, tmp_path):
    from srsoup.rewards.aesthetic import AestheticScore

    shutil.copytree(tiny / "aesthetic" / "clip", tmp_path / "clip")
    with pytest.raises(SrsoupError) as e:
        AestheticScore(pretrained=str(tmp_path))
    assert "sac+logos+ava1-l14-linearMSE.pth is missing" in one_line(e)


def test_missing_hub_backbones_say_how_to_get_them():
    from srsoup.backbones.sana import SanaBackbone
    from srsoup.backbones.sd3 import SD3Backbone
    from srsoup.backbones.sdxl import SDXLBackbone

    for cls in (SDXLBackbone, SD3Backbone, SanaBackbone):
        with pytest.raises(SrsoupError) as e:
            cls.from_pretrained("srsoup-test/missing-model", revision="abc", **CPU)
        assert "`huggingface-cli download srsoup-test/missing-model --revision abc`" in one_line(e)


# --- configs and `run` end to end ----------------------------------------------------------------------------
BASE = [
    "sampler.steps=2",
    "guidance.num_candidates=2",
    "progress=false",
    "device=cpu",
    f"prompts.texts=[{PROMPT}]",
]


def read_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "rewards.csv") as f:
        return list(csv.DictReader(f))


def test_run_sd15_end_to_end(tiny, tmp_path):
    cfg = compose("model=sd15", f"model.pretrained={tiny / 'sd15'}", "eval_rewards=none", *BASE)
    run_dir = runner.run(cfg, tmp_path / "run")
    rows = read_rows(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(rows) == 6 and summary["status"] == "complete"
    # T=2, K=2, soup window covers both steps: queries S·M·K = 8, evals T·L + (T−1)·M·K = 16.
    assert summary["reward_queries"] == 8 and summary["denoiser_evals"] == 16


def test_run_aes_pick_with_paper_eval_rewards_end_to_end(tiny, tmp_path):
    cfg = compose(
        "model=sd15",
        f"model.pretrained={tiny / 'sd15'}",
        "rewards=aes_pick",
        "eval_rewards=paper",
        f"rewards.aesthetic.pretrained={tiny / 'aesthetic'}",
        f"rewards.pickscore.pretrained={tiny / 'pickscore'}",
        f"eval_rewards.hpsv2.pretrained={tiny / 'hpsv2'}",
        f"eval_rewards.clipscore.pretrained={tiny / 'clipscore'}",
        f"eval_rewards.imagereward.pretrained={tiny / 'imagereward'}",
        *BASE,
    )
    run_dir = runner.run(cfg, tmp_path / "run")
    rows = read_rows(run_dir)
    assert len(rows) == 6
    cols = ["r_aesthetic", "r_pickscore", "r_jpeg_compressibility", "r_hpsv2", "r_clipscore", "r_imagereward"]
    assert [c for c in rows[0] if c.startswith("r_")] == cols
    assert all(math.isfinite(float(r[c])) for r in rows for c in cols)
    assert json.loads((run_dir / "summary.json").read_text())["reward_queries_by_reward"] == {
        "aesthetic": 4,
        "pickscore": 4,
    }


EXPERIMENTS = {  # name: (model, rewards, per-group reward queries, denoiser evals) as the yaml comments state
    "sd15_aes_compress": ("sd15", ["aesthetic", "jpeg_compressibility"], 10200, 6720),
    "sd15_aes_hps": ("sd15", ["aesthetic", "hpsv2"], 10200, 6720),
    "sd15_aes_pick": ("sd15", ["aesthetic", "pickscore"], 10200, 6720),
    "sd15_aes_hps_pick": ("sd15", ["aesthetic", "hpsv2", "pickscore"], 31500, 13760),
    "sdxl_aes_hps": ("sdxl", ["aesthetic", "hpsv2"], 10200, 6720),
    "sd35m_aes_hps": ("sd35m", ["aesthetic", "hpsv2"], 12600, 7920),
}


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_experiments_compose_and_plan_as_their_cost_comments_say(name, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of a cat\n")
    spec = runner.build_spec(compose(f"experiment={name}", f"prompts.path={prompts}", "device=cpu", "dtype=fp32"))
    model, rewards, queries, evals = EXPERIMENTS[name]
    assert spec.model["name"] == model and spec.reward_names == rewards
    assert spec.steps == 50 and spec.guidance["num_candidates"] == 30 and spec.method == "srsoup"
    assert spec.guidance["soup_end_step"] == (10 if model == "sd35m" else 20)
    assert (spec.plan.reward_queries, spec.plan.denoiser_evals) == (queries, evals)
    text = (ROOT / "srsoup/conf/experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_") and f"{queries:,}" in text and f"{evals:,}" in text
    assert set(spec.eval_rewards) | set(rewards) >= {"aesthetic", "hpsv2", "clipscore", "pickscore", "imagereward"}
