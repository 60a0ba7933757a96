"""Path confinement: a path named in a suite or entry may not escape the folders it is allowed in."""

from __future__ import annotations

from pathlib import Path

from poisonbench.errors import BadInput


def confine(raw: str | Path, *, base: Path, roots: list[Path]) -> Path:
    """Resolve ``raw`` (relative to ``base``) and check it lies under one of ``roots``.

    Symlinks are resolved before the check, so a link pointing outside is refused too.
    Raises ``BadInput`` naming the path and the allowed roots.
    """
    candidate = Path(raw)
    if not candidate.is_absolute():
        candidate = base / candidate
    resolved = candidate.resolve()
    for root in roots:
        root_resolved = Path(root).resolve()
        if resolved == root_resolved or root_resolved in resolved.parents:
            return resolved
    allowed = ", ".join(str(r) for r in roots)
    raise BadInput(f"path '{raw}' escapes the allowed folders ({allowed})")
