"""The pluggy hook specifications of poisonbench: four catalog hooks and one observer hook.

A plugin is a module (or object) with functions named like these hooks, decorated with
``poisonbench.hookimpl``, and listed in its distribution's entry points::

    [project.entry-points.poisonbench]
    my_poisons = "my_package.poisons"

Catalog hooks receive a ``register`` callable (llm/tox style) and call it once per name.
Behaviour lives in the registered classes; hooks only say what exists.
tests/test_plugin_table.py checks that every hook here is documented with an example and tested.
"""

from __future__ import annotations

import pluggy

PROJECT = "poisonbench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def poisonbench_register_poisons(register):
    """Register poison classes and presets.

    ``register(cls, name=None, *, params=None, description="")``: ``cls`` subclasses
    ``poisonbench.api.Poison``; without ``name`` the class's own ``name`` is used; with
    ``name`` and ``params`` it registers a preset (a name bound to the class plus defaults).

    Example::

        @hookimpl
        def poisonbench_register_poisons(register):
            register(Regions)                                   # the family itself: 'regions'
            register(Regions, "R4", params={"regions": 4})      # a Table 1 preset

    ``poisonbench.api.register_presets(register, Regions, {"R4": ({"regions": 4}, "4 regions")})``
    does both: the class under its own name, then each ``name: (params, description)`` preset.
    """


@hookspec
def poisonbench_register_defenses(register):
    """Register defense classes (subclasses of ``poisonbench.api.Defense``).

    Example::

        @hookimpl
        def poisonbench_register_defenses(register):
            register(EarlyStopping)
    """


@hookspec
def poisonbench_register_victims(register):
    """Register victim architectures (subclasses of ``poisonbench.api.Victim``).

    ``register(cls, prefix="timm", prefix_param="arch")`` answers every name ``timm:<arch>``.

    Example::

        @hookimpl
        def poisonbench_register_victims(register):
            register(CifarResNet18)                              # 'resnet18'
            register(TimmVictim, prefix="timm", prefix_param="arch")
    """


@hookspec
def poisonbench_register_datasets(register):
    """Register dataset sources (subclasses of ``poisonbench.api.Dataset``).

    Example::

        @hookimpl
        def poisonbench_register_datasets(register):
            register(FashionMNIST)
    """


@hookspec
def poisonbench_cell_finished(record):
    """Observe one finished cell; ``record`` is the dict written to ``cells.jsonl``.

    Observers cannot change results: they receive a deep copy, and their return value is ignored.
    An observer that raises is reported by name and does not fail the run.

    Example::

        @hookimpl
        def poisonbench_cell_finished(record):
            print(record["cell_id"], record["metrics"]["peak_test_acc"])
    """
