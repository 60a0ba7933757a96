"""Natural sorting, fnmatch filtering and "did you mean" suggestions shared by registries and suites."""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable


def natural_key(name: str) -> list:
    """Sort key that orders R2 before R16 and LF8 before LF10 (timm's natural sort)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def natural_sorted(names: Iterable[str]) -> list[str]:
    return sorted(names, key=natural_key)


def filter_names(names: Iterable[str], pattern: str | None) -> list[str]:
    """Names matching an fnmatch pattern (case-insensitive), naturally sorted; all when pattern is None."""
    names = list(names)
    if pattern:
        names = [n for n in names if fnmatch.fnmatchcase(n.lower(), pattern.lower())]
    return natural_sorted(names)


def did_you_mean(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Close matches for ``word``; case-insensitive, best first."""
    candidates = list(candidates)
    lowered = {c.lower(): c for c in candidates}
    matches = difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=0.6)
    return [lowered[m] for m in matches]


def suggestion_suffix(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` or the empty string."""
    close = did_you_mean(word, candidates)
    if not close:
        return ""
    return " (did you mean " + " or ".join(f"'{c}'" for c in close) + "?)"
