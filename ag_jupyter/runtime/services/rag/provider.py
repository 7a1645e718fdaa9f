"""The embedded ``rag`` and ``kb`` services the composition root installs on a workspace's
service hub. This module imports nothing heavy: the index (numpy, the embedder) is
imported when a context first uses ``context.rag`` / ``context.kb()``, so a runtime
installed without ``ag-jupyter[rag]`` still starts, and says what to install when asked
for RAG.
"""

from __future__ import annotations

from typing import Any

from ...errors import ServiceNotConfiguredError
from ...store.workspace import Workspace


def _service(workspace: Workspace) -> Any:
    try:
        from .service import rag_service_for
    except ImportError as exc:
        raise ServiceNotConfiguredError(
            f"the embedded RAG index needs {exc.name or 'numpy'!r}: pip install "
            "'ag-jupyter[rag]', or register your own with register_context_service('rag', obj)"
        ) from exc
    return rag_service_for(workspace)


class RagProvider:
    """``context.rag``: the workspace's :class:`~.service.RagService` bound to the
    context (a :class:`~.facades.NodeRAG`)."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def __repr__(self) -> str:
        return f"RagProvider({str(self.workspace.path)!r})"

    @property
    def service(self) -> Any:
        """The workspace's ``RagService`` (one per workspace and process).

        Raises:
          ServiceNotConfiguredError: if numpy is not installed.
        """
        return _service(self.workspace)

    def bind(self, context: Any) -> Any:
        """The ``NodeRAG`` of ``context``."""
        return self.service.bind(context)


class KBProvider:
    """``context.kb()``: a :class:`~.facades.NodeKB` over the workspace's
    ``RagService`` (the same corpora as ``context.rag``)."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def __repr__(self) -> str:
        return f"KBProvider({str(self.workspace.path)!r})"

    def bind(self, context: Any) -> Any:
        """The ``NodeKB`` of ``context``."""
        from .facades import NodeKB

        return NodeKB(_service(self.workspace), context)
