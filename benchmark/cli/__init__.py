"""The ``poisonbench`` command line: a click group whose subcommands load lazily.

Startup stays fast (``poisonbench list poisons`` imports no torch): each subcommand lives in its
own module in ``cli/`` that is imported only when that command runs. User errors
(``PoisonbenchError``) become one line on stderr and the exit code of errors.py; click's own usage
errors exit 2 as well.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from poisonbench import __version__
from poisonbench.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, Interrupted, PoisonbenchError

# name -> "module:attribute"; add a line here to add a command.
COMMANDS = {
    "validate": "poisonbench.cli.catalog:validate",
    "list": "poisonbench.cli.catalog:list_command",
    "plugins": "poisonbench.cli.catalog:plugins_command",
    "run": "poisonbench.cli.run:run_command",
    "craft": "poisonbench.cli.craft:craft",
    "cache": "poisonbench.cli.cache:cache",
    "report": "poisonbench.cli.report:report_command",
    "leaderboard": "poisonbench.cli.leaderboard:leaderboard",
    "import": "poisonbench.cli.import_poison:import_command",
    "transfer": "poisonbench.cli.transfer:transfer_command",
}


@dataclass
class Settings:
    """Global options, available to every subcommand as ``ctx.obj``."""

    data_dir: Path | None
    cache_dir: Path
    no_plugins: bool

    def catalog(self):
        from poisonbench.catalog import default_catalog

        return default_catalog(self.no_plugins)


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


EPILOG = """\b
Examples:
  poisonbench list poisons 'R*'            # the regions presets
  poisonbench validate suites/paper.yaml   # check a suite before spending GPU time
  poisonbench run suites/demo.yaml --out runs/demo
  poisonbench report runs/demo
"""


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="poisonbench")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), envvar="POISONBENCH_DATA_DIR",
              help="Root holding datasets in their standard layouts (env POISONBENCH_DATA_DIR).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), envvar="POISONBENCH_CACHE_DIR",
              help="Where crafted artifacts and surrogates are cached (env POISONBENCH_CACHE_DIR).")
@click.option("--no-plugins", is_flag=True, help="Load only the built-in plugins.")
@click.pass_context
def cli(ctx, data_dir, cache_dir, no_plugins):
    """Benchmark data poisons by the victim's peak test accuracy (lower = stronger poison)."""
    from poisonbench.util.files import default_cache_dir

    ctx.obj = Settings(data_dir=data_dir, cache_dir=cache_dir or default_cache_dir(), no_plugins=no_plugins)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the group and maps errors to one line and an exit code."""
    try:
        code = cli.main(args=argv, prog_name="poisonbench", standalone_mode=False)
    except PoisonbenchError as err:
        click.echo(f"error: {err}" if err.exit_code != EXIT_BAD_INPUT or "\n" not in str(err) else str(err),
                   err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        click.echo(str(Interrupted("interrupted")), err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)
