"""``%load_ext ag_jupyter`` / ``%unload_ext ag_jupyter``.

Load (idempotent) adds: the ``AgJupyter`` settings to ``%config``, the magics (the
``%%ag_session`` cell magic from ``session_cell``, the run magics from ``magics``), the
``%%ag_session`` input transformer, and a RunManager factory so the kernel's manager
(created lazily on first use, bound to the kernel's running loop) follows the settings.
Unload removes all of that and closes the panels it opened. Runs that are still live keep
running on the kernel's manager and keep their records; ``%load_ext`` again finds them.
"""

from __future__ import annotations

from typing import Any

from ..runtime import (
    close_all_mcp_clients_soon,
    close_dask_executors,
    configure_mcp_servers,
    current_run_managers,
    set_blocking_waits,
    set_dask_address,
    set_default_executor,
    set_run_manager_factory,
)
from ..runtime.defaults import build_manager
from ..runtime.services.llm import set_llm_prices
from .config import STATE_ATTR, ExtensionState, extension_state, load_settings
from .magics import AgMagics
from .session_cell import SessionCellTransformer, SessionMagics


def load_ipython_extension(shell: Any) -> None:
    """Install the extension into ``shell`` (an ``InteractiveShell``); a second call does
    nothing. Everything added is recorded in one shell attribute (``config.STATE_ATTR``)."""
    if extension_state(shell) is not None:
        return
    config = load_settings(shell)
    magics = [SessionMagics(shell), AgMagics(shell, config=config)]
    transformer = SessionCellTransformer(shell)
    shell.configurables.append(config)
    for instance in magics:
        shell.register_magics(instance)
    shell.input_transformers_cleanup.append(transformer)
    set_run_manager_factory(
        lambda: build_manager(workspace=config.workspace, max_concurrency=config.max_concurrency)
    )

    def apply_concurrency(change: dict[str, Any]) -> None:
        for manager in current_run_managers():
            manager.max_concurrency = change["new"]

    config.observe(apply_concurrency, "max_concurrency")

    def apply_blocking_waits(change: dict[str, Any]) -> None:
        set_blocking_waits(change["new"])  # run() / graph.sync() from a cell follow it

    config.observe(apply_blocking_waits, "blocking_waits")
    set_blocking_waits(config.blocking_waits)

    def apply_dask_address(change: dict[str, Any]) -> None:
        set_dask_address(change["new"])  # new Dask runs go there; live ones stay

    config.observe(apply_dask_address, "dask_address")
    if config.dask_address is not None:  # from ipython_config.py; else leave what code set
        set_dask_address(config.dask_address)
    set_default_executor(config.executor)  # from ipython_config.py (validated on assignment)
    if config.mcp_servers:  # from ipython_config.py: validation only runs on assignment
        configure_mcp_servers(config.mcp_servers)
    if config.llm_prices is not None:
        set_llm_prices(config.llm_prices)
    setattr(
        shell,
        STATE_ATTR,
        ExtensionState(
            config=config,
            magics=magics,
            transformer=transformer,
            observers={
                "max_concurrency": apply_concurrency,
                "blocking_waits": apply_blocking_waits,
                "dask_address": apply_dask_address,
            },
        ),
    )
    if config.show_panel_on_load:
        shell.run_line_magic("ag_runs", "")


def unload_ipython_extension(shell: Any) -> None:
    """Remove what :func:`load_ipython_extension` added. Live runs keep running."""
    state = extension_state(shell)
    if state is None:
        return
    config = state.config
    for trait, observer in state.observers.items():
        config.unobserve(observer, trait)
    set_blocking_waits(None)
    if state.transformer in shell.input_transformers_cleanup:
        shell.input_transformers_cleanup.remove(state.transformer)
    manager = shell.magics_manager
    for instance in state.magics:
        for kind, names in instance.magics.items():
            for name in names:
                registered = manager.magics[kind].get(name)
                if getattr(registered, "__self__", None) is instance:
                    del manager.magics[kind][name]
        manager.registry.pop(type(instance).__name__, None)
    if config in shell.configurables:
        shell.configurables.remove(config)
    from ..widgets.run_panel import close_all_panels

    close_all_panels()
    # MCP servers are the extension's to stop (runs keep running, the servers do not).
    configure_mcp_servers({})
    set_llm_prices(None)
    close_all_mcp_clients_soon()
    # The kernel's Dask cluster (if it started one) closes once its live runs end.
    set_default_executor(None)
    if config.dask_address is not None:
        set_dask_address(None)
    close_dask_executors(when_idle=True)
    set_run_manager_factory(None)
    delattr(shell, STATE_ATTR)
