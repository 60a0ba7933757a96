"""What every surrogate-based poison shares: the ``surrogate_*`` params and a poison mixin.

P*/M* (plugins/adversarial) and FC* (plugins/functional) craft on a clean-trained surrogate. Their
``Params`` inherit ``SurrogateParams`` — the victim name and the training recipe — and their classes
inherit ``UsesSurrogate`` for the reference check, the cache key and fetching the trained model.
Both are part of the plugin API (``poisonbench.api``). Import-light: no torch here.

``SurrogateParams`` is derived from ``SurrogateRecipe`` (crafting/surrogate.py, the victim protocol
``TrainConfig`` with the surrogate's defaults), not written out again: every recipe field a poison
may set becomes ``surrogate_<field>`` with the recipe's type and default (``surrogate_epochs: 5``
in a suite overrides the 40-epoch default), so a field added to the recipe reaches every
surrogate-based poison. The recipe's units and meanings are documented on its fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any, Literal  # noqa: F401 -- Literal: the recipe's string annotations resolve here

from poisonbench.crafting.surrogate import PARAM_PREFIX, SurrogateRecipe
from poisonbench.errors import PoisonbenchError

# Recipe fields that are the harness's business (evaluation batch, compilation, device), not the
# poison's: they are not offered as ``surrogate_*`` params.
NOT_PARAMS = ("eval_batch_size", "compile", "device")


def _prefixed(f: dataclasses.Field) -> tuple[str, Any, dataclasses.Field]:
    """``surrogate_<name>`` with the recipe field's type and default."""
    if f.default_factory is not dataclasses.MISSING:
        return PARAM_PREFIX + f.name, f.type, field(default_factory=f.default_factory)
    return PARAM_PREFIX + f.name, f.type, field(default=f.default)


SurrogateParams = dataclasses.make_dataclass(
    "SurrogateParams",
    [("surrogate", str, field(default="resnet18")),  # victim-registry name of the surrogate
     *(_prefixed(f) for f in dataclasses.fields(SurrogateRecipe) if f.name not in NOT_PARAMS)],
    frozen=True,
    namespace={"__module__": __name__,
               "__doc__": "The surrogate victim and its recipe (``SurrogateRecipe``'s fields, prefixed "
                          "``surrogate_``)."},
)


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

    def surrogate_model(self, ctx, label: str, *, checkpoints: list[int] | None = None):
        """The trained surrogate from the harness, frozen (eval mode, no parameter gradients).

        With ``checkpoints`` (1-based epochs): the list of its weights at the end of those epochs
        of one training (an ensemble of checkpoints), each frozen.
        """
        from poisonbench.crafting.surrogate import freeze, recipe_from_params

        if ctx.surrogate is None:
            raise PoisonbenchError(f"poison '{label}' needs a trained surrogate, but the crafting "
                                   "context provides none (craft it through the harness)")
        recipe = recipe_from_params(self.params)
        if checkpoints is None:
            return freeze(ctx.surrogate(self.params.surrogate, recipe))
        return [freeze(m) for m in ctx.surrogate(self.params.surrogate, recipe, checkpoints=checkpoints)]
