"""Checkpoints of one surrogate training, cached one per epoch: the model pool of ensemble poisons (SEP).

``checkpoint_models(ctx, data, victim_name, recipe, epochs)`` (what ``ctx.surrogate(victim, recipe,
checkpoints=[...])`` calls) returns the surrogate's weights at the end of each requested epoch
(1-based) of ONE training with ``recipe`` — the run ``surrogate.train_surrogate`` does, so the last
epoch's weights equal the ordinary cached surrogate of that recipe. Every checkpoint is its own
cache entry under ``<cache>/surrogates/``, keyed by the surrogate's key material plus
``checkpoint_epoch``, written (atomic rename) as soon as its epoch ends.

Resuming: while the pool trains, the trainer's own per-epoch checkpoint (model, optimiser,
scheduler, RNG) is kept at ``<cache>/craft-state/surrogate-pool-<key>/train.ckpt``; an interrupted
training continues from its last finished epoch, bit-identically, and the folder is removed once
every checkpoint is cached. A lock in that folder keeps two processes from training the same pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poisonbench.errors import BadInput, PoisonbenchError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from poisonbench.api import CraftContext, PreparedData
    from poisonbench.crafting.surrogate import SurrogateRecipe


def checkpoint_models(ctx: CraftContext, data: PreparedData, victim_name: str, recipe: SurrogateRecipe,
                      epochs: Sequence[int], *, cache_root: Path) -> list[nn.Module]:
    """Frozen surrogates (on ctx.device) at the end of each of ``epochs`` of one training with ``recipe``."""
    from poisonbench.crafting.cache import ArtifactCache
    from poisonbench.crafting.surrogate import _load, build_surrogate, freeze, key_material

    wanted = sorted({int(e) for e in epochs})
    if not wanted or wanted[0] < 1 or wanted[-1] > recipe.epochs:
        raise BadInput(f"surrogate checkpoints {list(epochs)} are outside epochs 1..{recipe.epochs}")
    base = key_material(ctx, data, victim_name, recipe)
    cache = ArtifactCache(cache_root)
    material = {e: {**base, "checkpoint_epoch": e} for e in wanted}
    if any(not cache.path_for("surrogates", material[e]).is_file() for e in wanted):
        _train_pool(ctx, data, victim_name, recipe, base, material, cache)
    models = []
    for e in epochs:
        path = cache.get_or_create(material[int(e)], _vanished(int(e)), kind="surrogates")
        models.append(freeze(_load(build_surrogate(ctx, data, victim_name, base), path, ctx.device)))
    return models


def _train_pool(ctx, data, victim_name: str, recipe, base: dict[str, Any], material: dict[int, dict],
                cache) -> None:
    """One training of ``recipe`` (resumed from its checkpoint when present), caching each wanted epoch."""
    import shutil

    from filelock import FileLock

    from poisonbench.crafting.cache import cache_key
    from poisonbench.crafting.surrogate import _save, _stats, build_net, normalized, train_surrogate
    from poisonbench.training.device import derive_seed

    run_dir = Path(cache.root) / "craft-state" / f"surrogate-pool-{cache_key(base)[:24]}"
    run_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(run_dir / "lock")):
        if all(cache.path_for("surrogates", m).is_file() for m in material.values()):
            return  # another process finished it while we waited
        net = build_net(ctx, data, victim_name)
        wrapped = normalized(net, _stats(base), channels=data.train.image_shape[2])  # shares net's tensors
        label = f"surrogate {victim_name} (checkpoints {', '.join(str(e) for e in material)})"
        _snapshot_resume_point(run_dir / "train.ckpt", net, wrapped, material, cache, _save)

        def progress(_description: str, total: int):
            bar = ctx.advance_bar(label, total)

            def advance(n: int = 1, **fields: Any) -> None:
                bar(n, **fields)
                epoch = int(str(fields["epoch"]).split("/")[0]) if "epoch" in fields else None
                if epoch in material:  # the trainer reports an epoch after its weights are final
                    cache.get_or_create(material[epoch], lambda tmp: _save(wrapped, tmp, material[epoch]),
                                        kind="surrogates")
            return advance

        # The same seed as the plain surrogate provider, so the last epoch equals that surrogate.
        train_surrogate(net, data, recipe=recipe, stats=_stats(base), seed=derive_seed(ctx.seed, "surrogate"),
                        device=ctx.device, progress=progress, checkpoint_path=run_dir / "train.ckpt")
    missing = [e for e, m in material.items() if not cache.path_for("surrogates", m).is_file()]
    if missing:
        raise PoisonbenchError(f"surrogate training ended without checkpoints of epochs {missing} "
                               f"(delete {run_dir} and run again)")
    shutil.rmtree(run_dir, ignore_errors=True)


def _snapshot_resume_point(ckpt: Path, net, wrapped, material: dict[int, dict], cache, save) -> None:
    """A kill between the trainer's checkpoint and our snapshot of that epoch: take it from the checkpoint."""
    if not ckpt.is_file():
        return
    from poisonbench.training.checkpoint import read_checkpoint

    header, tensors = read_checkpoint(ckpt)
    epoch = int(header["state"]["epoch"])
    if epoch in material and not cache.path_for("surrogates", material[epoch]).is_file():
        net.load_state_dict({k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")})
        cache.get_or_create(material[epoch], lambda tmp: save(wrapped, tmp, material[epoch]), kind="surrogates")


def _vanished(epoch: int):
    def create(tmp: Path) -> None:
        raise PoisonbenchError(f"the surrogate checkpoint of epoch {epoch} vanished from the cache while in use")
    return create
