"""MCP client overhead: ours (``context.mcp(name)``) against a bare ``mcp`` SDK client.

Against the reference stdio server ``mcp-server-time``, in one process, alternating:

  start   -- from constructing a client to the answer of its first ``list_tools`` (spawn,
             handshake, one request), then close; ours is ``StdioMCPClient(...).list_tools()``,
             bare is ``async with mcp.Client(StdioServerParameters(...))`` + ``list_tools()``.
  call    -- one ``get_current_time`` round trip on a started server: ours through
             ``context.mcp("time").call(...)`` in an ad-hoc session (result dumped to a dict,
             the step recorded), ours on the client itself (no step), and bare
             ``client.call_tool(...)`` (a pydantic model, nothing recorded). Calls run in
             blocks of ``--block`` per variant, rotating, so drift of this noisy VM hits all.

Reports p50/p99 (start: median/max) per variant and the ratio ours/bare. The SDK is
imported before the first timed start, for both.

Usage: ``python bench/mcp.py [--calls 500] [--starts 5] [--block 50] [--check]``.
Target: ours within 1.2x of bare (p50 of the round trip, median start).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# Run as a script, this file's folder comes first on sys.path, where "mcp" would be this
# file (bench/mcp.py) instead of the SDK.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from mcp import Client, StdioServerParameters  # noqa: E402

from ag_jupyter import open_session  # noqa: E402
from ag_jupyter.runtime import register_mcp_client  # noqa: E402
from ag_jupyter.services.mcp import StdioMCPClient  # noqa: E402

TARGET_RATIO = 1.2
_BIN = Path(sys.executable).parent
TIME_CMD = [str(_BIN / "mcp-server-time")] if (_BIN / "mcp-server-time").exists() else [
    "mcp-server-time"
]
ARGS = {"timezone": "UTC"}


async def start_ours() -> float:
    t0 = time.perf_counter()
    client = StdioMCPClient(TIME_CMD)
    await client.list_tools()
    elapsed = time.perf_counter() - t0
    await client.aclose()
    return elapsed


async def start_bare() -> float:
    t0 = time.perf_counter()
    params = StdioServerParameters(command=TIME_CMD[0], args=TIME_CMD[1:])
    async with Client(params) as client:
        await client.list_tools()
        elapsed = time.perf_counter() - t0
    return elapsed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=500, help="timed calls per variant")
    parser.add_argument("--starts", type=int, default=5, help="timed starts per variant")
    parser.add_argument("--block", type=int, default=50, help="calls per block")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    opts = parser.parse_args()

    await start_bare()  # imports and warms both paths (ours imports the same SDK)
    await start_ours()
    starts: dict[str, list[float]] = {"ours": [], "bare": []}
    for _ in range(opts.starts):
        starts["bare"].append(await start_bare())
        starts["ours"].append(await start_ours())

    ours = StdioMCPClient(TIME_CMD)
    register_mcp_client("time", ours)
    params = StdioServerParameters(command=TIME_CMD[0], args=TIME_CMD[1:])
    calls: dict[str, list[float]] = {"ours: context.mcp().call": [], "ours: client.call": [],
                                     "bare: Client.call_tool": []}
    async with Client(params) as bare, open_session() as context:
        variants: dict[str, Callable[[], Awaitable[Any]]] = {
            "ours: context.mcp().call":
                lambda: context.mcp("time").call("get_current_time", ARGS),
            "ours: client.call": lambda: ours.call("get_current_time", ARGS),
            "bare: Client.call_tool": lambda: bare.call_tool("get_current_time", ARGS),
        }
        for fn in variants.values():  # warm-up (first call of each path)
            for _ in range(20):
                await fn()
        done = 0
        while done < opts.calls:
            n = min(opts.block, opts.calls - done)
            for name, fn in variants.items():
                samples = calls[name]
                for _ in range(n):
                    t0 = time.perf_counter()
                    await fn()
                    samples.append(time.perf_counter() - t0)
            done += n
    await ours.aclose()

    bare_start = statistics.median(starts["bare"])
    bare_p50 = pct(calls["bare: Client.call_tool"], 0.5)
    print(f"mcp-server-time over stdio, {opts.starts} starts and {opts.calls} calls per variant")
    print(f"{'variant':32} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6}")
    print(f"{'start: bare mcp.Client':32} {bare_start * 1e3:8.1f} "
          f"{max(starts['bare']) * 1e3:8.1f} {'':>6}   (median, max)")
    ours_start = statistics.median(starts["ours"])
    print(f"{'start: ours StdioMCPClient':32} {ours_start * 1e3:8.1f} "
          f"{max(starts['ours']) * 1e3:8.1f} {ours_start / bare_start:6.2f}")
    ratios = {"start": ours_start / bare_start}
    for name in ("bare: Client.call_tool", "ours: client.call", "ours: context.mcp().call"):
        p50 = pct(calls[name], 0.5)
        p99 = pct(calls[name], 0.99)
        ratio = p50 / bare_p50
        if name.startswith("ours"):
            ratios[name] = ratio
        print(f"{'call: ' + name:32} {p50 * 1e3:8.3f} {p99 * 1e3:8.3f} {ratio:6.2f}")
    missed = [name for name, r in ratios.items() if r > TARGET_RATIO]
    print(f"target: ours within {TARGET_RATIO}x of bare: "
          + ("met" if not missed else f"missed by {', '.join(missed)}"))
    return 1 if opts.check and missed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
