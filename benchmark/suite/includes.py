"""Suite ``include:`` files: load a YAML file and deep-merge the files it includes (this file wins).

Includes are confined to the including suite's folder tree, may nest up to ``MAX_INCLUDE_DEPTH``
files and may not form a cycle; every problem is collected with its ``file:line:col`` mark.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from poisonbench.errors import BadInput, Problem
from poisonbench.suite.yaml_marks import Mark, MarkedDict, MarkedList, YamlProblem, load_marked_yaml
from poisonbench.util.paths import confine

MAX_INCLUDE_DEPTH = 8


def deep_merge(base: Any, top: Any) -> Any:
    """Mappings merge recursively (``top`` wins); anything else is replaced by ``top``."""
    if isinstance(base, MarkedDict) and isinstance(top, MarkedDict):
        merged = MarkedDict(base)
        merged.mark = top.mark
        merged.key_marks = {**base.key_marks, **top.key_marks}
        merged.value_marks = {**base.value_marks, **top.value_marks}
        for key, value in top.items():
            merged[key] = deep_merge(base[key], value) if key in base else value
        return merged
    return top


def load_with_includes(path: Path, root: Path, problems: list[Problem], stack: tuple[Path, ...]) -> Any:
    try:
        data = load_marked_yaml(path, display=display_path(path))
    except YamlProblem as err:
        problems.append(err.problem)
        return None
    if data is None:
        problems.append(Problem(display_path(path), 1, 1, "empty suite file"))
        return None
    if not isinstance(data, MarkedDict):
        mark = getattr(data, "mark", Mark(display_path(path), 1, 1))
        problems.append(mark.problem(f"a suite must be a mapping of keys, got {type(data).__name__}"))
        return None
    include = data.pop("include", None)
    if include is None:
        return data
    inc_mark = data.value_marks.get("include", data.mark)
    names = include if isinstance(include, list) else [include]
    merged: Any = None
    for i, name in enumerate(names):
        mark = include.item_marks[i] if isinstance(include, MarkedList) else inc_mark
        if not isinstance(name, str) or not name:
            problems.append(mark.problem("include: expected a file name"))
            continue
        try:
            target = confine(name, base=path.parent, roots=[root])
        except BadInput as err:
            problems.append(mark.problem(f"include: {err}"))
            continue
        if target in stack or len(stack) >= MAX_INCLUDE_DEPTH:
            problems.append(mark.problem(f"include: '{name}' would include itself (cycle)"))
            continue
        if not target.is_file():
            problems.append(mark.problem(f"include: file '{name}' not found"))
            continue
        base = load_with_includes(target, root, problems, stack + (target,))
        if base is not None:
            merged = base if merged is None else deep_merge(merged, base)
    return data if merged is None else deep_merge(merged, data)


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
