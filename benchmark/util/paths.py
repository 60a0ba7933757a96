"""Which paths a user may name: confinement to allowed folders, and the policy a run puts in force.

A path named in a suite (a ``file`` poison's ``path``, an ``image_folder`` dataset's ``root``) goes
through ``UserPaths``: a relative path is tried against the suite's folder, then ``--data-dir``; the
result must lie under one of those or an ``--allow-path`` (symlinks resolved first, so a link
pointing outside is refused too). ``poisonbench run``/``validate`` put the suite's policy in force
with ``with allowed_paths(UserPaths.for_suite(...)):``; plugins read it with ``active_paths()``
(re-exported by ``poisonbench.api``). A harness that crosses process boundaries (the Ray executor)
ships ``UserPaths.to_json()`` and re-enters ``allowed_paths`` on the worker. Without a policy in
force (library use) the working folder and the data folder are allowed. Paths typed on the command
line (``poisonbench import SRC``) are the user's own choice and are not confined.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class UserPaths:
    """Where relative user paths resolve (``bases``, in order) and where any path must lie (``roots``)."""

    bases: tuple[Path, ...]
    roots: tuple[Path, ...]

    @classmethod
    def for_suite(cls, suite_path: str | Path, *, data_dir: Path | None = None,
                  allow: tuple[Path, ...] | list[Path] = ()) -> UserPaths:
        """The policy of a suite file: its folder, then ``data_dir``; plus explicit ``allow`` roots."""
        bases = (Path(suite_path).resolve().parent,) + ((Path(data_dir).resolve(),) if data_dir else ())
        return cls(bases, bases + tuple(Path(p).resolve() for p in allow))

    @classmethod
    def default(cls, data_dir: Path | None = None) -> UserPaths:
        """No suite known (library use): the working folder and the data folder
        (``data_dir``, else ``$POISONBENCH_DATA_DIR``)."""
        env = os.environ.get("POISONBENCH_DATA_DIR")
        data = Path(data_dir) if data_dir else (Path(env) if env else None)
        bases = (Path.cwd().resolve(),) + ((data.expanduser().resolve(),) if data else ())
        return cls(bases, bases)

    @classmethod
    def unconfined(cls, *, anchor: Path) -> UserPaths:
        """A path the user typed: relative to the working folder, anywhere under ``anchor`` (``/``)."""
        return cls((Path.cwd().resolve(),), (Path(anchor),))

    def to_json(self) -> dict[str, list[str]]:
        return {"bases": [str(p) for p in self.bases], "roots": [str(p) for p in self.roots]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UserPaths:
        return cls(tuple(Path(p) for p in data["bases"]), tuple(Path(p) for p in data["roots"]))

    def resolve(self, raw: str | Path, *, what: str) -> Path:
        """The existing path ``raw`` names, confined to ``roots``; ``BadInput`` otherwise."""
        if not str(raw).strip():
            raise BadInput(f"{what}: no path given")
        found, escape = [], None
        for base in self.bases[:1] if Path(raw).is_absolute() else self.bases:
            try:
                candidate = confine(raw, base=base, roots=list(self.roots))
            except BadInput as err:
                escape = escape or err
                continue
            if candidate.exists():
                return candidate
            found.append(candidate)
        if not found:
            raise BadInput(f"{what}: {escape}")
        raise BadInput(f"{what} '{raw}' not found (looked for {', '.join(str(p) for p in found)})")


_ACTIVE: contextvars.ContextVar[UserPaths | None] = contextvars.ContextVar("poisonbench_user_paths",
                                                                           default=None)


@contextlib.contextmanager
def allowed_paths(policy: UserPaths) -> Iterator[UserPaths]:
    """Make ``policy`` the one plugins use while the block runs (runner / CLI wrap a run in this)."""
    token = _ACTIVE.set(policy)
    try:
        yield policy
    finally:
        _ACTIVE.reset(token)


def active_paths(*, data_dir: Path | None = None, extra: dict[str, Any] | None = None) -> UserPaths:
    """``extra["user_paths"]`` if the harness passed one, else the ``allowed_paths`` block, else default."""
    if extra and extra.get("user_paths"):
        return UserPaths.from_json(extra["user_paths"])
    return _ACTIVE.get() or UserPaths.default(data_dir)
