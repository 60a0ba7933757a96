"""The local executor: every craft and training group of a plan, in order, in this process.

Groups come poison-major (suite order), so one poison's artifact is obtained once and dropped when
the next poison starts. SIGINT/SIGTERM during training lets the current batch finish, keeps the
last epoch's checkpoint and raises ``Interrupted``; re-running the same command resumes.
"""

from __future__ import annotations

from typing import Any

from poisonbench.errors import Interrupted
from poisonbench.runner import (
    RunContext,
    RunPlan,
    craft_for_plan,
    defended_chain,
    interrupt_guard,
    prepare_suite_data,
    run_training_group,
)
from poisonbench.training.trainer import INTERRUPTED_MESSAGE


def run(plan: RunPlan, ctx: RunContext) -> None:
    """Obtain artifacts and train every group with unfinished cells; records go to ``ctx``."""
    cells_bar = ctx.progress.bar("cells", len(plan.cells), keep=True)
    cells_bar(sum(c.cell_id in ctx.finished for c in plan.cells))
    pending = [g for g in plan.groups if not set(g.cell_ids) <= ctx.finished]
    if not pending:
        return
    crafts = {c.craft_id: c for c in plan.crafts}
    artifacts: dict[str, Any] = {}  # craft_id -> Artifact or the exception that prevented it
    with interrupt_guard(ctx) as training:
        try:
            data = prepare_suite_data(plan.suite_resolved, catalog=ctx.catalog, data_dir=ctx.data_dir)
            for group in pending:  # defense params that do not fit the images: one line, nothing run
                defended_chain(ctx.catalog, group.chain, data=data)
            for index, group in enumerate(pending, start=1):
                label = f"[{index}/{len(pending)}] {group.poison['name']} · {group.victim['name']} · s{group.seed}"
                if group.craft_id not in artifacts:
                    artifacts.clear()  # keep one poison's artifact in memory at a time
                    craft = crafts[group.craft_id]
                    try:
                        artifacts[group.craft_id] = craft_for_plan(
                            craft, catalog=ctx.catalog, data=data, cache_dir=ctx.cache_dir,
                            device=ctx.device, data_dir=ctx.data_dir,
                            progress=ctx.progress.factory(f"craft {craft.poison['name']} s{craft.seed}: "))
                    except Interrupted:
                        raise
                    except Exception as err:  # a broken poison fails its cells, not the run
                        artifacts[group.craft_id] = err
                artifact = artifacts[group.craft_id]
                if isinstance(artifact, Exception):
                    ctx.fail(group, artifact)
                    continue
                training(True)
                try:
                    records = run_training_group(
                        suite_resolved=plan.suite_resolved, group=group, run_dir=ctx.run_dir,
                        device=ctx.device, catalog=ctx.catalog, data=data, artifact=artifact,
                        skip=ctx.finished, progress=ctx.progress.factory(f"{label} "),
                        should_stop=ctx.should_stop, cache_dir=ctx.cache_dir)
                except Interrupted:
                    raise
                except Exception as err:
                    ctx.fail(group, err)
                    continue
                finally:
                    training(False)
                for record in records:
                    ctx.record_finished(record)
                    cells_bar(1)
                ctx.group_done(group)
        except KeyboardInterrupt:
            raise Interrupted(INTERRUPTED_MESSAGE) from None
