"""Validation of a suite's ``defenses:`` entries: chains, params against the dataset, notes.

Called by the suite checker for every defense entry. Errors are collected like every other suite
problem (``file:line:col: message``, exit 2, nothing run); notes are printed by ``validate`` but do
not fail it: a deprecated selection alias (``early_stopping``), or a defense that is the identity on
the suite's dataset (grayscale on 1-channel images, ``gaussian_blur`` with σ < 0.3). The rules
for chains live in ``defense_chains``.
"""

from __future__ import annotations

from typing import Any

from poisonbench.suite.defense_chains import (
    CHAIN_JOIN,
    chain_problems,
    dataset_image_shape,
    order_key,
)
from poisonbench.suite.yaml_marks import Mark, MarkedDict, MarkedList


class DefenseChecks:
    """The defense part of one suite check (``checker`` is the suite checker, for marks/problems)."""

    def __init__(self, checker: Any):
        self.checker = checker
        self._shape: tuple[int, int, int] | None | bool = False  # False: not looked up yet
        self._in_chain = False  # members of a chain get no deprecation note (the chain is refused)

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(H, W, C) of the suite's dataset when its plugin declares one."""
        if self._shape is False:
            raw = self.checker.data.get("dataset")
            name = raw if isinstance(raw, str) else (raw.get("name") if isinstance(raw, dict) else None)
            params = raw.get("params") if isinstance(raw, dict) and isinstance(raw.get("params"), dict) else {}
            self._shape = dataset_image_shape(self.checker.catalog, name if isinstance(name, str) else None,
                                              dict(params))
        return self._shape  # type: ignore[return-value]

    def note(self, mark: Mark, message: str) -> None:
        self.checker.notes.append(mark.problem(f"note: {message}"))

    def single(self, instance: Any, name: str, mark: Mark, param_mark) -> bool:
        """Checks of one defense (alone or in a chain); False when it has an error."""
        ok = True
        shape = self.image_shape
        if shape is not None:
            for key, message in instance.check_data(image_shape=shape):
                self.checker.add(param_mark(key), f"defense '{name}': {message}")
                ok = False
            reason = instance.identity_on(image_shape=shape) if ok else None
            if reason:
                self.note(mark, f"defense '{name}' is the identity here: {reason}; its cells share "
                                "the undefended training and the report marks them")
        if getattr(instance, "deprecated", "") and not self._in_chain:
            self.note(mark, f"defense '{name}' is deprecated: {instance.deprecated}")
        return ok

    def component(self, item: Any, index: int, mark: Mark):
        """The Component of a chain entry (a YAML list); None for anything else or on error."""
        from poisonbench.suite import Component

        if not isinstance(item, MarkedList):
            return None
        if not item:
            self.checker.add(mark, f"defenses[{index}]: an empty chain; write 'none' for no defense")
            return None
        members, instances = [], []
        self._in_chain = True
        try:
            for j, raw in enumerate(item):
                sub_mark = item.item_marks[j]
                if isinstance(raw, str):
                    name, params, pmarks = raw, {}, {}
                elif isinstance(raw, MarkedDict) and isinstance(raw.get("name"), str) \
                        and isinstance(raw.get("params") or {}, dict) and set(raw) <= {"name", "params"}:
                    name, params = raw["name"], dict(raw.get("params") or {})
                    pmarks = raw["params"].value_marks if isinstance(raw.get("params"), MarkedDict) else {}
                    sub_mark = raw.value_marks.get("name", sub_mark)
                else:
                    self.checker.add(sub_mark, f"defenses[{index}][{j}]: expected a defense name or "
                                               "{name, params}")
                    return None
                param_mark = lambda k, pm=pmarks, m=sub_mark: pm.get(k, m) if k else m  # noqa: E731
                member = self.checker.resolve("defenses", name, params, sub_mark, param_mark)
                if member is None:
                    return None
                members.append(member)
                instances.append(self.checker.catalog.defenses.create(name, params))
        finally:
            self._in_chain = False
        for message in chain_problems(instances):
            self.checker.add(mark, f"defenses[{index}]: {message}")
            return None
        ordered = [m for m, _ in sorted(zip(members, instances, strict=True), key=lambda p: order_key(p[1]))]
        if len(ordered) == 1:  # a chain of one is that defense (the same cell as writing it alone)
            return ordered[0]
        name = CHAIN_JOIN.join(m.label for m in ordered)
        return Component(name, {}, {}, chain=tuple(ordered))
