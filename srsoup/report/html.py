"""Render the report's tables as markdown (summary.md) and as one self-contained HTML page."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from .pareto import ref_text

CI_NOTE = "mean ± half-width of the 95% Student-t interval over prompts × seeds"


def _num(value, digits: int = 4) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def _tables(report) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headers, rows) of the run table and the per-weight table, as strings."""
    runs = [
        [_num(v, 6) for v in rec]
        for rec in report.hv_table[
            ["run", "method", "label", "status", "reward_queries", "denoiser_evals", "hypervolume", "note"]
        ].itertuples(index=False)
    ]
    rewards = [c[5:] for c in report.means.columns if c.startswith("mean_")]
    # Objectives first: they define the front; evaluation-only rewards follow.
    rewards = report.objectives + [r for r in rewards if r not in report.objectives]
    w_cols = [f"w_{r}" for r in report.objectives if f"w_{r}" in report.means]
    weights = []
    for rec in report.means.to_dict("records"):
        cells = [
            rec["run"],
            str(rec["weight_idx"]),
            "/".join(_num(rec[c], 3) or "–" for c in w_cols),
            str(rec["n"]),
        ]
        cells += [f"{_num(rec[f'mean_{r}'])} ± {_num(rec[f'ci_{r}'], 2) or '–'}" for r in rewards]
        weights.append(cells + ["yes" if rec["nondominated"] else ""])
    return [
        (
            "Runs and hypervolume",
            ["run", "method", "label", "status", "reward queries", "denoiser evals", "hypervolume", "note"],
            runs,
        ),
        (
            "Per-weight mean rewards",
            ["run", "weight", "/".join(report.objectives), "n"]
            + [f"{r}{' (eval)' if r not in report.objectives else ''}" for r in rewards]
            + ["non-dominated"],
            weights,
        ),
    ]


def _header_lines(report) -> list[str]:
    lines = [
        f"Objectives (guided rewards, maximised): {', '.join(report.objectives)}",
        f"Reference point: {ref_text(report.ref)} ({report.ref_source})",
        f"Hypervolume: {len(report.objectives)}-D, moocore, over each run's per-weight means",
        f"Cells: {CI_NOTE}",
    ]
    partial = [s.name for s in report.series if s.status == "partial"]
    if partial:
        lines.append(f"PARTIAL runs (not all prompts×seeds finished): {', '.join(partial)}")
    return lines


def markdown_summary(report, figures: list[str]) -> str:
    def md_cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    out = ["# srsoup report", ""] + [f"- {line}" for line in _header_lines(report)] + [""]
    if report.failed:
        out += ["## Failed jobs", ""] + [f"- `{r.name}` ({r.path}): {r.failure}" for r in report.failed] + [""]
    for title, headers, rows in _tables(report):
        out += [f"## {title}", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        out += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows] + [""]
    out += ["## Figures", ""] + [f"![{name}]({name})" for name in figures]
    return "\n".join(out) + "\n"


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def html_report(report, figures: list[Path]) -> str:
    """One HTML page with every figure inlined, so it can be mailed or archived alone."""
    e = html.escape
    body = ["<h1>srsoup report</h1>", "<ul>"] + [f"<li>{e(x)}</li>" for x in _header_lines(report)]
    body.append("</ul>")
    if report.failed:
        body += (
            ["<h2>Failed jobs</h2>", "<ul>"]
            + [f"<li><code>{e(r.name)}</code> ({e(str(r.path))}): {e(r.failure)}</li>" for r in report.failed]
            + ["</ul>"]
        )
    for title, headers, rows in _tables(report):
        body += [
            f"<h2>{e(title)}</h2>",
            "<table>",
            "<tr>" + "".join(f"<th>{e(h)}</th>" for h in headers) + "</tr>",
        ]
        body += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
        body.append("</table>")
    body.append("<h2>Figures</h2>")
    for path in figures:
        # Grids of 32 px images are enlarged already; keep browsers from blurring them further.
        cls = ' class="grid"' if path.name.startswith("grid") else ""
        body.append(
            f'<figure><img{cls} src="{_data_uri(path)}" alt="{e(path.name)}">'
            f"<figcaption>{e(path.name)}</figcaption></figure>"
        )
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #bbb;padding:3px 8px;font-size:13px}th{background:#eee}"
        "img{max-width:100%}img.grid{image-rendering:pixelated}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>srsoup report</title><style>{style}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
