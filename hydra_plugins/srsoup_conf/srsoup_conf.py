"""Puts the project's own configs (``./conf``, ``$SRSOUP_CONF``, ``--config-dir``) ahead of the packaged ones.

Only for srsoup's own config tree (a search path that holds srsoup's ``conf`` package): other Hydra applications in
the same environment are left alone. A file there with the name of a packaged option overrides it; new files
add options (``conf/experiment/my_study.yaml`` → ``experiment=my_study``).
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class SrsoupProjectConf(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if not any(_is_srsoup_conf(element.path) for element in search_path.get_path()):
            return
        try:
            from srsoup.compose import project_conf_dir
        except ImportError:  # an srsoup without project configs (an older checkout on the path)
            return
        folder = project_conf_dir()
        if folder is not None:
            search_path.prepend(provider="srsoup-project", path=f"file://{folder}")


def _is_srsoup_conf(path: str | None) -> bool:
    """``pkg://srsoup.conf`` (``python -m srsoup``, compose) or the package folder itself (the console script)."""
    return bool(path) and (path == "pkg://srsoup.conf" or path.rstrip("/").endswith("/srsoup/conf"))
