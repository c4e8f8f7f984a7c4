"""srsoup.outputs: atomic group commits, crash and full-disk repair on resume, resume compatibility, the lock,
PNG bytes and names."""

from __future__ import annotations

import csv
import errno
import functools
import io
import math
import os
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from srsoup import outputs
from srsoup.errors import SrsoupError
from srsoup.outputs import RunDir, atomic_write_bytes, differences, image_name, png_bytes

REWARD_COLS = ["prompt_idx", "prompt", "seed", "weight_idx", "w_a", "w_b", "r_a", "r_b", "image"]
TRACE_COLS = ["prompt_idx", "seed", "step", "chain", "value"]
CHAINS = 2  # weights per group: a group is complete with 2 rewards.csv rows
FINGERPRINT = {"method": "srsoup", "steps": 10, "weights": [[0.0, 1.0], [1.0, 0.0]]}


@functools.cache
def group(prompt_idx: int, seed: int):
    """The images, trace rows and reward rows of one prompt x seed group, as the runner commits them."""
    images, rows = {}, []
    for w in range(CHAINS):
        rel = image_name(prompt_idx, seed, w)
        level = (prompt_idx * 7 + seed * 3 + w) % 256
        images[rel] = png_bytes(torch.full((3, 4, 4), level / 255))
        rows.append(
            {
                "prompt_idx": prompt_idx,
                "prompt": f"prompt, number {prompt_idx}",  # a comma: the CSV must quote it
                "seed": seed,
                "weight_idx": w,
                "w_a": w / (CHAINS - 1),
                "w_b": 1 - w / (CHAINS - 1),
                "r_a": 0.1 * (prompt_idx + 1) / 3 + seed,  # not exactly representable in few digits
                "r_b": math.nan if w == 0 else -1.5,
                "image": rel,
            }
        )
    trace = [
        {"prompt_idx": prompt_idx, "seed": seed, "step": t, "chain": c, "value": t / 3}
        for t in range(2)
        for c in range(CHAINS)
    ]
    return images, trace, rows


def fresh(path) -> RunDir:
    """A run dir ready to commit into, as the runner prepares one (mkdir, fingerprint, then repair)."""
    out = RunDir(path, REWARD_COLS, TRACE_COLS, chains=CHAINS)
    path.mkdir(parents=True, exist_ok=True)
    out.write_fingerprint(FINGERPRINT)
    assert out.repair() == set()
    return out


def snapshot(path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


GROUPS = [(0, 0), (0, 1), (1, 0)]


@pytest.fixture
def ref(tmp_path):
    """Snapshots of an uninterrupted run after its first two groups and after all three."""
    out = fresh(tmp_path / "ref")
    for key in GROUPS[:2]:
        out.commit_group(*group(*key))
    two = snapshot(out.path)
    out.commit_group(*group(*GROUPS[2]))
    return two, snapshot(out.path)


def restore(path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)


# --- names and bytes ---------------------------------------------------------------------------------------------
def test_image_name_format():
    assert image_name(0, 0, 0) == "images/p000_s0_w00.png"
    assert image_name(7, 42, 3) == "images/p007_s42_w03.png"
    assert image_name(12, 123456, 10) == "images/p012_s123456_w10.png"
    assert image_name(1234, 5, 123) == "images/p1234_s5_w123.png"  # widths are minimums, nothing is cut


def test_png_bytes_equal_pixels_give_equal_bytes():
    levels = torch.randint(0, 256, (3, 5, 7), generator=torch.Generator().manual_seed(0))
    image = levels.float() / 255
    data = png_bytes(image)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert png_bytes(image.clone()) == data
    assert png_bytes(image + 0.4 / 255) == data  # rounds to the same 8-bit pixels
    decoded = np.asarray(Image.open(io.BytesIO(data)))
    assert decoded.shape == (5, 7, 3) and decoded.dtype == np.uint8
    assert (decoded == levels.permute(1, 2, 0).numpy()).all()
    # Values outside [0, 1] are clamped; one pixel one level apart gives other bytes.
    assert png_bytes(image * 3 - 1) == png_bytes((image * 3 - 1).clamp(0, 1))
    other = image.clone()
    other[1, 2, 3] = (levels[1, 2, 3] + 1) % 256 / 255
    assert png_bytes(other) != data


def test_atomic_write_bytes_replaces_the_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"old contents")
    (tmp_path / "x.png.tmp").write_bytes(b"a stale temp file from a crash, longer than the new data")
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]


# --- commits -----------------------------------------------------------------------------------------------------
def test_commit_group_writes_images_trace_and_rows_together(tmp_path):
    out = fresh(tmp_path / "run")
    images, trace, rows = group(0, 3)
    out.commit_group(images, trace, rows)
    assert snapshot(out.path / "images") == {rel.removeprefix("images/"): data for rel, data in images.items()}
    with open(out.rewards_csv, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == REWARD_COLS
        written = list(reader)
    assert written == out.rows()
    assert [(r["prompt_idx"], r["seed"], r["weight_idx"]) for r in written] == [("0", "3", "0"), ("0", "3", "1")]
    assert written[0]["prompt"] == "prompt, number 0"
    assert [float(r["r_a"]) for r in written] == [row["r_a"] for row in rows]  # every digit kept
    assert written[0]["r_b"] == "" and float(written[1]["r_b"]) == -1.5  # NaN is an empty cell
    assert written[1]["image"] == "images/p000_s3_w01.png"
    with open(out.trace_csv, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == TRACE_COLS
        assert len(list(reader)) == len(trace)

    out.commit_group(*group(2, 0))
    lines = out.rewards_csv.read_text().splitlines()
    assert lines[0] == ",".join(REWARD_COLS) and len(lines) == 1 + 2 * CHAINS  # one header, rows appended
    assert [(r["prompt_idx"], r["seed"]) for r in out.rows()] == [("0", "3")] * CHAINS + [("2", "0")] * CHAINS
    assert out.trace_csv.read_text().count("prompt_idx") == 1
    assert not list(out.path.rglob("*.tmp"))


def test_commit_then_repair_keeps_every_complete_group(tmp_path, ref):
    two, three = ref
    restore(tmp_path / "run", three)
    out = RunDir(tmp_path / "run", REWARD_COLS, TRACE_COLS, chains=CHAINS)
    assert out.check_compatible(FINGERPRINT) is None
    assert out.repair() == set(GROUPS)
    assert snapshot(out.path) == three  # nothing dropped, nothing rewritten
    assert len(out.rows()) == len(GROUPS) * CHAINS


def test_repair_of_a_new_run_dir_makes_the_images_folder_only(tmp_path):
    out = RunDir(tmp_path / "new", REWARD_COLS, TRACE_COLS, chains=CHAINS)
    assert out.repair() == set()
    assert (tmp_path / "new" / "images").is_dir()
    assert snapshot(tmp_path / "new") == {}
    assert out.rows() == [] and out.read_summary() == {}


# --- crash repair ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cut",
    ["mid first row", "after first row", "mid last row", "last row without its newline"],
)
def test_repair_drops_a_torn_or_incomplete_group_of_rewards_csv(tmp_path, ref, cut):
    """A crash while the third group's rows were appended: its images and trace rows are all written, its
    rewards.csv rows only up to a point. Repair restores the two-group state; the rerun equals the reference."""
    two, three = ref
    before, after = two["rewards.csv"], three["rewards.csv"]
    added = after[len(before) :]
    first_end = added.index(b"\n") + 1
    end = {
        "mid first row": first_end // 2,
        "after first row": first_end,  # a complete line, but one of the group's two rows
        "mid last row": first_end + (len(added) - first_end) // 2,
        "last row without its newline": len(added) - 1,
    }[cut]
    crashed = {**three, "rewards.csv": before + added[:end]}
    restore(tmp_path / "run", crashed)
    out = RunDir(tmp_path / "run", REWARD_COLS, TRACE_COLS, chains=CHAINS)

    assert out.repair() == set(GROUPS[:2])
    repaired = snapshot(out.path)
    assert repaired["rewards.csv"] == two["rewards.csv"]
    assert repaired["trace.csv"] == two["trace.csv"]  # the incomplete group's trace rows go too
    kept = [(int(r["prompt_idx"]), int(r["seed"])) for r in out.rows()]
    assert kept == [g for g in GROUPS[:2] for _ in range(CHAINS)]

    out.commit_group(*group(*GROUPS[2]))
    assert snapshot(out.path) == three


@pytest.mark.parametrize("cut", ["mid row", "row without its newline"])
def test_repair_drops_a_torn_last_line_of_trace_csv(tmp_path, ref, cut):
    """A crash while the third group's trace rows were appended (so before its rewards rows)."""
    two, three = ref
    before, after = two["trace.csv"], three["trace.csv"]
    added = after[len(before) :]
    end = {"mid row": len(added) - len(added.splitlines()[-1]) // 2 - 1, "row without its newline": len(added) - 1}
    torn = before + added[: end[cut]]
    assert not torn.endswith(b"\n")
    restore(tmp_path / "run", {**three, "trace.csv": torn, "rewards.csv": two["rewards.csv"]})
    out = RunDir(tmp_path / "run", REWARD_COLS, TRACE_COLS, chains=CHAINS)

    assert out.repair() == set(GROUPS[:2])
    repaired = snapshot(out.path)
    assert repaired["trace.csv"] == two["trace.csv"]
    assert repaired["rewards.csv"] == two["rewards.csv"]

    out.commit_group(*group(*GROUPS[2]))
    assert snapshot(out.path) == three


def test_repair_removes_stray_temp_images(tmp_path, ref):
    two, _ = ref
    restore(tmp_path / "run", two)
    images = tmp_path / "run" / "images"
    (images / "p001_s0_w00.png.tmp").write_bytes(b"\x89PNG partial")
    (images / "p001_s0_w01.png.tmp").write_bytes(b"")
    out = RunDir(tmp_path / "run", REWARD_COLS, TRACE_COLS, chains=CHAINS)
    assert out.repair() == set(GROUPS[:2])
    assert not list(images.glob("*.tmp"))
    assert snapshot(out.path) == two  # committed images untouched


@pytest.mark.parametrize("name", ["rewards.csv", "trace.csv"])
@pytest.mark.parametrize("torn", [b"", b"prompt_idx,se"])
def test_repair_of_a_torn_first_write_lets_the_rerun_write_a_header(tmp_path, name, torn):
    """A crash inside the first group's first append (the header and rows go in one write)."""
    out = fresh(tmp_path / "run")
    (out.path / name).write_bytes(torn)
    assert out.repair() == set()
    out.commit_group(*group(0, 0))
    for path, columns in ((out.rewards_csv, REWARD_COLS), (out.trace_csv, TRACE_COLS)):
        with open(path, newline="") as f:
            assert csv.DictReader(f).fieldnames == columns
    assert len(out.rows()) == CHAINS
    assert out.check_compatible(FINGERPRINT) is None


def test_repair_drops_the_samples_rows_of_a_group_rewards_csv_does_not_commit(tmp_path):
    """samples.csv (best_of_n's pool) is written before rewards.csv, which commits the group: a crash between
    them leaves sample rows that repair drops with the group."""

    def samples(p, s):
        return [{"prompt_idx": p, "seed": s, "sample": i, "r_a": i / 3, "r_b": -i} for i in range(3)]

    out = fresh(tmp_path / "run")
    assert out.sample_columns == ["prompt_idx", "seed", "sample", "r_a", "r_b"]
    out.commit_group(*group(0, 0), samples(0, 0))
    committed = out.samples_csv.read_bytes()
    images, trace, rows = group(1, 0)
    out.commit_group(images, trace, rows[:1], samples(1, 0))  # the crash: one of the group's two rows made it
    assert out.repair() == {(0, 0)}
    assert out.samples_csv.read_bytes() == committed
    out.commit_group(*group(1, 0), samples(1, 0))
    with open(out.samples_csv, newline="") as f:
        assert [(r["prompt_idx"], r["sample"]) for r in csv.DictReader(f)] == [
            ("0", "0"),
            ("0", "1"),
            ("0", "2"),
        ] + [
            ("1", "0"),
            ("1", "1"),
            ("1", "2"),
        ]


# --- resume compatibility ----------------------------------------------------------------------------------------
def test_check_compatible_accepts_a_new_dir_and_the_same_settings(tmp_path):
    out = RunDir(tmp_path / "never_made", REWARD_COLS, TRACE_COLS, chains=CHAINS)
    assert out.check_compatible(FINGERPRINT) is None
    out = fresh(tmp_path / "run")
    out.commit_group(*group(0, 0))
    out.write_summary({"fingerprint": FINGERPRINT, "status": "partial"})
    assert out.read_summary() == {"fingerprint": FINGERPRINT, "status": "partial"}
    again = RunDir(tmp_path / "run", list(REWARD_COLS), list(TRACE_COLS), chains=CHAINS)
    assert again.check_compatible({**FINGERPRINT}) is None


def test_check_compatible_refuses_a_different_fingerprint(tmp_path):
    out = fresh(tmp_path / "run")
    out.commit_group(*group(0, 0))
    out.write_summary({"fingerprint": FINGERPRINT})
    changed = {**FINGERPRINT, "steps": 20, "eta": 1.0}
    problem = out.check_compatible(changed)
    assert problem is not None
    assert str(out.path) in problem and "eta, steps" in problem  # names the settings that differ, sorted
    assert out.check_compatible({k: v for k, v in FINGERPRINT.items() if k != "weights"}) is not None


@pytest.mark.parametrize(
    "columns",
    [REWARD_COLS + ["r_c"], [c for c in REWARD_COLS if c != "r_b"], REWARD_COLS[1:] + REWARD_COLS[:1]],
    ids=["one more", "one fewer", "reordered"],
)
def test_check_compatible_refuses_a_rewards_csv_with_other_columns(tmp_path, columns):
    fresh(tmp_path / "run").commit_group(*group(0, 0))  # no summary.json: the header alone decides
    out = RunDir(tmp_path / "run", columns, TRACE_COLS, chains=CHAINS)
    problem = out.check_compatible(FINGERPRINT)
    assert problem is not None and "rewards.csv" in problem and str(out.path) in problem


def test_check_compatible_names_each_changed_key_with_both_values(tmp_path):
    out = fresh(tmp_path / "run")
    out.commit_group(*group(0, 0))
    nested = {**FINGERPRINT, "guidance": {"num_candidates": 2, "normalize": "zscore"}}
    out.write_fingerprint(nested)
    problem = out.check_compatible({**nested, "guidance": {"num_candidates": 3, "normalize": "zscore"}})
    assert "other settings (guidance): guidance.num_candidates: 2 → 3;" in problem
    problem = out.check_compatible({**nested, "weights": [[0.0, 1.0], [0.5, 0.5]], "eta": 0.0})
    assert "(eta, weights): eta: unset → 0.0; weights[1]: [1.0, 0.0] → [0.5, 0.5];" in problem
    assert "\n" not in problem


def test_check_compatible_resumes_an_option_added_since_at_its_default(tmp_path):
    """A run dir written before a guidance option existed does not name it: it resumes when the option is at its
    default, and is refused at any other value or without the method's defaults."""
    out = fresh(tmp_path / "run")
    out.commit_group(*group(0, 0))
    old = {**FINGERPRINT, "guidance": {"num_candidates": 2}}
    out.write_fingerprint(old)
    defaults = {"num_candidates": 16, "soup_share_radius": 0.0}
    at_default = {**old, "guidance": {"num_candidates": 2, "soup_share_radius": 0.0}}
    assert out.check_compatible(at_default, defaults) is None
    problem = out.check_compatible({**old, "guidance": {"num_candidates": 2, "soup_share_radius": 1.0}}, defaults)
    assert "guidance.soup_share_radius: unset → 1.0" in problem
    assert "guidance.soup_share_radius: unset → 0.0" in out.check_compatible(at_default)
    # A named option keeps its value: the default does not stand in for it.
    assert "guidance.num_candidates: 2 → 16" in out.check_compatible(
        {**old, "guidance": {"num_candidates": 16}}, defaults
    )


def test_differences_reads_nested_settings():
    assert differences({"a": {"b": 1, "c": [1, 2]}}, {"a": {"b": 1, "c": [1, 3], "d": "x"}}) == [
        "a.c[1]: 2 → 3",
        'a.d: unset → "x"',
    ]
    assert differences({"p": ["x" * 100]}, {"p": ["y"]}) == [f'p[0]: "{"x" * 56}... → "y"']


# --- what outlives summary.json ----------------------------------------------------------------------------------
@pytest.mark.parametrize("summary", ["deleted", "empty", "garbage"])
def test_the_fingerprint_outlives_a_lost_summary(tmp_path, summary):
    out = fresh(tmp_path / "run")
    out.commit_group(*group(0, 0))
    out.write_summary({"fingerprint": FINGERPRINT})
    if summary == "deleted":
        out.summary_json.unlink()
    else:
        out.summary_json.write_text("" if summary == "empty" else "{not json")
    assert out.read_summary() == {}
    assert out.check_compatible(FINGERPRINT) is None  # resumes ...
    problem = out.check_compatible({**FINGERPRINT, "steps": 20})  # ... but never with other settings
    assert "steps: 10 → 20" in problem
    out.fingerprint_json.unlink()  # nothing says which settings made the rows: refused
    assert "has 2 rows in rewards.csv but no summary.json" in out.check_compatible(FINGERPRINT)
    out.rewards_csv.unlink()  # no committed row: a fresh start is safe
    assert out.check_compatible({**FINGERPRINT, "steps": 20}) is None


def test_prompts_appended_at_the_end_resume(tmp_path):
    out = fresh(tmp_path / "run")
    out.write_fingerprint({**FINGERPRINT, "prompts": ["a", "b"]})
    assert out.check_compatible({**FINGERPRINT, "prompts": ["a", "b", "c"]}) is None  # a larger prompts.limit
    assert "prompts[1]" in out.check_compatible({**FINGERPRINT, "prompts": ["a", "x", "c"]})
    assert "prompts: 2 → 1 entries" in out.check_compatible({**FINGERPRINT, "prompts": ["a"]})


# --- damaged committed groups and unreadable files ---------------------------------------------------------------
@pytest.mark.parametrize("damage", ["missing", "empty", "truncated"])
@pytest.mark.parametrize("which", [1, 2], ids=["middle group", "last group"])
def test_a_committed_group_with_a_damaged_png_is_computed_again(tmp_path, ref, damage, which):
    _, three = ref
    restore(tmp_path / "run", three)
    out = RunDir(tmp_path / "run", REWARD_COLS, TRACE_COLS, chains=CHAINS)
    png = out.path / image_name(*GROUPS[which], 1)
    if damage == "missing":
        png.unlink()
    else:
        png.write_bytes(b"" if damage == "empty" else three[f"images/{png.name}"][:-20])
    assert out.repair() == set(GROUPS) - {GROUPS[which]}
    assert [(int(r["prompt_idx"]), int(r["seed"])) for r in out.rows()] == [
        g for g in GROUPS if g != GROUPS[which] for _ in range(CHAINS)
    ]
    out.commit_group(*group(*GROUPS[which]))
    again = snapshot(out.path)
    if which == 2:
        assert again == three  # the last group: byte for byte
    else:  # a middle group comes back at the end: the same rows, bytes and images, in another order
        assert {k: v for k, v in again.items() if k.endswith(".png")} == {
            k: v for k, v in three.items() if k.endswith(".png")
        }
        for name in ("rewards.csv", "trace.csv"):
            assert sorted(again[name].splitlines()) == sorted(three[name].splitlines())


def test_a_prompt_with_crlf_or_beyond_the_csv_field_limit_reads_back_unchanged(tmp_path):
    out = fresh(tmp_path / "run")
    images, trace, rows = group(0, 0)
    rows = [dict(r) for r in rows]
    long = "a very long prompt " * 8000  # 152,000 characters: past the csv module's default field limit
    for r, prompt in zip(rows, ["two\r\nlines\rand\none", long]):
        r["prompt"] = prompt
    out.commit_group(images, trace, rows)
    inode, data = out.rewards_csv.stat().st_ino, out.rewards_csv.read_bytes()
    assert out.repair() == {(0, 0)}
    assert out.rewards_csv.stat().st_ino == inode and out.rewards_csv.read_bytes() == data  # not rewritten
    assert [r["prompt"] for r in out.rows()] == ["two\r\nlines\rand\none", long]


def test_an_unreadable_rewards_csv_is_one_line(tmp_path):
    out = fresh(tmp_path / "run")
    content = REWARD_COLS[0].encode() + b",\xff\xfe garbage\n"
    out.rewards_csv.write_bytes(content)
    for call in (lambda: out.check_compatible(FINGERPRINT), out.repair):
        with pytest.raises(
            SrsoupError, match=re.escape("rewards.csv is not a CSV this run wrote ('utf-8' codec")
        ) as e:
            call()
        assert "\n" not in str(e.value) and out.rewards_csv.read_bytes() == content  # nothing deleted
    out.rewards_csv.write_bytes(b"\x00\x01garbage,,\nfoo\n")  # readable, but not ours
    assert "has a rewards.csv with other columns" in out.check_compatible(FINGERPRINT)


def test_a_trace_csv_with_other_columns_is_not_appended_to(tmp_path):
    """Rows under another header would be misread; the run dir is refused like a rewards.csv of other columns."""
    out = fresh(tmp_path / "run")
    assert out.check_compatible(FINGERPRINT) is None
    out.trace_csv.write_text("prompt_idx,seed,step,old_column\n")
    assert "has a trace.csv with other columns; use a new hydra.run.dir" in out.check_compatible(FINGERPRINT)
    assert out.trace_csv.read_text() == "prompt_idx,seed,step,old_column\n"


def test_a_damaged_row_in_the_middle_is_named(tmp_path, ref):
    two, _ = ref
    restore(tmp_path / "run", two)
    lines = two["rewards.csv"].decode().splitlines(keepends=True)
    lines[2] = "x" + lines[2]
    (tmp_path / "run" / "rewards.csv").write_text("".join(lines))
    out = RunDir(tmp_path / "run", REWARD_COLS, TRACE_COLS, chains=CHAINS)
    with pytest.raises(SrsoupError, match=r"rewards.csv row 3 has prompt_idx='x0', seed='0', not integers"):
        out.repair()


# --- one process at a time ---------------------------------------------------------------------------------------
def test_the_lock_refuses_a_second_holder_naming_the_first(tmp_path):
    out = fresh(tmp_path / "run")
    with out.lock():
        other = RunDir(tmp_path / "run", REWARD_COLS, TRACE_COLS, chains=CHAINS)
        with pytest.raises(SrsoupError, match=rf"run dir .* is in use by process {os.getpid()} on ") as e:
            with other.lock():
                pass
        assert "another hydra.run.dir" in str(e.value)
    with out.lock():  # released
        pass


# --- a full disk at any byte -------------------------------------------------------------------------------------
def simulate_run(path) -> None:
    """What the runner writes for GROUPS, in order: fingerprint, repair, summary, then commit + summary each."""
    out = RunDir(path, REWARD_COLS, TRACE_COLS, chains=CHAINS)
    path.mkdir(parents=True, exist_ok=True)
    out.write_fingerprint(FINGERPRINT)
    done = out.repair()
    out.write_summary({"fingerprint": FINGERPRINT, "groups": len(done)})
    for key in GROUPS:
        if key not in done:
            out.commit_group(*group(*key))
            out.write_summary({"fingerprint": FINGERPRINT, "groups": len(out.rows()) // CHAINS})


def test_a_full_disk_at_any_byte_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    """At every byte offset of an uninterrupted run's writes the disk fills (ENOSPC, the write cut short, 0-byte
    files included); the same run again, with space, finishes with exactly the uninterrupted run's files."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # durability is not what this test is about; speed is
    real = outputs._write_all
    ends = [0]  # byte offsets where one write call ends and the next begins

    def counting(fd, data):
        ends.append(ends[-1] + len(data))
        real(fd, data)

    monkeypatch.setattr(outputs, "_write_all", counting)
    simulate_run(tmp_path / "ref")
    reference, total = snapshot(tmp_path / "ref"), ends[-1]
    assert total > 1000 and len(ends) > 15
    # Every write boundary and its neighbours (0-byte files, a header alone, a rename never made), and every 9th
    # byte in between (torn rows, torn PNGs): about 400 disks filling up.
    cuts = sorted({c for e in ends for c in (e - 1, e, e + 1) if 0 <= c < total} | set(range(0, total, 9)))

    for cut in cuts:

        def full_disk(fd, data, left=[cut]):  # noqa: B006 - the bytes left on this simulated disk
            n = min(len(data), left[0])
            real(fd, data[:n])
            left[0] -= n
            if n < len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        run = tmp_path / f"cut{cut}"
        monkeypatch.setattr(outputs, "_write_all", full_disk)
        with pytest.raises(OSError):
            simulate_run(run)
        assert not list(run.rglob("*.tmp"))
        monkeypatch.setattr(outputs, "_write_all", real)
        simulate_run(run)
        assert snapshot(run) == reference, f"disk full after {cut} of {total} bytes"
        shutil.rmtree(run)
