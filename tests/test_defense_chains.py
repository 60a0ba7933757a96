"""Defense chains end to end: validate's refusals and notes, shared trainings, resume, JPEG equivalence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from poisonbench.errors import ValidationFailed
from poisonbench.results import read_records
from poisonbench.runner import plan_run
from poisonbench.suite import load_suite

from .helpers_byo import run_main, save_image

ROOT = Path(__file__).resolve().parent.parent
SPEC_NAMES = ["jpeg", "jpeg10", "jpeg30", "jpeg50", "grayscale", "grayscale_eval", "bit_depth", "median",
              "gaussian_blur", "gaussian_noise", "eclipse_ccm", "cutout", "mixup", "cutmix", "cutmix_batch"]


def _suite(tmp_path: Path, defenses: str, dataset: str = "{name: fashion_mnist_demo, val_split: 100}") -> Path:
    path = tmp_path / "d.yaml"
    path.write_text(f"suite: d\ndataset: {dataset}\nvictims: [small_cnn]\npoisons: [clean]\n"
                    f"defenses: {defenses}\n")
    return path


def test_validate_refuses_bad_stacks_and_params_with_located_lines(tmp_path, capsys):
    defenses = ("[none, {name: cutout, params: {length: 40}}, [mixup, cutmix], [], [none, jpeg], [jpeg, jpeg30],"
                " {name: median, params: {kernel_size: 31}}]")
    code, out, err = run_main(["validate", str(_suite(tmp_path, defenses))], capsys)
    lines = [line for line in err.splitlines() if line.startswith(str(tmp_path)) or "d.yaml:" in line]
    assert code == 2 and len(lines) == 6, err
    assert all(line.split(":")[1].isdigit() and line.split(":")[2].isdigit() for line in lines)
    for needle in ("length 40 does not fit 28×28", "both define the training loss", "an empty chain",
                   "'none' only selects an epoch", "'jpeg' appears twice", "kernel_size 31 is larger"):
        assert any(needle in line for line in lines), needle


def test_validate_notes_identity_defenses_and_deprecated_aliases(tmp_path, capsys):
    code, out, err = run_main(["validate", str(_suite(tmp_path, "[none, early_stopping, grayscale, gaussian_blur]"))],
                              capsys)
    assert code == 0, err
    notes = [line for line in out.splitlines() if ": note: " in line]
    assert len(notes) == 3
    assert "'early_stopping' is deprecated" in notes[0] and "1-channel" in notes[1] and "no effect" in notes[2]


def test_chain_order_is_fixed_and_a_chain_of_one_is_the_defense(tmp_path, catalog):
    with pytest.raises(ValidationFailed, match="listed twice"):
        load_suite(_suite(tmp_path, "[[cutout, jpeg10], [jpeg10, cutout]]"), catalog)
    with pytest.raises(ValidationFailed, match="listed twice"):
        load_suite(_suite(tmp_path, "[jpeg10, [jpeg10]]"), catalog)
    suite = load_suite(_suite(tmp_path, "[[mixup, jpeg30, cutout]]"), catalog)
    assert [m["name"] for m in suite.defenses[0].to_json()["chain"]] == ["jpeg30", "cutout", "mixup"]


def test_a_chain_validates_without_a_validation_split(tmp_path, catalog):
    suite = load_suite(_suite(tmp_path, "[none, [jpeg10, cutout]]", dataset="fashion_mnist_demo"), catalog)
    assert [d.name for d in suite.defenses] == ["none", "jpeg10+cutout"]


def test_cells_with_equal_chains_share_one_training(tmp_path, catalog):
    defenses = "[none, early_stopping, grayscale, gaussian_blur, jpeg10, [jpeg10, cutout], [cutout, grayscale, jpeg10]]"
    plan = plan_run(load_suite(_suite(tmp_path, defenses), catalog), catalog=catalog)
    by_size = sorted((len(g.cells), [m["name"] for m in g.chain]) for g in plan.groups)
    # grayscale (1-channel) and σ=0.1 blur are the identity: they share the undefended training
    assert by_size == [(1, ["jpeg10"]), (2, ["jpeg10", "cutout"]), (4, [])]


def test_list_defenses_json_has_every_defense_with_stage_params_and_paper():
    done = subprocess.run([sys.executable, "-c", "from poisonbench.cli import main; main()", "list", "defenses",
                           "--json"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    items = {item["name"]: item for item in json.loads(done.stdout)}
    for name in SPEC_NAMES:
        item = items[name]
        assert item["stage"] in ("preprocess", "batch", "training") and item["paper"]["url"].startswith("https://")
        assert isinstance(item["params"], dict)
    assert items["early_stopping"]["stage"] == "selection" and items["early_stopping"]["deprecated"]
    assert items["jpeg10"]["defaults"] == {"quality": 10} and items["mixup"]["defines_loss"]


# -- JPEG beforehand == the jpeg defense ----------------------------------------------------------

def _tree(root: Path, *, jpeg_train: bool) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(("a", "b")):
        for split, n in (("train", 12), ("test", 6)):
            for i in range(n):
                array = np.clip(rng.normal(70 + 110 * k, 40, size=(16, 16, 3)), 0, 255).astype(np.uint8)
                if split == "train" and jpeg_train:
                    save_image(root / split / name / f"{i:03d}.jpg", array, quality=10)
                    assert np.asarray(Image.open(root / split / name / f"{i:03d}.jpg")).shape == (16, 16, 3)
                else:
                    save_image(root / split / name / f"{i:03d}.png", array)
    return root


def test_a_folder_jpeg_compressed_beforehand_trains_like_the_jpeg_defense(tmp_path, capsys, one_thread):
    train = "train: {epochs: 3, batch_size: 8, lr: 0.05, milestones: [2], eval_batch_size: 64, normalize: false}\n"
    histories = {}
    for label, jpeg_train, defense in (("defense", False, "jpeg10"), ("folder", True, "none")):
        root = _tree(tmp_path / label / "photos", jpeg_train=jpeg_train)
        suite = root.parent / "s.yaml"
        suite.write_text(textwrap.dedent(f"""\
            suite: j
            dataset: {{name: image_folder, root: photos, image_size: 16}}
            victims: [{{name: small_cnn, params: {{width: 4}}}}]
            poisons: [clean]
            defenses: [{defense}]
            """) + train)  # normalize off: image_folder measures mean/std on the (different) train bytes
        code, _, err = run_main(["--cache-dir", str(tmp_path / label / "cache"), "run", str(suite), "--out",
                                 str(root.parent / "run"), "--quiet"], capsys)
        assert code == 0, err
        (record,) = read_records(root.parent / "run")
        histories[label] = record["history"]
    assert histories["defense"] == histories["folder"]
    assert len(histories["folder"]["test_acc"]) == 3


# -- resume after SIGKILL with batch defenses active ------------------------------------------------

def child_main(checkpoint: str, out: str, python_random: bool = False) -> None:
    """Train the tiny net with noise → cutout → mixup; print 'epoch N' per checkpoint; write history."""
    import random

    import torch

    from poisonbench.api import Defense
    from poisonbench.catalog import default_catalog
    from poisonbench.training.defended import Chain
    from poisonbench.training.trainer import train_victim
    from tests.helpers_training import MEAN, STD, tiny_config, tiny_model, tiny_splits

    class PythonRandomNoise(Defense):  # what the API forbids: draws that ignore the batch seed
        name, stage = "python_random_noise", "batch"

        def batch(self, x, target, *, ctx):
            return (x + random.random() * 0.1).clamp(0, 1), target

    torch.set_num_threads(1)
    catalog = default_catalog()
    members = [{"name": "eclipse_ccm", "params": {}}, {"name": "cutout", "params": {}},
               {"name": "mixup", "params": {}}]
    chain = Chain.build(catalog, members, num_classes=4)
    if python_random:
        chain.defenses.insert(0, PythonRandomNoise())
    train, test, val = tiny_splits(n_train=128, n_test=64)

    def progress(description, total):
        def advance(n=1, **fields):
            if "epoch" in fields:
                print(f"epoch {fields['epoch'].split('/')[0]}", flush=True)
            time.sleep(0.05)  # ≥ 0.2 s per epoch, so the parent's SIGKILL lands before the end
        return advance

    history = train_victim(model=tiny_model(), train=train, test=test, val=val,
                           config=tiny_config(epochs=6, milestones=[4]), mean=MEAN, std=STD, seed=5,
                           device="cpu", checkpoint_path=Path(checkpoint), progress=progress, chain=chain)
    Path(out).write_text(json.dumps({k: v for k, v in history.items() if isinstance(v, list)}))


def _child(checkpoint: Path, out: Path, python_random: bool) -> subprocess.Popen:
    code = f"from tests.test_defense_chains import child_main; child_main({str(checkpoint)!r}, {str(out)!r}, {python_random})"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)


def _killed_then_resumed(tmp: Path, python_random: bool) -> tuple[dict, dict]:
    reference = _child(tmp / "ref.safetensors", tmp / "ref.json", python_random)
    victim = _child(tmp / "ck.safetensors", tmp / "partial.json", python_random)
    for line in victim.stdout:
        if line.startswith("epoch 2"):
            time.sleep(0.05)  # mid-epoch 3
            break
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL and not (tmp / "partial.json").exists()
    resumed = _child(tmp / "ck.safetensors", tmp / "resumed.json", python_random)
    for process in (resumed, reference):
        process.stdout.read()
        assert process.wait(timeout=300) == 0
    return json.loads((tmp / "ref.json").read_text()), json.loads((tmp / "resumed.json").read_text())


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_with_batch_defenses_resumes_bit_identically(tmp_path):
    reference, resumed = _killed_then_resumed(tmp_path, python_random=False)
    assert len(reference["test_acc"]) == 6 and resumed == reference
    assert any(0 < a < 1 and a * 128 != round(a * 128) for a in reference["train_acc"])  # mixup: soft accuracy


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_the_resume_check_fails_for_a_defense_that_ignores_the_batch_seed(tmp_path):
    reference, resumed = _killed_then_resumed(tmp_path, python_random=True)
    assert resumed != reference


def test_preprocessing_is_cached_like_an_artifact(tmp_path, catalog, monkeypatch):
    import torch

    from poisonbench.api import DefenseContext, Split
    from poisonbench.plugins.defenses import ops
    from poisonbench.training.defended import Chain

    images = torch.randint(0, 256, (6, 16, 16, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    train = Split(images, torch.arange(6) % 2)
    chain = Chain.build(catalog, [{"name": "median", "params": {}}, {"name": "jpeg10", "params": {}},
                                  {"name": "cutout", "params": {}}], num_classes=2)
    assert [d.name for d in chain.defenses] == ["jpeg", "median", "cutout"]  # the fixed order
    ctx = DefenseContext(seed=1, num_classes=2, image_shape=(16, 16, 3))
    first = chain.preprocess(train, ctx=ctx, source_sha256="a" * 64, fingerprint="f", cache_dir=tmp_path)
    expected = ops.median(ops.jpeg(images, quality=10), kernel_size=3)
    assert torch.equal(first.images, expected) and torch.equal(train.images, images)
    assert len(list((tmp_path / "defended").glob("*.safetensors"))) == 1
    monkeypatch.setattr(ops, "median", lambda *a, **k: pytest.fail("recomputed despite the cache"))
    again = chain.preprocess(train, ctx=ctx, source_sha256="a" * 64, fingerprint="f", cache_dir=tmp_path)
    assert torch.equal(again.images, expected)


def test_eval_images_change_only_when_a_defense_says_so_and_bad_params_stop_before_training(catalog):
    import torch

    from poisonbench.api import DefenseContext, Split
    from poisonbench.errors import BadInput
    from poisonbench.runner import defended_chain
    from poisonbench.training.defended import Chain

    images = torch.randint(0, 256, (4, 8, 8, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    test = Split(images, torch.arange(4) % 2)
    ctx = DefenseContext(seed=0, num_classes=2, image_shape=(8, 8, 3))
    plain = Chain.build(catalog, [{"name": "grayscale", "params": {}}, {"name": "cutout", "params": {}}])
    assert plain.eval_split(test, ctx=ctx) is test
    converted = Chain.build(catalog, [{"name": "grayscale_eval", "params": {}}]).eval_split(test, ctx=ctx)
    assert torch.equal(converted.images[..., 0], converted.images[..., 2]) and not torch.equal(converted.images, images)

    class Data:  # what the runner knows once an image folder is loaded
        num_classes = 2
        train = Split(torch.zeros(2, 8, 8, 1, dtype=torch.uint8), torch.zeros(2, dtype=torch.long))

    with pytest.raises(BadInput, match="length 16 does not fit 8×8"):
        defended_chain(catalog, [{"name": "cutout", "params": {"length": 16}}], data=Data())


def test_run_on_a_folder_refuses_defense_params_that_do_not_fit_before_any_work(tmp_path, capsys):
    _tree(tmp_path / "photos", jpeg_train=False)
    suite = tmp_path / "f.yaml"
    suite.write_text("suite: f\ndataset: {name: image_folder, root: photos, image_size: 16}\n"
                     "victims: [{name: small_cnn, params: {width: 4}}]\npoisons: [clean]\n"
                     "defenses: [none, {name: cutout, params: {length: 40}}]\n"
                     "train: {epochs: 1, batch_size: 8, milestones: [1]}\n")
    assert run_main(["validate", str(suite)], capsys)[0] == 0  # the folder's image size is not known yet
    code, _, err = run_main(["--cache-dir", str(tmp_path / "cache"), "run", str(suite), "--out", str(tmp_path / "run"),
                             "--quiet"], capsys)
    assert code == 2 and "defense 'cutout': length 40 does not fit 16×16 images" in err
    assert not (tmp_path / "run" / "cells.jsonl").exists() and not (tmp_path / "cache" / "poisons").exists()
