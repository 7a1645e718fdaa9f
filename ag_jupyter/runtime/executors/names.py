"""Executor names and their check: the bottom of ``executors/`` (imports only the errors),
so ``graphs.py`` can validate ``graph_fn(executor=...)`` without importing the rest."""

from __future__ import annotations

import importlib.util
from typing import Any

from ..errors import ExecutorNotAvailableError

__all__ = ["EXECUTOR_NAMES", "INSTALL_HINT", "check_executor", "dask_installed"]

#: The executor names ``graph_fn(executor=)``, ``open_session(executor=)`` and the kernel's
#: ``AgJupyter.executor`` accept.
EXECUTOR_NAMES = ("local", "dask")
INSTALL_HINT = "pip install 'ag-jupyter[dask]'"


def dask_installed() -> bool:
    """Whether ``distributed`` can be imported (checked without importing it)."""
    return importlib.util.find_spec("distributed") is not None


def check_executor(name: Any, *, where: str = "executor") -> str | None:
    """Validate an executor name (None means "no preference") and return it.

    Raises:
      ValueError: for a name other than ``"local"`` / ``"dask"``.
      ExecutorNotAvailableError: for ``"dask"`` without ``distributed`` installed.
    """
    if name is None:
        return None
    if name not in EXECUTOR_NAMES:
        raise ValueError(
            f"{where} must be one of {', '.join(map(repr, EXECUTOR_NAMES))} (or None), got "
            f"{name!r}"
        )
    if name == "dask" and not dask_installed():
        raise ExecutorNotAvailableError(
            f"{where}='dask' needs the 'distributed' package, which is not installed: "
            f"{INSTALL_HINT}"
        )
    return str(name)
