"""Graph functions and the graph registry.

``@graph_fn(name)`` turns a plain (sync or async) function into a registered graph that the
RunManager can run. The shape of the decorator follows AetherGraph's ``graph_fn``.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from .errors import GraphNotFoundError, RunInputError

CONTEXT_PARAM_NAMES = ("context", "ctx")


@dataclass(eq=False)
class GraphSpec:
    """A registered graph: its function and how inputs/outputs map onto it.

    Attributes:
      name: the graph id runs refer to.
      fn: the user's function (sync or async).
      inputs: input names, in declaration order.
      outputs: declared output names, or None when undeclared.
      context_param: the parameter that receives the ``NodeContext`` (or None).
      is_async: whether ``fn`` is a coroutine function (sync ones run in a worker thread).
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
        """Turn a graph function's return value into the run's outputs dict.

        A dict is the outputs (filtered to declared outputs); any other value becomes
        ``{outputs[0]: value}`` when exactly one output is declared, else
        ``{"result": value}``.

        Raises:
          ValueError: if a declared output is missing from a returned dict.
        """
        if isinstance(result, Mapping):
            if self.outputs is None:
                return dict(result)
            missing = [name for name in self.outputs if name not in result]
            if missing:
                raise ValueError(
                    f"graph {self.name!r} declares outputs {list(self.outputs)} but its "
                    f"returned dict lacks {missing}; it returned keys {sorted(map(str, result))}"
                )
            return {name: result[name] for name in self.outputs}
        if self.outputs is not None and len(self.outputs) == 1:
            return {self.outputs[0]: result}
        return {"result": result}


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


def _is_context_annotation(annotation: Any) -> bool:
    if annotation is inspect.Parameter.empty:
        return False
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return name == "NodeContext" or (isinstance(name, str) and name.endswith(".NodeContext"))


def build_graph_spec(
    fn: Callable[..., Any],
    name: str,
    inputs: Iterable[str] | None = None,
    outputs: Iterable[str] | None = None,
    version: str = "0.1.0",
    *,
    tags: Iterable[str] | None = None,
    description: str | None = None,
) -> GraphSpec:
    """Inspect ``fn`` and build its :class:`GraphSpec` (see :func:`graph_fn`).

    Raises:
      TypeError: if ``fn`` is not callable, ``name`` is empty, or a declared input has no
        matching parameter on a function that takes no ``**kwargs``.
    """
    if not callable(fn):
        raise TypeError(f"graph_fn needs a function, got {type(fn).__name__}")
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"graph_fn needs a non-empty string name, got {name!r}")
    sig = inspect.signature(fn)
    try:
        hints = get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to raw annotations
        hints = {}
    context_param = None
    params: dict[str, inspect.Parameter] = {}
    accepts_kwargs = False
    for pname, param in sig.parameters.items():
        annotation = hints.get(pname, param.annotation)
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            accepts_kwargs = True
            continue
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        if context_param is None and (
            pname in CONTEXT_PARAM_NAMES or _is_context_annotation(annotation)
        ):
            context_param = pname
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
    tags: Iterable[str] | None = None,
    description: str | None = None,
    registry: GraphRegistry | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare and register a graph function under ``name``.

    ``inputs`` default to the function's parameters; a parameter named ``context`` or ``ctx``
    (or annotated ``NodeContext``) receives the run's context and is never an input. Inputs
    are validated with pydantic from the annotations when a run is submitted. The function
    may be sync (it then runs in a worker thread) or async (it runs on the event loop).
    Re-running the defining cell replaces the graph. Returns the function unchanged, with
    its :class:`GraphSpec` on ``fn.__graph_spec__``.

    Args:
      name: graph id (str) used by ``spawn_run(name, ...)``.
      inputs: input names (iterable of str), or None for the function's parameters.
      outputs: output names (iterable of str), or None for "whatever is returned".
      version: free-form version label.
      tags: labels shown by ``%ag_graphs``.
      description: defaults to the function's docstring.
      registry: where to register (default: the process-wide registry).

    Raises:
      TypeError: see :func:`build_graph_spec`.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        spec = build_graph_spec(
            fn, name, inputs, outputs, version, tags=tags, description=description
        )
        (registry if registry is not None else default_registry).register(spec)
        fn.__graph_spec__ = spec  # type: ignore[attr-defined]
        return fn

    return decorate
