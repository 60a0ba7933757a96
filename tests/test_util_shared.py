"""The one implementation of each small utility: atomic files, safe names, folders, export, seeds, metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from poisonbench.results import cell_metrics
from poisonbench.training.device import derive_seed, resolved_precision
from poisonbench.util import files
from poisonbench.util.tensors import batches, export_uint8, num_batches

# -- atomic writes ---------------------------------------------------------------------------

def test_atomic_writes_replace_whole_files_and_leave_no_temp(tmp_path):
    target = tmp_path / "deep" / "x.json"
    files.atomic_write_json(target, {"a": 1})
    files.atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"
    files.atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01" and [p.name for p in target.parent.iterdir()] == ["x.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "keep.json"
    target.write_text("old")
    with pytest.raises(ValueError):  # NaN is not JSON: refused before anything is renamed
        files.atomic_write_json(target, {"loss": math.nan})
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer died")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]


def test_atomic_write_json_is_json_with_a_newline(tmp_path):
    target = tmp_path / "m.json"
    files.atomic_write_json(target, {"b": [1, 2]}, indent=None)
    assert target.read_text() == '{"b": [1, 2]}\n' and json.loads(target.read_text()) == {"b": [1, 2]}


# -- names and folders ---------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "kwargs", "expected"), [
    ("P250", {}, "P250"),
    ("timm:resnet18", {}, "timm-resnet18"),
    ("../etc", {}, "-etc"),
    ("..", {}, "-"),
    ("é+x", {}, "--x"),
    ("early_stopping@select=val", {"keep": "-_.=,@"}, "early_stopping@select=val"),
    ("a" * 100, {"max_len": 80}, "a" * 80),
])
def test_safe_name(text, kwargs, expected):
    assert files.safe_name(text, **kwargs) == expected


def test_default_folders_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("POISONBENCH_CACHE_DIR", raising=False)
    monkeypatch.delenv("POISONBENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    base = files.default_cache_dir()
    assert base.name == "poisonbench" and files.default_data_dir() == base / "data"
    monkeypatch.setenv("POISONBENCH_CACHE_DIR", str(tmp_path / "env-cache"))
    monkeypatch.setenv("POISONBENCH_DATA_DIR", str(tmp_path / "env-data"))
    assert files.default_cache_dir() == tmp_path / "env-cache"
    assert files.default_data_dir() == tmp_path / "env-data"
    assert files.default_cache_dir(tmp_path / "flag") == tmp_path / "flag"  # --cache-dir wins
    assert files.default_data_dir(Path("~/d")) == Path.home() / "d"


# -- the uint8 export ----------------------------------------------------------------------------

def test_export_forms_agree_with_the_float_rule():
    gen = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 256, (300, 5, 5, 3), generator=gen, dtype=torch.uint8)
    delta = (torch.rand(300, 5, 5, 3, generator=gen) * 2 - 1) * (8 / 255)
    additive = export_uint8(clean, delta)
    float_rule = export_uint8(clean.double() / 255 + delta.double())
    assert additive.dtype == torch.uint8 and additive.shape == clean.shape
    assert (additive.int() - float_rule.int()).abs().max() <= 1  # rounding ties only
    assert torch.equal(export_uint8(clean, delta.permute(0, 3, 1, 2), channels_first=True), additive)
    per_class = delta[:4]
    labels = torch.arange(300) % 4
    assert torch.equal(export_uint8(clean, per_class, index=labels), export_uint8(clean, per_class[labels]))


def test_export_rounds_half_up_and_clamps():
    assert export_uint8(torch.tensor([[0.5 / 255, 1.2, -0.1, 127.5 / 255]])).tolist() == [[1, 255, 0, 128]]


def test_export_floor_truncates_in_both_forms():
    x = torch.tensor([[0.2 / 255, 0.9 / 255, 1.0, 127.7 / 255, 0.0]])
    assert export_uint8(x, rounding="floor").tolist() == [[0, 0, 255, 127, 0]]
    clean = torch.tensor([[[[10, 10, 0, 255]]]], dtype=torch.uint8)
    delta = torch.tensor([[[[0.9 / 255, -0.2 / 255, -3.0 / 255, 0.4 / 255]]]])
    assert export_uint8(clean, delta, rounding="floor").flatten().tolist() == [10, 9, 0, 255]
    assert export_uint8(clean, delta).flatten().tolist() == [11, 10, 0, 255]
    with pytest.raises(ValueError, match="rounding"):
        export_uint8(x, rounding="ceil")


def test_batches_cover_everything_once():
    assert list(batches(5, 2)) == [(0, 2), (2, 4), (4, 5)] and num_batches(5, 2) == 3
    with pytest.raises(ValueError):
        list(batches(5, 0))


# -- seeds and precision ---------------------------------------------------------------------------

def test_derive_seed_is_stable_and_63_bit():
    assert derive_seed(0, "epoch", 7) == derive_seed(0, "epoch", 7) != derive_seed(0, "epoch", 8)
    assert 0 <= derive_seed(123, "val") < 2**63
    import hashlib

    expected = int.from_bytes(hashlib.sha256(b"0:epoch:7").digest()[:8], "little") >> 1
    assert derive_seed(0, "epoch", 7) == expected


def test_resolved_precision():
    assert resolved_precision("auto", "cpu") == "fp32" and resolved_precision("auto", "cuda:1") == "bf16"
    assert resolved_precision("bf16", "cpu") == "bf16"
    from poisonbench.errors import BadInput

    with pytest.raises(BadInput):
        resolved_precision("fp16", "cpu")


# -- cell metrics: the one rule for non-finite values -----------------------------------------------

@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, None])
def test_a_non_finite_loss_never_reaches_the_threshold(bad):
    history = {"train_loss": [2.0, bad, 0.4], "test_acc": [0.2, 0.5, 0.4]}
    metrics = cell_metrics(history, selected_epoch=3, loss_threshold=0.5)
    assert metrics["epochs_to_loss_threshold"] == 3
    assert (metrics["peak_test_acc"], metrics["peak_epoch"]) == (0.5, 2)


def test_a_non_finite_accuracy_is_never_the_peak():
    history = {"train_loss": [1.0, 0.9, 0.8], "test_acc": [0.3, math.nan, 0.2]}
    metrics = cell_metrics(history, selected_epoch=3, loss_threshold=0.5)
    assert (metrics["peak_test_acc"], metrics["peak_epoch"]) == (0.3, 1)
    assert metrics["epochs_to_loss_threshold"] is None


def test_leaderboard_consistency_uses_the_same_rule():
    from poisonbench.leaderboard.schema import derive_metrics

    history = {"train_loss": [2.0, None, 0.4], "test_acc": [0.2, 0.5, 0.4]}  # JSON has no NaN
    implied = derive_metrics(history, loss_threshold=0.5)
    assert implied["epochs_to_loss_threshold"] == 3 and implied["peak_epoch"] == 2
