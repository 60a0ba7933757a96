"""Readers in one process never see half-written files while a writer in another process writes them.

``cells.jsonl`` is appended one complete line at a time and a reader ignores an unterminated last
line; ``manifest.json`` and leaderboard entries are replaced atomically (temp file + rename). Each
test runs a writer subprocess and reads in a tight loop until it exits. (Two `run`s on one
directory: the second is refused while the first trains — test_reliability_signals.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from poisonbench.results import read_records

from .helpers_reliability import ROOT

N_RECORDS = 120
PAYLOAD = 60_000  # characters per record: far more than one page, so a write can be seen half done


def _read_while_writing(code: str, read) -> None:
    """Run ``code`` in a writer subprocess and call ``read()`` in a tight loop until the writer exits.

    Whether to stop is decided before each read, so the last read starts after the writer finished
    and sees everything it wrote. The writer must exit 0.
    """
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while True:
            done = writer.poll() is not None
            read()
            if done:
                break
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode == 0, writer.stderr.read()


def test_cells_reader_never_sees_half_a_record(tmp_path):
    code = f"""
        import time
        from poisonbench.results import append_record
        for i in range({N_RECORDS}):
            append_record({str(tmp_path)!r}, {{"cell_id": f"c{{i}}", "blob": "x" * {PAYLOAD}, "end": i}})
            time.sleep(0.001)  # spread the writes so the reader surely looks in between
        """
    seen, partial_views = 0, 0

    def read():
        nonlocal seen, partial_views
        records = read_records(tmp_path)
        assert all(r["end"] == int(r["cell_id"][1:]) and len(r["blob"]) == PAYLOAD for r in records)
        assert [r["cell_id"] for r in records] == [f"c{i}" for i in range(len(records))]
        assert len(records) >= seen  # complete records never disappear
        partial_views += 0 < len(records) < N_RECORDS
        seen = len(records)

    _read_while_writing(code, read)
    assert seen == N_RECORDS and partial_views > 0  # the reader did look while the writer wrote


WRITERS = {
    "manifest": ("from poisonbench.results import write_manifest as write", "manifest.json", "write(folder, data)"),
    "entry": ("from poisonbench.leaderboard.store import write_entry as write", "entry.json",
              "write(folder / 'entry.json', data)"),
}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_atomically_replaced_files_are_always_whole(kind, tmp_path):
    imports, name, call = WRITERS[kind]
    versions = [{"version": v, "curve": [v / 7] * 4000} for v in range(3)]  # ~80 kB each
    source = tmp_path / "source" / "versions.json"
    source.parent.mkdir()
    source.write_text(json.dumps(versions))
    folder = tmp_path / "target"
    folder.mkdir()
    code = f"""
        import json
        import time
        from pathlib import Path
        {imports}
        folder = Path({str(folder)!r})
        versions = json.loads(Path({str(source)!r}).read_text())
        for i in range(40):
            data = versions[i % 3]
            {call}
            time.sleep(0.001)
        """
    target, reads = folder / name, 0

    def read():
        nonlocal reads
        if target.exists():
            data = json.loads(target.read_text())  # never a JSONDecodeError: always a whole file
            assert data in versions
            reads += 1

    _read_while_writing(code, read)
    assert reads > 1 and sorted(p.name for p in folder.iterdir()) == [name]  # no temp files left
