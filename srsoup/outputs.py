"""The run-dir layout (DESIGN §2), atomic group commits, crash repair on resume, and summary.json.

A prompt x seed group is committed in order: its PNGs (each written to a temporary name, then renamed), its
trace rows, then its rewards.csv rows in one append + fsync. rewards.csv is the commit record: on resume a
group is complete only if all its rows are there; anything written after the last complete group is dropped.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REWARDS_CSV = "rewards.csv"
TRACE_CSV = "trace.csv"
SUMMARY_JSON = "summary.json"
IMAGES = "images"


def image_name(prompt_idx: int, seed: int, weight_idx: int) -> str:
    return f"{IMAGES}/p{prompt_idx:03d}_s{seed}_w{weight_idx:02d}.png"


def reward_columns(guided: list[str], scored: list[str]) -> list[str]:
    """rewards.csv (DESIGN §2): weights of the guided set, raw scores under every guided and eval reward."""
    return [
        "prompt_idx",
        "prompt",
        "seed",
        "weight_idx",
        *[f"w_{n}" for n in guided],
        *[f"r_{n}" for n in scored],
        "image",
        "reward_queries",
        "denoiser_evals",
    ]


def trace_columns(guided: list[str]) -> list[str]:
    """trace.csv: one row per step and chain."""
    return [
        "prompt_idx",
        "seed",
        "weight_idx",
        "step",
        "timestep",
        "phase",
        "sigma",
        *[f"reward_{s}_{n}" for n in guided for s in ("mean", "std")],
        *[f"bc_{n}" for n in guided],
    ]


def group_key(prompt_idx: int, seed: int) -> str:
    return f"p{prompt_idx:03d}_s{seed}"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def png_bytes(image: torch.Tensor) -> bytes:
    """PNG of an image [3, H, W] in [0, 1]; Pillow writes no timestamp, so equal pixels give equal bytes."""
    arr = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _csv_text(rows: Iterable[dict], columns: list[str], header: bool) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="raise")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(v) for k, v in row.items()})
    return buf.getvalue()


def _fmt(v):
    if isinstance(v, float):
        return "" if v != v else repr(v)  # NaN → empty cell; repr keeps every digit
    return v


def _append(path: Path, text: str) -> None:
    """One write + fsync: a group's rows land together or (after a crash) are cut at the last newline."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        data = text.encode()
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_rows(path: Path) -> tuple[list[str] | None, list[dict]]:
    if not path.exists():
        return None, []
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a torn last line from a crash mid-write
    reader = csv.DictReader(io.StringIO(text))
    rows = list(reader)
    return reader.fieldnames, rows


class RunDir:
    """Reads and writes one run dir; ``chains`` rows per group make a group complete."""

    def __init__(self, path: Path, reward_columns: list[str], trace_columns: list[str], chains: int):
        self.path = Path(path)
        self.reward_columns = reward_columns
        self.trace_columns = trace_columns
        self.chains = chains
        self.rewards_csv = self.path / REWARDS_CSV
        self.trace_csv = self.path / TRACE_CSV
        self.summary_json = self.path / SUMMARY_JSON

    def check_compatible(self, fingerprint: dict) -> str | None:
        """Why this run dir cannot be resumed with this config (None if it can)."""
        if self.summary_json.exists():
            old = json.loads(self.summary_json.read_text()).get("fingerprint")
            if old is not None and old != fingerprint:
                changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
                return (
                    f"run dir {self.path} holds a run with other settings ({', '.join(changed)}); "
                    "use a new hydra.run.dir"
                )
        header, _ = _read_rows(self.rewards_csv)
        if header is not None and header != self.reward_columns:
            return f"run dir {self.path} has a rewards.csv with other columns; use a new hydra.run.dir"
        return None

    def repair(self) -> set[tuple[int, int]]:
        """Drop what an interrupted run left after its last complete group; return the complete groups."""
        (self.path / IMAGES).mkdir(parents=True, exist_ok=True)
        for tmp in (self.path / IMAGES).glob("*.tmp"):
            tmp.unlink()
        for path in (self.rewards_csv, self.trace_csv):
            if path.exists() and _read_rows(path)[0] is None:
                path.unlink()  # torn inside its header (or empty): no row of it was ever complete
        header, rows = _read_rows(self.rewards_csv)
        counts: dict[tuple[int, int], int] = {}
        for r in rows:
            key = (int(r["prompt_idx"]), int(r["seed"]))
            counts[key] = counts.get(key, 0) + 1
        done = {k for k, n in counts.items() if n == self.chains}
        kept = [r for r in rows if (int(r["prompt_idx"]), int(r["seed"])) in done]
        if header is not None and (
            len(kept) != len(rows)
            or self.rewards_csv.stat().st_size != len(_csv_text(kept, header, True).encode())
        ):
            atomic_write_text(self.rewards_csv, _csv_text(kept, header, True))
        t_header, t_rows = _read_rows(self.trace_csv)
        if t_header is not None:
            t_kept = [r for r in t_rows if (int(r["prompt_idx"]), int(r["seed"])) in done]
            if len(t_kept) != len(t_rows) or not self.trace_csv.read_text().endswith("\n"):
                atomic_write_text(self.trace_csv, _csv_text(t_kept, t_header, True))
        return done

    def commit_group(self, images: dict[str, bytes], trace_rows: list[dict], reward_rows: list[dict]) -> None:
        for rel, data in images.items():
            atomic_write_bytes(self.path / rel, data)
        _append(self.trace_csv, _csv_text(trace_rows, self.trace_columns, not self.trace_csv.exists()))
        _append(self.rewards_csv, _csv_text(reward_rows, self.reward_columns, not self.rewards_csv.exists()))

    def rows(self) -> list[dict]:
        return _read_rows(self.rewards_csv)[1]

    def read_summary(self) -> dict:
        return json.loads(self.summary_json.read_text()) if self.summary_json.exists() else {}

    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.summary_json, json.dumps(summary, indent=2, sort_keys=False) + "\n")


class Ledger:
    """summary.json of a run: the run's description, what the committed rows hold, time spent, and status.

    ``static`` describes the run (method, settings, plan, fingerprint, config) and ``groups_total`` how many
    prompt x seed groups it has; the counts are read back from rewards.csv, the commit record, on every write.
    """

    def __init__(self, out: RunDir, static: dict, plan_by_reward: dict[str, int], start: float, resumed: bool):
        self.out, self.static, self.plan_by_reward, self.start = out, static, plan_by_reward, start
        previous = out.read_summary() if resumed else {}
        self.groups: dict[str, dict] = dict(previous.get("groups", {}))
        self.wall_before = float(previous.get("wall_seconds", 0.0))
        self.load_seconds = 0.0

    def write(self, status: str, error: str | None = None) -> dict:
        rows = self.out.rows()
        done = {group_key(int(r["prompt_idx"]), int(r["seed"])) for r in rows}
        by_reward = {n: 0 for n in self.plan_by_reward}
        for key in done:
            entry = self.groups.get(key) or {"reward_queries_by_reward": self.plan_by_reward}
            for n, q in entry["reward_queries_by_reward"].items():
                by_reward[n] += q
        counts = {
            "groups_complete": len(done),
            "images": len(rows),
            "reward_queries": sum(int(r["reward_queries"]) for r in rows),
            "reward_queries_by_reward": by_reward,
            "denoiser_evals": sum(int(r["denoiser_evals"]) for r in rows),
            "wall_seconds": round(self.wall_before + time.time() - self.start, 3),
            "timing": self.timing(),
        }
        summary = {"status": status, **self.static, **counts, "groups": self.groups}
        if error:
            summary["error"] = error
        self.out.write_summary(summary)
        return summary

    def timing(self) -> dict:
        """Seconds in model calls of the groups committed so far (all invocations) and in loading (this one)."""
        totals: dict[str, float] = {}
        for entry in self.groups.values():
            for k, v in entry.get("model_seconds", {}).items():
                totals[k] = totals.get(k, 0.0) + v
        return {
            **{f"{k}_seconds": round(v, 3) for k, v in totals.items()},
            "model_seconds": round(sum(totals.values()), 3),
            "load_seconds": round(self.load_seconds, 3),
        }
