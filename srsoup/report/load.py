"""Find and read run dirs and Hydra multirun sweep dirs, and group runs into compared series."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

# Methods that guide one reward or none: they are compared in the guided set's space of the
# multi-reward runs, not used to define it.
REFERENCE_METHODS = ("none", "single")
# Config keys that do not change the method, so runs differing only in them are pooled; runs that differ only in
# prompts.shard are the shards of one prompt set (a job array), merged into one series.
POOLED_CONFIG_KEYS = ("seeds", "device", "hydra")
POOLED_PROMPT_KEYS = ("shard",)
REQUIRED_COLUMNS = ("prompt_idx", "seed", "weight_idx", "image")


class ReportError(ValueError):
    """Bad input to the report: the message names the bad value."""


@dataclass
class Run:
    """One run dir: its summary, its rows (None when the job failed) and why it failed."""

    path: Path
    name: str
    summary: dict
    rows: pd.DataFrame | None
    status: str  # complete | partial | failed
    failure: str = ""

    @property
    def method(self) -> str:
        return str(self.summary.get("method", "unknown"))

    @property
    def preset(self) -> str:
        """The guidance config the run was made with (``srsoup_pool``); its method for runs that do not say."""
        return str(self.summary.get("guidance_preset") or self.method)

    @property
    def rewards(self) -> list[str]:
        """The guided reward set, in w_ column order."""
        if "rewards" in self.summary:
            return [str(r) for r in self.summary["rewards"]]
        cols = [] if self.rows is None else self.rows.columns
        return [c[2:] for c in cols if c.startswith("w_")]

    @property
    def config_key(self) -> str:
        """Identity of the method and config; runs sharing it are pooled into one series."""
        config = self.summary.get("config")
        if not isinstance(config, dict):
            return f"{self.method}|{self.path}"
        kept = {k: v for k, v in config.items() if k not in POOLED_CONFIG_KEYS}
        if isinstance(kept.get("prompts"), dict):
            kept["prompts"] = {k: v for k, v in kept["prompts"].items() if k not in POOLED_PROMPT_KEYS}
        return f"{self.method}|{json.dumps(kept, sort_keys=True, default=str)}"

    @property
    def shard(self) -> tuple[int, int]:
        """(prompts.shard, prompts.num_shards) of the run; (0, 1) when unsharded."""
        prompts = (self.summary.get("config") or {}).get("prompts") or {}
        try:
            return int(prompts.get("shard", 0)), int(prompts.get("num_shards", 1))
        except (TypeError, ValueError):
            return 0, 1

    def image_path(self, rel) -> Path | None:
        """The file an image cell names, if it lies inside the run dir (absolute and ../ paths are refused)."""
        root = self.path.resolve()
        path = (root / str(rel)).resolve()
        return path if path.is_relative_to(root) and path.is_file() else None


@dataclass
class Series:
    """Runs of one method and config, pooled: one set of per-weight points in the plots."""

    runs: list[Run]
    label: str = ""
    stats: pd.DataFrame | None = None  # filled by pareto.per_weight_stats
    hypervolume: float = float("nan")
    extras: dict = field(default_factory=dict)
    failed_shards: list[int] = field(default_factory=list)  # shards of this series whose job failed

    @property
    def method(self) -> str:
        return self.runs[0].method

    @property
    def name(self) -> str:
        return "+".join(r.name for r in self.runs)

    @property
    def status(self) -> str:
        incomplete = any(r.status == "partial" for r in self.runs) or self.missing_shards or self.failed_shards
        return "partial" if incomplete else "complete"

    @property
    def num_shards(self) -> int:
        return max(r.shard[1] for r in self.runs)

    @property
    def missing_shards(self) -> list[int]:
        """Shards of the prompt set with no run (a job that never ran or never wrote) nor a failed one."""
        present = {r.shard[0] for r in self.runs} | set(self.failed_shards)
        return [i for i in range(self.num_shards) if i not in present]

    @property
    def note(self) -> str:
        """What a merged sharded series lacks (empty when unsharded or whole)."""
        if self.num_shards == 1:
            return ""
        merged = len({r.shard[0] for r in self.runs})
        parts = [f"{merged} of {self.num_shards} shards merged"]
        if self.missing_shards:
            parts.append(f"missing shards {', '.join(map(str, self.missing_shards))}")
        if self.failed_shards:
            parts.append(f"failed shards {', '.join(map(str, self.failed_shards))}")
        return "; ".join(parts)

    @property
    def rows(self) -> pd.DataFrame:
        rows = pd.concat([r.rows for r in self.runs], ignore_index=True)
        # Identical configs give identical images for a (prompt, seed): count each once. Sorted, so that shards
        # merged in any order give the statistics of the unsharded run to the last bit.
        rows = rows.drop_duplicates(["prompt_idx", "seed", "weight_idx"])
        return rows.sort_values(["prompt_idx", "seed", "weight_idx"], kind="stable").reset_index(drop=True)

    def total(self, key: str) -> int:
        return int(sum(int(r.summary.get(key, 0) or 0) for r in self.runs))


def _is_run_dir(path: Path) -> bool:
    return any((path / f).exists() for f in ("rewards.csv", "summary.json", "FAILED"))


def _job_dirs(path: Path) -> list[Path]:
    jobs = [p for p in path.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(jobs, key=lambda p: int(p.name))


def load_run(path: str | Path, name: str | None = None) -> Run:
    """Read one run dir; a job without usable rows comes back with status 'failed'."""
    path = Path(path)
    name = name or path.name
    summary: dict = {}
    if (path / "summary.json").exists():
        try:
            summary = json.loads((path / "summary.json").read_text())
        except (OSError, ValueError) as err:
            return Run(path, name, {}, None, "failed", f"unreadable summary.json: {err}")
    if (path / "FAILED").exists():
        reason = (path / "FAILED").read_text(errors="replace").strip().splitlines()
        return Run(path, name, summary, None, "failed", reason[0] if reason else "FAILED marker")
    if summary.get("status") == "failed":
        return Run(path, name, summary, None, "failed", str(summary.get("error", "status failed")))
    if not (path / "rewards.csv").exists():
        return Run(path, name, summary, None, "failed", "no rewards.csv")
    try:
        rows = pd.read_csv(path / "rewards.csv")
    except (OSError, ValueError) as err:
        return Run(path, name, summary, None, "failed", f"unreadable rewards.csv: {err}")
    missing = [c for c in REQUIRED_COLUMNS if c not in rows.columns]
    if missing or rows.empty:
        why = f"rewards.csv lacks columns {missing}" if missing else "rewards.csv has no rows"
        return Run(path, name, summary, None, "failed", why)
    # A run without a summary was cut off before its first commit finished: treat as partial.
    status = "partial" if summary.get("status", "partial") != "complete" else "complete"
    return Run(path, name, summary, rows, status)


def find_runs(dirs: list[str | Path]) -> list[Run]:
    """Load every run dir given, recursing one level into sweep dirs for numbered job dirs."""
    found: list[tuple[Path, Path | None]] = []  # (run dir, sweep dir it came from)
    for d in map(Path, dirs):
        if not d.is_dir():
            raise ReportError(f"{str(d)!r} is not a directory")
        if (d / "multirun.yaml").exists() or (not _is_run_dir(d) and _job_dirs(d)):
            jobs = _job_dirs(d)
            if not jobs:
                raise ReportError(f"sweep dir {str(d)!r} has no numbered job dirs")
            found += [(j, d) for j in jobs]
        elif _is_run_dir(d):
            found.append((d, None))
        else:
            raise ReportError(
                f"{str(d)!r} is neither a run dir (rewards.csv, summary.json) "
                "nor a multirun sweep dir (multirun.yaml, numbered job dirs)"
            )
    names = [p.name for p, _ in found]
    runs = []
    for path, sweep in found:
        # Job dirs are named 0, 1, ...: prefix the sweep's name only where names collide.
        name = path.name
        if names.count(name) > 1:
            name = f"{(sweep or path.parent).name}/{path.name}"
        runs.append(load_run(path, name))
    return runs


def _flatten(config: dict, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def group_runs(runs: list[Run]) -> list[Series]:
    """Pool usable runs by method and config; label each series by what sets it apart."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        if run.rows is not None:
            groups.setdefault(run.config_key, []).append(run)
    series = [Series(members) for members in groups.values()]
    by_key = {s.runs[0].config_key: s for s in series}
    for run in runs:
        if run.rows is None and run.config_key in by_key and run.shard[1] > 1:
            by_key[run.config_key].failed_shards.append(run.shard[0])
    for s in series:
        preset = s.runs[0].preset
        same_preset = [o for o in series if o.runs[0].preset == preset]
        s.label = preset
        if len(same_preset) > 1:
            flats = [_flatten(o.runs[0].summary.get("config") or {}) for o in same_preset]
            mine = _flatten(s.runs[0].summary.get("config") or {})
            keys = sorted({k for f in flats for k in f if len({g.get(k) for g in flats}) > 1})
            keys = [k for k in keys if k.split(".")[0] not in POOLED_CONFIG_KEYS]
            diff = ", ".join(f"{k.split('.')[-1]}={mine.get(k, '-')}" for k in keys[:3])
            s.label = f"{preset} [{diff or s.name}]"
        if s.status == "partial":
            s.label += " (partial)"
    return series


def objective_rewards(series: list[Series]) -> list[str]:
    """The guided reward set that spans the objective space; error if compared runs disagree."""
    guided = [s for s in series if s.method not in REFERENCE_METHODS]
    if not guided:
        # Only reference runs: their guided rewards together span the space.
        objectives = list(dict.fromkeys(r for s in series for run in s.runs for r in run.rewards))
    else:
        objectives = guided[0].runs[0].rewards
        for s in guided:
            for run in s.runs:
                if set(run.rewards) != set(objectives):
                    raise ReportError(
                        f"runs have different guided reward sets: {guided[0].runs[0].name} has "
                        f"{objectives}, {run.name} has {run.rewards}"
                    )
    if not objectives:
        raise ReportError(f"run {series[0].name!r} names no guided rewards (no w_ columns)")
    for s in series:
        for run in s.runs:
            missing = [r for r in objectives if f"r_{r}" not in run.rows.columns]
            if missing:
                raise ReportError(f"run {run.name!r} has no score columns for rewards {missing}")
    return objectives
