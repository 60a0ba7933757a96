"""The ``file`` poison and ``poisonbench import``: every format in miniature, equal to crafted artifacts,
and every hostile or broken input refused with one line and exit code 2."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from poisonbench.crafting import obtain_poison
from poisonbench.data import prepare_data
from poisonbench.errors import ArtifactError, BadInput
from poisonbench.plugins.file_poison.formats import apply_perturbation
from poisonbench.suite import Component
from poisonbench.suite.config import DatasetConfig
from poisonbench.util.paths import UserPaths, allowed_paths

from .helpers_byo import TINY_TRAIN, run_main, save_image
from .helpers_reliability import Payload

EPS = 8 / 255
SYNTH = {"n_train": 40, "n_test": 20, "num_classes": 4, "image_size": 8}
DATASET_YAML = "dataset: {name: synthetic, params: {n_train: 40, n_test: 20, num_classes: 4, image_size: 8}}\n"
DATASET_ARGS = [f"--dataset-param={k}={v}" for k, v in SYNTH.items()]


def prepared(catalog, **config):
    return prepare_data(catalog, DatasetConfig(name="synthetic", **config),
                        Component("synthetic", SYNTH, SYNTH), data_dir=None)


def crafted(catalog, data, name="random_noise", params=None):
    return obtain_poison(catalog=catalog, poison=Component(name, params or {}, {}), data=data, seed=0,
                         cache_dir=None, device="cpu")


def numpy_export(images: torch.Tensor, delta: np.ndarray, labels: torch.Tensor) -> torch.Tensor:
    """The standard export written independently: floor(255·clip(x/255 + δ_y, 0, 1) + 0.5)."""
    x = images.numpy().astype(np.float64) / 255 + delta.transpose(0, 2, 3, 1)[labels.numpy()]
    return torch.from_numpy(np.floor(255 * np.clip(x, 0, 1) + 0.5).astype(np.uint8))


@pytest.fixture
def sources(catalog, tmp_path):
    """Every format written in miniature from one crafted random_noise artifact (and a class-wise δ)."""
    data = prepared(catalog)
    ref = crafted(catalog, data)
    folder = tmp_path / "proj" / "poisons"
    folder.mkdir(parents=True)
    from poisonbench.crafting.artifacts import write_artifact

    write_artifact(folder / "ref.safetensors", images=ref.images, labels=ref.labels, manifest=ref.manifest)
    for i, image in enumerate(ref.images.numpy()):
        save_image(folder / "png" / "data" / f"{i}.png", image)
    np.save(folder / "ref.npy", ref.images.numpy())
    np.savez(folder / "ref.npz", images=ref.images.numpy(), labels=ref.labels.numpy())
    delta = (ref.images.double() - data.train.images.double()) / 255
    torch.save(delta.permute(0, 3, 1, 2).float().contiguous(), folder / "sample.pt")
    gen = torch.Generator().manual_seed(3)
    class_delta = (torch.randint(0, 2, (4, 3, 8, 8), generator=gen) * 2 - 1).float() * EPS
    torch.save(class_delta, folder / "class.pt")
    expected_class = numpy_export(data.train.images, class_delta.double().numpy(), data.train.labels)
    write_artifact(folder / "class_ref.safetensors", images=expected_class, labels=data.train.labels,
                   manifest={**ref.manifest, "poison": "class_ref"})
    return {"data": data, "ref": ref, "folder": folder, "expected_class": expected_class}


def import_file(catalog, data, path: Path, **params):
    policy = UserPaths.for_suite(path.parent / "suite.yaml")
    with allowed_paths(policy):
        return crafted(catalog, data, "file", {"path": path.name, "eps": EPS, **params})


@pytest.mark.parametrize("name, fmt", [("ref.safetensors", "safetensors"), ("png", "png"),
                                       ("ref.npy", "numpy"), ("ref.npz", "numpy"),
                                       ("sample.pt", "perturbation")])
def test_each_format_imports_to_the_crafted_images(catalog, sources, name, fmt):
    artifact = import_file(catalog, sources["data"], sources["folder"] / name)
    assert torch.equal(artifact.images, sources["ref"].images)
    source = artifact.manifest["source"]
    assert source["format"] == fmt and source["applied"] == "sample"
    assert artifact.manifest["budget"] == EPS and artifact.manifest["linf"] <= EPS + 0.5 / 255
    if fmt != "png":
        assert source["sha256"] == hashlib.sha256((sources["folder"] / name).read_bytes()).hexdigest()


def test_class_wise_noise_is_detected_and_applied_per_class(catalog, sources):
    artifact = import_file(catalog, sources["data"], sources["folder"] / "class.pt")
    assert artifact.manifest["source"]["applied"] == "class"
    assert torch.equal(artifact.images, sources["expected_class"])


def test_full_set_file_is_aligned_to_a_train_subset(catalog, sources, tmp_path, capsys):
    out = tmp_path / "subset.safetensors"
    code, _, err = run_main(["import", str(sources["folder"] / "ref.npz"), "--dataset", "synthetic",
                             *DATASET_ARGS, "--subset", "20", "--eps", str(EPS), "--out", str(out)], capsys)
    assert code == 0, err
    from poisonbench.crafting.artifacts import read_artifact

    subset, full = prepared(catalog, train_subset=20).train, sources["data"].train
    rows = [next(i for i in range(len(full)) if torch.equal(full.images[i], x)) for x in subset.images]
    assert torch.equal(read_artifact(out).images, sources["ref"].images[rows])


def test_apply_perturbation_rounds_half_up_and_clamps():
    images = torch.tensor([[[[0, 128, 255]]]], dtype=torch.uint8)  # one 1×1 image, 3 channels
    delta = torch.tensor([[[[-0.1]], [[0.5 / 255]], [[0.1]]]], dtype=torch.float64)  # [1, 3, 1, 1]
    out = apply_perturbation(images, delta, index=None)
    assert out.flatten().tolist() == [0, 129, 255]


@pytest.mark.slow
def test_runs_on_every_format_equal_the_crafted_artifact_runs(sources, tmp_path, capsys, monkeypatch):
    poisons = ["random_noise"] + [
        f"{{name: file, params: {{path: poisons/{n}, eps: {EPS}}}}}"
        for n in ("ref.safetensors", "png", "ref.npy", "ref.npz", "sample.pt", "class.pt", "class_ref.safetensors")]
    suite = tmp_path / "proj" / "suite.yaml"
    suite.write_text(f"suite: formats\n{DATASET_YAML}victims: [small_cnn]\npoisons: [{', '.join(poisons)}]\n"
                     f"defenses: [early_stopping]\nseeds: [0]\n{TINY_TRAIN}")
    monkeypatch.chdir(tmp_path / "proj")
    code, _, err = run_main(["run", str(suite), "--out", str(tmp_path / "run"), "--quiet"], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in (tmp_path / "run" / "cells.jsonl").read_text().splitlines()]
    by_path = {r["poison"]["params"].get("path", r["poison"]["name"]): r for r in records}
    reference = by_path["random_noise"]
    for name in ("ref.safetensors", "png", "ref.npy", "ref.npz", "sample.pt"):
        assert by_path[f"poisons/{name}"]["history"] == reference["history"], name
        assert by_path[f"poisons/{name}"]["metrics"] == reference["metrics"], name
    assert by_path["poisons/class.pt"]["history"] == by_path["poisons/class_ref.safetensors"]["history"]


# -- refusals ---------------------------------------------------------------------------------

def make_bad(kind: str, folder: Path, sources) -> str:
    """Write one hostile/broken source into ``folder``; return its path relative to ``folder``."""
    if kind == "pickle":
        torch.save(Payload(folder / "SENTINEL"), folder / "noise.pt")  # torch.save zip with a payload
        return "noise.pt"
    if kind == "raw_pickle":
        (folder / "noise.pth").write_bytes(pickle.dumps(Payload(folder / "SENTINEL"), protocol=2))
        return "noise.pth"
    if kind == "object_npy":
        np.save(folder / "images.npy", np.array([{"x": 1}, None], dtype=object), allow_pickle=True)
        return "images.npy"
    if kind == "png_gap":
        shutil.copytree(sources["folder"] / "png", folder / "gap")
        (folder / "gap" / "data" / "17.png").unlink()
        return "gap"
    if kind == "over_budget":
        torch.save(torch.full((4, 3, 8, 8), 3 * EPS), folder / "strong.pt")
        return "strong.pt"
    if kind == "over_budget_images":
        np.save(folder / "strong.npy", (255 - sources["data"].train.images).numpy())
        return "strong.npy"
    if kind == "escape":
        outside = folder.parent / "outside"
        outside.mkdir(exist_ok=True)
        shutil.copy(sources["folder"] / "ref.npy", outside / "ref.npy")
        return "../outside/ref.npy"
    raise ValueError(kind)


EXPECTED = {"pickle": "weights_only=True", "raw_pickle": "weights_only=True",
            "object_npy": "Object arrays", "png_gap": "no image for index 17",
            "over_budget": "over the declared eps", "escape": "escapes the allowed folders"}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_bad_sources_fail_a_suite_with_one_line_and_exit_2(kind, sources, tmp_path, capsys, monkeypatch):
    proj = tmp_path / "proj"
    rel = make_bad(kind, proj, sources)
    suite = proj / "suite.yaml"
    suite.write_text(f"suite: bad\n{DATASET_YAML}victims: [small_cnn]\n"
                     f"poisons: [{{name: file, params: {{path: '{rel}', eps: {EPS}}}}}]\nseeds: [0]\n{TINY_TRAIN}")
    monkeypatch.chdir(proj)
    code, _, err = run_main(["run", str(suite), "--out", str(tmp_path / "run"), "--quiet"], capsys)
    lines = err.strip().splitlines()  # the suite-validation form: one problem line + the summary
    assert code == 2 and EXPECTED[kind] in lines[0] and "suite.yaml:" in lines[0], err
    assert lines[1:] == ["1 problem; nothing was run."]
    assert not (proj / "SENTINEL").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", ["pickle", "object_npy", "png_gap", "over_budget", "over_budget_images"])
def test_bad_sources_fail_import_with_one_line_and_exit_2(kind, sources, tmp_path, capsys):
    rel = make_bad(kind, tmp_path / "proj", sources)
    out = tmp_path / "out.safetensors"
    code, _, err = run_main(["import", str(tmp_path / "proj" / rel), "--dataset", "synthetic", *DATASET_ARGS,
                             "--eps", str(EPS), "--out", str(out)], capsys)
    expected = {**EXPECTED, "over_budget": "over the budget", "over_budget_images": "over the budget"}[kind]
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not (tmp_path / "proj" / "SENTINEL").exists()


def test_import_writes_a_checked_artifact_with_the_source_recorded(sources, tmp_path, capsys):
    src = sources["folder"] / "class.pt"
    out = tmp_path / "cu.safetensors"
    code, stdout, err = run_main(["import", str(src), "--dataset", "synthetic", *DATASET_ARGS,
                                  "--eps", str(EPS), "--out", str(out), "--json"], capsys)
    assert code == 0, err
    manifest = json.loads(stdout)["manifest"]
    assert manifest["source"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert manifest["source"]["format"] == "perturbation" and manifest["source"]["applied"] == "class"
    assert manifest["budget"] == EPS and manifest["poison"] == "file"
    from poisonbench.crafting.artifacts import read_artifact

    assert torch.equal(read_artifact(out).images, sources["expected_class"])


def test_declared_sha256_must_match(catalog, sources):
    with pytest.raises(ArtifactError, match="differs from the declared"):
        import_file(catalog, sources["data"], sources["folder"] / "ref.npy", sha256="0" * 64)


def test_plain_tensors_only(catalog, sources):
    folder = sources["folder"]
    torch.save({"noise": torch.zeros(4, 3, 8, 8)}, folder / "dict.pt")
    torch.save(torch.zeros(4, 3, 8, 8, dtype=torch.int16), folder / "int.pt")
    torch.save(torch.zeros(4, 8, 8, 3), folder / "nhwc.pt")
    for name, message in (("dict.pt", "found dict"), ("int.pt", "dense float"), ("nhwc.pt", "expected")):
        with pytest.raises(ArtifactError, match=message):
            import_file(catalog, sources["data"], folder / name)


def test_missing_path_is_one_line_bad_input(catalog, sources):
    with pytest.raises(BadInput, match="not found"):
        import_file(catalog, sources["data"], sources["folder"] / "nope.pt")


def test_a_full_set_file_in_a_suite_is_aligned_through_ctx_full_train(catalog, sources):
    """The dataset plugin's params reach the poison through ``CraftContext.full_train``: a suite
    with a train_subset aligns a full-set file just as ``poisonbench import --subset`` does."""
    subset = prepared(catalog, train_subset=20)
    artifact = import_file(catalog, subset, sources["folder"] / "ref.npz")
    full = sources["data"].train
    rows = [next(i for i in range(len(full)) if torch.equal(full.images[i], x)) for x in subset.train.images]
    assert torch.equal(artifact.images, sources["ref"].images[rows])
    assert artifact.manifest["source"]["count"] == len(full)


def test_import_goes_through_the_registry(sources, tmp_path, capsys):
    src, out = sources["folder"] / "ref.npz", tmp_path / "x.safetensors"
    base = ["import", str(src), "--dataset", "synthetic", *DATASET_ARGS, "--out", str(out)]
    code, _, err = run_main([*base, "--poison", "R4"], capsys)  # a poison that reads no file
    assert code == 2 and "poison 'R4': unknown param 'path'" in err
    code, _, err = run_main([*base, "--format", "pngg"], capsys)  # the file poison's own params check
    assert code == 2 and "param 'format': expected one of" in err
    code, _, err = run_main([*base, "--poison", "fil"], capsys)
    assert code == 2 and "Did you mean: file" in err
    assert not out.exists()
