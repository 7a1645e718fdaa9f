"""Reading one run's detail for the panel: what the ``detail``, ``logs``, ``steps`` and
``download`` replies carry (see :mod:`ag_jupyter.widgets.run_panel` for the protocol).

Everything is read with the RunManager's async APIs (``get_record``, ``get_inputs``,
``wait_run(return_outputs=True)`` for finished runs, ``logs``, ``steps``, ``usage``,
``transcript`` where the runtime has it) and the workspace's ``artifacts`` service, whose
store reads run in the workspace's threads, so the kernel's loop only ever waits for them.
Every section is bounded by :mod:`ag_jupyter.widgets.run_table` (previews cut, pages of
logs and steps); a section that cannot be read is named in ``errors`` and the others are
still sent. Only the run asked for is read, never the history.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Mapping
from types import SimpleNamespace
from typing import Any

from ..runtime import RunManager
from .run_table import (
    ARTIFACTS_SHOWN,
    CHILDREN_SHOWN,
    DOWNLOAD_MAX_BYTES,
    LOG_PAGE,
    RunTable,
    artifact_entry,
    format_bytes,
    hides_parent,
    json_preview,
    log_page,
    record_detail,
    step_page,
    transcript_entries,
    usage_badge,
)


class RunDetailReader:
    """Reads the bounded detail of one run at a time.

    Args:
      manager: the RunManager the run belongs to.
      table: the panel's run table (for children and for hiding ad-hoc parents).
    """

    def __init__(self, manager: RunManager, table: RunTable) -> None:
        self._manager = manager
        self._table = table

    async def detail(self, run_id: str, query: Mapping[str, Any]) -> dict[str, Any]:
        """The ``detail`` message for ``run_id``. ``query``: ``log_offset`` (None: the
        newest page), ``search``, ``levels`` and ``steps_offset`` (None: the newest page).

        Raises:
          RunNotFoundError: if no run has this id.
        """
        manager = self._manager
        record = await manager.get_record(run_id)
        errors: dict[str, str] = {}

        async def guarded(name: str, coro: Coroutine[Any, Any, Any]) -> Any:
            try:
                return await coro
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"[:500]
                return None

        async def outputs() -> Any:
            if not record.status.is_terminal:
                return None  # wait_run would wait
            _final, found = await manager.wait_run(run_id, return_outputs=True)
            return found

        async def transcript() -> Any:
            return await manager.transcript(run_id)

        async def usage() -> Any:
            if record.status.is_terminal and "usage" in record.meta:
                return usage_badge(record.meta)
            found = await manager.usage(run_id=run_id)  # so far, for a live run
            return usage_badge({"usage": found}) if found and found.get("calls") else None

        inputs_v, outputs_v, logs_v, steps_v, transcript_v, artifacts_v, usage_v = (
            await asyncio.gather(
                guarded("inputs", manager.get_inputs(run_id)),
                guarded("outputs", outputs()),
                guarded("logs", self.logs(run_id, query)),
                guarded("steps", manager.steps(run_id)),
                guarded("transcript", transcript()),
                guarded("artifacts", self.artifacts(run_id)),
                guarded("usage", usage()),
            )
        )
        table = self._table
        child_ids = table.child_ids(run_id)
        children = [r for c in child_ids[-CHILDREN_SHOWN:] if (r := table.record(c))]
        return {
            "type": "detail",
            "run_id": run_id,
            "record": record_detail(record, hide_parent=hides_parent(record, table.is_run)),
            "inputs": None if inputs_v is None else json_preview(inputs_v),
            "outputs": None if outputs_v is None else json_preview(outputs_v),
            "logs": logs_v,
            "steps": None if steps_v is None else step_page(steps_v, query.get("steps_offset")),
            "transcript": None if transcript_v is None else transcript_entries(transcript_v),
            "artifacts": artifacts_v,
            "children": {"items": [table.row(r) for r in children], "total": len(child_ids)},
            "usage": usage_v,
            "errors": errors,
            "server_time": time.time(),
        }

    async def logs(self, run_id: str, query: Mapping[str, Any]) -> dict[str, Any]:
        """A page of the run's logger lines (``run_table.log_page``) for ``query``."""
        search = query.get("search") or None
        levels = list(query.get("levels") or []) or None
        offset = query.get("log_offset")
        manager = self._manager
        if offset is None:  # the newest page
            first = await manager.logs(run_id, offset=0, limit=1, search=search, levels=levels)
            offset = max(0, int(first.get("total") or 0) - LOG_PAGE)
        page = await manager.logs(run_id, offset=offset, limit=LOG_PAGE, search=search,
                                  levels=levels)
        return log_page(page, offset=offset, limit=LOG_PAGE, search=search, levels=levels)

    async def steps(self, run_id: str, offset: int | None) -> dict[str, Any]:
        """A page of the run's steps (``run_table.step_page``)."""
        return step_page(await self._manager.steps(run_id), offset)

    def artifact_store(self) -> Any:
        """The workspace's artifact store (not bound to any run), or None when the manager
        keeps no artifacts (an in-memory runtime)."""
        service = self._manager.services.lookup("artifacts")
        bind = getattr(service, "bind", None)
        if bind is None:
            return None
        return bind(context=SimpleNamespace(run_id=None, session_id=None, graph_id=None,
                                            node_id=None, agent_id=None, app_id=None))

    async def artifacts(self, run_id: str) -> dict[str, Any]:
        """The artifacts the run saved, newest first: ``{"items" (ARTIFACTS_SHOWN at
        most), "total" (items shown), "more" (bool: there are more), "available",
        "download_max_bytes"}``. Paths are computed, not checked (no file access)."""
        store = self.artifact_store()
        if store is None:
            return {"items": [], "total": 0, "more": False, "available": False}
        found = await store.list(run_id=run_id, limit=ARTIFACTS_SHOWN + 1)
        items = []
        for artifact in found[:ARTIFACTS_SHOWN]:
            try:
                path = store.to_local_path(artifact.uri, must_exist=False)
            except Exception:
                path = None
            items.append(artifact_entry(artifact, path))
        return {"items": items, "total": len(items), "more": len(found) > ARTIFACTS_SHOWN,
                "available": True, "download_max_bytes": DOWNLOAD_MAX_BYTES}

    async def download(self, run_id: str, artifact_id: str) -> tuple[dict[str, Any], bytes]:
        """The ``download`` message and the bytes of an artifact ``run_id`` saved.

        Raises:
          LookupError: if the runtime keeps no artifacts, or the run saved no such one.
          ValueError: if it is larger than DOWNLOAD_MAX_BYTES (the message says how to
            load it in a cell instead).
          ArtifactNotFoundError / WorkspaceError: if its content cannot be read.
        """
        store = self.artifact_store()
        if store is None:
            raise LookupError("this runtime keeps no artifacts")
        mine = [a for a in await store.list(run_id=run_id) if a.artifact_id == artifact_id]
        if not mine:
            raise LookupError(f"run {run_id} saved no artifact {artifact_id}")
        artifact = mine[0]
        size = artifact.bytes or 0
        if size > DOWNLOAD_MAX_BYTES:
            raise ValueError(
                f"{artifact.name!r} is {format_bytes(size)}, over the panel's "
                f"{format_bytes(DOWNLOAD_MAX_BYTES)} download cap; load it in a cell: "
                f"await context.artifacts().as_local_file({artifact.uri!r})")
        data = await store.load_bytes(artifact.uri)
        return {"type": "download", "artifact_id": artifact_id,
                "name": artifact.name or artifact_id[:12],
                "mime": artifact.mime or "application/octet-stream", "bytes": len(data)}, data
