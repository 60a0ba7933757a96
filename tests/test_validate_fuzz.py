"""Fuzzing `validate` with Hypothesis: 500+ generated malformed suites, each ends in exit 2 with located lines."""

from __future__ import annotations

import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import poisonbench.catalog
from poisonbench.cli import main

from .plugin_fixtures import test_catalog

LOCATED = re.compile(r"^\S+:\d+:\d+: .+$")
VALID = {
    "suite": "fuzz",
    "version": 1,
    "dataset": {"name": "tinyset", "train_subset": 10},
    "victims": ["tinynet"],
    "poisons": ["clean", "S4", {"name": "stripes", "params": {"width": 3}}],
    "defenses": ["early_stopping"],
    "seeds": [0],
    "train": {"epochs": 2, "lr": 0.1},
    "metrics": {"loss_threshold": 0.5},
}
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True),
                    st.text(max_size=8), st.just("5e-4"), st.just("-.inf"))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)
PATHS = [("suite",), ("version",), ("dataset",), ("dataset", "name"), ("dataset", "train_subset"),
         ("dataset", "val_split"), ("victims",), ("poisons",), ("poisons", 1), ("poisons", 2, "params"),
         ("poisons", 2, "params", "width"), ("defenses",), ("defenses", 0), ("seeds",), ("seeds", 0),
         ("train",), ("train", "epochs"), ("train", "lr"), ("train", "augment"), ("metrics",),
         ("metrics", "loss_threshold")]


def _mutated(path: tuple, value) -> dict:
    import copy

    suite = copy.deepcopy(VALID)
    target = suite
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return suite


def _is_valid(suite: dict) -> bool:
    from poisonbench.errors import ValidationFailed
    from poisonbench.suite import load_suite

    return not isinstance(_try(load_suite, suite, ValidationFailed), ValidationFailed)


def _try(fn, suite, exc):
    import pathlib
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "s.yaml"
        path.write_text(yaml.safe_dump(suite))
        try:
            return fn(path, test_catalog())
        except exc as err:
            return err


@pytest.fixture(scope="module", autouse=True)
def _fast_catalog():
    catalog = test_catalog()
    original = poisonbench.catalog.default_catalog
    poisonbench.catalog.default_catalog = lambda no_plugins=False: catalog
    yield
    poisonbench.catalog.default_catalog = original


def _validate_exit(tmp_path_factory, text: str | bytes, capsys) -> tuple[int, str]:
    path = tmp_path_factory.mktemp("fuzz") / "suite.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", str(path)])
    return exit_info.value.code, capsys.readouterr().err


def _assert_clean_rejection(code: int, err: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    *problems, summary = err.strip().splitlines()
    assert summary.endswith("nothing was run."), err
    assert problems and all(LOCATED.match(line) for line in problems), err


FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(path=st.sampled_from(PATHS), value=VALUES)
def test_mutated_fields(tmp_path_factory, capsys, path, value):
    suite = _mutated(path, value)
    text = yaml.safe_dump(suite, allow_unicode=True)
    code, err = _validate_exit(tmp_path_factory, text, capsys)
    if code == 0:  # the mutation happened to be valid (e.g. version: 3); then it must load
        assert _is_valid(suite)
        return
    _assert_clean_rejection(code, err)


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=st.one_of(st.text(max_size=80), st.binary(max_size=80)))
def test_garbage_text(tmp_path_factory, capsys, text):
    code, err = _validate_exit(tmp_path_factory, text, capsys)
    _assert_clean_rejection(code, err)  # nothing short and random is a whole valid suite


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(cut=st.integers(1, 200), junk=st.sampled_from(["", ":", "- ", "{", "]", "\t", "&a *b", "!!binary x"]))
def test_truncated_or_corrupted_suites(tmp_path_factory, capsys, cut, junk):
    text = yaml.safe_dump(VALID)
    broken = text[: min(cut, len(text) - 1)] + junk
    code, err = _validate_exit(tmp_path_factory, broken, capsys)
    if code == 0:
        return  # a cut that still leaves a complete, valid suite is fine
    _assert_clean_rejection(code, err)
