"""Every exception the embedded runtime raises, in one place.

Each message says what was wrong, with the offending value, and what to do next. Each
class also derives from the built-in exception a caller would naturally catch (a missing
run is a ``LookupError``, bad inputs a ``ValueError``, a workspace problem an ``OSError``),
and all of them from :class:`AgJupyterError`::

    AgJupyterError
    ├── GraphNotFoundError          (LookupError)  no graph registered under an id
    ├── RunNotFoundError            (LookupError)  no run with an id
    ├── ArtifactNotFoundError       (LookupError, FileNotFoundError)  no artifact with an id
    ├── ArtifactURIError            (ValueError)   a URI that is not this workspace's artifact
    ├── CorpusNotFoundError         (LookupError)  no RAG corpus with an id
    ├── EmbedderMismatchError       (ValueError)   a corpus was filled by another embedder
    ├── RunInputError               (ValueError)   inputs do not fit the graph's signature
    ├── DuplicateRunIdError         (ValueError)   an explicit run id is taken
    ├── ServiceNotConfiguredError   (RuntimeError) llm / rag / mcp ... not set up
    │   ├── ExecutorNotAvailableError  (ExecutorError too) executor="dask" without distributed
    │   └── ServiceNotOnWorkerError    (ExecutorError too) a kernel-only service, asked on a worker
    ├── AskError                                   a channel ask (context.channel().ask_*)
    │   ├── AskNotFoundError        (LookupError)  no ask with this id is known
    │   ├── AskClosedError          (RuntimeError) answered / timed out / canceled already
    │   ├── AskAnswerError          (ValueError)   an answer that does not fit the ask
    │   │   └── AskUploadTooLargeError            files over the upload caps
    │   └── AskTimeoutError         (TimeoutError) raised in the run: timeout_s passed
    ├── ExecutorError               (RuntimeError) a run's executor (Dask) could not run it
    │   ├── WorkerLostError                        the Dask worker running the body died
    │   └── SchedulerLostError      (ConnectionError) the Dask scheduler went away mid-run
    ├── WorkspaceError              (OSError)      the workspace folder cannot be used
    │   ├── WorkspaceWriteError                    a write failed (disk full, read-only...)
    │   ├── WorkspaceClosedError                   the workspace was closed
    │   ├── WorkspaceCorruptError                  the database file is damaged
    │   └── BlobError                              a content file is planted / tampered
    │       └── BlobMissingError    (FileNotFoundError) it is not there
    ├── LLMError                    (RuntimeError) the LLM endpoint could not answer
    │   ├── LLMConnectionError      (ConnectionError)
    │   │   └── LLMTimeoutError     (TimeoutError)
    │   ├── LLMHTTPError                           4xx / 5xx from the endpoint
    │   │   ├── LLMAuthError        (PermissionError) 401 / 403: the key was refused
    │   │   ├── LLMModelNotFoundError (LookupError) 404 for the model
    │   │   └── LLMRateLimitError                  429: too many requests / quota
    │   └── LLMOutputError          (ValueError)   an answer that is not the JSON asked for
    └── MCPError                    (RuntimeError: what AetherGraph 0.1.0a15 raised)
        ├── MCPConfigError          (ValueError)   a configured server's settings are wrong
        ├── MCPServerStartError                    the server would not start or handshake
        ├── MCPConnectionError      (ConnectionError) it died again right after a restart
        ├── MCPTimeoutError         (TimeoutError) no answer within the client's timeout
        ├── MCPRequestError                        a JSON-RPC error answer (unknown tool...)
        └── MCPToolError                           a tool result with ``isError: true``

Executor errors name the scheduler or worker address and the run; a run whose body was
lost with its worker or scheduler ends ``failed`` with one of them as its ``error``.

Every LLM error names the profile, the endpoint's URL and the model, and says what to do;
none ever contains an API key. MCP messages never contain ``env`` values or HTTP header
values: they are secrets.
"""

from __future__ import annotations

from typing import Any


class AgJupyterError(Exception):
    """Base class of every exception raised by ag_jupyter's runtime."""


# ----------------------------------------------------------------------------- runs
class GraphNotFoundError(AgJupyterError, LookupError):
    """No graph is registered under the requested id.

    Raised by ``RunManager.submit_run`` / ``run_and_wait`` (and the ``runner()`` facade)
    before any run record is created.
    """


class RunNotFoundError(AgJupyterError, LookupError):
    """No run has the requested run id.

    Raised at once by ``wait_run`` / ``cancel_run`` / ``get_record``: never after a wait.
    """


class RunInputError(AgJupyterError, ValueError):
    """A run's inputs are missing, unexpected or of the wrong type.

    Raised when the run is submitted, before any run record is created or any code runs.
    """


class DuplicateRunIdError(AgJupyterError, ValueError):
    """An explicit ``run_id`` is already used by another run in this run store."""


class ServiceNotConfiguredError(AgJupyterError, RuntimeError):
    """A context service (llm, rag, mcp, ...) was asked for but is not configured.

    Raised at once (never after a network time-out); the message says which environment
    variables or ``open_session`` overrides configure it.
    """


class ArtifactNotFoundError(AgJupyterError, LookupError, FileNotFoundError):
    """No artifact has the requested id in this workspace (or the id is not one).

    Also a ``FileNotFoundError``, which is what AetherGraph's ``load_*_by_id`` raise (its
    documented examples catch that).
    """


class ArtifactURIError(AgJupyterError, ValueError):
    """A URI or path given to ``context.artifacts()`` does not name an artifact of this
    workspace (a file elsewhere, another storage's URI): it is refused, never read. The
    message says how to bring the file in (``save_file``)."""


class CorpusNotFoundError(AgJupyterError, LookupError):
    """No corpus has the requested id (``context.rag`` search, answer, stats, list_docs,
    delete_docs).

    AetherGraph returned empty results for an unknown corpus; here a typo is an error
    that names the corpora that exist. ``upsert_docs`` and ``bind_corpus`` create one.
    """


class EmbedderMismatchError(AgJupyterError, ValueError):
    """A corpus holds vectors of another embedder than the service's (or of another
    dimension): its vectors and the query's would not be comparable. Re-embed it with
    ``reembed(corpus_id)`` or search it with the embedder that filled it."""


# ----------------------------------------------------------------------------- asks
class AskError(AgJupyterError):
    """Base class of the errors of channel asks (``context.channel().ask_text`` ...,
    ``RunManager.answer``)."""


class AskNotFoundError(AskError, LookupError):
    """``RunManager.answer`` got an ask id this manager does not know (never opened here,
    or closed long ago). The message lists the open asks. Nothing was changed."""


class AskClosedError(AskError, RuntimeError):
    """``RunManager.answer`` was called for an ask that is no longer open: answered
    already (the first answer wins), timed out, or canceled. The message says which and
    when; the answer given was not used (and nothing else changed).

    Attributes:
      ask_id (str), run_id (str), state (str): ``"answered"``, ``"answering"`` (an
      answer with files is being saved), ``"timeout"`` or ``"canceled"``.
    """

    def __init__(self, message: str, *, ask_id: str, run_id: str, state: str) -> None:
        super().__init__(message)
        self.ask_id = ask_id
        self.run_id = run_id
        self.state = state


class AskAnswerError(AskError, ValueError):
    """An answer that does not fit its ask (``{"choice": id}`` naming no option, files
    for a text ask, a value of the wrong type...). The message says what fits; the ask
    stays open."""


class AskUploadTooLargeError(AskAnswerError):
    """Files given to a files ask are over the caps (``MAX_UPLOAD_FILE_BYTES`` per file,
    ``MAX_UPLOAD_ASK_BYTES`` per ask, ``MAX_UPLOAD_FILES`` files; see
    ``services/channel/asks.py``). The ask stays open."""


class AskTimeoutError(AskError, TimeoutError):
    """Raised in the run by an ask whose ``timeout_s`` seconds passed without an answer
    (AetherGraph 0.1.0a15 has no exception of its own for this: its continuation keeps a
    deadline that a cooperative wait never enforces). The run decides what to do: catch
    it (``except TimeoutError``) or let the run fail."""
# ------------------------------------------------------------------------ executors
class ExecutorError(AgJupyterError, RuntimeError):
    """A run's executor (``executor="dask"``) could not run its body: the scheduler could
    not be reached, a worker could not call back to the kernel, an outcome could not be
    brought back... The message names the address involved and says what to do."""


class ExecutorNotAvailableError(ExecutorError, ServiceNotConfiguredError):
    """``executor="dask"`` was asked for but ``distributed`` is not installed: ``pip
    install 'ag-jupyter[dask]'``. Raised at once where the choice is made (``@graph_fn``,
    ``open_session``, ``set_default_executor``), else by the run, which ends failed."""


class ServiceNotOnWorkerError(ExecutorError, ServiceNotConfiguredError):
    """A graph body running on a Dask worker asked for a service that lives only in the
    kernel (``mcp``, ``rag``, ``channel``, a custom one...). The message lists the services
    a worker body has (``logger``, ``llm``, ``kv``, ``memory``, ``artifacts``,
    ``runner()``) and says to run the graph with ``executor="local"`` instead."""


class WorkerLostError(ExecutorError):
    """The Dask worker running a run's body died (or left the cluster) before the body
    ended; the run ends ``failed`` with this error, naming the worker. Its body is never
    started again on another worker.

    Attributes: ``worker`` (str, the worker's address).
    """

    def __init__(self, message: str, *, worker: str | None = None) -> None:
        super().__init__(message)
        self.worker = worker


class SchedulerLostError(ExecutorError, ConnectionError):
    """The kernel lost its Dask scheduler while a run was live on it; the run ends
    ``failed`` with this error (its body's fate on the worker is unknown). Local runs are
    not affected; the next Dask run connects again.

    Attributes: ``address`` (str, the scheduler's address).
    """

    def __init__(self, message: str, *, address: str | None = None) -> None:
        super().__init__(message)
        self.address = address


# ------------------------------------------------------------------------ workspace
class WorkspaceError(AgJupyterError, OSError):
    """The workspace folder or its database cannot be used (missing, not a folder,
    read-only, full, locked by another process for too long, or closed).

    The message names the folder and says what to do.
    """


class WorkspaceWriteError(WorkspaceError):
    """A write to the workspace failed (read-only folder, full disk, lock held too long,
    folder deleted).

    Run records written by this process stay in memory (readable through the store) and
    are retried until they land; ``wait_run`` never raises it (its record then says
    ``meta["durable"] is False``). kv/memory/artifact writes that failed are not retried:
    the caller gets this error and nothing of the write was saved.
    """


class WorkspaceClosedError(WorkspaceError):
    """The workspace was closed; open it again with ``open_workspace``."""


class WorkspaceCorruptError(WorkspaceError):
    """The workspace's database file is damaged (or is not a SQLite database).

    The file is left untouched; the message names it and says how to start afresh (move
    it aside) or where to look for a copy.
    """


class BlobError(WorkspaceError):
    """A content-addressed file of the workspace (an artifact's content, a large output)
    is not a plain file (a symbolic link was planted), or its content no longer matches
    its sha256: it is never followed or trusted."""


class BlobMissingError(BlobError, FileNotFoundError):
    """No content file has this digest (nothing planted: it is simply not there)."""


# ------------------------------------------------------------------------------ llm
class LLMError(AgJupyterError, RuntimeError):
    """An LLM endpoint could not answer a request (see the subclasses).

    Attributes:
      base_url (str): the endpoint's API root. model (str | None): the requested model.
      profile (str | None): the profile the request was made with.
    """

    def __init__(
        self,
        message: str,
        *,
        base_url: str,
        model: str | None = None,
        profile: str | None = None,
    ) -> None:
        super().__init__(message)
        self.base_url = base_url
        self.model = model
        self.profile = profile


class LLMConnectionError(LLMError, ConnectionError):
    """The LLM endpoint could not be reached (refused, DNS, TLS, reset...)."""


class LLMTimeoutError(LLMConnectionError, TimeoutError):
    """The LLM endpoint did not answer within the profile's time-out (seconds)."""


class LLMHTTPError(LLMError):
    """The LLM endpoint answered with an HTTP error status (4xx/5xx).

    Attributes:
      status_code (int): the HTTP status. server_message (str): the endpoint's message.
      body: the decoded error body (dict, str or None).
    """

    def __init__(
        self,
        message: str,
        *,
        base_url: str,
        model: str | None,
        status_code: int,
        server_message: str,
        body: Any = None,
        profile: str | None = None,
    ) -> None:
        super().__init__(message, base_url=base_url, model=model, profile=profile)
        self.status_code = status_code
        self.server_message = server_message
        self.body = body


class LLMAuthError(LLMHTTPError, PermissionError):
    """401 / 403: the endpoint refused the profile's API key (or it has none)."""


class LLMModelNotFoundError(LLMHTTPError, LookupError):
    """404 for the requested model: the endpoint does not serve it under that name."""


class LLMRateLimitError(LLMHTTPError):
    """429: too many requests, or the account's quota is used up.

    Attributes:
      retry_after_s (float | None): seconds the endpoint asked to wait, when it said.
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s


class LLMOutputError(LLMError, ValueError):
    """The model's answer is not what the request asked for (``output_format="json"`` /
    ``json_schema=`` / a pydantic model): not JSON, or JSON that does not fit the schema.

    Attributes:
      text (str): the raw answer.
    """

    def __init__(self, message: str, *, text: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.text = text


# ------------------------------------------------------------------------------ mcp
class MCPError(AgJupyterError, RuntimeError):
    """Base of every error raised by ``context.mcp(name)`` clients.

    Attributes: ``server`` (the client's name, e.g. ``"time"``) and ``tool`` (the tool name,
    or None when the request was not a tool call).
    """

    def __init__(self, message: str, *, server: str | None = None, tool: str | None = None):
        super().__init__(message)
        self.server = server
        self.tool = tool


class MCPConfigError(MCPError, ValueError):
    """An MCP server's configuration is invalid (``configure_mcp_servers``, client arguments).

    Raised before anything starts; the message names the server and the offending key.
    """


class MCPServerStartError(MCPError):
    """An MCP server did not start: the command is missing, exited at once, or the MCP
    handshake failed or timed out (or, for HTTP, the URL could not be reached).

    The message names the server and the command (or URL) and ends with the server's last
    stderr lines. Attributes: ``command`` (list of str, or None for HTTP), ``url`` (str or
    None; user info and query string removed), ``stderr_tail`` (str).
    """

    def __init__(
        self,
        message: str,
        *,
        server: str | None = None,
        command: list[str] | None = None,
        url: str | None = None,
        stderr_tail: str = "",
    ):
        super().__init__(message, server=server)
        self.command = command
        self.url = url
        self.stderr_tail = stderr_tail


class MCPConnectionError(MCPError, ConnectionError):
    """An MCP server closed the connection (its process died) during a request, and did so
    again after the one automatic restart that request gets."""


class MCPTimeoutError(MCPError, TimeoutError):
    """An MCP request got no answer within the client's ``timeout`` (seconds).

    The SDK sends the server a cancellation for the abandoned request; the server keeps
    running. Attributes: ``timeout_s`` (float, seconds).
    """

    def __init__(
        self, message: str, *, server: str | None = None, tool: str | None = None,
        timeout_s: float | None = None,
    ):
        super().__init__(message, server=server, tool=tool)
        self.timeout_s = timeout_s


class MCPRequestError(MCPError):
    """The MCP server answered a request with a JSON-RPC error (for example -32602 for an
    unknown tool or invalid arguments).

    Attributes: ``method`` (e.g. ``"tools/call"``), ``code`` (int), ``data`` (the error's data,
    or None).
    """

    def __init__(
        self, message: str, *, server: str | None = None, tool: str | None = None,
        method: str = "", code: int = 0, data: object = None,
    ):
        super().__init__(message, server=server, tool=tool)
        self.method = method
        self.code = code
        self.data = data


class MCPToolError(MCPError):
    """A tool call returned a result with ``isError: true`` (the tool itself failed).

    AetherGraph 0.1.0a15 returned such results like any other; we raise, so a failed tool
    never passes for a result. Attributes: ``result`` (the whole result dict, as ``call``
    would have returned it).
    """

    def __init__(
        self, message: str, *, server: str | None = None, tool: str | None = None,
        result: dict | None = None,
    ):
        super().__init__(message, server=server, tool=tool)
        self.result = result
