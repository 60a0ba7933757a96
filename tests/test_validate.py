"""`poisonbench validate`: every malformed suite exits 2 with one located line per problem; good ones pass."""

from __future__ import annotations

import re

import pytest

import poisonbench.catalog
from poisonbench.cli import cli
from poisonbench.errors import ValidationFailed
from poisonbench.suite import load_suite

from .plugin_fixtures import test_catalog

GOOD = """\
suite: t
version: 1
dataset: {name: tinyset, train_subset: 100}
victims: [tinynet]
poisons:
  - clean
  - S4
  - {name: stripes, params: {width: 3}}
defenses: [early_stopping, none]
seeds: [0, 1]
train: {epochs: 2, lr: 5e-2, milestones: [1]}
metrics: {loss_threshold: 0.5}
"""

LOCATED = re.compile(r"^\S+:\d+:\d+: .+$")

# (case id, suite text or {file: text} for includes, fragment expected in the output)
BAD_SUITES = [
    ("bad-yaml", "suite: [t\n", "invalid YAML"),
    ("tab-indent", "suite: t\n\tversion: 1\n", "invalid YAML"),
    ("empty-file", "", "empty suite file"),
    ("only-comment", "# nothing\n", "empty suite file"),
    ("not-a-mapping", "- a\n- b\n", "must be a mapping"),
    ("scalar-file", "just text\n", "must be a mapping"),
    ("unknown-top-key", GOOD + "poison: [R4]\n", "unknown key 'poison' (did you mean 'poisons'?)"),
    ("duplicate-key", GOOD + "seeds: [3]\n", "duplicate key 'seeds'"),
    ("duplicate-nested-key", GOOD.replace("{epochs: 2,", "{epochs: 2, epochs: 3,"), "duplicate key 'epochs'"),
    ("missing-poisons", GOOD.replace("poisons:\n  - clean\n  - S4\n  - {name: stripes, params: {width: 3}}\n", ""), "missing required key 'poisons'"),
    ("unknown-poison", GOOD.replace("  - S4\n", "  - S5\n"), "unknown poison 'S5'"),
    ("unknown-victim", GOOD.replace("[tinynet]", "[tinynett]"), "unknown victim 'tinynett'. Did you mean: tinynet?"),
    ("unknown-defense", GOOD.replace("[early_stopping, none]", "[early_stop]"), "unknown defense 'early_stop'. Did you mean: early_stopping?"),
    ("unknown-dataset", GOOD.replace("name: tinyset", "name: tinyst"), "unknown dataset 'tinyst'"),
    ("unknown-param", GOOD.replace("{width: 3}", "{widht: 3}"), "unknown param 'widht' (did you mean 'width'?)"),
    ("wrong-param-type", GOOD.replace("{width: 3}", "{width: three}"), "param 'width': expected an integer"),
    ("float-for-int", GOOD.replace("{width: 3}", "{width: 3.5}"), "expected an integer"),
    ("bool-for-int", GOOD.replace("{width: 3}", "{width: true}"), "expected an integer"),
    ("wrong-train-type", GOOD.replace("epochs: 2", "epochs: two"), "train: param 'epochs': expected an integer"),
    ("unknown-train-key", GOOD.replace("lr: 5e-2", "learning_rate: 5e-2"), "unknown param 'learning_rate'"),
    ("negative-epochs", GOOD.replace("epochs: 2", "epochs: -1"), "epochs must be positive"),
    ("bad-augment", GOOD.replace("milestones: [1]", "augment: [crop, rotate]"), "unknown augmentation 'rotate'"),
    ("bad-defense-param", GOOD.replace("[early_stopping, none]", "[{name: early_stopping, params: {select: best}}]"), "expected one of 'test', 'val'"),
    ("val-without-split", GOOD.replace("[early_stopping, none]", "[{name: early_stopping, params: {select: val}}]"), "dataset.val_split is 0"),
    ("seeds-not-list", GOOD.replace("seeds: [0, 1]", "seeds: zero"), "seeds: expected a non-empty list"),
    ("duplicate-seed", GOOD.replace("seeds: [0, 1]", "seeds: [1, 1]"), "seeds: 1 is listed twice"),
    ("negative-seed", GOOD.replace("seeds: [0, 1]", "seeds: [-3]"), "expected a non-negative integer"),
    ("poison-listed-twice", GOOD.replace("  - S4\n", "  - S4\n  - S4\n"), "'S4' is listed twice"),
    ("poisons-not-list", GOOD.replace("poisons:\n  - clean\n  - S4\n  - {name: stripes, params: {width: 3}}\n", "poisons: clean\n"), "poisons: expected a non-empty list"),
    ("empty-poisons", GOOD.replace("poisons:\n  - clean\n  - S4\n  - {name: stripes, params: {width: 3}}\n", "poisons: []\n"), "poisons: expected a non-empty list"),
    ("poison-bad-item", GOOD.replace("  - S4\n", "  - 42\n"), "expected a name or {name, params}"),
    ("poison-extra-key", GOOD.replace("{name: stripes, params: {width: 3}}", "{name: stripes, parms: {width: 3}}"), "unknown key 'parms'"),
    ("params-not-mapping", GOOD.replace("{width: 3}", "[3]"), "params must be a mapping"),
    ("dataset-not-mapping", GOOD.replace("{name: tinyset, train_subset: 100}", "[tinyset]"), "dataset: expected a name or a mapping"),
    ("dataset-bad-subset", GOOD.replace("train_subset: 100", "train_subset: 0"), "train_subset must be positive"),
    ("dataset-unknown-param", GOOD.replace("train_subset: 100", "sise: 3"), "unknown param 'sise' (did you mean 'size'?)"),
    ("version-not-int", GOOD.replace("version: 1", "version: one"), "version: expected a positive integer"),
    ("suite-name-empty", GOOD.replace("suite: t", "suite: ''"), "suite: expected a non-empty name"),
    ("train-not-mapping", GOOD.replace("train: {epochs: 2, lr: 5e-2, milestones: [1]}", "train: fast"), "train: expected a mapping"),
    ("metrics-wrong-type", GOOD.replace("loss_threshold: 0.5", "loss_threshold: low"), "expected a number"),
    ("nan-number", GOOD.replace("lr: 5e-2", "lr: .nan"), "expected a finite number"),
    ("python-tag", GOOD + "description: !!python/object/apply:os.system ['true']\n", "invalid YAML"),
    ("include-missing", "include: nope.yaml\n" + GOOD, "include: file 'nope.yaml' not found"),
    ("include-escape", "include: ../../etc/passwd\n" + GOOD, "escapes the allowed folders"),
    ("include-cycle", {"main.yaml": "include: base.yaml\n" + GOOD, "base.yaml": "include: main.yaml\nseeds: [0]\n"}, "cycle"),
    ("include-bad-yaml", {"main.yaml": "include: base.yaml\n" + GOOD, "base.yaml": "train: {epochs: [\n"}, "base.yaml:"),
    ("include-not-string", "include: 3\n" + GOOD, "include: expected a file name"),
    ("binary-file", b"\xff\xfe\x00suite", "not UTF-8"),
]


def _write(tmp_path, content):
    files = content if isinstance(content, dict) else {"main.yaml": content}
    for name, text in files.items():
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
    return tmp_path / "main.yaml"


@pytest.fixture
def use_test_catalog(monkeypatch):
    catalog = test_catalog()
    monkeypatch.setattr(poisonbench.catalog, "default_catalog", lambda no_plugins=False: catalog)
    return catalog


def test_good_suite_validates(tmp_path, cli_runner, use_test_catalog):
    path = _write(tmp_path, GOOD)
    result = cli_runner.invoke(cli, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    suite = load_suite(path, use_test_catalog)
    assert suite.train.lr == 0.05 and suite.train.epochs == 2  # "5e-2" is a number
    assert len(suite.cells()) == 3 * 1 * 2 * 2
    assert len({c.cell_id for c in suite.cells()}) == len(suite.cells())


def test_include_is_deep_merged_and_this_file_wins(tmp_path, use_test_catalog):
    base = "suite: base\ndataset: {name: tinyset, train_subset: 50}\nvictims: [tinynet]\ntrain: {epochs: 9, lr: 0.2}\n"
    main = "include: base.yaml\nsuite: child\npoisons: [clean]\ntrain: {epochs: 3}\n"
    path = _write(tmp_path, {"main.yaml": main, "base.yaml": base})
    suite = load_suite(path, use_test_catalog)
    assert (suite.name, suite.train.epochs, suite.train.lr, suite.dataset.train_subset) == ("child", 3, 0.2, 50)


@pytest.mark.parametrize("case,content,expected", BAD_SUITES, ids=[c[0] for c in BAD_SUITES])
def test_malformed_suite_exits_2_with_located_lines(tmp_path, cli_runner, use_test_catalog, case, content, expected):
    path = _write(tmp_path, content)
    result = cli_runner.invoke(cli, ["validate", str(path)])
    # The CLI's main() maps errors to exit codes; CliRunner.invoke calls the group, so check the exception.
    assert isinstance(result.exception, ValidationFailed), (case, result.output, result.exception)
    message = str(result.exception)
    assert "Traceback" not in message
    *problem_lines, summary = message.splitlines()
    assert summary.endswith("nothing was run.")
    assert problem_lines and all(LOCATED.match(line) for line in problem_lines), message
    assert expected in message, message


def test_cli_main_prints_lines_and_exits_2(tmp_path, use_test_catalog, capsys):
    from poisonbench.cli import main

    path = _write(tmp_path, GOOD.replace("  - S4\n", "  - S5\n").replace("epochs: 2", "epochs: x"))
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 3 and lines[-1] == "2 problems; nothing was run.", err
    assert lines[0].startswith(f"{path}:") or ":" in lines[0]
    assert "Traceback" not in err


def test_problem_positions_point_at_the_value(tmp_path, use_test_catalog):
    path = _write(tmp_path, GOOD.replace("  - S4\n", "  - S5\n"))
    with pytest.raises(ValidationFailed) as err:
        load_suite(path, use_test_catalog)
    (problem,) = err.value.problems
    assert (problem.line, problem.col) == (7, 5)


def test_all_problems_reported_at_once(tmp_path, use_test_catalog):
    text = GOOD.replace("  - S4\n", "  - S5\n").replace("[tinynet]", "[nonet]").replace("epochs: 2", "epochs: x")
    with pytest.raises(ValidationFailed) as err:
        load_suite(_write(tmp_path, text), use_test_catalog)
    assert len(err.value.problems) == 3


def test_python_tags_never_execute(tmp_path, use_test_catalog):
    sentinel = tmp_path / "ran"
    text = GOOD + f"description: !!python/object/apply:os.system ['touch {sentinel}']\n"
    with pytest.raises(ValidationFailed):
        load_suite(_write(tmp_path, text), use_test_catalog)
    assert not sentinel.exists()


def test_at_least_25_distinct_malformed_cases():
    assert len({case for case, _, _ in BAD_SUITES}) >= 25
