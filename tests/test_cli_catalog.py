"""`poisonbench list/plugins/--version`: JSON output, plugin blocking, broken plugins, no torch import."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from poisonbench import __version__
from poisonbench.cli import cli

from .plugin_fixtures import third_party_site


def run_cli(*args, env_extra=None, pythonpath=None):
    env = {**os.environ, **(env_extra or {})}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", "from poisonbench.cli import main; main()", *args],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def fake_site(tmp_path):
    """A folder on PYTHONPATH holding a third-party plugin distribution (good + broken entry points)."""
    return third_party_site(tmp_path / "site", dist="pb_thirdparty-0.3", good="third", broken="broken",
                            poison="third_party_poison")


def test_version(cli_runner):
    result = cli_runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_list_poisons_json_fields(cli_runner):
    result = cli_runner.invoke(cli, ["list", "poisons", "--json"])
    assert result.exit_code == 0, result.output
    items = json.loads(result.output)
    clean = next(i for i in items if i["name"] == "clean")
    assert {"name", "family", "kind", "applied", "params"} <= set(clean)
    assert clean["kind"] == "baseline"


def test_list_pattern_and_unknown_kind(cli_runner):
    result = cli_runner.invoke(cli, ["list", "defenses", "early*", "--json"])
    assert [i["name"] for i in json.loads(result.output)] == ["early_stopping"]
    result = cli_runner.invoke(cli, ["list", "poison"])
    assert result.exit_code == 2


def test_list_imports_no_torch():
    code = ("import sys; from poisonbench.cli import main\n"
            "try:\n    main(['list', 'poisons', '--json'])\nexcept SystemExit: pass\n"
            "heavy = [m for m in ('torch', 'timm', 'torchvision', 'matplotlib', 'ray') if m in sys.modules]\n"
            "print('HEAVY', heavy, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stderr, out.stderr


def test_third_party_plugin_listed_and_broken_one_reported(fake_site):
    result = run_cli("list", "poisons", "--json", pythonpath=fake_site)
    assert result.returncode == 0, result.stderr
    names = [i["name"] for i in json.loads(result.stdout)]
    assert "third_party_poison" in names and "clean" in names
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and "plugin 'broken'" in warnings[0] and "broken on purpose" in warnings[0]


def test_plugins_json_shows_status(fake_site):
    result = run_cli("plugins", "--json", pythonpath=fake_site)
    data = json.loads(result.stdout)
    status = {p["name"]: p["status"] for p in data["plugins"]}
    assert status["third"] == "loaded" and status["broken"] == "failed" and status["baselines"] == "loaded"
    third = next(p for p in data["plugins"] if p["name"] == "third")
    assert third["distribution"] == "pb-thirdparty" and third["registered"] == {"poisons": 1}


@pytest.mark.parametrize("env,flag", [({"POISONBENCH_BLOCK_PLUGINS": "pb-thirdparty"}, None),
                                      ({}, "--no-plugins"),
                                      ({"POISONBENCH_PLUGINS": "some-other"}, None)])
def test_plugins_can_be_blocked(fake_site, env, flag):
    args = ([flag] if flag else []) + ["list", "poisons", "--json"]
    result = run_cli(*args, env_extra=env, pythonpath=fake_site)
    assert result.returncode == 0, result.stderr
    names = [i["name"] for i in json.loads(result.stdout)]
    assert "third_party_poison" not in names and "clean" in names
    assert "broken on purpose" not in result.stderr
