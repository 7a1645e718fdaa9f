"""Steps: what a run did, kept beside its record (store/steps.py) and summed into usage."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from ag_jupyter.runtime import GraphRegistry, NodeContext, RunManager, graph_fn
from ag_jupyter.runtime.defaults import workspace_runtime
from ag_jupyter.runtime.store.steps import PREVIEW_CHARS, STEP_KEYS, make_step


def _registry() -> GraphRegistry:
    registry = GraphRegistry()

    @graph_fn("stepper", registry=registry)
    async def stepper(n: int, context: NodeContext) -> int:
        for i in range(n):
            context.services.record_step(
                make_step(
                    run_id=context.run_id,
                    kind="llm" if i % 2 else "tool",
                    name=f"step{i}",
                    inputs={"i": i, "big": "x" * 5000},
                    outputs=[i],
                    started_at=datetime.now(UTC),
                    duration_s=0.001,
                    error=ValueError("bad") if i == 2 else None,
                    extra={"prompt_tokens": 10, "completion_tokens": 2, "cached_tokens": 1}
                    if i % 2
                    else None,
                )
            )
        return n

    return registry


async def test_steps_are_kept_in_order_with_exact_keys_and_usage_is_summed(
    tmp_path: Path,
) -> None:
    registry = _registry()
    manager = RunManager(registry=registry, **workspace_runtime(tmp_path / "ws"))
    try:
        final, _, _, _ = await manager.run_and_wait("stepper", inputs={"n": 4})
        steps = await manager.steps(final.run_id)
        assert [s["name"] for s in steps] == ["step0", "step1", "step2", "step3"]
        assert all(tuple(s) == STEP_KEYS for s in steps)
        assert steps[2]["error"] == "ValueError: bad"
        assert len(steps[0]["inputs_preview"]) <= PREVIEW_CHARS
        assert steps[0]["inputs_preview"].endswith("...")
        assert datetime.fromisoformat(steps[0]["started_at"]).tzinfo is not None
        assert final.meta["usage"] == {
            "calls": 2,
            "prompt_tokens": 20,
            "completion_tokens": 4,
            "cached_tokens": 2,
            "cost": None,  # no prices: never a guessed cost
        }
        assert await manager.steps("run-unknown") == []
    finally:
        await manager.close()
    # Readable after a restart, from the workspace.
    again = RunManager(registry=registry, **workspace_runtime(tmp_path / "ws"))
    try:
        assert [s["name"] for s in await again.steps(final.run_id)] == [
            "step0", "step1", "step2", "step3"
        ]
        pruned = await again.prune(keep_last=0)
        assert pruned["runs"] == 1 and pruned["rows"] >= 4
        assert await again.steps(final.run_id) == []
    finally:
        await again.close()


async def test_a_run_without_llm_calls_has_no_usage(manager: RunManager) -> None:
    manager.registry = _registry()
    final, _, _, _ = await manager.run_and_wait("stepper", inputs={"n": 1})
    assert "usage" not in final.meta
    assert [s["kind"] for s in await manager.steps(final.run_id)] == ["tool"]
