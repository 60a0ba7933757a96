"""``leaderboard verify``: check an entry's artifact hash and numbers, then re-train one seed from it.

Order of checks (the first failure stops, exit 1 naming the JSON field):
1. schema (exit 2 — a malformed file is bad input, not a failed verification);
2. consistency: every seed's metrics against its own curves, the summary against the seeds;
3. the artifact: sha256 of the file (``--artifact``), or of the artifact obtained again from the
   cache / by re-crafting, must equal ``per_seed[i].artifact_sha256``;
4. re-training: the runner's own ``run_training_group`` (same protocol, same derived training seed)
   on that artifact, compared with ``per_seed[i]``.

Tolerance: on the same machine (device, CPU/GPU model, torch thread count and torch version equal
to the entry's) training is deterministic, so every metric and every curve point must match
exactly (1e-9). Elsewhere accuracies must agree within ``--tolerance`` percentage points (default
0.5) and epochs-until-threshold within 1 epoch; the peak/selected epoch are not compared across
machines (on a plateau the argmax moves with noise) — they are still checked against the curves.
"""

from __future__ import annotations

import datetime
import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poisonbench.errors import BadInput, PoisonbenchError
from poisonbench.leaderboard.schema import ACCURACIES, CURVES, consistency_problems, derive_metrics
from poisonbench.leaderboard.store import read_entry, write_entry

EXACT = 1e-9
DEFAULT_TOLERANCE_PT = 0.5
EPOCH_TOLERANCE = 1  # epochs, for epochs_to_loss_threshold across machines
HARDWARE_KEYS = ("device", "cpu", "gpu", "torch_threads")


class VerificationFailed(PoisonbenchError):
    """The entry's artifact or numbers do not hold up (exit 1); the message names the field."""


@dataclass
class Outcome:
    """What ``verify`` checked and measured, for the CLI (``--json``) and ``--update``."""

    path: str
    seed: int
    artifact_sha256: str
    same_machine: bool
    tolerance_pt: float
    max_abs_diff_pt: float = 0.0
    compared: list[dict[str, Any]] = field(default_factory=list)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _seed_index(entry: dict[str, Any], seed: int | None, sha: str | None) -> int:
    """Which per-seed item to verify: ``--seed``, else the one whose artifact is ``sha``, else the first."""
    per_seed = entry["per_seed"]
    if seed is not None:
        for i, item in enumerate(per_seed):
            if item["seed"] == seed:
                return i
        raise BadInput(f"--seed {seed}: the entry has seeds {entry['seeds']}")
    for i, item in enumerate(per_seed):
        if sha is not None and item["artifact_sha256"] == sha:
            return i
    return 0


def same_machine(entry: dict[str, Any], here: dict[str, Any]) -> bool:
    hardware = entry.get("hardware") or {}
    torch_version = str((entry.get("versions") or {}).get("torch")).split("+")[0]
    return (all(hardware.get(k) == here["hardware"].get(k) for k in HARDWARE_KEYS)
            and torch_version == here["torch"].split("+")[0])


def compare(recorded: dict[str, Any], measured: dict[str, Any], *, index: int, exact: bool,
            tolerance_pt: float) -> tuple[list[dict[str, Any]], list[str]]:
    """Compare one seed's recorded item with a re-trained record; returns (rows, failure messages)."""
    rows, failures = [], []
    base = f"$.per_seed[{index}]"
    for key, want in recorded["metrics"].items():
        got = measured["metrics"].get(key)
        if exact:
            ok, limit = _close(want, got, EXACT), "exact"
        elif key in ACCURACIES:
            ok, limit = _close(want, got, tolerance_pt / 100), f"±{tolerance_pt:g} pt"
        elif key == "epochs_to_loss_threshold":
            ok, limit = _close(want, got, EPOCH_TOLERANCE), f"±{EPOCH_TOLERANCE} epoch"
        else:
            ok, limit = True, "not compared across machines"
        rows.append({"field": f"{base}.metrics.{key}", "entry": want, "measured": got,
                     "tolerance": limit, "ok": ok})
        if not ok:
            failures.append(f"{base}.metrics.{key}: entry says {want}, re-training gave {got} ({limit})")
    if exact:  # same machine: the curves must be bit-identical too
        for curve, values in recorded["history"].items():
            got_curve = measured["history"].get(curve) or []
            for e, want in enumerate(values):
                got = got_curve[e] if e < len(got_curve) else None
                if not _close(want, got, EXACT):
                    failures.append(f"{base}.history.{curve}[{e}]: entry says {want}, re-training gave {got} (exact)")
                    break
    return rows, failures


def _close(a: Any, b: Any, tol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(float(a) - float(b)) <= tol


def _resolved_suite(entry: dict[str, Any], index: int) -> dict[str, Any]:
    protocol = entry["protocol"]
    return {"suite": entry["suite"]["name"], "version": entry["suite"]["version"], **protocol,
            "victims": [entry["victim"]], "poisons": [_component(entry["poison"])],
            "defenses": [entry["defense"]], "seeds": [entry["per_seed"][index]["seed"]]}


def _component(value: dict[str, Any]) -> dict[str, Any]:
    extra = {"fraction": value["fraction"]} if value.get("fraction") is not None else {}  # partial poison
    return {"name": value["name"], "params": dict(value.get("params") or {}), **extra}


def _obtain_artifact(entry, index, *, artifact_path, catalog, data, cache_dir, device):
    """The artifact to re-train on, its hash checked against the entry before anything is trained."""
    from poisonbench.crafting.artifacts import check_artifact, read_artifact
    from poisonbench.runner import CraftJob, craft_for_plan

    item = entry["per_seed"][index]
    field_name = f"$.per_seed[{index}].artifact_sha256"
    if artifact_path is not None:
        actual = sha256_file(Path(artifact_path))
        if actual != item["artifact_sha256"]:
            raise VerificationFailed(f"{field_name}: the entry says {item['artifact_sha256']}, "
                                     f"{artifact_path} has sha256 {actual}")
        artifact = read_artifact(artifact_path)
        instance = catalog.poisons.create(entry["poison"]["name"], entry["poison"]["params"])
        check_artifact(artifact, data.train, budget=instance.budget_for(tuple(data.train.images.shape[1:])),
                       threat_model=instance.threat_model,
                       source=str(artifact_path), fingerprint=data.fingerprint)
        return artifact
    job = CraftJob("verify", _component(entry["poison"]), item["seed"])
    artifact = craft_for_plan(job, catalog=catalog, data=data, cache_dir=cache_dir, device=device)
    if artifact.sha256 != item["artifact_sha256"]:
        raise VerificationFailed(f"{field_name}: the entry says {item['artifact_sha256']}, the artifact "
                                 f"obtained again (cache or re-crafting) has sha256 {artifact.sha256}")
    return artifact


def retrain(entry: dict[str, Any], index: int, *, artifact, catalog, data, device: str) -> dict[str, Any]:
    """Re-train the entry's seed ``index`` on ``artifact`` with the runner's own cell function."""
    from poisonbench.runner import TrainingGroup, run_training_group
    from poisonbench.suite.defense_chains import identity_notes, training_chain

    item = entry["per_seed"][index]
    defense = _component(entry["defense"])
    if entry["defense"].get("chain"):
        defense["chain"] = [_component(member) for member in entry["defense"]["chain"]]
    chain = training_chain(defense, catalog)  # the runner's own rule: none -> [], identity dropped
    identity = identity_notes(chain, catalog, tuple(data.train.images.shape[1:]))
    chain = [member for member in chain if member["name"] not in identity]
    group = TrainingGroup(group_id="verify", craft_id="verify", victim=_component(entry["victim"]),
                          poison=_component(entry["poison"]), seed=item["seed"],
                          cells=[(item["cell_id"], defense)], transform_defense=defense if chain else None,
                          chain=chain)
    with tempfile.TemporaryDirectory(prefix="poisonbench-verify-") as tmp:
        records = run_training_group(suite_resolved=_resolved_suite(entry, index), group=group,
                                     run_dir=Path(tmp), device=device, catalog=catalog, data=data,
                                     artifact=artifact)
    return records[0]


def verify_entry(path: Path, *, catalog, artifact_path: Path | None = None, seed: int | None = None,
                 tolerance_pt: float | None = None, data_dir: Path | None = None,
                 cache_dir: Path | None = None, device: str = "auto", update: bool = False) -> Outcome:
    """Run every check on the entry at ``path``; raises ``VerificationFailed`` on the first mismatch."""
    entry = read_entry(path)
    if entry["status"] == "reported":
        raise BadInput(f"{path}: a reported entry has no artifact or per-seed data to verify")
    problems = consistency_problems(entry)
    if problems:
        raise VerificationFailed("; ".join(f"{p}: {m}" for p, m in problems[:3])
                                 + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""))
    sha = sha256_file(Path(artifact_path)) if artifact_path is not None else None
    index = _seed_index(entry, seed, sha)
    import torch  # only now: the checks above need no training machinery

    from poisonbench.runner import prepare_suite_data
    from poisonbench.training.device import describe_device, resolve_device

    device = resolve_device(device)
    here = {"hardware": describe_device(device), "torch": torch.__version__}
    exact = same_machine(entry, here) if tolerance_pt is None else tolerance_pt == 0
    tolerance = 0.0 if exact else (DEFAULT_TOLERANCE_PT if tolerance_pt is None else tolerance_pt)
    data = prepare_suite_data(_resolved_suite(entry, index), catalog=catalog, data_dir=data_dir)
    artifact = _obtain_artifact(entry, index, artifact_path=artifact_path, catalog=catalog, data=data,
                                cache_dir=cache_dir, device=device)
    record = retrain(entry, index, artifact=artifact, catalog=catalog, data=data, device=device)
    history = {k: v for k, v in (record.get("history") or {}).items() if k in CURVES and v is not None}
    history["train_loss"] = [v if v == v and abs(v) != float("inf") else None for v in history["train_loss"]]
    record = {**record, "history": history,  # the entry's metrics come from its curves: so do these
              "metrics": derive_metrics(history, loss_threshold=entry["loss_threshold"])}
    rows, failures = compare(entry["per_seed"][index], record, index=index, exact=exact, tolerance_pt=tolerance)
    if failures:
        raise VerificationFailed(failures[0] + (f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""))
    diffs = [abs(r["entry"] - r["measured"]) * 100 for r in rows
             if r["field"].rsplit(".", 1)[1] in ACCURACIES and r["entry"] is not None]
    outcome = Outcome(str(path), entry["per_seed"][index]["seed"], artifact.sha256, exact, tolerance,
                      max(diffs, default=0.0), rows)
    if update:
        entry["status"] = "verified"
        entry["verification"] = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "seed": outcome.seed, "artifact_sha256": outcome.artifact_sha256,
            "same_machine": exact, "tolerance_pt": tolerance, "max_abs_diff_pt": round(outcome.max_abs_diff_pt, 6),
            "hardware": here["hardware"], "torch": here["torch"]}
        write_entry(Path(path), entry)
    return outcome
