"""``%%ag_session``: the whole cell-magic feature (transformer, body runner, option parser,
interrupt handling and the ``SessionMagics`` class).

How a session cell runs:

1. IPython runs a ``%%`` magic's body synchronously and never awaits a magic's result, so
   :class:`SessionCellTransformer` (a cleanup transform, run before IPython's cell-magic
   transform) rewrites a cell starting with ``%%ag_session`` into ONE top-level ``await`` of
   :func:`run_session_cell`. The body first goes through IPython's own line and token
   transforms (``%timeit``, ``!ls``, ``x = !cmd``, ``obj?``) with the header line replaced
   by a blank one, so line k of the Python source is line k of the cell. It is compiled
   there once: a ``SyntaxError`` is raised from the transform, which IPython reports like a
   plain cell's (the cell's own line and caret; status ``error``; "Run All" stops).
2. :func:`run_session_cell` compiles the body with ``ast.PyCF_ALLOW_TOP_LEVEL_AWAIT`` under
   the cell's own filename (IPython shows it as ``Cell In[n]``; linecache holds the raw
   cell), opens ``open_session(...)``, binds ``context`` and runs the body on the kernel's
   loop, displaying its last expression like a normal cell.
3. Interrupts (:class:`_CellInterrupts`). ipykernel 7.4 handles SIGINT for an awaiting cell
   by scheduling a callback with a non-thread-safe ``call_soon`` from the signal handler;
   when the signal arrives while the loop sleeps in ``select``, the handler runs, ``select``
   is resumed (PEP 475) and nothing runs the callback until the loop wakes for another
   reason (seen: an ``await asyncio.sleep(20)`` cell, plain or not, stops after 19 s), and
   blocking code in such a cell (``while True: pass``, ``time.sleep``) never sees the
   interrupt at all. For the duration of a session cell, on the kernel's main thread, the
   SIGINT handler is replaced by one that:

   - raises ``KeyboardInterrupt`` at once when the body's own code is running (blocking),
     as the kernel's default handler does in a plain cell. If runtime, asyncio or
     ipykernel-output code is on the stack at that moment (inside ``spawn_run``, a
     ``print``'s flush), a KeyboardInterrupt there could leave a run half-registered or
     the output stream stuck, so the interrupt waits: a trace function on the innermost
     user frame raises it as soon as that code returns to it (``sys.settrace`` for those
     few microseconds; not when a debugger's tracer is set), or, if that code awaits
     first, the cell's task is cancelled at that await;
   - when the loop is idle or running something else (a run's task, a panel callback),
     cancels the cell's task with ``call_soon_threadsafe`` (which wakes ``select``); the
     ``CancelledError`` this throws into the body's ``await`` leaves the cell as a
     ``KeyboardInterrupt``, as in a plain blocking cell;
   - while the session is being opened or closed, only remembers the interrupt: the cell
     ends with ``KeyboardInterrupt`` once the session is closed.

   Runs spawned from the cell are never touched (they run in their own tasks), the session
   always closes, and the previous handler is restored when the cell ends.
"""

from __future__ import annotations
import __future__

import ast
import asyncio
import dis
import inspect
import linecache
import re
import shlex
import signal
import sys
import threading
import tokenize
from io import StringIO
from types import CodeType, FrameType, TracebackType
from typing import Any

from IPython.core.error import UsageError
from IPython.core.inputtransformer2 import leading_empty_lines
from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from ..runtime import open_session
from .blocking import run_blocking
from .config import extension_config

MAGIC_NAME = "ag_session"
_HEADER = re.compile(r"^%%ag_session(?=\s|$)")
_MODULE = "__import__('ag_jupyter.ipython.session_cell', fromlist=['_'])"
_MISSING = object()
# __future__ imports of earlier cells (kept by IPython's compiler) apply to session bodies.
_FUTURE_FLAGS = 0
for _name in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _name).compiler_flag
del _name
# Modules whose code, when an interrupt arrives in it, must not get a KeyboardInterrupt in
# the middle of a statement: the runtime and asyncio keep run and task state, and
# ipykernel's output streams (a print's flush) and zmq can be left unable to send, so
# later cells lose their output. The interrupt lands when that code returns to user code,
# or at its next await.
_NOT_INTERRUPTIBLE = ("ag_jupyter.", "asyncio", "ipykernel.iostream", "zmq")


# --------------------------------------------------------------------------- magics
@magics_class
class SessionMagics(Magics):
    """The ``%%ag_session`` cell magic (registered by ``%load_ext ag_jupyter``).

    Cells are rewritten by :class:`SessionCellTransformer` before IPython's cell-magic
    handling sees them; the magic itself is reached by ``%%ag_session?`` (help) and by a
    direct ``get_ipython().run_cell_magic('ag_session', line, body)`` call.
    """

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
    @argument(
        "--max-concurrency",
        dest="max_concurrency",
        type=int,
        metavar="N",
        help="At most N of this session's runs at once (open_session(max_concurrency=N)).",
    )
    @argument(
        "--executor",
        dest="executor",
        choices=("local", "dask"),
        help="Where this session's runs execute (open_session(executor=...); default: "
        "AgJupyter.executor).",
    )
    @cell_magic
    def ag_session(self, line: str, cell: str) -> Any:
        """Run the cell inside ``open_session(...)`` with ``context`` bound.

        The body runs on the kernel's event loop: top-level ``await`` works and spawned
        runs keep going after the cell. IPython syntax (``%timeit``, ``!ls``, ``obj?``)
        works as in a plain cell. ``context`` is restored to its previous value
        afterwards; the session closes even on an error or an interrupt. The cell's last
        expression is displayed as usual. A kernel interrupt stops the cell (blocking or
        awaiting) with ``KeyboardInterrupt``; runs it spawned keep running.

        Example::

            %%ag_session --session-id demo
            run_id = await context.runner().spawn_run("slow", inputs={"seconds": 5})
        """
        # Reached only by a direct run_cell_magic(...) call: cells are rewritten by the
        # input transformer before IPython's cell-magic handling sees them.
        raw_cell = f"%%ag_session {line}".rstrip() + "\n" + cell
        source = body_source(self.shell, cell)
        return run_blocking(
            self.shell,
            lambda: run_session_cell(
                self.shell, line, source, raw_cell, handle_interrupts=False
            ),
            what="%%ag_session via run_cell_magic",
            alternative="write it as a %%ag_session cell (the cell form runs on the "
            "kernel's loop)",
            config=extension_config(self.shell),
            may_step=not _awaits(source),
        )


def session_magic_usage() -> str:
    """The usage line of ``%%ag_session``."""
    return SessionMagics.ag_session.parser.format_usage()


def parse_options(options: str) -> dict[str, Any]:
    """Parse the ``%%ag_session`` option line with the magic's ``magic_arguments`` parser.

    Args:
      options: the text after ``%%ag_session`` on the header line (POSIX shell quoting).

    Returns the ``open_session`` keyword arguments that were given.

    Raises:
      UsageError: for an unknown option, a missing value or unbalanced quotes, with usage.
    """
    parser = SessionMagics.ag_session.parser
    try:
        argv = shlex.split(options)  # POSIX rules: quotes group words and are removed
    except ValueError as exc:  # unbalanced quotes
        raise UsageError(
            f"%%ag_session: cannot parse options {options!r}: {exc}\n{parser.format_usage()}"
        ) from None
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        raise UsageError(f"%%ag_session: {exc}\n{parser.format_usage()}") from None
    return {k: v for k, v in vars(args).items() if v is not None}


# ----------------------------------------------------------------------- transform
class SessionCellTransformer:
    """IPython cleanup transform: rewrite a ``%%ag_session`` cell into one awaited call.

    ``%%ag_session?`` (help) and all other cells pass through unchanged. The body is run
    through IPython's input transforms and compiled here, so a ``SyntaxError`` (or
    ``IndentationError``) in it is raised from the transform with the cell's own line
    numbers; IPython then reports it exactly as a plain cell's.

    Args:
      shell: the InteractiveShell; with ``autoawait`` off (terminal IPython), the cell is
        rewritten to raise a ``UsageError`` that says to turn it on.

    Raises:
      SyntaxError: when the body does not compile (``filename`` is the cell's, so IPython
        shows ``Cell In[n], line k``).
    """

    # IPython's check_complete() skips transforms with side effects, so a console treats
    # an unfinished %%ag_session cell like any cell magic (complete at a blank line)
    # instead of reporting its body's SyntaxError while it is being typed. The side
    # effect: a failing cell's name is registered with IPython's compiler cache.
    has_side_effects = True

    def __init__(self, shell: Any) -> None:
        self.shell = shell

    def __call__(self, lines: list[str]) -> list[str]:
        if not lines or not _HEADER.match(lines[0]):
            return lines
        header = lines[0].rstrip("\n")
        if header.rstrip().endswith("?"):
            return lines  # %%ag_session? / ?? : IPython's help
        if not getattr(self.shell, "autoawait", True):
            return [f"{_MODULE}.needs_autoawait()\n"]
        options = header[len("%%ag_session") :].strip()
        body = "".join(lines[1:])
        raw_cell = "".join(lines)
        source = body_source(self.shell, body)
        if source.strip():
            check_syntax(self.shell, source, raw_cell)
        call = (
            f"await {_MODULE}.run_session_cell(get_ipython(), {options!r}, {source!r}, "
            f"{raw_cell!r})"
        )
        # IPython's displayhook looks for a trailing ';' in the transformed cell.
        return [call + (";" if _ends_with_semicolon(source) else "") + "\n"]


def body_source(shell: Any, body: str) -> str:
    """The Python source of a ``%%ag_session`` body, with its line k the cell's line k.

    The header line becomes a blank line, and the body goes through IPython's own input
    transforms as a plain cell would (prompt stripping, ``%magic``, ``!cmd``,
    ``x = !cmd``, ``obj?``, then ``input_transformers_post``); IPython's transforms that
    drop lines (leading blank lines) and cell magics (a ``%%`` line is only a cell magic
    on a cell's first line) are not applied.

    Args:
      shell: the InteractiveShell whose transforms to use.
      body: the cell's text after the header line.
    """
    manager = shell.input_transformer_manager
    lines = body.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    for transform in manager.cleanup_transforms:
        if transform is leading_empty_lines or isinstance(transform, SessionCellTransformer):
            continue
        if lines:
            lines = transform(lines)
    lines = manager.do_token_transforms(["\n", *lines])
    for transform in shell.input_transformers_post:
        lines = transform(lines)
    return "".join(lines)


def check_syntax(shell: Any, source: str, raw_cell: str) -> None:
    """Compile ``source`` as a session body; raise its ``SyntaxError`` located in the cell.

    Raises:
      SyntaxError: with ``filename`` registered with IPython's compiler cache for this
        execution count (shown as ``Cell In[n]``) and the raw cell in linecache.
    """
    try:
        compile(source, "<ag_session>", "exec", flags=_flags(shell), dont_inherit=True)
    except SyntaxError as exc:
        exc.filename = shell.compile.cache(raw_cell, shell.execution_count, raw_code=raw_cell)
        raise


def needs_autoawait() -> None:
    """Raise the error shown for ``%%ag_session`` when IPython's autoawait is off."""
    raise UsageError(
        "%%ag_session runs its body with top-level await, which is off in this shell; "
        "turn it on with %autoawait asyncio and run the cell again."
    )


# --------------------------------------------------------------------------- running
async def run_session_cell(
    shell: Any,
    options: str,
    source: str,
    raw_cell: str | None = None,
    *,
    handle_interrupts: bool = True,
) -> Any:
    """Run a ``%%ag_session`` cell body inside ``open_session(...)`` on the running loop.

    ``context`` is bound in the user namespace for the body and the previous value (if any)
    is restored afterwards; the session is closed on success, on an exception and on a
    kernel interrupt. Returns the value of the body's last expression, which IPython then
    displays like a normal cell's.

    Args:
      shell: the InteractiveShell.
      options: the header's option line (see ``%%ag_session?``).
      source: the body's Python source from :func:`body_source` (line k = cell line k).
      raw_cell: the cell as typed, for tracebacks (default: rebuilt from the arguments).
      handle_interrupts: replace the SIGINT handler while the cell runs (see the module
        docstring); only for a cell's own top-level await, on the main thread.

    Raises:
      UsageError: bad options or an empty body.
      KeyboardInterrupt: the kernel was interrupted while the cell ran.
      Whatever the body raises (its traceback shows the cell's own lines).
    """
    __tracebackhide__ = True
    interrupts = _CellInterrupts.install() if handle_interrupts else None
    try:
        value = await _run_in_session(shell, options, source, raw_cell, interrupts)
    except KeyboardInterrupt as exc:
        _trim_tail(exc.__traceback__)  # not the handler's frame: the body's line is last
        raise
    except asyncio.CancelledError as exc:
        if interrupts is None or not interrupts.cancels:
            raise
        interrupts.uninstall()
        raise _as_keyboard_interrupt(exc) from None
    finally:
        if interrupts is not None:
            interrupts.uninstall()
    if interrupts is not None and interrupts.pending:
        raise KeyboardInterrupt  # it came while the session was closing
    return value


async def _run_in_session(
    shell: Any,
    options: str,
    source: str,
    raw_cell: str | None,
    interrupts: _CellInterrupts | None,
) -> Any:
    __tracebackhide__ = True
    kwargs = parse_options(options)
    if not source.strip():
        raise UsageError(
            "%%ag_session needs a body: write the code to run on the lines below it.\n"
            + session_magic_usage()
        )
    if raw_cell is None:
        raw_cell = f"%%ag_session {options}".rstrip() + source
    filename = _cell_filename(shell, raw_cell, sys._getframe(2))
    exec_code, eval_code = _compile_body(shell, source, filename)
    config = extension_config(shell)
    if "session_id" not in kwargs and config is not None and config.default_session_id:
        kwargs["session_id"] = config.default_session_id
    session_kwargs = {
        k: kwargs.pop(k) for k in ("run_id", "graph_id", "node_id") if k in kwargs
    }
    namespace = shell.user_ns
    previous = namespace.get("context", _MISSING)
    async with open_session(**session_kwargs, **kwargs) as context:
        namespace["context"] = context
        try:
            if interrupts is not None:
                interrupts.enter_body({exec_code} | ({eval_code} if eval_code else set()))
            try:
                await _run_code(exec_code, namespace)
                if eval_code is not None:
                    return await _run_code(eval_code, namespace)
                return None
            finally:
                if interrupts is not None:
                    interrupts.leave_body()
        finally:
            if previous is _MISSING:
                namespace.pop("context", None)
            else:
                namespace["context"] = previous


def _flags(shell: Any) -> int:
    return ast.PyCF_ALLOW_TOP_LEVEL_AWAIT | (getattr(shell.compile, "flags", 0) & _FUTURE_FLAGS)


def _compile_body(shell: Any, source: str, filename: str) -> tuple[CodeType, CodeType | None]:
    """Compile the body as top-level-await code, after the shell's AST transformers; split
    off a final expression so its value can be displayed like a normal cell's."""
    flags = _flags(shell)
    tree = ast.parse(source, filename=filename, mode="exec")
    tree = shell.transform_ast(tree) if hasattr(shell, "transform_ast") else tree
    last_expr = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last_expr = ast.Expression(tree.body.pop().value)
    exec_code = compile(tree, filename, "exec", flags=flags, dont_inherit=True)
    eval_code = (
        compile(last_expr, filename, "eval", flags=flags, dont_inherit=True)
        if last_expr is not None
        else None
    )
    return exec_code, eval_code


async def _run_code(code: CodeType, namespace: dict[str, Any]) -> Any:
    __tracebackhide__ = True
    # eval() also runs "exec"-mode code, and returns the coroutine when the code awaits.
    result = eval(code, namespace)
    if code.co_flags & inspect.CO_COROUTINE:
        result = await result
    return result


def _cell_filename(shell: Any, raw_cell: str, caller: FrameType | None) -> str:
    """The filename to compile the body under, with the raw cell in linecache.

    Called from a rewritten cell, the awaiting frame is the cell's own code: reuse its
    filename (IPython maps it to "Cell In[n]") and show the raw cell's lines for it, so a
    traceback's line k is the cell's line k. Otherwise (a direct run_cell_magic call)
    register the raw cell with IPython's compiler cache.
    """
    if caller is not None and caller.f_code.co_name == "<module>":
        filename = caller.f_code.co_filename
    else:
        filename = shell.compile.cache(raw_cell, shell.execution_count, raw_code=raw_cell)
    linecache.cache[filename] = (
        len(raw_cell), None, raw_cell.splitlines(keepends=True), filename
    )
    return filename


def _ends_with_semicolon(source: str) -> bool:
    try:
        tokens = list(tokenize.generate_tokens(StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return False
    skip = (tokenize.ENDMARKER, tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT,
            tokenize.DEDENT, tokenize.INDENT)
    for token in reversed(tokens):
        if token.type in skip:
            continue
        return token.type == tokenize.OP and token.string == ";"
    return False


def _awaits(source: str) -> bool:
    try:
        code = compile(source, "<ag_session>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError:
        return False
    return bool(code.co_flags & inspect.CO_COROUTINE)


# ------------------------------------------------------------------------ interrupts
class _CellInterrupts:
    """The SIGINT handler of one running session cell (see the module docstring).

    Only ever touched on the loop's (main) thread: a Python signal handler runs there,
    between two bytecodes of whatever the thread is doing.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
        self.loop = loop
        self.task = task
        self.body_codes: frozenset[CodeType] = frozenset()
        self.in_body = False
        self.pending = False  # an interrupt not delivered to the body
        self.cancels = 0  # cancels of the cell's task requested for an interrupt
        self._deferred = False  # an interrupt waits for runtime code to return or await
        self._armed: FrameType | None = None  # the frame to interrupt at its next opcode
        self._previous: Any = None
        self._installed = False

    @classmethod
    def install(cls) -> _CellInterrupts | None:
        """Install the handler for the current task's cell; None where signals cannot be
        handled (not the main thread, no task, a handler not set from Python)."""
        if threading.current_thread() is not threading.main_thread():
            return None  # e.g. an ipykernel subshell: signals reach only the main thread
        task = asyncio.current_task()
        if task is None or signal.getsignal(signal.SIGINT) is None:
            return None
        guard = cls(asyncio.get_running_loop(), task)
        guard._previous = signal.signal(signal.SIGINT, guard._on_sigint)
        guard._installed = True
        return guard

    def uninstall(self) -> None:
        """Restore the previous handler and undo the cancels this handler requested (the
        cell's task goes on to report the interrupt). Idempotent."""
        if not self._installed:
            return
        self._installed = False
        self.in_body = False
        self._disarm()
        signal.signal(signal.SIGINT, self._previous)
        for _ in range(self.cancels):
            self.task.uncancel()

    def enter_body(self, codes: set[CodeType]) -> None:
        """The body starts now. Raises ``KeyboardInterrupt`` if one came before it."""
        self.body_codes = frozenset(codes)
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt
        self.in_body = True

    def leave_body(self) -> None:
        """The body has ended (normally or not); later interrupts wait for the clean-up."""
        self.in_body = False
        self._disarm()

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        __tracebackhide__ = True
        if not self.in_body:
            self.pending = True  # opening or closing the session: never cut that short
            return
        if asyncio.current_task(self.loop) is not self.task:
            # The loop is idle or runs another task: cancel the cell's task at its await
            # (call_soon_threadsafe also wakes select(), unlike ipykernel's call_soon).
            self.loop.call_soon_threadsafe(self._cancel)
            return
        # The cell's own code is running (blocking).
        target = _safe_frame(frame, self.body_codes)
        if target is not None and target is frame:
            raise KeyboardInterrupt  # user code on top: as the default handler would
        # Runtime, asyncio or output code is mid-statement on top of the body: interrupt it
        # when that code returns to it, or, if it suspends first, at its await.
        self._deferred = True
        if target is not None and sys.gettrace() is None:  # (a debugger's tracer: keep it)
            self._armed = target
            target.f_trace_opcodes = True
            target.f_trace = self._trace
            sys.settrace(_no_trace)  # turns tracing on; new frames are not traced
        self.loop.call_soon(self._cancel_if_armed)

    def _trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        __tracebackhide__ = True
        if self._armed is frame and event in ("line", "opcode"):
            if _suspending(frame):
                # The runtime code it called suspends (its await chain yields through
                # this frame): raising here would abandon that code mid-call. Let it
                # suspend; _cancel_if_armed then cancels the task at that await.
                return self._trace
            self._disarm()
            self._deferred = False
            raise KeyboardInterrupt
        return self._trace

    def _disarm(self) -> None:
        target, self._armed = self._armed, None
        if target is not None:
            target.f_trace = None
            target.f_trace_opcodes = False
            if sys.gettrace() is _no_trace:
                sys.settrace(None)

    def _cancel_if_armed(self) -> None:
        # Runs once the cell's task has suspended (or ended): if the armed frame did not
        # get control back first, the interrupt lands at the await it suspended in.
        if self._deferred:
            self._deferred = False
            self._disarm()
            self._cancel()

    def _cancel(self) -> None:
        if self.in_body and not self.task.done():
            self.task.cancel()
            self.cancels += 1
        else:
            self.pending = True


# The opcodes a coroutine frame runs while an await it is in suspends or resumes
# (CPython 3.11-3.13 bytecode for ``await``).
_SUSPENDING_OPCODES = frozenset(
    dis.opmap[name]
    for name in ("YIELD_VALUE", "RESUME", "JUMP_BACKWARD_NO_INTERRUPT")
    if name in dis.opmap
)
_ASYNC_FLAGS = inspect.CO_COROUTINE | inspect.CO_ITERABLE_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _suspending(frame: FrameType) -> bool:
    """Whether ``frame`` (a user coroutine's, at an ``opcode`` trace event) is about to
    suspend in, or resume from, the await it is in: its awaited runtime call is not done."""
    if not frame.f_code.co_flags & _ASYNC_FLAGS or frame.f_lasti < 0:
        return False
    return frame.f_code.co_code[frame.f_lasti] in _SUSPENDING_OPCODES


def _no_trace(frame: FrameType, event: str, arg: Any) -> None:
    """A global trace function that traces nothing (``sys.settrace`` must be on for a
    frame's own ``f_trace`` to be called)."""
    return None


def _safe_frame(frame: FrameType | None, body_codes: frozenset[CodeType]) -> FrameType | None:
    """The innermost frame between ``frame`` and the body's own frame (both included) with
    only user code from it out to the body: ``frame`` itself when no runtime or asyncio
    code is on the stack. None when the body's frame is not on the stack."""
    safe = frame
    while frame is not None:
        if frame.f_code in body_codes:
            return safe
        parent = frame.f_back
        if str(frame.f_globals.get("__name__", "")).startswith(_NOT_INTERRUPTIBLE):
            safe = parent  # raising here or inside would cut runtime code short
        frame = parent
    return None


def _as_keyboard_interrupt(exc: asyncio.CancelledError) -> KeyboardInterrupt:
    """A ``KeyboardInterrupt`` with the traceback of the cancelled await, without the
    asyncio frames at its end (they say nothing about the cell)."""
    return KeyboardInterrupt().with_traceback(_trim_tail(exc.__traceback__))


def _trim_tail(tb: TracebackType | None) -> TracebackType | None:
    """Cut the frames at the end of ``tb`` that are asyncio's or this module's signal
    handler and tracer, so a traceback ends where the cell's code was interrupted."""
    last_kept = None
    walk = tb
    while walk is not None:
        frame = walk.tb_frame
        if frame.f_code not in _HANDLER_CODES and not str(
            frame.f_globals.get("__name__", "")
        ).startswith("asyncio"):
            last_kept = walk
        walk = walk.tb_next
    if last_kept is not None:
        last_kept.tb_next = None
    return tb


_HANDLER_CODES = (_CellInterrupts._on_sigint.__code__, _CellInterrupts._trace.__code__)
