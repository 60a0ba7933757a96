"""Untargeted TAP (plugins/adversarial/tap.py) and SEP (sep.py, sep_ops.py, crafting/surrogate_pool.py).

Steps are pinned against closed-form gradients of linear models; the checkpoint pool against the
plain surrogate and against an interrupted training.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from poisonbench.api import CraftContext, PreparedData, Split
from poisonbench.crafting import surrogate as sur
from poisonbench.plugins.adversarial import ops, sep_ops
from poisonbench.testing import check_poison, tiny_split

K, D = 4, 12  # classes, input size (3×2×2)


def linear(seed: int, hidden: int | None = None) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        layers = [nn.Flatten()] + ([nn.Linear(D, hidden, bias=False)] if hidden else [])
        model = nn.Sequential(*layers, nn.Linear(hidden or D, K))
    with torch.no_grad():
        model[-1].weight.mul_(10)
    return model.eval().requires_grad_(False)


def ce_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∇_x of the batch-mean CE of a Flatten → Linear model, in closed form."""
    w, b = model[1].weight, model[1].bias
    p = torch.softmax(x.flatten(1) @ w.T + b, 1)
    return ((p - F.one_hot(y, K).float()) @ w / len(y)).view_as(x)


def data(n: int = 8):
    x = torch.rand(n, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    x[0] = 1.0  # the box projection is part of the reference
    return x, torch.arange(n) % K


# -- TAP ----------------------------------------------------------------------------------------

def test_tap_step_ascends_the_true_label_loss_by_hand():
    model, (x, y) = linear(0), data()
    eps, alpha = 8 / 255, 2 / 255
    cfg = ops.AttackConfig(eps=eps, steps=1, step_size=alpha, objective="untargeted", channels_last=False)
    delta0 = (torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1) * eps
    delta, losses = ops.attack_batch(model, x, y, cfg=cfg, delta=delta0.clone())
    step = (delta0 + alpha * ce_grad(model, x + delta0, y).sign()).clamp(-eps, eps)
    assert torch.allclose(delta, (x + step).clamp(0, 1) - x, atol=1e-7)
    assert torch.allclose(losses, -F.cross_entropy(model(x + delta0), y, reduction="none"))  # pre-update


def test_tap_presets_and_restart_choice(catalog):
    tap, cpu = catalog.poisons.create("TAP"), catalog.poisons.create("TAP-cpu")
    cfg = tap.attack_config()
    assert (cfg.objective, cfg.steps, cfg.restarts, cfg.init, cfg.augment, cfg.batch_size) == \
        ("untargeted", 250, 8, "normal", True, 512)
    assert cfg.step_size == pytest.approx(0.05 * 8 / 255) and tap.params.surrogate == "resnet18"
    assert (cpu.params.surrogate, cpu.params.restarts, cpu.family, tap.kind) == ("small_cnn", 1, "tap", "max")
    assert tap.paper.year == 2021 and catalog.poisons.check("tap", {"target": "next"})[1]
    model, (x, y) = linear(0), data()
    images = (x.permute(0, 2, 3, 1) * 255).round().to(torch.uint8)
    cfg3 = ops.AttackConfig(eps=8 / 255, steps=2, step_size=1 / 255, restarts=3, objective="untargeted",
                            channels_last=False)
    delta, scores = ops.craft_perturbation(model, images, y, cfg=cfg3, seed=0)
    best = min(range(3), key=scores.__getitem__)  # lowest −CE = largest CE
    again, _ = ops.attack_set(model, images, y, cfg=cfg3, seed=0, restart=best, device=torch.device("cpu"))
    assert torch.equal(delta, again) and len(set(scores)) == 3


# -- SEP ----------------------------------------------------------------------------------------

class P:
    eps, step_size, steps, m_inner = 8 / 255, 1 / 255, 1, 1

    def __init__(self, **kw):
        self.__dict__.update(kw)


def project(x, x0, eps):
    return torch.minimum(torch.maximum(x, x0 - eps), x0 + eps).clamp(0, 1)


def test_sep_ce_step_descends_the_mean_target_gradient_by_hand():
    models, (x, y) = [linear(0), linear(1)], data()
    t = sep_ops.targets(y, K)
    assert t.tolist() == [2, 3, 0, 1, 2, 3, 0, 1]
    losses = [sep_ops.loss_fn("ce", m, None) for m in models]
    out = sep_ops.sep_batch(losses, x, t, p=P(variant="ce"), gen=torch.Generator())
    mean = (ce_grad(models[0], x, t) + ce_grad(models[1], x, t)) / 2
    assert torch.allclose(out, project(x - P.step_size * mean.sign(), x, P.eps), atol=1e-7)


def fa_grad(model, mu, x, t):
    """∇_x MSE(A x, μ[t]) = 2 Aᵀ(A x − μ[t]) / (B·h) for features A x (first linear, no bias)."""
    a = model[1].weight
    return (2 * (x.flatten(1) @ a.T - mu[t]) @ a / (len(t) * a.shape[0])).view_as(x)


def test_sep_fa_vr_step_and_centroids_by_hand():
    models, (x, y) = [linear(0, hidden=5), linear(1, hidden=5), linear(2, hidden=5)], data()
    images = (x.permute(0, 2, 3, 1) * 255).round().to(torch.uint8)
    x = images.permute(0, 3, 1, 2).float() / 255
    mus = [sep_ops.centroids(m, images, y, num_classes=K, batch_size=3, device=torch.device("cpu"))
           for m in models]
    feats = x.flatten(1) @ models[0][1].weight.T
    assert torch.allclose(mus[0][1], feats[y == 1].mean(0), atol=1e-6)
    t = sep_ops.targets(y, K)
    losses = [sep_ops.loss_fn("fa", m, mu) for m, mu in zip(models, mus, strict=True)]
    p = P(variant="fa_vr", m_inner=2, step_size=0.2, eps=0.5)  # large: the inner loop matters
    out = sep_ops.sep_batch(losses, x, t, p=p, gen=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    g = [fa_grad(m, mu, x, t) for m, mu in zip(models, mus, strict=True)]
    gbar = sum(g) / 3
    xv, acc = x, torch.zeros_like(x)
    for _ in range(2):  # SVRE: sampled checkpoint j with ITS centroids, corrected by g_j − ḡ
        j = int(torch.randint(3, (1,), generator=gen))
        acc = acc + fa_grad(models[j], mus[j], xv, t) - (g[j] - gbar)
        xv = project(xv - p.step_size * acc.sign(), x, p.eps)
    assert torch.allclose(out, project(x - p.step_size * acc.sign(), x, p.eps), atol=1e-7)
    plain = sep_ops.sep_batch(losses, x, t, p=P(variant="fa", step_size=0.2, eps=0.5), gen=torch.Generator())
    assert not torch.equal(out, plain)  # the inner loop changes the direction


def test_sep_params_and_presets(catalog):
    sep = catalog.poisons.create("SEP").params
    assert sep.checkpoint_epochs() == list(range(8, 121, 8)) and sep.models == 15
    assert (sep.variant, sep.steps, sep.step_size, sep.m_inner, sep.eps) == ("fa_vr", 30, 1 / 255, 16, 8 / 255)
    assert (sep.surrogate_epochs, sep.surrogate_milestones, sep.surrogate_nesterov) == (120, [75, 90], False)
    assert catalog.poisons.create("sep", {"variant": "ce"}).params.models == 30
    assert catalog.poisons.create("SEP-eps2").params.eps == pytest.approx(2 / 255)
    assert catalog.poisons.create("SEP-cpu").params.checkpoint_epochs() == [2, 4, 6]
    assert catalog.poisons.check("sep", {"num_models": 200})[1]


@pytest.mark.parametrize("name", ["TAP", "TAP-cpu", "SEP", "SEP-eps2", "SEP-cpu"])
def test_contract(name, catalog):
    check_poison(name, catalog=catalog)


# -- the checkpoint pool --------------------------------------------------------------------------

RECIPE = {"epochs": 4, "batch_size": 16, "milestones": [3]}


def prepared() -> PreparedData:
    train, test = tiny_split((8, 8, 1), n=48, seed=0), tiny_split((8, 8, 1), n=16, seed=1)
    return PreparedData(name="synthetic", train=train, test=test, val=None, num_classes=4,
                        class_names=list("abcd"), mean=(0.5,), std=(0.25,), fingerprint="fp-pool")


def ctx(catalog, root, progress=None) -> CraftContext:
    return CraftContext(num_classes=4, seed=0, catalog=catalog, cache_dir=root, progress=progress)


def same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_pool_last_checkpoint_is_the_plain_surrogate_and_resumes(catalog, tmp_path):
    data = prepared()
    pool = sur.make_provider(ctx(catalog, tmp_path / "a"), data)("small_cnn", RECIPE, checkpoints=[2, 4])
    plain = sur.make_provider(ctx(catalog, tmp_path / "a"), data)("small_cnn", RECIPE)
    assert len(pool) == 2 and same(pool[1], plain) and not same(pool[0], pool[1])

    class Stop(Exception):
        pass

    def stopping(description, total):  # dies right after the trainer reports epoch 3
        def advance(n=1, **fields):
            if str(fields.get("epoch", "")).startswith("3/"):
                raise Stop
        return advance

    with pytest.raises(Stop):
        sur.make_provider(ctx(catalog, tmp_path / "b", stopping), data)("small_cnn", RECIPE, checkpoints=[2, 4])
    epochs_run = []

    def counting(description, total):
        def advance(n=1, **fields):
            if "epoch" in fields:
                epochs_run.append(int(fields["epoch"].split("/")[0]))
        return advance

    resumed = sur.make_provider(ctx(catalog, tmp_path / "b", counting), data)("small_cnn", RECIPE,
                                                                             checkpoints=[2, 4])
    assert epochs_run == [4]  # continued after the last finished epoch
    assert same(resumed[0], pool[0]) and same(resumed[1], pool[1])
    assert not list((tmp_path / "b" / "craft-state").glob("*/train.ckpt"))


def test_sep_crafts_through_the_pool_and_resumes_batches(catalog, tmp_path):
    data = prepared()
    params = {"surrogate": "small_cnn", "surrogate_epochs": 2, "surrogate_batch_size": 16,
              "surrogate_milestones": [1], "num_models": 2, "steps": 2, "m_inner": 2, "batch_size": 16,
              "round_batches": 1}

    def craft(root, progress=None):
        context = ctx(catalog, root, progress)
        context.surrogate = sur.make_provider(context, data)
        return catalog.poisons.create("sep", params).craft(Split(data.train.images, data.train.labels),
                                                          ctx=context)

    whole = craft(tmp_path / "a")
    assert (whole.int() - data.train.images.int()).abs().max() <= 8

    class Stop(Exception):
        pass

    def stop_after_two(description, total):
        def advance(n=1, **fields):
            if fields.get("batch") == 2:
                raise Stop
        return advance

    with pytest.raises(Stop):
        craft(tmp_path / "b", stop_after_two)
    assert list((tmp_path / "b" / "craft-state").glob("*/state.safetensors"))
    assert torch.equal(craft(tmp_path / "b"), whole)
