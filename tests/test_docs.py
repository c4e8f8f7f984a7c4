"""The README's config-group table names exactly the shipped options, and every relative doc link resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "srsoup" / "conf"
README = ROOT / "README.md"
DOCS = sorted([README, *(ROOT / "docs").glob("*.md")])

#: Config dirs that are not user-facing groups: single rewards are composed by the reward sets, and the log
#: format is fixed by config.yaml.
INTERNAL_GROUPS = {"reward", "hydra/job_logging"}
#: Options that Hydra provides itself, with no yaml in srsoup/conf.
BUILTIN_OPTIONS = {"hydra/launcher": {"basic"}}

TABLE_HEADER = ("group", "options")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target "title"), images too
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)  # [label]: target
IMG_SRC = re.compile(r"<img\b[^>]*\bsrc=[\"']([^\"']+)[\"']", re.IGNORECASE)
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def readme_groups(text: str) -> dict[str, set[str]]:
    """Group → options from the README table whose header row starts ``| group | options |``.

    Options are the backticked words of the options cell; the group cell is one backticked name.
    """
    lines = text.splitlines()
    header = next(
        (
            i
            for i, line in enumerate(lines)
            if line.lstrip().startswith("|") and tuple(c.lower() for c in _cells(line)[:2]) == TABLE_HEADER
        ),
        None,
    )
    assert header is not None, "README.md has no table with the header row `| group | options | ... |`"
    groups: dict[str, set[str]] = {}
    for line in lines[header + 2 :]:  # skip the header and its |---| row
        if not line.lstrip().startswith("|"):
            break
        cells = _cells(line)
        assert len(cells) >= 2, f"README group table: malformed row {line!r}"
        group = cells[0].strip("`")
        assert group not in groups, f"README group table names `{group}` twice"
        groups[group] = set(re.findall(r"`([^`]+)`", cells[1]))
    assert groups, "README group table has no rows"
    return groups


def conf_groups(conf: Path = CONF) -> dict[str, set[str]]:
    """Group → options: every folder of srsoup/conf holding yaml files, but the internal ones."""
    groups: dict[str, set[str]] = {}
    for path in conf.rglob("*.yaml"):
        group = path.parent.relative_to(conf).as_posix()
        if group != "." and group not in INTERNAL_GROUPS:
            groups.setdefault(group, set()).add(path.stem)
    return groups


def relative_links(text: str) -> list[str]:
    """Targets of markdown links, images and <img src> that are paths in this repo (no URL, no #anchor)."""
    text = INLINE_CODE.sub("", FENCE.sub("", text))
    targets = LINK.findall(text) + REFERENCE_LINK.findall(text) + IMG_SRC.findall(text)
    return [t for t in targets if not re.match(r"^([a-z][a-z0-9+.-]*:|#|//)", t, re.IGNORECASE)]


def broken_links(doc: Path, root: Path = ROOT) -> list[str]:
    broken = []
    for target in relative_links(doc.read_text()):
        path = (doc.parent / target.split("#")[0].split("?")[0]).resolve()
        if not path.is_relative_to(root.resolve()) or not path.exists():
            broken.append(target)
    return broken


def test_readme_names_every_config_group():
    documented, shipped = set(readme_groups(README.read_text())), set(conf_groups())
    assert documented - shipped == set(), "README names groups that srsoup/conf does not have"
    assert shipped - documented == set(), "srsoup/conf has groups the README's table does not name"


@pytest.mark.parametrize("group", sorted(conf_groups()))
def test_readme_group_options_match_the_yaml_files(group):
    documented = readme_groups(README.read_text()).get(group, set()) - BUILTIN_OPTIONS.get(group, set())
    shipped = conf_groups()[group]
    assert documented - shipped == set(), f"README names `{group}` options with no yaml in srsoup/conf/{group}/"
    assert shipped - documented == set(), f"srsoup/conf/{group}/ has options the README's table does not name"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(doc):
    assert broken_links(doc) == [], f"{doc.relative_to(ROOT)} links to files that do not exist"


def test_readme_links_every_doc():
    linked = {(README.parent / t.split("#")[0]).resolve() for t in relative_links(README.read_text())}
    unlinked = [d.relative_to(ROOT).as_posix() for d in DOCS[1:] if d.resolve() not in linked]
    assert unlinked == [], "docs/ pages the README does not link to"


def test_parsers_see_what_they_should():
    """The parsers themselves: a table in the documented shape, links of every kind, code left alone."""
    text = "\n".join(
        [
            "| group | options | what |",
            "|---|---|---|",
            "| `model` | `tiny` (default), `sd15` | the model |",
            "| `hydra/launcher` | `basic`, `slurm` | launchers |",
            "",
            "not the table | `x` |",
            "![fig](docs/a.png) [doc](docs/b.md#part) [web](https://example.org) [anchor](#top)",
            '[ref]: ../c.md "title"',
            '<img src="d.png" alt="">',
            "`[not](a-link.md)`",
            "```",
            "[nor](this.md)",
            "```",
        ]
    )
    assert readme_groups(text) == {"model": {"tiny", "sd15"}, "hydra/launcher": {"basic", "slurm"}}
    assert relative_links(text) == ["docs/a.png", "docs/b.md#part", "../c.md", "d.png"]
