"""The leaderboard: entries as JSON files (schema), built from runs, verified by re-training, rendered.

- ``schema``  — what an entry is; ``validate_entry`` lists every problem as (JSON path, message).
- ``compat``  — reading schema-1 entries (selection rules posing as defenses) as schema 2.
- ``store``   — entries on disk (``leaderboard/entries/<suite>/*.json``), building them from a run:
  one per poison × victim × training-side defense, with peak / val-selected / final as metrics.
- ``verify``  — artifact hash + internal consistency + re-training one seed within a tolerance.
- ``rows``    — entries flattened into ranked table rows (shared by both renderers).
- ``render``  — ``leaderboard/README.md`` (Markdown) and the write/``--check`` of both files.
- ``page``, ``svg`` — ``leaderboard/index.html`` (self-contained: tabs, filters, curves, matrix).

An entry is evidence, not a claim: suite name and version, the protocol, the poison with its plugin
distribution and version, the sha256 of each seed's poison artifact, per-seed metrics and curves,
versions, hardware and date. ``status`` is ``measured`` (added from a run), ``verified`` (re-trained
by ``leaderboard verify --update`` and matched) or ``reported`` (numbers copied from a paper; no
artifact, no per-seed data, always shown apart from measured entries).
"""

from __future__ import annotations

from poisonbench.leaderboard.schema import STATUSES, EntryInvalid, validate_entry

__all__ = ["STATUSES", "EntryInvalid", "validate_entry"]
