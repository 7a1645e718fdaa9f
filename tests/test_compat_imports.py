"""Every name AetherGraph 0.1.0a15 exports from ``aethergraph``, ``aethergraph.runtime`` and
``aethergraph.runner`` imports from the same path with ``ag_jupyter`` in its place (issue 13,
item 1); the ones not provided raise ``NotImplementedError`` saying what to use instead."""

from __future__ import annotations

import importlib

import pytest

# 0.1.0a15's __all__ lists (src/aethergraph/__init__.py, runtime/__init__.py,
# runner/__init__.py at commit 154b13c), verbatim.
A15_TOP = [
    "start_server", "stop_server", "start_server_async", "tool", "graph_fn", "graphify",
    "TaskGraph", "NodeContext", "Service", "Button",
]
A15_RUNTIME = [
    "install_services", "ensure_services_installed", "current_services",
    "get_channel_service", "set_default_channel", "get_default_channel", "set_channel_alias",
    "register_channel_adapter", "get_llm_service", "register_llm_client",
    "set_rag_llm_client", "set_rag_index_backend", "get_skill_registry", "register_skill",
    "register_skill_file", "register_skill_inline", "register_skills_from_path",
    "current_logger_factory", "register_context_service", "get_ext_context_service",
    "list_ext_context_services", "set_mcp_service", "get_mcp_service", "register_mcp_client",
    "list_mcp_clients", "open_session", "RunManager", "RunRecord", "RunStatus", "RunOrigin",
    "RunImportance", "RunVisibility",
]
A15_RUNNER = ["run", "run_async"]

BUILT = {
    "ag_jupyter": ["graph_fn", "tool", "Service", "NodeContext", "Button"],
    "ag_jupyter.runtime": [
        "open_session", "build_adhoc_context", "RunManager", "RunRecord", "RunStatus",
        "RunOrigin", "RunVisibility", "RunImportance", "register_context_service",
        "get_ext_context_service", "list_ext_context_services", "register_llm_client",
        "get_llm_service", "current_services", "register_mcp_client",
        "get_channel_service", "set_default_channel", "get_default_channel",
        "set_channel_alias", "register_channel_adapter",
    ],
    "ag_jupyter.runner": ["run", "run_async"],
}

# name -> (call that uses it, words its NotImplementedError message must hold)
NOT_PROVIDED = {
    ("ag_jupyter", "graphify"): (lambda f: f(name="g", inputs=[], outputs=[]), ["@graph_fn"]),
    ("ag_jupyter", "TaskGraph"): (lambda f: f(), ["@graph_fn"]),
    ("ag_jupyter", "start_server"): (lambda f: f(), ["no sidecar server", "Remove the call"]),
    ("ag_jupyter", "start_server_async"): (lambda f: f(), ["no sidecar server"]),
    ("ag_jupyter", "stop_server"): (lambda f: f(), ["no sidecar server"]),
    ("ag_jupyter.runtime", "install_services"): (
        lambda f: f(object()), ["register_context_service"]
    ),
    ("ag_jupyter.runtime", "ensure_services_installed"): (
        lambda f: f(dict), ["register_context_service"]
    ),
    ("ag_jupyter.runtime", "current_logger_factory"): (lambda f: f(), ["context.logger()"]),
    ("ag_jupyter.runtime", "get_skill_registry"): (lambda f: f(), ["skill"]),
    ("ag_jupyter.runtime", "register_skill"): (lambda f: f(object()), ["skill"]),
    ("ag_jupyter.runtime", "register_skill_file"): (lambda f: f("s.md"), ["skill"]),
    ("ag_jupyter.runtime", "register_skill_inline"): (
        lambda f: f(id="s", title="S"), ["skill"]
    ),
    ("ag_jupyter.runtime", "register_skills_from_path"): (lambda f: f("skills/"), ["skill"]),
    ("ag_jupyter.runtime", "set_rag_llm_client"): (lambda f: f(), ["never defined", "rag"]),
    ("ag_jupyter.runtime", "set_rag_index_backend"): (lambda f: f(), ["never defined"]),
}


@pytest.mark.parametrize(
    ("module", "names"),
    [("ag_jupyter", A15_TOP), ("ag_jupyter.runtime", A15_RUNTIME),
     ("ag_jupyter.runner", A15_RUNNER)],
)
def test_every_name_0_1_0a15_exports_imports_from_the_same_path(
    module: str, names: list[str]
) -> None:
    mod = importlib.import_module(module)
    missing = [name for name in names if not hasattr(mod, name)]
    assert missing == []
    # ``from ag_jupyter.runtime import *`` gives them too
    exported = set(getattr(mod, "__all__", ()))
    assert [name for name in names if name not in exported] == []


def test_from_imports_as_aethergraph_code_writes_them() -> None:
    namespace: dict[str, object] = {}
    exec(
        "from ag_jupyter import graph_fn, graphify, TaskGraph, NodeContext, Service, tool, "
        "Button, start_server, start_server_async, stop_server\n"
        "from ag_jupyter.runtime import " + ", ".join(A15_RUNTIME) + ", build_adhoc_context\n"
        "from ag_jupyter.runner import run, run_async\n",
        namespace,
    )
    assert "run_async" in namespace and "open_session" in namespace


@pytest.mark.parametrize(("module", "name"), [(m, n) for m, ns in BUILT.items() for n in ns])
def test_built_names_are_real_not_placeholders(module: str, name: str) -> None:
    obj = getattr(importlib.import_module(module), name)
    assert getattr(obj, "__module__", "").startswith("ag_jupyter.runtime")
    assert "placeholders" not in obj.__module__


@pytest.mark.parametrize(("module", "name"), sorted(NOT_PROVIDED))
def test_names_not_provided_raise_not_implemented_saying_what_to_use(
    module: str, name: str
) -> None:
    obj = getattr(importlib.import_module(module), name)
    use, words = NOT_PROVIDED[(module, name)]
    with pytest.raises(NotImplementedError) as info:
        use(obj)
    message = str(info.value)
    assert name.split(".")[-1] in message
    for word in words:
        assert word in message


def test_placeholders_are_one_module_and_documented() -> None:
    from ag_jupyter.runtime import placeholders

    for name in placeholders.__all__:
        obj = getattr(placeholders, name)
        assert obj.__doc__ and "NotImplementedError" in obj.__doc__


def test_docs_names_for_the_ext_service_helpers_are_aliases() -> None:
    # docs/external-context-services.md section 4.2 names them get_context_service /
    # list_context_services.
    from ag_jupyter.runtime import (
        get_context_service,
        get_ext_context_service,
        list_context_services,
        list_ext_context_services,
    )

    assert get_context_service is get_ext_context_service
    assert list_context_services is list_ext_context_services


def test_run_manager_accepts_aethergraphs_keyword_for_the_limit() -> None:
    from ag_jupyter.runtime import RunManager

    assert RunManager(max_concurrent_runs=3).max_concurrency == 3


def test_runtime_package_never_imports_ipython() -> None:
    import subprocess
    import sys

    code = (
        "import sys, ag_jupyter, ag_jupyter.runtime, ag_jupyter.runner\n"
        "assert 'IPython' not in sys.modules, 'IPython imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_mcp_names_are_the_real_ones() -> None:
    from ag_jupyter.runtime import get_mcp_service, list_mcp_clients, set_mcp_service
    from ag_jupyter.runtime.services import mcp

    assert get_mcp_service is mcp.get_mcp_service
    assert list_mcp_clients is mcp.list_mcp_clients and set_mcp_service is mcp.set_mcp_service
    assert isinstance(list_mcp_clients(), list)
