"""``@tool``: functions a graph body calls as recorded steps (AetherGraph 0.1.0a15's
``core/tools/toolkit.py``, immediate mode).

::

    @tool(outputs=["y"])
    def double(x: int) -> dict:
        return {"y": x * 2}

    @graph_fn("pipeline")
    async def pipeline(x: int, *, context):
        out = double(x=x)            # runs now; a step of this run
        return {"y": out["y"]}

Calling a tool runs it at once (a sync tool returns its outputs dict, an async one an
awaitable of it) and, inside a run or an ``open_session`` block, records the call as a step
of that run (``kind="tool"``; ``await manager.steps(run_id)``), with its inputs and outputs
previews, start time, duration and error. Outside both, it just runs. AetherGraph's graph
mode (a ``@graphify`` build, where a call adds a node) is out of scope here.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from . import current
from .graphs import resolve_context_param
from .store.steps import make_step

__all__ = ["CONTROL_KWARGS", "ToolOutputs", "tool"]

#: AetherGraph's graph-build control keywords; refused in immediate mode, as 0.1.0a15 does.
CONTROL_KWARGS = ("_after", "_name", "_condition", "_id", "_alias", "_labels")


class ToolOutputs(dict[str, Any]):
    """A tool call's outputs: a plain ``dict`` whose keys also read as attributes
    (``out["y"]`` and ``out.y``), as AetherGraph's docs use a tool result inside a graph
    body (0.1.0a15 returns a plain dict there, so ``out.y`` fails in it)."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"tool outputs have no {name!r}; they are {sorted(self)}"
            ) from None


def normalise_tool_result(result: Any) -> dict[str, Any]:
    """0.1.0a15's ``_normalize_result_to_dict``: None -> ``{}``, a dict as is, a tuple ->
    ``{"out0": v0, "out1": v1, ...}``, any other value -> ``{"result": value}``."""
    if result is None:
        return {}
    if isinstance(result, dict):
        return result
    if isinstance(result, tuple):
        return {f"out{i}": v for i, v in enumerate(result)}
    return {"result": result}


def tool(
    outputs: Iterable[str],
    inputs: Iterable[str] | None = None,
    *,
    name: str | None = None,
    version: str = "0.1.0",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Make ``fn`` (sync or async) a tool: each call runs it and is recorded as a step of
    the current run (see the module docs).

    Args:
      outputs: the output names (list of str) every call must return (required, as in
        0.1.0a15); the return value is normalised first (:func:`normalise_tool_result`).
      inputs: input names (default: the parameters, except ``*args``/``**kwargs`` and the
        context parameter).
      name: the step's name (default: the function's ``__name__``).
      version: free-form version label.

    The call takes the function's own arguments, positional or by name. A context
    parameter (annotated ``NodeContext``, or named ``context``/``ctx``) that the caller
    leaves out (or passes as None) receives the current run's or session's context, as
    the docs describe for tools run by a graph (0.1.0a15 injects nothing in immediate
    mode).

    Raises:
      TypeError: at decoration, for a class (AetherGraph's waitable ``DualStageTool``
        tools need ``@graphify``, which is out of scope) or a non-callable.
      RuntimeError: calling with a control keyword (``_after``, ``_alias``...), which only
        ``@graphify`` builds honour (0.1.0a15's message).
      ValueError: when a call's normalised result lacks a declared output (0.1.0a15's
        ``Tool <name> missing outputs: [...]``); the step records it.
    """
    output_names = list(outputs) if not isinstance(outputs, str) else [outputs]

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isclass(fn):
            raise TypeError(
                f"@tool on the class {fn.__name__}: waitable tools (DualStageTool) run only in "
                "@graphify graphs, which ag_jupyter does not support; use a function"
            )
        if not callable(fn):
            raise TypeError(f"@tool needs a function, got {type(fn).__name__}")
        sig = inspect.signature(fn)
        context_param = resolve_context_param(fn)
        skipped = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
        declared_inputs = list(inputs) if inputs is not None else [
            p.name for p in sig.parameters.values()
            if p.kind not in skipped and p.name != context_param
        ]
        tool_name = name or getattr(fn, "__name__", "tool")
        is_async = inspect.iscoroutinefunction(fn) or (
            not inspect.isfunction(fn) and inspect.iscoroutinefunction(type(fn).__call__)
        )

        def prepare(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
            ctrl = sorted(k for k in kwargs if k in CONTROL_KWARGS)
            if ctrl:
                raise RuntimeError(
                    "tool_control_kwargs_build_mode_only: tool control kwargs are only "
                    f"supported inside @graphify build mode. Received: {', '.join(ctrl)}"
                )
            bound = sig.bind_partial(*args, **kwargs)
            bound.apply_defaults()
            ctx = None
            if context_param is not None:
                ctx = bound.arguments.get(context_param)
                if ctx is None:
                    ctx = current.current_context()
                    if ctx is not None:
                        bound.arguments[context_param] = ctx
            return bound, ctx

        def step_sink(ctx: Any) -> tuple[str, Any] | None:
            if ctx is not None and getattr(ctx, "services", None) is not None:
                return ctx.run_id, ctx.services
            scope = current.current_scope()
            if scope is None:
                return None
            return scope.run_id, scope.services()

        def finish(
            bound: Any, ctx: Any, started: datetime, t0: float, result: Any,
            error: BaseException | None,
        ) -> ToolOutputs:
            out: dict[str, Any] | None = None
            if error is None:
                try:
                    out = normalise_tool_result(result)
                    missing = [k for k in output_names if k not in out]
                    if missing:
                        raise ValueError(f"Tool {tool_name} missing outputs: {missing}")
                except Exception as exc:
                    error = exc
            sink = step_sink(ctx)
            if sink is not None:
                run_id, services = sink
                shown = {k: v for k, v in bound.arguments.items() if k != context_param}
                step = make_step(
                    run_id=run_id,
                    kind="tool",
                    name=tool_name,
                    inputs=shown,
                    outputs=out if error is None else None,
                    started_at=started,
                    duration_s=time.perf_counter() - t0,
                    error=error,
                )
                try:
                    services.record_step(step)
                except Exception:  # a step that cannot be kept must not fail the call
                    pass
            if error is not None:
                raise error
            assert out is not None
            return ToolOutputs(out)

        if is_async:

            @functools.wraps(fn)
            async def async_proxy(*args: Any, **kwargs: Any) -> ToolOutputs:
                bound, ctx = prepare(args, kwargs)
                started, t0 = datetime.now(UTC), time.perf_counter()
                try:
                    result = await fn(*bound.args, **bound.kwargs)
                except Exception as exc:
                    return finish(bound, ctx, started, t0, None, exc)
                return finish(bound, ctx, started, t0, result, None)

            proxy: Callable[..., Any] = async_proxy
        else:

            @functools.wraps(fn)
            def sync_proxy(*args: Any, **kwargs: Any) -> ToolOutputs:
                bound, ctx = prepare(args, kwargs)
                started, t0 = datetime.now(UTC), time.perf_counter()
                try:
                    result = fn(*bound.args, **bound.kwargs)
                except Exception as exc:
                    return finish(bound, ctx, started, t0, None, exc)
                return finish(bound, ctx, started, t0, result, None)

            proxy = sync_proxy

        # 0.1.0a15's attributes, and readable ones.
        proxy.__aether_inputs__ = list(declared_inputs)  # type: ignore[attr-defined]
        proxy.__aether_outputs__ = list(output_names)  # type: ignore[attr-defined]
        proxy.__aether_impl__ = fn  # type: ignore[attr-defined]
        proxy.tool_name = tool_name  # type: ignore[attr-defined]
        proxy.version = version  # type: ignore[attr-defined]
        proxy.inputs = list(declared_inputs)  # type: ignore[attr-defined]
        proxy.outputs = list(output_names)  # type: ignore[attr-defined]
        return proxy

    return wrap
