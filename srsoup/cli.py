"""``srsoup run [overrides]`` (Hydra), ``srsoup report DIR...``, ``srsoup bench``: parse, then hand over."""

from __future__ import annotations

import sys

USAGE = """usage: srsoup <command> [args]

Sample Reward Soups: multi-reward guidance sweeps for text-to-image diffusion.

commands:
  run      sweep the preference weights and save images, rewards.csv, trace.csv, summary.json
           (Hydra: `srsoup run model=sd15 guidance=weighted_sum`, `-m` for sweeps, `--help` for options)
  plan     what a run will cost before anything is loaded: counts, parameters, memory, FLOPs, time
           (`srsoup plan model=sd15 experiment=...`, same overrides as run; `srsoup plan --help`)
  report   Pareto fronts, hypervolume and image grids from run or sweep dirs (`srsoup report --help`)
  bench    query efficiency, overhead and memory of the methods, every configuration a real run; KEY=VALUE
           overrides go to every run (`srsoup bench --quick model=sd15 model.pretrained=DIR`, `--help`)
"""

_state = {"task_started": False}


def _moved_key(argv: list[str]) -> str | None:
    """The error line for an override of a key that has moved (Hydra would only say it is not in the config)."""
    from srsoup.spec import MOVED_KEYS

    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        if key in MOVED_KEYS:
            return f"{key} is now the run key {MOVED_KEYS[key]}: set {MOVED_KEYS[key]}={value or 'N'} instead"
    return None


def _discard_unwritten(hydra_cfg) -> None:
    """Remove the run dir of a run refused before it wrote anything: Hydra made it and saved ``.hydra/`` and the
    log before the task saw its input, so bad input would leave a dir that is no run (and stops ``srsoup report
    outputs/*/*``). A dir holding anything else (a run to resume, the user's files) stays as it is."""
    import shutil
    from pathlib import Path

    run_dir = Path(hydra_cfg.runtime.output_dir)
    hydra_made = {str(hydra_cfg.output_subdir), f"{hydra_cfg.job.name}.log"}
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= hydra_made:
        shutil.rmtree(run_dir, ignore_errors=True)


def _run(argv: list[str]) -> int:
    from srsoup.compose import project_conf_dir, take_config_dir
    from srsoup.errors import SrsoupError

    argv = take_config_dir(argv)
    try:
        project_conf_dir()
    except SrsoupError as err:
        print(f"srsoup: error: {err}", file=sys.stderr)
        return 2
    moved = _moved_key(argv)
    if moved:
        print(f"srsoup: error: {moved}", file=sys.stderr)
        return 2
    import logging

    import hydra
    from omegaconf import DictConfig

    logging.raiseExceptions = False  # a full disk under srsoup.log must not print tracebacks between our lines

    from srsoup.config import register_configs
    from srsoup.errors import SrsoupError

    register_configs()

    @hydra.main(config_path="conf", config_name="config", version_base="1.3")
    def task(cfg: DictConfig) -> None:
        from srsoup import runner

        _state["task_started"] = True
        try:
            runner.run(cfg)
        except SrsoupError as err:
            from hydra.core.hydra_config import HydraConfig

            hydra_cfg = HydraConfig.get()
            if hydra_cfg.mode.name == "MULTIRUN":
                raise  # let the launcher mark this job failed and go on with the others
            _discard_unwritten(hydra_cfg)
            print(f"srsoup: error: {err}", file=sys.stderr)
            sys.exit(2)

    sys.argv = ["srsoup run", *argv]
    try:
        task()
    except KeyboardInterrupt as err:  # Ctrl-C: one line (how far it got, how to resume), never a traceback
        print(f"srsoup: {err}" if str(err) else "srsoup: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        # Hydra exits 1 on composition errors (unknown option, bad override): those are usage errors.
        return 2 if code == 1 and not _state["task_started"] else code
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "run":
        return _run(rest)
    if command == "plan":
        from srsoup.planning import main as plan_main

        return plan_main(rest)
    if command == "report":
        from srsoup.report import main as report_main

        return report_main(rest)
    if command == "bench":
        from srsoup.bench import main as bench_main

        return bench_main(rest)
    if command in ("--version", "version"):
        from srsoup import __version__

        print(f"srsoup {__version__}")
        return 0
    print(
        f"srsoup: error: unknown command {command!r}; valid: run, plan, report, bench (see srsoup --help)",
        file=sys.stderr,
    )
    return 2


def console_main() -> None:
    """Entry point of the ``srsoup`` console script."""
    try:
        code = main()
    except KeyboardInterrupt:
        print("srsoup: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    console_main()
