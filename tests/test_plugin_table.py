"""Guards: every public plugin module is an entry point; every hook is documented with an example and tested."""

from __future__ import annotations

import inspect
import pathlib

import tomllib

import poisonbench.hookspecs as hookspecs

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_public_plugin_module_is_an_entry_point():
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["poisonbench"]
    listed = {value.split(":")[0] for value in table.values()}
    modules = {f"poisonbench.plugins.{p.stem}" for p in (ROOT / "plugins").glob("*.py")
               if not p.stem.startswith("_")}
    assert modules == listed, f"not listed: {modules - listed}; listed but missing: {listed - modules}"


def test_every_hook_is_documented_with_an_example_and_tested():
    tests_text = "\n".join(p.read_text() for p in (ROOT / "tests").glob("*.py") if p.name != "test_plugin_table.py")
    hooks = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("poisonbench_")]
    assert len(hooks) == 5
    for name in hooks:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert "Example::" in doc and "@hookimpl" in doc, f"{name} lacks an example"
        assert name in tests_text, f"{name} is not exercised by any test"
