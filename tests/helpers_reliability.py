"""Shared builders for the reliability tests: tiny suites, hostile pickles, the CLI in and out of process."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tiny_suite(folder: Path, *, name: str = "tiny", poisons: str = "[clean]",
               victims: str = "[{name: small_cnn, params: {width: 4}}]", epochs: int = 2,
               lr: float = 0.05, n_train: int = 64, extra: str = "", file: str = "suite.yaml") -> Path:
    """A suite on synthetic 8×8 data that trains in well under a second per epoch on one thread."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file
    path.write_text(textwrap.dedent(f"""\
        suite: {name}
        dataset:
          name: synthetic
          params: {{n_train: {n_train}, n_test: 32, num_classes: 4, image_size: 8, channels: 3}}
        victims: {victims}
        poisons: {poisons}
        defenses: [none]
        seeds: [0]
        train: {{epochs: {epochs}, batch_size: 32, lr: {lr}, milestones: [{epochs}], eval_batch_size: 64}}
        """) + extra)
    return path


class Payload:
    """Unpickling this runs a shell command that creates ``sentinel`` — it must never happen."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def write_payload(path: Path, sentinel: Path, *, kind: str) -> Path:
    """A hostile file at ``path``: a raw protocol-4 pickle or a ``torch.save`` zip holding one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"images": Payload(sentinel)}, protocol=4))
    elif kind == "torch_save":
        import torch

        torch.save({"images": Payload(sentinel)}, path)
    else:
        raise ValueError(kind)
    return path


PAYLOAD_KINDS = ("pickle", "torch_save")


def run_main(capsys, *args) -> tuple[int, str, str]:
    """The console entry point in-process: (exit code, stdout, stderr)."""
    from poisonbench.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: one torch thread (a loaded 2-core CI box trains several
    times faster single-threaded), unbuffered output, the test's own cache dir (set by conftest)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            **extra}


def spawn_cli(*args, cwd: Path | None = None) -> subprocess.Popen:
    """``poisonbench ARGS`` in a fresh interpreter (own session), stderr piped line by line."""
    code = "from poisonbench.cli import main; main()"
    return subprocess.Popen([sys.executable, "-c", code, *[str(a) for a in args]], cwd=cwd or ROOT,
                            env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            bufsize=1, start_new_session=True)




def comparable(record: dict) -> dict:
    """A cell record without the fields that legitimately differ between two runs of it."""
    return {k: v for k, v in record.items() if k not in ("wall_s", "finished")}
