"""`--executor ray --address` against a Ray cluster started the way the README tells users to.

The module starts one head the user's way — ``ray get-auth-token --generate`` once (the token goes
to ``~/.ray/auth_token``; HOME is a temp folder here), then ``ray start --head --node-ip-address
127.0.0.1 --port PORT``, which turns token authentication on because a token exists — and runs
``poisonbench`` as a separate process, as a user would. A finalizer stops the cluster. It does not
call ``ray stop``, which stops every Ray on the machine (another test session's too): it stops the
processes whose command line names this cluster's temp folder or port, and their children.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "suites" / "smoke.yaml"
BIN = Path(sys.executable).parent
RAY_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process we can read (Linux /proc)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        table[int(entry)] = (parent, cmdline)
    return table


def _alive(pid: int) -> bool:
    """Running (a zombie waits for its parent to reap it; it is gone for our purpose)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop_cluster(marks: list[str], *, grace_s: float = 2.0) -> set[int]:
    """SIGTERM, then after ``grace_s`` SIGKILL (``ray stop --force`` style: Ray's GCS server and
    raylet can take over ten seconds on SIGTERM), the processes naming any of ``marks`` and all
    their descendants."""
    table = _processes()
    chosen = {pid for pid, (_, cmd) in table.items() if any(mark in cmd for mark in marks)}
    while True:
        children = {pid for pid, (parent, _) in table.items() if parent in chosen} - chosen
        if not children:
            break
        chosen |= children
    chosen.discard(os.getpid())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in chosen:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_alive(pid) for pid in chosen):
            time.sleep(0.2)
    return chosen


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, request):
    """A head on 127.0.0.1 with token authentication; yields its address and the user's env."""
    if not Path("/proc").is_dir():
        pytest.skip("stops its cluster through /proc (Linux)")
    home = tmp_path_factory.mktemp("home")
    env = {k: v for k, v in os.environ.items() if k not in RAY_VARS}
    env.update(HOME=str(home), OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0")
    made = subprocess.run([BIN / "ray", "get-auth-token", "--generate"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert made.returncode == 0 and (home / ".ray" / "auth_token").exists(), made.stderr[-2000:]
    port = free_port()
    temp = tempfile.mkdtemp(prefix="pb-ray-")  # short: Ray's socket paths live under it
    request.addfinalizer(lambda: stop_cluster([temp, f":{port}"]))
    started = subprocess.run(
        [BIN / "ray", "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--num-cpus", "2", "--temp-dir", temp, "--include-dashboard", "false",
         # fixed default ports moved aside, so a second cluster on this machine does not collide
         "--dashboard-port", str(free_port()), "--ray-client-server-port", str(free_port()),
         "--dashboard-agent-listen-port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    return {"address": f"127.0.0.1:{port}", "env": env}


def poisonbench(args: list, *, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([BIN / "poisonbench", *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_smoke_suite_runs_on_the_cluster_with_the_token(cluster, tmp_path):
    env = {**cluster["env"], "RAY_AUTH_MODE": "token"}  # the README's cluster recipe
    out = tmp_path / "run"
    done = poisonbench(["--cache-dir", tmp_path / "cache", "run", SMOKE, "--out", out,
                        "--executor", "ray", "--address", cluster["address"], "--quiet"], env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (out / "cells.jsonl").read_text().splitlines()]
    assert len(records) == 4
    assert all(0 <= r["metrics"]["peak_test_acc"] <= 1 for r in records)
    assert json.loads((out / "manifest.json").read_text())["executor"] == "ray"


def test_without_the_auth_mode_the_error_names_the_token(cluster, tmp_path):
    env = {**cluster["env"], "RAY_gcs_server_port_wait_time_s": "1"}  # Ray's own retry budget: 1 s
    done = poisonbench(["run", SMOKE, "--out", tmp_path / "run", "--executor", "ray",
                        "--address", cluster["address"]], env=env)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    last = lines[-1]
    assert last.startswith("error: --address 127.0.0.1:") and "RAY_AUTH_MODE=token" in last
    assert "~/.ray/auth_token" in last
    # Ray's own retry lines are held back once the cause is known: one error line, nothing else
    assert [line for line in lines if "error" in line.lower() or "gcs" in line.lower()] == [last]
    assert not (tmp_path / "run" / "cells.jsonl").exists()


def test_an_address_nobody_answers_is_one_line(tmp_path, capsys):
    from poisonbench.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["run", str(SMOKE), "--out", str(tmp_path / "run"), "--executor", "ray",
              "--address", f"127.0.0.1:{free_port()}"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert exc.value.code == 2 and len(errors) == 1
    assert "no Ray head answers there" in errors[0]
    assert not (tmp_path / "run" / "cells.jsonl").exists()


def test_a_version_mismatch_names_both_versions():
    from poisonbench.executors.ray_executor import connect_failure

    err = RuntimeError("Version mismatch: The cluster was started with:\n    Ray: 2.9.3\n"
                       "    Python: 3.10.12\nThis process on node 1.2.3.4 was started with:\n"
                       "    Ray: 9.9.9\n    Python: 3.11.2\n")
    message = connect_failure(err)
    assert "\n" not in message
    assert "version mismatch" in message and "Ray 2.9.3, Python 3.10.12" in message


def test_a_wrong_token_and_an_unknown_cause_are_named(monkeypatch):
    from poisonbench.executors.ray_executor import connect_failure

    def refused(cause: str) -> ConnectionError:
        err = ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:1")
        err.__cause__ = RuntimeError(cause)
        return err

    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    wrong = connect_failure(refused("ray.exceptions.AuthenticationError: RPC error: InvalidAuthToken"))
    assert "refused this process's authentication token" in wrong and "~/.ray/auth_token" in wrong
    other = connect_failure(refused("Failed to connect to GCS"))
    assert "\n" not in other and "address" in other and "Ray version" in other
