"""Builders for the embedded model's diffusers/transformers components and its diffusers-layout folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from srsoup.tiny.grammar import SPECIAL_TOKENS, WORDS

MAX_TOKENS = 16

# Pixel-space UNet (DESIGN §3): cross-attention only at 8x8 and 4x4, text pooled into the time embedding.
UNET_CONFIG = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    block_out_channels=(32, 64, 96, 128),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    cross_attention_dim=128,
    attention_head_dim=4,
    norm_num_groups=16,
    addition_embed_type="text",
    addition_embed_type_num_heads=4,
)
TEXT_ENCODER_CONFIG = dict(
    hidden_size=128,
    intermediate_size=512,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=MAX_TOKENS,
)
# Sampling defaults: clip_sample=False is essential in pixel space (DESIGN §3); set_alpha_to_one=False keeps
# a non-zero noise scale at the last step so guidance there still has candidates to compare.
# v-prediction on the linear schedule, sampled with trailing timesteps (the first step at t = 999). At 32x32 in
# pixel space the background colour is decided at the very first steps, where an epsilon-prediction network must
# reproduce the noise's per-image mean to within ~sqrt(alpha_bar) ~ 0.01 to get the colour right: trained with
# epsilon (cosine or linear schedule) it left the background to the noise; with v it reads it from the text.
# The training script rescales these betas to zero terminal SNR (Lin et al. 2024, TRAIN_OVERRIDES); sampling keeps
# the plain linear betas (alpha_bar_999 = 4e-5; the signal scale sqrt(alpha_bar) differs from the rescaled one by
# at most 0.0064 at any t) because DDIM at eta = 1 from alpha_bar = 0 exactly takes the square root of a rounding
# error below zero (NaN) in diffusers.
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_schedule="linear",
    beta_start=0.0001,
    beta_end=0.02,
    clip_sample=False,
    set_alpha_to_one=False,
    timestep_spacing="trailing",
    prediction_type="v_prediction",
)


def build_tokenizer():
    """A word-level PreTrainedTokenizerFast over the grammar's vocabulary: ``[BOS] words [EOS] [PAD]...``."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *WORDS])}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    # "an" reads as "a": the grammar says "a" everywhere, and users write "an orange background".
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(Regex(r"\ban\b"), "a")])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="[BOS]",
        eos_token="[EOS]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        model_max_length=MAX_TOKENS,
    )


def build_text_encoder(tokenizer, **overrides):
    """A small randomly initialised CLIPTextModel sized for the grammar."""
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = {**TEXT_ENCODER_CONFIG, **overrides}
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **cfg,
        )
    )


def build_unet(**overrides):
    """A randomly initialised pixel-space UNet2DConditionModel."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**{**UNET_CONFIG, **overrides})


TRAIN_OVERRIDES = dict(rescale_betas_zero_snr=True)


def build_scheduler(**overrides):
    from diffusers import DDIMScheduler

    return DDIMScheduler(**{**SCHEDULER_CONFIG, **overrides})


def save_pipeline_folder(out: str | Path, unet, text_encoder, tokenizer, scheduler, dtype=torch.float16) -> Path:
    """Write the diffusers layout the backbone loads: ``model_index.json`` plus one subfolder per component."""
    import diffusers
    import transformers

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unet.to(dtype).save_pretrained(out / "unet", safe_serialization=True)
    text_encoder.to(dtype).save_pretrained(out / "text_encoder", safe_serialization=True)
    tokenizer.save_pretrained(out / "tokenizer")
    scheduler.save_pretrained(out / "scheduler")
    index = {
        "_class_name": "SRSoupTinyPipeline",
        "_diffusers_version": diffusers.__version__,
        "_transformers_version": transformers.__version__,
        "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "scheduler": ["diffusers", "DDIMScheduler"],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    unet.float()
    text_encoder.float()
    return out
