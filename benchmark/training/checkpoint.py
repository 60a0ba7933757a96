"""Training checkpoints: one safetensors file holding model, optimiser, RNG state and a JSON header.

No pickle anywhere: tensors (weights, momentum buffers, RNG states) are safetensors entries named
``model/<key>``, ``optim/<param index>/<key>``, ``rng/cpu``, ``rng/cuda/<i>``; everything else
(epoch, history, optimiser hyper-parameters, scheduler state, the run's identity) is JSON in the
file's ``__metadata__``. A checkpoint is written to a temp file in the same folder, fsynced and
renamed over the old one, so a kill at any moment leaves either the old or the new checkpoint.

A checkpoint that cannot be parsed, lacks our format tag or belongs to another run (different
identity: protocol, seed, model or training data) raises ``ArtifactError`` naming the file; the
trainer never silently starts over on top of one.

``load_checkpoint(..., restore_rng=False)`` leaves the RNG state alone, which breaks bit-identical
resume when the model uses randomness (dropout).
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from poisonbench.errors import ArtifactError
from poisonbench.util.files import atomic_write_bytes

FORMAT = "poisonbench-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, state: dict[str, Any], identity: str) -> None:
    """Atomically write model/optimiser/scheduler/RNG plus ``state`` (JSON-ready) to ``path``."""
    tensors: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        tensors[f"model/{key}"] = value.detach().to("cpu", copy=True).contiguous()
    opt = optimizer.state_dict()
    opt_scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in opt["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{index}/{key}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                opt_scalars.setdefault(str(index), {})[key] = value
    tensors["rng/cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = rng
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "identity": identity,
              "state": state, "optimizer": {"param_groups": opt["param_groups"], "scalars": opt_scalars},
              "scheduler": _scheduler_to_json(scheduler.state_dict())}
    payload = st_save(tensors, metadata={"poisonbench": json.dumps(header)})
    atomic_write_bytes(Path(path), payload)


def load_checkpoint(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, identity: str, restore_rng: bool = True) -> dict[str, Any]:
    """Restore everything ``save_checkpoint`` wrote into the given objects; return ``state``."""
    path = Path(path)
    header, tensors = read_checkpoint(path)
    if header.get("identity") != identity:
        raise ArtifactError(f"checkpoint {path} belongs to a different training run (protocol, seed, "
                            "model or data changed); remove it to start this run over")
    try:
        model_state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
        model.load_state_dict(model_state, strict=True)
        opt_state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optim/"):
                _, index, name = key.split("/", 2)
                opt_state.setdefault(int(index), {})[name] = value
        for index, scalars in header["optimizer"]["scalars"].items():
            opt_state.setdefault(int(index), {}).update(scalars)
        optimizer.load_state_dict({"state": opt_state, "param_groups": header["optimizer"]["param_groups"]})
        scheduler.load_state_dict(_scheduler_from_json(header["scheduler"]))
    except (KeyError, ValueError, RuntimeError, TypeError) as err:
        raise ArtifactError(f"checkpoint {path} does not fit this model/optimiser: {_short(err)}") from None
    if restore_rng:
        torch.set_rng_state(tensors["rng/cpu"])
        cuda_states = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng/cuda/"))]
        if cuda_states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    return header["state"]


def read_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Parse a checkpoint file into (JSON header, tensors); ``ArtifactError`` when it is not one."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ArtifactError(f"checkpoint {path} cannot be read: {err.strerror}") from None
    try:
        (header_len,) = struct.unpack("<Q", data[:8])
        st_header = json.loads(data[8:8 + header_len])
        header = json.loads(st_header["__metadata__"]["poisonbench"])
        tensors = st_load(data)
    except Exception as err:  # any parse failure means a truncated, corrupt or foreign file
        raise ArtifactError(f"checkpoint {path} is corrupt or not a poisonbench checkpoint "
                            f"({_short(err)}); remove it to start this run over") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ArtifactError(f"checkpoint {path} is not a poisonbench checkpoint")
    if header.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"checkpoint {path} has format version {header.get('format_version')}, "
                            f"this poisonbench reads {FORMAT_VERSION}; remove it to start over")
    if "rng/cpu" not in tensors or not isinstance(header.get("state"), dict):
        raise ArtifactError(f"checkpoint {path} is incomplete (no RNG state or training state)")
    return header, tensors


def peek_state(path: Path) -> dict[str, Any] | None:
    """The JSON training state of a checkpoint (None when absent); raises on a corrupt file."""
    if not Path(path).exists():
        return None
    return read_checkpoint(path)[0]["state"]


def _scheduler_to_json(state: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in state.items():
        if isinstance(value, Counter):  # MultiStepLR keeps milestones as a Counter (int keys)
            out[key] = {"__counter__": sorted([int(k), int(v)] for k, v in value.items())}
        else:
            out[key] = value
    return json.loads(json.dumps(out))


def _scheduler_from_json(state: dict[str, Any]) -> dict[str, Any]:
    return {key: Counter({k: v for k, v in value["__counter__"]})
            if isinstance(value, dict) and "__counter__" in value else value
            for key, value in state.items()}


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__
