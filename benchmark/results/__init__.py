"""The run directory on disk: ``cells.jsonl`` records, ``manifest.json``, the run lock, cell metrics.

Contract (docs/formats.md): ``DIR/cells.jsonl`` holds one JSON object per finished cell, one complete line
at a time (written with a single ``write`` + flush + fsync), so a reader never sees half a record; a
reader ignores an unterminated last line (a writer killed mid-line) and the next append starts on a
fresh line. ``DIR/manifest.json`` is rewritten atomically (temp file + ``os.replace``).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from poisonbench.errors import ArtifactError, BadInput
from poisonbench.util.files import atomic_write_json

CELLS_FILE = "cells.jsonl"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".poisonbench.lock"


# -- records ----------------------------------------------------------------------------------

def append_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one record as one complete line of ``run_dir/cells.jsonl`` (flush + fsync)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CELLS_FILE
    line = json.dumps(record, sort_keys=False, allow_nan=False) + "\n"
    with open(path, "ab+") as handle:
        prefix = b""
        if handle.tell() > 0:  # a killed writer may have left an unterminated line: start fresh
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                prefix = b"\n"
        handle.write(prefix + line.encode())
        handle.flush()
        os.fsync(handle.fileno())


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """Every complete record of ``run_dir/cells.jsonl`` in file order ([] when there is none).

    A later record for the same ``cell_id`` replaces an earlier one (a cell re-run on purpose).
    An unterminated last line is ignored; a complete line that is not a JSON object raises
    ``ArtifactError`` naming file and line.
    """
    path = Path(run_dir) / CELLS_FILE
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete = lines[:-1]  # the part after the last newline is unterminated (or empty)
    by_id: dict[str, dict[str, Any]] = {}
    for number, raw in enumerate(complete, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError as err:
            if _is_torn(raw):  # cut by a kill, then terminated by the next append: skip it
                continue
            raise ArtifactError(f"{path}:{number}: not a JSON record ({err})") from None
        if not isinstance(record, dict) or "cell_id" not in record:
            raise ArtifactError(f"{path}:{number}: not a cell record (no 'cell_id')")
        by_id.pop(record["cell_id"], None)
        by_id[record["cell_id"]] = record
    return list(by_id.values())


def _is_torn(raw: bytes) -> bool:
    """A line that is the beginning of a record cut by a kill: opens an object, never closes it."""
    return raw.lstrip().startswith(b"{") and not raw.rstrip().endswith(b"}")


def finished_cell_ids(run_dir: Path) -> set[str]:
    return {r["cell_id"] for r in read_records(run_dir)}


# -- metrics ----------------------------------------------------------------------------------

def finite(value: Any) -> bool:
    """True for a real, finite number; False for None, NaN and ±inf.

    The one rule for non-finite values in curves (run records and leaderboard entries alike): a NaN,
    infinite or missing training loss never counts as "below the loss threshold" (a diverged epoch
    has not learned anything), and a non-finite accuracy is never the peak.
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def cell_metrics(history: dict[str, list[float]], *, selected_epoch: int,
                 loss_threshold: float, speed_epochs: int = 5) -> dict[str, Any]:
    """The contract's per-cell metrics from a history (1-based epochs, fractions in [0, 1]).

    Plus the threshold-free learning speed (``early_loss``, ``early_loss_epochs``; see
    ``poisonbench.results.speed``). Every training reports three selections: ``peak_test_acc``
    (oracle), ``val_selected_test_acc`` (the epoch of best clean validation accuracy, earliest on
    ties; null without a validation split) and ``final_test_acc``; ``selected_test_acc`` is the
    legacy single selection of the cell's ``select_epoch``.
    """
    from poisonbench.results.speed import learning_speed

    speed = learning_speed(history, speed_epochs=speed_epochs)
    test = history["test_acc"]
    if not test:
        return {"peak_test_acc": None, "peak_epoch": None, "final_test_acc": None,
                "selected_test_acc": None, "selected_epoch": None, "epochs_to_loss_threshold": None,
                "val_selected_test_acc": None, "val_selected_epoch": None, **speed}
    # ties: earliest epoch; a non-finite or missing accuracy never wins
    peak_epoch = max(range(len(test)), key=lambda i: (test[i] if finite(test[i]) else -math.inf, -i)) + 1
    threshold_epoch = next((i + 1 for i, loss in enumerate(history["train_loss"])
                            if finite(loss) and loss < loss_threshold), None)
    selected_epoch = min(max(1, int(selected_epoch)), len(test))
    return {"peak_test_acc": test[peak_epoch - 1], "peak_epoch": peak_epoch,
            "final_test_acc": test[-1], "selected_test_acc": test[selected_epoch - 1],
            "selected_epoch": selected_epoch, "epochs_to_loss_threshold": threshold_epoch,
            **val_selected(test, history.get("val_acc")), **speed}


def val_selected(test: list[float], val: list[float] | None) -> dict[str, Any]:
    """The test accuracy at the epoch of best validation accuracy (earliest on ties; NaN lowest)."""
    if not val or len(val) != len(test):
        return {"val_selected_test_acc": None, "val_selected_epoch": None}
    epoch = max(range(len(val)), key=lambda i: (val[i] if val[i] == val[i] else float("-inf"), -i)) + 1
    return {"val_selected_test_acc": test[epoch - 1], "val_selected_epoch": epoch}


# -- manifest ---------------------------------------------------------------------------------

def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Atomically (re)write ``run_dir/manifest.json``."""
    atomic_write_json(Path(run_dir) / MANIFEST_FILE, manifest)


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / MANIFEST_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ArtifactError(f"{path}: unreadable run manifest ({err})") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: a run manifest must be a JSON object")
    return data


def build_manifest(*, suite_resolved: dict[str, Any], catalog: Any, device: dict[str, Any],
                   started: str, executor: str, argv: list[str] | None = None) -> dict[str, Any]:
    """Resolved suite, versions (poisonbench, plugins, torch, timm, torchvision), device, git hash."""
    versions = {"poisonbench": _dist_version("poisonbench"), "python": platform.python_version()}
    for name in ("torch", "torchvision", "timm", "numpy", "safetensors"):
        versions[name] = _dist_version(name)
    plugins = [{"name": p.name, "distribution": p.distribution, "version": p.version, "status": p.status}
               for p in getattr(catalog, "plugins", [])]
    versions["plugins"] = {p["distribution"]: p["version"] for p in plugins if p["status"] == "loaded"}
    return {"suite": suite_resolved, "versions": versions, "plugins": plugins, "device": device,
            "git": git_hash(), "executor": executor, "argv": list(argv or []), "started": started,
            "finished": None, "host": platform.node()}


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_hash() -> str | None:
    """The poisonbench checkout's commit (with ``-dirty`` when modified), None outside a checkout."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "") if head else None


def remove_debris(run_dir: Path) -> list[Path]:
    """Delete temp files a killed writer left (``.<name>.<pid>.tmp`` of manifest and checkpoints).

    Call only while holding the run lock: then no other process is writing in ``run_dir``.
    """
    run_dir = Path(run_dir)
    found = [*run_dir.glob(".*.tmp"), *run_dir.glob("checkpoints/*/.*.tmp")]
    for path in found:
        path.unlink(missing_ok=True)
    return found


# -- the run lock -----------------------------------------------------------------------------

def lock_run_dir(run_dir: Path):
    """Take ``run_dir``'s lock without waiting; ``BadInput`` (exit 2) naming the lock when held."""
    from filelock import FileLock, Timeout

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise BadInput(f"run directory {run_dir} is in use by another run (lock {run_dir / LOCK_FILE}); "
                       "wait for it or choose another --out") from None
    return lock
