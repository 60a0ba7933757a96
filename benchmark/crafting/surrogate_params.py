"""What every surrogate-based poison shares: the ``surrogate_*`` params and a poison mixin.

P*/M* (plugins/adversarial) and FC* (plugins/functional) craft on a clean-trained surrogate. Their
``Params`` inherit ``SurrogateParams`` — the victim name and the training recipe, each field of
``SurrogateRecipe`` (crafting/surrogate.py) prefixed ``surrogate_`` with the same default
(``surrogate_epochs: 5`` overrides the 40-epoch default; a test checks the two stay equal) — and
their classes inherit ``UsesSurrogate`` for the reference check, the cache key and fetching the
trained model. Both are part of the plugin API (``poisonbench.api``). Import-light: no torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from poisonbench.errors import PoisonbenchError


@dataclass(frozen=True)
class SurrogateParams:
    """The surrogate victim and its recipe (``SurrogateRecipe``'s fields, prefixed ``surrogate_``)."""

    surrogate: str = "resnet18"
    surrogate_epochs: int = 40
    surrogate_batch_size: int = 128
    surrogate_lr: float = 0.1
    surrogate_momentum: float = 0.9
    surrogate_nesterov: bool = True
    surrogate_weight_decay: float = 5.0e-4
    surrogate_milestones: list[int] = field(default_factory=lambda: [14, 25, 35])  # epochs
    surrogate_gamma: float = 0.1
    surrogate_augment: list[str] = field(default_factory=lambda: ["crop", "flip"])
    surrogate_crop_padding: int = 4  # pixels of zero padding before the random crop
    surrogate_normalize: bool = True  # False: train on [0, 1] inputs
    surrogate_stats: Literal["auto", "dataset"] = "auto"  # auto: the dataset plugin's crafting statistics
    surrogate_precision: Literal["auto", "fp32", "bf16"] = "auto"


class UsesSurrogate:
    """Mixin for Poison classes whose ``params`` inherit ``SurrogateParams`` (and have ``precision``)."""

    params: Any

    def check_references(self, catalog) -> list[tuple[str, str]]:
        if self.params.surrogate in catalog.victims:
            return []
        return [("surrogate", "surrogate: " + catalog.victims.unknown_message(self.params.surrogate))]

    def cache_extras(self, ctx) -> dict:
        from poisonbench.crafting.surrogate import (
            FORMAT_VERSION,
            recipe_from_params,
            resolve_recipe,
        )
        from poisonbench.training.device import resolved_precision

        recipe = resolve_recipe(recipe_from_params(self.params))
        return {"surrogate": {"victim": self.params.surrogate, "format": FORMAT_VERSION,
                              "recipe": {**recipe_from_params(self.params),
                                         "precision": resolved_precision(recipe.precision, ctx.device)}},
                "crafting_precision": resolved_precision(self.params.precision, ctx.device)}

    def surrogate_model(self, ctx, label: str):
        """The trained surrogate from the harness, frozen (eval mode, no parameter gradients)."""
        from poisonbench.crafting.surrogate import freeze, recipe_from_params

        if ctx.surrogate is None:
            raise PoisonbenchError(f"poison '{label}' needs a trained surrogate, but the crafting "
                                   "context provides none (craft it through the harness)")
        return freeze(ctx.surrogate(self.params.surrogate, recipe_from_params(self.params)))
