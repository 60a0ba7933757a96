"""The trainer: protocol (schedule, history), batched augmentation, checkpoints, divergence, eval."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from poisonbench.api import Split
from poisonbench.errors import ArtifactError, Interrupted
from poisonbench.training.augment import crop_flip, normalisation, plan_epoch, to_model_input
from poisonbench.training.checkpoint import read_checkpoint
from poisonbench.training.trainer import evaluate, predict, train_victim
from tests.helpers_training import MEAN, STD, state_equal, tiny_config, tiny_model, tiny_splits

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _train(model, config, *, splits=None, checkpoint=None, seed=0, should_stop=None, with_val=True):
    train, test, val = splits or tiny_splits()
    return train_victim(model=model, train=train, test=test, val=val if with_val else None,
                        config=config, mean=MEAN, std=STD, seed=seed, device="cpu",
                        checkpoint_path=checkpoint, should_stop=should_stop)


# -- augmentation ---------------------------------------------------------------------------

def _reference_crop_flip(images, dy, dx, flip, padding):
    """torchvision semantics, one image at a time: zero-pad, crop at (dy, dx), then mirror."""
    padded = F.pad(images.permute(0, 3, 1, 2), (padding,) * 4)
    h, w = images.shape[1:3]
    out = []
    for i in range(len(images)):
        crop = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out.append(crop.flip(-1) if flip[i] else crop)
    return torch.stack(out).permute(0, 2, 3, 1)


def test_crop_flip_matches_per_image_reference():
    gen = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (16, 9, 7, 3), generator=gen, dtype=torch.uint8)
    plan = plan_epoch(16, generator=gen, augment=["crop", "flip"], padding=4)
    assert plan.flip.any() and not plan.flip.all()
    out = crop_flip(images, dy=plan.dy, dx=plan.dx, flip=plan.flip, padding=4)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert torch.equal(out, _reference_crop_flip(images, plan.dy, plan.dx, plan.flip, 4))


def test_crop_at_centre_without_flip_is_identity_and_flip_only_mirrors():
    images = torch.randint(0, 256, (5, 6, 6, 1), dtype=torch.uint8)
    centre = torch.full((5,), 2)
    assert torch.equal(crop_flip(images, dy=centre, dx=centre, flip=None, padding=2), images)
    flip = torch.tensor([True, False, True, False, False])
    out = crop_flip(images, dy=None, dx=None, flip=flip, padding=0)
    assert torch.equal(out[0], images[0].flip(1)) and torch.equal(out[1], images[1])


def test_epoch_plan_depends_only_on_its_seed():
    a = plan_epoch(50, generator=torch.Generator().manual_seed(7), augment=["crop", "flip"], padding=4)
    b = plan_epoch(50, generator=torch.Generator().manual_seed(7), augment=["crop", "flip"], padding=4)
    c = plan_epoch(50, generator=torch.Generator().manual_seed(8), augment=["crop", "flip"], padding=4)
    assert torch.equal(a.order, b.order) and torch.equal(a.dy, b.dy) and torch.equal(a.flip, b.flip)
    assert not torch.equal(a.order, c.order)
    assert sorted(a.order.tolist()) == list(range(50)) and int(a.dx.max()) <= 8


def test_normalisation_matches_formula():
    images = torch.randint(0, 256, (2, 4, 4, 3), dtype=torch.uint8)
    scale, shift = normalisation(MEAN, STD, channels=3, normalize=True, device="cpu")
    x = to_model_input(images, scale=scale, shift=shift)
    expected = (images.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    assert torch.allclose(x, expected, atol=1e-5)
    assert x.is_contiguous(memory_format=torch.channels_last)


# -- training -------------------------------------------------------------------------------

def test_history_schedule_and_learning():
    model = tiny_model()
    history = _train(model, tiny_config(epochs=4, milestones=[2, 3], gamma=0.5))
    for key in ("train_loss", "train_acc", "test_acc", "val_acc", "lr"):
        assert len(history[key]) == 4, key
    assert history["lr"] == pytest.approx([0.05, 0.05, 0.025, 0.0125])
    assert all(0.0 <= a <= 1.0 for a in history["train_acc"] + history["test_acc"] + history["val_acc"])
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history["test_acc"][-1] > 0.5  # 4 easy classes: chance is 0.25
    assert history["diverged"] is False and history["wall_s"] > 0
    _, test, _ = tiny_splits()
    assert evaluate(model, test, mean=MEAN, std=STD, device="cpu") == pytest.approx(history["test_acc"][-1])


def test_no_val_split_means_no_val_history():
    history = _train(tiny_model(), tiny_config(epochs=1), with_val=False)
    assert "val_acc" not in history and len(history["test_acc"]) == 1


def test_same_seed_same_result_other_seed_differs():
    a, b, c = tiny_model(), tiny_model(), tiny_model()
    ha, hb = _train(a, tiny_config(epochs=2)), _train(b, tiny_config(epochs=2))
    hc = _train(c, tiny_config(epochs=2), seed=1)
    assert ha["train_loss"] == hb["train_loss"] and state_equal(a, b)
    assert ha["train_loss"] != hc["train_loss"]


def test_interrupt_then_resume_is_bit_identical(tmp_path):
    config = tiny_config(epochs=4)
    reference = tiny_model()
    expected = _train(reference, config, checkpoint=tmp_path / "ref.safetensors")
    calls = {"n": 0}

    def stop_in_epoch_three():  # 8 batches per epoch: stop after the 3rd batch of epoch 3
        calls["n"] += 1
        return calls["n"] == 19

    path = tmp_path / "run.safetensors"
    with pytest.raises(Interrupted, match="re-run the same command to resume"):
        _train(tiny_model(), config, checkpoint=path, should_stop=stop_in_epoch_three)
    header, _ = read_checkpoint(path)
    assert header["state"]["epoch"] == 2 and not header["state"]["finished"]
    torch.manual_seed(1234)  # the resumed process's RNG state is whatever it is
    resumed_model = tiny_model()
    resumed = _train(resumed_model, config, checkpoint=path)
    for key in ("train_loss", "train_acc", "test_acc", "val_acc", "lr"):
        assert resumed[key] == expected[key], key
    assert state_equal(resumed_model, reference)
    # a finished checkpoint returns the stored history without training
    again = tiny_model(seed=5)
    assert _train(again, config, checkpoint=path)["test_acc"] == expected["test_acc"]
    assert state_equal(again, reference)


def test_corrupt_truncated_and_foreign_checkpoints_are_refused(tmp_path):
    path = tmp_path / "ck.safetensors"
    _train(tiny_model(), tiny_config(epochs=1), checkpoint=path)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ArtifactError, match="ck.safetensors"):
        _train(tiny_model(), tiny_config(epochs=1), checkpoint=path)
    path.write_bytes(b"\x80\x04not a checkpoint at all")
    with pytest.raises(ArtifactError, match="ck.safetensors"):
        _train(tiny_model(), tiny_config(epochs=1), checkpoint=path)
    path.write_bytes(good)
    with pytest.raises(ArtifactError, match="different training run"):
        _train(tiny_model(), tiny_config(epochs=1), checkpoint=path, seed=9)
    with pytest.raises(ArtifactError, match="different training run"):
        _train(tiny_model(width=4), tiny_config(epochs=1), checkpoint=path)


def test_checkpoint_holds_no_pickle_and_json_state(tmp_path):
    path = tmp_path / "ck.safetensors"
    _train(tiny_model(), tiny_config(epochs=2, milestones=[1]), checkpoint=path)
    header, tensors = read_checkpoint(path)
    assert header["state"]["epoch"] == 2 and header["state"]["finished"]
    assert any(k.startswith("optim/") for k in tensors) and "rng/cpu" in tensors
    assert header["scheduler"]["milestones"] == {"__counter__": [[1, 1]]}
    json.dumps(header)  # everything but tensors is plain JSON


def test_divergence_stops_early_and_is_flagged(tmp_path):
    history = _train(tiny_model(), tiny_config(epochs=4, lr=1e30, milestones=[10]),
                     checkpoint=tmp_path / "ck.safetensors")
    assert history["diverged"] is True
    assert len(history["test_acc"]) < 4
    assert all(v == v for v in history["train_loss"])  # no NaN is recorded


def test_predict_matches_model_argmax():
    model = tiny_model()
    _, test, _ = tiny_splits()
    labels = predict(model, test, mean=MEAN, std=STD, device="cpu", batch_size=7)
    model.eval()
    with torch.no_grad():
        x = (test.images.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
        expected = model(x).argmax(1)
    assert labels.dtype == torch.long and torch.equal(labels, expected)
    assert evaluate(model, Split(test.images[:0], test.labels[:0]), mean=MEAN, std=STD, device="cpu") == 0.0


def test_lazy_modules_are_materialised_before_the_optimiser(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(4))
    history = _train(model, tiny_config(epochs=1), checkpoint=tmp_path / "ck.safetensors")
    assert model[1].weight.shape == (4, 12 * 12 * 3) and len(history["test_acc"]) == 1
