"""Synthetic poisons (regions R*, low frequency LF*, random noise): structure, export, seeds."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from poisonbench.api import CraftContext, Split, export_uint8
from poisonbench.catalog import Catalog
from poisonbench.catalog.manager import new_manager
from poisonbench.errors import BadInput
from poisonbench.plugins import baselines
from poisonbench.plugins.synthetic import low_frequency, ops, random_noise, regions

EPS = 8 / 255
TABLE1 = [
    "R1",
    "R2",
    "R4",
    "R16",
    "R64",
    "R128",
    "RN",
    *(f"LF{n}" for n in range(2, 9)),
    "random_noise",
    "clean",
]


@pytest.fixture
def synth() -> Catalog:
    pm = new_manager()
    for module in (baselines, regions, low_frequency, random_noise):
        pm.register(module, name=module.__name__.rsplit(".", 1)[1])
    return Catalog.from_manager(pm)


def mid_split(n: int = 40, shape=(32, 32, 3), classes: int = 4, seed: int = 0) -> Split:
    """Pixels in [20, 235]: an 8/255 perturbation is never clamped."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(20, 236, (n, *shape), generator=gen, dtype=torch.uint8)
    return Split(images=images, labels=torch.arange(n, dtype=torch.int64) % classes)


def craft(catalog, name, split, *, seed=0, classes=4, **params):
    poison = catalog.poisons.create(name, params)
    return poison.craft(split, ctx=CraftContext(num_classes=classes, seed=seed))


def blocks(delta: torch.Tensor, rows: list[int], cols: list[int]) -> list[torch.Tensor]:
    """The (h, w, C) pieces of a (H, W, C) tensor cut at the given row/col sizes."""
    return [b for strip in delta.split(rows, dim=0) for b in strip.split(cols, dim=1)]


@pytest.mark.parametrize(
    "name,rows,cols",
    [
        ("R1", [32], [32]),
        ("R2", [32], [16, 16]),  # left / right halves
        ("R4", [16, 16], [16, 16]),
        ("R16", [8] * 4, [8] * 4),
        ("R64", [4] * 8, [4] * 8),
        ("R128", [4] * 8, [2] * 16),  # 8 rows × 16 cols of 4 × 2 px
        ("RN", [1] * 32, [1] * 32),  # 1024 single pixels
    ],
)
@pytest.mark.filterwarnings(
    "ignore:regions"
)  # R1: 10 classes but 2^3 patterns, clashes are certain
def test_regions_are_constant_plus_minus_eps_per_channel(synth, name, rows, cols):
    delta = synth.poisons.create(name, {}).perturbation(num_classes=10, shape=(32, 32, 3), seed=0)
    assert delta.shape == (10, 32, 32, 3) and delta.dtype == torch.float32
    assert torch.allclose(delta.abs(), torch.tensor(EPS))
    for k in range(10):
        pieces = blocks(delta[k], rows, cols)
        assert len(pieces) == len(rows) * len(cols)
        for piece in pieces:  # one constant value per channel in each region
            assert torch.equal(piece, piece[:1, :1].expand_as(piece))
    # and no coarser structure: merging a pair of neighbouring regions is not constant everywhere
    if len(cols) > 1:
        per_region = torch.stack(
            [torch.stack([p[0, 0] for p in blocks(d, rows, cols)]) for d in delta]
        )
        assert not torch.equal(per_region[:, 0::2], per_region[:, 1::2])


def test_uneven_sizes_and_grid_rule():
    assert ops.region_grid(4, 32, 32) == (2, 2) and ops.region_grid(2, 32, 32) == (1, 2)
    assert ops.region_grid(128, 32, 32) == (8, 16) and ops.region_grid(1024, 32, 32) == (32, 32)
    assert ops.region_grid(1024, 28, 28) == (28, 28)  # RN is per pixel at any size
    assert ops.region_grid(8, 32, 32) == (2, 4) and ops.region_grid(7, 32, 32) == (1, 7)
    sizes = torch.bincount(ops.boundaries(16, 30)).tolist()
    assert sum(sizes) == 30 and max(sizes) - min(sizes) <= 1 and len(sizes) == 16
    delta = ops.regions_delta(
        regions=4, num_classes=3, shape=(29, 31, 1), eps=EPS, signed=True, distinct=False, seed=0
    )
    for k in range(3):
        assert len(blocks(delta[k], [15, 14], [16, 15])) == 4
        for piece in blocks(delta[k], [15, 14], [16, 15]):
            assert torch.equal(piece, piece[:1, :1].expand_as(piece))


def test_unsigned_regions_and_eps(synth):
    delta = synth.poisons.create("R16", {"signed": False, "eps": 4 / 255}).perturbation(
        num_classes=10, shape=(32, 32, 3), seed=3
    )
    assert torch.unique(delta).tolist() == [0.0, pytest.approx(4 / 255)]


def test_one_channel_r4_duplicates_warn_and_distinct_redraws(synth):
    with pytest.warns(
        UserWarning, match="distinct: true"
    ):  # 10 classes, 16 patterns: a clash is ~96% likely
        found = [
            synth.poisons.create("R4", {}).perturbation(num_classes=10, shape=(28, 28, 1), seed=s)
            for s in range(3)
        ]
    assert found
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        delta = synth.poisons.create("R4", {"distinct": True}).perturbation(
            num_classes=10, shape=(28, 28, 1), seed=0
        )
    patterns = {tuple(d[[0, 0, 14, 14], [0, 14, 0, 14], 0].tolist()) for d in delta}
    assert len(patterns) == 10
    with pytest.raises(BadInput, match="distinct patterns impossible"):
        synth.poisons.create("R1", {"distinct": True}).perturbation(
            num_classes=10, shape=(8, 8, 1), seed=0
        )


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_low_frequency_support_and_peak(synth, n):
    from scipy.fft import dctn, idctn

    delta = (
        synth.poisons.create(f"LF{n}", {})
        .perturbation(num_classes=3, shape=(32, 32, 3), seed=0)
        .double()
    )
    for k in range(3):
        coeffs = torch.from_numpy(dctn(delta[k].numpy(), axes=(0, 1), norm="ortho"))
        outside = coeffs.clone()
        outside[:n, :n] = 0
        assert outside.abs().max() < 1e-6 and coeffs[:n, :n].abs().min() > 0
        assert delta[k].abs().max() == pytest.approx(EPS, rel=1e-6)
        back = idctn(
            coeffs.numpy(), axes=(0, 1), norm="ortho"
        )  # our matrix DCT agrees with scipy's
        assert torch.allclose(torch.from_numpy(back), delta[k], atol=1e-7)


def test_low_frequency_clip_and_bad_n(synth):
    delta = synth.poisons.create("LF4", {"scale": "clip"}).perturbation(
        num_classes=2, shape=(28, 28, 1), seed=0
    )
    assert delta.abs().max() <= EPS + 1e-7
    with pytest.raises(BadInput, match="n must be in 1..6"):
        synth.poisons.create("low_frequency", {"n": 8}).perturbation(
            num_classes=2, shape=(6, 6, 1), seed=0
        )


@pytest.mark.parametrize("name", ["R4", "RN", "R128", "LF3", "LF8"])
def test_class_wise_poisons_give_a_class_one_perturbation(synth, name):
    clean = mid_split()
    out = craft(synth, name, clean)
    diff = out.to(torch.int16) - clean.images.to(torch.int16)
    delta = synth.poisons.create(name, {}).perturbation(num_classes=4, shape=(32, 32, 3), seed=0)
    expected = torch.floor(delta * 255 + 0.5).to(torch.int16)  # round half up, never clamped here
    for i in range(len(clean)):
        assert torch.equal(diff[i], expected[int(clean.labels[i])])
    assert diff.abs().max() == 8


def test_random_noise_is_per_image_uniform(synth):
    clean = mid_split(n=64)
    out = craft(synth, "random_noise", clean)
    diff = out.to(torch.int16) - clean.images.to(torch.int16)
    assert diff.abs().max() == 8 and not torch.equal(diff[0], diff[4])  # same class, other noise
    noise = synth.poisons.create("random_noise", {}).perturbation(
        count=64, shape=(32, 32, 3), seed=0
    )
    assert noise.abs().max() <= EPS and noise.mean().abs() < 2e-3 and noise.std() > EPS / 2
    levels = torch.floor(noise * 255 + 0.5).to(torch.int16)  # the export, in whole grey levels
    assert torch.equal(out, (clean.images.to(torch.int16) + levels).clamp(0, 255).to(torch.uint8))
    spec = torch.floor((clean.images.double() / 255 + noise.double()).clamp(0, 1) * 255 + 0.5)
    assert (spec - out.double()).abs().max() <= 1 and (spec != out.double()).float().mean() < 1e-4


def test_export_rounds_half_up_and_clamps():
    images = torch.tensor([0, 255, 100, 100], dtype=torch.uint8).view(4, 1, 1, 1)
    delta = torch.tensor([-EPS, EPS, 0.5 / 255, -0.5 / 255]).view(4, 1, 1, 1)
    assert export_uint8(images, delta).flatten().tolist() == [0, 255, 101, 100]


@pytest.mark.filterwarnings("ignore:regions")  # tiny class counts on 1–2 channels may clash
@pytest.mark.parametrize("name", ["R4", "R2", "RN", "LF3", "random_noise"])
@pytest.mark.parametrize("shape", [(32, 32, 3), (28, 28, 1), (17, 23, 2)])
def test_same_seed_same_bytes_other_seed_different(synth, name, shape):
    clean = mid_split(n=24, shape=shape)
    a, b = craft(synth, name, clean, seed=1), craft(synth, name, clean, seed=1)
    assert a.dtype == torch.uint8 and a.shape == clean.images.shape and torch.equal(a, b)
    assert not torch.equal(a, craft(synth, name, clean, seed=2))
    assert (a.to(torch.int16) - clean.images.to(torch.int16)).abs().max() <= 8


def test_list_poisons_json_has_table1_synthetics(capsys):
    from poisonbench.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["list", "poisons", "--json"])
    listed = {entry["name"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert exc.value.code == 0 and set(TABLE1) <= set(listed)
    assert listed["R4"]["family"] == "regions" and listed["R4"]["applied"] == "class"
    assert listed["LF5"]["kind"] == "random" and listed["random_noise"]["applied"] == "sample"


def test_craft_cli_writes_an_artifact_and_rejects_unknown_params(tmp_path, capsys):
    from poisonbench.cli import main
    from poisonbench.crafting.artifacts import read_artifact

    out = tmp_path / "r4.safetensors"
    args = [
        "craft",
        "R4",
        "--dataset",
        "synthetic",
        "--subset",
        "40",
        "--seed",
        "3",
        "--set",
        "signed=false",
        "--out",
        str(out),
        "--json",
    ]
    with pytest.raises(SystemExit) as exc:
        main(args)
    printed = json.loads(capsys.readouterr().out)
    art = read_artifact(out)
    assert exc.value.code == 0 and printed["sha256"] == art.sha256 and len(art) == 40
    assert art.manifest["params"]["signed"] is False and art.manifest["seed"] == 3
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "craft",
                "R4",
                "--dataset",
                "synthetic",
                "--set",
                "regoins=4",
                "--out",
                str(tmp_path / "x"),
            ]
        )
    assert exc.value.code == 2 and "did you mean 'regions'" in capsys.readouterr().err
