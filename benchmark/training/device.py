"""Device choice and the numeric settings that go with it (autocast dtype, channels_last, seeds).

``resolve_device("auto")`` is CUDA when available, else CPU. Precision ``auto`` means bf16 autocast
on CUDA and fp32 on CPU (bf16 autocast on CPU is slower on most x86 cores and changes results);
``resolved_precision`` is the one place that rule lives, for victims, surrogates and crafting alike.
``derive_seed`` turns (seed, labels...) into an independent 63-bit seed, so e.g. epoch 7's data order
never depends on how many epochs ran before in this process; it is the project's only seed
derivation (data subsets, training, surrogates and poisons all call it).

Import-light: torch is imported inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import hashlib
import platform
from typing import Any

from poisonbench.errors import BadInput

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(requested: str | None) -> str:
    """'auto'/None -> 'cuda' when available else 'cpu'; 'cuda[:i]' without a GPU is bad input."""
    import torch

    requested = (requested or "auto").strip()
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BadInput(f"device '{requested}' requested, but torch sees no CUDA device "
                           "(use --device cpu or auto)")
        return requested
    raise BadInput(f"unknown device '{requested}' (expected one of: {', '.join(DEVICE_CHOICES)})")


def is_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


PRECISIONS = ("auto", "fp32", "bf16")


def resolved_precision(precision: str, device: str) -> str:
    """'fp32' or 'bf16': ``auto`` is bf16 on CUDA and fp32 elsewhere; explicit choices pass through."""
    if precision not in PRECISIONS:
        raise BadInput(f"unknown precision '{precision}' (expected one of: {', '.join(PRECISIONS)})")
    if precision == "auto":
        return "bf16" if is_cuda(device) else "fp32"
    return precision


def autocast_dtype(device: str, precision: str = "auto"):
    """The autocast dtype for ``precision`` on ``device``, or None for plain fp32."""
    import torch

    return torch.bfloat16 if resolved_precision(precision, device) == "bf16" else None


def autocast(device: str, dtype) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype`` on the device type of ``device``; a no-op when dtype is None."""
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if is_cuda(device) else "cpu", dtype=dtype)


def derive_seed(seed: int, *labels: Any) -> int:
    """A 63-bit seed derived from ``seed`` and labels (sha256; stable across runs, platforms, loop orders).

    ``derive_seed(0, "epoch", 7)`` is sha256 of ``"0:epoch:7"``, first 8 bytes little-endian, >> 1.
    """
    material = ":".join(str(part) for part in (seed, *labels)).encode()
    return int.from_bytes(hashlib.sha256(material).digest()[:8], "little") >> 1


def describe_device(device: str) -> dict[str, Any]:
    """Facts about the hardware for manifests and leaderboard entries."""
    import torch

    info: dict[str, Any] = {"type": "cuda" if is_cuda(device) else "cpu", "device": device,
                            "name": platform.processor() or platform.machine(),
                            "threads": torch.get_num_threads()}
    if is_cuda(device) and torch.cuda.is_available():
        index = torch.device(device).index or 0
        info["name"] = torch.cuda.get_device_name(index)
        info["cuda"] = torch.version.cuda
    return info
