"""CLIPScore for evaluation, and the CLIP plumbing that every CLIP-based reward here shares.

CLIPScore (Hessel et al. 2021, "CLIPScore: A Reference-free Evaluation Metric for Image Captioning", eq. 1 with
w = 100, as torchmetrics computes it): 100·max(cos(E_image, E_text), 0), with openai/clip-vit-large-patch14.

Shared plumbing: where a reward's files come from (a local folder, or a hub id at a pinned revision,
``local_files_only`` following HF_HUB_OFFLINE), one actionable error line when they are missing, loading a
transformers CLIPModel and tokenizer, and CLIP's image preprocessing done in torch on the device (short side
resized to the model's input size with antialiased bicubic, centre crop, OpenAI mean/std) on images in [0, 1], so
scoring never round-trips through PIL. Text features are cached per prompt: a step scores K candidates of one
prompt.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from srsoup.errors import SrsoupError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_L14 = "openai/clip-vit-large-patch14"
CLIP_L14_REVISION = "32bd64288804d66eefd0ccbe215aa642df71cc41"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")


def offline_default(local_files_only: bool | None) -> bool:
    """``local_files_only`` as configured, or (null) whether HF_HUB_OFFLINE is set, read when the reward loads."""
    if local_files_only is not None:
        return bool(local_files_only)
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Source:
    """Where a reward component comes from: a local path, or a hub id at a revision."""

    reward: str  # reward family name, for messages (aesthetic, pickscore, ...)
    ref: str  # local path or hub id
    revision: str | None
    local: bool
    local_files_only: bool

    @classmethod
    def resolve(cls, reward: str, ref: str, revision: str | None = None, local_files_only: bool | None = None):
        """A path that exists is local; a path-like value that does not exist is an error at once."""
        expanded = os.path.expanduser(str(ref))
        if Path(expanded).exists():
            return cls(reward, expanded, None, True, True)
        if expanded.startswith((".", "/", "~")) or expanded.count("/") != 1:
            raise SrsoupError(
                f"reward '{reward}': {ref!r} does not exist (expected a local folder or a hub id org/name); "
                f"set rewards.{reward}.pretrained=<folder>"
            )
        return cls(reward, expanded, revision, False, offline_default(local_files_only))

    @property
    def kwargs(self) -> dict:
        """Keyword arguments for ``from_pretrained``."""
        if self.local:
            return {"local_files_only": True}
        return {"revision": self.revision, "local_files_only": self.local_files_only}

    def error(self, err: Exception, files: str = "") -> SrsoupError:
        """The one line that says how to get what is missing."""
        if self.local:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            return SrsoupError(f"reward '{self.reward}': {self.ref} is incomplete or unreadable: {first}")
        rev = f" --revision {self.revision}" if self.revision else ""
        what = f"{self.ref} {files}".strip()
        return SrsoupError(
            f"reward '{self.reward}': {what} is not available locally ({type(err).__name__}); download with "
            f"`huggingface-cli download {what}{rev}` or set rewards.{self.reward}.pretrained=<folder>"
        )

    def file(self, filename: str) -> str:
        """Path of one file of this source (downloaded into the hub cache unless offline)."""
        if self.local:
            path = Path(self.ref) / filename if Path(self.ref).is_dir() else Path(self.ref)
            if not path.is_file():
                raise SrsoupError(f"reward '{self.reward}': {path} is missing")
            return str(path)
        return self.files(filename)[0]

    def files(self, *filenames: str) -> list[str]:
        """Paths of several files of this source; a hub miss names all of them in one download command."""
        if self.local:
            return [self.file(name) for name in filenames]
        from huggingface_hub import hf_hub_download

        try:
            return [hf_hub_download(self.ref, name, **self.kwargs) for name in filenames]
        except Exception as err:  # noqa: BLE001 - any failure to get the files becomes one actionable line
            raise self.error(err, " ".join(filenames)) from None

    def sub(self, folder: str) -> Source | None:
        """A local subfolder of this source, if it exists."""
        if self.local and (Path(self.ref) / folder).is_dir():
            return Source(self.reward, str(Path(self.ref) / folder), None, True, True)
        return None

    def has_tokenizer(self) -> bool:
        return self.local and any((Path(self.ref) / f).is_file() for f in _TOKENIZER_FILES)


def load_clip(src: Source, *, device: str, dtype: torch.dtype):
    """A transformers CLIPModel in eval mode on ``device``."""
    from transformers import CLIPModel

    try:
        model = CLIPModel.from_pretrained(src.ref, dtype=dtype, **src.kwargs)
    except Exception as err:  # noqa: BLE001
        raise src.error(err) from None
    return model.to(device).eval()


def load_tokenizer(src: Source):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(src.ref, **src.kwargs)
    except Exception as err:  # noqa: BLE001
        raise src.error(err) from None


def resolve_device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SrsoupError(f"device={str(device)!r} but CUDA is not available on this machine")
    return device


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


class CLIPScore:
    """100·max(cos(image, text), 0) under a CLIP model (openai/clip-vit-large-patch14 by default)."""

    def __init__(
        self,
        pretrained: str = CLIP_L14,
        revision: str | None = CLIP_L14_REVISION,
        local_files_only: bool | None = None,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        dev = resolve_device(device)
        src = Source.resolve("clipscore", pretrained, revision, local_files_only)
        model = load_clip(src, device=str(dev), dtype=dtype)
        self.scorer = ClipScorer(model, load_tokenizer(src), device=dev, dtype=dtype)

    def __call__(self, images: torch.Tensor, prompts) -> torch.Tensor:
        return (100 * self.scorer.cosine(images, prompts)).clamp(min=0).cpu()
