"""Functional poisons FC/FCS/FCSD (plugins/functional/) on tiny data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from poisonbench.api import CraftContext, Split
from poisonbench.errors import BadInput
from poisonbench.plugins.functional import ops

K = 4
SMOOTH = 1e-4  # the round-trip tolerance of the acceptance criteria


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_model(channels: int = 3) -> nn.Module:
    """A fixed random conv net (weights ×8 so that small colour changes move its margin)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(),
                              nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, K))
    with torch.no_grad():
        for layer in (model[0], model[4]):
            layer.weight.mul_(8)
    return model.eval().requires_grad_(False)


def smooth_image(height: int = 16, width: int = 16, *, lo: float = 0.3, hi: float = 0.7) -> torch.Tensor:
    """(1, 3, H, W) soft colour gradients inside [lo, hi]."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    span = hi - lo
    return torch.stack([lo + span * xx, lo + span * yy, lo + span * (0.5 + 0.5 * (xx - yy))])[None]


def tiny_split(shape=(12, 12, 3), n: int = 12, seed: int = 0) -> Split:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *shape), generator=gen, dtype=torch.uint8)
    images[0] = 0  # black and white exercise the lattice's darkest and lightest slabs
    images[1] = 255
    return Split(images=images, labels=torch.arange(n, dtype=torch.int64) % K)


def context(catalog, model, seed: int = 0, asked=None) -> CraftContext:
    def surrogate(name, recipe=None):
        if asked is not None:
            asked.append((name, recipe))
        return model

    return CraftContext(num_classes=K, seed=seed, catalog=catalog, surrogate=surrogate)


def attack(images, labels, model, **cfg):
    return ops.functional_attack(model, images, labels, cfg=ops.AttackConfig(**cfg))


# ---- registration and plugin surface --------------------------------------------------------
def test_presets_registered_with_functional_threat_model(catalog):
    expected = {"FC": ["color"], "FCS": ["color", "flow"], "FCSD": ["color", "flow", "delta"]}
    for name, components in expected.items():
        poison = catalog.poisons.create(name)
        assert poison.params.components == components
        assert (poison.kind, poison.applied, poison.threat_model) == ("max", "sample", "functional")
        assert poison.budget() is None
        bounds = poison.manifest_extras()["component_bounds"]
        assert list(bounds) == components
    assert catalog.poisons.create("FCSD").manifest_extras()["component_bounds"] == {
        "color": 0.06, "flow": 0.05, "delta": 8 / 255}


def test_components_are_kept_in_composition_order(catalog):
    poison = catalog.poisons.create("functional", {"components": ["delta", "color"]})
    assert poison.params.components == ["color", "delta"]


def test_params_reject_bad_values(catalog):
    for bad in ({"components": []}, {"components": ["color", "color"]}, {"components": ["hue"]},
                {"lattice": [16, 32]}, {"flow_bound": 0}, {"steps": 0}):
        with pytest.raises(BadInput):
            catalog.poisons.create("functional", bad)


def test_unknown_surrogate_reported_and_recipe_in_cache_key(catalog):
    poison = catalog.poisons.create("FC", {"surrogate": "resnet81", "surrogate_epochs": 3})
    problems = poison.check_references(catalog)
    assert problems and problems[0][0] == "surrogate" and "resnet81" in problems[0][1]
    assert catalog.poisons.create("FC").check_references(catalog) == []
    extras = poison.cache_extras(CraftContext(num_classes=K, seed=0))
    assert extras["surrogate"]["victim"] == "resnet81"
    assert extras["surrogate"]["recipe"]["epochs"] == 3
    assert extras["surrogate"]["recipe"]["precision"] == "fp32"
    assert extras["crafting_precision"] == "fp32"  # auto on CPU


# ---- colour space and the lattice --------------------------------------------------------
def test_rgb_luv_round_trip():
    gen = torch.Generator().manual_seed(0)
    rgb = torch.rand(4, 3, 16, 16, generator=gen)  # every sRGB colour is in gamut
    rgb[0, :, 0, 0] = 0.0
    rgb[0, :, 0, 1] = 1.0
    luv = ops.rgb_to_luv(rgb)
    assert (ops.luv_to_rgb(luv) - rgb).abs().max() < SMOOTH
    grey = ops.rgb_to_luv(torch.full((1, 3, 1, 1), 0.5))  # grey sits on u* = v* = 0 (scaled 0.5)
    assert abs(grey[0, 1].item() - 0.5) < 1e-3 and abs(grey[0, 2].item() - 0.5) < 1e-3


def test_identity_lattice_is_exact_inside_the_lattice_box():
    """Trilinear interpolation reproduces the identity exactly for colours inside the lattice box
    (u*, v* in [-100, 100]); saturated colours outside it (u* reaches 175, v* -134 in sRGB) are
    clamped to the box border: that is the reference's index clamping, tested here for all."""
    gen = torch.Generator().manual_seed(1)
    rgb = torch.rand(2, 3, 16, 16, generator=gen)
    identity = ops.identity_lattice(2)
    mapped = ops.apply_lattice(identity, ops.lattice_grid(rgb))
    clamped = ops.luv_to_rgb(ops.rgb_to_luv(rgb).clamp(0, 1))
    assert (mapped - clamped).abs().max() < 1e-4
    assert (mapped - rgb).abs().max() > 0.05  # the border effect is real for saturated colours
    smooth = smooth_image()
    assert (ops.apply_lattice(ops.identity_lattice(1), ops.lattice_grid(smooth)) - smooth).abs().max() < SMOOTH


def test_projected_identity_lattice_documented_gamut_effect():
    """The attack starts from the *projected* identity: nodes outside the sRGB gamut are pulled
    inside (up to 0.06). Colours whose 8 neighbouring nodes are in gamut stay put (< 1e-4); the
    only victims in a grey ramp are the darkest and lightest slabs (L* < 100/15 or > 1400/15),
    where the gamut shrinks to the black/white point: measured max 0.0076 there (tolerance 0.01)."""
    identity = ops.identity_lattice(1)
    projected = identity.clone()
    ops.project_lattice_(projected, identity, 0.06)
    assert (projected - identity).abs().max() == pytest.approx(0.06, abs=1e-6)
    smooth = smooth_image()
    assert (ops.apply_lattice(projected, ops.lattice_grid(smooth)) - smooth).abs().max() < SMOOTH
    ramp = torch.linspace(0, 1, 256).view(1, 1, 1, 256).expand(1, 3, 1, 256)
    error = (ops.apply_lattice(projected, ops.lattice_grid(ramp)) - ramp).abs().amax(1).flatten()
    lum = ops.rgb_to_luv(ramp)[0, 0, 0]
    interior = (lum > 1 / 15) & (lum < 14 / 15)
    assert error[interior].max() < SMOOTH
    assert 1e-3 < error.max() < 0.01


def test_smoothness_penalties_match_a_direct_two_sided_sum():
    gen = torch.Generator().manual_seed(2)
    field = torch.randn(2, 3, 4, 5, 2, generator=gen)  # (N, H, W, 2) stands in for any grid
    flow = field[:, 0]

    def direct(grid, axes):  # Σ over axes, next and previous neighbour, edge-replicated
        total = torch.zeros(grid.shape[0])
        for axis in axes:
            n = grid.shape[axis]
            for idx in (torch.arange(1, n + 1).clamp(max=n - 1), torch.arange(-1, n - 1).clamp(min=0)):
                diff = grid.index_select(axis, idx) - grid
                total += (diff.pow(2).sum(-1) + 1e-10).sqrt().flatten(1).sum(1)
        return total

    assert torch.allclose(ops.flow_smoothness(flow), direct(flow, (1, 2)), rtol=1e-5)
    lattice = field.permute(0, 4, 1, 2, 3)  # (N, 2, 3, 4, 5): vectors along dim 1
    zero = torch.zeros_like(lattice)
    assert torch.allclose(ops.color_smoothness(lattice, zero),
                          direct(field, (1, 2, 3)), rtol=1e-5)


# ---- flow and delta ------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 1, 28, 28), (1, 3, 7, 12)])
def test_zero_flow_is_identity(shape):
    images = torch.rand(shape, generator=torch.Generator().manual_seed(3))
    n, _, h, w = shape
    identity = ops.identity_grid(n, h, w)
    moved = ops.apply_flow(images, torch.zeros(n, h, w, 2), identity)
    assert (moved - images).abs().max() < 1e-5  # float32 rounding of the grid (~2e-6 measured)


def test_flow_moves_content_by_the_expected_amount():
    images = torch.zeros(1, 1, 8, 8)
    images[0, 0, :, 4] = 1.0
    identity = ops.identity_grid(1, 8, 8)
    flow = torch.zeros(1, 8, 8, 2)
    flow[..., 0] = 2 / 8  # one pixel in grid units (align_corners=False: [-1, 1] spans 8 px)
    moved = ops.apply_flow(images, flow, identity)
    assert torch.allclose(moved[0, 0, :, 3], torch.ones(8)) and moved[0, 0, :, 4].abs().max() < 1e-6


# ---- the attack ----------------------------------------------------------------------------
def test_every_bound_holds_after_optimisation():
    gen = torch.Generator().manual_seed(4)
    images, labels = torch.rand(4, 3, 12, 12, generator=gen), torch.arange(4) % K
    images[0] = 0.0
    images[1] = 1.0
    result = attack(images, labels, tiny_model(), steps=5, lr=0.05)  # big steps: bounds must bind
    pert = result.perturbation
    lattice_move = (pert.lattice - pert.lattice_id).abs()
    assert lattice_move.max() <= 0.06 + 1e-6
    # Nodes may leave [0, 1] by up to the bound: the reference clamps to [0, 1], projects into
    # the gamut (whose u, v reach outside [0, 1]) and only then bounds the move.
    assert pert.lattice.min() >= -0.06 - 1e-6 and pert.lattice.max() <= 1.06 + 1e-6
    assert pert.flow.abs().max() <= 0.05 + 1e-6 and pert.flow.abs().max() > 0.04
    assert (pert.grid_id + pert.flow).abs().max() <= 1 + 1e-6
    assert pert.delta.abs().max() <= 8 / 255 + 1e-6 and pert.delta.abs().max() > 7 / 255
    assert result.images.min() >= 0 and result.images.max() <= 1


def test_cw_margin_decreases_over_iterations():
    gen = torch.Generator().manual_seed(5)
    images, labels = torch.rand(6, 3, 12, 12, generator=gen), torch.arange(6) % K
    model = tiny_model()
    result = attack(images, labels, model, steps=10, lr=0.01)
    clean = ops.cw_margin(model(images), labels).mean().item()
    assert result.margins[-1] < result.margins[0] - 0.1
    assert result.margins[-1] < clean - 0.1


def test_bf16_model_forward_runs_and_keeps_fp32_colour_math():
    gen = torch.Generator().manual_seed(9)
    images, labels = torch.rand(2, 3, 8, 8, generator=gen), torch.arange(2) % K
    result = attack(images, labels, tiny_model(), steps=2, precision="bf16")
    assert result.images.dtype == torch.float32 and all(abs(m) < 1e6 for m in result.margins)


def test_cw_margin_definition():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, -1.0]])
    assert ops.cw_margin(logits, torch.tensor([0, 2])).tolist() == [1.0, -6.0]  # no κ clamp


def test_gradients_reach_lattice_flow_and_delta():
    gen = torch.Generator().manual_seed(6)
    images, labels = torch.rand(3, 3, 10, 10, generator=gen), torch.arange(3) % K
    pert = ops.Perturbation(images, ops.AttackConfig())
    params = pert.parameters()
    assert len(params) == 3
    margin = ops.cw_margin(tiny_model()(pert.render()), labels).sum()
    for grad in torch.autograd.grad(margin, params):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_chunked_penalty_grads_equal_autograd():
    gen = torch.Generator().manual_seed(7)
    pert = ops.Perturbation(torch.rand(3, 3, 8, 8, generator=gen), ops.AttackConfig())
    with torch.no_grad():
        pert.lattice.add_(0.01 * torch.randn(pert.lattice.shape, generator=gen))
        pert.flow.add_(0.01 * torch.randn(pert.flow.shape, generator=gen))
    expected = torch.autograd.grad(pert.penalty().sum() * 0.05, [pert.lattice, pert.flow])
    for p in (pert.lattice, pert.flow):
        p.grad = torch.zeros_like(p)
    values = pert.add_penalty_grads(0.05)
    assert torch.allclose(values, pert.penalty().detach())
    for p, want in zip((pert.lattice, pert.flow), expected, strict=True):
        assert torch.allclose(p.grad, want, atol=1e-6)


@pytest.mark.parametrize("name,shape", [("FCSD", (28, 28, 1)), ("FCSD", (32, 32, 3)),
                                        ("FC", (32, 32, 3)), ("FCS", (28, 28, 1))])
def test_craft_shapes_determinism_and_surrogate_call(catalog, name, shape):
    data = tiny_split(shape, n=6)
    model, asked = tiny_model(shape[2]), []
    poison = catalog.poisons.create(name, {"steps": 3, "batch_size": 4, "lr": 0.01})
    first = poison.craft(data, ctx=context(catalog, model, asked=asked))
    again = poison.craft(data, ctx=context(catalog, model))
    assert first.dtype == torch.uint8 and first.shape == data.images.shape
    assert torch.equal(first, again)
    assert not torch.equal(first, data.images)
    assert asked[0][0] == "resnet18" and asked[0][1]["epochs"] == 40


def test_grayscale_stays_grey_and_one_channel():
    grey = torch.linspace(0.1, 0.9, 64).view(1, 1, 8, 8)
    pert = ops.Perturbation(grey, ops.AttackConfig(flow=False, delta=False))
    out = pert.render()
    assert out.shape == (1, 1, 8, 8)
    assert (out - grey).abs().max() < 1e-3  # projected identity on mid greys: no gamut effect


def test_colour_component_needs_one_or_three_channels(catalog):
    data = tiny_split((8, 8, 2), n=4)
    with pytest.raises(BadInput, match="1 or 3 channels"):
        catalog.poisons.create("FC").craft(data, ctx=context(catalog, tiny_model(2)))
    out = catalog.poisons.create("functional", {"components": ["flow", "delta"], "steps": 2}).craft(
        data, ctx=context(catalog, tiny_model(2)))
    assert out.shape == data.images.shape


# ---- optional oracle: the authors' package -------------------------------------------------
def test_colour_transform_matches_recoloradv_package(monkeypatch):
    """Compare with PyPI ``recoloradv`` 0.0.1 (Laidlaw's code) on the same lattice parameters.

    The only difference is our exact XYZ→sRGB matrix (theirs is rounded to 4 digits, ~1e-3 in
    RGB); with their rounded matrix patched in, the transform, the gamut projection and the
    smoothness agree to float precision."""
    pytest.importorskip("recoloradv")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from recoloradv import color_spaces, color_transformers, norms

        gen = torch.Generator().manual_seed(8)
        rgb = torch.rand(3, 3, 16, 16, generator=gen)
        identity = ops.identity_lattice(3)
        lattice = identity + 0.04 * torch.randn(identity.shape, generator=gen)
        space = color_spaces.CIELUVColorSpace()
        ref = color_transformers.FullSpatial(shape=rgb.shape, resolution_x=16, resolution_y=32,
                                             resolution_z=32, cspace=space, manual_gpu=False)
        with torch.no_grad():
            ref.xform_params.copy_(lattice.permute(0, 2, 3, 4, 1))
            theirs = space.to_rgb(ref(space.from_rgb(rgb)))
            ours = ops.apply_lattice(lattice, ops.lattice_grid(rgb))
            assert (ops.rgb_to_luv(rgb) - space.from_rgb(rgb)).abs().max() < 1e-6
            assert (ours - theirs).abs().max() < 2e-3
            rounded = ((3.2406, -1.5372, -0.4986), (-0.9689, 1.8758, 0.0415), (0.0557, -0.2040, 1.0570))
            monkeypatch.setattr(ops, "XYZ_TO_SRGB", rounded)
            ours = ops.apply_lattice(lattice, ops.lattice_grid(rgb))
            assert (ours - theirs).abs().max() < 1e-5
            ref.project_params("inf", [0.06] * 3)
            ops.project_lattice_(lattice, identity, 0.06)
            assert (ref.xform_params.permute(0, 4, 1, 2, 3) - lattice).abs().max() < 1e-5
            want = norms.smoothness(ref.xform_params - identity.permute(0, 2, 3, 4, 1))
            assert torch.allclose(ops.color_smoothness(lattice, identity), want, rtol=1e-4)
