"""The extension's settings (a traitlets ``Configurable``, so ``%config AgJupyter.x = y``
and ``c.AgJupyter.x = y`` in ``ipython_config.py`` both work) and the one shell attribute
that holds the extension's state."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from traitlets import Bool, Dict, Enum, Float, Int, TraitError, Unicode, validate
from traitlets.config import Config, Configurable


class AgJupyter(Configurable):
    """Settings of the ag_jupyter IPython extension.

    Changing ``max_concurrency`` at run time applies to the kernel's RunManager at once.
    A bad value raises ``traitlets.TraitError`` with the accepted range.
    """

    max_concurrency = Int(
        8, help="Runs (with count_slot=True) executing at once; the rest queue as pending."
    ).tag(config=True)
    workspace = Unicode(
        "",
        help="Folder for the durable run history, kv, memory and artifacts. Empty: the "
        "AG_WORKSPACE environment variable, else ./.ag_workspace. 'memory' keeps "
        "everything in memory for this kernel only.",
    ).tag(config=True)
    default_session_id = Unicode(
        None,
        allow_none=True,
        help="session_id for %%ag_session cells that do not pass --session-id "
        "(None: each cell's session id is its own run id).",
    ).tag(config=True)
    panel_refresh_s = Float(
        0.1, help="Seconds between coalesced run-panel updates (at most 1/panel_refresh_s "
        "messages per second, whatever the number of runs)."
    ).tag(config=True)
    blocking_waits = Enum(
        ["error", "nest_asyncio2"],
        "error",
        help="What a blocking wait from synchronous code (e.g. %ag_wait) does while the "
        "kernel's loop is running: 'error' says to use `await`; 'nest_asyncio2' patches "
        "the loop (on first use only) to wait re-entrantly.",
    ).tag(config=True)
    show_panel_on_load = Bool(
        False, help="Display the run panel when the extension is loaded."
    ).tag(config=True)
    mcp_servers = Dict(
        {},
        help="MCP servers by name, reached as context.mcp(name): {'time': {'command': "
        "['mcp-server-time']}, 'web': {'url': 'http://127.0.0.1:8000/mcp', 'headers': "
        "{...}}} (see ag_jupyter.runtime.configure_mcp_servers). Started on first use; "
        "assigning again replaces the set (unchanged servers keep running).",
    ).tag(config=True)

    llm_prices = Dict(
        None,
        allow_none=True,
        help="Prices that turn LLM token usage into cost: {'model': [input_per_mtok, "
        "output_per_mtok]} (a third number prices cached input), in your currency per "
        "million tokens. None: the AG_LLM_PRICES environment variable. Without a price no "
        "cost is shown (never a guessed one).",
    ).tag(config=True)

    @validate("llm_prices")
    def _check_llm_prices(self, proposal: dict[str, Any]) -> dict[str, Any] | None:
        from ..runtime.services.llm import set_llm_prices

        try:
            set_llm_prices(proposal["value"])  # validates, then applies
        except (TypeError, ValueError) as exc:
            raise TraitError(f"AgJupyter.llm_prices: {exc}") from None
        return proposal["value"]

    executor = Enum(
        ["local", "dask"],
        "local",
        help="Where graph bodies run when neither their graph (@graph_fn(executor=...)) nor "
        "their session (open_session(executor=...)) chose: 'local' (this kernel: async "
        "bodies on its loop, sync ones in threads) or 'dask' (a Dask cluster, see "
        "dask_address; needs pip install 'ag-jupyter[dask]'). Applies to runs submitted "
        "after the change.",
    ).tag(config=True)
    dask_address = Unicode(
        None,
        allow_none=True,
        help="The Dask scheduler Dask runs go to, e.g. 'tcp://10.0.0.5:8786' (a "
        "dask-jobqueue, dask-kubernetes or dask-gateway cluster's scheduler_address). "
        "None or '': a LocalCluster of this kernel's own (one worker process per core), "
        "started on the first Dask run and closed with the kernel.",
    ).tag(config=True)

    @validate("executor")
    def _check_executor(self, proposal: dict[str, Any]) -> str:
        from ..runtime import ExecutorNotAvailableError, set_default_executor

        try:
            set_default_executor(proposal["value"])  # validates, then applies
        except ExecutorNotAvailableError as exc:
            raise TraitError(f"AgJupyter.executor: {exc}") from None
        return proposal["value"]

    @validate("mcp_servers")
    def _check_mcp_servers(self, proposal: dict[str, Any]) -> dict[str, Any]:
        from ..runtime import MCPConfigError, configure_mcp_servers

        try:
            configure_mcp_servers(proposal["value"])  # validates, then applies
        except MCPConfigError as exc:
            raise TraitError(f"AgJupyter.mcp_servers: {exc}") from None
        return proposal["value"]

    @validate("max_concurrency")
    def _check_concurrency(self, proposal: dict[str, Any]) -> int:
        value = proposal["value"]
        if value <= 0:
            raise TraitError(
                f"AgJupyter.max_concurrency must be a positive int, got {value!r}"
            )
        return value

    def update_config(self, config: Config) -> None:
        """Load ``config`` (``%config AgJupyter.x = y`` calls this with that statement).

        Raises:
          TraitError: for a value a validator refuses. That value is removed from
            ``config`` first: ``%config`` hands the same object to every configurable, and
            the others merge it into the shell's shared config, where a refused value would
            stay and break the next ``%load_ext``/``%reload_ext``. The setting keeps its
            previous value, there and here.
        """
        try:
            super().update_config(config)
        except TraitError:
            name = type(self).__name__
            if name in config:
                section = config[name]
                for key in list(section):
                    if key not in self.trait_names() or getattr(self, key) != section[key]:
                        del section[key]
            raise

    @validate("panel_refresh_s")
    def _check_refresh(self, proposal: dict[str, Any]) -> float:
        value = proposal["value"]
        if not 0.01 <= value <= 60:
            raise TraitError(
                f"AgJupyter.panel_refresh_s must be between 0.01 and 60 seconds, got {value!r}"
            )
        return value


def load_settings(parent: Any) -> AgJupyter:
    """The ``AgJupyter`` settings of ``parent`` (an ``InteractiveShell``), from its config.

    A value there that a validator refuses (an ``ipython_config.py`` line, say) does not
    stop the extension from loading: it is dropped from the config, its setting keeps the
    default, and a ``RuntimeWarning`` names the setting, the value and what was wrong.
    """
    try:
        return AgJupyter(parent=parent)
    except TraitError:
        pass
    name = AgJupyter.__name__
    section = parent.config[name] if name in parent.config else {}
    for key in list(section):
        value = section[key]
        try:
            AgJupyter(config=Config({name: {key: value}}))
        except TraitError as exc:
            del section[key]
            default = AgJupyter.class_traits()[key].default()  # only traits are validated
            warnings.warn(
                f"ignoring {name}.{key} = {value!r} in the IPython configuration ({exc}); "
                f"it keeps its default {default!r}. Set a valid value with "
                f"%config {name}.{key} = ...",
                RuntimeWarning,
                stacklevel=2,
            )
    return AgJupyter(parent=parent)


STATE_ATTR = "_ag_jupyter_state"
"""The one attribute the extension sets on the shell (an :class:`ExtensionState`)."""


@dataclass
class ExtensionState:
    """What ``%load_ext ag_jupyter`` added to a shell, so ``%unload_ext`` can remove it.

    Kept on the shell as the single attribute :data:`STATE_ATTR`.

    Attributes:
      config: the ``AgJupyter`` settings.
      magics: the registered ``Magics`` instances (session cell, run magics).
      transformer: the ``%%ag_session`` input transformer.
      observers: trait name -> the observer applying its changes (``max_concurrency`` to
        live managers, ``blocking_waits`` to the runtime's ``run()``).
    """

    config: AgJupyter
    magics: list[Any] = field(default_factory=list)
    transformer: Any = None
    observers: dict[str, Callable[[dict[str, Any]], None]] = field(default_factory=dict)


def extension_state(shell: Any) -> ExtensionState | None:
    """The extension's state on ``shell``, or None when the extension is not loaded."""
    state = getattr(shell, STATE_ATTR, None)
    return state if isinstance(state, ExtensionState) else None


def extension_config(shell: Any) -> AgJupyter | None:
    """The ``AgJupyter`` settings of ``shell``, or None when the extension is not loaded."""
    state = extension_state(shell)
    return state.config if state is not None else None
