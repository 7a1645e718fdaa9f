"""``aethergraph.runner`` in ag_jupyter: ``run_async(graph, inputs)`` and the blocking
``run(graph, inputs)`` (see :mod:`ag_jupyter.runtime.launch`)."""

from __future__ import annotations

from .runtime.launch import run, run_async

__all__ = ["run", "run_async"]
