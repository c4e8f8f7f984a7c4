"""The CLIP plumbing every CLIP-based reward here shares: loading, torch preprocessing, cached text features.

Loading a transformers CLIPModel and tokenizer from a ``hub.Source`` (one actionable line when missing); CLIP's
image preprocessing done in torch on the device (short side resized to the model's input size with antialiased
bicubic, centre crop, OpenAI mean/std) on images in [0, 1], so scoring never round-trips through PIL; normalized
image and text embeddings with text features cached per prompt (a step scores K candidates of one prompt).
``init: random``: a CLIPModel at a shipped config's size with random weights and a stand-in tokenizer
(``random_clip_parts``, see ``srsoup.rewards.shipped``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from srsoup.hub import Source

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_L14 = "openai/clip-vit-large-patch14"
CLIP_L14_REVISION = "32bd64288804d66eefd0ccbe215aa642df71cc41"


def load_clip(src: Source, *, device: str, dtype: torch.dtype):
    """A transformers CLIPModel in eval mode on ``device``."""
    from transformers import CLIPModel

    with src.loading():
        model = CLIPModel.from_pretrained(src.ref, dtype=dtype, **src.kwargs)
    return model.to(device).eval()


def random_clip(folder: Path, *, device, dtype: torch.dtype):
    """A CLIPModel at the architecture of ``folder/config.json``, random weights, in eval mode on ``device``."""
    from transformers import CLIPModel

    from srsoup.rewards.shipped import read_json
    from srsoup.standins import random_module

    return random_module(CLIPModel, read_json(folder, "config.json"), device, dtype)


def random_clip_parts(folder: Path, *, device, dtype: torch.dtype) -> dict:
    """``clip`` (``random_clip``) and ``tokenizer`` (the stand-in ``folder/tokenizer_config.json`` describes)."""
    from srsoup.rewards.shipped import tokenizer

    return {"clip": random_clip(folder, device=device, dtype=dtype), "tokenizer": tokenizer(folder)}


def load_tokenizer(src: Source):
    from transformers import AutoTokenizer

    with src.loading():
        return AutoTokenizer.from_pretrained(src.ref, **src.kwargs)


class ClipImagePreprocess:
    """CLIP's eval transform in torch: images [B,3,H,W] in [0,1] → normalized [B,3,S,S] in ``dtype``.

    ``mode="crop"``: short side to S (bicubic, antialiased like PIL's), centre crop (CLIPImageProcessor).
    ``mode="pad"``: long side to S, zero padding centred (HPSv2's inference transform). Identical on square images.
    """

    def __init__(self, size: int, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, mode: str = "crop"):
        self.size = int(size)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.mode = mode

    def __call__(self, images: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        x = images.to(device=device, dtype=torch.float32).clamp(0, 1)
        h, w = x.shape[-2:]
        s = self.size
        scale = s / (min(h, w) if self.mode == "crop" else max(h, w))
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        if (nh, nw) != (h, w):
            # PIL resamples 8-bit images, so its output is clipped to the valid range; so is this.
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        if self.mode == "crop":
            top, left = (nh - s) // 2, (nw - s) // 2
            x = x[..., max(top, 0) : max(top, 0) + s, max(left, 0) : max(left, 0) + s]
        else:
            ph, pw = s - nh, s - nw
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        x = (x - self.mean.to(device)) / self.std.to(device)
        return x.to(dtype)


def _pooled(out) -> torch.Tensor:
    """Projected features from ``get_*_features``: a tensor in transformers 4, an output object in 5."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClipScorer:
    """Normalized image and text embeddings of a CLIPModel, with the text side cached per prompt."""

    def __init__(self, model, tokenizer, *, device: torch.device, dtype: torch.dtype, mode: str = "crop"):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype
        self.preprocess = ClipImagePreprocess(model.config.vision_config.image_size, mode=mode)
        self.max_length = min(
            int(getattr(tokenizer, "model_max_length", 77) or 77),
            int(model.config.text_config.max_position_embeddings),
        )
        self._text_cache: dict[str, torch.Tensor] = {}

    @torch.inference_mode()
    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self.preprocess(images, self.device, self.dtype)
        return F.normalize(_pooled(self.model.get_image_features(pixel_values=pixels)).float(), dim=-1)

    @torch.inference_mode()
    def text_embeds(self, prompts) -> torch.Tensor:
        missing = sorted({p for p in prompts if p not in self._text_cache})
        if missing:
            tok = self.tokenizer(
                missing, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
            )
            feats = _pooled(
                self.model.get_text_features(
                    input_ids=tok.input_ids.to(self.device), attention_mask=tok.attention_mask.to(self.device)
                )
            )
            feats = F.normalize(feats.float(), dim=-1)
            if len(self._text_cache) > 1024:
                self._text_cache.clear()
            self._text_cache.update(zip(missing, feats))
        return torch.stack([self._text_cache[p] for p in prompts])

    def cosine(self, images: torch.Tensor, prompts) -> torch.Tensor:
        return (self.image_embeds(images) * self.text_embeds(list(prompts))).sum(-1)
