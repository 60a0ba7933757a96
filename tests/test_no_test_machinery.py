"""Production code carries no test machinery: no ``unittest.mock``, no ``os._exit``, and no
environment variable whose name mentions TEST. Tests inject behaviour through arguments and
fixtures instead (a Ray task wrapper, a monkeypatched function in a forked child).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = [ROOT / "benchmark", ROOT / "plugins", ROOT / "examples" / "poisonbench-example-poison" / "src"]


def machinery(source: str, *, filename: str = "<string>") -> list[str]:
    """``file:line: what`` for each piece of test machinery in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        line = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            if any(n and (n == "unittest.mock" or n.startswith("unittest.mock.")) for n in names) or (
                    isinstance(node, ast.ImportFrom) and node.module == "unittest"
                    and any(a.name == "mock" for a in node.names)):
                found.append(f"{line}: imports unittest.mock")
        elif isinstance(node, ast.Attribute) and node.attr == "_exit" and getattr(node.value, "id", "") == "os":
            found.append(f"{line}: os._exit")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and re.fullmatch(r"(?:[A-Z0-9]+_)*TESTS?(?:_[A-Z0-9]+)*", node.value) and "_" in node.value:
            found.append(f"{line}: environment-style name {node.value!r}")
    return found


def sources() -> list[Path]:
    return sorted(p for folder in PRODUCTION for p in folder.rglob("*.py"))


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_test_machinery_in_production_code(path):
    assert machinery(path.read_text(), filename=str(path.relative_to(ROOT))) == []


@pytest.mark.parametrize("snippet", [
    "from unittest import mock",
    "import unittest.mock",
    "import os\nos._exit(1)",
    "import os\nos.environ.get('POISONBENCH_TEST_SKIP')",
])
def test_the_check_catches(snippet):
    assert machinery(snippet)


def test_the_check_leaves_ordinary_names_alone():
    assert machinery("LATEST_VERSION = 'x'\nTESTING = 1\nprint('TEST')") == []
