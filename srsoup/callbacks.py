"""srsoup's Hydra callback: an output dir that cannot be made is one error line, and no secret stays in .hydra/.

Hydra makes the run (or sweep) dir and saves ``.hydra/`` before the task starts, so these checks hook into its
callbacks (``hydra.callbacks`` in config.yaml): ``on_run_start`` / ``on_multirun_start`` make the dir first and
turn a failure into ``srsoup: error: …`` and exit 2; ``on_job_start`` rewrites the saved configs with literal
header values redacted (srsoup/redact.py; ``${oc.env:…}`` values are saved unresolved by Hydra already).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf


def _make_dir(key: str, value: str) -> None:
    """Create ``value`` as Hydra will, or end the command with one line naming the key and why."""
    path = Path(value)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(f"[Errno 13] Permission denied: '{path}'")
    except OSError as err:
        why = err.strerror or str(err)
        print(
            f"srsoup: error: {key}={value!r} cannot be created or written ({why}); choose a directory you can "
            f"write, e.g. {key}=outputs/my_run",
            file=sys.stderr,
        )
        sys.exit(2)


class SrsoupCallback(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _make_dir("hydra.run.dir", str(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _make_dir("hydra.sweep.dir", str(config.hydra.sweep.dir))

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from srsoup.redact import Secrets, scrub_files

        task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        try:
            resolved = OmegaConf.to_container(task, resolve=True)
        except Exception:  # noqa: BLE001 - an unresolvable config fails in the task with its own line
            return
        literals = {s for s in Secrets(task, resolved).literals if len(s) >= 4}
        if not literals:
            return
        hydra = config.hydra
        files = []
        if hydra.output_subdir is not None:
            saved = Path(hydra.runtime.output_dir) / str(hydra.output_subdir)
            files += [saved / name for name in ("config.yaml", "overrides.yaml", "hydra.yaml")]
        if hydra.mode == RunMode.MULTIRUN:
            files.append(Path(str(hydra.sweep.dir)) / "multirun.yaml")
        scrub_files(files, literals)
