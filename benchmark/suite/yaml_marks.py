"""A safe YAML loader that remembers where every key and value came from and rejects duplicate keys.

Mappings load as ``MarkedDict`` and sequences as ``MarkedList``; both keep ``Mark``s (file, 1-based
line and column) for their keys/items, so any later problem can be reported as ``file:line:col``.
Only ``yaml.SafeLoader`` constructors are used: no Python objects can be built from a suite file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from poisonbench.errors import Problem


@dataclass(frozen=True)
class Mark:
    path: str
    line: int
    col: int

    def problem(self, message: str) -> Problem:
        return Problem(self.path, self.line, self.col, message)


class MarkedDict(dict):
    """A dict with ``key_marks[key]`` and ``value_marks[key]``, plus ``mark`` for the mapping itself."""

    mark: Mark
    key_marks: dict
    value_marks: dict


class MarkedList(list):
    """A list with ``item_marks[i]`` and ``mark`` for the sequence itself."""

    mark: Mark
    item_marks: list


class YamlProblem(Exception):
    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


def _mark(node_mark, path: str) -> Mark:
    return Mark(path, node_mark.line + 1, node_mark.column + 1)


def _make_loader(path: str):
    class Loader(yaml.SafeLoader):
        pass

    def construct_mapping(loader, node, deep=False):
        loader.flatten_mapping(node)
        result = MarkedDict()
        result.mark = _mark(node.start_mark, path)
        result.key_marks, result.value_marks = {}, {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise YamlProblem(_mark(key_node.start_mark, path).problem("mapping key is not a scalar")) from None
            if key in result:
                first = result.key_marks[key]
                raise YamlProblem(
                    _mark(key_node.start_mark, path).problem(f"duplicate key '{key}' (first at line {first.line})")
                )
            result[key] = loader.construct_object(value_node, deep=True)
            result.key_marks[key] = _mark(key_node.start_mark, path)
            result.value_marks[key] = _mark(value_node.start_mark, path)
        return result

    def construct_sequence(loader, node, deep=False):
        result = MarkedList(loader.construct_object(child, deep=True) for child in node.value)
        result.mark = _mark(node.start_mark, path)
        result.item_marks = [_mark(child.start_mark, path) for child in node.value]
        return result

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, construct_sequence)
    # YAML 1.1 reads "5e-4" as a string; suites mean a number (docs/formats.md): widen the float regex.
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        __import__("re").compile(
            r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
            |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
            |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
            |[-+]?\.(?:inf|Inf|INF)
            |\.(?:nan|NaN|NAN))$""",
            __import__("re").X,
        ),
        list("-+0123456789."),
    )
    return Loader


def load_marked_yaml(path: Path, display: str | None = None):
    """Parse one YAML file; raise ``YamlProblem`` (one located problem) when it cannot be read."""
    shown = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise YamlProblem(Problem(shown, 1, 1, "file not found")) from None
    except IsADirectoryError:
        raise YamlProblem(Problem(shown, 1, 1, "is a directory, not a suite file")) from None
    except UnicodeDecodeError as err:
        raise YamlProblem(Problem(shown, 1, 1, f"not UTF-8 text ({err.reason})")) from None
    except OSError as err:
        raise YamlProblem(Problem(shown, 1, 1, f"cannot read: {err.strerror}")) from None
    try:
        loader = _make_loader(shown)(text)  # a SafeLoader subclass: no Python objects are built
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except YamlProblem:
        raise
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlProblem(Problem(shown, line, col, f"invalid YAML: {err.problem or err.context}")) from None
    except yaml.YAMLError as err:
        raise YamlProblem(Problem(shown, 1, 1, f"invalid YAML: {err}")) from None
    except RecursionError:
        raise YamlProblem(Problem(shown, 1, 1, "invalid YAML: nested too deeply")) from None
