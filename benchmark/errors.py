"""Errors a user can cause, each turned into one line and an exit code by the CLI.

Exit codes (docs/formats.md):
    0 ok, 1 failure, 2 bad input (nothing was run, nothing lost), 3 interrupted (resumable).
Programming errors are not PoisonbenchError and keep their traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 3


class PoisonbenchError(Exception):
    """Base of every error a user can cause; ``str(err)`` is the one line the CLI prints."""

    exit_code = EXIT_FAILURE


class BadInput(PoisonbenchError):
    """A suite, plugin, artifact, entry or flag is malformed; nothing was run."""

    exit_code = EXIT_BAD_INPUT


class UnknownName(BadInput):
    """A registry lookup failed; the message carries the "did you mean" suggestions."""


class DuplicateName(BadInput):
    """Two providers registered the same name."""


class PluginError(BadInput):
    """A plugin failed to import, register, or returned data the harness rejects."""


class ArtifactError(BadInput):
    """A poison artifact, checkpoint or entry file is corrupt, foreign or over budget."""


class RunFailed(PoisonbenchError):
    """A run could not finish (a cell raised, a worker died too often, ...)."""

    exit_code = EXIT_FAILURE


class Interrupted(PoisonbenchError):
    """SIGINT/SIGTERM arrived; the work done so far is checkpointed and re-running resumes it."""

    exit_code = EXIT_INTERRUPTED


@dataclass(frozen=True)
class Problem:
    """One problem in an input file, located as ``path:line:col`` (1-based line and column)."""

    path: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        # One problem, one line: control characters from user input (a key with a newline) are escaped.
        message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in self.message)
        return f"{self.path}:{self.line}:{self.col}: {message}"


class ValidationFailed(BadInput):
    """One or more problems in a suite; all are reported at once, one per line."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        n = len(self.problems)
        lines = [str(p) for p in self.problems]
        lines.append(f"{n} problem{'s' if n != 1 else ''}; nothing was run.")
        super().__init__("\n".join(lines))
