"""The content-addressed cache: concurrency (8 processes), crashes, a full disk, ls/rm/gc."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from poisonbench.crafting.cache import ArtifactCache, cache_key
from poisonbench.errors import BadInput

MATERIAL = {"poison": "R4", "params": {"regions": 4}, "seed": 0, "dataset": {"fingerprint": "ab"}}

# A worker process: ask the cache for MATERIAL; its create() is slow and writes in pieces, so a
# reader that could see a half-written entry would; it records each crafting in a marker file.
WORKER = textwrap.dedent("""
    import hashlib, os, sys, time
    from pathlib import Path
    from poisonbench.crafting.cache import ArtifactCache
    root, marker = Path(sys.argv[1]), Path(sys.argv[2])
    start_at, payload_mb = float(sys.argv[3]), int(sys.argv[4])
    material = {"poison": "R4", "params": {"regions": 4}, "seed": 0,
                "dataset": {"fingerprint": "ab"}}
    payload = hashlib.sha256(b"x").digest() * (payload_mb * 32768)
    def create(tmp):
        with open(marker, "a") as m:
            m.write(f"{os.getpid()}\\n")
        with open(tmp, "wb") as f:
            for i in range(0, len(payload), 1 << 18):
                f.write(payload[i:i + (1 << 18)]); f.flush(); time.sleep(0.02)
    while time.time() < start_at:
        time.sleep(0.005)
    path = ArtifactCache(root).get_or_create(material, create)
    ok = path.read_bytes() == payload
    print("ok" if ok else "CORRUPT", flush=True)
""")


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _debris(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".tmp-")]


def test_key_is_canonical_json_hash():
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})
    assert cache_key({"a": 1}) != cache_key({"a": 2})
    assert cache_key({"a": (1, 2)}) == cache_key({"a": [1, 2]})
    with pytest.raises(TypeError):
        cache_key({"a": object()})


def test_eight_processes_one_crafting_no_corrupt_read(tmp_path):
    root, marker = tmp_path / "cache", tmp_path / "crafted.txt"
    start_at = time.time() + 1.5  # all 8 interpreters are up by then; they ask at the same moment
    procs = [_spawn(WORKER, str(root), str(marker), str(start_at), "2") for _ in range(8)]
    outputs = [p.communicate(timeout=60) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert out.strip() == "ok"
    assert len(marker.read_text().split()) == 1  # exactly one process crafted
    assert _debris(root) == []
    entries = ArtifactCache(root).entries()
    assert [e.key for e in entries] == [cache_key(MATERIAL)]
    assert entries[0].material == MATERIAL


def test_killed_during_write_leaves_no_entry_and_next_start_cleans(tmp_path):
    root, ready = tmp_path / "cache", tmp_path / "ready"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from poisonbench.crafting.cache import ArtifactCache
        def create(tmp):
            with open(tmp, "wb") as f:
                f.write(b"half an artifact"); f.flush()
                Path({str(ready)!r}).touch()
                time.sleep(60)
        ArtifactCache(Path({str(root)!r})).get_or_create({MATERIAL!r}, create)
    """)
    proc = _spawn(script)
    for _ in range(400):
        if ready.exists() or proc.poll() is not None:
            break
        time.sleep(0.025)
    assert ready.exists(), (
        proc.stderr.read() if proc.poll() is not None else "worker never got ready"
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    cache = ArtifactCache(root, sweep=False)
    path = cache.path_for("poisons", MATERIAL)
    assert not path.exists()
    assert _debris(root), "the killed writer's temp file should be there before the next start"
    ArtifactCache(root)  # the next start sweeps debris nobody is writing
    assert _debris(root) == []
    assert cache.entries() == []
    made = cache.get_or_create(MATERIAL, lambda tmp: tmp.write_bytes(b"whole"))
    assert made == path and path.read_bytes() == b"whole"


def test_sweep_keeps_temp_files_of_a_live_writer(tmp_path):
    root = tmp_path / "cache"
    cache = ArtifactCache(root)
    seen = []

    def create(tmp):
        tmp.write_bytes(b"in progress")
        ArtifactCache(root)  # another process starting now must not delete our temp file
        seen.append(tmp.exists())

    cache.get_or_create(MATERIAL, create)
    assert seen == [True]


def test_disk_full_during_write_leaves_nothing(tmp_path):
    root = tmp_path / "cache"
    # RLIMIT_FSIZE stands in for a full disk (a tmpfs needs root); SIGXFSZ ignored → EFBIG.
    script = textwrap.dedent(f"""
        import resource, signal
        from pathlib import Path
        from poisonbench.util.files import atomic_write_bytes
        from poisonbench.crafting.cache import ArtifactCache
        from poisonbench.errors import PoisonbenchError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
        def create(tmp):  # the artifact writer's own temp-and-rename, 300 KB > the 64 KB limit
            atomic_write_bytes(tmp, bytes(300 * 1024))
        try:
            ArtifactCache(Path({str(root)!r})).get_or_create({MATERIAL!r}, create)
        except PoisonbenchError as err:
            print("refused:", err)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "refused:" in proc.stdout and "disk full or file too large" in proc.stdout
    assert not ArtifactCache(root, sweep=False).path_for("poisons", MATERIAL).exists()
    leftovers = [p for p in root.rglob("*") if p.is_file() and ".locks" not in p.parts]
    assert leftovers == []  # no temp file, no entry, no metadata


def test_failing_create_leaves_nothing_and_error_propagates(tmp_path):
    cache = ArtifactCache(tmp_path / "c")

    def create(tmp):
        tmp.write_bytes(b"partial")
        raise ValueError("plugin bug")

    with pytest.raises(ValueError, match="plugin bug"):
        cache.get_or_create(MATERIAL, create)
    assert cache.entries() == [] and _debris(tmp_path) == []


def test_kinds_suffixes_and_hits_do_not_recreate(tmp_path):
    cache = ArtifactCache(tmp_path)
    calls = []

    def create(tmp):
        calls.append(tmp)
        tmp.write_bytes(b"weights")

    a = cache.get_or_create({"victim": "resnet18"}, create, kind="surrogates")
    b = cache.get_or_create({"victim": "resnet18"}, create, kind="surrogates")
    assert a == b and len(calls) == 1
    assert a == cache.path_for("surrogates", {"victim": "resnet18"})
    assert a.parent.name == "surrogates" and a.suffix == ".safetensors"
    c = cache.get_or_create({"victim": "resnet18"}, create, kind="other", suffix=".bin")
    assert c.suffix == ".bin" and len(calls) == 2
    with pytest.raises(ValueError):
        cache.path_for("../escape", {})


def test_rm_find_and_gc(tmp_path):
    cache = ArtifactCache(tmp_path)
    old = cache.get_or_create({"n": 1}, lambda t: t.write_bytes(b"1"))
    new = cache.get_or_create({"n": 2}, lambda t: t.write_bytes(b"2"))
    week_ago = time.time() - 7 * 86400
    os.utime(old, (week_ago, week_ago))
    stray = old.parent / f".tmp-{cache_key({'n': 3})}-1-dead.safetensors"
    stray.write_bytes(b"debris")
    orphan = old.parent / f"{cache_key({'n': 4})}.json"
    orphan.write_text("{}")
    os.utime(orphan, (week_ago, week_ago))
    assert cache.gc(days=3, dry_run=True)["expired"] == [str(old)] and old.exists()
    report = cache.gc(days=3)
    assert report["expired"] == [str(old)] and report["debris"] == [str(stray)]
    assert report["orphans"] == [str(orphan)]
    assert not old.exists() and new.exists() and not stray.exists()
    with pytest.raises(BadInput, match="too short"):
        cache.find("ab")
    with pytest.raises(BadInput, match="no cache entry"):
        cache.find("0" * 10)
    entry = cache.find(cache_key({"n": 2})[:8])
    cache.remove(entry)
    assert cache.entries() == []


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    from poisonbench.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_cache_cli_ls_rm_gc(tmp_path, capsys):
    root = tmp_path / "cli-cache"
    cache = ArtifactCache(root)
    cache.get_or_create(MATERIAL, lambda t: t.write_bytes(b"a"))
    code, out, _ = _cli(["--cache-dir", str(root), "cache", "ls", "--json"], capsys)
    listed = json.loads(out)
    assert code == 0 and [e["key"] for e in listed] == [cache_key(MATERIAL)]
    assert listed[0]["material"]["poison"] == "R4"
    code, _, err = _cli(["--cache-dir", str(root), "cache", "rm", "zzzz"], capsys)
    assert code == 2 and "no cache entry" in err
    code, out, _ = _cli(["--cache-dir", str(root), "cache", "rm", cache_key(MATERIAL)[:6]], capsys)
    assert code == 0 and "removed" in out and cache.entries() == []
    code, out, _ = _cli(["--cache-dir", str(root), "cache", "gc", "--json"], capsys)
    assert code == 0 and json.loads(out) == {"debris": [], "orphans": [], "expired": []}
