"""ImageReward (Xu et al. 2023, "ImageReward: Learning and Evaluating Human Preferences for Text-to-Image
Generation"): a BLIP image-grounded text encoder read at [CLS] by an MLP, standardized (about -2..2).

Design choice: no ``image-reward`` package at run time. It imports torchvision and timm 0.6 and calls transformers
APIs removed in 5.x; and its model is two plain BLIP towers that transformers ships: the ViT (timm names in the
checkpoint) is ``BlipVisionModel`` with the rename rules of transformers' own BLIP conversion script (``blocks`` →
``encoder.layers``, ``attn.proj`` → ``self_attn.projection``, ``norm`` → ``post_layernorm``; the fused ``qkv`` has
the same layout), and BLIP's text encoder (``med.py``, BERT with cross-attention to the image tokens) is
``BlipTextModel`` under its very key names. So ``ImageReward.pt`` is converted key by key at load time into models
built on the meta device; unknown or missing keys are an error. Same reasons as for HPSv2 (hpsv2.py): one code
path, no dependency pinned to old libraries, offline tests on tiny copies, preprocessing in torch on the device.

Score, as ``ImageReward.score`` computes it: image → short side 224 (bicubic, antialiased), centre crop, OpenAI
CLIP mean/std → ViT tokens after the final LayerNorm; prompt → bert-base-uncased WordPiece (plus BLIP's added
``[DEC]``/``[ENC]`` specials), padded/truncated to 35 tokens; text encoder over the prompt with cross-attention to
all image tokens; r = MLP(h_[CLS]) (768→1024→128→64→16→1, no activations, the aesthetic predictor's module
layout); score = (r − 0.16717362830052426) / 1.0333394966054072.

``pretrained`` = a hub repo (THUDM/ImageReward) or a folder laid out as::

    <folder>/ImageReward.pt        the original state dict (name set by ``checkpoint``)
    <folder>/med_config.json       the BERT config of the text encoder (BLIP's format)
    <folder>/vision_config.json    optional (srsoup's, not the release's): ``BlipVisionConfig`` fields for a ViT
                                   whose heads are not 64 wide (the tiny test copies); sizes come from the weights
    <folder>/tokenizer/            optional: a BERT tokenizer; default the ``tokenizer`` hub id

``init: random``: both towers and the MLP at ImageReward's size (BLIP ViT-L/16, BERT-base with cross-attention)
with random weights and a stand-in WordPiece, from this layout without the checkpoint (srsoup.rewards.shipped).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from srsoup.devices import resolve_device
from srsoup.errors import SrsoupError
from srsoup.hub import Source
from srsoup.rewards.aesthetic import MLP_KEYS, AestheticMLP
from srsoup.rewards.clip import ClipImagePreprocess, load_tokenizer
from srsoup.rewards.shipped import shipped_folder

DEFAULT_REPO = "THUDM/ImageReward"
DEFAULT_CHECKPOINT = "ImageReward.pt"
MED_CONFIG = "med_config.json"
VISION_CONFIG = "vision_config.json"
BERT_BASE_UNCASED = "google-bert/bert-base-uncased"  # the hub's canonical id of bert-base-uncased
MAX_LENGTH = 35
SCORE_MEAN = 0.16717362830052426
SCORE_STD = 1.0333394966054072
VIT_HEAD_WIDTH = 64  # BLIP's ViT-B (768/12) and ViT-L (1024/16)
VIT_LAYER_NORM_EPS = 1e-6  # BLIP's ViT; BlipVisionConfig defaults to 1e-5
# BertConfig's defaults, which BLIP's BertConfig.from_json_file fills in for fields med_config.json leaves out.
BERT_DEFAULTS = dict(
    vocab_size=30522,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    hidden_act="gelu",
    max_position_embeddings=512,
    layer_norm_eps=1e-12,
    pad_token_id=0,
)
_VIT = "blip.visual_encoder."
_TEXT = "blip.text_encoder."
_MLP = "mlp."
_VIT_BLOCK = [
    ("norm1", "layer_norm1"),
    ("attn.qkv", "self_attn.qkv"),
    ("attn.proj", "self_attn.projection"),
    ("norm2", "layer_norm2"),
    ("mlp.fc1", "mlp.fc1"),
    ("mlp.fc2", "mlp.fc2"),
]
# In the checkpoint but not in the score: BLIP's contrastive projections, a saved buffer, a pooler (never built).
_UNUSED_PREFIXES = ("blip.vision_proj.", "blip.text_proj.", _TEXT + "pooler.")
_UNUSED_KEYS = {_TEXT + "embeddings.position_ids"}


def _layers(keys, prefix: str) -> int:
    idx = {int(k[len(prefix) :].split(".")[0]) for k in keys if k.startswith(prefix)}
    return max(idx) + 1 if idx else 0


def vit_key_pairs(depth: int) -> list[tuple[str, str]]:
    """(timm key under ``blip.visual_encoder.``, ``BlipVisionModel`` key) for a BLIP ViT of ``depth`` blocks."""
    pairs = [
        ("cls_token", "embeddings.class_embedding"),
        ("pos_embed", "embeddings.position_embedding"),
        ("patch_embed.proj.weight", "embeddings.patch_embedding.weight"),
        ("patch_embed.proj.bias", "embeddings.patch_embedding.bias"),
        ("norm.weight", "post_layernorm.weight"),
        ("norm.bias", "post_layernorm.bias"),
    ]
    for i in range(depth):
        for a, b in _VIT_BLOCK:
            pairs += [(f"blocks.{i}.{a}.{p}", f"encoder.layers.{i}.{b}.{p}") for p in ("weight", "bias")]
    return pairs


def split_image_reward_state(state: dict[str, torch.Tensor]) -> tuple[dict, dict, dict]:
    """An ImageReward state dict → (``BlipVisionModel``, ``BlipTextModel``, MLP) state dicts.

    Vision keys are renamed, text keys keep their names (transformers' BLIP text encoder is BLIP's ``med.py``),
    MLP keys lose ``mlp.``. Unknown keys, and vision or MLP keys that are missing, raise ``ValueError``; the text
    side is checked against the model it loads into.
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}
    vision_in = {k[len(_VIT) :]: v for k, v in state.items() if k.startswith(_VIT)}
    text = {k[len(_TEXT) :]: v for k, v in state.items() if k.startswith(_TEXT) and k not in _UNUSED_KEYS}
    text = {k: v for k, v in text.items() if not (_TEXT + k).startswith(_UNUSED_PREFIXES)}
    mlp = {k[len(_MLP) :]: v for k, v in state.items() if k.startswith(_MLP)}
    pairs = vit_key_pairs(_layers(vision_in, "blocks."))
    missing = [_VIT + o for o, _ in pairs if o not in vision_in] + [_MLP + k for k in MLP_KEYS if k not in mlp]
    known = {o for o, _ in pairs}
    unexpected = [_VIT + k for k in vision_in if k not in known] + [_MLP + k for k in mlp if k not in MLP_KEYS]
    unexpected += [
        k for k in state if not k.startswith((_VIT, _TEXT, _MLP, *_UNUSED_PREFIXES)) and k not in _UNUSED_KEYS
    ]
    if missing or unexpected:
        raise ValueError(
            f"not an ImageReward state dict: missing {missing[:3]}, unexpected {sorted(unexpected)[:3]}"
        )
    vision = {h: vision_in[o] for o, h in pairs}
    return vision, text, mlp


def vision_config(vision_state: dict[str, torch.Tensor] | None, overrides: dict | None = None):
    """A ``BlipVisionConfig`` sized from the converted weights (width, depth, MLP, patch, image size), or (no
    weights: ``init: random``) from ``overrides`` alone."""
    from transformers import BlipVisionConfig

    cfg = dict(hidden_act="gelu", layer_norm_eps=VIT_LAYER_NORM_EPS)  # timm's nn.GELU: the exact (erf) GELU
    if vision_state is not None:
        width = vision_state["embeddings.class_embedding"].shape[-1]
        patch = vision_state["embeddings.patch_embedding.weight"].shape[-1]
        positions = vision_state["embeddings.position_embedding"].shape[1] - 1
        grid = int(round(positions**0.5))
        if grid * grid != positions:
            raise ValueError(f"pos_embed holds {positions} patch positions, not a square grid")
        cfg.update(
            hidden_size=width,
            intermediate_size=vision_state["encoder.layers.0.mlp.fc1.weight"].shape[0],
            num_hidden_layers=_layers(vision_state, "encoder.layers."),
            num_attention_heads=max(width // VIT_HEAD_WIDTH, 1),
            image_size=grid * patch,
            patch_size=patch,
        )
    return BlipVisionConfig(**{**cfg, **(overrides or {})})


def text_config(med: dict, encoder_width: int):
    """A ``BlipTextConfig`` equal to BLIP's med_config.json; cross-attention to ``encoder_width``-wide image tokens
    (BLIP overrides med_config's ``encoder_width`` with the ViT's width, and so does this)."""
    from transformers import BlipTextConfig

    if med.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"position_embedding_type={med['position_embedding_type']!r} (only 'absolute' is BLIP's)")
    fields = {k: med.get(k, v) for k, v in BERT_DEFAULTS.items()}
    return BlipTextConfig(
        **fields,
        encoder_hidden_size=encoder_width,
        is_decoder=True,  # transformers builds the cross-attention layers only for a "decoder"
        bos_token_id=None,  # generation ids: no part in the score, and a tiny vocabulary has no 30522
        eos_token_id=None,
        sep_token_id=None,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        use_cache=False,
    )


def _fill(model, state: dict, what: str, path: str):
    """Assign ``state`` to a model built on the meta device; every parameter must be filled, nothing left over."""
    try:
        result = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as err:  # shape mismatches
        first = str(err).strip().splitlines()[-1].strip()
        raise SrsoupError(f"reward 'imagereward': {path} does not fit its {what}: {first}") from None
    still_empty = [n for n, p in model.named_parameters() if p.is_meta]
    if result.unexpected_keys or still_empty:
        raise SrsoupError(
            f"reward 'imagereward': {path} does not fit its {what}: missing {still_empty[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}"
        )
    return model


def load_image_reward(
    path: str, med_config: dict, vision_overrides: dict | None = None, *, device: str, dtype: torch.dtype
):
    """(``BlipVisionModel``, ``BlipTextModel``, MLP) from ``ImageReward.pt``, in eval mode on ``device``."""
    from accelerate import init_empty_weights
    from transformers import BlipTextModel, BlipVisionModel

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        vision_state, text_state, mlp_state = split_image_reward_state(state)
        v_cfg = vision_config(vision_state, vision_overrides)
        t_cfg = text_config(med_config, v_cfg.hidden_size)
    except Exception as err:  # noqa: BLE001 - an unreadable or foreign checkpoint is one line
        raise SrsoupError(f"reward 'imagereward': cannot read {path}: {err}".splitlines()[0]) from None
    with init_empty_weights(include_buffers=False):
        vision = BlipVisionModel(v_cfg)
        text = BlipTextModel(t_cfg, add_pooling_layer=False)
    _fill(vision, vision_state, "BLIP ViT", path)
    _fill(text, text_state, "BLIP text encoder (med_config.json)", path)
    width = mlp_state["layers.0.weight"].shape[1]
    if width != t_cfg.hidden_size:
        raise SrsoupError(
            f"reward 'imagereward': {path}: the MLP reads {width} features but the text encoder gives "
            f"{t_cfg.hidden_size}"
        )
    mlp = AestheticMLP(width)  # the same 5-layer head, same key names
    mlp.load_state_dict(mlp_state)
    return (
        vision.to(device=device, dtype=dtype).eval(),
        text.to(device=device, dtype=dtype).eval(),
        mlp.to(device).eval(),  # fp32 as the original (it casts the [CLS] features to float)
    )


def _read_json(path: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except Exception as err:  # noqa: BLE001
        raise SrsoupError(f"reward 'imagereward': cannot read {path}: {err}".splitlines()[0]) from None


def blip_tokenizer(tok, vocab_size: int, ref: str):
    """A BERT WordPiece (bert-base-uncased's, from ``ref``) plus the specials BLIP adds (``[DEC]`` as bos,
    ``[ENC]``)."""
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    if len(tok) > vocab_size:
        raise SrsoupError(
            f"reward 'imagereward': the tokenizer {ref} has {len(tok)} tokens but the text encoder's "
            f"vocabulary only {vocab_size}; set rewards.imagereward.tokenizer to a bert-base-uncased tokenizer"
        )
    return tok


def random_parts(folder: Path, *, device, dtype: torch.dtype) -> dict:
    """``vision``, ``text`` and ``mlp`` (fp32) at the size ``folder``'s med_config.json and vision_config.json say,
    with random weights; ``tokenizer``: the stand-in WordPiece of ``folder/tokenizer/`` with BLIP's specials."""
    from transformers import BlipTextModel, BlipVisionModel

    from srsoup.rewards import shipped
    from srsoup.standins import random_module

    med = shipped.read_json(folder, MED_CONFIG)
    v_cfg = vision_config(None, shipped.read_json(folder, VISION_CONFIG))
    t_cfg = text_config(med, v_cfg.hidden_size)
    with torch.device(device):
        mlp = AestheticMLP(t_cfg.hidden_size)
    return {
        "vision": random_module(BlipVisionModel, v_cfg, device, dtype),
        "text": random_module(BlipTextModel, t_cfg, device, dtype, add_pooling_layer=False),
        "mlp": mlp.eval(),
        "tokenizer": blip_tokenizer(shipped.tokenizer(folder / "tokenizer"), t_cfg.vocab_size, "(stand-in)"),
    }


class ImageRewardScore:
    """Callable ``(images [B,3,H,W] in [0,1], prompts) -> Tensor[B]``: ImageReward v1.0's standardized score."""

    def __init__(
        self,
        pretrained: str = DEFAULT_REPO,
        checkpoint: str = DEFAULT_CHECKPOINT,
        revision: str | None = None,
        tokenizer: str = BERT_BASE_UNCASED,
        tokenizer_revision: str | None = None,
        local_files_only: bool | None = None,
        init: str = "pretrained",
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        self.device = resolve_device(device)
        self.dtype = dtype
        hub = dict(revision=revision, tokenizer=tokenizer, tokenizer_revision=tokenizer_revision)
        folder = shipped_folder("imagereward", init, pretrained=pretrained, **hub)
        if folder is not None:
            parts = random_parts(folder, device=self.device, dtype=dtype)
            self.vision, self.text, self.mlp = parts["vision"], parts["text"], parts["mlp"]
            self.tokenizer = parts["tokenizer"]
            self.preprocess = ClipImagePreprocess(self.vision.config.image_size)
            return
        src = Source.reward("imagereward", pretrained, revision, local_files_only)
        tok_src = None
        vision_overrides = None
        if src.local:
            root = Path(src.ref)
            if not root.is_dir():
                raise SrsoupError(
                    f"reward 'imagereward': pretrained={pretrained!r} must be a folder "
                    f"({checkpoint} + {MED_CONFIG}) or a hub id"
                )
            if (root / VISION_CONFIG).is_file():
                vision_overrides = _read_json(str(root / VISION_CONFIG))
            tok_src = src.sub("tokenizer")
        ckpt_path, med_path = src.files(checkpoint, MED_CONFIG)
        tok_src = tok_src or Source.reward("imagereward", tokenizer, tokenizer_revision, local_files_only)
        med = _read_json(med_path)
        vocab = int(med.get("vocab_size", BERT_DEFAULTS["vocab_size"]))
        self.tokenizer = blip_tokenizer(load_tokenizer(tok_src), vocab, tok_src.ref)
        self.vision, self.text, self.mlp = load_image_reward(
            ckpt_path, med, vision_overrides, device=str(self.device), dtype=dtype
        )
        self.preprocess = ClipImagePreprocess(self.vision.config.image_size)  # resize, crop, OpenAI mean/std

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, prompts) -> torch.Tensor:
        prompts = list(prompts)
        unique = list(dict.fromkeys(prompts))
        tok = self.tokenizer(
            unique, padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
        )
        rows = torch.tensor([unique.index(p) for p in prompts])
        image_embeds = self.vision(pixel_values=self.preprocess(images, self.device, self.dtype)).last_hidden_state
        out = self.text(
            input_ids=tok.input_ids[rows].to(self.device),
            attention_mask=tok.attention_mask[rows].to(self.device),
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=torch.ones(image_embeds.shape[:2], dtype=torch.long, device=self.device),
            is_decoder=False,  # bidirectional self-attention: BLIP's encoder mode
            use_cache=False,
        )
        reward = self.mlp(out.last_hidden_state[:, 0].float()).squeeze(1)
        return ((reward - SCORE_MEAN) / SCORE_STD).cpu()
