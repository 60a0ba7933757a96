"""Shared pytest fixtures: fresh catalogs (never a global mutated manager), tiny data, a CLI runner."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from poisonbench.catalog import Catalog
from poisonbench.catalog.manager import load_plugins


@pytest.fixture
def catalog() -> Catalog:
    """A fresh catalog of the installed plugins for this test alone."""
    pm, infos = load_plugins()
    return Catalog.from_manager(pm, infos)


@pytest.fixture
def cli_runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def one_thread():
    """Train in-process on one torch thread, restored afterwards: tiny tensors gain nothing from
    intra-op threads, and on a busy 2-core machine they were measured many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """Every test gets its own cache dir and no plugin filters inherited from the environment."""
    monkeypatch.setenv("POISONBENCH_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("POISONBENCH_PLUGINS", "POISONBENCH_BLOCK_PLUGINS", "POISONBENCH_NO_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    import poisonbench.catalog

    clear = getattr(poisonbench.catalog.default_catalog, "cache_clear", lambda: None)  # may be patched
    clear()
    yield
    clear()
