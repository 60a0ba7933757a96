"""The content-addressed cache of crafted poison artifacts and trained surrogates.

Layout under ``root`` (``--cache-dir`` / ``POISONBENCH_CACHE_DIR``)::

    <kind>/<key><suffix>      the entry (kind: 'poisons', 'surrogates', ...)
    <kind>/<key>.json         what it is: key material, creation time (written before the entry)
    <kind>/.locks/<key>.lock  advisory lock held while one process creates the entry
    <kind>/.tmp-<key>-*       a creation in progress (or debris of a crashed one)

The key is the sha256 of the canonical JSON of everything that determines the entry. Correctness
never depends on the lock: an entry only appears by ``os.replace`` of a complete temp file, so a
reader sees either nothing or the whole file. The lock only stops several processes from crafting
the same key at once. A crash or a full disk leaves no entry; its temp file is removed by the next
process that takes that key's lock, when a cache is opened, and by ``gc``. A temp file is stale
exactly when nobody holds its key's lock (locks die with their process).

Reading an entry through ``get_or_create`` touches its mtime: ``gc --days N`` removes entries not
used for N days.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from poisonbench.errors import BadInput, PoisonbenchError
from poisonbench.util.files import atomic_path, atomic_write_json

TMP_PREFIX = ".tmp-"
DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
SUFFIXES = {"poisons": ".safetensors", "surrogates": ".safetensors"}


def cache_key(key_material: dict[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of ``key_material``."""
    text = json.dumps(
        key_material,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
        default=_json_default,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, tuple | set | frozenset):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cache key material holds a {type(value).__name__}, which is not JSON")


@dataclass(frozen=True)
class Entry:
    """One cache entry as ``cache ls`` shows it."""

    kind: str
    key: str
    path: Path
    size: int
    created: float
    last_used: float
    material: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key": self.key,
            "path": str(self.path),
            "size": self.size,
            "created": self.created,
            "last_used": self.last_used,
            "material": self.material,
        }


class ArtifactCache:
    """Content-addressed files under ``root``; opening one clears stale temp files."""

    def __init__(self, root: str | Path, *, sweep: bool = True):
        self.root = Path(root).expanduser()
        if sweep and self.root.is_dir():
            self.remove_debris()

    # -- addressing ------------------------------------------------------------------------
    def path_for(self, kind: str, key_material: dict[str, Any], suffix: str | None = None) -> Path:
        """Where the entry for ``key_material`` lives (whether or not it exists yet)."""
        return self._path(kind, cache_key(key_material), suffix)

    def _path(self, kind: str, key: str, suffix: str | None) -> Path:
        if not kind or "/" in kind or kind.startswith("."):
            raise ValueError(f"bad cache kind {kind!r}")
        return self.root / kind / f"{key}{suffix if suffix is not None else SUFFIXES.get(kind, '')}"

    def _lock(self, kind: str, key: str, timeout: float = -1) -> FileLock:
        lock_dir = self.root / kind / ".locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(str(lock_dir / f"{key}.lock"), timeout=timeout, preserve_lock_file=True)

    # -- the one way in --------------------------------------------------------------------
    def get_or_create(
        self,
        key_material: dict[str, Any],
        create: Callable[[Path], None],
        *,
        kind: str = "poisons",
        suffix: str | None = None,
    ) -> Path:
        """The entry's path, calling ``create(tmp_path)`` first when it is missing.

        ``create`` must write the complete file at ``tmp_path`` (any name it likes in that folder
        is not seen); it is renamed into place only after ``create`` returns. Concurrent callers
        with the same key wait for the one creating it. A failed ``create`` leaves nothing.
        """
        key = cache_key(key_material)
        path = self._path(kind, key, suffix)
        if path.is_file():  # fast path: no lock, an entry is always complete
            _touch(path)
            return path
        with self._lock(kind, key):
            if path.is_file():  # another process made it while we waited
                _touch(path)
                return path
            self._remove_temps(kind, key)  # we hold the lock: any temp of this key is debris
            self._create(kind, key, path, key_material, create)
        return path

    def _create(
        self,
        kind: str,
        key: str,
        path: Path,
        material: dict[str, Any],
        create: Callable[[Path], None],
    ) -> None:
        tmp = path.parent / f"{TMP_PREFIX}{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}"
        meta = path.parent / f"{key}.json"
        try:
            atomic_write_json(
                meta,
                {"key": key, "kind": kind, "created": time.time(), "material": material},
                indent=1, sort_keys=True, default=_json_default, tmp=tmp.with_suffix(".json"),
            )
            with atomic_path(path, tmp=tmp) as target:  # key-named temp: the debris sweep finds it
                create(target)
                if not target.is_file():
                    raise RuntimeError(f"cache create callback wrote nothing at {target}")
            _fsync_dir(path.parent)
        except OSError as err:
            _discard(tmp, tmp.with_suffix(".json"), meta)
            if err.errno in DISK_FULL:
                raise PoisonbenchError(
                    f"cache {self.root}: disk full or file too large while writing "
                    f"{path.name} ({os.strerror(err.errno)}); nothing was kept"
                ) from err
            raise
        except BaseException:
            _discard(tmp, tmp.with_suffix(".json"), meta)
            raise

    # -- housekeeping ----------------------------------------------------------------------
    def _remove_temps(self, kind: str, key: str) -> list[Path]:
        removed = []
        for tmp in (self.root / kind).glob(f"{TMP_PREFIX}{key}-*"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
        return removed

    def remove_debris(self) -> list[Path]:
        """Delete temp files whose key nobody is creating now, and metadata without an entry."""
        removed: list[Path] = []
        for kind_dir in self._kind_dirs():
            keys = {
                p.name[len(TMP_PREFIX) :].split("-", 1)[0] for p in kind_dir.glob(f"{TMP_PREFIX}*")
            }
            for key in keys:
                try:
                    with self._lock(kind_dir.name, key, timeout=0):
                        removed += self._remove_temps(kind_dir.name, key)
                except Timeout:  # someone is creating it right now
                    continue
        return removed

    def _kind_dirs(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def entries(self) -> list[Entry]:
        """Every complete entry, oldest use first."""
        found = []
        for kind_dir in self._kind_dirs():
            for path in kind_dir.iterdir():
                if path.name.startswith(".") or path.suffix == ".json" or not path.is_file():
                    continue
                key = path.name.split(".", 1)[0]
                meta = _read_json(kind_dir / f"{key}.json")
                stat = path.stat()
                found.append(
                    Entry(
                        kind_dir.name,
                        key,
                        path,
                        stat.st_size,
                        float(meta.get("created", stat.st_ctime)),
                        stat.st_mtime,
                        meta.get("material", {}),
                    )
                )
        return sorted(found, key=lambda e: e.last_used)

    def find(self, key_prefix: str) -> Entry:
        """The entry whose key starts with ``key_prefix`` (``BadInput`` when none or several)."""
        if len(key_prefix) < 4:
            raise BadInput(
                f"cache key prefix '{key_prefix}' is too short (give at least 4 characters)"
            )
        matches = [e for e in self.entries() if e.key.startswith(key_prefix.lower())]
        if not matches:
            raise BadInput(f"no cache entry with key '{key_prefix}' in {self.root}")
        if len(matches) > 1:
            raise BadInput(
                f"cache key '{key_prefix}' is ambiguous ({len(matches)} entries); "
                "give more characters"
            )
        return matches[0]

    def remove(self, entry: Entry) -> None:
        """Delete an entry and its metadata (under its lock, so no creation is cut short)."""
        with self._lock(entry.kind, entry.key):
            _discard(entry.path, entry.path.parent / f"{entry.key}.json")

    def gc(self, *, days: float, dry_run: bool = False) -> dict[str, list[str]]:
        """Remove temp debris, orphaned metadata and entries not used for ``days`` days."""
        report: dict[str, list[str]] = {"debris": [], "orphans": [], "expired": []}
        if not dry_run:
            report["debris"] = [str(p) for p in self.remove_debris()]
        cutoff = time.time() - days * 86400
        for entry in self.entries():
            if entry.last_used < cutoff:
                report["expired"].append(str(entry.path))
                if not dry_run:
                    self.remove(entry)
        hour_ago = time.time() - 3600  # metadata is written just before its entry appears
        for kind_dir in self._kind_dirs():
            for meta in kind_dir.glob("*.json"):
                if meta.name.startswith("."):
                    continue
                key = meta.stem
                has_entry = any(p.suffix != ".json" for p in kind_dir.glob(f"{key}.*"))
                if not has_entry and meta.stat().st_mtime < hour_ago:
                    report["orphans"].append(str(meta))
                    if not dry_run:
                        meta.unlink(missing_ok=True)
        return report


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:  # a read-only cache still serves entries
        pass


def _discard(*paths: Path) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
