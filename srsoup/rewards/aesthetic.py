"""LAION aesthetic predictor v2 (Schuhmann, improved-aesthetic-predictor, sac+logos+ava1-l14-linearMSE), as DDPO.

score = MLP(e / ‖e‖) with e the CLIP ViT-L/14 image embedding (transformers ``CLIPModel.get_image_features``) and
the MLP 768→1024→128→64→16→1 (dropouts inactive at eval). Higher = more aesthetic (about 1–10).

Weights, ``pretrained`` = a folder laid out as::

    <folder>/clip/                               a transformers CLIPModel folder (openai/clip-vit-large-patch14)
    <folder>/sac+logos+ava1-l14-linearMSE.pth    the MLP state dict, keys layers.{0,2,4,6,7}.{weight,bias}
                                                 (or the same name with .safetensors)

A folder without ``clip/`` takes CLIP from the ``clip`` hub id; ``pretrained: null`` takes both from the hub
(``clip`` and ``mlp_repo``/``mlp_file``). ``init: random``: CLIP ViT-L/14 and the MLP with random weights
(srsoup.rewards.shipped).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from srsoup.devices import resolve_device
from srsoup.errors import SrsoupError
from srsoup.hub import Source
from srsoup.rewards.clip import CLIP_L14, CLIP_L14_REVISION, ClipImagePreprocess, _pooled, load_clip, random_clip
from srsoup.rewards.shipped import shipped_folder

MLP_FILENAME = "sac+logos+ava1-l14-linearMSE.pth"
MLP_KEYS = [f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")]


class AestheticMLP(nn.Module):
    """The predictor head, with the original module layout so its state dict loads unchanged."""

    def __init__(self, input_size: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embed: torch.Tensor) -> torch.Tensor:
        return self.layers(embed)


def load_mlp_state(path: str) -> dict[str, torch.Tensor]:
    """The MLP weights from a .pth (``torch.load(weights_only=True)``) or .safetensors file, keys checked."""
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise SrsoupError(
            f"reward 'aesthetic': cannot read the MLP weights {path}: {err}".splitlines()[0]
        ) from None
    state = state.get("state_dict", state)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if sorted(state) != sorted(MLP_KEYS):
        raise SrsoupError(
            f"reward 'aesthetic': {path} is not the aesthetic MLP: keys {sorted(state)[:4]}..., want {MLP_KEYS}"
        )
    return state


def random_parts(folder: Path, *, device, dtype: torch.dtype) -> dict:
    """``clip`` (CLIP ViT-L/14 from ``folder/clip/config.json``) and ``mlp`` (fp32), random weights."""
    clip = random_clip(folder / "clip", device=device, dtype=dtype)
    with torch.device(device):
        mlp = AestheticMLP(clip.config.projection_dim)
    return {"clip": clip, "mlp": mlp.eval()}


class AestheticScore:
    """Callable ``(images [B,3,H,W] in [0,1], prompts) -> Tensor[B]``; the prompt plays no part."""

    def __init__(
        self,
        pretrained: str | None = None,
        clip: str = CLIP_L14,
        clip_revision: str | None = CLIP_L14_REVISION,
        mlp_repo: str = "trl-lib/ddpo-aesthetic-predictor",
        mlp_file: str = "aesthetic-model.pth",
        mlp_revision: str | None = None,
        local_files_only: bool | None = None,
        init: str = "pretrained",
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        self.device = resolve_device(device)
        self.dtype = dtype
        folder = shipped_folder("aesthetic", init, pretrained=pretrained, clip=clip, clip_revision=clip_revision)
        if folder is not None:
            parts = random_parts(folder, device=self.device, dtype=dtype)
            self.clip, self.mlp = parts["clip"], parts["mlp"]
            self.preprocess = ClipImagePreprocess(self.clip.config.vision_config.image_size)
            return
        if pretrained is not None:
            folder = Source.reward("aesthetic", pretrained)
            if not Path(folder.ref).is_dir():
                raise SrsoupError(
                    f"reward 'aesthetic': pretrained={pretrained!r} must be a folder (clip/ + {MLP_FILENAME})"
                )
            clip_src = folder.sub("clip") or Source.reward("aesthetic", clip, clip_revision, local_files_only)
            stem = Path(folder.ref) / MLP_FILENAME
            safetensors = stem.with_suffix(".safetensors")
            mlp_path = str(safetensors if safetensors.is_file() and not stem.is_file() else stem)
            if not Path(mlp_path).is_file():
                raise SrsoupError(f"reward 'aesthetic': {stem} is missing (the MLP weights of the folder layout)")
        else:
            clip_src = Source.reward("aesthetic", clip, clip_revision, local_files_only)
            mlp_path = Source.reward("aesthetic", mlp_repo, mlp_revision, local_files_only).file(mlp_file)
        self.clip = load_clip(clip_src, device=str(self.device), dtype=dtype)
        dim = self.clip.config.projection_dim
        self.mlp = AestheticMLP(dim)
        self.mlp.load_state_dict(load_mlp_state(mlp_path))
        self.mlp.to(self.device).eval()  # fp32: a few thousand flops per image
        self.preprocess = ClipImagePreprocess(self.clip.config.vision_config.image_size)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, prompts=None) -> torch.Tensor:
        pixels = self.preprocess(images, self.device, self.dtype)
        embed = _pooled(self.clip.get_image_features(pixel_values=pixels)).float()
        embed = embed / torch.linalg.vector_norm(embed, dim=-1, keepdim=True)
        return self.mlp(embed).squeeze(1).cpu()
