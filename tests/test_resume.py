"""Acceptance: a training SIGKILLed at random points resumes to bit-identical history and weights.

Children are forked from this (already warm) process so that killing and restarting costs
milliseconds; the last resume runs in a fresh interpreter so that nothing in-process is relied on.
The variant whose resumed child skips restoring the RNG state (``torch.set_rng_state`` made a
no-op in that child alone) must break the equality, which proves the check can fail (the model
uses dropout).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = 8


def child_main(checkpoint: str, out_dir: str, stream, *, restore_rng: bool = True) -> None:
    """Train the tiny dropout net; report 'epoch N' after each checkpoint; save weights + history.

    ``restore_rng=False`` makes ``torch.set_rng_state`` a no-op in this (forked, throw-away) process,
    so a resumed training continues from whatever RNG state the process has.
    """
    from poisonbench.training.trainer import train_victim
    from tests.helpers_training import MEAN, STD, tiny_config, tiny_model, tiny_splits

    torch.set_num_threads(1)
    if not restore_rng:
        torch.set_rng_state = lambda state: None
    train, test, val = tiny_splits(n_train=256, n_test=64)

    def progress(description, total):
        def advance(n=1, **fields):
            if "epoch" in fields:
                stream.write(f"epoch {fields['epoch'].split('/')[0]}\n")
                stream.flush()
        return advance

    model = tiny_model()
    history = train_victim(model=model, train=train, test=test, val=val,
                           config=tiny_config(epochs=EPOCHS, milestones=[5]), mean=MEAN, std=STD,
                           seed=11, device="cpu", checkpoint_path=Path(checkpoint), progress=progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "weights.safetensors"))
    curves = {k: v for k, v in history.items() if isinstance(v, list)}
    (out / "history.json").write_text(json.dumps(curves))


def _warm_up() -> None:
    """Import what the trainer imports lazily (torch.optim pulls in torch._dynamo: seconds) once,
    here, so forked children start in milliseconds."""
    import poisonbench.training.trainer  # noqa: F401

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def _fork(checkpoint: Path, out_dir: Path, *, restore_rng: bool = True) -> tuple[int, object]:
    _warm_up()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        code = 0
        try:
            with os.fdopen(write_fd, "w") as stream:
                child_main(str(checkpoint), str(out_dir), stream, restore_rng=restore_rng)
        except BaseException:
            code = 1
        os._exit(code)
    os.close(write_fd)
    return pid, os.fdopen(read_fd)


def _fresh_process(checkpoint: Path, out_dir: Path) -> None:
    code = ("import sys; from tests.test_resume import child_main; "
            f"child_main({str(checkpoint)!r}, {str(out_dir)!r}, sys.stdout)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def _run_with_kills(tmp: Path, kill_points: list[tuple[int, float]], *, fresh: bool,
                    restore_rng: bool = True) -> int:
    """Kill a child after it reports epoch k, plus a delay; resume; finish (in a fresh process,
    or in a forked child that restores the RNG state only with ``restore_rng``)."""
    checkpoint = tmp / "ck.safetensors"
    kills = 0
    for after_epoch, delay in kill_points:
        pid, stream = _fork(checkpoint, tmp / "partial")
        seen = 0
        while seen < after_epoch:
            line = stream.readline()
            if not line:
                break
            seen = int(line.split()[1])
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        stream.close()
        kills += os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    if fresh:
        _fresh_process(checkpoint, tmp / "final")
    else:
        pid, stream = _fork(checkpoint, tmp / "final", restore_rng=restore_rng)
        stream.read()
        _wait(pid)
    return kills


def _load(out_dir: Path) -> tuple[dict, dict]:
    return json.loads((out_dir / "history.json").read_text()), load_file(str(out_dir / "weights.safetensors"))


def _reference(tmp: Path) -> tuple[int, object]:
    return _fork(tmp / "reference.safetensors", tmp / "reference")


def _wait(pid: int) -> None:
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _same(a: tuple[dict, dict], b: tuple[dict, dict]) -> bool:
    (ha, wa), (hb, wb) = a, b
    return ha == hb and wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_sigkill_at_random_points_resumes_bit_identically(tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    ref_pid, ref_stream = _reference(tmp_path)
    points = [(0, rng.uniform(0.0, 0.03))]  # possibly before the first checkpoint
    points += [(k, rng.uniform(0.0, 0.05)) for k in sorted(rng.sample(range(1, EPOCHS - 1), 3))]
    kills = _run_with_kills(tmp_path / "killed", points, fresh=True)
    ref_stream.read()
    _wait(ref_pid)
    reference, resumed = _load(tmp_path / "reference"), _load(tmp_path / "killed" / "final")
    assert len(reference[0]["test_acc"]) == EPOCHS
    assert kills >= 2, f"too few kills landed mid-run (random seed {seed}, points {points})"
    assert resumed[0] == reference[0], f"history differs (random seed {seed}, points {points})"
    assert _same(resumed, reference), f"weights differ (random seed {seed}, points {points})"


def test_resume_without_rng_restore_is_detected(tmp_path):
    ref_pid, ref_stream = _reference(tmp_path)
    kills = _run_with_kills(tmp_path / "killed", [(2, 0.0)], fresh=False, restore_rng=False)
    ref_stream.read()
    _wait(ref_pid)
    assert kills == 1
    assert not _same(_load(tmp_path / "killed" / "final"), _load(tmp_path / "reference"))
