"""Where model and reward files come from: a local folder, or a hub id at a pinned revision; one-line errors.

Every backbone and hub reward resolves its ``pretrained`` value here. A path that exists is local and loads with
``local_files_only``; a path-like value that does not exist is an error at once (rather than a confusing hub
lookup); anything else is a hub id, fetched into the hub cache unless ``local_files_only`` (null = follow
``HF_HUB_OFFLINE``). Gated models take their token from the environment (``HF_TOKEN`` or ``huggingface-cli
login``), never from a config. Any failure while loading becomes one line that names what is missing and the
``huggingface-cli download`` command that fetches it.

``init: random`` needs no files: a model or reward is built at its published architecture from configs shipped with
srsoup (``check_init``, ``check_shipped``), so any setting that asks for other files is an error there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from srsoup.errors import SrsoupError

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")
#: ``model.init`` / ``rewards.<name>.init``: load the released weights, or build the architecture with random ones
INITS = ("pretrained", "random")


def check_init(key: str, init: str) -> str:
    """``init`` itself, or one line naming the valid values."""
    if init not in INITS:
        raise SrsoupError(f"{key}={init!r}; valid: {', '.join(INITS)}")
    return init


def check_shipped(key: str, value, shipped, what: str) -> None:
    """``init: random`` builds ``what`` from configs shipped with srsoup: a setting asking for other files fails.

    ``value`` may be null or what the configs were shipped at (``shipped``); a revision shipped as null (configs
    that cite no pinned commit) also accepts ``main``.
    """
    valid = [shipped] if shipped is not None else (["main"] if key.endswith("revision") else [])
    if value is None or value in valid:
        return
    raise SrsoupError(
        f"{key}={value!r} cannot be had offline: init=random builds {what} from the configs shipped with srsoup; "
        f"valid: {' or '.join([*map(str, valid), 'null'])}"
    )


def offline_default(local_files_only: bool | None) -> bool:
    """``local_files_only`` as configured, or (null) whether HF_HUB_OFFLINE is set, read when loading."""
    if local_files_only is not None:
        return bool(local_files_only)
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _looks_like_path(ref: str) -> bool:
    return ref.startswith((".", "/", "~")) or ref.count("/") != 1 or os.sep == "\\"


@dataclass
class Source:
    """One place files come from, and how to say what is missing there.

    ``lead`` starts every message ("model", "reward 'aesthetic':"); ``key`` is the config key that points at a
    local folder instead (``model.pretrained``, ``rewards.aesthetic.pretrained``).
    """

    ref: str  # local path or hub id
    revision: str | None
    local: bool
    local_files_only: bool
    lead: str = "model"
    key: str = "model.pretrained"
    #: a miss asks for the whole repo (a model's components), not only the file that was missing
    whole_repo: bool = True

    @classmethod
    def resolve(
        cls,
        ref: str,
        revision: str | None = None,
        local_files_only: bool | None = None,
        *,
        lead: str = "model",
        key: str = "model.pretrained",
    ) -> Source:
        expanded = os.path.expanduser(str(ref))
        if Path(expanded).exists():
            return cls(expanded, None, True, True, lead, key, lead == "model")
        if _looks_like_path(expanded):
            noun = "model path" if lead == "model" else lead
            raise SrsoupError(
                f"{noun} {ref!r} does not exist (expected a local folder or a hub id org/name); set {key}=<folder>"
            )
        return cls(expanded, revision, False, offline_default(local_files_only), lead, key, lead == "model")

    @classmethod
    def reward(cls, name: str, ref: str, revision: str | None = None, local_files_only: bool | None = None):
        """A source of the reward family ``name`` (messages say ``reward 'name':``)."""
        return cls.resolve(
            ref, revision, local_files_only, lead=f"reward '{name}':", key=f"rewards.{name}.pretrained"
        )

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
            noun = "model folder" if self.lead == "model" else self.lead
            return SrsoupError(f"{noun} {self.ref} is incomplete or unreadable: {first}")
        rev = f" --revision {self.revision}" if self.revision else ""
        what = self.ref if self.whole_repo else f"{self.ref} {files}".strip()
        return SrsoupError(
            f"{self.lead} {what} is not available locally ({type(err).__name__}); download with "
            f"`huggingface-cli download {what}{rev}` or set {self.key}=<folder>"
        )

    @contextmanager
    def loading(self, files: str = "") -> Iterator[None]:
        """Any failure inside becomes this source's one-line error (SrsoupErrors pass unchanged)."""
        try:
            yield
        except SrsoupError:
            raise
        except Exception as err:  # noqa: BLE001 - any loading failure becomes one actionable line
            raise self.error(err, files) from None

    def file(self, filename: str, subfolder: str | None = None) -> str:
        """Path of one file of this source (downloaded into the hub cache unless offline)."""
        if self.local:
            base = Path(self.ref) / subfolder if subfolder else Path(self.ref)
            path = base / filename if base.is_dir() else base
            if not path.is_file():
                raise SrsoupError(f"{self.lead} {path} is missing")
            return str(path)
        return self.files(filename, subfolder=subfolder)[0]

    def files(self, *filenames: str, subfolder: str | None = None) -> list[str]:
        """Paths of several files; a hub miss names all of them in one download command."""
        if self.local:
            return [self.file(name, subfolder) for name in filenames]
        from huggingface_hub import hf_hub_download

        with self.loading(" ".join(f"{subfolder}/{n}" if subfolder else n for n in filenames)):
            return [hf_hub_download(self.ref, name, subfolder=subfolder, **self.kwargs) for name in filenames]

    def json(self, filename: str, subfolder: str | None = None) -> dict:
        with self.loading(f"{subfolder}/{filename}" if subfolder else filename):
            return json.loads(Path(self.file(filename, subfolder)).read_text())

    def sub(self, folder: str) -> Source | None:
        """A local subfolder of this source, if it exists."""
        if self.local and (Path(self.ref) / folder).is_dir():
            return Source(str(Path(self.ref) / folder), None, True, True, self.lead, self.key, self.whole_repo)
        return None

    def has_tokenizer(self) -> bool:
        return self.local and any((Path(self.ref) / f).is_file() for f in _TOKENIZER_FILES)
