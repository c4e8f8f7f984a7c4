"""Write random-weight tiny copies of every hub backbone and hub reward, each in its release's own file layout.

    python -m srsoup.testing.checkpoints OUT

writes OUT/sd15, OUT/sdxl, OUT/sd35m, OUT/sd35l, OUT/flux_dev, OUT/flux_schnell, OUT/sana (diffusers pipeline
folders with ``model_index.json``: 32 px images from 8x8 latents, a few channels; FLUX's default resolution would
be 512 px here, so pass ``model.resolution=32``), OUT/sdxl-vae-fp16-fix (a VAE at the repo root, like
madebyollin/sdxl-vae-fp16-fix) and OUT/aesthetic, OUT/pickscore, OUT/hpsv2, OUT/clipscore, OUT/imagereward
(the layouts documented in srsoup/conf/reward/*.yaml), so the real loading code runs end to end offline, e.g.

    srsoup run model=sd15 model.pretrained=OUT/sd15
    srsoup run model=sdxl model.pretrained=OUT/sdxl model.vae=OUT/sdxl-vae-fp16-fix
    srsoup run model=sd35m model.pretrained=OUT/sd35m
    srsoup run model=sana model.pretrained=OUT/sana
    srsoup run model=flux_dev model.pretrained=OUT/flux_dev model.resolution=32
    srsoup run model=sd15 model.pretrained=OUT/sd15 rewards=aes_pick
        rewards.aesthetic.pretrained=OUT/aesthetic rewards.pickscore.pretrained=OUT/pickscore   (one line)

Nothing is downloaded: tokenizers are built here (a byte-level CLIP BPE with every byte but no merges, a tiny
unigram T5, a character-level BERT WordPiece, a character-level Gemma BPE with byte fallback). The weights mean
nothing; the copies exist to test loading, shapes, counts and plumbing. Seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from srsoup.standins import bert_tokenizer, clip_tokenizer, gemma_tokenizer, t5_tokenizer

# One tiny CLIP text tower for every CLIP slot (SD text encoders and reward CLIPs): hidden 16, one layer.
CLIP_TEXT = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    max_position_embeddings=77,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
)
# Reward CLIP image tower: 32 px input, 8 px patches.
CLIP_VISION = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    image_size=32,
    patch_size=8,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
)
LATENT = 8  # latent side; the VAEs below upsample 4x, so images are 32 px
VAE = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(8, 16, 16),
    layers_per_block=1,
    norm_num_groups=8,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    sample_size=32,
)


def clip_text_config(tok, **overrides):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **{**CLIP_TEXT, **overrides},
    )


def clip_model(tok, projection_dim: int = 16):
    """A tiny transformers CLIPModel (both towers) as the reward models use."""
    from transformers import CLIPConfig, CLIPModel

    text = clip_text_config(tok).to_dict()
    config = CLIPConfig(text_config=text, vision_config=dict(CLIP_VISION), projection_dim=projection_dim)
    return CLIPModel(config).eval()


def save_clip_folder(out: Path, model, tok) -> Path:
    """A transformers CLIP folder: config + safetensors + tokenizer + preprocessor_config.json."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    size = model.config.vision_config.image_size
    (out / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "CLIPImageProcessor",
                "do_resize": True,
                "size": {"shortest_edge": size},
                "resample": 3,
                "do_center_crop": True,
                "crop_size": {"height": size, "width": size},
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_normalize": True,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
            },
            indent=2,
        )
        + "\n"
    )
    return out


# ImageReward's BLIP: a ViT (32 px, 8 px patches) and a BERT text encoder with cross-attention, two layers each
# (so layer indices past 0 are exercised), 2 heads of width 8 (hence OUT/imagereward/vision_config.json).
BLIP_VIT = dict(width=16, depth=2, heads=2, patch=8, image_size=32, mlp_ratio=4)
BLIP_TEXT = dict(
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=40,  # >= ImageReward's 35 prompt tokens
)


def vae(**overrides):
    from diffusers import AutoencoderKL

    return AutoencoderKL(**{**VAE, "latent_channels": 4, **overrides})


def flow_vae(scaling_factor: float, shift_factor: float):
    """A VAE as SD3's and FLUX.1's: no quant convs, a scaling and a shift factor (4 latent channels here)."""
    return vae(
        latent_channels=4,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def t5_encoder(tok, d_model: int):
    """A one-layer T5 encoder with T5 v1.1's gated GELU over ``tok``'s vocabulary (SD3's and FLUX.1's T5 slot)."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(tok),
        d_model=d_model,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
    )
    return T5EncoderModel(config)


def make_sd15(out: Path) -> Path:
    """StableDiffusionPipeline layout: unet, vae, text_encoder (CLIPTextModel), tokenizer, PNDM scheduler."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    tok = clip_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=LATENT,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=8,
    )
    # SD1.5's own scheduler config (PNDM); the backbone reads it into a DDIMScheduler.
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae(),
        text_encoder=CLIPTextModel(clip_text_config(tok)),
        tokenizer=tok,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def make_sdxl(out: Path) -> Path:
    """StableDiffusionXLPipeline layout: two text encoders (the second with projection), text_time UNet."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tok, tok_2 = clip_tokenizer(), clip_tokenizer(pad_token="!")  # SDXL's second tokenizer pads with "!"
    proj, time_dim = 16, 8
    unet = UNet2DConditionModel(
        sample_size=LATENT,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=2 * CLIP_TEXT["hidden_size"],
        attention_head_dim=(2, 4),
        norm_num_groups=8,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + proj,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae(scaling_factor=0.13025, force_upcast=True),
        text_encoder=CLIPTextModel(clip_text_config(tok)),
        text_encoder_2=CLIPTextModelWithProjection(clip_text_config(tok_2, projection_dim=proj)),
        tokenizer=tok,
        tokenizer_2=tok_2,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    # The fp16-fix VAE is a separate repo with the VAE at its root (madebyollin/sdxl-vae-fp16-fix's layout).
    vae(scaling_factor=0.13025, force_upcast=False).save_pretrained(out.parent / "sdxl-vae-fp16-fix")
    return out


def make_sd3(out: Path, **transformer) -> Path:
    """StableDiffusion3Pipeline layout: MMDiT transformer (``transformer``: its structural keys), CLIP-L and CLIP-G
    (projected), T5, the release's flow scheduler (shift 3.0)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    tok, tok_2, tok_3 = clip_tokenizer(), clip_tokenizer(pad_token="!"), t5_tokenizer()
    proj, t5_dim = 16, 2 * CLIP_TEXT["hidden_size"]
    transformer = SD3Transformer2DModel(
        sample_size=LATENT,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        attention_head_dim=8,
        joint_attention_dim=t5_dim,
        pooled_projection_dim=2 * proj,
        **transformer,
    )
    t5 = t5_encoder(tok_3, t5_dim)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=flow_vae(scaling_factor=1.5305, shift_factor=0.0609),
        text_encoder=CLIPTextModelWithProjection(clip_text_config(tok, projection_dim=proj)),
        tokenizer=tok,
        text_encoder_2=CLIPTextModelWithProjection(clip_text_config(tok_2, projection_dim=proj)),
        tokenizer_2=tok_2,
        text_encoder_3=t5,
        tokenizer_3=tok_3,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def make_sd35m(out: Path) -> Path:
    """SD3.5-medium's MMDiT-X: dual attention in the first layers, QK RMS norm, a position table twice the
    latent grid (384 for 1024 px latents of 128 / patch 2 = 64)."""
    return make_sd3(
        out,
        num_layers=2,
        num_attention_heads=2,
        caption_projection_dim=16,
        pos_embed_max_size=8,
        dual_attention_layers=(0,),
        qk_norm="rms_norm",
    )


def make_sd35l(out: Path) -> Path:
    """SD3.5-large's MMDiT: as many heads as blocks (38 x 38 in the release, 3 x 3 here), QK RMS norm, no dual
    attention layers, a position table 1.5 times the latent grid (192 for 64; 6 for this copy's 4)."""
    return make_sd3(
        out,
        num_layers=3,
        num_attention_heads=3,
        caption_projection_dim=3 * 8,
        pos_embed_max_size=6,
        qk_norm="rms_norm",
    )


def make_flux(out: Path, guidance_embeds: bool = True) -> Path:
    """FluxPipeline layout: FLUX transformer (dev's guidance embedding, or none: schnell), CLIP-L (pooled only),
    T5, a VAE with FLUX's scaling and shift factors (4 latent channels here, 16 in the release), the release's
    scheduler config."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    tok, tok_2 = clip_tokenizer(), t5_tokenizer()
    tok_2.model_max_length = 512
    t5_dim = 2 * CLIP_TEXT["hidden_size"]
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * 4,  # 2x2 patches of the VAE's 4 latent channels, packed
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=t5_dim,
        pooled_projection_dim=CLIP_TEXT["hidden_size"],
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 4, 8),  # sums to attention_head_dim
    )
    t5 = t5_encoder(tok_2, t5_dim)
    # The releases' scheduler configs: dev shifts with the resolution, schnell does not shift at all.
    shift = dict(shift=3.0, use_dynamic_shifting=True) if guidance_embeds else dict(shift=1.0)
    pipe = FluxPipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(
            base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15, **shift
        ),
        vae=flow_vae(scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=CLIPTextModel(clip_text_config(tok)),
        tokenizer=tok,
        text_encoder_2=t5,
        tokenizer_2=tok_2,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def make_flux_schnell(out: Path) -> Path:
    """FLUX.1-schnell's layout: as ``make_flux`` without the guidance embedding."""
    return make_flux(out, guidance_embeds=False)


def make_sana(out: Path) -> Path:
    """SanaPipeline layout: a linear-attention DiT (SanaTransformer2DModel), Gemma-2 (``Gemma2Model``, two
    layers: one sliding-window, one global, as Gemma-2 alternates them) with a Gemma tokenizer stand-in, a DC-AE
    (``AutoencoderDC``: residual blocks then EfficientViT blocks, RMS norm, interpolating upsampler, 4x here and
    32x in the release) and the release's scheduler config (Flow-DPM-Solver: DPMSolverMultistep over flow sigmas
    with ``flow_shift`` 3.0)."""
    from diffusers import DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    tok = gemma_tokenizer()
    width, latent_channels = 16, 8
    gemma = Gemma2Config(
        vocab_size=len(tok),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        query_pre_attn_scalar=8,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    transformer = SanaTransformer2DModel(
        in_channels=latent_channels,
        out_channels=latent_channels,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=2,
        num_cross_attention_heads=2,
        cross_attention_head_dim=8,
        cross_attention_dim=width,  # = heads x head dim, as 2240 = 70 x 32 in the release
        caption_channels=width,  # Gemma's hidden size
        sample_size=LATENT,
        patch_size=1,
    )
    dc_ae = tiny_dc_ae(latent_channels)
    scheduler = DPMSolverMultistepScheduler(
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="linear",
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=3.0,
        final_sigmas_type="zero",
        lower_order_final=True,
    )
    pipe = SanaPipeline(
        tokenizer=tok, text_encoder=Gemma2Model(gemma), vae=dc_ae, transformer=transformer, scheduler=scheduler
    )
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def tiny_dc_ae(latent_channels: int):
    """A DC-AE as Sana's (residual blocks, then EfficientViT blocks; RMS norm; interpolating upsampler), 4x."""
    from diffusers import AutoencoderDC

    blocks = ("ResBlock", "ResBlock", "EfficientViTBlock")
    return AutoencoderDC(
        in_channels=3,
        latent_channels=latent_channels,
        attention_head_dim=8,
        encoder_block_types=blocks,
        decoder_block_types=blocks,
        encoder_block_out_channels=(8, 16, 16),
        decoder_block_out_channels=(8, 16, 16),
        encoder_layers_per_block=(1, 1, 1),
        decoder_layers_per_block=(1, 1, 1),
        encoder_qkv_multiscales=((), (), (5,)),
        decoder_qkv_multiscales=((), (), (5,)),
        upsample_block_type="interpolate",
        downsample_block_type="Conv",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    )


def make_aesthetic(out: Path) -> Path:
    """``clip/`` (a CLIPModel with ViT-L/14's 768-d projection) + the MLP file (conf/reward/aesthetic.yaml)."""
    import torch

    from srsoup.rewards.aesthetic import MLP_FILENAME, AestheticMLP

    save_clip_folder(out / "clip", clip_model(clip_tokenizer(), projection_dim=768), clip_tokenizer())
    torch.save(AestheticMLP().state_dict(), out / MLP_FILENAME)
    return out


def make_clip_reward(out: Path) -> Path:
    """A transformers CLIP folder with tokenizer (PickScore_v1's and openai/clip-vit-large-patch14's layout)."""
    tok = clip_tokenizer()
    return save_clip_folder(out, clip_model(tok), tok)


def make_hpsv2(out: Path) -> Path:
    """The original HPS checkpoint layout: an open_clip state dict in ``{"state_dict": ...}`` + its architecture
    (``open_clip_config.json``, open_clip's own format) + ``tokenizer/``, as conf/reward/hpsv2.yaml says."""
    import torch

    from srsoup.rewards.hpsv2 import DEFAULT_CHECKPOINT, hf_to_open_clip_state_dict

    tok = clip_tokenizer(pad_token="!")
    model = clip_model(tok)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"epoch": 1, "state_dict": hf_to_open_clip_state_dict(model.state_dict())}, out / DEFAULT_CHECKPOINT
    )
    v, t = CLIP_VISION, CLIP_TEXT
    arch = {
        "embed_dim": model.config.projection_dim,
        "vision_cfg": {
            "image_size": v["image_size"],
            "layers": v["num_hidden_layers"],
            "width": v["hidden_size"],
            "head_width": v["hidden_size"] // v["num_attention_heads"],
            "patch_size": v["patch_size"],
            "mlp_ratio": v["intermediate_size"] / v["hidden_size"],
        },
        "text_cfg": {
            "context_length": t["max_position_embeddings"],
            "vocab_size": len(tok),
            "width": t["hidden_size"],
            "heads": t["num_attention_heads"],
            "layers": t["num_hidden_layers"],
            "mlp_ratio": t["intermediate_size"] / t["hidden_size"],
        },
    }
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": arch}, indent=2) + "\n")
    tok.save_pretrained(out / "tokenizer")
    return out


def make_imagereward(out: Path) -> Path:
    """The THUDM/ImageReward layout: ``ImageReward.pt`` (the ImageReward module's state dict, original key names:
    timm ViT under ``blip.visual_encoder``, BLIP's BERT under ``blip.text_encoder``, the unused contrastive
    projections, ``mlp.layers``) + ``med_config.json`` (BLIP's format) + ``vision_config.json`` (srsoup's, the
    head count) + ``tokenizer/``, as conf/reward/imagereward.yaml says.

    Every tensor is random, LayerNorm weights included (around 1), so a key mapped to the wrong place changes
    the score; the test of the conversion compares against a forward written from these names.
    """
    import torch

    from srsoup.rewards.imagereward import DEFAULT_CHECKPOINT, MED_CONFIG, VISION_CONFIG

    tok = bert_tokenizer()
    vocab = len(tok) + 2  # + BLIP's [DEC] and [ENC], as med_config.json's 30524 = 30522 + 2
    out.mkdir(parents=True, exist_ok=True)
    torch.save(_imagereward_state(vocab), out / DEFAULT_CHECKPOINT)
    med = {
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "model_type": "bert",
        "pad_token_id": tok.pad_token_id,
        "type_vocab_size": 2,
        "vocab_size": vocab,
        "encoder_width": BLIP_VIT["width"],
        "add_cross_attention": True,
        **BLIP_TEXT,
    }
    (out / MED_CONFIG).write_text(json.dumps(med, indent=2) + "\n")
    (out / VISION_CONFIG).write_text(json.dumps({"num_attention_heads": BLIP_VIT["heads"]}, indent=2) + "\n")
    tok.save_pretrained(out / "tokenizer")
    return out


class _RandomState(dict):
    """A state dict filled with random tensors by layer kind (scaled so activations stay around 1)."""

    def linear(self, name: str, n_out: int, n_in: int) -> None:
        import torch

        self[f"{name}.weight"] = torch.randn(n_out, n_in) / n_in**0.5
        self[f"{name}.bias"] = 0.1 * torch.randn(n_out)

    def norm(self, name: str, n: int) -> None:
        import torch

        self[f"{name}.weight"] = 1 + 0.2 * torch.randn(n)
        self[f"{name}.bias"] = 0.1 * torch.randn(n)


def _imagereward_state(vocab: int) -> dict:
    """ImageReward.pt's tensors under their original names: the timm ViT, BLIP's BERT, projections, the MLP."""
    import torch

    from srsoup.rewards.aesthetic import AestheticMLP

    state, w, p = _RandomState(), BLIP_VIT["width"], BLIP_VIT["patch"]
    v, grid = "blip.visual_encoder.", BLIP_VIT["image_size"] // p
    state[v + "cls_token"] = 0.5 * torch.randn(1, 1, w)
    state[v + "pos_embed"] = 0.5 * torch.randn(1, grid * grid + 1, w)
    state[v + "patch_embed.proj.weight"] = torch.randn(w, 3, p, p) / (3 * p * p) ** 0.5
    state[v + "patch_embed.proj.bias"] = 0.1 * torch.randn(w)
    for i in range(BLIP_VIT["depth"]):
        b = f"{v}blocks.{i}."
        state.norm(b + "norm1", w)
        state.linear(b + "attn.qkv", 3 * w, w)
        state.linear(b + "attn.proj", w, w)
        state.norm(b + "norm2", w)
        state.linear(b + "mlp.fc1", BLIP_VIT["mlp_ratio"] * w, w)
        state.linear(b + "mlp.fc2", w, BLIP_VIT["mlp_ratio"] * w)
    state.norm(v + "norm", w)
    _blip_bert_state(state, vocab, w)
    state.linear("blip.vision_proj", 256, w)  # BLIP's contrastive projections: saved, unused by the score
    state.linear("blip.text_proj", 256, BLIP_TEXT["hidden_size"])
    for k, param in AestheticMLP(BLIP_TEXT["hidden_size"]).state_dict().items():
        state[f"mlp.{k}"] = torch.randn_like(param) / param.shape[-1] ** 0.5
    return dict(state)


def _blip_bert_state(state: _RandomState, vocab: int, vision_width: int) -> None:
    """BLIP's image-grounded BERT: embeddings, and per layer self-attention, cross-attention to the ViT, MLP."""
    import torch

    t, e = BLIP_TEXT, "blip.text_encoder."
    h, inner = t["hidden_size"], t["intermediate_size"]
    state[e + "embeddings.word_embeddings.weight"] = torch.randn(vocab, h)
    state[e + "embeddings.position_embeddings.weight"] = torch.randn(t["max_position_embeddings"], h)
    state[e + "embeddings.position_ids"] = torch.arange(t["max_position_embeddings"]).expand(1, -1).clone()
    state.norm(e + "embeddings.LayerNorm", h)
    for i in range(t["num_hidden_layers"]):
        b = f"{e}encoder.layer.{i}."
        for attn, kv_width in (("attention", h), ("crossattention", vision_width)):
            state.linear(f"{b}{attn}.self.query", h, h)
            state.linear(f"{b}{attn}.self.key", h, kv_width)
            state.linear(f"{b}{attn}.self.value", h, kv_width)
            state.linear(f"{b}{attn}.output.dense", h, h)
            state.norm(f"{b}{attn}.output.LayerNorm", h)
        state.linear(b + "intermediate.dense", inner, h)
        state.linear(b + "output.dense", h, inner)
        state.norm(b + "output.LayerNorm", h)


BUILDERS = {
    "sd15": make_sd15,
    "sdxl": make_sdxl,
    "sd35m": make_sd35m,
    "sd35l": make_sd35l,
    "sana": make_sana,
    "flux_dev": make_flux,
    "flux_schnell": make_flux_schnell,
    "aesthetic": make_aesthetic,
    "pickscore": make_clip_reward,
    "clipscore": make_clip_reward,
    "hpsv2": make_hpsv2,
    "imagereward": make_imagereward,
}


def make_all(out: str | Path, only: list[str] | None = None, seed: int = 0) -> dict[str, Path]:
    """Write every tiny copy (or those named in ``only``) under ``out``; returns name → folder."""
    import diffusers.utils.logging as dlog
    import torch
    import transformers.utils.logging as tlog

    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    out = Path(out)
    made = {}
    for name in only or list(BUILDERS):
        torch.manual_seed(seed)
        made[name] = BUILDERS[name](out / name)
    return made


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder (created)")
    parser.add_argument("--only", nargs="*", choices=list(BUILDERS), help="write only these copies")
    args = parser.parse_args(argv)
    for name, path in make_all(args.out, args.only).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
