"""The poison × defense matrix of ``report``: columns, shared trainings, identity marks, clean cost, figure."""

from __future__ import annotations

import json

from poisonbench.results import append_record, write_manifest
from poisonbench.results.defense_matrix import (
    build_matrix,
    defense_column,
    matrix_rows,
    write_matrix_figure,
)

from .helpers_byo import run_main


def _record(poison, defense, *, seed=0, peak=0.5, final=0.4, val=None, chain=None, identity=None, group=None):
    test = [final * 0.5, peak, final]
    history = {"train_loss": [2.0, 1.0, 0.5], "train_acc": [0.2, 0.5, 0.8], "test_acc": test, "lr": [0.1] * 3}
    if val is not None:
        history["val_acc"] = val
    metrics = {"peak_test_acc": peak, "peak_epoch": 2, "final_test_acc": final, "selected_test_acc": final,
               "selected_epoch": 3, "epochs_to_loss_threshold": None,
               "val_selected_test_acc": test[val.index(max(val))] if val else None}
    return {"cell_id": f"{poison}__{defense['name']}__s{seed}", "dataset": "d", "victim": {"name": "v", "params": {}},
            "poison": {"name": poison, "params": {}, "kind": "baseline" if poison == "clean" else "min"},
            "defense": defense, "seed": seed, "metrics": metrics, "history": history,
            "training_chain": chain if chain is not None else [], "defense_identity": identity,
            "train_group": group or f"{poison}-{defense['name']}-{seed}"}


def _records():
    none, alias = {"name": "none", "params": {}}, {"name": "early_stopping", "params": {"select": "val"}}
    jpeg, gray = {"name": "jpeg10", "params": {}}, {"name": "grayscale", "params": {}}
    stack = {"name": "jpeg10+cutout", "params": {}, "chain": [jpeg, {"name": "cutout", "params": {}}]}
    out = []
    for seed in (0, 1):
        for poison, base in (("clean", 0.9), ("R4", 0.3)):
            val = [0.1, 0.2, 0.9]
            out += [_record(poison, none, seed=seed, peak=base, final=base - 0.1, val=val, group=f"{poison}{seed}"),
                    _record(poison, alias, seed=seed, peak=base, final=base - 0.1, val=val, group=f"{poison}{seed}"),
                    _record(poison, gray, seed=seed, peak=base, final=base - 0.1, val=val, group=f"{poison}{seed}",
                            identity={"grayscale": "1-channel images are already grayscale"}),
                    _record(poison, jpeg, seed=seed, peak=0.8 + 0.02 * seed, final=0.7, val=val, chain=["jpeg10"]),
                    _record(poison, stack, seed=seed, peak=0.75, final=0.75, val=val, chain=["jpeg10", "cutout"])]
    return out


def test_aliases_are_the_undefended_column_and_identity_defenses_are_marked():
    records = _records()
    assert defense_column(records[1]) == "none" and defense_column(records[2]) == "grayscale"
    matrix = build_matrix(records)
    assert matrix["defenses"] == ["none", "grayscale", "jpeg10", "jpeg10 + cutout"]
    assert matrix["identity"] == {"grayscale": "1-channel images are already grayscale"}
    none = matrix["cells"]["R4"]["none"]
    assert none["peak"]["n"] == 2 and abs(none["final"]["mean"] - 0.2) < 1e-9  # alias counted once per seed
    assert abs(matrix["cells"]["clean"]["jpeg10"]["peak"]["mean"] - 0.81) < 1e-9
    assert matrix["cells"]["clean"]["jpeg10"]["val_selected"]["mean"] == 0.7  # epoch 3 has the best val


def test_clean_cost_is_its_own_row_in_points():
    matrix = build_matrix(_records())
    cost = matrix["clean_cost"]
    assert abs(cost["jpeg10"]["peak"] - (81 - 90)) < 1e-9 and cost["none"]["final"] == 0
    rows = matrix_rows(matrix)
    assert rows[-1][0].startswith("cost on clean") and rows[-1][3] == "-9.0/-10.0/-10.0"
    assert rows[0][3].startswith("81.0/70.0/70.0 ±")
    assert build_matrix([r for r in _records() if r["poison"]["name"] != "clean"])["clean_cost"] is None


def test_heat_map_figure_is_written(tmp_path):
    paths = write_matrix_figure(build_matrix(_records()), tmp_path)
    assert sorted(p.name for p in paths) == ["fig_defense_matrix.png", "fig_defense_matrix.svg"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_report_command_prints_and_returns_the_matrix(tmp_path, capsys):
    write_manifest(tmp_path, {"suite": {"suite": "d", "metrics": {"loss_threshold": 0.5}}})
    for record in _records():
        append_record(tmp_path, record)
    code, out, err = run_main(["report", str(tmp_path), "--json", "--no-figures"], capsys)
    assert code == 0, err
    matrix = json.loads(out)["defense_matrix"]
    assert matrix["defenses"][0] == "none" and set(matrix["poisons"]) == {"clean", "R4"}
    code, out, err = run_main(["report", str(tmp_path), "--no-figures"], capsys)
    assert code == 0 and "cost on clean" in out and "grayscale (≡ none)" in out
