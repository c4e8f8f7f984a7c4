"""PickScore (Kirstain et al. 2023, "Pick-a-Pic"): logit_scale.exp()·cos(image, text) under PickScore_v1.

PickScore_v1 is a transformers CLIPModel (a ViT-H-14 fine-tune); its tokenizer is the one of the ``processor``
repo (laion/CLIP-ViT-H-14-laion2B-s32B-b79K), as in the authors' snippet. Images are preprocessed in torch on the
device like CLIPImageProcessor (short side 224, bicubic, centre crop, OpenAI mean/std). Higher = preferred
(about 18–24 for real images).

``pretrained`` = a hub id or a transformers CLIP folder; a local folder that holds tokenizer files is its own
processor (the tiny copies and ``save_pretrained`` of model + processor are laid out so). ``init: random``: the
ViT-H-14 architecture with random weights and a stand-in tokenizer (srsoup.rewards.shipped).
"""

from __future__ import annotations

import torch

from srsoup.devices import resolve_device
from srsoup.hub import Source
from srsoup.rewards.clip import ClipScorer, load_clip, load_tokenizer, random_clip_parts
from srsoup.rewards.shipped import shipped_folder


class PickScore:
    def __init__(
        self,
        pretrained: str = "yuvalkirstain/PickScore_v1",
        revision: str | None = None,
        processor: str = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
        processor_revision: str | None = None,
        local_files_only: bool | None = None,
        init: str = "pretrained",
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        dev = resolve_device(device)
        settings = dict(pretrained=pretrained, revision=revision, processor=processor)
        folder = shipped_folder("pickscore", init, **settings, processor_revision=processor_revision)
        if folder is not None:
            parts = random_clip_parts(folder, device=dev, dtype=dtype)
            model, tok = parts["clip"], parts["tokenizer"]
        else:
            src = Source.reward("pickscore", pretrained, revision, local_files_only)
            tok_src = (
                src
                if src.has_tokenizer()
                else Source.reward("pickscore", processor, processor_revision, local_files_only)
            )
            model, tok = load_clip(src, device=str(dev), dtype=dtype), load_tokenizer(tok_src)
        self.scorer = ClipScorer(model, tok, device=dev, dtype=dtype)
        self.scale = float(model.logit_scale.detach().float().exp())

    def __call__(self, images: torch.Tensor, prompts) -> torch.Tensor:
        return (self.scale * self.scorer.cosine(images, prompts)).cpu()
