"""The AetherGraph side of ``bench/compare.py``: one repetition of every workload on
``aethergraph`` (the PyPI package), run by the interpreter of ``bench/.venv-aethergraph``.

Never imported by the project; ``compare.py`` runs it in a subprocess::

    bench/.venv-aethergraph/bin/python bench/aethergraph_side.py \\
        --sizes '{"seq_small": 100, ...}' --cancel-timeout 1.0 --out result.json

How AetherGraph is driven (0.1.0a15): no server is started (``start_server`` is only needed
for channels and resumable waits). ``open_session()`` from ``aethergraph.runtime`` builds the
default service container on first use (cached for the process) and yields a
``NodeContext`` whose ``runner()`` is the ``RunFacade`` (``spawn_run`` / ``wait_run`` /
``run_and_wait`` / ``cancel_run``) over AetherGraph's ``RunManager``, which keeps run
records and results in SQLite files under the workspace folder. ``compare.py`` points the
workspace at a fresh temporary folder (``AETHERGRAPH_WORKSPACE``), runs this script with that
folder as its working directory (AetherGraph loads ``.env`` from there) and raises
``AETHERGRAPH_RATE_LIMIT__MAX_CONCURRENT_RUNS`` from 8 to 64: with the default, a 9th
concurrent run is rejected (HTTP 429 error) instead of queued, which the nested workload
(a parent plus 10 children) can hit.

The result JSON is written to ``--out`` (AetherGraph prints to stdout while loading).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import platform
import sqlite3
import sys
from typing import Any

import _workloads as wl
from aethergraph import NodeContext, graph_fn
from aethergraph.runtime import open_session

# AetherGraph validates the source of the module a graph function is defined in and wants
# the decorator there, so each shared body gets a one-line decorated wrapper here (one more
# coroutine call per run: well under a microsecond).


@graph_fn(name=wl.PLUS_ONE, inputs=["x"], outputs=["y"])
async def plus_one(x: int) -> int:
    """:func:`_workloads.plus_one`."""
    return await wl.plus_one(x)


@graph_fn(name=wl.SLEEPER, inputs=["x"], outputs=["y"])
async def sleeper(x: int) -> int:
    """:func:`_workloads.sleeper`."""
    return await wl.sleeper(x)


@graph_fn(name=wl.PARENT, inputs=["x"], outputs=["total"])
async def parent(x: int, context: NodeContext) -> int:
    """:func:`_workloads.parent`."""
    return await wl.parent(x, context)


async def get_status(context: Any, run_id: str) -> Any:
    """The status of ``run_id`` as AetherGraph's run store has it."""
    record = await context.runner().run_manager.get_record(run_id)
    return record.status if record is not None else "missing"


async def main(sizes: dict[str, int], cancel_timeout_s: float) -> dict[str, Any]:
    """Run every workload once; return the figures plus versions and effective settings."""
    side = wl.Side("aethergraph", open_session, get_status)
    result = await wl.run_runtime(side, sizes, cancel_timeout_s)
    async with open_session() as context:
        manager = context.runner().run_manager
        result["settings"] = {
            "max_concurrent_runs": manager._max_concurrent_runs,
            "run_store": type(manager._store).__name__,
            "result_store": type(manager._result_store).__name__,
        }
    return result


def cli(argv: list[str] | None = None) -> int:
    """Parse arguments, run the workloads, write the JSON result to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", required=True, help="JSON dict of workload sizes")
    parser.add_argument("--cancel-timeout", type=float, default=1.0,
                        help="seconds to wait for a cancelled run to end canceled")
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    args = parser.parse_args(argv)
    result = asyncio.run(main(json.loads(args.sizes), args.cancel_timeout))
    result["versions"] = {
        "python": platform.python_version(),
        "aethergraph": importlib.metadata.version("aethergraph"),
        "pydantic": importlib.metadata.version("pydantic"),
        "sqlite": sqlite3.sqlite_version,
    }
    with open(args.out, "w") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
