"""No pickle on untrusted input: hostile payloads as artifacts, entries and imports are refused unexecuted.

A payload's ``__reduce__`` runs ``touch SENTINEL``; each case checks the refusal (one line, exit 2)
and that the sentinel file was never created. Checkpoints and cache entries holding a payload are
covered in test_reliability_corrupt.py; `file` poisons in suites in test_file_poison.py. A source
guard checks every ``torch.load`` / ``np.load`` / pickle use in the package and example plugin.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import pytest

from poisonbench.leaderboard.store import read_entry, write_entry

from .helpers_reliability import PAYLOAD_KINDS, ROOT, run_main, write_payload
from .helpers_report import write_run

pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")


@pytest.fixture
def entry(tmp_path, capsys) -> Path:
    """One valid leaderboard entry (a fabricated run on synthetic data, added to a fresh board)."""
    (tmp_path / "board" / "entries").mkdir(parents=True)
    run = write_run(tmp_path / "run", seeds=(0,), epochs=4)
    code, _, err = run_main(capsys, "leaderboard", "add", run, "--dir", tmp_path / "board", "--poison", "R4")
    assert code == 0, err
    (path,) = (tmp_path / "board" / "entries").glob("*/*.json")
    return path


@pytest.mark.parametrize("kind", PAYLOAD_KINDS)
def test_payload_as_verify_artifact_is_refused_even_with_a_matching_hash(kind, entry, tmp_path, capsys):
    payload = write_payload(tmp_path / "r4.safetensors", tmp_path / "SENTINEL", kind=kind)
    data = read_entry(entry)
    data["per_seed"][0]["artifact_sha256"] = hashlib.sha256(payload.read_bytes()).hexdigest()
    write_entry(entry, data)  # the entry vouches for the payload: the reader still refuses it
    code, _, err = run_main(capsys, "leaderboard", "verify", entry, "--artifact", payload, "--device", "cpu")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "r4.safetensors: not a poisonbench artifact" in err
    assert not (tmp_path / "SENTINEL").exists()


@pytest.mark.parametrize("kind", PAYLOAD_KINDS)
@pytest.mark.parametrize("command", ["render", "verify"])
def test_payload_as_leaderboard_entry_is_refused(kind, command, entry, tmp_path, capsys):
    evil = write_payload(entry.parent / "evil.json", tmp_path / "SENTINEL", kind=kind)
    board = tmp_path / "board"
    args = ["render", "--dir", board] if command == "render" else ["verify", evil]
    code, _, err = run_main(capsys, "leaderboard", *args)
    lines = err.strip().splitlines()  # the entry-problem form: one line per problem + a summary
    assert code == 2 and "evil.json: $: not a valid JSON entry" in lines[0], err
    assert lines[1:] == ["1 problem in leaderboard entries"] and not (tmp_path / "SENTINEL").exists()
    assert not (board / "README.md").exists()


DISGUISES = ["noise.pth", "noise.pt", "poison.safetensors", "images.npy", "images.npz"]


@pytest.mark.parametrize("kind", PAYLOAD_KINDS)
@pytest.mark.parametrize("name", DISGUISES)
def test_payload_under_any_file_name_is_refused_by_import(kind, name, tmp_path, capsys):
    payload = write_payload(tmp_path / name, tmp_path / "SENTINEL", kind=kind)
    out = tmp_path / "out.safetensors"
    code, _, err = run_main(capsys, "import", payload, "--dataset", "synthetic", "--dataset-param=n_train=8",
                            "--dataset-param=image_size=8", "--eps", "0.03", "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1 and name in err, err
    assert not out.exists() and not (tmp_path / "SENTINEL").exists()


@pytest.mark.parametrize("name", DISGUISES)
def test_payload_as_a_file_poison_fails_suite_validation(name, tmp_path, capsys, monkeypatch):
    write_payload(tmp_path / name, tmp_path / "SENTINEL", kind="pickle")
    suite = tmp_path / "suite.yaml"
    suite.write_text("suite: evil\ndataset: {name: synthetic, params: {n_train: 8, image_size: 8}}\n"
                     f"victims: [small_cnn]\npoisons: [{{name: file, params: {{path: {name}, eps: 0.03}}}}]\n")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(capsys, "validate", suite)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 2 and "suite.yaml:" in lines[0] and name in lines[0], err
    assert not (tmp_path / "SENTINEL").exists()


# -- a source guard --------------------------------------------------------------------------

SOURCES = [p for folder in ("benchmark", "plugins", "examples") for p in (ROOT / folder).rglob("*.py")
           if not any(part in ("build", ".venv", "site-packages") for part in p.parts)]
RESTRICTED_UNPICKLER = ROOT / "plugins" / "datasets" / "cifar_files.py"  # md5-checked official CIFAR files only
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def _unsafe_calls(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        keywords = {k.arg: k.value for k in node.keywords}
        if name in ("torch.load", "torch.serialization.load"):
            value = keywords.get("weights_only")
            if not (isinstance(value, ast.Constant) and value.value is True):
                found.append(f"line {node.lineno}: {name} without weights_only=True")
        elif name in ("np.load", "numpy.load"):
            value = keywords.get("allow_pickle")
            if value is not None and not (isinstance(value, ast.Constant) and value.value is False):
                found.append(f"line {node.lineno}: {name} with allow_pickle other than False")
    return found


def _unsafe_imports(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        found += [f"line {node.lineno}: imports {n}" for n in names if n.split(".")[0] in UNSAFE_MODULES]
    return found


def test_guard_finds_what_it_looks_for():
    bad = ast.parse("import torch, pickle\nimport numpy as np\ntorch.load(f)\n"
                    "torch.load(f, weights_only=False)\nnp.load(f, allow_pickle=True)\n"
                    "torch.load(f, weights_only=True)\nnp.load(f)\n")
    assert len(_unsafe_calls(bad)) == 3 and len(_unsafe_imports(bad)) == 1


def test_no_unsafe_deserialisation_in_package_or_example_plugin():
    assert len(SOURCES) > 40 and RESTRICTED_UNPICKLER in SOURCES
    offenders = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(), filename=str(path))
        problems = _unsafe_calls(tree) + ([] if path == RESTRICTED_UNPICKLER else _unsafe_imports(tree))
        offenders += [f"{path.relative_to(ROOT)} {p}" for p in problems]
    assert offenders == []
