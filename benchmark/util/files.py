"""Files written safely and named safely: atomic writes, file-name-safe labels, the default folders.

Atomic writes: the payload goes to a unique temp file next to the target (same folder, so the same
file system), is flushed and fsynced, then ``os.replace``-d over the target; a reader sees the old
file or the new one, never a torn one, and a failed write leaves no temp file behind. Every file the
project writes whole (artifacts, checkpoints, manifests, figures, cache entries, leaderboard pages,
decoded datasets) goes through ``atomic_write_bytes`` / ``atomic_write_text`` / ``atomic_write_json``
or, for writers that need a path (safetensors' ``save_file``), ``atomic_path``.

Default folders (platformdirs, so XDG_CACHE_HOME and the macOS/Windows conventions are honoured):

* cache (crafted artifacts, surrogates, decoded image folders): ``--cache-dir``, else
  ``$POISONBENCH_CACHE_DIR``, else ``platformdirs.user_cache_dir("poisonbench")``
  (``~/.cache/poisonbench`` on Linux);
* data (datasets in their standard layouts): ``--data-dir``, else ``$POISONBENCH_DATA_DIR``, else
  ``<user cache dir>/data`` — downloaded datasets can always be fetched again, so they live in the
  cache, not in ``user_data_dir``.

An explicit argument always wins over the environment variable, which wins over the default.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

APP_NAME = "poisonbench"
CACHE_ENV = "POISONBENCH_CACHE_DIR"
DATA_ENV = "POISONBENCH_DATA_DIR"
SAFE_CHARS = "-_."  # besides ASCII letters and digits


@contextlib.contextmanager
def atomic_path(path: Path | str, *, tmp: Path | None = None) -> Iterator[Path]:
    """A temp path next to ``path`` to write to; renamed over ``path`` when the block succeeds.

    The writer must close its file before the block ends; the file is fsynced before the rename.
    On any error the temp file is removed and ``path`` is left as it was. ``tmp`` names the temp
    file (in ``path``'s folder) for callers whose debris sweep needs a known name (the cache);
    by default it is a fresh ``.tmp-<name>-XXXX.tmp``, which the run folder's sweep also matches.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tmp is None:
        fd, name = tempfile.mkstemp(prefix=f".tmp-{path.name}-", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path | str, payload: bytes, *, tmp: Path | None = None) -> None:
    """Write ``payload`` to ``path`` atomically (temp file + fsync + ``os.replace``)."""
    with atomic_path(path, tmp=tmp) as target, open(target, "wb") as handle:
        handle.write(payload)


def atomic_write_text(path: Path | str, text: str, *, tmp: Path | None = None) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), tmp=tmp)


def atomic_write_json(path: Path | str, value: Any, *, indent: int | None = 2, sort_keys: bool = False,
                      default: Any = None, tmp: Path | None = None) -> None:
    """Write ``value`` as JSON (trailing newline; NaN and infinities refused: not JSON) atomically."""
    text = json.dumps(value, indent=indent, sort_keys=sort_keys, default=default, allow_nan=False)
    atomic_write_text(path, text + "\n", tmp=tmp)


def safe_name(text: str, *, keep: str = SAFE_CHARS, max_len: int | None = None) -> str:
    """``text`` with every character outside ASCII letters, digits and ``keep`` replaced by ``-``.

    ``max_len`` truncates; leading/trailing dots are stripped so the name is never hidden or
    relative (``..``); an empty result becomes ``-``.
    """
    safe = "".join(ch if ch.isascii() and (ch.isalnum() or ch in keep) else "-" for ch in text)
    safe = safe.strip(".")
    if max_len is not None:
        safe = safe[:max_len]
    return safe or "-"


def _user_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def default_dir(kind: str, explicit: Path | str | None = None) -> Path:
    """The folder for ``kind`` ('cache' or 'data'): ``explicit``, else its env variable, else the default."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = {"cache": CACHE_ENV, "data": DATA_ENV}.get(kind)
    if env is None:
        raise ValueError(f"unknown folder kind {kind!r} (expected 'cache' or 'data')")
    value = os.environ.get(env)
    if value:
        return Path(value).expanduser()
    root = _user_cache_dir()
    return root if kind == "cache" else root / "data"


def default_cache_dir(explicit: Path | str | None = None) -> Path:
    """``explicit``, else ``$POISONBENCH_CACHE_DIR``, else the user cache dir (see the module docstring)."""
    return default_dir("cache", explicit)


def default_data_dir(explicit: Path | str | None = None) -> Path:
    """``explicit``, else ``$POISONBENCH_DATA_DIR``, else ``<user cache dir>/data``."""
    return default_dir("data", explicit)
