"""Hub rewards at their published architecture with random weights (``rewards.<name>.init: random``), no download.

Each hub reward has a folder ``srsoup/rewards/configs/<reward>/`` laid out as its local folder is
(conf/reward/<reward>.yaml) without the weights: the model configs, a ``tokenizer_config.json`` from which
``srsoup.standins`` builds a tokenizer of the real sequence length, and ``source.json``: the reward's settings the
configs stand for (``settings``: hub ids and revisions; a setting that asks for anything else is an error), the
function that builds its models (``build``), where the configs come from and the published parameter counts. The
reward's own code then scores as with real weights: scores are noise; shapes, compute, memory and timing are real.
"""

from __future__ import annotations

import json
from pathlib import Path

from srsoup.errors import SrsoupError
from srsoup.hub import check_init, check_shipped

CONFIGS = Path(__file__).resolve().parent / "configs"


def shipped_rewards() -> list[str]:
    """The rewards ``init: random`` can build offline."""
    return sorted(p.name for p in CONFIGS.iterdir() if (p / "source.json").is_file())


def source(name: str) -> dict:
    """The ``source.json`` of the reward ``name``."""
    path = CONFIGS / name / "source.json"
    if not path.is_file():
        raise SrsoupError(
            f"rewards.{name}.init=random has no shipped architecture; valid for: {', '.join(shipped_rewards())}"
        )
    return json.loads(path.read_text())


def shipped_folder(name: str, init: str, **settings) -> Path | None:
    """None for ``init: pretrained``; for ``random`` the reward's shipped folder, once each of ``settings`` (its
    yaml keys: ``pretrained``, hub ids, revisions) is null or what the shipped configs stand for."""
    if check_init(f"rewards.{name}.init", init) == "pretrained":
        return None
    shipped = source(name)["settings"]
    for key, value in settings.items():
        check_shipped(f"rewards.{name}.{key}", value, shipped[key], f"reward '{name}'")
    return CONFIGS / name


def read_json(folder: Path, filename: str) -> dict:
    return json.loads((folder / filename).read_text())


def tokenizer(folder: Path):
    """The stand-in for the tokenizer ``folder/tokenizer_config.json`` describes."""
    from srsoup.standins import standin_tokenizer

    return standin_tokenizer(read_json(folder, "tokenizer_config.json"))
