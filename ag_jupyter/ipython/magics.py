"""The extension's run magics: ``%ag_runs``, ``%ag_cancel``, ``%ag_graphs``, ``%ag_wait``
(``%%ag_session`` lives in :mod:`ag_jupyter.ipython.session_cell`).

Options are declared with IPython's ``magic_arguments`` (so ``%ag_runs?`` prints the help);
user mistakes raise ``UsageError`` (shown short, without a traceback).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..runtime import RunManager, RunNotFoundError, RunRecord, get_run_manager
from ..runtime.run_manager import check_positive
from ..widgets import history
from ..widgets.snapshot import format_duration, parse_statuses, text_table
from .blocking import kernel_loop_is_running, run_blocking

log = logging.getLogger("ag_jupyter.ipython")
_background: set[asyncio.Task[None]] = set()  # %ag_runs --text refreshes in flight


@magics_class
class AgMagics(Magics):
    """The run magics of the ag_jupyter extension (registered by ``%load_ext ag_jupyter``).

    Args:
      shell: the InteractiveShell.
      config: the extension's ``AgJupyter`` settings (None: defaults).
    """

    def __init__(self, shell: Any, config: Any = None) -> None:
        super().__init__(shell)
        self.ag_config = config

    # ------------------------------------------------------------------ helpers
    def manager(self) -> RunManager:
        """The kernel's RunManager (created on first use, on the kernel's loop)."""
        if kernel_loop_is_running():
            return get_run_manager()

        async def get() -> RunManager:
            return get_run_manager()

        # Terminal IPython: no loop runs between cells; use IPython's own loop.
        return self.shell.loop_runner(get())

    # ------------------------------------------------------------------- %ag_runs
    @magic_arguments()
    @argument("--status", help="Only runs with this status (or 'live').")
    @argument("--session", help="Only runs of this session id.")
    @argument("--graph", help="Only runs of this graph id.")
    @argument("--limit", type=int, default=50, help="Rows in the text table (default 50).")
    @argument("--text", action="store_true", help="Print a text table even in a notebook.")
    @line_magic
    def ag_runs(self, line: str) -> Any:
        """Show the runs of this kernel and the stored runs of earlier ones: the live run
        panel in a notebook, else a text table.

        The filters apply to both. The panel updates live and has Cancel and Retry buttons,
        the open asks and each run's detail; the text table is a snapshot of this kernel's
        runs and the newest stored ones (``%ag_runs --text`` in a notebook shows this
        kernel's at once and adds the stored ones as soon as they are read, in the same
        output).
        """
        args = parse_argstring(self.ag_runs, line)
        if args.limit <= 0:
            raise UsageError(f"--limit must be a positive number, got {args.limit}")
        try:
            status_filter = parse_statuses(args.status)
        except ValueError as exc:
            raise UsageError(f"%ag_runs --status: {exc}") from None
        manager = self.manager()
        if not args.text and _widgets_available(self.shell):
            from ..widgets.run_panel import RunPanel

            panel = RunPanel(
                manager,
                refresh_s=self.ag_config.panel_refresh_s if self.ag_config else 0.1,
                status=args.status,
                session=args.session,
                graph=args.graph,
            )
            panel.display()
            return None

        def wanted(record: RunRecord) -> bool:
            return (
                (status_filter is None or record.status in status_filter)
                and (args.session is None or record.session_id == args.session)
                and (args.graph is None or record.graph_id == args.graph)
            )

        def table(stored: list[RunRecord]) -> str:
            records = [r for r in history.merge(manager.recent_records(), stored) if wanted(r)]
            return text_table(records, limit=args.limit)

        async def read() -> list[RunRecord]:
            try:
                return await history.read_stored(
                    manager, graph_id=args.graph, statuses=status_filter,
                    session_id=args.session, limit=max(args.limit, history.HISTORY_RUNS),
                )
            except Exception as exc:  # the table of this kernel's runs still stands
                log.warning("%%ag_runs could not read the stored runs: %s", exc)
                return []

        if not kernel_loop_is_running():
            # Terminal IPython: no loop runs between cells; read on IPython's own loop.
            print(table(self.shell.loop_runner(read())))
            return None
        # In a kernel the loop runs this cell and cannot be awaited from a magic: show
        # what is known now (this kernel's runs and the stored ones read earlier) and
        # update the same output once the stored runs are read.
        from IPython.display import display

        known = history.cached(manager) or []
        shown = table([r for r in known if wanted(r)])
        handle = display({"text/plain": shown}, raw=True, display_id=True)

        async def refresh() -> None:
            text = table(await read())
            if text != shown and handle is not None:
                handle.update({"text/plain": text}, raw=True)

        task = asyncio.get_running_loop().create_task(refresh())
        _background.add(task)
        task.add_done_callback(_background.discard)
        return None

    # ----------------------------------------------------------------- %ag_cancel
    @magic_arguments()
    @argument("run_ids", nargs="*", help="Run ids to cancel.")
    @argument("--all", action="store_true", help="Cancel every live run of this kernel.")
    @argument("--reason", default="user_requested", help="Reason kept on the records.")
    @line_magic
    def ag_cancel(self, line: str) -> None:
        """Cancel runs: ``%ag_cancel RUN_ID [RUN_ID ...]`` or ``%ag_cancel --all``.

        A pending run is canceled at once; a running async run has its task cancelled; a
        sync run gets its cooperative flag set. Finished runs are left as they are.
        """
        args = parse_argstring(self.ag_cancel, line)
        manager = self.manager()
        if args.all and args.run_ids:
            raise UsageError("%ag_cancel: give run ids or --all, not both")
        if args.all:
            run_ids = [r.run_id for r in manager.live_records()]
            if not run_ids:
                print("no live runs to cancel")
                return
        elif args.run_ids:
            run_ids = args.run_ids
        else:
            raise UsageError(
                "%ag_cancel needs run ids or --all; usage: %ag_cancel RUN_ID [...] | --all"
            )
        unknown = [rid for rid in run_ids if manager.find_record(rid) is None]
        if unknown:
            raise UsageError(
                f"%ag_cancel: no run with id {', '.join(map(repr, unknown))} in this kernel; "
                "nothing was cancelled. See %ag_runs for run ids."
            )
        for run_id in run_ids:
            before = manager.request_cancel(run_id, reason=args.reason)
            if before.status.is_terminal:
                print(f"{run_id}: already {before.status.value}; nothing to cancel")
            else:
                print(f"{run_id}: cancel requested (was {before.status.value})")

    # ----------------------------------------------------------------- %ag_graphs
    @line_magic
    def ag_graphs(self, line: str) -> None:
        """List the registered graphs with their inputs and outputs."""
        if line.strip():
            raise UsageError("%ag_graphs takes no arguments")
        registry = self.manager().registry
        specs = registry.specs()
        if not specs:
            print("no graphs registered; define one with @graph_fn('name')")
            return
        for spec in specs:
            kind = "async" if spec.is_async else "sync"
            outputs = ", ".join(spec.outputs) if spec.outputs else "(returned value)"
            summary = (spec.description or "").strip().splitlines()
            print(
                f"{spec.name}  [{kind}]  inputs: {', '.join(spec.inputs) or '(none)'}"
                f"  outputs: {outputs}" + (f"  — {summary[0]}" if summary else "")
            )

    # ------------------------------------------------------------------- %ag_wait
    @magic_arguments()
    @argument("run_id", help="The run to wait for.")
    @argument("--timeout", type=float, default=None, help="Seconds to wait at most.")
    @argument(
        "--return",
        dest="return_record",
        action="store_true",
        help="Also return the RunRecord (e.g. `rec = %%ag_wait RUN_ID --return`).",
    )
    @line_magic
    def ag_wait(self, line: str) -> Any:
        """Wait for a run to finish and print one status line: id, status, duration and
        error (``run-…: failed in 1.2 s — ValueError: …``).

        Returns nothing, so a notebook shows only that line; with ``--return`` it also
        returns the ``RunRecord`` (``rec = %ag_wait RUN_ID --return``). IPython cannot
        tell a magic that its value is assigned, hence the option.

        In a notebook the kernel's loop is busy running the cell, so a synchronous wait
        would block the very loop that runs the run: unless
        ``AgJupyter.blocking_waits = 'nest_asyncio2'`` is set, a run that is still live
        gives a ``UsageError`` saying to ``await get_run_manager().wait_run(run_id)``.
        A finished run's line is printed at once in every case.
        """
        args = parse_argstring(self.ag_wait, line)
        try:
            check_positive("--timeout", args.timeout)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        manager = self.manager()
        record = manager.find_record(args.run_id)
        if record is None:
            raise UsageError(
                f"%ag_wait: no run with id {args.run_id!r} in this kernel; see %ag_runs "
                "for run ids (runs of earlier kernels: await get_run_manager()"
                ".get_record(run_id))"
            )
        if not record.status.is_terminal:
            try:
                record = run_blocking(
                    self.shell,
                    lambda: manager.wait_run(args.run_id, timeout_s=args.timeout),
                    what=f"%ag_wait {args.run_id}",
                    alternative=(
                        "in a cell, write `record = await get_run_manager()"
                        f".wait_run({args.run_id!r})` (top-level await works)"
                    ),
                    config=self.ag_config,
                )
            except TimeoutError as exc:
                raise UsageError(str(exc)) from None
            except RunNotFoundError as exc:
                raise UsageError(str(exc)) from None
        duration = format_duration(record.duration_s)
        print(
            f"{record.run_id}: {record.status.value}"
            + (f" in {duration}" if duration else "")
            + (f" — {record.error}" if record.error else "")
        )
        return record if args.return_record else None

def _widgets_available(shell: Any) -> bool:
    """True in a Jupyter kernel (a front end that can render widgets may be attached)."""
    if getattr(shell, "kernel", None) is None:
        return False
    try:
        import anywidget  # noqa: F401
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True

