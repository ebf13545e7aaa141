"""The README starts short: at most 250 lines, the layout first, the test command CI runs, a
minimal configuration that nsscache and the source accept, a link to every docs/ page. Every
relative link in it and in docs/ leads to a file that exists and, with a #fragment, to a
heading of that file (GitHub's anchors)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from nss_cache import config as nss_config

from nss_cache_coreweave import config

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
MAX_README_LINES = 250

_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


@dataclass(frozen=True)
class Link:
    source: Path
    line: int
    target: str

    def __str__(self) -> str:
        return f"{self.source.relative_to(REPO)}:{self.line}: ({self.target})"


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower case, punctuation dropped, spaces -> '-'."""
    text = _LINK.sub(r"\1", heading)
    text = _CODE_SPAN.sub(lambda m: m.group(2).strip(), text).replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a Markdown file; a repeated slug gets -1, -2 ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(path.read_text()):
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(path: Path) -> list[Link]:
    """Links of a Markdown file that point into the repository (no scheme), outside code."""
    links = []
    for number, line in prose_lines(path.read_text()):
        # A code span's text cannot hold a link; a link's text may hold a code span.
        for match in _LINK.finditer(_CODE_SPAN.sub("code", line)):
            target = match.group(2)
            if target and not _SCHEME.match(target):
                links.append(Link(path, number, target))
    return links


def broken(link: Link) -> str | None:
    """Why a link leads nowhere, or None when its file (and heading) exist."""
    file_part, _, fragment = link.target.partition("#")
    target = (link.source.parent / file_part).resolve() if file_part else link.source
    if not target.exists():
        return f"{link}: no file {target}"
    if fragment and target.suffix == ".md" and fragment not in anchors(target):
        return f"{link}: no heading #{fragment} in {target.relative_to(REPO)}"
    return None


def section(text: str, title: str) -> str:
    """The body of a '## title' section of a Markdown text."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no section '## {title}'"
    return match.group(1)


def test_readme_is_at_most_250_lines():
    assert len(README.read_text().splitlines()) <= MAX_README_LINES


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(path):
    problems = [problem for link in relative_links(path) if (problem := broken(link))]

    assert problems == []


def test_the_readme_links_every_docs_page():
    linked = {(REPO / link.target.partition("#")[0]).resolve() for link in relative_links(README)}

    assert [page.name for page in DOCS if page.resolve() not in linked] == []


def test_layout_comes_first_and_links_the_module_map():
    text = README.read_text()
    sections = re.findall(r"^## (.+)$", text, re.M)

    assert sections[0] == "Layout"
    assert "](nss_cache_coreweave/__init__.py)" in section(text, "Layout")


def test_the_readme_test_command_is_what_ci_runs():
    ci_commands = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
                   if line and not line.startswith(("#", "set ", "cd ", "export "))]

    assert ci_commands == ["make test"]
    assert "make test     # 2. set up and run the whole test suite" in section(README.read_text(), "Try it")


def test_the_minimal_configuration_loads_in_nsscache_and_parses(tmp_path):
    block = re.search(r"```ini\n(.*?)```", section(README.read_text(), "Minimal configuration"), re.S)
    assert block, "no ini block in the README's minimal configuration"
    token = tmp_path / "token"
    token.write_text("example-token\n")
    token.chmod(0o600)
    conf_file = tmp_path / "nsscache.conf"
    conf_file.write_text(block.group(1).replace("/etc/nsscache-coreweave/token", str(token)))
    conf = nss_config.Config({})
    conf.config_file = str(conf_file)
    nss_config.LoadConfig(conf)

    parsed = config.parse(dict(conf.options["passwd"].source), environ={})

    assert conf.maps == ["passwd", "group", "shadow", "sshkey"]
    assert conf.options["passwd"].cache == {"name": "files", "dir": "/etc", "cache_filename_suffix": "cache"}
    assert parsed.allowed_groups == ("slurm-users", "slurm-admins")
    assert parsed.warnings == ()


def test_slugs_follow_github():
    assert slug("Slurm accounts (slurm-sync)") == "slurm-accounts-slurm-sync"
    assert slug("What slurmdbd 22.05 imposes (found with the real daemon)") == \
        "what-slurmdbd-2205-imposes-found-with-the-real-daemon"
    assert slug("`nsscache-coreweave-keys`: options") == "nsscache-coreweave-keys-options"
    assert slug("The keys command, slurm-sync, the hook") == "the-keys-command-slurm-sync-the-hook"
