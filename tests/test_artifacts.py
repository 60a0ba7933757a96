"""Artifact files (safetensors + manifest), their checks, and obtain_poison's output checks."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from poisonbench.api import Poison, PreparedData, Split
from poisonbench.catalog import Catalog
from poisonbench.catalog.manager import new_manager
from poisonbench.crafting import obtain_poison
from poisonbench.crafting.artifacts import check_artifact, read_artifact, write_artifact
from poisonbench.errors import ArtifactError, PluginError
from poisonbench.hookspecs import hookimpl
from poisonbench.plugins import baselines
from poisonbench.plugins.synthetic import regions
from poisonbench.suite import Component

EPS = 8 / 255


def tiny_split(n: int = 20, shape=(8, 8, 3), seed: int = 0) -> Split:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *shape), generator=gen, dtype=torch.uint8)
    return Split(images=images, labels=torch.arange(n, dtype=torch.int64) % 4)


def prepared(train: Split | None = None) -> PreparedData:
    train = train or tiny_split()
    return PreparedData(
        name="tiny",
        train=train,
        test=tiny_split(8, seed=1),
        val=None,
        num_classes=4,
        class_names=list("abcd"),
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        fingerprint="f" * 64,
    )


def manifest(**extra) -> dict:
    return {
        "poison": "R4",
        "params": {},
        "seed": 0,
        "dataset": {"name": "tiny", "fingerprint": "f" * 64},
        "linf": EPS,
        **extra,
    }


def shifted(clean: Split, levels: int = 8) -> torch.Tensor:
    return (clean.images.to(torch.int16) + levels).clamp(0, 255).to(torch.uint8)


def test_roundtrip_and_sha(tmp_path):
    clean = tiny_split()
    sha = write_artifact(
        tmp_path / "a.safetensors", images=shifted(clean), labels=clean.labels, manifest=manifest()
    )
    art = read_artifact(tmp_path / "a.safetensors")
    assert (
        art.sha256 == sha
        and torch.equal(art.labels, clean.labels)
        and art.manifest["poison"] == "R4"
    )
    assert "images_sha256" in art.manifest and [p.name for p in tmp_path.iterdir()] == [
        "a.safetensors"
    ]
    linf = check_artifact(art, clean, budget=EPS, threat_model="linf", source="a")
    assert linf == pytest.approx(8 / 255)


def test_flipped_payload_byte_is_rejected(tmp_path):
    clean = tiny_split()
    path = tmp_path / "a.safetensors"
    write_artifact(path, images=shifted(clean), labels=clean.labels, manifest=manifest())
    data = bytearray(path.read_bytes())
    data[-len(clean.labels) * 8 - 5] ^= 0x01  # one bit of one pixel in the images payload
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"a\.safetensors: images do not match"):
        read_artifact(path)


def test_one_pixel_over_budget_names_the_image(tmp_path):
    clean = tiny_split()
    images = shifted(clean, 0)
    images[7, 3, 2, 1] = 255 if clean.images[7, 3, 2, 1] < 128 else 0
    write_artifact(
        tmp_path / "a.safetensors", images=images, labels=clean.labels, manifest=manifest()
    )
    art = read_artifact(tmp_path / "a.safetensors")
    with pytest.raises(ArtifactError, match=r"^src: image 7 is perturbed"):
        check_artifact(art, clean, budget=EPS, threat_model="linf", source="src")
    assert (
        check_artifact(art, clean, budget=None, threat_model="functional", source="src") > 100 / 255
    )


def test_rounding_tolerance_is_half_a_level():
    clean = Split(
        images=torch.full((2, 2, 2, 1), 100, dtype=torch.uint8),
        labels=torch.zeros(2, dtype=torch.int64),
    )
    art = read_like(clean, shifted(clean, 9))
    assert check_artifact(
        art, clean, budget=8.5 / 255, threat_model="linf", source="s"
    ) == pytest.approx(9 / 255)
    with pytest.raises(ArtifactError, match="image 0"):
        check_artifact(
            read_like(clean, shifted(clean, 10)),
            clean,
            budget=8.5 / 255,
            threat_model="linf",
            source="s",
        )


def read_like(clean: Split, images: torch.Tensor, labels: torch.Tensor | None = None):
    from poisonbench.crafting.artifacts import Artifact

    return Artifact(images, clean.labels if labels is None else labels, manifest(), "", None)


def test_changed_label_count_shape_and_fingerprint_are_rejected(tmp_path):
    clean = tiny_split()
    labels = clean.labels.clone()
    labels[3] = (labels[3] + 1) % 4
    write_artifact(
        tmp_path / "a.safetensors", images=clean.images, labels=labels, manifest=manifest()
    )
    art = read_artifact(tmp_path / "a.safetensors")
    with pytest.raises(ArtifactError, match="label of image 3"):
        check_artifact(art, clean, budget=EPS, threat_model="linf", source="a")
    short = Split(clean.images[:5], clean.labels[:5])
    with pytest.raises(ArtifactError, match="5 images"):
        check_artifact(
            read_like(short, short.images), clean, budget=EPS, threat_model="linf", source="a"
        )
    wrong = Split(torch.zeros(20, 8, 9, 3, dtype=torch.uint8), clean.labels)
    with pytest.raises(ArtifactError, match="image shape"):
        check_artifact(
            read_like(wrong, wrong.images), clean, budget=EPS, threat_model="linf", source="a"
        )
    with pytest.raises(ArtifactError, match="fingerprint"):
        check_artifact(
            read_like(clean, clean.images),
            clean,
            budget=EPS,
            threat_model="linf",
            source="a",
            fingerprint="0" * 64,
        )


class Boom:
    def __reduce__(self):  # unpickling this would create a marker file
        return (Path.touch, (Path(MARKER),))


MARKER = ""


def test_pickle_and_junk_are_refused_without_loading(tmp_path):
    global MARKER
    MARKER = str(tmp_path / "unpickled")
    (tmp_path / "p.pt").write_bytes(pickle.dumps({"images": Boom()}, protocol=4))
    with pytest.raises(ArtifactError, match=r"p\.pt: not a poisonbench artifact"):
        read_artifact(tmp_path / "p.pt")
    torch.save({"x": torch.zeros(2)}, tmp_path / "t.pt")
    (tmp_path / "junk.bin").write_bytes(b"\xff" * 64)
    for name in ("t.pt", "junk.bin", "missing.safetensors"):
        with pytest.raises(ArtifactError, match=name.replace(".", r"\.")):
            read_artifact(tmp_path / name)
    assert not Path(MARKER).exists()


def test_wrong_tensors_or_manifest_are_refused(tmp_path):
    from safetensors.torch import save_file

    labels = torch.zeros(2, dtype=torch.int64)
    cases = {
        "float.st": (
            {"images": torch.zeros(2, 4, 4, 3), "labels": labels},
            {"manifest": json.dumps(manifest())},
        ),
        "nomanifest.st": (
            {"images": torch.zeros(2, 4, 4, 3, dtype=torch.uint8), "labels": labels},
            None,
        ),
        "badjson.st": (
            {"images": torch.zeros(2, 4, 4, 3, dtype=torch.uint8), "labels": labels},
            {"manifest": "{"},
        ),
        "lacks.st": (
            {"images": torch.zeros(2, 4, 4, 3, dtype=torch.uint8), "labels": labels},
            {"manifest": "{}"},
        ),
        "extra.st": (
            {
                "images": torch.zeros(2, 4, 4, 3, dtype=torch.uint8),
                "labels": labels,
                "x": labels.clone(),
            },
            {"manifest": json.dumps(manifest())},
        ),
    }
    messages = {
        "float.st": "must be uint8",
        "nomanifest.st": "no 'manifest'",
        "badjson.st": "not valid JSON",
        "lacks.st": "manifest lacks",
        "extra.st": "expected tensors",
    }
    for name, (tensors, meta) in cases.items():
        save_file(tensors, str(tmp_path / name), metadata=meta)
        with pytest.raises(ArtifactError, match=messages[name]):
            read_artifact(tmp_path / name)


# -- obtain_poison ---------------------------------------------------------------------------------
class Bad(Poison):
    """A poison whose output is chosen by the test (class attribute ``mode``)."""

    name = "bad"
    family = "bad"
    mode = "ok"
    calls = 0

    def budget(self):
        return EPS

    def craft(self, clean, *, ctx):
        type(self).calls += 1
        x = clean.images
        return {
            "ok": lambda: shifted(clean, 8),
            "float": lambda: x.float(),
            "nan": lambda: torch.full(x.shape, float("nan")),
            "shape": lambda: x[:, :4].clone(),
            "over": lambda: shifted(clean, 12),
            "mutate": lambda: (clean.labels.add_(1), x.clone())[1],
            "list": lambda: x.tolist(),
        }[self.mode]()


class BadPlugin:
    @hookimpl
    def poisonbench_register_poisons(self, register):
        register(Bad)


def make_catalog() -> Catalog:
    pm = new_manager()
    pm.register(baselines, name="baselines")
    pm.register(regions, name="regions")
    pm.register(BadPlugin(), name="badplugin")
    return Catalog.from_manager(pm)


def obtain(catalog, name, data, tmp_path, seed=0, cache=True):
    return obtain_poison(
        catalog=catalog,
        poison=Component(name, {}, {}),
        data=data,
        seed=seed,
        cache_dir=tmp_path / "cache" if cache else None,
        device="cpu",
    )


@pytest.mark.parametrize(
    "mode,error,message",
    [
        ("float", PluginError, "float32 tensor, expected uint8"),
        ("nan", PluginError, "NaN"),
        ("shape", PluginError, "shape"),
        ("over", ArtifactError, "image 0 is perturbed"),
        ("mutate", PluginError, "modified the clean"),
        ("list", PluginError, "returned list"),
    ],
)
def test_bad_plugin_output_is_rejected_naming_the_plugin(
    tmp_path, monkeypatch, mode, error, message
):
    monkeypatch.setattr(Bad, "mode", mode)
    data = prepared()
    before = data.train.labels.clone()
    with pytest.raises(error, match=message) as exc:
        obtain(make_catalog(), "bad", data, tmp_path)
    assert "poison 'bad' (plugin 'badplugin')" in str(exc.value)
    assert torch.equal(data.train.labels, before)  # the harness's copy protects its data
    assert list((tmp_path / "cache" / "poisons").glob("*.safetensors")) == []


def test_obtain_caches_checks_and_records_a_manifest(tmp_path, monkeypatch):
    monkeypatch.setattr(Bad, "calls", 0)
    catalog, data = make_catalog(), prepared()
    first = obtain(catalog, "bad", data, tmp_path)
    again = obtain(catalog, "bad", data, tmp_path)
    other_seed = obtain(catalog, "bad", data, tmp_path, seed=1)
    assert Bad.calls == 2 and first.sha256 == again.sha256 and first.path == again.path
    assert other_seed.path != first.path
    m = first.manifest
    assert (m["poison"], m["family"], m["seed"], m["dataset"]) == (
        "bad",
        "bad",
        0,
        {"name": "tiny", "fingerprint": "f" * 64},
    )
    assert m["linf"] == pytest.approx(8 / 255) and m["budget"] == pytest.approx(EPS)
    assert set(m["versions"]) == {"poisonbench", "torch", "plugin"} and m["images_sha256"]
    clean = obtain(catalog, "clean", data, tmp_path, cache=False)
    assert (
        clean.path is None
        and torch.equal(clean.images, data.train.images)
        and clean.manifest["linf"] == 0
    )


def test_tampered_cache_entry_is_refused(tmp_path):
    catalog, data = make_catalog(), prepared()
    art = obtain(catalog, "R4", data, tmp_path)
    images = art.images.clone()
    images[5, 0, 0, 0] = 255 - int(
        data.train.images[5, 0, 0, 0]
    )  # far over budget, hashes rewritten
    write_artifact(art.path, images=images, labels=art.labels, manifest=art.manifest)
    with pytest.raises(ArtifactError, match=r"\.safetensors: image 5 is perturbed"):
        obtain(catalog, "R4", data, tmp_path)


def test_crafting_twice_gives_a_byte_identical_file(tmp_path):
    """Leaderboard evidence names the artifact's sha256: re-crafting must reproduce it exactly."""
    data = prepared()
    first = obtain(make_catalog(), "R4", data, tmp_path / "a")
    second = obtain(make_catalog(), "R4", data, tmp_path / "b")
    assert first.path != second.path
    assert first.sha256 == second.sha256
    assert first.path.read_bytes() == second.path.read_bytes()
