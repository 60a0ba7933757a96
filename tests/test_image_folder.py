"""The image_folder dataset: layout checks, decoding rules, the decode cache, suites on a folder tree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from poisonbench.errors import BadInput
from poisonbench.util.paths import UserPaths, allowed_paths

from .helpers_byo import TINY_TRAIN, make_tree, run_main, save_image


def load(catalog, root: Path, image_size: int = 32, **kwargs):
    dataset = catalog.datasets.create("image_folder", {"root": str(root), "image_size": image_size})
    with allowed_paths(UserPaths((root.parent,), (root.parent,))):
        return dataset.load(data_dir=None, **kwargs)


def test_mixed_tree_loads_sorted_classes_rgb_and_resized(catalog, tmp_path):
    root = make_tree(tmp_path / "photos")
    splits = load(catalog, root, image_size=24)
    assert splits.class_names == ["cat", "dog"]  # sorted folder names, not creation order
    assert splits.num_classes == 2
    # cat: 4 PNG + wide.jpg; dog: 4 PNG + wide.jpg + gray.png
    assert splits.train.labels.tolist() == [0] * 5 + [1] * 6
    assert splits.train.images.shape == (11, 24, 24, 3) and splits.train.images.dtype == torch.uint8
    assert splits.test.images.shape == (6, 24, 24, 3)
    # dog's files sorted: 000..003.png, gray.png, wide.jpg -> gray.png is train index 5 + 4 = 9
    gray = splits.train.images[9]
    assert torch.equal(gray[..., 0], gray[..., 1]) and torch.equal(gray[..., 0], gray[..., 2])
    pixels = splits.train.images.double().div(255).reshape(-1, 3)
    assert splits.mean == pytest.approx(tuple(pixels.mean(0).tolist()), abs=1e-5)
    assert splits.std == pytest.approx(tuple(pixels.std(0, unbiased=False).tolist()), abs=1e-5)


def test_all_grayscale_tree_keeps_one_channel(catalog, tmp_path):
    root = make_tree(tmp_path / "gray", gray_only=True)
    splits = load(catalog, root, image_size=32)
    assert splits.train.images.shape[1:] == (32, 32, 1)
    assert len(splits.mean) == 1


def test_decoding_rules_for_alpha_palette_and_16_bit(tmp_path):
    from PIL import Image

    from poisonbench.plugins.image_folder.ops import decode_image

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = 200, 0  # fully transparent: alpha is dropped, not composited
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert decode_image(tmp_path / "a.png", image_size=4).tolist() == np.full((4, 4, 3), 200).tolist()
    Image.fromarray(np.full((4, 4, 3), 90, np.uint8)).convert("P").save(tmp_path / "p.png")
    assert decode_image(tmp_path / "p.png", image_size=4).shape == (4, 4, 3)
    Image.fromarray(np.array([[0, 257 * 100], [65535, 257 * 7]], np.uint16)).save(tmp_path / "g16.png")
    assert decode_image(tmp_path / "g16.png", image_size=2)[..., 0].tolist() == [[0, 100], [255, 7]]


def test_resize_rule_is_torchvision_resize_then_center_crop(catalog, tmp_path):
    from PIL import Image
    from torchvision import transforms

    root = make_tree(tmp_path / "t")
    splits = load(catalog, root, image_size=24)
    with Image.open(root / "train" / "cat" / "wide.jpg") as img:
        expected = transforms.CenterCrop(24)(transforms.Resize(24)(img.convert("RGB")))
    assert torch.equal(splits.train.images[4], torch.from_numpy(np.array(expected)))


def test_decoded_tensors_are_cached_and_invalidated_by_edits(catalog, tmp_path, monkeypatch):
    from poisonbench.plugins.image_folder import ops

    root = make_tree(tmp_path / "t")
    first = load(catalog, root)
    assert list((tmp_path / "cache" / "datasets").glob("image_folder-*.safetensors"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the tree did not change")

    monkeypatch.setattr(ops, "decode_image", no_decoding)
    again = load(catalog, root)
    assert torch.equal(first.train.images, again.train.images)
    assert torch.equal(first.test.labels, again.test.labels)
    save_image(root / "test" / "cat" / "000.png", np.zeros((32, 32, 3), np.uint8))  # edit one file
    with pytest.raises(AssertionError, match="decoded again"):
        load(catalog, root)


@pytest.mark.parametrize("breakage, message", [
    (lambda r: [p.unlink() for p in (r / "train" / "cat").iterdir()], "train/cat' has no images"),
    (lambda r: __import__("shutil").rmtree(r / "test"), "missing split folder"),
    (lambda r: __import__("shutil").rmtree(r / "test" / "dog"), "class 'dog' is in"),
    (lambda r: (r / "train" / "dog" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken"), "train/dog/001.png"),
])
def test_layout_and_file_problems_are_one_line_bad_input(catalog, tmp_path, breakage, message):
    root = make_tree(tmp_path / "t")
    breakage(root)
    with pytest.raises(BadInput, match=message) as info:
        load(catalog, root)
    assert "\n" not in str(info.value)


def write_suite(folder: Path, root: str, poisons: str = "[clean, R4]", extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "suite.yaml"
    path.write_text(f"suite: folder_test\ndataset: {{name: image_folder, root: {root}, image_size: 16}}\n"
                    f"victims: [small_cnn]\npoisons: {poisons}\nseeds: [0]\n{TINY_TRAIN}{extra}")
    return path


def test_tiny_suite_runs_on_a_folder_tree(tmp_path, capsys, monkeypatch):
    make_tree(tmp_path / "proj" / "photos")
    suite = write_suite(tmp_path / "proj", "photos")
    monkeypatch.chdir(tmp_path / "proj")
    code, out, err = run_main(["run", str(suite), "--out", str(tmp_path / "run"), "--quiet"], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in (tmp_path / "run" / "cells.jsonl").read_text().splitlines()]
    assert sorted(r["poison"]["name"] for r in records) == ["R4", "clean"]
    assert all(r["dataset"] == "image_folder" and len(r["history"]["test_acc"]) == 1 for r in records)


def test_corrupt_image_stops_a_run_with_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    root = make_tree(tmp_path / "proj" / "photos")
    (root / "test" / "cat" / "001.png").write_bytes(b"not an image at all")
    suite = write_suite(tmp_path / "proj", "photos")
    monkeypatch.chdir(tmp_path / "proj")
    code, _, err = run_main(["run", str(suite), "--out", str(tmp_path / "run"), "--quiet"], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "test/cat/001.png" in err


def test_root_outside_the_allowed_folders_is_refused(tmp_path, capsys, monkeypatch):
    make_tree(tmp_path / "elsewhere")
    suite = write_suite(tmp_path / "proj", "../elsewhere")
    monkeypatch.chdir(tmp_path / "proj")
    code, _, err = run_main(["run", str(suite), "--out", str(tmp_path / "run"), "--quiet"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "escapes the allowed folders" in err


def test_run_under_the_suite_policy_reads_paths_relative_to_the_suite(tmp_path, capsys, monkeypatch):
    """What ``run`` does once it wraps the run in ``allowed_paths(UserPaths.for_suite(...))``:
    a relative root is found next to the suite although the working folder is elsewhere."""
    make_tree(tmp_path / "proj" / "photos")
    suite = write_suite(tmp_path / "proj", "photos", poisons="[clean]")
    monkeypatch.chdir(tmp_path)
    with allowed_paths(UserPaths.for_suite(suite)):
        code, _, err = run_main(["run", str(suite), "--out", str(tmp_path / "run"), "--quiet"], capsys)
    assert code == 0, err


def test_suite_policy_resolves_root_against_suite_folder_then_data_dir(catalog, tmp_path):
    make_tree(tmp_path / "data" / "shared")
    dataset = catalog.datasets.create("image_folder", {"root": "shared", "image_size": 16})
    policy = UserPaths.for_suite(tmp_path / "proj" / "suite.yaml", data_dir=tmp_path / "data")
    with allowed_paths(policy):
        assert dataset.load(data_dir=None).train.images.shape[1:] == (16, 16, 3)
    with allowed_paths(UserPaths.for_suite(tmp_path / "proj" / "suite.yaml")), \
            pytest.raises(BadInput, match="not found"):
        dataset.load(data_dir=None)


def test_validate_reports_a_missing_root(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text("suite: s\ndataset: {name: image_folder}\nvictims: [small_cnn]\npoisons: [clean]\n")
    code, _, err = run_main(["validate", str(suite)], capsys)
    assert code == 2 and "missing required param 'root'" in err


def test_list_datasets_describes_image_folder_and_svhn(capsys):
    code, out, _ = run_main(["list", "datasets", "--json"], capsys)
    assert code == 0
    items = {item["name"]: item for item in json.loads(out)}
    assert items["image_folder"]["shape"] is None and items["image_folder"]["classes"] is None
    assert any("train" in loc for loc in items["image_folder"]["locations"])
    assert items["svhn"]["shape"] == [32, 32, 3] and items["svhn"]["classes"] == 10


TABLE1_POISONS = """
  - clean
  - R4
  - LF3
  - random_noise
  - {name: P10, params: {steps: 2, restarts: 1, batch_size: 16, surrogate: small_cnn, surrogate_epochs: 1}}
  - {name: M10, params: {steps: 2, restarts: 1, batch_size: 16, surrogate: small_cnn, surrogate_epochs: 1}}
  - {name: FCSD, params: {steps: 2, batch_size: 16, surrogate: small_cnn, surrogate_epochs: 1}}
  - {name: SU, params: {model: small_cnn, max_rounds: 1, train_steps: 2, attack_steps: 2, on_max_rounds: keep}}
  - {name: CU, params: {model: small_cnn, max_rounds: 1, train_steps: 2, attack_steps: 2, on_max_rounds: keep}}
"""


@pytest.mark.slow
def test_every_table1_family_runs_on_an_image_folder(tmp_path, capsys, monkeypatch):
    """Image-size independence: every family crafts and trains on 20×20 RGB images from a folder."""
    make_tree(tmp_path / "proj" / "photos")
    suite = tmp_path / "proj" / "suite.yaml"
    suite.write_text("suite: table1_folder\ndataset: {name: image_folder, root: photos, image_size: 20}\n"
                     f"victims: [small_cnn]\npoisons:{TABLE1_POISONS}seeds: [0]\n{TINY_TRAIN}")
    monkeypatch.chdir(tmp_path / "proj")
    code, _, err = run_main(["run", str(suite), "--out", str(tmp_path / "run"), "--quiet"], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in (tmp_path / "run" / "cells.jsonl").read_text().splitlines()]
    families = {r["poison"].get("family") for r in records}
    assert families >= {"clean", "regions", "low_frequency", "random_noise", "pgd", "mifgsm",
                        "functional", "unlearnable"}
    assert len({r["poison_sha256"] for r in records}) == 9  # nine different poisoned sets
