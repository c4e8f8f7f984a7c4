"""Opening a diffusers pipeline folder or hub repo: its ``model_index.json`` and components, each loaded once here.

Every backbone loads through ``PipelineFolder``: components by the class ``model_index.json`` names (or one given),
tokenizers through ``AutoTokenizer`` (slow and fast class names differ across transformers versions; the files
tell), the scheduler from the release's config restricted to the class the backbone steps with, and the VAE in the
run's dtype unless its config says it overflows in fp16 (``force_upcast``), where it stays fp32.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from pathlib import Path

import torch

from srsoup.errors import SrsoupError
from srsoup.hub import Source

log = logging.getLogger(__name__)


class PipelineFolder:
    """A diffusers-layout folder (local or hub) and the components its ``model_index.json`` lists."""

    def __init__(self, src: Source, dtype: torch.dtype):
        self.src = src
        self.dtype = dtype
        self.index = src.json("model_index.json")

    @classmethod
    def open(
        cls,
        pretrained: str,
        revision: str | None,
        local_files_only: bool | None,
        dtype: torch.dtype,
        key: str = "model.pretrained",
    ) -> PipelineFolder:
        return cls(Source.resolve(pretrained, revision, local_files_only, key=key), dtype)

    @property
    def name(self) -> str:
        return self.src.ref

    def has(self, name: str) -> bool:
        entry = self.index.get(name)
        return bool(entry) and entry[0] is not None and entry[1] is not None

    def require(self, *names: str, family: str) -> None:
        missing = [n for n in names if not self.has(n)]
        if missing:
            raise SrsoupError(
                f"model {self.name!r} has no {', '.join(missing)} (model_index.json); it is not {family} model"
            )

    def component(self, name: str, cls=None, dtype: torch.dtype | None = None):
        """The component ``name`` with the class the index names (or ``cls``), in ``dtype`` (default the run's)."""
        if cls is None:
            library, cls_name = self.index[name]
            if library not in ("diffusers", "transformers"):
                raise SrsoupError(
                    f"{name} is a {library}.{cls_name}; only diffusers and transformers components load here"
                )
            if "Tokenizer" in cls_name:
                return self.tokenizer(name)
            cls = getattr(importlib.import_module(library), cls_name)
        dtype = dtype or self.dtype
        dtype_kw = {"dtype": dtype} if cls.__module__.startswith("transformers") else {"torch_dtype": dtype}
        with self.src.loading():
            return cls.from_pretrained(self.src.ref, subfolder=name, **dtype_kw, **self.src.kwargs)

    def tokenizer(self, name: str = "tokenizer"):
        from transformers import AutoTokenizer

        with self.src.loading():
            return AutoTokenizer.from_pretrained(self.src.ref, subfolder=name, **self.src.kwargs)

    def scheduler(self, cls, overrides: dict | None = None):
        """The release's scheduler config as ``cls`` (keys ``cls`` does not take are dropped), with overrides."""
        config = self.src.json("scheduler_config.json", subfolder="scheduler")
        accepted = inspect.signature(cls.__init__).parameters
        config = {k: v for k, v in config.items() if k in accepted}
        return cls.from_config({**config, **(overrides or {})})

    def vae(self, subfolder: str | None = "vae", cls=None):
        """The VAE in the run's dtype, or in fp32 when the run is fp16 and its config says it overflows there."""
        return vae_in_dtype(self.src, subfolder, self.dtype, cls)


def vae_in_dtype(src: Source, subfolder: str | None, dtype: torch.dtype, cls=None):
    from diffusers import AutoencoderKL

    cls = cls or AutoencoderKL
    with src.loading():
        config = cls.load_config(src.ref, subfolder=subfolder, **src.kwargs)
        if dtype == torch.float16 and config.get("force_upcast", False):
            log.info("this VAE overflows in fp16 (force_upcast): it decodes in fp32")
            dtype = torch.float32
        return cls.from_pretrained(src.ref, subfolder=subfolder, torch_dtype=dtype, **src.kwargs)


def separate_vae(vae: str, revision: str | None, local_files_only: bool | None, dtype: torch.dtype):
    """A VAE from another repo or folder (SDXL's fp16-fix), with the VAE at its root or in ``vae/``."""
    src = Source.resolve(vae, revision, local_files_only, key="model.vae")
    subfolder = "vae" if src.local and not (Path(src.ref) / "config.json").is_file() else None
    return vae_in_dtype(src, subfolder, dtype)
