"""The ``image_folder`` dataset: your own images in class folders (torchvision's ImageFolder layout).

Why: availability poisons are sold as protection for people's own photos; this lets a user measure
whether a poison protects *their* data. Threat model: none (a clean-data source).

Suite usage (``root`` and ``image_size`` are plugin params, written flat in the dataset block)::

    dataset: {name: image_folder, root: my_photos, image_size: 32, train_subset: null}

Layout: ``ROOT/train/<class>/*.{png,jpg,jpeg,bmp,webp}`` and ``ROOT/test/<class>/*``; both splits
need the same class folders; class indices follow the sorted folder names.

Params:
  root        -- the folder holding ``train/`` and ``test/``. Relative paths resolve against the
                 suite file's folder, then ``--data-dir``; the folder must lie under one of those or
                 an ``--allow-path`` (the path policy ``poisonbench.api.active_paths`` returns).
  image_size  -- side in pixels of the square images the victims see. An image of another size is
                 resized so its shorter side is ``image_size`` (bilinear, antialiased) and centre-
                 cropped to a square (torchvision's ``Resize(s)`` + ``CenterCrop(s)``).
Channels: grayscale when every image is grayscale, otherwise RGB for all (grayscale images are
replicated into 3 channels; alpha is dropped). mean/std are measured on the train split.
Images are decoded once and cached as uint8 safetensors under ``<cache dir>/datasets/``, keyed by a
sha256 of every file's path and bytes; an unreadable image is one error line naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from poisonbench.api import Dataset, DatasetSplits, Split, default_cache_dir
from poisonbench.errors import BadInput
from poisonbench.hookspecs import hookimpl


@dataclass(frozen=True)
class ImageFolderParams:
    root: str = ""  # required: folder with train/<class>/ and test/<class>/
    image_size: int = 32  # pixels, square

    def __post_init__(self):
        if self.image_size <= 0:
            raise ValueError(f"image_size must be a positive number of pixels, got {self.image_size}")


class ImageFolder(Dataset):
    """Your own images: ROOT/train/<class>/* and ROOT/test/<class>/*, resized to image_size."""

    name = "image_folder"
    Params = ImageFolderParams
    image_shape = None  # depends on params and on the images (1 or 3 channels)
    num_classes = None  # the number of class folders

    def check_references(self, catalog) -> list[tuple[str | None, str]]:
        if not self.params.root.strip():
            return [(None, "missing required param 'root' (the folder holding train/ and test/)")]
        return []

    def resolve_root(self, data_dir: Path | None) -> Path:
        from poisonbench.api import active_paths

        return active_paths(data_dir=data_dir).resolve(self.params.root, what="dataset 'image_folder': root")

    def locations(self, data_dir: Path | None) -> list[Path]:
        if not self.params.root.strip():
            return [Path("<root>/train/<class>"), Path("<root>/test/<class>")]
        try:
            root = self.resolve_root(data_dir)
        except BadInput:
            root = Path(self.params.root)
        return [root / "train", root / "test"]

    def load(self, *, data_dir: Path | None = None, download: bool = True) -> DatasetSplits:
        from poisonbench.plugins.image_folder import ops

        if not self.params.root.strip():
            raise BadInput("dataset 'image_folder': missing required param 'root'")
        loaded = ops.load_tree(self.resolve_root(data_dir), image_size=self.params.image_size,
                               cache_dir=default_cache_dir())
        train, test = Split(*loaded["train"]), Split(*loaded["test"])
        mean, std = ops.channel_stats(train.images)
        std = tuple(max(s, 1e-3) for s in std)  # a constant channel must not divide by zero
        return DatasetSplits(train, test, len(loaded["classes"]), list(loaded["classes"]), mean, std)


@hookimpl
def poisonbench_register_datasets(register):
    register(ImageFolder)
