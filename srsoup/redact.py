"""Keep secrets out of the run dir: HTTP header values and ``${oc.env:…}`` values are never written resolved.

A secret leaf of the config is one under a ``headers`` key, or one whose written value reads an environment
variable (``"Bearer ${oc.env:REWARD_TOKEN}"``). summary.json's config and the resume fingerprint show such a leaf
as it is written when that names the variable (nothing secret in it), otherwise as ``<redacted>``; any other leaf
whose value equals a secret (an interpolation of one) is ``<redacted>`` too. Hydra saves ``.hydra/*.yaml`` (and a
sweep's ``multirun.yaml``) unresolved, so only literal header values can land there: ``scrub_files`` replaces
them at job start (srsoup's Hydra callback).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

REDACTED = "<redacted>"
ENV = "oc.env:"


def _leaves(node: Any, path: tuple = ()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, (*path, i))
    else:
        yield path, node


def _get(node: Any, path: tuple) -> Any:
    for key in path:
        node = node[key]
    return node


class Secrets:
    """The secret leaves of a config: path → what to show instead; and their resolved values."""

    def __init__(self, cfg: DictConfig, resolved: dict):
        written = OmegaConf.to_container(cfg, resolve=False)
        written = {k: v for k, v in written.items() if k != "hydra"}
        self.shown: dict[tuple, str] = {}
        self.values: set[str] = set()
        self.literals: set[str] = set()  # header values written as such: these are what .hydra/ can hold
        for path, value in _leaves(written):
            text = value if isinstance(value, str) else None
            from_env = text is not None and "${" in text and ENV in text
            if not from_env and "headers" not in path:
                continue
            self.shown[path] = text if from_env else REDACTED
            try:
                secret = _get(resolved, path)
            except (KeyError, IndexError, TypeError):
                continue
            if isinstance(secret, str) and secret:
                self.values.add(secret)
                if text is not None and "${" not in text:
                    self.literals.add(secret)

    def redact(self, resolved: Any) -> Any:
        """A copy of ``resolved`` (the config or part of it) with every secret shown as written or redacted."""
        return self._walk(resolved, ())

    def _walk(self, node: Any, path: tuple) -> Any:
        if isinstance(node, dict):
            return {k: self._walk(v, (*path, k)) for k, v in node.items()}
        if isinstance(node, list):
            return [self._walk(v, (*path, i)) for i, v in enumerate(node)]
        if path in self.shown:
            return self.shown[path]
        if isinstance(node, str) and len(node) >= 4 and node in self.values:
            return REDACTED
        return node

    def scrub(self, value: Any) -> Any:
        """``value`` (anything JSON-like) with every string equal to a secret replaced, by value alone."""
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub(v) for v in value]
        return REDACTED if isinstance(value, str) and value in self.values else value


def scrub_files(paths: list[Path], literals: set[str]) -> None:
    """Replace every literal secret in these text files (Hydra's saved configs), rewriting only what changes."""
    from srsoup.outputs import atomic_write_text

    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        new = text
        for secret in sorted(literals, key=len, reverse=True):
            new = new.replace(secret, REDACTED)
        if new != text:
            atomic_write_text(path, new)
