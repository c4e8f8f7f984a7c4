"""CLIPScore for evaluation (Hessel et al. 2021, "CLIPScore: A Reference-free Evaluation Metric for Image
Captioning", eq. 1 with w = 100, as torchmetrics computes it): 100·max(cos(E_image, E_text), 0), with
openai/clip-vit-large-patch14. ``init: random``: that architecture with random weights (srsoup.rewards.shipped).
"""

from __future__ import annotations

import torch

from srsoup.devices import resolve_device
from srsoup.hub import Source
from srsoup.rewards.clip import (
    CLIP_L14,
    CLIP_L14_REVISION,
    ClipScorer,
    load_clip,
    load_tokenizer,
    random_clip_parts,
)
from srsoup.rewards.shipped import shipped_folder


class CLIPScore:
    """100·max(cos(image, text), 0) under a CLIP model (openai/clip-vit-large-patch14 by default)."""

    def __init__(
        self,
        pretrained: str = CLIP_L14,
        revision: str | None = CLIP_L14_REVISION,
        local_files_only: bool | None = None,
        init: str = "pretrained",
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        dev = resolve_device(device)
        folder = shipped_folder("clipscore", init, pretrained=pretrained, revision=revision)
        if folder is not None:
            parts = random_clip_parts(folder, device=dev, dtype=dtype)
            model, tok = parts["clip"], parts["tokenizer"]
        else:
            src = Source.reward("clipscore", pretrained, revision, local_files_only)
            model, tok = load_clip(src, device=str(dev), dtype=dtype), load_tokenizer(src)
        self.scorer = ClipScorer(model, tok, device=dev, dtype=dtype)

    def __call__(self, images: torch.Tensor, prompts) -> torch.Tensor:
        return (100 * self.scorer.cosine(images, prompts)).clamp(min=0).cpu()
