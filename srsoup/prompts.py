"""The run's prompts: a list in the config, or a prompt file."""

from __future__ import annotations

from pathlib import Path

from srsoup.errors import SrsoupError


def load_prompts(texts: list[str] | None, path: str | None) -> list[str]:
    """``prompts.path`` (one prompt a line; blank lines and ``#`` comments skipped) if set, else the texts."""
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise SrsoupError(f"prompts.path={path!r} does not exist (a text file, one prompt a line)")
        prompts = [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        if not prompts:
            raise SrsoupError(f"prompts.path={path!r} holds no prompts")
        return prompts
    prompts = [str(t) for t in texts or []]
    if not prompts or any(not t.strip() for t in prompts):
        raise SrsoupError(f"prompts.texts={prompts!r}: give at least one non-empty prompt, or prompts.path=FILE")
    return prompts
