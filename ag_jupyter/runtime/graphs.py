"""Graph functions and the graph registry.

``@graph_fn(name)`` turns a plain (sync or async) function into a :class:`GraphFunction`
(AetherGraph's object: ``name``, ``inputs``, ``outputs``, ``version``, ``fn``...) and
registers its :class:`GraphSpec` so the RunManager can run it by name. Awaiting a
GraphFunction runs it as a tracked run (see :mod:`.launch`, which installs the launcher:
this module sits below the manager and cannot import it).
"""

from __future__ import annotations

import functools
import inspect
import re
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import UnionType
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from . import current
from .errors import GraphNotFoundError, RunInputError
from .executors.names import check_executor

CONTEXT_PARAM_NAMES = ("context", "ctx")

# Exceptions of graph bodies whose caller awaits them (``await graph(...)``): run id -> the
# list the body's wrapper appends its exception to (see launch.py).
_raise_to: dict[str, list[BaseException]] = {}


def keep_exceptions_of(run_id: str) -> list[BaseException]:
    """Ask the body of run ``run_id`` to hand its exception (if it raises one) to the
    returned list; call before the body can start, undo with :func:`forget_exceptions_of`."""
    sink: list[BaseException] = []
    _raise_to[run_id] = sink
    return sink


def forget_exceptions_of(run_id: str) -> None:
    """Undo :func:`keep_exceptions_of`."""
    _raise_to.pop(run_id, None)


def hand_over(exc: BaseException) -> None:
    """Give ``exc``, raised by the current run's body, to a caller awaiting that run
    (``await graph(...)``); executors that ran the body elsewhere call it in the run's
    task with the exception brought back."""
    scope = current.current_scope()
    if scope is None or not scope.is_run:
        return
    sink = _raise_to.get(scope.run_id)
    if sink is not None:
        sink.append(exc)


def _flush_run_output() -> None:
    scope = current.current_scope()
    if scope is not None and scope.is_run:
        scope.flush_output()


@dataclass(eq=False)
class GraphSpec:
    """A registered graph: its function and how inputs/outputs map onto it.

    Attributes:
      name: the graph id runs refer to.
      fn: what the RunManager calls with the inputs (and the context): the user's function
        wrapped so that, when a caller awaits the run (``await graph(...)``), the body's own
        exception reaches it, its return value is normalised (:meth:`normalise_outputs`)
        and its unfinished ``print()`` line is logged. Same sync/async kind as ``function``.
      function: the user's function (sync or async), as decorated.
      inputs: input names, in declaration order.
      outputs: declared output names, or None when undeclared.
      context_param: the parameter that receives the ``NodeContext`` (or None).
      is_async: whether ``function`` is a coroutine function (sync ones run in a worker
        thread).
      executor: where its runs execute, ``"local"`` or ``"dask"``, or None to follow the
        session / kernel default (see ``runtime/executors``).
      agent_id, app_id: from ``graph_fn(as_agent=..., as_app=...)``; runs started by
        awaiting the graph carry them.
      meta: the rest of the decorator's metadata (``entrypoint``, ``flow_id``,
        ``as_agent``, ``as_app``, ``max_concurrency``).
    """

    name: str
    fn: Callable[..., Any]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...] | None
    version: str = "0.1.0"
    tags: tuple[str, ...] = ()
    description: str | None = None
    context_param: str | None = None
    is_async: bool = False
    input_model: type[BaseModel] | None = field(default=None, repr=False)
    function: Callable[..., Any] | None = field(default=None, repr=False)
    agent_id: str | None = None
    app_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, repr=False)
    executor: str | None = None

    def __post_init__(self) -> None:
        if self.function is None:
            self.function = self.fn
            self.fn = _wrap_body(self)

    def validate_inputs(self, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
        """Check ``inputs`` against the signature and return the (coerced) kwargs.

        Raises:
          RunInputError: if ``inputs`` is not a mapping, or a required input is missing, an
            unexpected one is given, or a value does not match its annotation.
        """
        if inputs is None:
            inputs = {}
        if not isinstance(inputs, Mapping):
            raise RunInputError(
                f"inputs for graph {self.name!r} must be a dict of input name -> value, "
                f"got {type(inputs).__name__}; accepted inputs: {_names(self.inputs)}"
            )
        assert self.input_model is not None
        try:
            validated = self.input_model.model_validate(dict(inputs))
        except ValidationError as exc:
            raise RunInputError(_describe_input_errors(self, exc)) from None
        values = {name: getattr(validated, name) for name in self.input_model.model_fields}
        if validated.model_extra:
            values.update(validated.model_extra)
        return values

    def normalise_outputs(self, result: Any) -> dict[str, Any]:
        """Turn a graph function's return value into the run's outputs dict, as
        AetherGraph 0.1.0a15 does (``_normalize_graph_fn_outputs``; its docs agree).

        A dict is the outputs (filtered to the declared outputs, in their order, when some
        are declared); any other value becomes ``{outputs[0]: value}`` when exactly one
        output is declared and ``{"result": value}`` when none is (an empty ``outputs``
        list counts as none, as in 0.1.0a15).

        Raises:
          ValueError: if a declared output is missing from a returned dict, or a plain
            value is returned while two or more outputs are declared (naming them).
        """
        declared = self.outputs or ()
        if isinstance(result, Mapping):
            if not declared:
                return dict(result)
            missing = [name for name in declared if name not in result]
            if missing:
                raise ValueError(
                    f"graph {self.name!r} declares outputs {list(declared)} but its "
                    f"returned dict lacks {missing}; it returned keys {sorted(map(str, result))}"
                )
            return {name: result[name] for name in declared}
        if len(declared) == 1:
            return {declared[0]: result}
        if not declared:
            return {"result": result}
        raise ValueError(
            f"graph {self.name!r} declares outputs {list(declared)} but returned a single "
            f"{type(result).__name__}; return a dict with those keys (a single value is "
            "only allowed when exactly one output is declared)"
        )


def _wrap_body(spec: GraphSpec) -> Callable[..., Any]:
    """The callable the RunManager runs for ``spec`` (see :attr:`GraphSpec.fn`)."""
    function = spec.function
    assert function is not None
    normalise = spec.normalise_outputs

    if spec.is_async:

        @functools.wraps(function)
        async def run_async_body(**kwargs: Any) -> Any:
            try:
                return normalise(await function(**kwargs))
            except BaseException as exc:
                hand_over(exc)
                raise
            finally:
                _flush_run_output()

        return run_async_body

    @functools.wraps(function)
    def run_sync_body(**kwargs: Any) -> Any:
        try:
            return normalise(function(**kwargs))
        except BaseException as exc:
            hand_over(exc)
            raise
        finally:
            _flush_run_output()

    return run_sync_body


def _names(names: Iterable[str]) -> str:
    listed = ", ".join(names)
    return listed or "(none)"


def _describe_input_errors(spec: GraphSpec, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in err["loc"]) or "(inputs)"
        if err["type"] == "missing":
            problems.append(f"missing input {loc!r}")
        elif err["type"] == "extra_forbidden":
            problems.append(f"unexpected input {loc!r}")
        else:
            problems.append(f"input {loc!r}: {err['msg']} (got {err.get('input')!r})")
    return (
        f"bad inputs for graph {spec.name!r}: {'; '.join(problems)}. "
        f"Accepted inputs: {_names(spec.inputs)}."
    )


_ANNOTATION_TOKENS = re.compile(r"[\[\]|,\s]+")
_OPTIONAL_WORDS = {"None", "NoneType", "Optional", "Union", "typing.Optional", "typing.Union"}


def _is_context_class(obj: Any) -> bool:
    return isinstance(obj, type) and obj.__name__ == "NodeContext"


def is_context_annotation(annotation: Any) -> bool:
    """Whether ``annotation`` means a ``NodeContext`` parameter: ``NodeContext``,
    ``NodeContext | None`` / ``Optional[NodeContext]``, or the same as a string (an
    unresolved ``from __future__ import annotations`` hint). As AetherGraph's
    ``is_node_context_annotation`` (by class name here: this module sits below
    ``node_context.py``)."""
    if annotation is inspect.Parameter.empty or annotation is None:
        return False
    if isinstance(annotation, str):
        tokens = [t for t in _ANNOTATION_TOKENS.split(annotation) if t]
        tokens = [t for t in tokens if t not in _OPTIONAL_WORDS]
        return len(tokens) == 1 and tokens[0].split(".")[-1] == "NodeContext"
    if _is_context_class(annotation):
        return True
    if get_origin(annotation) in (UnionType, Union):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return len(args) == 1 and _is_context_class(args[0])
    return False


def resolve_context_param(
    fn: Callable[..., Any], hints: Mapping[str, Any] | None = None
) -> str | None:
    """The parameter of ``fn`` that receives the ``NodeContext``, as AetherGraph 0.1.0a15's
    ``resolve_node_context_param`` picks it: the one parameter annotated ``NodeContext``
    (or ``NodeContext | None``) whatever its name, else the one named ``context`` or
    ``ctx``; None if there is neither.

    Raises:
      TypeError: if two parameters are annotated ``NodeContext``, or (none being
        annotated) both ``context`` and ``ctx`` exist, naming them.
    """
    sig = inspect.signature(fn)
    if hints is None:
        hints = _type_hints(fn)
    skipped = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    typed = [
        pname
        for pname, param in sig.parameters.items()
        if param.kind not in skipped
        and is_context_annotation(hints.get(pname, param.annotation))
    ]
    fn_name = getattr(fn, "__name__", type(fn).__name__)
    if len(typed) > 1:
        raise TypeError(
            f"{fn_name}() declares several NodeContext parameters: {typed}. Use exactly one; "
            "the context is injected into it."
        )
    if typed:
        return typed[0]
    legacy = [
        pname
        for pname, param in sig.parameters.items()
        if pname in CONTEXT_PARAM_NAMES and param.kind not in skipped
    ]
    if len(legacy) > 1:
        raise TypeError(
            f"{fn_name}() has both 'context' and 'ctx' parameters, and both would receive the "
            "NodeContext. Keep one, or annotate the one you mean with NodeContext."
        )
    return legacy[0] if legacy else None


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return get_type_hints(fn)
    except Exception:  # an unresolvable forward reference: resolve the others one by one
        pass
    hints: dict[str, Any] = {}
    namespace = getattr(fn, "__globals__", {})
    for pname, annotation in (getattr(fn, "__annotations__", None) or {}).items():
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)
            except Exception:
                pass  # kept as text: recognised as NodeContext by name, else validated as Any
        hints[pname] = annotation
    return hints


def build_graph_spec(
    fn: Callable[..., Any],
    name: str,
    inputs: Iterable[str] | None = None,
    outputs: Iterable[str] | None = None,
    version: str = "0.1.0",
    *,
    tags: Iterable[str] | None = None,
    description: str | None = None,
    agent_id: str | None = None,
    app_id: str | None = None,
    meta: Mapping[str, Any] | None = None,
    executor: str | None = None,
) -> GraphSpec:
    """Inspect ``fn`` and build its :class:`GraphSpec` (see :func:`graph_fn`).

    Raises:
      TypeError: if ``fn`` is not callable, ``name`` is empty, a declared input has no
        matching parameter on a function that takes no ``**kwargs``, or ``fn`` has two
        context parameters (see :func:`resolve_context_param`).
    """
    if not callable(fn):
        raise TypeError(f"graph_fn needs a function, got {type(fn).__name__}")
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"graph_fn needs a non-empty string name, got {name!r}")
    sig = inspect.signature(fn)
    hints = _type_hints(fn)
    context_param = resolve_context_param(fn, hints)
    params: dict[str, inspect.Parameter] = {}
    accepts_kwargs = False
    for pname, param in sig.parameters.items():
        annotation = hints.get(pname, param.annotation)
        if isinstance(annotation, str):  # unresolved: validate as Any
            annotation = inspect.Parameter.empty
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            accepts_kwargs = True
            continue
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        if pname == context_param:
            continue
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise TypeError(
                f"graph {name!r}: parameter {pname!r} is positional-only; graph inputs are "
                "passed by name"
            )
        params[pname] = param.replace(annotation=annotation)

    if inputs is None:
        input_names = tuple(params)
    else:
        input_names = tuple(inputs)
        unknown = [n for n in input_names if n not in params]
        if unknown and not accepts_kwargs:
            raise TypeError(
                f"graph {name!r} declares inputs {unknown} that {fn.__name__}() has no "
                f"parameter for; its parameters are {list(params)}"
            )
        undeclared = [
            p for p, prm in params.items()
            if p not in input_names and prm.default is inspect.Parameter.empty
        ]
        if undeclared:
            raise TypeError(
                f"graph {name!r}: parameters {undeclared} of {fn.__name__}() are neither "
                f"declared inputs {list(input_names)} nor have defaults"
            )
    fields: dict[str, Any] = {}
    for iname in input_names:
        param = params.get(iname)
        if param is None:
            fields[iname] = (Any, ...)
            continue
        annotation = Any if param.annotation is inspect.Parameter.empty else param.annotation
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[iname] = (annotation, default)
    model = create_model(  # type: ignore[call-overload]
        f"{_model_name(name)}Inputs",
        __config__=ConfigDict(
            extra="allow" if accepts_kwargs else "forbid", arbitrary_types_allowed=True
        ),
        **fields,
    )
    return GraphSpec(
        name=name,
        fn=fn,
        inputs=input_names,
        outputs=tuple(outputs) if outputs is not None else None,
        version=version,
        tags=tuple(tags or ()),
        description=description or inspect.getdoc(fn),
        context_param=context_param,
        is_async=inspect.iscoroutinefunction(fn),
        input_model=model,
        agent_id=agent_id,
        app_id=app_id,
        meta=dict(meta or {}),
        executor=executor,
    )


def _model_name(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() else "_" for ch in name)
    return cleaned[:1].upper() + cleaned[1:] if cleaned else "Graph"


class GraphRegistry:
    """Graphs by name. Registering a name again replaces it (latest definition wins).

    Thread-safe: graphs can be registered from any thread.
    """

    def __init__(self) -> None:
        self._graphs: dict[str, GraphSpec] = {}
        self._lock = threading.Lock()

    def register(self, spec: GraphSpec) -> GraphSpec:
        """Add or replace ``spec`` under ``spec.name`` and return it."""
        with self._lock:
            self._graphs[spec.name] = spec
        return spec

    def unregister(self, name: str) -> None:
        """Remove a graph; unknown names are ignored."""
        with self._lock:
            self._graphs.pop(name, None)

    def get(self, name: str) -> GraphSpec:
        """The graph registered as ``name``.

        Raises:
          GraphNotFoundError: if none is, listing the registered graphs.
        """
        spec = self._graphs.get(name)
        if spec is None:
            raise GraphNotFoundError(
                f"no graph named {name!r}; registered graphs: {_names(sorted(self._graphs))}. "
                "Define it with @graph_fn(name=...) in a cell or module that has run."
            )
        return spec

    def names(self) -> list[str]:
        """Registered graph ids, sorted."""
        return sorted(self._graphs)

    def specs(self) -> list[GraphSpec]:
        """Registered graphs, sorted by name."""
        return [self._graphs[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._graphs

    def __len__(self) -> int:
        return len(self._graphs)


default_registry = GraphRegistry()


def graph_fn(
    name: str,
    inputs: Iterable[str] | None = None,
    outputs: Iterable[str] | None = None,
    version: str = "0.1.0",
    *,
    entrypoint: bool = False,
    flow_id: str | None = None,
    tags: Iterable[str] | None = None,
    as_agent: Mapping[str, Any] | None = None,
    as_app: Mapping[str, Any] | None = None,
    description: str | None = None,
    agent: str | None = None,
    max_concurrency: int | None = None,
    registry: GraphRegistry | None = None,
    executor: str | None = None,
) -> Callable[[Callable[..., Any]], GraphFunction]:
    """Declare and register a graph function under ``name``; returns a
    :class:`GraphFunction` (AetherGraph 0.1.0a15's ``graph_fn`` signature).

    ``inputs`` default to the function's parameters (0.1.0a15's code rejects a decorator
    without them at import; its docs omit them, and so may you). The context is injected
    into the parameter annotated ``NodeContext`` (or ``NodeContext | None``), else the one
    named ``context`` or ``ctx``; it is never an input. Inputs are validated with pydantic
    from the annotations when a run is submitted. The function may be sync (it then runs
    in a worker thread) or async (on the event loop). Re-running the defining cell
    replaces the graph. ``await graph(...)`` runs it as a tracked run (see
    :class:`GraphFunction`); ``spawn_run(name, ...)`` runs it by name.

    Args:
      name: graph id (str) used by ``spawn_run(name, ...)`` and shown in the panel.
      inputs: input names (iterable of str), or None for the function's parameters.
      outputs: output names (iterable of str), or None for "whatever is returned" (see
        :meth:`GraphSpec.normalise_outputs`).
      version: free-form version label.
      entrypoint, flow_id: AetherGraph registry metadata, kept in ``spec.meta``.
      tags: labels shown by ``%ag_graphs``.
      as_agent: AetherGraph's ``AgentConfig`` dict. Runs of this graph started by awaiting
        it (or ``run_async``) carry ``agent_id = as_agent["id"]``, or the graph's name
        when the dict has no ``id`` (0.1.0a15 registers the agent under the graph's name
        then, while its own direct calls carry None: the record should say which agent
        ran). The dict is kept in ``spec.meta["as_agent"]``.
      as_app: AetherGraph's ``AppConfig`` dict; ``app_id`` as for ``as_agent``.
      description: defaults to the function's docstring.
      agent: the docs' older form of ``as_agent={"id": agent}``.
      max_concurrency: accepted as the concurrency docs write it and kept in
        ``spec.meta``; a graph function has no internal scheduler to limit (0.1.0a15
        ignores it for graph functions too).
      registry: where to register (default: the process-wide registry).
      executor: where its runs execute: ``"local"`` (this process), ``"dask"`` (a Dask
        worker; see README "Outgrowing the kernel: Dask" for what the body must not
        assume there), or None (the default: its session's choice, else the kernel's,
        ``%config AgJupyter.executor``).

    Raises:
      TypeError: at decoration, for a function that is not callable, an empty name,
        declared inputs the function has no parameter for, two context parameters, or an
        ``as_agent``/``as_app`` that is not a dict.
      ValueError: for an executor other than ``"local"`` / ``"dask"``.
      ExecutorNotAvailableError: for ``executor="dask"`` without ``distributed``
        installed (``pip install 'ag-jupyter[dask]'``).
    """
    executor = check_executor(executor, where="graph_fn(executor=...)")
    agent_cfg = _config_dict("as_agent", as_agent)
    if agent is not None:
        agent_cfg = {"id": str(agent), **(agent_cfg or {})}
    app_cfg = _config_dict("as_app", as_app)
    meta: dict[str, Any] = {"entrypoint": bool(entrypoint), "flow_id": flow_id}
    if agent_cfg is not None:
        meta["as_agent"] = agent_cfg
    if app_cfg is not None:
        meta["as_app"] = app_cfg
    if max_concurrency is not None:
        meta["max_concurrency"] = max_concurrency

    def decorate(fn: Callable[..., Any]) -> GraphFunction:
        if isinstance(fn, GraphFunction):
            fn = fn.fn
        spec = build_graph_spec(
            fn,
            name,
            inputs,
            outputs,
            version,
            tags=tags,
            description=description,
            agent_id=None if agent_cfg is None else str(agent_cfg.get("id") or name),
            app_id=None if app_cfg is None else str(app_cfg.get("id") or name),
            meta=meta,
            executor=executor,
        )
        (registry if registry is not None else default_registry).register(spec)
        return GraphFunction(spec)

    return decorate


def _config_dict(what: str, value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(
            f"graph_fn({what}=...) takes a dict such as {{'id': 'my-agent', 'title': ...}}, "
            f"got {type(value).__name__}"
        )
    return dict(value)


#: Signature of the launcher :mod:`.launch` installs:
#: ``launcher(graph_function, args, kwargs) -> awaitable outputs``.
Launcher = Callable[["GraphFunction", tuple[Any, ...], dict[str, Any]], Awaitable[Any]]


class GraphFunction:
    """What ``@graph_fn`` returns: AetherGraph's ``GraphFunction``, runnable as a tracked run.

    ``await graph(x=1)`` (keyword arguments are inputs; positional ones fill the inputs in
    declaration order, as AetherGraph's docs write ``await step1(x)``, though 0.1.0a15
    refuses positional arguments) submits a run to the current loop's RunManager, waits for
    it and returns its outputs dict (normalised, see :meth:`GraphSpec.normalise_outputs`).
    If the body raises, that exception is raised here (the run's record keeps it too); if
    the run is canceled, ``asyncio.CancelledError`` is. Called from inside a graph body (or
    with ``context=``/``ctx=`` passed explicitly, as 0.1.0a15 allows), the run is a child:
    ``parent_run_id`` is the caller's run, it inherits the session (and agent/app unless
    this graph has its own) and holds no concurrency slot, so a parent waiting on children
    cannot deadlock the limit. Cancelling the awaiting caller cancels the run. A call from
    outside any run holds a slot like any other run.

    Attributes (AetherGraph's): ``graph_id`` and ``name`` (the id), ``fn`` (the decorated
    function), ``inputs`` (input names: the declared ones, or the function's parameters),
    ``outputs`` (declared output names, ``[]`` when none), ``version``, ``agent_id``,
    ``app_id``, ``registry_key`` (None), ``last_graph`` / ``last_context`` /
    ``last_memory_snapshot`` (always None: no TaskGraph is built). Ours: ``spec`` (the
    registered :class:`GraphSpec`; also ``__graph_spec__``).
    """

    #: Installed by :mod:`.launch` (imported with ``ag_jupyter.runtime``).
    launcher: ClassVar[Launcher | None] = None
    #: ``sync_runner(graph_function, args, kwargs)``: the blocking form, from :mod:`.launch`.
    sync_runner: ClassVar[Callable[..., Any] | None] = None

    def __init__(self, spec: GraphSpec) -> None:
        self.spec = spec
        self.graph_id = spec.name
        self.name = spec.name
        assert spec.function is not None
        self.fn = spec.function
        self.inputs = list(spec.inputs)
        self.outputs = list(spec.outputs or ())
        self.version = spec.version
        self.agent_id = spec.agent_id
        self.app_id = spec.app_id
        self.tags = list(spec.tags)
        self.description = spec.description
        self.registry_key: str | None = None
        self.last_graph: Any = None
        self.last_context: Any = None
        self.last_memory_snapshot: Any = None
        functools.update_wrapper(self, self.fn, updated=())

    @property
    def __graph_spec__(self) -> GraphSpec:
        """The registered :class:`GraphSpec` (the attribute ``graph_fn`` used to set)."""
        return self.spec

    def __repr__(self) -> str:
        kind = "async" if self.spec.is_async else "sync"
        return (
            f"<GraphFunction {self.name!r} v{self.version} ({kind}): inputs {self.inputs}, "
            f"outputs {self.outputs or '(any)'}>"
        )

    def __call__(self, *args: Any, **inputs: Any) -> Awaitable[dict[str, Any]]:
        """Run as a tracked run; ``await`` it for the outputs dict (see the class docs).

        Raises (when awaited):
          RunInputError: for missing, unexpected or ill-typed inputs, or more positional
            arguments than inputs.
          Whatever the body raised; ``asyncio.CancelledError`` if the run was canceled.
          RuntimeError: outside a running event loop.
        """
        launcher = type(self).launcher
        if launcher is None:
            raise RuntimeError("no graph launcher: import ag_jupyter.runtime first")
        return launcher(self, args, inputs)

    async def run(self, *, env: Any = None, **inputs: Any) -> dict[str, Any]:
        """AetherGraph's ``GraphFunction.run(env=None, **inputs)``: the same as awaiting
        the graph. ``retry=`` and ``max_concurrency=`` are accepted (and ignored, as
        0.1.0a15 ignores them for graph functions).

        Raises:
          NotImplementedError: if ``env`` (an AetherGraph ``RuntimeEnv``) is given.
        """
        if env is not None:
            raise NotImplementedError(
                "GraphFunction.run(env=...) takes an AetherGraph RuntimeEnv, which this "
                "runtime has none of; call `await graph(**inputs)` or "
                "`await run_async(graph, inputs)` instead"
            )
        return await self(**inputs)

    def sync(self, *args: Any, **inputs: Any) -> dict[str, Any]:
        """AetherGraph's blocking form: ``graph.sync(x=1)`` is ``run(graph, {"x": 1})``
        (see :func:`ag_jupyter.runner.run`: from a notebook cell, ``await graph(...)``
        instead)."""
        runner = type(self).sync_runner
        if runner is None:
            raise RuntimeError("no graph launcher: import ag_jupyter.runtime first")
        return runner(self, args, inputs)  # type: ignore[no-any-return]

    def io_signature(self) -> dict[str, list[dict[str, Any]]]:
        """Inputs and outputs as AetherGraph's ``io_signature()`` lists them:
        ``{"inputs": [{"name", "type", "required", "default"}], "outputs": [{"name",
        "type", "required"}]}``, ``type`` being the annotation's name (or None)."""
        sig = inspect.signature(self.fn)
        hints = _type_hints(self.fn)
        slots = []
        for iname in self.inputs:
            param = sig.parameters.get(iname)
            required = param is None or param.default is inspect.Parameter.empty
            annotation = hints.get(iname)
            slots.append(
                {
                    "name": iname,
                    "type": _type_name(annotation),
                    "required": required,
                    "default": None if required or param is None else param.default,
                }
            )
        ret = hints.get("return")
        names = self.outputs or (["result"] if ret is not None else [])
        outs = [
            {"name": n, "type": _type_name(ret) if len(names) == 1 else None, "required": True}
            for n in names
        ]
        return {"inputs": slots, "outputs": outs}


def _type_name(annotation: Any) -> str | None:
    if annotation is None:
        return None
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)
