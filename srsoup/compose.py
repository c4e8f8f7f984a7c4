"""The run config exactly as ``srsoup run`` composes it, for commands that run no Hydra job (plan, bench)."""

from __future__ import annotations

from omegaconf import DictConfig

from srsoup.errors import SrsoupError


def compose(overrides: list[str]) -> DictConfig:
    """The composed config for these overrides; a composition error is one SrsoupError line."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from srsoup.config import register_configs

    register_configs()
    try:
        with initialize_config_module("srsoup.conf", version_base="1.3"):
            return hydra_compose("config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise SrsoupError(str(err).strip().splitlines()[0]) from None
