"""Pin the hub revisions of the model and reward configs to commit ids (needs hub access).

Every ``*revision`` key in ``srsoup/conf/model/*.yaml`` and ``srsoup/conf/reward/*.yaml`` whose value is not a
40-hex commit id (``null``, ``main``, a tag) is resolved to the commit its repo's ``main`` (or that tag) points
to now, through ``huggingface_hub.HfApi.model_info``. The repo a revision belongs to is the key of the same
prefix: ``revision`` → ``repo`` or ``pretrained``; ``clip_revision`` → ``clip``; ``mlp_revision`` → ``mlp_repo``.

    python -m srsoup.pin_revisions            # print what would change (make pin-revisions)
    python -m srsoup.pin_revisions --write    # rewrite the yaml lines in place (comments kept)

Gated repos (SD3.5) need a token: ``huggingface-cli login`` or ``HF_TOKEN`` in the environment.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parent / "conf"  # the package's own configs, wherever it is installed
COMMIT = re.compile(r"^[0-9a-f]{40}$")


def repo_key(cfg, key: str) -> str | None:
    """The key naming the repo that the revision key ``key`` pins."""
    prefix = key[: -len("revision")].rstrip("_")
    candidates = [prefix, f"{prefix}_repo"] if prefix else ["repo", "pretrained"]
    return next((k for k in candidates if isinstance(cfg.get(k), str)), None)


def unpinned(path: Path) -> list[tuple[str, str, str | None]]:
    """(revision key, repo id, current value) of every revision in one yaml that is not a commit id."""
    cfg = OmegaConf.load(path)
    out = []
    for key in cfg:
        if not str(key).endswith("revision"):
            continue
        value = cfg.get(key)
        if isinstance(value, str) and COMMIT.match(value):
            continue
        repo = repo_key(cfg, str(key))
        if repo and "/" in cfg[repo]:
            out.append((str(key), cfg[repo], value))
    return out


def hub_commit(repo: str, revision: str | None) -> str:
    from huggingface_hub import HfApi

    return HfApi().model_info(repo, revision=revision or "main").sha


def rewrite(path: Path, key: str, sha: str) -> None:
    """Replace the value of a top-level ``key:`` line, keeping its comment (marked as pinned)."""
    lines = path.read_text().splitlines(keepends=True)
    pattern = re.compile(rf"^{re.escape(key)}:\s*[^#\n]*(#.*)?$")
    for i, line in enumerate(lines):
        if pattern.match(line.rstrip("\n")):
            lines[i] = f"{key}: {sha}  # pinned commit (srsoup.pin_revisions)\n"
            path.write_text("".join(lines))
            return
    raise ValueError(f"{path}: no top-level line for {key!r}")


def main(argv: list[str] | None = None, resolve: Callable[[str, str | None], str] = hub_commit) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the yaml files (default: print only)")
    parser.add_argument("--conf", type=Path, default=CONF, help="config folder (default: the package's)")
    args = parser.parse_args(argv)
    failed = 0
    for path in sorted([*(args.conf / "model").glob("*.yaml"), *(args.conf / "reward").glob("*.yaml")]):
        for key, repo, value in unpinned(path):
            try:
                sha = resolve(repo, value)
            except Exception as err:  # noqa: BLE001 - report every repo, then fail once
                print(f"{path.relative_to(args.conf)}: {key} ({repo}): cannot resolve: {err}".splitlines()[0])
                failed += 1
                continue
            print(f"{path.relative_to(args.conf)}: {key}: {value} -> {sha} ({repo})")
            if args.write:
                rewrite(path, key, sha)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
