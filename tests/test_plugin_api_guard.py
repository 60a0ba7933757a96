"""Built-in plugins and the example plugin import only the declared plugin API.

The declared API is ``poisonbench.api``, ``poisonbench.hookspecs``, ``poisonbench.testing`` and
``poisonbench.errors`` (plus a family's own modules under ``poisonbench.plugins``). Anything else a
plugin needs from the core is re-exported by ``poisonbench.api``; reaching past it is what this test
catches, by reading every import statement (also those inside functions) with ``ast``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {"poisonbench.api", "poisonbench.hookspecs", "poisonbench.testing", "poisonbench.errors"}
CHECKED = [ROOT / "plugins", ROOT / "examples"]


def forbidden_imports(source: str, *, filename: str = "<string>") -> list[str]:
    """``file:line: module`` for every import of a core module outside the declared API."""
    problems = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            base = node.module
            # ``from poisonbench import api`` names the submodules it imports
            targets = [f"{base}.{alias.name}" for alias in node.names] if base == "poisonbench" else [base]
        else:
            continue  # relative imports stay inside the plugin package
        for target in targets:
            if not (target == "poisonbench" or target.startswith("poisonbench.")):
                continue
            if target.startswith("poisonbench.plugins") or any(
                    target == ok or target.startswith(ok + ".") for ok in ALLOWED):
                continue
            problems.append(f"{filename}:{node.lineno}: {target}")
    return problems


def plugin_sources() -> list[Path]:
    return sorted(p for folder in CHECKED for p in folder.rglob("*.py"))


def test_there_are_sources_to_check():
    names = {p.relative_to(ROOT).parts[0] for p in plugin_sources()}
    assert names == {"plugins", "examples"}


@pytest.mark.parametrize("path", plugin_sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_plugin_imports_only_the_declared_api(path):
    problems = forbidden_imports(path.read_text(), filename=str(path.relative_to(ROOT)))
    assert not problems, ("plugins import only poisonbench.api/hookspecs/testing/errors; add a "
                          "re-export to poisonbench.api instead of reaching into the core:\n"
                          + "\n".join(problems))


@pytest.mark.parametrize("line", [
    "from poisonbench.crafting.surrogate import derive_seed",
    "import poisonbench.data",
    "from poisonbench import runner",
    "def f():\n    from poisonbench.util.paths import confine",
    "import poisonbench",
])
def test_guard_flags_core_imports(line):
    assert forbidden_imports(line)


@pytest.mark.parametrize("line", [
    "from poisonbench.api import Poison, derive_seed",
    "from poisonbench import api, errors",
    "from poisonbench.plugins.synthetic.ops import regions_delta",
    "from . import ops",
    "import torch",
])
def test_guard_allows_the_api(line):
    assert forbidden_imports(line) == []


def test_importing_the_api_imports_no_torch_and_every_name_resolves():
    import subprocess
    import sys

    code = ("import sys, poisonbench.api as a\n"
            "light = 'torch' not in sys.modules\n"
            "a.SurrogateParams, a.UsesSurrogate, a.derive_seed, a.export_uint8, a.atomic_write_json\n"
            "print(light, 'torch' not in sys.modules, all(hasattr(a, n) for n in a.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "True"]  # helpers load torch only when they run
