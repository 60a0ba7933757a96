"""Leaderboard test helpers: the CLI in-process, an empty board, ``leaderboard add``, a tiny real suite."""

from __future__ import annotations

from pathlib import Path


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """``poisonbench ARGS`` in-process; the CLI always exits: (exit code, stdout, stderr)."""
    import pytest

    from poisonbench.cli import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def empty_board(tmp_path: Path) -> Path:
    """A leaderboard folder with an empty ``entries/``."""
    root = tmp_path / "board"
    (root / "entries").mkdir(parents=True)
    return root


def add_run(capsys, board: Path, run: Path) -> None:
    """``poisonbench leaderboard add RUN --dir BOARD``, which must succeed."""
    code, _, err = run_cli(capsys, "leaderboard", "add", run, "--dir", board)
    assert code == 0, err


def tiny_suite_text(*, defenses: str) -> str:
    """A suite that really trains in seconds (R4 on 48 synthetic 12×12 images, small_cnn of width 4,
    2 epochs, a val split); ``defenses`` is its YAML list."""
    return (
        "suite: tiny\nversion: 1\n"
        "dataset: {name: synthetic, params: {n_train: 48, n_test: 24, num_classes: 4, image_size: 12}, val_split: 8}\n"
        "victims: [{name: small_cnn, params: {width: 4}}]\npoisons: [R4]\n"
        f"defenses: {defenses}\nseeds: [0]\n"
        "train: {epochs: 2, batch_size: 16, lr: 0.05, milestones: [1]}\n"
    )
