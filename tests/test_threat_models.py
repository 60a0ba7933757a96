"""The L2, L0 and filter threat models: enforced on the exported uint8, measured into the manifest, listed."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import torch

from poisonbench.api import CraftContext, Poison, PreparedData, Split
from poisonbench.catalog import Catalog
from poisonbench.catalog.manager import new_manager
from poisonbench.cli import cli
from poisonbench.crafting import craft_checked, obtain_poison
from poisonbench.crafting.artifacts import Artifact, check_artifact, l2_tolerance
from poisonbench.errors import ArtifactError
from poisonbench.hookspecs import hookimpl
from poisonbench.plugins import baselines, convolution, linear_separable, one_pixel
from poisonbench.suite import Component
from poisonbench.testing import ContractViolation, check_poison


def grey(n: int = 16, shape=(8, 8, 3), num_classes: int = 4) -> Split:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(60, 200, (n, *shape), generator=gen, dtype=torch.int64).to(torch.uint8)
    return Split(images=images, labels=torch.arange(n) % num_classes)


def art(images, clean: Split) -> Artifact:
    return Artifact(images, clean.labels, {}, "")


def test_l2_budget_allows_rounding_slack_and_names_the_image_over_it():
    clean = grey()
    d = 8 * 8 * 3
    assert l2_tolerance((32, 32, 3)) == pytest.approx(0.1086, abs=1e-4)
    assert l2_tolerance((28, 28, 1)) == pytest.approx(0.0549, abs=1e-4)
    images = clean.images.clone()
    images[:, 0, 0, 0] += 51  # ‖Δ‖₂ = 0.2 in pixel units on every image
    assert check_artifact(art(images, clean), clean, budget=0.2, threat_model="l2", source="s") == 0.2
    slack = 0.5 * math.sqrt(d) / 255
    ok = clean.images.clone()
    ok[:, 0, 0, 0] += 51 + int(slack * 255)  # inside the rounding slack
    check_artifact(art(ok, clean), clean, budget=0.2, threat_model="l2", source="s")
    images[3, 1, 1, 1] += 40
    with pytest.raises(ArtifactError, match=r"^s: image 3 has L2 norm 0\.25\d+ .*over the budget 0\.2000"):
        check_artifact(art(images, clean), clean, budget=0.2, threat_model="l2", source="s")


def test_l0_artifact_changing_two_pixels_of_one_image_is_refused_by_name():
    clean = grey(n=20)
    out = one_pixel.OnePixelShortcut().craft(clean, ctx=CraftContext(num_classes=4, seed=0))
    assert check_artifact(art(out, clean), clean, budget=1, threat_model="l0", source="ops") > 0
    out[7, 5, 5, :] = 255 - out[7, 5, 5, :]  # a second position in image 7
    with pytest.raises(ArtifactError, match=r"^ops: image 7 changes 2 pixel positions, over the L0 budget of 1$"):
        check_artifact(art(out, clean), clean, budget=1, threat_model="l0", source="ops")
    # the functional and filter threat models have no norm check
    assert check_artifact(art(out, clean), clean, budget=None, threat_model="filter", source="ops") > 0


@dataclass(frozen=True)
class TwoPixelParams:
    sparsity: int = 1


class TwoPixels(Poison):
    """Test poison: claims one pixel per image, changes two."""

    name = "two_pixels"
    threat_model = "l0"
    Params = TwoPixelParams

    def budget(self):
        return float(self.params.sparsity)

    def craft(self, clean, *, ctx):
        out = clean.images.clone()
        out[:, 0, 0, :] = 255
        out[2:, 1, 1, :] = 0  # images 0 and 1 keep to the budget
        return out


class TwoPixelPlugin:
    @hookimpl
    def poisonbench_register_poisons(self, register):
        register(TwoPixels)


def tiny_catalog(*modules) -> Catalog:
    pm = new_manager()
    pm.register(baselines, name="baselines")
    for module in modules:
        pm.register(module, name=getattr(module, "__name__", type(module).__name__).rsplit(".", 1)[-1])
    return Catalog.from_manager(pm)


def test_plugin_output_over_an_l0_budget_is_rejected_and_contract_check_catches_it():
    clean = grey()
    with pytest.raises(ArtifactError, match="image 2 changes 2 pixel positions"):
        craft_checked(TwoPixels(), clean, ctx=CraftContext(num_classes=4, seed=0), who="poison 'two_pixels'")
    with pytest.raises(ContractViolation, match="image 2 changes 2 pixel positions"):
        check_poison("two_pixels", catalog=tiny_catalog(TwoPixelPlugin()))


def prepared(train: Split) -> PreparedData:
    return PreparedData(name="tiny", train=train, test=grey(8), val=None, num_classes=4, class_names=list("abcd"),
                        mean=(0.5,) * 3, std=(0.25,) * 3, fingerprint="f" * 64)


@pytest.mark.parametrize("name, threat", [("OPS", "l0"), ("LSP", "l2"), ("CUDA", "filter")])
def test_manifest_records_the_measured_norm(name, threat):
    catalog = tiny_catalog(one_pixel, linear_separable, convolution)
    data = prepared(grey(n=24, shape=(16, 16, 3)))
    artifact = obtain_poison(catalog=catalog, poison=Component(name, {}, {}), data=data, seed=0, cache_dir=None,
                             device="cpu")
    norm = artifact.manifest["norm"]
    assert artifact.manifest["threat_model"] == threat and norm["threat_model"] == threat
    assert {"l2_max", "l2_mean", "l0_max", "l0_mean", "mean_abs", "psnr_db"} <= set(norm)
    if threat == "l0":
        assert norm["l0_max"] == 1 and artifact.manifest["budget"] == 1
    if threat == "l2":
        eps2 = 6 / 255 * math.sqrt(16 * 16 * 3)
        assert artifact.manifest["budget"] == pytest.approx(eps2)
        assert norm["l2_max"] <= eps2 + l2_tolerance((16, 16, 3))
        assert norm["l2_mean_ratio"] == pytest.approx(1.0, abs=0.05)
    if threat == "filter":
        assert artifact.manifest["budget"] is None and 10 < norm["psnr_db"] < 60
    json.dumps(artifact.manifest, allow_nan=False)


def test_linf_manifest_is_unchanged():
    catalog = tiny_catalog()
    artifact = obtain_poison(catalog=catalog, poison=Component("clean", {}, {}), data=prepared(grey()), seed=0,
                             cache_dir=None, device="cpu")
    assert "norm" not in artifact.manifest


def test_list_poisons_shows_threat_model_and_budget(cli_runner):
    result = cli_runner.invoke(cli, ["list", "poisons", "--json"])
    assert result.exit_code == 0, result.output
    items = {i["name"]: i for i in json.loads(result.output)}
    expected = {"LSP": ("l2", 1.3041), "AR": ("l2", 1.0), "OPS": ("l0", 1.0), "CUDA": ("filter", None)}
    for name, (threat, value) in expected.items():
        assert items[name]["threat_model"] == threat and items[name]["budget"]
        if value is None:
            assert items[name]["budget_value"] is None
        else:
            assert items[name]["budget_value"] == pytest.approx(value, abs=1e-4)
        assert items[name]["paper"]["url"].startswith("https://arxiv.org/abs/")
    assert items["R4"]["budget"] == "L∞ 8/255"
    table = cli_runner.invoke(cli, ["list", "poisons", "OPS"], env={"COLUMNS": "200"})
    assert "l0" in table.output and "L0 1 px" in table.output
