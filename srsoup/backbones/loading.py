"""Opening a model's components: a diffusers pipeline folder or hub repo, or its architecture with random weights.

Every backbone loads through ``open_components``:

- ``init: pretrained`` (``PipelineFolder``): components by the class ``model_index.json`` names (or one given),
  tokenizers through ``AutoTokenizer`` (slow and fast class names differ across transformers versions; the
  files tell), the scheduler from the release's config restricted to the class the backbone steps with, and the
  VAE in the run's dtype unless its config says it overflows in fp16 (``force_upcast``), where it stays fp32.
- ``init: random`` (``RandomFolder``): the same components at the release's published architecture, built from
  configs shipped in ``srsoup/backbones/configs/<org>--<name>/`` (each folder's ``source.json`` cites where its
  configs come from and at which revision) or from a local folder's own configs, with random weights and no
  download. Tokenizers whose files cannot be had offline are stand-ins that yield the real sequence lengths
  (``srsoup.standins``). Images are noise; the compute, memory and code path are the real ones.

With a ``storage_dtype`` (the run's top-level key), every component but the VAE keeps its weights in that dtype and
casts each layer to the run's dtype for its forward only (diffusers' layerwise casting; ``store_weights``).
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
from abc import ABC, abstractmethod
from pathlib import Path

import torch

from srsoup.errors import SrsoupError
from srsoup.hub import INITS, Source, check_init, check_shipped  # noqa: F401 - INITS: re-exported

log = logging.getLogger(__name__)

CONFIGS = Path(__file__).resolve().parent / "configs"


def shipped_architectures() -> list[str]:
    """Hub ids whose architecture ``init: random`` can build offline."""
    return sorted(p.name.replace("--", "/") for p in CONFIGS.iterdir() if (p / "source.json").is_file())


class Components(ABC):
    """A model's parts by component name (``unet``, ``text_encoder_2``, ``vae``...), as its index lists them."""

    index: dict
    dtype: torch.dtype
    name: str
    storage_dtype: torch.dtype | None = None  # set by ``open_components``; None = weights in ``dtype``

    def component(self, name: str, cls=None, dtype: torch.dtype | None = None):
        """The component ``name`` with the class the index names (or ``cls``), in ``dtype`` (default the run's);
        with a ``storage_dtype``, its weights are stored in that and computed in the run's dtype."""
        if self.storage_dtype is None or dtype is not None:
            return self._component(name, cls, dtype)
        model = self._component(name, cls, load_dtype(self.storage_dtype, self.dtype))
        if isinstance(model, torch.nn.Module):
            store_weights(model, self.storage_dtype, self.dtype)
        return model

    def has(self, name: str) -> bool:
        entry = self.index.get(name)
        return bool(entry) and entry[0] is not None and entry[1] is not None

    def require(self, *names: str, family: str) -> None:
        missing = [n for n in names if not self.has(n)]
        if missing:
            raise SrsoupError(
                f"model {self.name!r} has no {', '.join(missing)} (model_index.json); it is not {family} model"
            )

    def component_class(self, name: str):
        """The class ``model_index.json`` names for ``name`` (diffusers or transformers only)."""
        library, cls_name = self.index[name]
        if library not in ("diffusers", "transformers"):
            raise SrsoupError(
                f"{name} is a {library}.{cls_name}; only diffusers and transformers components load here"
            )
        return getattr(importlib.import_module(library), cls_name)

    def scheduler(self, cls, overrides: dict | None = None):
        """The release's scheduler config as ``cls`` (keys ``cls`` does not take are dropped), with overrides."""
        config = self.json("scheduler_config.json", "scheduler")
        accepted = inspect.signature(cls.__init__).parameters
        config = {k: v for k, v in config.items() if k in accepted}
        return cls.from_config({**config, **(overrides or {})})

    @abstractmethod
    def json(self, filename: str, subfolder: str | None = None) -> dict:
        """A JSON file of the model (``model_index.json``, a component's config)."""

    @abstractmethod
    def _component(self, name: str, cls=None, dtype: torch.dtype | None = None):
        """The component ``name`` with the class the index names (or ``cls``), in ``dtype`` (default the run's)."""

    @abstractmethod
    def tokenizer(self, name: str = "tokenizer"):
        """The tokenizer in the subfolder ``name``."""

    @abstractmethod
    def vae(self, subfolder: str | None = "vae", cls=None):
        """The VAE (fp32 when the run is fp16 and its config says it overflows there)."""


def open_components(
    pretrained: str,
    revision: str | None,
    local_files_only: bool | None,
    dtype: torch.dtype,
    init: str = "pretrained",
    device: torch.device | None = None,
    key: str = "model.pretrained",
    storage_dtype: torch.dtype | None = None,
) -> Components:
    """The components of ``pretrained`` (hub id or folder), loaded (``init=pretrained``) or random (``random``);
    ``storage_dtype``: the dtype every component but the VAE keeps its weights in (None = ``dtype``)."""
    if check_init(key.rsplit(".", 1)[0] + ".init", init) == "random":
        folder = RandomFolder.open(pretrained, revision, dtype, device, key)
    else:
        folder = PipelineFolder(Source.resolve(pretrained, revision, local_files_only, key=key), dtype)
    folder.storage_dtype = None if storage_dtype == dtype else storage_dtype
    return folder


def load_dtype(storage: torch.dtype, compute: torch.dtype) -> torch.dtype:
    """The dtype to load a component in before ``store_weights``: the storage dtype when weights can be made and
    loaded in it (16-bit), else (fp8) the compute dtype when 16-bit, else bf16; never a 32-bit copy it drops."""
    if storage.itemsize == 2:
        return storage
    return compute if compute.itemsize == 2 else torch.bfloat16


def store_weights(model: torch.nn.Module, storage: torch.dtype, compute: torch.dtype) -> None:
    """Keep ``model``'s layers in ``storage`` and cast each to ``compute`` for its forward only (diffusers'
    layerwise casting hooks on Linear, Conv and Embedding layers); what the hooks skip computes in ``compute``.

    Skipped, as diffusers skips them: position/patch embeddings and norms (its default patterns and a diffusers
    model's own ``_skip_layerwise_casting_patterns``), plus a model's ``_keep_in_fp32_modules`` and a transformers
    model's token embeddings (its ``dtype``, which masks and inputs follow, is its first parameter's: T5's shared
    embedding).
    """
    from diffusers.hooks import apply_layerwise_casting
    from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

    patterns = set(DEFAULT_SKIP_MODULES_PATTERN)
    patterns |= set(getattr(model, "_skip_layerwise_casting_patterns", None) or ())
    # kept wide even when all computes in fp32: T5's feed-forward casts its input to its wo weight's stored dtype
    patterns |= set(getattr(model, "_keep_in_fp32_modules", None) or ())
    classes = (torch.nn.Embedding,) if type(model).__module__.startswith("transformers") else None
    apply_layerwise_casting(model, storage, compute, tuple(sorted(patterns)), skip_modules_classes=classes)
    for module in model.modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None and registry.get_hook("layerwise_casting") is not None:
            continue
        for tensors in (module._parameters, module._buffers):
            for key, t in tensors.items():
                # widen what was loaded narrow; never narrow what a model keeps in fp32 on purpose
                if t is not None and t.is_floating_point() and t.dtype not in (compute, torch.float32):
                    cast = t.to(compute)
                    tensors[key] = torch.nn.Parameter(cast, t.requires_grad) if key in module._parameters else cast


class PipelineFolder(Components):
    """A diffusers-layout folder (local or hub) and the components its ``model_index.json`` lists."""

    def __init__(self, src: Source, dtype: torch.dtype):
        self.src = src
        self.dtype = dtype
        self.name = src.ref
        self._index: dict | None = None

    @property
    def index(self) -> dict:
        """``model_index.json``, read when first needed (a bare VAE repo has none)."""
        if self._index is None:
            self._index = self.src.json("model_index.json")
        return self._index

    def json(self, filename: str, subfolder: str | None = None) -> dict:
        return self.src.json(filename, subfolder)

    def _component(self, name: str, cls=None, dtype: torch.dtype | None = None):
        cls = cls or self.component_class(name)
        if "Tokenizer" in cls.__name__:
            return self.tokenizer(name)
        dtype = dtype or self.dtype
        dtype_kw = {"dtype": dtype} if cls.__module__.startswith("transformers") else {"torch_dtype": dtype}
        with self.src.loading():
            return cls.from_pretrained(self.src.ref, subfolder=name, **dtype_kw, **self.src.kwargs)

    def tokenizer(self, name: str = "tokenizer"):
        from transformers import AutoTokenizer

        with self.src.loading():
            return AutoTokenizer.from_pretrained(self.src.ref, subfolder=name, **self.src.kwargs)

    def vae(self, subfolder: str | None = "vae", cls=None):
        from diffusers import AutoencoderKL

        cls = cls or AutoencoderKL
        dtype = self.dtype
        with self.src.loading():
            config = cls.load_config(self.src.ref, subfolder=subfolder, **self.src.kwargs)
            if dtype == torch.float16 and config.get("force_upcast", False):
                log.info("this VAE overflows in fp16 (force_upcast): it decodes in fp32")
                dtype = torch.float32
            return cls.from_pretrained(self.src.ref, subfolder=subfolder, torch_dtype=dtype, **self.src.kwargs)


class RandomFolder(Components):
    """A model's published architecture from configs (shipped, or a local folder's), with random weights."""

    def __init__(self, root: Path, name: str, dtype: torch.dtype, device: torch.device | None):
        self.root, self.name, self.dtype = root, name, dtype
        self.device = device or torch.device("cpu")
        self.index = self.json("model_index.json") if (root / "model_index.json").is_file() else {}

    @classmethod
    def open(cls, pretrained: str, revision: str | None, dtype, device, key: str = "model.pretrained"):
        local = Path(pretrained).expanduser()
        if local.is_dir():
            return cls(local, pretrained, dtype, device)
        root = CONFIGS / pretrained.replace("/", "--")
        if not (root / "source.json").is_file():
            raise SrsoupError(
                f"init=random has no shipped architecture for {key}={pretrained!r}; valid: "
                f"{', '.join(shipped_architectures())} or a local folder with the configs"
            )
        shipped = json.loads((root / "source.json").read_text())["revision"]
        revision_key = "model.revision" if key == "model.pretrained" else f"{key}_revision"
        check_shipped(revision_key, revision, shipped, f"{pretrained} at revision {shipped or 'main (unpinned)'}")
        return cls(root, pretrained, dtype, device)

    def json(self, filename: str, subfolder: str | None = None) -> dict:
        path = self.root / subfolder / filename if subfolder else self.root / filename
        if not path.is_file():
            raise SrsoupError(f"init=random: {path.name} of {self.name} is missing ({subfolder or '.'})")
        return json.loads(path.read_text())

    def _component(self, name: str | None, cls=None, dtype: torch.dtype | None = None):
        """``name`` (a subfolder; None = the folder itself, as a bare VAE repo) with random weights.

        The class is ``cls``, else the one the index names, else the config's own (``_class_name`` of diffusers,
        ``architectures`` of transformers).
        """
        from srsoup.standins import random_module, stored_numel

        if cls is None and name in self.index:
            cls = self.component_class(name)
        if cls is not None and "Tokenizer" in cls.__name__:
            return self.tokenizer(name)
        config = self.json("config.json", name)
        cls = cls or _config_class(config, f"{self.name}/{name or ''}")
        model = random_module(cls, config, self.device, dtype or self.dtype)
        size = stored_numel(model) / 1e9
        # On the meta device (srsoup plan, every run's memory check) nothing is random: not for the user's log.
        level = logging.DEBUG if self.device.type == "meta" else logging.INFO
        log.log(level, "random %s of %s: %s, %.3gB weights", name or "model", self.name, cls.__name__, size)
        return model

    def tokenizer(self, name: str = "tokenizer"):
        from srsoup.standins import standin_tokenizer

        folder = self.root / name
        if any((folder / f).is_file() for f in ("tokenizer.json", "vocab.json", "spiece.model", "vocab.txt")):
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        return standin_tokenizer(self.json("tokenizer_config.json", name))

    def vae(self, subfolder: str | None = "vae", cls=None):
        from diffusers import AutoencoderKL

        config = self.json("config.json", subfolder)
        upcast = self.dtype == torch.float16 and config.get("force_upcast", False)
        return self._component(subfolder, cls or AutoencoderKL, torch.float32 if upcast else None)


def _config_class(config: dict, where: str):
    """The model class a ``config.json`` names: diffusers' ``_class_name`` or transformers' ``architectures``."""
    if "_class_name" in config:
        library, name = "diffusers", config["_class_name"]
    elif config.get("architectures"):
        library, name = "transformers", config["architectures"][0]
    else:
        raise SrsoupError(f"init=random: {where}config.json names no class (_class_name or architectures)")
    return getattr(importlib.import_module(library), name)


def separate_vae(
    vae: str,
    revision: str | None,
    local_files_only: bool | None,
    dtype: torch.dtype,
    init: str = "pretrained",
    device: torch.device | None = None,
):
    """A VAE from another repo or folder (SDXL's fp16-fix), with the VAE at its root or in ``vae/``."""
    parts = open_components(vae, revision, local_files_only, dtype, init, device, key="model.vae")
    root = Path(parts.root if isinstance(parts, RandomFolder) else parts.src.ref)
    local = isinstance(parts, RandomFolder) or parts.src.local
    subfolder = "vae" if local and not (root / "config.json").is_file() else None
    return parts.vae(subfolder)
