"""The run's prompts: a list in the config, or a prompt file in one of the formats benchmarks are published in.

``prompts.path`` is read by its suffix:

- ``.txt``: one prompt a line; blank lines and lines starting with ``#`` are skipped.
- ``.json``: a list of prompts (strings, or objects holding ``prompts.column``), or an object of category → such
  a list (HPDv2's benchmark prompts, ``hpsv2.benchmark_prompts('all')``).
- ``.jsonl``: one object a line (GenEval's ``evaluation_metadata.jsonl``: ``prompt``, category ``tag``).
- ``.tsv`` / ``.csv``: a header row and one prompt a row (PartiPrompts' ``Prompt`` and ``Category`` columns,
  DrawBench's ``Prompts`` and ``Category``).

``prompts.column`` names the prompt field (default: the first of ``prompt``, ``Prompt``, ``Prompts``, ``text``,
``caption`` present), ``prompts.category`` keeps the prompts of one category or a list of them (the field
``category``, ``Category`` or ``tag``; a JSON object's keys), ``prompts.limit`` the first N that remain.
``prompts.num_shards`` / ``prompts.shard`` then pick every N-th prompt from the i-th: prompt indices stay global.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from srsoup.errors import SrsoupError

FORMATS = (".txt", ".json", ".jsonl", ".tsv", ".csv")
PROMPT_FIELDS = ("prompt", "Prompt", "Prompts", "prompts", "text", "caption")
CATEGORY_FIELDS = ("category", "Category", "tag", "Tag")
DEFAULT_CATEGORY = object()  # a JSON list's prompts have no category


def _read(path: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise SrsoupError(
            f"prompts.path={path!r} does not exist (a prompt file: {', '.join(FORMATS)}; see the README's Prompts)"
        )
    data = p.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise SrsoupError(
            f"prompts.path={path!r} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); "
            f"convert it, e.g. iconv -f latin1 -t utf-8 {p.name} > utf8_{p.name}"
        ) from None


def _field(record: dict, names: tuple[str, ...], key: str, given: str | None, path: str, where: str) -> str | None:
    """The field of ``record`` that ``given`` (or the first of ``names``) names; None if absent and not given."""
    if given is not None:
        if given not in record:
            raise SrsoupError(
                f"{key}={given!r} is not a field of {where} in prompts.path={path!r}; valid: "
                f"{', '.join(map(str, record))}"
            )
        return given
    return next((n for n in names if n in record), None)


def _records(text: str, suffix: str, path: str) -> list[tuple[Any, Any]]:
    """(prompt value, category) of every entry of the file, in order; the prompt value may be a record."""
    try:
        if suffix == ".json":
            data = json.loads(text)
            if isinstance(data, dict):
                return [(p, cat) for cat, items in data.items() for p in _as_list(items, path, f"[{cat!r}]")]
            return [(p, DEFAULT_CATEGORY) for p in _as_list(data, path, "")]
        if suffix == ".jsonl":
            return [(json.loads(line), DEFAULT_CATEGORY) for line in text.splitlines() if line.strip()]
        if suffix in (".tsv", ".csv"):
            # A .tsv is plain tab-separated text (quotes are part of the prompt); a .csv quotes as the csv module.
            tsv = dict(delimiter="\t", quoting=csv.QUOTE_NONE) if suffix == ".tsv" else {}
            rows = csv.DictReader(io.StringIO(text, newline=""), **tsv)
            return [(dict(row), DEFAULT_CATEGORY) for row in rows]
    except (json.JSONDecodeError, csv.Error) as err:
        raise SrsoupError(f"prompts.path={path!r} is not valid {suffix[1:]} ({err})".splitlines()[0]) from None
    lines = [ln.strip() for ln in text.splitlines()]
    return [(ln, DEFAULT_CATEGORY) for ln in lines if ln and not ln.startswith("#")]


def _as_list(items, path: str, where: str) -> list:
    if not isinstance(items, list):
        raise SrsoupError(
            f"prompts.path={path!r}{where} is a {type(items).__name__}; valid: a list of prompts, or an object of "
            "category -> list of prompts"
        )
    return items


def load_prompts(
    texts: list[str] | None,
    path: str | None,
    column: str | None = None,
    category: str | list[str] | None = None,
    limit: int | None = None,
) -> list[str]:
    """The prompts of ``prompts.path`` if set (filtered by category, then limited), else ``prompts.texts``."""
    if path:
        suffix = Path(path).suffix.lower()
        if suffix not in FORMATS:
            raise SrsoupError(
                f"prompts.path={path!r} has the suffix {suffix or '(none)'!r}; valid: {', '.join(FORMATS)}"
            )
        prompts, categories = [], []
        for value, cat in _records(_read(path), suffix, path):
            if isinstance(value, dict):
                where = "a record"
                prompt_key = _field(value, PROMPT_FIELDS, "prompts.column", column, path, where)
                if prompt_key is None:
                    raise SrsoupError(
                        f"prompts.path={path!r}: no prompt field in {', '.join(map(str, value))}; "
                        "set prompts.column to one of them"
                    )
                cat_key = _field(value, CATEGORY_FIELDS, "category field", None, path, where)
                value, cat = value[prompt_key], (value[cat_key] if cat_key else cat)
            elif column is not None:
                raise SrsoupError(f"prompts.column={column!r}, but prompts.path={path!r} holds plain strings")
            if not isinstance(value, str):
                raise SrsoupError(f"prompts.path={path!r}: prompt {len(prompts)} is {value!r}, not text")
            prompts.append(value.strip())
            categories.append(cat)
        if category is not None:
            wanted = [category] if isinstance(category, str) else [str(c) for c in category]
            found = list(dict.fromkeys(str(c) for c in categories if c is not DEFAULT_CATEGORY))
            if not found:
                raise SrsoupError(f"prompts.category={category!r}, but prompts.path={path!r} has no categories")
            unknown = [c for c in wanted if c not in found]
            if unknown:
                raise SrsoupError(f"prompts.category={unknown[0]!r} is not in {path!r}; valid: {', '.join(found)}")
            prompts = [p for p, c in zip(prompts, categories) if str(c) in wanted]
        where = f"prompts.path={path!r}"
    else:
        if category is not None or column is not None:
            key = "prompts.category" if category is not None else "prompts.column"
            raise SrsoupError(f"{key} needs a prompt file: set prompts=file prompts.path=FILE")
        prompts = [str(t) for t in texts or []]
        where = f"prompts.texts={prompts!r}"
    for i, p in enumerate(prompts):
        if not p.strip():
            raise SrsoupError(f"{where}: prompt {i} is empty; give non-empty prompts")
        if "\x00" in p:
            raise SrsoupError(f"{where}: prompt {i} holds a NUL character; remove it")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise SrsoupError(f"prompts.limit={limit!r} must be an integer >= 1 (or null for all prompts)")
        prompts = prompts[:limit]
    if not prompts:
        raise SrsoupError(f"{where} holds no prompts; give at least one, or prompts.path=FILE")
    return prompts


def shard_indices(count: int, shard: int, num_shards: int) -> list[int]:
    """Global indices of the ``shard``-th of ``num_shards`` interleaved slices of ``count`` prompts."""
    for key, value, low in (("prompts.num_shards", num_shards, 1), ("prompts.shard", shard, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise SrsoupError(f"{key}={value!r} must be an integer >= {low}")
    if shard >= num_shards:
        raise SrsoupError(
            f"prompts.shard={shard} is out of range for prompts.num_shards={num_shards}; valid: 0 to "
            f"{num_shards - 1}"
        )
    if shard >= count:
        raise SrsoupError(
            f"prompts.shard={shard} of prompts.num_shards={num_shards} holds no prompts: there are {count}; "
            f"use at most prompts.num_shards={count}"
        )
    return list(range(shard, count, num_shards))
