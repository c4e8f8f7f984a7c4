"""The run config exactly as ``srsoup run`` composes it (for plan and bench), and where the project's configs are.

A project's own configs live in ``./conf`` of the working directory (or the folder ``$SRSOUP_CONF`` or
``--config-dir`` names); srsoup's Hydra search-path plugin (``hydra_plugins/srsoup_conf``) puts that folder
ahead of the packaged configs, for ``srsoup run`` and ``srsoup plan`` alike.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from srsoup.errors import SrsoupError

ENV = "SRSOUP_CONF"


def project_conf_dir() -> Path | None:
    """``$SRSOUP_CONF`` if set (it must be a folder), else ``./conf`` if it is one, else None."""
    named = os.environ.get(ENV)
    if named:
        folder = Path(named).expanduser()
        if not folder.is_dir():
            raise SrsoupError(f"{ENV}={named!r} is not a folder (the project's Hydra configs)")
        return folder.resolve()
    folder = Path("conf")
    return folder.resolve() if folder.is_dir() else None


def take_config_dir(argv: list[str]) -> list[str]:
    """Remove ``--config-dir DIR`` / ``-cd DIR`` / ``--config-dir=DIR`` from argv and set ``$SRSOUP_CONF`` to it.

    Hydra's own flag would put the folder *behind* the packaged configs; srsoup puts it ahead (see the plugin).
    """
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            os.environ[ENV] = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--config-dir="):
            os.environ[ENV] = arg.split("=", 1)[1]
        else:
            out.append(arg)
        i += 1
    return out


def compose(overrides: list[str]) -> DictConfig:
    """The composed config for these overrides; a composition error is one SrsoupError line."""
    import yaml
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from srsoup.config import register_configs

    register_configs()
    try:
        with initialize_config_module("srsoup.conf", version_base="1.3"):
            return hydra_compose("config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException, yaml.YAMLError) as err:
        # One line, but whole: a YAML error names the file on its last lines.
        raise SrsoupError(" ".join(ln.strip() for ln in str(err).strip().splitlines() if ln.strip())) from None
