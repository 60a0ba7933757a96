"""Exit codes (0 ok, 1 failure, 2 bad input, 3 interrupted) and SIGTERM/SIGINT during `poisonbench run`.

The signal tests run the real console entry point in a fresh interpreter, wait until it is
training, signal it, and check: exit 3 promptly, one line saying how to resume, the checkpoint on
disk, a second `run` on the same directory refused at once while the first holds it, and that
re-running finishes with records equal to an uninterrupted run's.
"""

from __future__ import annotations

import json
import signal
import subprocess

import click
import pytest

from poisonbench import cli as cli_module
from poisonbench.errors import ArtifactError, BadInput, Interrupted, RunFailed
from poisonbench.results import LOCK_FILE, read_records
from poisonbench.training.checkpoint import peek_state

from .helpers_reliability import comparable, run_main, spawn_cli, tiny_suite

EPOCHS = 12  # the run is frozen (SIGSTOP) right after epoch 2, so the signal lands mid-training
WAIT_S = 120  # a hang guard, not a timing assertion


def _suite(folder):
    return tiny_suite(folder, epochs=EPOCHS, n_train=128)


# -- the exit-code contract of the console entry point ------------------------------------------

def _raiser(exc: BaseException):
    @click.command("boom")
    def boom():
        raise exc

    return boom


@pytest.mark.parametrize("exc,code,line", [
    (None, 0, None),
    (RunFailed("2 training group(s) failed"), 1, "error: 2 training group(s) failed"),
    (ArtifactError("x.safetensors: not a poisonbench artifact"), 2,
     "error: x.safetensors: not a poisonbench artifact"),
    (BadInput("--only x matched no cell"), 2, "error: --only x matched no cell"),
    (Interrupted("interrupted; resume with: poisonbench run s.yaml"), 3,
     "error: interrupted; resume with: poisonbench run s.yaml"),
    (KeyboardInterrupt(), 3, "interrupted"),
], ids=["ok", "failure", "artifact", "bad-input", "interrupted", "ctrl-c"])
def test_exit_code_contract(monkeypatch, capsys, exc, code, line):
    command = _raiser(exc) if exc is not None else click.command("boom")(lambda: None)
    monkeypatch.setitem(cli_module.COMMANDS, "boom", f"{__name__}:BOOM")
    monkeypatch.setitem(globals(), "BOOM", command)
    got, out, err = run_main(capsys, "boom")
    assert got == code
    assert (err.strip().splitlines() if line else []) == ([line] if line else [])


def test_programming_errors_keep_their_traceback(monkeypatch):
    monkeypatch.setitem(cli_module.COMMANDS, "boom", f"{__name__}:BOOM")
    monkeypatch.setitem(globals(), "BOOM", _raiser(ZeroDivisionError("a bug")))
    with pytest.raises(ZeroDivisionError):  # not turned into a one-line message and an exit code
        cli_module.main(["boom"])


BOOM = None  # replaced per test


# -- signals during training -------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The records of an uninterrupted run of the same suite (started early: it runs alongside)."""
    base = tmp_path_factory.mktemp("reference")
    proc = spawn_cli("--cache-dir", base / "cache", "run", _suite(base), "--out", base / "run", "-q")
    yield lambda: (proc.communicate(timeout=WAIT_S), proc.returncode, read_records(base / "run"))
    if proc.poll() is None:
        proc.kill()


def _wait_for_epoch(proc: subprocess.Popen, epoch: int) -> list[str]:
    """stderr lines up to the progress line reporting ``epoch`` (the checkpoint is on disk by then)."""
    lines = []
    for line in proc.stderr:
        lines.append(line.rstrip("\n"))
        if f" epoch {epoch}/{EPOCHS}" in line:
            return lines
    shown = "\n".join(lines)
    raise AssertionError(f"the run ended before reaching epoch {epoch}:\n{shown}")


def _interrupt(signum: int, suite, out, capsys) -> None:
    """Start a run, freeze it mid-training, check a second run is refused, signal it; check exit 3."""
    proc = spawn_cli("run", suite, "--out", out)
    try:
        before = _wait_for_epoch(proc, 2)
        proc.send_signal(signal.SIGSTOP)  # frozen mid-training, holding the run lock
        code, _, err = run_main(capsys, "run", suite, "--out", out, "-q")
        assert code == 2 and str(out / LOCK_FILE) in err and len(err.strip().splitlines()) == 1, err
        proc.send_signal(signum)  # pending until the process continues
        proc.send_signal(signal.SIGCONT)
        _, rest = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    after = [line for line in rest.splitlines() if " epoch " not in line]  # a last progress line may race
    assert proc.returncode == 3, "\n".join(before + rest.splitlines())
    assert len(after) == 1 and "interrupted" in after[0] and "resume" in after[0], after
    assert "Traceback" not in rest
    assert read_records(out) == []
    (checkpoint,) = (out / "checkpoints").glob("*/train.safetensors")
    assert 2 <= peek_state(checkpoint)["epoch"] < EPOCHS  # kept, not restarted, not finished


POSIX = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX signals")


@POSIX
def test_sigint_checkpoints_and_exits_3_with_one_resume_line(tmp_path, capsys):
    _interrupt(signal.SIGINT, _suite(tmp_path), tmp_path / "run", capsys)


@POSIX
def test_sigterm_checkpoints_exits_3_and_rerun_matches_an_uninterrupted_run(tmp_path, capsys, reference):
    suite, out = _suite(tmp_path), tmp_path / "run"
    _interrupt(signal.SIGTERM, suite, out, capsys)
    rerun = spawn_cli("run", suite, "--out", out, "-q")
    _, err = rerun.communicate(timeout=WAIT_S)
    assert rerun.returncode == 0, err
    (resumed,) = read_records(out)
    (_, ref_err), ref_code, ref_records = reference()
    assert ref_code == 0, ref_err
    (expected,) = ref_records
    assert resumed["epochs"] == EPOCHS and comparable(resumed) == comparable(expected)
    assert json.loads((out / "manifest.json").read_text())["finished"]
    assert not (out / "checkpoints").exists()
