"""Figures of the report: Pareto fronts, hypervolume against reward queries, image grids."""

from __future__ import annotations

import itertools
import math
import textwrap
from pathlib import Path

import numpy as np

from .load import Run, Series
from .pareto import nondominated, ref_text

METHOD_COLOURS = {
    "srsoup": "tab:blue",
    "weighted_sum": "tab:orange",
    "single": "tab:green",
    "none": "black",
    "best_of_n": "tab:purple",
    "fk": "tab:red",
    "select": "tab:cyan",
}
# Methods without a colour of their own (a new method, a user's) take these, one each, in order of appearance.
SPARE_COLOURS = ("tab:red", "tab:cyan", "tab:olive", "tab:pink", "tab:brown", "tab:gray", "gold", "navy")
# none and single are reference points, drawn with markers no guided series uses.
REFERENCE_MARKERS = {"none": "*", "single": "^"}
SERIES_MARKERS = ("o", "s", "D", "v", "P", "X", "h")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window or need a display
    import matplotlib.pyplot as plt

    return plt


def _styles(series: list[Series]) -> list[tuple[str, str]]:
    """(colour, marker) per series: colour by method, marker distinguishes series of one method."""
    styles, used = [], {}
    others = list(dict.fromkeys(s.method for s in series if s.method not in METHOD_COLOURS))
    colours = {**METHOD_COLOURS, **{m: SPARE_COLOURS[i % len(SPARE_COLOURS)] for i, m in enumerate(others)}}
    for s in series:
        colour = colours[s.method]
        if s.method in REFERENCE_MARKERS:
            marker = REFERENCE_MARKERS[s.method]
        else:
            marker = SERIES_MARKERS[used.get(s.method, 0) % len(SERIES_MARKERS)]
            used[s.method] = used.get(s.method, 0) + 1
        styles.append((colour, marker))
    return styles


def _point_labels(s: Series, objectives: list[str]) -> list[str]:
    # With two rewards the first weight says it all; with more the index is shorter.
    col = f"w_{objectives[0]}"
    if len(objectives) == 2 and col in s.stats:
        return [f"{w:.2g}" for w in s.stats[col]]
    return [str(i) for i in s.stats["weight_idx"]]


def plot_pareto(series: list[Series], objectives: list[str], ref: np.ndarray, path: Path) -> None:
    """Per-weight means with 95% CI bars; one subplot per pair of rewards (2-D projections)."""
    plt = _pyplot()
    pairs = list(itertools.combinations(range(len(objectives)), 2)) or [(0, None)]
    ncols = min(3, len(pairs))
    nrows = math.ceil(len(pairs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.6 * ncols, 4.8 * nrows), squeeze=False)
    for ax, (i, j) in zip(axes.flat, pairs):
        for k, (s, style) in enumerate(zip(series, _styles(series))):
            _draw_series(ax, s, style, k, objectives, i, j)
        _label_axes(ax, series, objectives, ref, i, j)
    for ax in axes.flat[len(pairs) :]:
        ax.set_visible(False)
    _legend_and_title(fig, axes, objectives, ref, ncols, nrows)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _draw_series(ax, s: Series, style: tuple[str, str], k: int, objectives: list[str], i: int, j: int | None):
    """One series on the axes of rewards i (x) and j (y): points, CI bars, its front and weight labels."""
    colour, marker = style
    means = s.stats[[f"mean_{r}" for r in objectives]].to_numpy()
    cis = s.stats[[f"ci_{r}" for r in objectives]].to_numpy()
    if j is None:  # one reward: a strip of points per series
        x, y, xerr, yerr = np.full(len(means), k), means[:, i], None, cis[:, i]
    else:
        x, y, xerr, yerr = means[:, i], means[:, j], cis[:, i], cis[:, j]
    reference = s.method in REFERENCE_MARKERS
    ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="none", ecolor=colour, alpha=0.35, lw=1)
    ax.scatter(
        x,
        y,
        color=colour,
        marker=marker,
        s=180 if reference else 45,
        edgecolors="white" if reference else "none",
        zorder=3,
        label=f"{s.label}  HV={s.hypervolume:.4g}",
    )
    if reference:
        return
    if j is not None:
        front = nondominated(np.column_stack([x, y]))
        order = np.argsort(x[front])
        ax.step(x[front][order], y[front][order], where="pre", color=colour, lw=1.3)
    # Alternate label sides between series so neighbouring fronts stay readable.
    offset = (4, 4) if k % 2 == 0 else (4, -10)
    for xi, yi, text in zip(x, y, _point_labels(s, objectives)):
        ax.annotate(text, (xi, yi), xytext=offset, textcoords="offset points", fontsize=7, color=colour)


def _label_axes(ax, series: list[Series], objectives: list[str], ref: np.ndarray, i: int, j: int | None) -> None:
    if j is None:
        ax.set_xticks(range(len(series)), [s.label for s in series], rotation=20, fontsize=8)
        ax.axhline(ref[i], color="grey", ls=":", lw=1)
        ax.set_ylabel(objectives[i])
    else:
        ax.plot(ref[i], ref[j], marker="x", color="grey", ls="none")
        ax.annotate("ref", (ref[i], ref[j]), xytext=(4, 4), textcoords="offset points", fontsize=7, color="grey")
        ax.set_xlabel(objectives[i])
        ax.set_ylabel(objectives[j])
    ax.grid(alpha=0.3)


def _legend_and_title(fig, axes, objectives: list[str], ref: np.ndarray, ncols: int, nrows: int) -> None:
    handles, labels = axes.flat[0].get_legend_handles_labels()
    # Long labels (method, variant, hypervolume) get fewer columns so the legend stays within the figure.
    longest = max((len(label) for label in labels), default=0)
    ncol = max(1, min(3, len(labels), int(16 * 5.6 * ncols) // max(1, longest)))
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8, bbox_to_anchor=(0.5, 0), frameon=False)
    dims = f"{len(objectives)}-D" if len(objectives) > 1 else "1-D"
    notes = ["Per-weight mean reward, 95% t-CI bars", "step line: non-dominated front",
             f"point labels: {f'w_{objectives[0]}' if len(objectives) == 2 else 'weight index'}",
             f"hypervolume {dims} against ref {ref_text(ref)}"]  # fmt: skip
    fig.suptitle(textwrap.fill("; ".join(notes), width=int(13 * 5.6 * ncols)), fontsize=9)
    legend_rows = math.ceil(len(labels) / ncol)
    fig.tight_layout(rect=(0, 0.03 + 0.035 * legend_rows / nrows, 1, 1 - 0.06 / nrows))


def plot_queries_vs_hv(series: list[Series], ref: np.ndarray, path: Path) -> None:
    """Hypervolume of each series against the reward queries it spent."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for s, (colour, marker) in zip(series, _styles(series)):
        ax.scatter(
            s.total("reward_queries"), s.hypervolume, color=colour, marker=marker, s=60, zorder=3, label=s.label
        )
        ax.annotate(
            s.name,
            (s.total("reward_queries"), s.hypervolume),
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=7,
        )
    for method in dict.fromkeys(s.method for s in series):
        same = sorted((s.total("reward_queries"), s.hypervolume) for s in series if s.method == method)
        if len(same) > 1:
            ax.plot(*zip(*same), color=METHOD_COLOURS.get(method, "tab:brown"), lw=1, alpha=0.6)
    queries = [s.total("reward_queries") for s in series if s.total("reward_queries") > 0]
    if queries and max(queries) > 10 * min(queries):
        ax.set_xscale("log")
    ax.set_xlabel("reward queries (total)")
    ax.set_ylabel("hypervolume")
    ax.set_title(f"Hypervolume vs reward queries (ref {ref_text(ref)})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def image_grid(run: Run, path: Path, max_rows: int = 8, min_cell: int = 96) -> None:
    """Prompts×seeds (rows, at most `max_rows`) by weights (columns) of one run's images.

    Small images are enlarged by an integer factor with nearest-neighbour so pixels stay
    sharp; large ones are shrunk to 256 px so the embedded HTML stays a sane size.
    """
    from PIL import Image, ImageDraw, ImageFont

    rows = run.rows
    keys = sorted(set(zip(rows["prompt_idx"], rows["seed"])))[:max_rows]
    weights = sorted(rows["weight_idx"].unique())
    w_cols = [c for c in rows.columns if c.startswith("w_")]
    by_key = {(r.prompt_idx, r.seed, r.weight_idx): r for r in rows.itertuples()}

    def load(row) -> Image.Image | None:
        path = run.image_path(row.image)  # None outside the run dir: a report draws only the run's own images
        if path is None:
            return None
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except (OSError, ValueError):
            return None

    first = next((im for row in by_key.values() if (im := load(row)) is not None), None)
    native = min(first.size) if first else min_cell
    cell = native * math.ceil(min_cell / native) if native < min_cell else min(native, 256)
    font = ImageFont.load_default(size=12)
    # The header's left cell is as wide as the prompt column; reward names wrap instead of running into w0.
    header = [f"{run.name} ({run.preset})", *textwrap.wrap("w: " + " / ".join(c[2:] for c in w_cols), 28)]
    left, top, pad = 190, max(40, 8 + 15 * len(header)), 4
    grid = Image.new("RGB", (left + len(weights) * (cell + pad), top + len(keys) * (cell + pad)), "white")
    draw = ImageDraw.Draw(grid)
    draw.text((4, 4), "\n".join(header), fill="black", font=font)
    for c, weight_idx in enumerate(weights):
        sample = rows[rows["weight_idx"] == weight_idx].iloc[0]
        w_text = "/".join(f"{sample[col]:.2g}" for col in w_cols)
        draw.text((left + c * (cell + pad), 4), f"w{weight_idx}\n{w_text}", fill="black", font=font)
    for r, (prompt_idx, seed) in enumerate(keys):
        y = top + r * (cell + pad)
        prompt = (
            str(rows[rows["prompt_idx"] == prompt_idx]["prompt"].iloc[0])
            if "prompt" in rows
            else f"prompt {prompt_idx}"
        )
        lines = textwrap.wrap(prompt, 28)[:4] + [f"p{prompt_idx} seed {seed}"]
        draw.text((4, y + 4), "\n".join(lines), fill="black", font=font)
        for c, weight_idx in enumerate(weights):
            x = left + c * (cell + pad)
            row = by_key.get((prompt_idx, seed, weight_idx))
            im = load(row) if row is not None else None
            if im is None:
                draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill="#ccc")
                draw.text((x + 4, y + 4), "missing", fill="black", font=font)
                continue
            resample = Image.NEAREST if min(im.size) < cell else Image.LANCZOS
            grid.paste(im.resize((cell, cell), resample), (x, y))
    grid.save(path)
