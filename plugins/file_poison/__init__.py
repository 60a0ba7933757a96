"""The ``file`` poison: evaluate a poison made elsewhere, read from a file instead of crafted.

Most poisons worth ranking already exist as downloads from their papers' repositories; this reads
them in the formats those repositories save (``formats.py`` and ``readers.py`` beside this file):
our safetensors artifacts, a folder of per-index PNGs ``data/<i>.png`` (adversarial-poisons), a
``torch.save`` perturbation tensor ``[N|K, C, H, W]`` in [−ε, ε] (unlearnable-examples; read with
``torch.load(weights_only=True)`` only), and ``.npy``/``.npz`` uint8 images (``allow_pickle=False``).
Threat model: whatever the file's authors used; with ``eps`` set the harness enforces it as an L∞
budget like any crafted poison (count, labels, dtype and measured L∞ are checked and recorded).

Params:
  path     -- file or folder; in a suite, relative to the suite's folder (then ``--data-dir``) and
              confined to those folders or an ``--allow-path``.
  format   -- auto | safetensors | png | perturbation | numpy (auto: from the suffix; folders = png).
  eps      -- declared L∞ budget as a fraction of the pixel range (8/255 ≈ 0.0314); null = unbounded
              (the measured L∞ is still recorded). Enforced with the usual 0.5/255 rounding slack.
  applied  -- auto | class | sample: for perturbation files whose first dimension equals both N and K.
  sha256   -- optional expected sha256 of the source (see ``poisonbench import --json``); a mismatch
              is refused.
The artifact manifest records ``source``: file name, format, sha256, class- or sample-wise, count.
Suite example::

    poisons:
      - {name: file, params: {path: poisons/cu.pt, eps: 0.0314}}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from poisonbench.api import CraftContext, Poison, Split
from poisonbench.errors import ArtifactError
from poisonbench.hookspecs import hookimpl


@dataclass(frozen=True)
class FileParams:
    path: str = ""  # required
    format: Literal["auto", "safetensors", "png", "perturbation", "numpy"] = "auto"
    eps: float | None = None  # fraction of the pixel range; None = unbounded
    applied: Literal["auto", "class", "sample"] = "auto"
    sha256: str | None = None

    def __post_init__(self):
        if self.eps is not None and not 0 <= self.eps <= 1:
            raise ValueError(f"eps must be a fraction of the pixel range in [0, 1], got {self.eps}")


class FilePoison(Poison):
    """A poison read from a file (artifact, PNG folder, perturbation tensor, .npy/.npz)."""

    name = "file"
    kind = "baseline"  # unknown: the file's own paper says; the manifest's 'source' tells what was read
    Params = FileParams
    contract_params = None  # needs a file: poisonbench.testing skips the generic contract checks
    description = "A poison made elsewhere, read from a file (safetensors, PNG folder, .pt noise, .npy/.npz)"

    def __init__(self, params=None):
        super().__init__(params)
        self.source: dict[str, Any] = {}

    def check_references(self, catalog) -> list[tuple[str | None, str]]:
        """Suite validation: the path is allowed and exists, and the file passes the cheap checks
        (format, no pickle or object arrays, PNG index gaps, a perturbation within ``eps``)."""
        from poisonbench.api import active_paths
        from poisonbench.errors import PoisonbenchError
        from poisonbench.plugins.file_poison.formats import preflight

        if not self.params.path.strip():
            return [(None, "missing required param 'path' (the poison file or folder)")]
        try:
            path = active_paths().resolve(self.params.path, what="path")
            preflight(path, fmt=self.params.format, eps=self.params.eps)
        except PoisonbenchError as err:
            return [("path", str(err))]
        return []

    def resolve(self, ctx: CraftContext):
        from poisonbench.api import active_paths

        return active_paths(data_dir=ctx.data_dir, extra=ctx.extra).resolve(
            self.params.path, what="poison 'file': path")

    def cache_extras(self, ctx: CraftContext) -> dict[str, Any]:
        from poisonbench.plugins.file_poison.formats import source_sha256

        return {"source_sha256": source_sha256(self.resolve(ctx))}

    def manifest_extras(self) -> dict[str, Any]:
        return {"source": dict(self.source)} if self.source else {}

    def craft(self, clean: Split, *, ctx: CraftContext):
        from poisonbench.plugins.file_poison.formats import import_poison

        path = self.resolve(ctx)
        imported = import_poison(path, fmt=self.params.format, clean=clean, num_classes=ctx.num_classes,
                                 applied=self.params.applied, full_train=ctx.full_train)
        if self.params.sha256 and imported.sha256 != self.params.sha256.lower():
            raise ArtifactError(f"{path}: sha256 {imported.sha256[:16]}… differs from the declared "
                                f"{self.params.sha256[:16]}…")
        self.source = imported.manifest(path)
        self.applied = imported.applied  # instance override of the class attribute
        return imported.images


@hookimpl
def poisonbench_register_poisons(register):
    register(FilePoison)
