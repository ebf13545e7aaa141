"""What the report modules share: a target with its mark, tables (Markdown and console), medians."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import List, Optional

__all__ = ["Target", "med", "mb", "yes", "md_table", "text_table"]


@dataclass
class Target:
    name: str
    measured: str
    passed: Optional[bool]  # None: not measured in this run

    @property
    def mark(self) -> str:
        return {True: "✅ pass", False: "❌ FAIL", None: "— not measured"}[self.passed]


def med(runs: list, attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs)


def mb(kb: float) -> float:
    return kb * 1024 / 1e6


def yes(flag: bool) -> str:
    return "yes" if flag else "**NO**"


def md_table(head: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def text_table(head: List[str], rows: List[List[str]]) -> str:
    rows = [[c.replace("**", "") for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])
