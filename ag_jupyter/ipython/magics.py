"""The extension's magics: ``%%ag_session``, ``%ag_runs``, ``%ag_cancel``, ``%ag_graphs``,
``%ag_wait``.

Options are declared with IPython's ``magic_arguments`` (so ``%ag_runs?`` prints the help);
user mistakes raise ``UsageError`` (shown short, without a traceback).
"""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..runtime import RunManager, RunNotFoundError, get_run_manager
from ..runtime.run_manager import check_positive
from ..widgets.snapshot import format_duration, parse_statuses, text_table
from .blocking import kernel_loop_is_running, run_blocking


@magics_class
class AgMagics(Magics):
    """IPython magics of the ag_jupyter extension (registered by ``%load_ext ag_jupyter``)."""

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

    # -------------------------------------------------------------- %%ag_session
    @magic_arguments()
    @argument("--run-id", dest="run_id", help="Id of this session (default: generated).")
    @argument("--graph-id", dest="graph_id", help='Graph label (default: "adhoc").')
    @argument("--node-id", dest="node_id", help='Node label (default: "adhoc").')
    @argument(
        "--session-id",
        dest="session_id",
        help="Session id given to runs spawned from the cell (default: the run id, or "
        "AgJupyter.default_session_id).",
    )
    @argument("--agent-id", dest="agent_id", help="Agent id for spawned runs.")
    @argument("--app-id", dest="app_id", help="App id for spawned runs.")
    @cell_magic
    def ag_session(self, line: str, cell: str) -> Any:
        """Run the cell inside ``open_session(...)`` with ``context`` bound.

        The body runs on the kernel's event loop: top-level ``await`` works and spawned
        runs keep going after the cell. ``context`` is restored to its previous value
        afterwards; the session closes even on an error or an interrupt. The cell's last
        expression is displayed as usual.

        Example::

            %%ag_session --session-id demo
            run_id = await context.runner().spawn_run("slow", inputs={"seconds": 5})
        """
        from .transformer import run_session_cell

        # Reached only by a direct run_cell_magic(...) call: cells are rewritten by the
        # input transformer before IPython's cell-magic handling sees them.
        return run_blocking(
            self.shell,
            lambda: run_session_cell(self.shell, line, cell),
            what="%%ag_session via run_cell_magic",
            alternative="write it as a %%ag_session cell (the cell form runs on the "
            "kernel's loop)",
            config=self.ag_config,
            may_step=not _awaits(cell),
        )

    # ------------------------------------------------------------------- %ag_runs
    @magic_arguments()
    @argument("--status", help="Only runs with this status (or 'live').")
    @argument("--session", help="Only runs of this session id.")
    @argument("--graph", help="Only runs of this graph id.")
    @argument("--limit", type=int, default=50, help="Rows in the text table (default 50).")
    @argument("--text", action="store_true", help="Print a text table even in a notebook.")
    @line_magic
    def ag_runs(self, line: str) -> Any:
        """Show the runs of this kernel: the live run panel in a notebook, else a text table.

        The panel updates live and has Cancel buttons; the text table is a snapshot.
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

            return RunPanel(
                manager,
                refresh_s=self.ag_config.panel_refresh_s if self.ag_config else 0.1,
                status=args.status,
                session=args.session,
            )
        records = [
            r
            for r in manager.recent_records()
            if (status_filter is None or r.status in status_filter)
            and (args.session is None or r.session_id == args.session)
            and (args.graph is None or r.graph_id == args.graph)
        ]
        print(text_table(records, limit=args.limit))
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
    @line_magic
    def ag_wait(self, line: str) -> Any:
        """Wait for a run to finish and return its record.

        In a notebook the kernel's loop is busy running the cell, so a synchronous wait
        would block the very loop that runs the run: unless
        ``AgJupyter.blocking_waits = 'nest_asyncio2'`` is set, a run that is still live
        gives a ``UsageError`` saying to ``await get_run_manager().wait_run(run_id)``.
        """
        args = parse_argstring(self.ag_wait, line)
        try:
            check_positive("--timeout", args.timeout)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        manager = self.manager()
        record = manager.find_record(args.run_id)
        if record is None:
            raise UsageError(str(manager._not_found(args.run_id)))
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
        return record


def session_magic_parser() -> Any:
    """The ``magic_arguments`` parser of ``%%ag_session`` (shared with the transformer)."""
    return AgMagics.ag_session.parser


def session_magic_usage() -> str:
    """The usage line of ``%%ag_session``."""
    return session_magic_parser().format_usage()


def _awaits(source: str) -> bool:
    import ast

    try:
        code = compile(source, "<ag_session>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError:
        return False
    return bool(code.co_flags & 0x80)  # CO_COROUTINE


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

