"""The run-dir layout (DESIGN §2), atomic group commits, crash repair on resume, the lock, and summary.json.

A prompt x seed group is committed in order: its PNGs (each written to a temporary name, then renamed), its
trace rows (and samples.csv rows, for a method that picks from a pool of samples), then its rewards.csv rows in
one append + fsync. rewards.csv is the commit record: on resume a
group is complete only if all its rows are there and its PNGs are whole; anything written after the last
complete group is dropped, so a run cut at any byte (kill -9, a full disk) resumes to the uninterrupted result.
One process at a time writes a run dir (an flock on ``.srsoup/lock``); ``.srsoup/fingerprint.json`` keeps the
settings the rows were made with, so a resume stays safe when summary.json is lost.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from srsoup.errors import SrsoupError

log = logging.getLogger("srsoup")
REWARDS_CSV = "rewards.csv"
TRACE_CSV = "trace.csv"
SAMPLES_CSV = "samples.csv"
SUMMARY_JSON = "summary.json"
IMAGES = "images"
STATE = ".srsoup"  # the lock and the fingerprint: run-dir bookkeeping, not results
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk every complete PNG ends with

# A prompt is one CSV field; the csv module refuses fields over 131,072 characters by default, which would make a
# committed long prompt unreadable on resume. Python's own limit is a C long.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


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


def sample_columns(reward_columns: list[str]) -> list[str]:
    """samples.csv: one row per sample of a pool (best_of_n), its scores under every guided and eval reward."""
    return ["prompt_idx", "seed", "sample", *[c for c in reward_columns if c.startswith("r_")]]


def group_key(prompt_idx: int, seed: int) -> str:
    return f"p{prompt_idx:03d}_s{seed}"


def group_seed(key: str) -> int:
    """The seed of a ``group_key`` ("p003_s2" → 2)."""
    return int(key.rsplit("_s", 1)[1])


def _write_all(fd: int, data: bytes) -> None:
    """All of ``data`` to ``fd``: the one place run-dir bytes are written (tests cut it to fake a full disk)."""
    while data:
        data = data[os.write(fd, data) :]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to ``path.tmp``, fsync, rename over ``path``: readers see the old file or the new one, whole."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()  # a full disk leaves no partial temp file behind (repair would remove it anyway)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def png_bytes(image: torch.Tensor) -> bytes:
    """PNG of an image [3, H, W] in [0, 1]; Pillow writes no timestamp, so equal pixels give equal bytes."""
    arr = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def png_complete(path: Path) -> bool:
    """Whether ``path`` is a PNG that was written to its end (signature first, IEND chunk last)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(PNG_SIGNATURE))
            f.seek(0, os.SEEK_END)
            if f.tell() < len(PNG_SIGNATURE) + len(PNG_END):
                return False
            f.seek(-len(PNG_END), os.SEEK_END)
            return head == PNG_SIGNATURE and f.read() == PNG_END
    except OSError:
        return False


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
        _write_all(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_text(path: Path) -> str:
    """The file as written: no newline translation, so a prompt holding \\r\\n reads back byte for byte."""
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def _read_rows(path: Path) -> tuple[list[str] | None, list[dict]]:
    """Header and complete rows of a CSV the run wrote; a torn last line (a crash mid-append) is left out."""
    if not path.exists():
        return None, []
    try:
        text = _read_text(path)
        if text and not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = list(reader)
        header = reader.fieldnames
    except (csv.Error, UnicodeDecodeError) as err:
        raise SrsoupError(
            f"{path} is not a CSV this run wrote ({str(err).splitlines()[0]}); move it away to start over, "
            "or use a new hydra.run.dir"
        ) from None
    return header, rows


def _group_of(row: dict, path: Path, line: int) -> tuple[int, int]:
    try:
        return int(row["prompt_idx"]), int(row["seed"])
    except (KeyError, TypeError, ValueError):
        raise SrsoupError(
            f"{path} row {line} has prompt_idx={row.get('prompt_idx')!r}, seed={row.get('seed')!r}, not integers; "
            "the file was edited or damaged: move it away to start over, or use a new hydra.run.dir"
        ) from None


def _shown(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def differences(old, new, path: str = "") -> list[str]:
    """Each setting that differs, as ``key: old → new`` (dicts by key, lists by first differing index)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            key = f"{path}.{k}" if path else str(k)
            if k not in old or k not in new:
                before, after = (_shown(d[k]) if k in d else "unset" for d in (old, new))
                out.append(f"{key}: {before} → {after}")
            elif old[k] != new[k]:
                out += differences(old[k], new[k], key)
        return out
    if isinstance(old, list) and isinstance(new, list):
        sizes = f" ({len(old)} → {len(new)} entries)" if len(old) != len(new) else ""
        i = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), None)
        if i is None:
            return [f"{path}: {len(old)} → {len(new)} entries"]
        if _nested(old[i]) and _nested(new[i]) and not sizes:
            return differences(old[i], new[i], f"{path}[{i}]")
        return [f"{path}[{i}]: {_shown(old[i])} → {_shown(new[i])}{sizes}"]  # e.g. one weight row, one prompt
    return [f"{path}: {_shown(old)} → {_shown(new)}"]


def _nested(value) -> bool:
    """A dict, or a list holding containers: worth descending into to name what differs."""
    return isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, dict | list) for v in value))


class RunDir:
    """Reads and writes one run dir; ``chains`` rows per group make a group complete."""

    def __init__(self, path: Path, reward_columns: list[str], trace_columns: list[str], chains: int):
        self.path = Path(path)
        self.reward_columns = reward_columns
        self.trace_columns = trace_columns
        self.sample_columns = sample_columns(reward_columns)
        self.chains = chains
        self.rewards_csv = self.path / REWARDS_CSV
        self.trace_csv = self.path / TRACE_CSV
        self.samples_csv = self.path / SAMPLES_CSV
        self.summary_json = self.path / SUMMARY_JSON
        self.fingerprint_json = self.path / STATE / "fingerprint.json"
        self.lock_file = self.path / STATE / "lock"

    @classmethod
    def of_rewards(cls, path: Path, guided: list[str], scored: list[str], chains: int) -> RunDir:
        """The run dir of a run guided by ``guided`` rewards and scored by ``scored`` (guided + eval) ones."""
        return cls(path, reward_columns(guided, scored), trace_columns(guided), chains)

    # --- resume -------------------------------------------------------------------------------------------------
    def stored_fingerprint(self) -> dict | None:
        """The settings the committed rows were made with: .srsoup/fingerprint.json, else summary.json's."""
        for path in (self.fingerprint_json, self.summary_json):
            fingerprint = _read_json(path).get("fingerprint")
            if isinstance(fingerprint, dict):
                return fingerprint
        return None

    def check_compatible(self, fingerprint: dict, option_defaults: dict | None = None) -> str | None:
        """Why this run dir cannot be resumed with this config (None if it can).

        ``option_defaults`` are the method's options' defaults: a guidance option that the run dir's settings do
        not name (written by an srsoup version before the option existed) resumes when it is at its default.
        """
        header, rows = _read_rows(self.rewards_csv)
        if header is not None and header != self.reward_columns:
            return f"run dir {self.path} has a rewards.csv with other columns; use a new hydra.run.dir"
        for path, columns in ((self.trace_csv, self.trace_columns), (self.samples_csv, self.sample_columns)):
            t_header = _read_rows(path)[0]
            if t_header is not None and t_header != columns:  # e.g. written by another srsoup version
                return f"run dir {self.path} has a {path.name} with other columns; use a new hydra.run.dir"
        old = self.stored_fingerprint()
        if old is None:
            if rows:
                return (
                    f"run dir {self.path} has {len(rows)} rows in rewards.csv but no summary.json or "
                    f"{STATE}/fingerprint.json to say which settings made them; use a new hydra.run.dir"
                )
            return None
        new = dict(fingerprint)
        if option_defaults and isinstance(old.get("guidance"), dict) and isinstance(new.get("guidance"), dict):
            unnamed = {
                k: v
                for k, v in new["guidance"].items()
                if k not in old["guidance"] and k in option_defaults and option_defaults[k] == v
            }
            old = {**old, "guidance": {**old["guidance"], **unnamed}}
        if _is_prefix(old.get("prompts"), new.get("prompts")):
            new["prompts"] = old["prompts"]  # prompts appended at the end (a larger prompts.limit) resume too
        if old == new:
            return None
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        diffs = differences({k: old[k] for k in changed if k in old}, {k: new[k] for k in changed if k in new})
        more = f"; and {len(diffs) - 3} more" if len(diffs) > 3 else ""
        return (
            f"run dir {self.path} holds a run with other settings ({', '.join(changed)}): "
            f"{'; '.join(diffs[:3])}{more}; use a new hydra.run.dir"
        )

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run dir for this process; a second one is refused with a line naming the holder's pid."""
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
                pid, host = (holder + ["?", "?"])[:2]
                raise SrsoupError(
                    f"run dir {self.path} is in use by process {pid} on {host}; wait for it to end (or stop it), "
                    "or use another hydra.run.dir"
                ) from None
            except OSError as err:
                if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                log.warning(
                    "run dir %s: the filesystem cannot lock (%s); make sure one process writes it", self.path, err
                )
            os.ftruncate(fd, 0)
            holder = f"{os.getpid()} {socket.gethostname()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n"
            os.pwrite(fd, holder.encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the flock

    def write_fingerprint(self, fingerprint: dict) -> None:
        self.fingerprint_json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.fingerprint_json, json.dumps({"fingerprint": fingerprint}, indent=1) + "\n")

    def repair(self) -> set[tuple[int, int]]:
        """Drop what an interrupted run left after its last complete group; return the complete groups.

        A group is complete when rewards.csv holds all its rows and every one of its PNGs is whole; a group whose
        PNG is missing or truncated is dropped (rows and trace) and computed again.
        """
        (self.path / IMAGES).mkdir(parents=True, exist_ok=True)
        for tmp in (self.path / IMAGES).glob("*.tmp"):
            tmp.unlink()
        for path in (self.rewards_csv, self.trace_csv, self.samples_csv):
            if path.exists() and _read_rows(path)[0] is None:
                path.unlink()  # torn inside its header (or empty): no row of it was ever complete
        header, rows = _read_rows(self.rewards_csv)
        groups = [_group_of(r, self.rewards_csv, i + 2) for i, r in enumerate(rows)]
        counts: dict[tuple[int, int], int] = {}
        for key in groups:
            counts[key] = counts.get(key, 0) + 1
        done = {k for k, n in counts.items() if n == self.chains}
        for key, row in zip(groups, rows):
            if key in done and not png_complete(self.path / image_name(*key, int(row["weight_idx"]))):
                done.discard(key)
        kept = [r for key, r in zip(groups, rows) if key in done]
        if header is not None:
            text = _csv_text(kept, header, True)
            if _read_text(self.rewards_csv) != text:
                atomic_write_text(self.rewards_csv, text)
        for path in (self.trace_csv, self.samples_csv):  # their rows of groups rewards.csv does not commit
            t_header, t_rows = _read_rows(path)
            if t_header is not None:
                t_kept = [r for i, r in enumerate(t_rows) if _group_of(r, path, i + 2) in done]
                text = _csv_text(t_kept, t_header, True)
                if _read_text(path) != text:
                    atomic_write_text(path, text)
        return done

    def commit_group(
        self,
        images: dict[str, bytes],
        trace_rows: list[dict],
        reward_rows: list[dict],
        sample_rows: list[dict] | None = None,
    ) -> None:
        for rel, data in images.items():
            atomic_write_bytes(self.path / rel, data)
        _fsync_dir(self.path / IMAGES)  # the renames reach the disk before the rows that commit them
        _append(self.trace_csv, _csv_text(trace_rows, self.trace_columns, not _nonempty(self.trace_csv)))
        if sample_rows:
            _append(self.samples_csv, _csv_text(sample_rows, self.sample_columns, not _nonempty(self.samples_csv)))
        _append(self.rewards_csv, _csv_text(reward_rows, self.reward_columns, not _nonempty(self.rewards_csv)))

    def rows(self) -> list[dict]:
        return _read_rows(self.rewards_csv)[1]

    def read_summary(self) -> dict:
        """summary.json, or {} when it is missing or unreadable (it is rebuilt from rewards.csv on every write)."""
        return _read_json(self.summary_json)

    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.summary_json, json.dumps(summary, indent=2, sort_keys=False) + "\n")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _is_prefix(old, new) -> bool:
    return isinstance(old, list) and isinstance(new, list) and len(old) < len(new) and new[: len(old)] == old


def _nonempty(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


def display_path(path: Path) -> str:
    """The path relative to the working directory when it lies below it (as the user typed it)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def disk_error(path: Path, err: OSError) -> str:
    """One line for a failed write into the run dir (a full disk, a read-only or vanished dir)."""
    what = err.strerror or type(err).__name__
    where = err.filename or path
    hint = "free some space" if err.errno in (errno.ENOSPC, errno.EDQUOT) else "make the run dir writable"
    return f"cannot write the run dir {path}: {what} ({where}); {hint}, then rerun the same command to resume"


def add_stats(a: dict, b: dict, sign: int = 1) -> dict:
    """``a + sign·b`` for nested dicts of numbers (reward stats: per reward, per counter)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in a.items()}
    for k, v in b.items():
        if isinstance(v, dict):
            out[k] = add_stats(out.get(k, {}), v, sign)
        elif isinstance(v, int | float) and not isinstance(v, bool):
            total = out.get(k, 0) + sign * v
            out[k] = round(total, 10) if isinstance(total, float) else total
    return out


class Ledger:
    """summary.json of a run: the run's description, what the committed rows hold, time spent, and status.

    ``static`` describes the run (method, settings, plan, fingerprint, config) and ``groups_total`` how many
    prompt x seed groups it has; the counts are read back from rewards.csv, the commit record, on every write.
    ``reward_stats`` is what the rewards themselves report (queries, cache hits, paid calls, retries, failed
    attempts, cost) over every invocation into this run dir, committed or not: money spent stays spent.
    """

    def __init__(self, out: RunDir, static: dict, plan_by_reward: dict[str, int], start: float, live_stats=None):
        self.out, self.static, self.plan_by_reward, self.start = out, static, plan_by_reward, start
        previous = out.read_summary()  # the invocations before this one (the fingerprint was checked)
        self.groups: dict[str, dict] = dict(previous.get("groups", {}))
        self.wall_before = float(previous.get("wall_seconds", 0.0))
        self.stats_before: dict = previous.get("reward_stats", {})
        self.live_stats = live_stats or dict
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
            "reward_stats": add_stats(self.stats_before, self.live_stats()),
            "denoiser_evals": sum(int(r["denoiser_evals"]) for r in rows),
            "wall_seconds": round(self.wall_before + time.time() - self.start, 3),
            "timing": self.timing(),
        }
        summary = {"status": status, **self.static, **counts, "groups": self.groups}
        if error:
            summary["error"] = error
        self.out.write_summary(summary)
        return summary

    def close(self, status: str, error: str) -> None:
        """The last write of an interrupted or failed run, best effort (a full disk may refuse it too)."""
        with contextlib.suppress(OSError, SrsoupError):
            self.write(status, error)

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


def stats_delta(after: dict, before: dict) -> dict:
    """A group's ``reward_stats`` entry: what each reward reporting its own stats spent on the group."""
    delta = add_stats(after, before, -1)
    own = {n: d for n, d in delta.items() if set(d) - {"queries", "eval_queries"}}
    return {"reward_stats": own} if own else {}
