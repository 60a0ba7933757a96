"""Acceptance: a SIGKILL during a REM craft, then the same ``poisonbench craft`` command, resumes and gives
the artifact an uninterrupted craft gives (byte for byte).

Children are forked from this warm process (milliseconds to start); each runs the CLI command
in-process with its own cache dir. The parent kills the first child once its craft state exists
(after a finished round), then runs the same command again; that run must take fewer training
steps than a whole craft (it resumed) and write the same file as a craft never interrupted.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")

STEPS = 12
COMMAND = ["craft", "rem", "--dataset", "fashion_mnist_demo", "--subset", "64", "--seed", "3",
           "--set", "model=small_cnn", "--set", f"train_steps={STEPS}", "--set", "round_steps=2",
           "--set", "batch_size=32", "--set", "noise_steps=2", "--set", "eot_samples=1",
           "--set", "adv_steps=1", "--set", "lr_decay_steps=5"]


def _child(cache: Path, out: Path, steps_log: Path) -> None:
    """Run the craft command, logging every training step it takes."""
    from poisonbench.cli import main
    from poisonbench.plugins.unlearnable import rem_ops

    torch.set_num_threads(1)
    os.environ["POISONBENCH_CACHE_DIR"] = str(cache)
    original = rem_ops.RemCrafter.train_step

    def logged(self, step):
        result = original(self, step)
        with open(steps_log, "a") as handle:
            handle.write(f"{step}\n")
        return result

    rem_ops.RemCrafter.train_step = logged
    main([*COMMAND, "--out", str(out)])


def _fork(cache: Path, out: Path, steps_log: Path) -> int:
    import poisonbench.cli.craft  # noqa: F401  (warm imports before forking)
    import poisonbench.plugins.unlearnable.rem_ops  # noqa: F401

    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _child(cache, out, steps_log)
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
        except BaseException:
            code = 1
        os._exit(code)
    return pid


def _wait_ok(pid: int) -> None:
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def _steps(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def test_sigkill_mid_rem_craft_resumes_to_identical_artifact(tmp_path):
    seed = random.randrange(1 << 30)
    delay = random.Random(seed).uniform(0.0, 0.2)
    ref_pid = _fork(tmp_path / "ref-cache", tmp_path / "ref.safetensors", tmp_path / "ref.log")

    cache, out, log = tmp_path / "cache", tmp_path / "out.safetensors", tmp_path / "killed.log"
    pid = _fork(cache, out, log)
    deadline = time.monotonic() + 60
    while not list((cache / "craft-state").glob("*/state.safetensors")):
        assert time.monotonic() < deadline, "no craft state appeared"
        time.sleep(0.01)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status), f"the craft finished before the kill (random seed {seed})"
    assert not out.exists()
    before = _steps(log)
    assert 2 <= len(before) < STEPS

    _wait_ok(_fork(cache, out, tmp_path / "resumed.log"))  # the same command again
    resumed = _steps(tmp_path / "resumed.log")
    assert resumed and resumed[0] % 2 == 0 and resumed[0] >= 2, resumed  # started at a finished round
    assert resumed == list(range(resumed[0], STEPS))
    assert not list((cache / "craft-state").glob("*/state.safetensors"))  # cleared when done

    _wait_ok(ref_pid)
    assert _steps(tmp_path / "ref.log") == list(range(STEPS))
    assert out.read_bytes() == (tmp_path / "ref.safetensors").read_bytes(), f"random seed {seed}"
