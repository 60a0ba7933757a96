"""Guards: every public plugin module is an entry point; every hook is documented with an example and tested."""

from __future__ import annotations

import inspect
import pathlib

import tomllib

import poisonbench.hookspecs as hookspecs

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT / "plugins").with_suffix("").parts
    return ".".join(("poisonbench", "plugins") + (parts[:-1] if parts[-1] == "__init__" else parts))


def test_every_plugin_module_with_hooks_is_an_entry_point():
    """A module under plugins/ that implements a catalog hook is listed, and every listed one exists."""
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["poisonbench"]
    listed = {value.split(":")[0] for value in table.values()}
    modules = {_module_name(p) for p in (ROOT / "plugins").rglob("*.py") if "poisonbench_register_" in p.read_text()}
    assert modules == listed, f"not listed: {modules - listed}; listed but missing: {listed - modules}"


def test_every_hook_is_documented_with_an_example_and_tested():
    tests_text = "\n".join(p.read_text() for p in (ROOT / "tests").glob("*.py") if p.name != "test_plugin_table.py")
    hooks = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("poisonbench_")]
    assert len(hooks) == 5
    for name in hooks:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert "Example::" in doc and "@hookimpl" in doc, f"{name} lacks an example"
        assert name in tests_text, f"{name} is not exercised by any test"
