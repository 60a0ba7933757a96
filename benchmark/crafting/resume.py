"""Resumable crafting: a long craft's state in one safetensors file, saved atomically, resumed by the next run.

A poison whose crafting runs for minutes or hours (REM's rounds, SEP's ensemble) saves its state
after every finished round with ``CraftState.save(meta, tensors)`` and asks ``CraftState.load()``
when it starts. The file holds the tensors (model weights, optimiser buffers, the noise so far) and
a JSON header (``__metadata__``) with the round and whatever else the poison needs; never pickle.
It is written to a temp file in the same folder, fsynced and renamed, so a kill at any moment
leaves the previous state or the new one, never a torn file.

Where it lives: ``<cache dir>/craft-state/<label>-<key>/state.safetensors``, where ``<key>`` is the
sha256 of the poison's identity (registry label, params, dataset fingerprint, seed, a hash of the
clean bytes and labels, class count, device type). The cache dir is ``--cache-dir`` /
``$POISONBENCH_CACHE_DIR``; when the harness crafts without a cache (``cache_dir`` None) nothing is
saved and an interrupted craft starts over. The folder is removed when the craft finishes (the
artifact is then in the cache); ``cache ls``/``gc`` do not list it — delete ``<cache
dir>/craft-state/`` to discard unfinished crafts. A state file whose header names another
identity, or that cannot be parsed, raises ``ArtifactError`` naming the file: nothing is silently
restarted on top of it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poisonbench.errors import ArtifactError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from poisonbench.api import CraftContext

FORMAT = "poisonbench-craft-state"
FORMAT_VERSION = 1
FOLDER = "craft-state"


def data_digest(images: torch.Tensor, labels: torch.Tensor) -> str:
    """sha256 of the clean uint8 images and int64 labels (part of a craft's identity)."""
    digest = hashlib.sha256()
    digest.update(images.detach().cpu().contiguous().numpy().tobytes())
    digest.update(labels.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class CraftState:
    """The saved state of one craft (see the module docstring); ``save`` / ``load`` / ``clear``."""

    def __init__(self, folder: Path, identity: Mapping[str, Any]):
        self.folder = Path(folder)
        self.path = self.folder / "state.safetensors"
        self.identity = json.loads(json.dumps(dict(identity), sort_keys=True, default=str))

    def save(self, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
        """Atomically replace the state with ``tensors`` and the JSON-ready ``meta``."""
        from safetensors.torch import save as st_save

        from poisonbench.util.files import atomic_write_bytes

        header = {"format": FORMAT, "format_version": FORMAT_VERSION, "identity": self.identity,
                  "meta": dict(meta)}
        payload = st_save({k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()},
                          metadata={"poisonbench": json.dumps(header, allow_nan=False)})
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, payload)

    def load(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
        """(meta, tensors) of the saved state, or None when there is none."""
        from safetensors.torch import load as st_load

        if not self.path.is_file():
            return None
        try:
            data = self.path.read_bytes()
            (length,) = struct.unpack("<Q", data[:8])
            header = json.loads(json.loads(data[8:8 + length])["__metadata__"]["poisonbench"])
            tensors = st_load(data)
        except Exception as err:  # truncated, corrupt or foreign: name it, never guess
            raise ArtifactError(f"craft state {self.path} is unreadable ({type(err).__name__}); "
                                f"delete {self.folder} to craft from the start") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT \
                or header.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(f"craft state {self.path} is not a poisonbench craft state of format "
                                f"{FORMAT_VERSION}; delete {self.folder} to craft from the start")
        if header.get("identity") != self.identity:
            raise ArtifactError(f"craft state {self.path} belongs to another craft (params, data or seed "
                                f"differ); delete {self.folder} to craft from the start")
        return header.get("meta", {}), tensors

    def clear(self) -> None:
        """Remove the state folder (the craft finished; its artifact is the cache's business now)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def craft_state(ctx: CraftContext, *, label: str, identity: Mapping[str, Any]) -> CraftState | None:
    """The ``CraftState`` of a craft whose result is fully determined by ``identity``.

    ``identity`` should hold the poison's label and params and a ``data_digest`` of the clean split;
    the dataset fingerprint, seed, class count and device type are added here. None when
    ``ctx.cache_dir`` is None (no cache: nothing is saved, nothing resumed).
    """
    if ctx.cache_dir is None:
        return None
    from poisonbench.util.files import safe_name

    full = {**dict(identity), "label": label, "dataset_fingerprint": ctx.dataset_fingerprint,
            "seed": int(ctx.seed), "num_classes": int(ctx.num_classes),
            "device_type": str(ctx.device).split(":")[0]}
    text = json.dumps(full, sort_keys=True, separators=(",", ":"), default=str)
    key = hashlib.sha256(text.encode()).hexdigest()[:24]
    return CraftState(Path(ctx.cache_dir) / FOLDER / f"{safe_name(label, max_len=40)}-{key}", full)
