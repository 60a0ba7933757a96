"""Builders shared by the bring-your-own-data tests: class-folder trees, tiny suites, in-process CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TINY_TRAIN = "train: {epochs: 1, batch_size: 8, lr: 0.05, milestones: [1], eval_batch_size: 64}\n"


def save_image(path: Path, array: np.ndarray, **kwargs) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def make_tree(root: Path, *, classes=("dog", "cat"), n_train: int = 4, n_test: int = 2, seed: int = 0,
              gray_only: bool = False) -> Path:
    """A class-folder tree: per class PNGs at 32×32, one JPEG at 40×48 (another size) per split, and
    (unless ``gray_only``) RGB images plus one grayscale PNG in the first class's train folder.
    Each class has its own brightness so a victim can learn something."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        level = 60 + 120 * k
        for split, n in (("train", n_train), ("test", n_test)):
            folder = root / split / name
            for i in range(n):
                shape = (32, 32) if gray_only else (32, 32, 3)
                save_image(folder / f"{i:03d}.png", _noisy(rng, shape, level))
            shape = (40, 48) if gray_only else (40, 48, 3)
            save_image(folder / "wide.jpg", _noisy(rng, shape, level), quality=95)
    if not gray_only:
        save_image(root / "train" / classes[0] / "gray.png", _noisy(rng, (32, 32), 60))
    return root


def _noisy(rng, shape, level: int) -> np.ndarray:
    return np.clip(rng.normal(level, 25, size=shape), 0, 255).astype(np.uint8)


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    """Run the console entry point in-process: (exit code, stdout, stderr)."""
    from .helpers_reliability import run_main as run

    return run(capsys, *args)
