"""``%%ag_session``: the input transformer and the coroutine that runs a session cell.

IPython runs a ``%%`` magic's body synchronously and never awaits a magic's result, so a
cell starting with ``%%ag_session`` is rewritten (before IPython's own cell-magic transform)
into ONE top-level ``await`` of :func:`run_session_cell`, which gets the option line and the
body as string literals. That coroutine compiles the body with
``ast.PyCF_ALLOW_TOP_LEVEL_AWAIT`` under a filename registered with IPython's compiler
cache, so the body runs on the kernel's own loop with its text and line numbers exact and
tracebacks showing the cell's own lines.
"""

from __future__ import annotations

import ast
import inspect
import linecache
import re
import shlex
import sys
from typing import Any

from IPython.core.error import UsageError

from ..runtime import open_session

MAGIC_NAME = "ag_session"
_HEADER = re.compile(r"^%%ag_session(?=\s|$)")
_MISSING = object()


class SessionCellTransformer:
    """IPython cleanup transform: rewrite a ``%%ag_session`` cell into one awaited call.

    ``%%ag_session?`` (help) and all other cells pass through unchanged. The rewrite is
    pure (the body travels as a string literal), so IPython may call it any number of
    times (``check_complete`` does).

    Args:
      shell: the InteractiveShell; with ``autoawait`` off (terminal IPython), the cell is
        rewritten to raise a ``UsageError`` that says to turn it on.
    """

    def __init__(self, shell: Any) -> None:
        self.shell = shell

    def __call__(self, lines: list[str]) -> list[str]:
        if not lines or not _HEADER.match(lines[0]):
            return lines
        header = lines[0].rstrip("\n")
        if header.rstrip().endswith("?"):
            return lines  # %%ag_session? / ?? : IPython's help
        options = header[len("%%ag_session") :].strip()
        body = "".join(lines[1:])
        module = "__import__('ag_jupyter.ipython.transformer', fromlist=['_'])"
        if not getattr(self.shell, "autoawait", True):
            return [f"{module}.needs_autoawait()\n"]
        return [f"await {module}.run_session_cell(get_ipython(), {options!r}, {body!r})\n"]


def needs_autoawait() -> None:
    """Raise the error shown for ``%%ag_session`` when IPython's autoawait is off."""
    raise UsageError(
        "%%ag_session runs its body with top-level await, which is off in this shell; "
        "turn it on with %autoawait asyncio and run the cell again."
    )


def parse_options(shell: Any, options: str) -> dict[str, Any]:
    """Parse the ``%%ag_session`` option line with the magic's ``magic_arguments`` parser.

    Returns the ``open_session`` keyword arguments that were given.

    Raises:
      UsageError: for an unknown option, a missing value or unbalanced quotes, with usage.
    """
    from .magics import session_magic_parser

    parser = session_magic_parser()
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


def _compile_body(body: str, filename: str) -> tuple[Any, Any]:
    """Compile the body as top-level-await code; split off a final expression so its value
    can be displayed like a normal cell's. Line numbers are shifted by one, so they are the
    cell's own (line 1 is the ``%%ag_session`` header)."""
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    tree = ast.parse(body, filename=filename, mode="exec")
    ast.increment_lineno(tree, 1)
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


async def _run_code(code: Any, namespace: dict[str, Any]) -> Any:
    __tracebackhide__ = True
    # eval() also runs "exec"-mode code, and returns the coroutine when the code awaits.
    result = eval(code, namespace)
    if code.co_flags & inspect.CO_COROUTINE:
        result = await result
    return result


def _cell_filename(shell: Any, raw_cell: str, caller: Any) -> str:
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


async def run_session_cell(shell: Any, options: str, body: str) -> Any:
    """Run a ``%%ag_session`` cell body inside ``open_session(...)`` on the running loop.

    ``context`` is bound in the user namespace for the body and the previous value (if any)
    is restored afterwards; the session is closed on success, on an exception and on a
    kernel interrupt (``CancelledError``/``KeyboardInterrupt``). Returns the value of the
    body's last expression, which IPython then displays like a normal cell's.

    Raises:
      UsageError: bad options or an empty body.
      Whatever the body raises (its traceback shows the cell's own lines).
    """
    __tracebackhide__ = True
    kwargs = parse_options(shell, options)
    if not body.strip():
        from .magics import session_magic_usage

        raise UsageError(
            "%%ag_session needs a body: write the code to run on the lines below it.\n"
            + session_magic_usage()
        )
    raw_cell = f"%%ag_session {options}".rstrip() + "\n" + body
    filename = _cell_filename(shell, raw_cell, sys._getframe(1))
    try:
        exec_code, eval_code = _compile_body(body, filename)
    except SyntaxError:
        shell.showsyntaxerror(filename)
        return None
    config = getattr(shell, "_ag_jupyter_config", None)
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
            await _run_code(exec_code, namespace)
            if eval_code is not None:
                return await _run_code(eval_code, namespace)
            return None
        finally:
            if previous is _MISSING:
                namespace.pop("context", None)
            else:
                namespace["context"] = previous
