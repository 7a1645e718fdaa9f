"""Where channel messages go: AetherGraph's channel types, the process-wide channel bus
(adapters by key prefix, the default key, aliases) and the built-in adapters.

A channel key is ``"<prefix>:<rest>"``; the prefix picks an adapter. Built in:

- ``notebook`` (the default, ``notebook:panel``) and ``console`` (``console:stdin``,
  AetherGraph's default key): one adapter. Every message goes to the run's transcript
  and every ask is listed by ``RunManager.pending_asks()``, shown in the run panel and
  answered by ``RunManager.answer()`` / ``%ag_answer``. In a plain script (no IPython)
  it also prints messages as AetherGraph's console does (``[console] agent.message ::
  text``) and, when stdin is a terminal, prompts there in a thread: whichever answer
  comes first wins. In a kernel it never prints (runs never print into cells).
- ``file`` (``file:logs/run.log``): appends one line per message under
  ``<workspace>/channel_files/`` (AetherGraph's file adapter; paths may not leave it).

Others (``slack:``, ``tg:``, ``webhook:``, ``ui:``...) need an adapter registered with
:func:`register_channel_adapter` (AetherGraph's protocol: ``capabilities`` and ``async
send(event) -> dict | None``; an adapter that answers an ask inline returns
``{"payload": {...}}``; one that cannot replies later through ``RunManager.answer(
event.meta["ask_id"], value)``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from ...errors import ServiceNotConfiguredError

log = logging.getLogger("ag_jupyter.channel")

#: The default channel key: the notebook (panel, ``%ag_answer``, ``manager.answer``).
DEFAULT_CHANNEL = "notebook:panel"
#: Where the file adapter writes, under the workspace folder.
CHANNEL_FILES_DIRNAME = "channel_files"


# ------------------------------------------------------- AetherGraph's channel types
@dataclass
class Button:
    """A button of ``send_buttons`` (AetherGraph 0.1.0a15's ``Button``): ``label``, and
    ``value`` (what a click answers) or ``url`` (a link); ``style`` is ``"primary"``,
    ``"danger"``, ``"default"`` or None."""

    label: str
    value: str | None = None
    url: str | None = None
    style: Literal["primary", "danger", "default"] | None = None


@dataclass(frozen=True)
class ChoiceOption:
    """An option of ``ask_choices`` (a15): ``id`` (what the run gets as ``choice``),
    ``label`` (what a person sees) and ``aliases`` (other replies that select it)."""

    id: str
    label: str
    aliases: tuple[str, ...] = field(default_factory=tuple)


@dataclass
class OutEvent:
    """What an adapter's ``send`` receives (a15's ``OutEvent``): ``type``
    (``"agent.message"``, ``"session.need_input"``, ``"session.need_approval"``,
    ``"link.buttons"``, ``"agent.progress.update"``, ``"agent.stream.*"``...), the
    resolved ``channel`` key, ``text``, and optional ``rich``, ``meta`` (run_id,
    session_id, graph_id, node_id; ``ask_id`` for asks), ``buttons``, ``image``,
    ``file``, ``upsert_key``."""

    type: str
    channel: str
    text: str | None = None
    rich: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
    buttons: list[Button] | None = None
    image: dict[str, Any] | None = None
    file: dict[str, Any] | None = None
    upsert_key: str | None = None

    def to_printable(self) -> str:
        """The printable parts of the event (a15)."""
        return (
            f"Event(type={self.type}, channel={self.channel}, text={self.text}, "
            f"meta={self.meta})"
        )


class ChannelAdapter(Protocol):
    """AetherGraph's adapter protocol: ``capabilities`` (e.g. ``{"text", "input",
    "buttons"}``) and ``async send(event) -> dict | None``."""

    capabilities: set[str]

    async def send(self, event: OutEvent) -> dict[str, Any] | None:
        """Deliver ``event``; for an ask, ``{"payload": {...}}`` answers it inline."""


def build_choice_options(options: Iterable[Any] | None) -> list[ChoiceOption]:
    """Options as a15 builds them (``services/channel/choices.py``): a str is its own id
    and label; a dict gives ``id`` / ``label`` (or ``name``) / ``aliases``; a
    :class:`ChoiceOption` is kept. Blank ones are dropped; a repeated id keeps the first."""
    built: list[ChoiceOption] = []
    for option in options or []:
        if isinstance(option, ChoiceOption):
            aliases = tuple(str(a) for a in option.aliases if str(a).strip())
            built.append(ChoiceOption(id=str(option.id), label=str(option.label), aliases=aliases))
        elif isinstance(option, Mapping):
            label = str(option.get("label") or option.get("name") or option.get("id") or "").strip()
            choice_id = str(option.get("id") or label).strip()
            aliases = tuple(
                str(a).strip() for a in (option.get("aliases") or []) if str(a).strip()
            )
            if choice_id and label:
                built.append(ChoiceOption(id=choice_id, label=label, aliases=aliases))
        else:
            label = str(option).strip()
            if label:
                built.append(ChoiceOption(id=label, label=label))
    deduped: list[ChoiceOption] = []
    seen: set[str] = set()
    for option in built:
        if option.id not in seen:
            deduped.append(option)
            seen.add(option.id)
    return deduped


def fallback_event(adapter: Any, event: OutEvent) -> OutEvent | None:
    """a15's smart fallback for adapters lacking a capability: buttons as a numbered
    text list, stream deltas as messages; None when the adapter cannot show the event."""
    caps = getattr(adapter, "capabilities", None)
    if caps is None:
        return event
    need = None
    if event.type in ("agent.message", "session.need_input"):
        need = "text"
    elif event.type in ("session.need_approval", "link.buttons"):
        need = "buttons"
    elif event.type.startswith("agent.stream."):
        need = "stream"
    if need is None or need in caps:
        return event
    if need == "buttons" and "text" in caps:
        lines = [f"{i}. {b.label}" for i, b in enumerate(event.buttons or [], 1)]
        text = "\n".join([event.text or "Choose an option:", *lines])
        return OutEvent(type="agent.message", channel=event.channel, text=text, meta=event.meta)
    if need == "stream" and "text" in caps:
        if event.type == "agent.stream.delta":
            return OutEvent(
                type="agent.message", channel=event.channel, text=event.text, meta=event.meta
            )
        return None
    return None if need != "text" else event


# ------------------------------------------------------------------------ the bus
class ChannelBus:
    """The process-wide channel registry (a15's ``ChannelBus`` admin API): adapters by
    key prefix, the default key and aliases. :func:`get_channel_service` returns it.

    Thread-safe; ``context.channel()`` reads it at each call.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        notebook = NotebookChannelAdapter()
        self.adapters: dict[str, Any] = {
            "notebook": notebook,
            "console": notebook,
            "file": FileChannelAdapter(),
        }
        self.default_channel = DEFAULT_CHANNEL
        self.channel_aliases: dict[str, str] = {}

    @property
    def default_channel_key(self) -> str:
        """The default key (what ``get_default_channel()`` returns)."""
        return self.default_channel

    def register_adapter(self, prefix: str, adapter: Any) -> None:
        """Route keys ``"<prefix>:..."`` to ``adapter`` (replacing any adapter there).

        Raises:
          TypeError: if ``prefix`` is not a non-empty str without ``:``, or ``adapter``
            has no ``send`` method.
        """
        if not isinstance(prefix, str) or not prefix or ":" in prefix:
            raise TypeError(
                f"a channel adapter is registered by its key prefix (e.g. 'slack'), a "
                f"non-empty str without ':'; got {prefix!r}"
            )
        if not callable(getattr(adapter, "send", None)):
            raise TypeError(
                f"channel adapter {adapter!r} has no send(event) method (AetherGraph's "
                "ChannelAdapter protocol: capabilities and async send(event))"
            )
        with self._lock:
            self.adapters[prefix] = adapter

    def set_default_channel_key(self, channel_key: str) -> None:
        """Make ``channel_key`` what ``context.channel()`` uses without a key.

        Raises:
          ValueError: if it is not a ``"<prefix>:<rest>"`` str.
        """
        self.default_channel = check_channel_key(channel_key)

    def get_default_channel_key(self) -> str:
        """The default channel key."""
        return self.default_channel

    def register_alias(self, alias: str, target: str) -> None:
        """Make ``alias`` stand for the key ``target`` (a15).

        Raises:
          RuntimeError: if no adapter serves ``target``'s prefix (as a15).
          ValueError: if ``target`` is not a ``"<prefix>:<rest>"`` key.
        """
        target = check_channel_key(target)
        prefix = target.split(":", 1)[0]
        with self._lock:
            if prefix not in self.adapters:
                raise RuntimeError(
                    f"cannot alias {alias!r} to {target!r}: no channel adapter for prefix "
                    f"{prefix!r} (registered: {', '.join(sorted(self.adapters))}); register "
                    f"one first with register_channel_adapter({prefix!r}, adapter)"
                )
            self.channel_aliases[str(alias)] = target

    def resolve_channel_key(self, key: str) -> str:
        """``key`` with an alias replaced by its target."""
        return self.channel_aliases.get(key, key)

    def pick(self, channel_key: str) -> Any:
        """The adapter serving ``channel_key`` (aliases resolved).

        Raises:
          ServiceNotConfiguredError: if no adapter serves its prefix (a
            ``RuntimeError``, as a15 raises).
        """
        key = self.resolve_channel_key(channel_key)
        prefix = key.split(":", 1)[0]
        with self._lock:
            adapter = self.adapters.get(prefix)
            known = sorted(self.adapters)
        if adapter is None:
            raise ServiceNotConfiguredError(
                f"no channel adapter for {key!r} (prefix {prefix!r}; registered: "
                f"{', '.join(known)}). ag_jupyter has the notebook/console and file "
                f"channels built in; for another one register an adapter with "
                f"register_channel_adapter({prefix!r}, adapter), or use "
                "context.channel() (the notebook)"
            )
        return adapter


def check_channel_key(key: Any) -> str:
    """``key`` if it is a ``"<prefix>:<rest>"`` str.

    Raises:
      ValueError: otherwise (the message shows the value and the form).
    """
    if not isinstance(key, str) or ":" not in key or not key.split(":", 1)[0]:
        raise ValueError(
            f"a channel key has the form '<prefix>:<rest>' (e.g. 'notebook:panel', "
            f"'console:stdin', 'file:logs/run.log'); got {key!r}"
        )
    return key


def get_channel_service() -> ChannelBus:
    """The process-wide :class:`ChannelBus` (a15: ``get_channel_service()`` returns the
    services container's channel bus)."""
    return _bus


def register_channel_adapter(name: str, adapter: Any) -> None:
    """Route channel keys ``"<name>:..."`` to ``adapter`` (a15's
    ``register_channel_adapter``); ``context.channel("<name>:...")`` then uses it.
    Messages and asks are kept in the run's transcript and asks listed by
    ``RunManager.pending_asks()`` whichever adapter shows them.

    Raises:
      TypeError: see :meth:`ChannelBus.register_adapter`.
    """
    _bus.register_adapter(name, adapter)


def set_default_channel(key: str) -> None:
    """Make ``key`` the default channel of ``context.channel()`` (a15).

    Raises:
      ValueError: if it is not a ``"<prefix>:<rest>"`` key.
    """
    _bus.set_default_channel_key(key)


def get_default_channel() -> str:
    """The default channel key (``"notebook:panel"`` unless changed)."""
    return _bus.get_default_channel_key()


def set_channel_alias(alias: str, channel_key: str) -> None:
    """Make ``alias`` stand for ``channel_key`` in ``context.channel(alias)`` (a15).

    Raises:
      RuntimeError: if no adapter serves ``channel_key``'s prefix.
    """
    _bus.register_alias(alias, channel_key)


# -------------------------------------------------------------- built-in adapters
def ipython_active() -> bool:
    """Whether an IPython shell (terminal or kernel) runs this process (checked without
    importing IPython)."""
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    try:
        return callable(get) and get() is not None
    except Exception:
        return False


def stdin_is_terminal() -> bool:
    """Whether ``sys.stdin`` is an interactive terminal."""
    stdin = sys.stdin
    try:
        return stdin is not None and stdin.isatty()
    except (ValueError, OSError):
        return False


def console_print(*parts: Any, end: str = "\n") -> None:
    """Print to the process's real stdout: a run's own ``print()`` goes to its log
    (``output_capture``), but the console channel talks to the terminal."""
    out = sys.stdout
    while hasattr(out, "_ag_target"):
        out = out._ag_target
    if out is None:
        return
    out.write(" ".join(str(p) for p in parts) + end)
    out.flush()


class NotebookChannelAdapter:
    """The built-in ``notebook:`` / ``console:`` adapter (see the module docstring).

    Args:
      echo: print messages to stdout (None: in a plain script, i.e. when no IPython
        shell runs this process).
      stdin: prompt for asks on stdin (None: in a plain script whose stdin is a
        terminal). Whichever answer comes first (stdin, panel, ``manager.answer``) wins.
    """

    capabilities: ClassVar[set[str]] = {
        "text", "input", "buttons", "file", "image", "rich", "stream"
    }

    def __init__(self, *, echo: bool | None = None, stdin: bool | None = None) -> None:
        self.echo = echo
        self.stdin = stdin

    def echoes(self) -> bool:
        """Whether messages are printed now."""
        return (not ipython_active()) if self.echo is None else bool(self.echo)

    def prompts_on_stdin(self) -> bool:
        """Whether asks prompt on stdin now."""
        if self.stdin is not None:
            return bool(self.stdin)
        return not ipython_active() and stdin_is_terminal()

    async def send(self, event: OutEvent) -> dict[str, Any] | None:
        """Print ``event`` as a15's console does when :meth:`echoes`; asks are presented
        through :meth:`present_ask` (never answered inline)."""
        if not self.echoes() or event.type.startswith("session.need_"):
            return None
        if event.type.startswith("agent.stream.") or event.type.startswith("agent.progress."):
            return None
        line = f"[console] {event.type} :: {event.text or ''}"
        if event.image:
            line += f" [image] {event.image.get('title', '')}: {event.image.get('url', '')}"
        if event.file:
            line += (
                f" [file]  {event.file.get('filename', '')}: "
                f"{event.file.get('uri') or event.file.get('url') or '(binary)'}"
            )
        if event.buttons:
            line += " [buttons] " + ", ".join(b.label for b in event.buttons)
        console_print(line)
        return None

    def present_ask(self, book: Any, ask: Any) -> None:
        """Show a new ask: on stdin when :meth:`prompts_on_stdin` (the panel and
        ``pending_asks()`` show every ask anyway)."""
        if self.prompts_on_stdin():
            stdin_prompter.add(asyncio.get_running_loop(), book, ask)


class _StdinPrompter:
    """Prompts for asks on stdin, one at a time (oldest first), with one reader thread
    for the whole process (a blocked ``readline`` cannot be taken back: a thread per ask
    would leave readers behind that eat later lines).

    A line answers the ask being prompted (``RunManager.answer_nowait``); an empty line
    is ignored (as a15's console, which then leaves the ask to other channels). An ask
    answered elsewhere simply leaves the queue; the next one is prompted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[tuple[asyncio.AbstractEventLoop, Any, Any]] = []
        self._thread: threading.Thread | None = None
        self._shown: str | None = None
        self._mid_line = False  # a prompt is on screen, nothing typed after it yet

    def add(self, loop: asyncio.AbstractEventLoop, book: Any, ask: Any) -> None:
        with self._lock:
            self._queue.append((loop, book, ask))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._read, name="ag-channel-stdin", daemon=True
                )
                self._thread.start()
        book.on_close(ask.ask_id, lambda: loop.call_soon(self._show_next))
        self._show_next()

    def _head(self) -> tuple[asyncio.AbstractEventLoop, Any, Any] | None:
        with self._lock:
            self._queue = [e for e in self._queue if e[1].is_open(e[2].ask_id)]
            return self._queue[0] if self._queue else None

    def _show_next(self) -> None:
        head = self._head()
        if head is None or head[2].ask_id == self._shown:
            return
        ask = head[2]
        if self._mid_line and self._shown is not None:
            console_print("")  # the prompt on screen was answered elsewhere
        self._shown = ask.ask_id
        self._mid_line = True
        if ask.options:
            console_print((ask.prompt or "Choose an option:").strip())
            for i, option in enumerate(ask.options, 1):
                console_print(f"  {i}. {option['label']}")
            console_print("Reply with number or label: ", end="")
        else:
            console_print((ask.prompt or "Please reply:").rstrip() + " ", end="")

    def _read(self) -> None:
        while True:
            try:
                line = sys.stdin.readline()
            except (OSError, ValueError):
                return
            if line == "":  # EOF: nothing more will come from stdin
                return
            self._mid_line = False
            head = self._head()
            if head is None:
                continue
            loop, book, ask = head
            try:
                loop.call_soon_threadsafe(self._answer, book, ask, line.rstrip("\r\n").strip())
            except RuntimeError:  # that loop is closed
                continue

    def _answer(self, book: Any, ask: Any, text: str) -> None:
        if not text:
            self._shown = None
            self._show_next()
            return
        try:
            book.answer_nowait(ask.ask_id, text)
        except Exception as exc:  # closed meanwhile, or a reply that does not fit
            console_print(f"[console] {exc}")
            self._shown = None
        self._show_next()


stdin_prompter = _StdinPrompter()


class FileChannelAdapter:
    """The built-in ``file:`` adapter (a15's): appends ``[time] type: text`` lines (plus
    a JSON line of meta/rich/file/buttons when present) to
    ``<root>/<path after "file:">``, creating folders. ``root`` defaults to
    ``<workspace>/channel_files`` of the sending run's workspace. Inform-only: an ask
    sent here is written as a line and answered like any other ask (panel,
    ``manager.answer``).

    Raises (from ``send_from``):
      ValueError: for a path that is absolute or leaves the root (``..``).
    """

    capabilities: ClassVar[set[str]] = {"text", "rich", "file", "buttons"}

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = None if root is None else Path(root)

    def path_for(self, channel_key: str, root: Path) -> Path:
        """The file a key writes to.

        Raises:
          ValueError: if the key's path is absolute or leaves ``root``.
        """
        rel = channel_key.split(":", 1)[1] if ":" in channel_key else ""
        rel = rel or "logs/default.log"
        base = root.resolve()
        path = (base / rel).resolve()
        if Path(rel).is_absolute() or not path.is_relative_to(base):
            raise ValueError(
                f"file channel {channel_key!r} leaves the channel folder {str(base)!r}; use "
                "a relative path inside it, e.g. 'file:logs/run.log'"
            )
        return path

    @staticmethod
    def format_line(event: OutEvent) -> str:
        """The line(s) written for ``event``."""
        line = f"[{datetime.now(UTC).isoformat()}] {event.type}: {event.text or ''}"
        extras: dict[str, Any] = {}
        if event.meta:
            extras["meta"] = event.meta
        if event.rich:
            extras["rich"] = event.rich
        if event.file:
            extras["file"] = {
                "name": event.file.get("filename") or event.file.get("name"),
                "mimetype": event.file.get("mimetype"),
            }
        if event.buttons:
            extras["buttons"] = [
                {"label": b.label, "value": b.value, "url": b.url, "style": b.style}
                for b in event.buttons
            ]
        if extras:
            line += "\n  " + json.dumps(extras, ensure_ascii=False, default=str)
        return line + "\n"

    async def send_from(self, context: Any, event: OutEvent) -> dict[str, Any] | None:
        """Append ``event``'s line to its file, for a run of ``context``."""
        root = self.root
        if root is None:
            workspace = getattr(getattr(context.manager, "store", None), "workspace", None)
            if workspace is not None:
                base = Path(workspace.path)
            else:
                from ...store.workspace import resolve_workspace_path

                base = resolve_workspace_path()
            root = base / CHANNEL_FILES_DIRNAME
        path = self.path_for(event.channel, root)
        text = self.format_line(event)

        def append() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as f:
                f.write(text)

        await asyncio.to_thread(append)
        return None

    async def send(self, event: OutEvent) -> dict[str, Any] | None:
        """Append ``event``'s line under ``root`` (which must be set; ``context.channel``
        uses :meth:`send_from`, which knows the run's workspace)."""
        if self.root is None:
            raise RuntimeError("FileChannelAdapter.send needs a root folder")
        return await self.send_from(None, event)


#: The process's channel bus (built last: it makes the built-in adapters above).
_bus = ChannelBus()
