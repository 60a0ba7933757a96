"""Device choice and the numeric settings that go with it (autocast dtype, channels_last, seeds).

``resolve_device("auto")`` is CUDA when available, else CPU. On CUDA the trainer runs under bf16
autocast with channels_last tensors; on CPU it runs in fp32 (bf16 autocast on CPU is slower on most
x86 cores and changes results). ``derive_seed`` turns (seed, labels...) into an independent 63-bit
seed, so e.g. epoch 7's data order never depends on how many epochs ran before in this process.
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


def autocast_dtype(device: str, precision: str = "auto"):
    """The autocast dtype for ``precision`` on ``device``, or None for plain fp32."""
    import torch

    if precision == "fp32" or (precision == "auto" and not is_cuda(device)):
        return None
    return torch.bfloat16


def autocast(device: str, dtype) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype`` on the device type of ``device``; a no-op when dtype is None."""
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if is_cuda(device) else "cpu", dtype=dtype)


def derive_seed(seed: int, *labels: Any) -> int:
    """A 63-bit seed derived from ``seed`` and labels (sha256; stable across Python versions)."""
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
