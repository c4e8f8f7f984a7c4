"""HPS v2 / v2.1 (Wu et al. 2023, "Human Preference Score v2"): cos(image, text) under a ViT-H-14 CLIP fine-tune.

Design choice: no open_clip at run time. HPS checkpoints (``HPS_v2.1_compressed.pt``, ``HPS_v2_compressed.pt``) are
open_clip state dicts of a plain ViT-H-14 CLIP, an architecture that transformers' ``CLIPModel`` reproduces exactly
(pre-LN ViT with ``ln_pre``, GELU, causal text transformer pooled at the end-of-text token, linear projections;
laion's own HF copies of ViT-H-14 were converted this way). So the checkpoint is converted key by key at load time
(``open_clip_to_hf_state_dict``: the fused attention ``in_proj`` split into q/k/v, projections transposed) into a
``CLIPModel`` built on the meta device, and scored like the other CLIP rewards. Why: one CLIP code path for every
reward, no extra dependency (open_clip pulls in torchvision and timm, whose versions must match torch), offline
tests on the same tiny copies, and the image preprocessing runs in torch on the device. The cost: the converter
must follow open_clip's key names, which are stable since 2022 (checked against open_clip 3.3 on a tiny model).

Score as the hpsv2 package computes it: the diagonal of normalized image · text features (about 0.2–0.35), with
HPSv2's inference transform (long side to 224, bicubic, zero padding; the same as resize + crop on square images)
and the CLIP BPE tokenizer (open_clip's SimpleTokenizer is OpenAI's, so openai/clip-vit-large-patch14's tokenizer
gives the same ids for ordinary prompts).

``pretrained`` = a folder laid out as::

    <folder>/HPS_v2.1_compressed.pt     the original checkpoint ({"state_dict": ...}); name set by ``checkpoint``
    <folder>/open_clip_config.json      optional: the architecture, open_clip's format ({"model_cfg": {...}});
                                        default ViT-H-14
    <folder>/tokenizer/                 optional: a CLIP tokenizer; default the ``tokenizer`` hub id

or a transformers CLIP folder (``config.json`` + weights + tokenizer) already converted; ``pretrained: null`` takes
the checkpoint from the hub (``repo``/``checkpoint``). ``init: random``: ViT-H-14 with random weights, built as a
checkpoint is (``clip_config``), with a stand-in tokenizer (srsoup.rewards.shipped).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from srsoup.devices import resolve_device
from srsoup.errors import SrsoupError
from srsoup.hub import Source
from srsoup.rewards.clip import CLIP_L14, CLIP_L14_REVISION, ClipScorer, load_clip, load_tokenizer
from srsoup.rewards.shipped import shipped_folder

DEFAULT_CHECKPOINT = "HPS_v2.1_compressed.pt"
# open_clip's src/open_clip/model_configs/ViT-H-14.json
VIT_H_14 = {
    "embed_dim": 1024,
    "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24},
}
_BLOCK = [
    ("ln_1", "layer_norm1"),
    ("ln_2", "layer_norm2"),
    ("attn.out_proj", "self_attn.out_proj"),
    ("mlp.c_fc", "mlp.fc1"),
    ("mlp.c_proj", "mlp.fc2"),
]
_IGNORED = {"attn_mask", "visual.attn_mask"}  # buffers some open_clip versions save


def _key_pairs(text_layers: int, vision_layers: int) -> list[tuple[str, str, str]]:
    """(open_clip key, transformers key, how) for a plain CLIP; how: copy | T (transpose) | qkv (split in 3)."""
    pairs = [
        ("token_embedding.weight", "text_model.embeddings.token_embedding.weight", "copy"),
        ("positional_embedding", "text_model.embeddings.position_embedding.weight", "copy"),
        ("text_projection", "text_projection.weight", "T"),
        ("logit_scale", "logit_scale", "copy"),
        ("visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight", "copy"),
        ("visual.class_embedding", "vision_model.embeddings.class_embedding", "copy"),
        ("visual.positional_embedding", "vision_model.embeddings.position_embedding.weight", "copy"),
        ("visual.proj", "visual_projection.weight", "T"),
    ]
    for p in ("weight", "bias"):
        pairs += [
            (f"ln_final.{p}", f"text_model.final_layer_norm.{p}", "copy"),
            (f"visual.ln_pre.{p}", f"vision_model.pre_layrnorm.{p}", "copy"),
            (f"visual.ln_post.{p}", f"vision_model.post_layernorm.{p}", "copy"),
        ]
    for oc_prefix, hf_prefix, layers in (
        ("", "text_model.", text_layers),
        ("visual.", "vision_model.", vision_layers),
    ):
        for i in range(layers):
            o, h = f"{oc_prefix}transformer.resblocks.{i}.", f"{hf_prefix}encoder.layers.{i}."
            for p in ("weight", "bias"):
                pairs.append((f"{o}attn.in_proj_{p}", f"{h}self_attn.{{}}_proj.{p}", "qkv"))
                pairs += [(f"{o}{a}.{p}", f"{h}{b}.{p}", "copy") for a, b in _BLOCK]
    return pairs


def _layers(keys, prefix: str) -> int:
    idx = {int(k[len(prefix) :].split(".")[0]) for k in keys if k.startswith(prefix)}
    return max(idx) + 1 if idx else 0


def open_clip_to_hf_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An open_clip CLIP state dict (HPS checkpoints) → ``CLIPModel`` keys; unknown keys are an error."""
    state = {k.removeprefix("module."): v for k, v in state.items() if k.removeprefix("module.") not in _IGNORED}
    pairs = _key_pairs(_layers(state, "transformer.resblocks."), _layers(state, "visual.transformer.resblocks."))
    missing = [o for o, _, _ in pairs if o not in state]
    unknown = sorted(set(state) - {o for o, _, _ in pairs})
    if missing or unknown:
        raise ValueError(f"not a plain open_clip CLIP state dict: missing {missing[:3]}, unexpected {unknown[:3]}")
    out = {}
    for o, h, how in pairs:
        t = state[o]
        if how == "T":
            out[h] = t.t().contiguous()
        elif how == "qkv":
            for name, part in zip(("q", "k", "v"), t.chunk(3, dim=0)):
                out[h.format(name)] = part.contiguous()
        else:
            out[h] = t
    return out


def hf_to_open_clip_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of ``open_clip_to_hf_state_dict`` (writes HPS-layout checkpoints for the tiny test copies)."""
    pairs = _key_pairs(
        _layers(state, "text_model.encoder.layers."), _layers(state, "vision_model.encoder.layers.")
    )
    out = {}
    for o, h, how in pairs:
        if how == "T":
            out[o] = state[h].t().contiguous()
        elif how == "qkv":
            out[o] = torch.cat([state[h.format(n)] for n in ("q", "k", "v")], dim=0)
        else:
            out[o] = state[h]
    return out


def clip_config(arch: dict, tokenizer):
    """A ``CLIPConfig`` equal to an open_clip model config (``model_cfg`` of open_clip_config.json)."""
    from transformers import CLIPConfig

    v, t = arch["vision_cfg"], arch["text_cfg"]
    act = "quick_gelu" if arch.get("quick_gelu") else "gelu"
    text = dict(
        vocab_size=t.get("vocab_size", 49408),
        hidden_size=t.get("width", 512),
        intermediate_size=int(t.get("width", 512) * t.get("mlp_ratio", 4.0)),
        num_hidden_layers=t.get("layers", 12),
        num_attention_heads=t.get("heads", 8),
        max_position_embeddings=t.get("context_length", 77),
        hidden_act=act,
        layer_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    width = v.get("width", 768)
    vision = dict(
        hidden_size=width,
        intermediate_size=int(width * v.get("mlp_ratio", 4.0)),
        num_hidden_layers=v.get("layers", 12),
        num_attention_heads=width // v.get("head_width", 64),
        image_size=v.get("image_size", 224),
        patch_size=v.get("patch_size", 16),
        hidden_act=act,
        layer_norm_eps=1e-5,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=arch.get("embed_dim", 512))


def load_hps_checkpoint(path: str, arch: dict, tokenizer, *, device: str, dtype: torch.dtype):
    """Build a ``CLIPModel`` without initialising weights and fill it from the converted open_clip checkpoint."""
    from accelerate import init_empty_weights
    from transformers import CLIPModel

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        state = open_clip_to_hf_state_dict(ckpt.get("state_dict", ckpt))
    except Exception as err:  # noqa: BLE001
        raise SrsoupError(f"reward 'hpsv2': cannot read {path}: {err}".splitlines()[0]) from None
    with init_empty_weights(include_buffers=False):
        model = CLIPModel(clip_config(arch, tokenizer))
    result = model.load_state_dict(state, strict=False, assign=True)
    still_empty = [n for n, p in model.named_parameters() if p.is_meta]
    if result.unexpected_keys or still_empty:
        raise SrsoupError(
            f"reward 'hpsv2': {path} does not fit its architecture: missing {still_empty[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}"
        )
    return model.to(device=device, dtype=dtype).eval()


def random_parts(folder: Path, *, device, dtype: torch.dtype) -> dict:
    """``clip``: the CLIPModel of ``folder/open_clip_config.json`` with random weights; ``tokenizer``: the stand-in
    ``folder/tokenizer/`` describes."""
    from transformers import CLIPModel

    from srsoup.rewards import shipped
    from srsoup.standins import random_module

    tok = shipped.tokenizer(folder / "tokenizer")
    cfg = shipped.read_json(folder, "open_clip_config.json")
    model = random_module(CLIPModel, clip_config(cfg.get("model_cfg", cfg), tok), device, dtype)
    return {"clip": model, "tokenizer": tok}


class HPSv2:
    def __init__(
        self,
        pretrained: str | None = None,
        repo: str = "xswu/HPSv2",
        checkpoint: str = DEFAULT_CHECKPOINT,
        revision: str | None = None,
        tokenizer: str = CLIP_L14,
        tokenizer_revision: str | None = CLIP_L14_REVISION,
        local_files_only: bool | None = None,
        init: str = "pretrained",
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        dev = resolve_device(device)
        hub = dict(repo=repo, revision=revision, tokenizer=tokenizer, tokenizer_revision=tokenizer_revision)
        folder = shipped_folder("hpsv2", init, pretrained=pretrained, **hub)
        if folder is not None:
            parts = random_parts(folder, device=dev, dtype=dtype)
            self.scorer = ClipScorer(parts["clip"], parts["tokenizer"], device=dev, dtype=dtype, mode="pad")
            return
        tok_src = Source.reward("hpsv2", tokenizer, tokenizer_revision, local_files_only)
        arch = VIT_H_14
        if pretrained is not None:
            folder = Source.reward("hpsv2", pretrained)
            root = Path(folder.ref)
            if (root / "config.json").is_file():  # already a transformers CLIP folder
                model = load_clip(folder, device=str(dev), dtype=dtype)
                tok = load_tokenizer(folder if folder.has_tokenizer() else tok_src)
                self.scorer = ClipScorer(model, tok, device=dev, dtype=dtype, mode="pad")
                return
            path = folder.file(checkpoint)
            if (root / "open_clip_config.json").is_file():
                cfg = json.loads((root / "open_clip_config.json").read_text())
                arch = cfg.get("model_cfg", cfg)
            tok_src = folder.sub("tokenizer") or tok_src
        else:
            path = Source.reward("hpsv2", repo, revision, local_files_only).file(checkpoint)
        tok = load_tokenizer(tok_src)
        model = load_hps_checkpoint(path, arch, tok, device=str(dev), dtype=dtype)
        self.scorer = ClipScorer(model, tok, device=dev, dtype=dtype, mode="pad")

    def __call__(self, images: torch.Tensor, prompts) -> torch.Tensor:
        return self.scorer.cosine(images, prompts).cpu()
