"""AetherGraph's documented examples for graph functions, launchers, tools, the context and
custom services (issue 13), run with their import lines changed only (``aethergraph`` ->
``ag_jupyter``).

Sources: ``AIperture/aethergraph-docs`` (``docs/...``, at HEAD) and
``AIperture/aethergraph-examples`` (``method_showcase/...``); each test is named after its
source file and the line its code block starts on. The example lines are verbatim between
``# --- example`` and ``# --- end``. Names an example uses without defining them (a
placeholder such as ``job_id`` in a sketch, a service registered in another block) are
bound before it, and its ``...`` bodies are left as written. Examples that need the
channel, AetherGraph's memory/artifacts API, LLM profiles, MCP, ``@graphify`` or a
sidecar server are out of this issue's scope (see the report of issue 13).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ag_jupyter.runtime import (
    GraphFunction,
    RunStatus,
    default_registry,
    get_run_manager,
    list_ext_context_services,
    open_session,
)
from ag_jupyter.runtime.launch import shutdown_runner_loop
from ag_jupyter.runtime.services import unregister_context_service


@pytest.fixture(autouse=True)
def _clean_registrations() -> Iterator[None]:
    """Examples register graphs (``demo``, ``pipeline``...) and services globally, as
    AetherGraph code does; drop what each test added. The blocking ``run()`` of the
    script-style examples uses a background loop: stop it while this test's workspace is
    still open."""
    graphs, services = set(default_registry.names()), set(list_ext_context_services())
    yield
    shutdown_runner_loop()
    for name in set(default_registry.names()) - graphs:
        default_registry.unregister(name)
    for name in set(list_ext_context_services()) - services:
        unregister_context_service(name)


async def last_record(graph_id: str) -> Any:
    [record, *_] = await get_run_manager().list_records(graph_id=graph_id, limit=1)
    return record


async def log_messages(run_id: str) -> list[str]:
    return [ln["message"] for ln in (await get_run_manager().logs(run_id))["lines"]]


# ============================================================ docs/reference/graph-graph-fn.md
async def test_docs_reference_graph_graph_fn_md_L86_decorator_returns_graph_function() -> None:
    # --- example (docs/reference/graph-graph-fn.md:86)
    from ag_jupyter import NodeContext, graph_fn

    @graph_fn(name="example", inputs=["x"], outputs=["y"])
    async def example(x: int, *, context: NodeContext):
        ...

    # `example` is now a GraphFunction
    assert isinstance(example, GraphFunction)
    # --- end
    assert await example(x=1) == {"y": None}


async def test_docs_reference_graph_graph_fn_md_L148_plain_callables_inline() -> None:
    from ag_jupyter import NodeContext, graph_fn

    # --- example (docs/reference/graph-graph-fn.md:148)
    def local_scale(x: int, factor: int = 2) -> int:
        return x * factor

    @graph_fn(name="mixed_body")
    async def mixed_body(x: int, *, context: NodeContext):
        y = local_scale(x)          # plain Python call, no node created
        context.logger().info("scaled", extra={"y": y})
        return {"y": y}
    # --- end
    assert await mixed_body(x=4) == {"y": 8}
    record = await last_record("mixed_body")
    assert await log_messages(record.run_id) == ["scaled"]


# ======================================================================== docs/graph_fn.md
async def test_docs_graph_fn_md_L93_single_literal_with_one_declared_output() -> None:
    from ag_jupyter import graph_fn

    # --- example (docs/graph_fn.md:93)
    @graph_fn(name="one", outputs=["y"])
    async def one(*, context):
        return 123  # normalized to {"y": 123}
    # --- end
    assert await one() == {"y": 123}


async def test_docs_graph_fn_md_L101_validation_rules() -> None:
    from ag_jupyter import graph_fn

    @graph_fn(name="misses", outputs=["a", "b"])
    async def misses(*, context):
        return {"a": 1}

    @graph_fn(name="literal", outputs=["a", "b"])
    async def literal(*, context):
        return 1

    # "If outputs are declared, missing keys raise ValueError" / "Returning a single literal
    # without exactly one declared output raises an error."
    with pytest.raises(ValueError, match="lacks"):
        await misses()
    with pytest.raises(ValueError, match="single int"):
        await literal()


async def test_docs_graph_fn_md_L165_minimal_patterns_square_and_stats() -> None:
    from ag_jupyter import graph_fn

    # --- example (docs/graph_fn.md:165, "One output (literal)")
    @graph_fn(name="square", outputs=["y"])
    async def square(x: int, *, context):
        return x * x
    # --- end
    # --- example (docs/graph_fn.md:172, "Multi-output dict")
    @graph_fn(name="stats", outputs=["mean","std"])
    async def stats(xs: list[float], *, context):
        import statistics as st
        return {"mean": st.mean(xs), "std": st.pstdev(xs)}
    # --- end
    assert await square(x=7) == {"y": 49}
    assert await stats(xs=[1.0, 3.0]) == {"mean": 2.0, "std": 1.0}
    # docs/graph_fn.md:108 "Running": res = await my_fn(a=1, b=2); out = my_fn.sync(...)
    res = await square(x=3)
    assert res == {"y": 9}


def test_docs_graph_fn_md_L108_sync_helper_from_a_script() -> None:
    from ag_jupyter import graph_fn

    @graph_fn(name="my_fn")
    async def my_fn(a: int, b: int):
        return {"sum": a + b}

    # --- example (docs/graph_fn.md:108)
    # Sync helper (scripts/CLI/tests)
    out = my_fn.sync(a=1, b=2)
    # --- end
    assert out == {"sum": 3}


# ================================================================ docs/reference/graph-tool.md
def test_docs_reference_graph_tool_md_L109_simple_synchronous_tool() -> None:
    # --- example (docs/reference/graph-tool.md:109)
    from ag_jupyter import tool

    @tool(outputs=["y"])
    def double(x: int) -> dict:
        return {"y": x * 2}

    # Immediate mode (no active graph)
    result = double(x=21)
    assert result == {"y": 42}
    # --- end


async def test_docs_reference_graph_tool_md_L132_async_tool(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def some_async_http_get(url: str) -> str:  # the example's placeholder
        await asyncio.sleep(0)
        return f"<html from {url}>"

    # --- example (docs/reference/graph-tool.md:132)
    from ag_jupyter import tool

    @tool(outputs=["text"])
    async def fetch_text(url: str) -> dict:
        data = await some_async_http_get(url)
        return {"text": data}

    # Immediate mode
    result = await fetch_text(url="https://example.com")
    print(result["text"])
    # --- end
    assert capsys.readouterr().out == "<html from https://example.com>\n"


async def test_docs_reference_graph_tool_md_L84_context_aware_tool() -> None:
    # --- example (docs/reference/graph-tool.md:84)
    from ag_jupyter import NodeContext, tool

    @tool(outputs=["y"], inputs=["x"])
    async def double_with_log(x: int, *, context: NodeContext) -> dict:
        # `context` is injected automatically when this tool runs as a graph node
        context.logger().info("doubling", extra={"x": x})
        return {"y": x * 2}
    # --- end
    from ag_jupyter import graph_fn

    @graph_fn(name="uses_double_with_log")
    async def uses(x: int, *, context: NodeContext):
        return await double_with_log(x=x)

    assert await uses(x=21) == {"y": 42}
    record = await last_record("uses_double_with_log")
    assert await log_messages(record.run_id) == ["doubling"]
    [step] = await get_run_manager().steps(record.run_id)
    assert (step["name"], step["inputs_preview"]) == ("double_with_log", '{"x": 21}')


async def test_docs_reference_graph_tool_md_L155_explicit_inputs_with_non_data_params() -> None:
    # --- example (docs/reference/graph-tool.md:155)
    from ag_jupyter import NodeContext, tool

    @tool(outputs=["out"], inputs=["a", "b"])
    async def add(a: int, b: int = 0, *, scale: int = 1, context: NodeContext | None = None) -> dict:  # noqa: E501
        # `a`, `b` are data inputs; `scale` and `context` are not graph edges
        if context is not None:
            context.logger().info("adding", extra={"a": a, "b": b, "scale": scale})
        return {"out": (a + b) * scale}
    # --- end
    assert add.__aether_inputs__ == ["a", "b"]
    assert await add(1, 2, scale=3) == {"out": 9}  # outside any run: no context
    async with open_session(run_id="docs-tool-add"):
        assert await add(a=1) == {"out": 1}
    assert await log_messages("docs-tool-add") == ["adding"]


# ========================================================== docs/build-graphs/tool.md, tools.md
def test_docs_build_graphs_tool_md_L40_minimal_example() -> None:
    # --- example (docs/build-graphs/tool.md:40)
    from ag_jupyter import tool

    @tool(outputs=["y"])
    def square(x:int) -> dict:
        return {"y": x*x}
    # --- end
    assert square(x=3) == {"y": 9}


def test_docs_tools_md_L84_immediate_execution() -> None:
    # --- example (docs/tools.md:84)
    from ag_jupyter import tool

    @tool(outputs=["sum", "mean"])  # outputs you promise to return
    def stats(xs: list[float]):
        s = sum(xs)
        return {"sum": s, "mean": s / len(xs)}

    out = stats([1,2,3,4])   # → {"sum": 10, "mean": 2.5}
    # --- end
    assert out == {"sum": 10, "mean": 2.5}


def test_docs_reference_decorators_md_L101_reusable_step(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # --- example (docs/reference/decorators.md:101)
    from ag_jupyter import tool

    @tool(outputs=["sum", "count"])
    def aggregate(xs: list[int]):
        return {"sum": sum(xs), "count": len(xs)}

    # Immediate mode
    print(aggregate([1,2,3]))  # {"sum": 6, "count": 3}
    # --- end
    assert capsys.readouterr().out == "{'sum': 6, 'count': 3}\n"


# ===================================================== docs/key-concepts/agent-via-graph-fn.md
async def test_docs_key_concepts_agent_via_graph_fn_md_L50_sum_tool() -> None:
    # --- example (docs/key-concepts/agent-via-graph-fn.md:50)
    from typing import List  # noqa: UP035

    from ag_jupyter import tool

    @tool(outputs=["total"])
    def sum_vec(xs: List[float]) -> dict:  # noqa: UP006
        return {"total": float(sum(xs))}
    # --- end
    from ag_jupyter import NodeContext, graph_fn

    @graph_fn(name="tool_demo_no_channel")
    async def tool_demo(values: list[float], *, context: NodeContext):
        stats = {"n": len(values)}             # executed inline
        out = sum_vec(values)                  # ← captured as a node
        return {"total": out["total"], "n": stats["n"]}

    assert await tool_demo(values=[1.0, 2.5]) == {"total": 3.5, "n": 2}
    record = await last_record("tool_demo_no_channel")
    assert [s["name"] for s in await get_run_manager().steps(record.run_id)] == ["sum_vec"]


def _define_pipeline() -> Any:
    # --- example (docs/key-concepts/agent-via-graph-fn.md:88)
    from ag_jupyter import NodeContext, graph_fn

    @graph_fn(name="step1")
    async def step1(x: int, *, context: NodeContext) -> dict:
        return {"y": x + 1}

    @graph_fn(name="step2")
    async def step2(y: int, *, context: NodeContext) -> dict:
        return {"z": y * 2}

    @graph_fn(name="pipeline")
    async def pipeline(x: int, *, context: NodeContext) -> dict:
        a = await step1(x)       # → child node
        b = await step2(a["y"]) # → child node
        return {"z": b["z"]}
    # --- end
    # --- example (docs/key-concepts/agent-via-graph-fn.md:108)
    import asyncio

    @graph_fn(name="concurrent_steps")
    async def concurrent_steps(a: int, b: int, *, context: NodeContext) -> dict:
        r1, r2 = await asyncio.gather(step1(a), step2(b))
        return {"r1": r1["y"], "r2": r2["z"]}
    # --- end
    return pipeline, concurrent_steps


async def test_docs_key_concepts_agent_via_graph_fn_md_L88_chaining_and_nesting() -> None:
    pipeline, concurrent_steps = _define_pipeline()
    # --- example (docs/key-concepts/agent-via-graph-fn.md:127, Option A)
    # In an async function
    result = await pipeline(3)
    # --- end
    assert result == {"z": 8}
    # --- example (docs/key-concepts/agent-via-graph-fn.md:142, Option C)
    from ag_jupyter.runner import run_async
    # In an async function
    result = await run_async(pipeline, inputs={"x": 3})
    # --- end
    assert result == {"z": 8}
    assert await concurrent_steps(a=1, b=5) == {"r1": 2, "r2": 10}
    parent = await last_record("pipeline")
    children = [r for r in await get_run_manager().list_records()
                if r.parent_run_id == parent.run_id]
    assert sorted(r.graph_id for r in children) == ["step1", "step2"]
    assert all(r.status is RunStatus.succeeded for r in children)


def test_docs_key_concepts_agent_via_graph_fn_md_L134_synchronous_helper() -> None:
    pipeline, _ = _define_pipeline()
    # --- example (docs/key-concepts/agent-via-graph-fn.md:134, Option B)
    from ag_jupyter.runner import run
    final = run(pipeline, inputs={"x": 3})
    # --- end
    assert final == {"z": 8}


# ================================================ docs/key-concepts/concurrency-orchestration.md
async def test_docs_key_concepts_concurrency_orchestration_md_L93_graph_level_patterns() -> None:
    from ag_jupyter import graph_fn

    @graph_fn(name="graph_fn1")
    async def graph_fn1(a: int):
        return {"a": a}

    @graph_fn(name="graph_fn2")
    async def graph_fn2(b: int):
        return {"b": b}

    graph1, graph2, N = graph_fn1, graph_fn2, 4
    # --- example (docs/key-concepts/concurrency-orchestration.md:93, A)
    res1 = await graph_fn1(a=1, max_concurrency=N) # graph-level concurrency
    res2 = await graph_fn2(b=2, max_concurrency=N)
    # --- end
    assert (res1, res2) == ({"a": 1}, {"b": 2})
    # --- example (docs/key-concepts/concurrency-orchestration.md:100, B)
    res1, res2 = await asyncio.gather(
        graph_fn1(a=1, max_concurrency=N),
        graph_fn2(b=2, max_concurrency=N),
    )
    # --- end
    assert (res1, res2) == ({"a": 1}, {"b": 2})
    # --- example (docs/key-concepts/concurrency-orchestration.md:109, C)
    from ag_jupyter.runner import run_async

    res1, res2 = await asyncio.gather(
        run_async(graph1, inputs={"a": 1}, max_concurrency=8),
        run_async(graph2, inputs={"b": 2}, max_concurrency=2),
    )
    # --- end
    assert (res1, res2) == ({"a": 1}, {"b": 2})


async def test_docs_key_concepts_introduction_md_L93_cross_graph_orchestration() -> None:
    from ag_jupyter import graph_fn

    @graph_fn(name="agent_a")
    async def graph_fn_agent_a():
        return {"who": "a"}

    @graph_fn(name="agent_b")
    async def graph_fn_agent_b():
        return {"who": "b"}

    # --- example (docs/key-concepts/introduction.md:93; the sketch's "..." arguments empty)
    # Concurrent reactive runs
    await asyncio.gather(
        graph_fn_agent_a(),   # a @graph_fn with async __call__
        graph_fn_agent_b(),
    )

    # Sequential orchestration
    await graph_fn_agent_a()
    await graph_fn_agent_b()
    # --- end
    assert len(await get_run_manager().list_records(graph_id="agent_a")) == 2


# =================================================== docs/key-concepts/extending-context.md
async def test_docs_key_concepts_extending_context_md_L45_trainer_service() -> None:
    job_id, status = "abc123", "COMPLETED"  # the sketch's placeholders
    ckpt = type("Ckpt", (), {"uri": "file://ckpt"})()
    namespace = {"job_id": job_id, "status": status, "ckpt": ckpt}
    exec(  # module-level code, so the sketch's placeholders are its globals
        '''
# --- example (docs/key-concepts/extending-context.md:45)
from ag_jupyter import Service

class Trainer(Service):
    async def submit(self, spec: dict) -> str:
        # Submit a training job to your HPC/cluster
        ...
        return job_id

    async def inspect_job(self, job_id: str) -> dict:
        # Inspect the job status
        ...
        return {"job_id": job_id, "status": status}
# --- end
from ag_jupyter.runtime import register_context_service
register_context_service("trainer",  Trainer())
from ag_jupyter import graph_fn, tool
# --- example (docs/key-concepts/extending-context.md:14)
@graph_fn(name="demo")
async def demo(*, context):
    info = await context.trainer().inspect_job(job_id="abc123")
    return {"status": info["status"]}
# --- end
# --- example (docs/key-concepts/extending-context.md:79)
@graph_fn(name="train_model", outputs=["job_id", "ckpt_uri"])
async def train_model(spec: dict, *, context):
    #  Submit to your cluster via the custom service
    job_id = await context.trainer().submit(spec)
    return {"job_id": job_id, "ckpt_uri": ckpt.uri}
# --- end
# --- example (docs/key-concepts/extending-context.md:89)
@tool(name="wait_for_training", outputs=["ready"])
async def wait_for_training(job_id: str, *, context) -> dict:
    # Inspect you job through your service
    info = await context.trainer().inspect_job(job_id)
    return {"ready": info["status"] == "COMPLETED"}
# --- end
''',
        namespace,
    )
    assert await namespace["demo"]() == {"status": "COMPLETED"}
    assert await namespace["train_model"](spec={"epochs": 1}) == {
        "job_id": "abc123", "ckpt_uri": "file://ckpt",
    }
    async with open_session():
        assert await namespace["wait_for_training"](job_id="abc123") == {"ready": True}


# ===================================================== docs/external-context-services.md
async def test_docs_external_context_services_md_L32_define_register_use() -> None:
    from ag_jupyter import NodeContext, Service, graph_fn
    from ag_jupyter.runtime import register_context_service

    # --- example (docs/external-context-services.md:32)
    class MyService(Service):
        def __init__(self, config):
            super().__init__()
            self.config = config
            self._cache = {}

        async def start(self):
            # optional: warm up connections, threads, or caches
            ...

        async def close(self):
            # optional: flush or close resources
            ...

        async def do_something(self, key: str) -> str:
            # example: consult cache, maybe call out to an API, return a value
            ...
    # --- end
    # --- example (docs/external-context-services.md:54)
    register_context_service("myservice", MyService(config={"mode": "dev"}))
    # --- end
    # --- example (docs/external-context-services.md:60)
    @graph_fn(name="demo")
    async def demo(*, context: NodeContext):
        value = await context.myservice.do_something("foo")
        return {"value": value}
    # --- end
    assert await demo() == {"value": None}
    # context.svc("name") is "equivalent to the dynamic attribute" (section 4.4)
    async with open_session() as context:
        assert context.svc("myservice") is context.myservice()


# =================================================== docs/reference/context-extension.md
async def test_docs_reference_context_extension_md_L19_minimal_flow_without_the_server() -> None:
    from ag_jupyter import Service, start_server
    from ag_jupyter.runtime import register_context_service

    class MyCache(Service):
        def __init__(self):
            super().__init__()
            self._data = {}

        def get(self, k, default=None):
            return self._data.get(k, default)

        def set(self, k, v):
            self._data[k] = v

    # 1) Start sidecar: ag_jupyter has none (the issue keeps start_server out of scope).
    with pytest.raises(NotImplementedError, match="no sidecar server"):
        start_server(port=0)
    # --- example (docs/reference/context-extension.md:19, the flow after start_server)
    # 2) Register a **singleton** instance for all contexts
    register_context_service("cache", MyCache())

    # 3) Use inside a graph/tool
    async def do_work(*, context):
        cache = context.cache()        # no‑arg call ⇒ bound service instance
        cache.set("foo", 42)
        return cache.get("foo")
    # --- end
    async with open_session() as context:
        assert await do_work(context=context) == 42


async def test_docs_reference_context_extension_md_L115_thread_safe_mutations() -> None:
    # --- example (docs/reference/context-extension.md:115)
    from ag_jupyter import Service

    class Counter(Service):
        def __init__(self):
            super().__init__()
            self._n = 0
            self.inc = self.critical()(self.inc)

        def inc(self, k: int = 1) -> int:
            self._n += k
            return self._n
    # --- end
    counter = Counter()
    assert await asyncio.gather(*(counter.inc() for _ in range(5))) == [1, 2, 3, 4, 5]


class _TempHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        body = json.dumps({"c": 21.5}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


async def test_docs_reference_context_extension_md_L131_wrapping_external_clients() -> None:
    pytest.importorskip("httpx")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TempHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # --- example (docs/reference/context-extension.md:131)
        import httpx

        from ag_jupyter import Service

        class Weather(Service):
            def __init__(self, base: str):
                super().__init__()
                self._base = base
                self._http = httpx.Client(timeout=10)

            async def close(self):
                await self.run_blocking(self._http.close)

            def get_temp_c(self, city: str) -> float:
                r = self._http.get(f"{self._base}/temp", params={"city": city})
                r.raise_for_status()
                return float(r.json()["c"])
        # --- end
        weather = Weather(f"http://127.0.0.1:{server.server_address[1]}")
        assert await weather.run_blocking(weather.get_temp_c, "Paris") == 21.5
        await weather.close()
    finally:
        server.shutdown()
        server.server_close()


async def test_docs_reference_context_extension_md_L152_using_in_graphs_and_tools() -> None:
    # --- example (docs/reference/context-extension.md:152)
    from ag_jupyter import Service
    from ag_jupyter.runtime import register_context_service

    class Greeter(Service):
        def greet(self, name: str) -> str:
            return f"Hello, {name}! (run={self.ctx().run_id})"

    register_context_service("greeter", Greeter())

    # Inside a node
    async def hello(*, context):
        g = context.greeter()               # bound service
        return {"msg": g.greet("World")}
    # --- end
    from ag_jupyter import graph_fn

    node = graph_fn("greeter_node")(hello)
    assert (await node())["msg"].startswith("Hello, World! (run=run-")
    record = await last_record("greeter_node")
    assert (await node())["msg"] != f"Hello, World! (run={record.run_id})"  # each run its own
    async with open_session(run_id="greeting-session") as context:
        assert await hello(context=context) == {
            "msg": "Hello, World! (run=greeting-session)"
        }


# ======================================== docs/tutorials/t7-extend-runtime-custom-services.md
async def test_docs_tutorials_t7_md_L103_train_and_wait_with_a_fake_trainer() -> None:
    from ag_jupyter import Service
    from ag_jupyter.runtime import register_context_service

    # --- example (docs/tutorials/t7-extend-runtime-custom-services.md:210)
    class FakeTrainer(Service):
        async def submit(self, spec: dict) -> str:
            return "job-test-123"

        async def inspect_job(self, job_id: str) -> dict:
            return {"job_id": job_id, "status": "COMPLETED"}

    # Test setup
    register_context_service("trainer", FakeTrainer())
    # All code using context.trainer() now talks to the fake.
    # --- end
    # --- example (docs/tutorials/t7-extend-runtime-custom-services.md:103)
    from ag_jupyter import graph_fn, tool

    @graph_fn(name="train_and_wait", outputs=["job_id", "done"])
    async def train_and_wait(spec: dict, *, context):
        job_id = await context.trainer().submit(spec)
        ready = await wait_for_training(job_id=job_id, context=context)
        return {"job_id": job_id, "done": ready["ready"]}

    @tool(name="wait_for_training", outputs=["ready"])
    async def wait_for_training(job_id: str, *, context) -> dict:
        info = await context.trainer().inspect_job(job_id)
        return {"ready": info["status"] == "COMPLETED"}
    # --- end
    # --- example (docs/tutorials/t7-extend-runtime-custom-services.md:30)
    @graph_fn(name="demo_trainer")
    async def demo_trainer(*, context):
        job_id = await context.trainer().submit({"epochs": 10})
        return {"job_id": job_id}
    # --- end
    assert await train_and_wait(spec={"epochs": 1}) == {"job_id": "job-test-123", "done": True}
    assert await demo_trainer() == {"job_id": "job-test-123"}
    record = await last_record("train_and_wait")
    [step] = await get_run_manager().steps(record.run_id)
    assert step["name"] == "wait_for_training" and step["outputs_preview"] == '{"ready": true}'


async def test_docs_tutorials_t7_md_L153_counter_service_mutex() -> None:
    # --- example (docs/tutorials/t7-extend-runtime-custom-services.md:153; Service from
    # ag_jupyter: the tutorial's aethergraph.services.runtime.base does not exist in 0.1.0a15)
    import asyncio

    from ag_jupyter import Service

    class CounterService(Service):
        def __init__(self):
            super().__init__()
            self._value = 0
            # Decorate incr with the bound service-wide mutex
            # The entire method runs under a critical section
            self.incr = self.critical()(self.incr)  # type: ignore

        async def incr(self, n: int = 1) -> int:
            self._value += n
            await asyncio.sleep(0)  # yield to event loop
            return self._value
    # --- end
    counter = CounterService()
    await asyncio.gather(*(counter.incr() for _ in range(50)))
    assert await counter.incr(0) == 50


async def test_docs_tutorials_t7_md_L175_offload_blocking_work() -> None:
    from ag_jupyter import Service

    # --- example (docs/tutorials/t7-extend-runtime-custom-services.md:175)
    class Heavy(Service):
        async def compute(self, x: int) -> int:
            return await self.run_blocking(self._slow_cpu_fn, x)  # threadpool offload

        def _slow_cpu_fn(self, x: int) -> int:
            ...  # pure CPU work
    # --- end
    assert await Heavy().compute(3) is None  # the sketch's body is "..."


async def test_docs_tutorials_t7_md_L266_callable_services() -> None:
    from ag_jupyter import Service
    from ag_jupyter.runtime import register_context_service

    # --- example (docs/tutorials/t7-extend-runtime-custom-services.md:266)
    class Predictor(Service):
        async def __call__(self, prompt: str) -> str:
            return await self.generate(prompt)

        async def generate(self, prompt: str) -> str:
            ...
    # --- end
    register_context_service("predictor", Predictor())
    async with open_session() as context:
        # --- example (docs/tutorials/t7-extend-runtime-custom-services.md:266, the calls)
        text = await context.predictor("hello")               # calls __call__
        text = await context.predictor().generate("hello")    # explicit method
        # --- end
    assert text is None  # the sketch's generate() body is "..."


# ======================== aethergraph-examples: method_showcase/6_extending_services
def test_examples_method_showcase_6_extending_services_5_critical_mutex_usage_py() -> None:
    namespace: dict[str, Any] = {"__name__": "critical_mutex_usage"}
    exec(
        '''
# --- example (method_showcase/6_extending_services/5_critical_mutex_usage.py:34-65)
from ag_jupyter import graph_fn, NodeContext, Service
from ag_jupyter import start_server
from ag_jupyter.runtime import register_context_service

import asyncio


# Variant: bind the decorator at runtime (clearer and supports inheritance):
class CounterService(Service):
    def __init__(self):
        super().__init__()
        self._value = 0
        # decorate incr with a bound `critical()` so `self` exists
        # This entire function is protected by the service-wide mutex
        self.incr = self.critical()(self.incr)  # type: ignore

    async def incr(self, n: int = 1) -> int:
        self._value += n
        await asyncio.sleep(0)
        return self._value


@graph_fn(name="counter_demo")
async def counter_demo(*, context: NodeContext):
    counter = context.counter() # get the CounterService: Need to register first
    async def worker():
        for _ in range(100):
            await counter.incr(1)
    await asyncio.gather(*[worker() for _ in range(10)])

    print("Final value (should be 1000):", await counter.incr(0))
    return {"final_value": await counter.incr(0)}
# --- end
''',
        namespace,
    )
    # The example's __main__ block, without start_server() (it raises here: no sidecar).
    # --- example (method_showcase/6_extending_services/5_critical_mutex_usage.py:68-75)
    from ag_jupyter.runner import run
    # register the service before running graphs
    namespace["register_context_service"]("counter", namespace["CounterService"]())

    result = run(namespace["counter_demo"])
    # --- end
    assert result == {"final_value": 1000}

    async def check() -> None:  # the print went to the run's log, not to the terminal
        [record] = await get_run_manager().list_records(graph_id="counter_demo", limit=1)
        assert await log_messages(record.run_id) == ["Final value (should be 1000): 1000"]

    asyncio.run(check())


def test_examples_method_showcase_3_logger_kv_1_logger_usage_py() -> None:
    # --- example (method_showcase/3_logger_kv/1_logger_usage.py:3-40)
    from ag_jupyter import NodeContext, graph_fn, tool

    @tool(name="logger_usage_example_tool", outputs=["tool_logged"])
    async def logger_usage_example_tool(*, context: NodeContext):
        """
        Use logger inside a tool to show node_id in logs.
        """
        log = context.logger()
        log.info(f"[tool] This is a log message from tool in node {context.node_id}")
        # another log after tool done will also show before exiting the tool in execution
        return {"tool_logged": True}

    @graph_fn(name="logger_usage_example")
    async def logger_usage_example(*, context: NodeContext):
        """
        Example demonstrating usage of context.logger() to log messages
        at different severity levels: info, warning, and error.
        """
        log = context.logger() # logger in graph_fn context will show node_id as __graph_inputs__

        log.info("logger_usage_example: Starting the logging demonstration.")
        log.info("This is an informational message.")

        log.warning("This is a warning message indicating something to be cautious about.")

        try:
            # Simulate an operation that raises an exception
            result = 10 / 0  # noqa: F841
        except Exception as e:
            log.error(f"An error occurred during computation: {e!r}")

        await logger_usage_example_tool() # logger in tool context will show actual node_id

        log.info("logger_usage_example: Logging demonstration completed.")
        return {"status": "completed"}
    # --- end
    # The __main__ block without start_server():
    # --- example (method_showcase/3_logger_kv/1_logger_usage.py:47-50)
    from ag_jupyter.runner import run

    result = run(logger_usage_example, inputs={})
    print("Result:", result)
    # --- end
    assert result == {"status": "completed"}
