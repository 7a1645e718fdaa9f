"""The extension's run magics: ``%ag_runs``, ``%ag_cancel``, ``%ag_graphs``, ``%ag_wait``,
``%ag_answer`` (``%%ag_session`` lives in :mod:`ag_jupyter.ipython.session_cell`).

Options are declared with IPython's ``magic_arguments`` (so ``%ag_runs?`` prints the help);
user mistakes raise ``UsageError`` (shown short, without a traceback).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..runtime import (
    AskAnswerError,
    AskClosedError,
    AskNotFoundError,
    RunManager,
    RunNotFoundError,
    RunRecord,
    get_run_manager,
)
from ..runtime.models import format_duration
from ..runtime.run_manager import check_positive
from ..widgets import history
from ..widgets.snapshot import parse_statuses, text_table
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

    # ----------------------------------------------------------------- %ag_answer
    @magic_arguments()
    @argument("id", nargs="?", help="An ask id, or the id of a run with one open ask.")
    @argument("text", nargs="*", help="The answer, as typed (the rest of the line).")
    @line_magic
    def ag_answer(self, line: str) -> None:
        """Answer a run's question (``context.channel().ask_*``):
        ``%ag_answer RUN_ID_OR_ASK_ID TEXT``. The text is the rest of the line, as typed
        (quote it, ``"..."``, to keep leading or trailing spaces, or to answer with
        nothing: ``""``). For a
        choice or approval ask it selects the option whose id, label or number it
        equals (else it is free text), as AetherGraph does. Without arguments, lists the
        open asks. A run with several open asks needs one of their ask ids.

        The same as ``get_run_manager().answer_nowait(ask_id, text)``; the panel
        answers them too (first answer wins).
        """
        manager = self.manager()
        target, _, text = line.strip().partition(" ")
        if not target:
            asks = manager.pending_asks()
            if not asks:
                print("no open asks")
                return
            for ask in asks:
                print(_ask_line(ask))
            return
        if target.startswith("-"):
            raise UsageError(
                "%ag_answer takes no options; usage: %ag_answer RUN_ID_OR_ASK_ID TEXT "
                "(or no arguments to list the open asks)"
            )
        text = text.strip()
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
            text = text[1:-1]
        open_asks = {a.ask_id: a for a in manager.pending_asks()}
        ask = open_asks.get(target)
        if ask is None:
            of_run = manager.pending_asks(target)
            if len(of_run) > 1:
                listed = "\n".join("  " + _ask_line(a) for a in of_run)
                raise UsageError(
                    f"%ag_answer: run {target} has {len(of_run)} open asks; answer one by "
                    f"its ask id:\n{listed}"
                )
            if of_run:
                ask = of_run[0]
            elif manager.find_record(target) is not None:
                raise UsageError(
                    f"%ag_answer: run {target} has no open ask (it is "
                    f"{manager.find_record(target).status.value}); %ag_answer lists them"
                )
        if not text and line.strip().partition(" ")[2].strip() == "":
            raise UsageError(
                "%ag_answer needs the answer after the id: %ag_answer RUN_ID_OR_ASK_ID TEXT "
                '(\'%ag_answer ID ""\' answers with nothing)'
            )
        try:
            reply = manager.answer_nowait(ask.ask_id if ask is not None else target, text)
        except (AskNotFoundError, AskClosedError, AskAnswerError, TypeError) as exc:
            raise UsageError(f"%ag_answer: {exc}") from None
        shown = reply.get("choice_label") or reply.get("choice") if reply.get("matched") else None
        who = f"{ask.ask_id} (run {ask.run_id})" if ask is not None else target
        print(f"{who}: answered {text!r}" + (f" -> {shown}" if shown else ""))


def _ask_line(ask: Any) -> str:
    """One line for an open ask: ids, kind, prompt, options, time left."""
    parts = [ask.ask_id, f"run={ask.run_id}", f"[{ask.kind}]", repr(ask.prompt)]
    if ask.options:
        parts.append("options: " + ", ".join(o["label"] for o in ask.options))
    if ask.deadline is not None:
        left = (ask.deadline - datetime.now(UTC)).total_seconds()
        parts.append(f"(times out in {format_duration(max(0.0, left))})")
    return "  ".join(parts)


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

