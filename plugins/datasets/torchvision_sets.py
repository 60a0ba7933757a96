"""Datasets read through torchvision's checksum-verifying loaders: SVHN.

SVHN (Netzer et al. 2011, "Reading Digits in Natural Images with Unsupervised Feature Learning"):
73,257 train / 26,032 test house-number crops, 32×32×3, 10 classes (digit 0 has label 0; the .mat
files store it as 10). Threat model: none (a clean-data source); no params.

Files: ``train_32x32.mat`` and ``test_32x32.mat`` in ``<data dir>/svhn/`` (where a download goes) or
directly in ``<data dir>/`` (torchvision's ``SVHN(root=<data dir>)``). torchvision checks each file's
md5 against the official one before ``scipy.io.loadmat`` reads it; a missing or altered file with
no download possible is one error line naming the expected path. mean/std are measured on the train
split (scaled to [0, 1], population std).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from poisonbench.api import Dataset, DatasetSplits, Split, default_data_dir
from poisonbench.errors import BadInput
from poisonbench.hookspecs import hookimpl

SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


class SVHN(Dataset):
    """SVHN (Netzer et al. 2011): 73,257 train / 26,032 test, 32×32×3, 10 digit classes."""

    name = "svhn"
    image_shape = (32, 32, 3)
    num_classes = 10
    train_size, test_size = 73_257, 26_032  # mean/std are measured on the train split in load
    # md5 of the official files, handed to torchvision's loader (tests swap in checksums of tiny
    # files; tests/test_svhn.py asserts these equal torchvision's own table).
    md5: ClassVar[dict[str, str]] = {"train": "e26dedcc434d2e4c54c9b2d4a06d8373",
                                     "test": "eb5a983be6a315427106f1b164d9cef3"}

    def locations(self, data_dir: Path | None) -> list[Path]:
        root = default_data_dir(data_dir)
        return [root / "svhn", root]

    def load(self, *, data_dir: Path | None = None, download: bool = True) -> DatasetSplits:
        from poisonbench.plugins.image_folder.ops import channel_stats

        folders = self.locations(data_dir)
        folder = next((f for f in folders if all((f / n).is_file() for n in SVHN_FILES.values())),
                      folders[0])
        train, test = (self._split(folder, split, download=download) for split in ("train", "test"))
        mean, std = channel_stats(train.images)
        return DatasetSplits(train, test, 10, [str(d) for d in range(10)], mean, std)

    def _split(self, folder: Path, split: str, *, download: bool) -> Split:
        import numpy as np
        import torch
        from torchvision.datasets import SVHN as TorchvisionSVHN
        from torchvision.datasets.utils import check_integrity

        md5 = self.md5

        class Checked(TorchvisionSVHN):  # torchvision's loader with our md5 table (no global patch)
            split_list = {k: [v[0], v[1], md5.get(k, v[2])] for k, v in TorchvisionSVHN.split_list.items()}

        expected = folder / SVHN_FILES[split]
        try:
            data = Checked(str(folder), split=split, download=download)
        except Exception as err:  # offline download / corrupt file: one line naming the path
            if check_integrity(str(expected), Checked.split_list[split][2]):
                raise  # the file is verified, so reading it failed for another reason: keep the traceback
            why = "md5 mismatch (corrupt or altered)" if expected.is_file() else "missing"
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            how = f"download failed: {first}" if download else "download disabled"
            url = Checked.split_list[split][0]
            raise BadInput(f"SVHN {split} split: {expected} {why} (get {url} there; {how})") from None
        images = np.ascontiguousarray(data.data.transpose(0, 2, 3, 1))  # N,C,H,W -> N,H,W,C
        return Split(torch.from_numpy(images), torch.from_numpy(np.asarray(data.labels, dtype=np.int64)))


@hookimpl
def poisonbench_register_datasets(register):
    register(SVHN)
