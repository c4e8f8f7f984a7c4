"""Analyse loaded runs (per-weight statistics, fronts, hypervolume) and write the report files."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .compare import Yardstick
from .load import ReportError, Run, Series, find_runs, group_runs, objective_rewards
from .pareto import default_ref, hypervolume, per_weight_stats, ref_text

HV_COLUMNS = (
    "run",
    "method",
    "reward_queries",
    "denoiser_evals",
    "hypervolume",
    "ref_point",
    "status",
    "label",
    "note",
)


@dataclass
class Report:
    """Everything the report shows; `hv_table` and `means` are what the CSVs hold."""

    runs: list[Run]
    series: list[Series]
    objectives: list[str]
    ref: np.ndarray
    ref_source: str
    hv_table: pd.DataFrame
    means: pd.DataFrame
    files: list[Path] = field(default_factory=list)

    @property
    def failed(self) -> list[Run]:
        return [r for r in self.runs if r.status == "failed"]


def analyse(runs: list[Run], ref: list[float] | None = None, margin: float = 0.05) -> Report:
    """Group runs, compute per-weight means, fronts and hypervolume against one reference."""
    series = group_runs(runs)
    if not series:
        reasons = "; ".join(f"{r.name}: {r.failure}" for r in runs)
        raise ReportError(f"no run with rewards to report ({reasons})")
    objectives = objective_rewards(series)
    for s in series:
        s.stats = per_weight_stats(s.rows, objectives)
    points = np.concatenate([s.stats[[f"mean_{r}" for r in objectives]].to_numpy() for s in series])
    stick = yardstick_of(series, objectives) if ref is None else None
    if stick is not None:
        ref_arr, source = stick.low, YARDSTICK_SOURCE
    elif ref is None:
        ref_arr, source = default_ref(points, margin), f"default: per-reward min − {margin:g}×range"
    else:
        if len(ref) != len(objectives):
            raise ReportError(
                f"reference point (--ref) {','.join(f'{v:g}' for v in ref)} has {len(ref)} values; "
                f"expected {len(objectives)}, one per guided reward {objectives}"
            )
        ref_arr, source = np.asarray(ref, dtype=float), "given by --ref"
    for s in series:
        front = s.stats[[f"mean_{r}" for r in objectives]].to_numpy()
        s.hypervolume = stick.hypervolume(front) if stick else hypervolume(front, ref_arr)

    records = [
        {
            "run": s.name,
            "method": s.method,
            "reward_queries": s.total("reward_queries"),
            "denoiser_evals": s.total("denoiser_evals"),
            "hypervolume": s.hypervolume,
            "ref_point": ref_text(ref_arr),
            "status": s.status,
            "label": s.label,
            "note": s.note,
        }
        for s in series
    ] + [
        {
            "run": r.name,
            "method": r.summary.get("method", ""),
            "reward_queries": "",
            "denoiser_evals": "",
            "hypervolume": float("nan"),
            "ref_point": ref_text(ref_arr),
            "status": "failed",
            "label": "",
            "note": r.failure,
        }
        for r in runs
        if r.status == "failed"
    ]
    means = pd.concat([s.stats.assign(run=s.name, label=s.label) for s in series], ignore_index=True)
    means = means[["run", "label"] + [c for c in means.columns if c not in ("run", "label")]]
    return Report(runs, series, objectives, ref_arr, source, pd.DataFrame(records, columns=HV_COLUMNS), means)


YARDSTICK_SOURCE = (
    "yardstick: per reward, the lowest mean of the unguided and single-reward runs; hypervolume of rewards "
    "normalised by those runs' range"
)


def yardstick_of(series: list[Series], objectives: list[str]) -> Yardstick | None:
    """The fixed scale of the setting when the compared runs include ``none`` and a ``single`` run per reward."""
    nones = [s for s in series if s.method == "none"]
    singles = {s.runs[0].summary.get("reward"): s for s in series if s.method == "single"}
    if not nones or not set(objectives) <= set(singles):
        return None
    runs = [nones[0], *(singles[r] for r in objectives)]
    points = np.concatenate([s.stats[[f"mean_{r}" for r in objectives]].to_numpy() for s in runs])
    try:
        return Yardstick(points)
    except ValueError:
        return None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def write_report(report: Report, out: Path, max_grid_rows: int = 8) -> list[Path]:
    """Write CSVs, figures, summary.md and a self-contained report.html into `out`."""
    from . import html, plots

    out.mkdir(parents=True, exist_ok=True)
    files = [out / "hypervolume.csv", out / "per_weight.csv", out / "pareto.png"]
    report.hv_table.to_csv(files[0], index=False)
    report.means.to_csv(files[1], index=False)
    plots.plot_pareto(report.series, report.objectives, report.ref, files[2])
    if len({s.total("reward_queries") for s in report.series}) > 1:
        files.append(out / "queries_vs_hv.png")
        plots.plot_queries_vs_hv(report.series, report.ref, files[-1])
    usable = [r for r in report.runs if r.rows is not None]
    for k, run in enumerate(usable):
        files.append(out / ("grid.png" if k == 0 else f"grid_{_safe(run.name)}.png"))
        plots.image_grid(run, files[-1], max_rows=max_grid_rows)
    files.append(out / "summary.md")
    files[-1].write_text(html.markdown_summary(report, [f.name for f in files if f.suffix == ".png"]))
    files.append(out / "report.html")
    files[-1].write_text(html.html_report(report, [f for f in files if f.suffix == ".png"]))
    report.files = files
    return files


def build_report(
    dirs: list[str | Path],
    out: str | Path | None = None,
    ref: list[float] | None = None,
    margin: float = 0.05,
    max_grid_rows: int = 8,
) -> Report:
    """Load run/sweep dirs, analyse them and write the report (default: `report/` in dirs[0])."""
    report = analyse(find_runs(dirs), ref=ref, margin=margin)
    write_report(report, Path(out) if out else Path(dirs[0]) / "report", max_grid_rows)
    return report
