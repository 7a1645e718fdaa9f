"""Asks: questions a run puts to a person through ``context.channel().ask_*``, how they
are answered, and the transcript they leave.

One :class:`AskBook` per RunManager (``manager.asks``) holds the open asks of its runs.
The life of an ask:

1. ``ask_*`` opens it: an :class:`Ask` is registered (``pending_asks()`` lists it), an
   ``"ask"`` entry goes to the run's transcript, and the run's record becomes
   ``waiting`` with ``meta["asks"] = [ask_id, ...]`` (``RunManager._begin_wait``: the
   run gives its concurrency slots back). Then the channel's adapter shows it (the
   panel, stdin in a terminal script, a custom adapter).
2. The first of these closes it: an answer (``RunManager.answer`` / ``answer_nowait``,
   the panel, ``%ag_answer``, stdin, an adapter's inline reply), its ``timeout_s``
   (``AskTimeoutError`` in the run), or the run being canceled (the ask's task is
   cancelled). The closing entry (``"answer"``, ``"timeout"`` or ``"canceled"``) goes to
   the transcript; later answers raise :class:`~ag_jupyter.runtime.errors.AskClosedError`.
3. The run gets its slots back (``RunManager._end_wait``: ``waiting`` with
   ``meta["answered_at"]`` until it has them, ahead of never-started runs) and goes on
   ``running`` with the reply, in AetherGraph 0.1.0a15's shape.

Answers (``RunManager.answer(ask_id, value)``):

- ``"text"`` asks: a str (the reply), or ``{"text": str}``.
- ``"choices"`` / ``"approval"`` asks: a str selects the option whose id, label, alias or
  1-based number it equals (case-insensitive, as a15's ``normalize_choice_reply``),
  else it is free text (``choice`` None, ``matched`` False); ``{"choice": id}`` must
  name an option (else :class:`~ag_jupyter.runtime.errors.AskAnswerError` listing them;
  the ask stays open), with an optional ``"text"``.
- ``"files"`` asks: ``{"files": [{"name": str, "data": bytes | base64 str, "mime"?:
  str}], "text"?: str}`` (or a str: text only). Files are saved as artifacts of the run
  (kind ``"upload"``) and returned as a15's file refs; at most ``MAX_UPLOAD_FILES``
  files of ``MAX_UPLOAD_FILE_BYTES`` each and ``MAX_UPLOAD_ASK_BYTES`` in all (comm
  messages from a browser are size-limited; bigger files: save them with
  ``context.artifacts().save_file(path)``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from ...errors import (
    AskAnswerError,
    AskClosedError,
    AskNotFoundError,
    AskTimeoutError,
    AskUploadTooLargeError,
    ServiceNotConfiguredError,
)
from ...models import utc_now
from ...store.transcripts import TranscriptBook, WorkspaceTranscripts, make_entry
from .bus import Button, ChoiceOption, OutEvent, build_choice_options, fallback_event

log = logging.getLogger("ag_jupyter.channel")

#: Upload caps of a files ask (bytes).
MAX_UPLOAD_FILE_BYTES = 10 << 20
MAX_UPLOAD_ASK_BYTES = 20 << 20
MAX_UPLOAD_FILES = 20
#: Closed asks remembered for a clear AskClosedError (the newest).
CLOSED_ASKS_KEPT = 10_000

AskKind = Literal["text", "choices", "approval", "files"]


@dataclass(frozen=True)
class Ask:
    """An open ask, as ``RunManager.pending_asks()`` lists it.

    Attributes:
      ask_id (str): what ``RunManager.answer(ask_id, value)`` takes.
      run_id (str): the run asking (an ad-hoc session's id for a ``%%ag_session`` cell).
      kind: ``"text"`` (``ask_text``, ``wait_text``), ``"choices"`` (``ask_choices``),
        ``"approval"`` (``ask_approval``) or ``"files"`` (``ask_files``,
        ``ask_text_or_files``).
      prompt (str): the question ("" for ``wait_text``).
      options (list of ``{"id", "label"}``): the choices, in order ([] for text/files).
      created_at (datetime, UTC): when it was asked.
      deadline (datetime, UTC, or None): when it times out (None: no ``timeout_s``).
      channel (str): the channel key it was asked on.
      session_id (str or None): the run's session.
      accept (tuple of str): a files ask's advisory MIME types / extensions.
      multiple (bool): whether a files ask takes several files.
    """

    ask_id: str
    run_id: str
    kind: AskKind
    prompt: str
    options: list[dict[str, str]]
    created_at: datetime
    deadline: datetime | None
    channel: str = "notebook:panel"
    session_id: str | None = None
    accept: tuple[str, ...] = ()
    multiple: bool = True


@dataclass(eq=False)
class _OpenAsk:
    ask: Ask
    future: asyncio.Future[dict[str, Any]]
    context: Any
    choices: list[ChoiceOption]
    live: Any = None  # the LiveRun asking (None in an ad-hoc session)
    claimed: bool = False  # an answer with files is being saved
    on_close: list[Callable[[], None]] = field(default_factory=list)


def _describe_options(choices: list[ChoiceOption]) -> str:
    return ", ".join(f"{c.id!r}" + (f" ({c.label!r})" if c.label != c.id else "") for c in choices)


def normalize_choice_reply(
    choices: list[ChoiceOption], raw_choice: Any = None, raw_text: Any = None
) -> dict[str, Any]:
    """a15's ``normalize_choice_reply``: ``{"choice", "choice_label", "text",
    "matched"}``; the reply (``raw_choice``, else the text) selects the option whose id,
    label, alias or 1-based number it equals, case-insensitively."""
    text = str(raw_text or "")
    choice_text = None if raw_choice is None else str(raw_choice).strip()
    by_norm: dict[str, ChoiceOption] = {}
    for index, choice in enumerate(choices, start=1):
        for variant in (choice.id, choice.label, *choice.aliases, str(index)):
            token = str(variant).strip()
            if token:
                by_norm.setdefault(token.lower(), choice)
    candidate = choice_text if choice_text else text.strip()
    if candidate:
        match = by_norm.get(candidate.lower())
        if match is not None:
            return {"choice": match.id, "choice_label": match.label, "text": text, "matched": True}
    return {"choice": choice_text or None, "choice_label": None, "text": text, "matched": False}


class AskBook:
    """The open asks of one RunManager's runs, their answers and their transcripts.

    Every method runs on the manager's loop thread (``is_open`` may be read from any).
    Transcripts go to the workspace when the manager's store has one, else to memory.
    """

    def __init__(self, manager: Any) -> None:
        self._manager = manager
        self._open: dict[str, _OpenAsk] = {}
        self._by_run: dict[str, dict[str, None]] = {}
        self._closed: OrderedDict[str, tuple[str, str, str, str]] = OrderedDict()
        self._transcripts: TranscriptBook | None = None
        self._listeners: tuple[Callable[[str, Ask], None], ...] = ()

    def subscribe(self, callback: Callable[[str, Ask], None]) -> Callable[[], None]:
        """Call ``callback(event, ask)`` on the loop when an ask opens (``"opened"``) or
        closes (``"closed"``): every ask, an ad-hoc session's too (those have no run
        record whose change would tell a UI). Quick callbacks only; an exception is
        logged. Returns a function that unsubscribes."""
        self._listeners = (*self._listeners, callback)

        def unsubscribe() -> None:
            self._listeners = tuple(cb for cb in self._listeners if cb is not callback)

        return unsubscribe

    def _tell(self, event: str, ask: Ask) -> None:
        for callback in self._listeners:
            try:
                callback(event, ask)
            except Exception:
                log.exception("ask listener %r failed", callback)

    # --------------------------------------------------------------- transcripts
    @property
    def transcripts(self) -> TranscriptBook:
        """Where this manager's transcripts are kept."""
        if self._transcripts is None:
            workspace = getattr(self._manager.store, "workspace", None)
            self._transcripts = (
                WorkspaceTranscripts.for_workspace(workspace)
                if workspace is not None
                else TranscriptBook()
            )
        return self._transcripts

    def record(self, run_id: str, kind: str, text: str, ask_id: str | None = None) -> None:
        """Add an entry to ``run_id``'s transcript (see ``store/transcripts.py``)."""
        self.transcripts.add(run_id, make_entry(kind, text, ask_id))

    async def transcript(self, run_id: str) -> list[dict[str, Any]]:
        """``run_id``'s transcript, oldest first."""
        return await self.transcripts.entries(run_id)

    # ------------------------------------------------------------------- reading
    def pending(self, run_id: str | None = None) -> list[Ask]:
        """Open asks (of ``run_id`` only when given), oldest first; O(open asks)."""
        if run_id is None:
            return [entry.ask for entry in self._open.values()]
        return [self._open[a].ask for a in self._by_run.get(run_id, ())]

    def is_open(self, ask_id: str) -> bool:
        """Whether ``ask_id`` is open (and not being answered)."""
        entry = self._open.get(ask_id)
        return entry is not None and not entry.claimed

    def on_close(self, ask_id: str, callback: Callable[[], None]) -> None:
        """Call ``callback()`` on the loop when ``ask_id`` closes (at once if it is not
        open)."""
        entry = self._open.get(ask_id)
        if entry is None:
            callback()
        else:
            entry.on_close.append(callback)

    # ------------------------------------------------------------------- opening
    def _open_ask(
        self,
        context: Any,
        *,
        kind: AskKind,
        prompt: str | None,
        choices: list[ChoiceOption],
        timeout_s: float | None,
        channel_key: str,
        accept: Iterable[str] = (),
        multiple: bool = True,
    ) -> _OpenAsk:
        now = utc_now()
        ask = Ask(
            ask_id=f"ask-{uuid.uuid4().hex[:16]}",
            run_id=str(context.run_id),
            kind=kind,
            prompt="" if prompt is None else str(prompt),
            options=[{"id": c.id, "label": c.label} for c in choices],
            created_at=now,
            deadline=None if timeout_s is None else now + timedelta(seconds=timeout_s),
            channel=channel_key,
            session_id=getattr(context, "session_id", None),
            accept=tuple(str(a) for a in accept),
            multiple=bool(multiple),
        )
        loop = asyncio.get_running_loop()
        entry = _OpenAsk(ask, loop.create_future(), context, choices)
        self._open[ask.ask_id] = entry
        self._by_run.setdefault(ask.run_id, {})[ask.ask_id] = None
        self.record(ask.run_id, "ask", ask.prompt, ask.ask_id)
        self._tell("opened", ask)
        return entry

    def _close(self, entry: _OpenAsk, state: str, kind: str, text: str) -> None:
        ask = entry.ask
        if self._open.pop(ask.ask_id, None) is None:
            return
        run_asks = self._by_run.get(ask.run_id)
        if run_asks is not None:
            run_asks.pop(ask.ask_id, None)
            if not run_asks:
                del self._by_run[ask.run_id]
        self._closed[ask.ask_id] = (state, ask.run_id, utc_now().isoformat(), text[:200])
        if len(self._closed) > CLOSED_ASKS_KEPT:
            self._closed.popitem(last=False)
        self.record(ask.run_id, kind, text, ask.ask_id)
        if entry.live is not None:
            self._manager._ask_closed(entry.live, ask.ask_id, answered=state == "answered")
        for callback in entry.on_close:
            try:
                callback()
            except Exception:
                log.exception("ask close callback %r failed", callback)
        self._tell("closed", ask)

    async def ask(
        self,
        context: Any,
        *,
        kind: AskKind,
        prompt: str | None,
        options: Iterable[Any] = (),
        timeout_s: float | None,
        channel_key: str,
        adapter: Any,
        event_type: str,
        accept: Iterable[str] = (),
        multiple: bool = True,
        silent: bool = False,
    ) -> dict[str, Any]:
        """Open an ask for ``context``'s run, show it through ``adapter`` and wait for
        the first answer; returns the reply in a15's payload shape (see the module
        docstring).

        Raises:
          AskTimeoutError: if ``timeout_s`` seconds pass first (the ask is closed).
          asyncio.CancelledError: if the run is canceled (the ask is closed, canceled).
          ValueError: if ``timeout_s`` is not a positive number or None.
        """
        if timeout_s is not None and (
            isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0
        ):
            raise ValueError(
                f"timeout_s must be a positive number of seconds (or None for no limit), "
                f"got {timeout_s!r}"
            )
        choices = build_choice_options(options) if kind in ("choices", "approval") else []
        if kind == "approval" and not choices:
            choices = build_choice_options(["Approve", "Reject"])
        entry = self._open_ask(
            context,
            kind=kind,
            prompt=prompt,
            choices=choices,
            timeout_s=timeout_s,
            channel_key=channel_key,
            accept=accept,
            multiple=multiple,
        )
        ask = entry.ask
        manager = self._manager
        live = getattr(context, "_live", None)
        if live is not None and live.record.run_id != ask.run_id:
            live = None
        entry.live = live
        notify: asyncio.Task[Any] | None = None
        try:
            if live is not None:
                await manager._begin_wait(live, ask.ask_id)
            notify = self._present(entry, adapter, event_type, silent)
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(entry.future)
        except TimeoutError:
            if entry.future.done() and not entry.future.cancelled():
                return entry.future.result()
            self._close(entry, "timeout", "timeout", f"no answer within {timeout_s:g} s")
            entry.future.cancel()
            raise AskTimeoutError(
                f"nobody answered ask {ask.ask_id} ({_short(ask.prompt)!r}) of run "
                f"{ask.run_id} within {timeout_s:g} s; pass a larger timeout_s, or catch "
                "TimeoutError to go on without an answer"
            ) from None
        except asyncio.CancelledError:
            if not (entry.future.done() and not entry.future.cancelled()):
                reason = "the ask was cancelled"
                if live is not None and live.cancel_requested:
                    why = live.record.meta.get("cancel_reason", "user_requested")
                    reason = f"the run was canceled ({why})"
                self._close(entry, "canceled", "canceled", f"canceled: {reason}")
                entry.future.cancel()
            raise
        except BaseException as exc:  # e.g. the store failed in _begin_wait
            self._close(entry, "canceled", "canceled", f"canceled: {type(exc).__name__}: {exc}")
            entry.future.cancel()
            raise
        finally:
            if notify is not None and not notify.done():
                notify.cancel()
            if live is not None:
                await manager._end_wait(live, ask.ask_id)

    def _present(
        self, entry: _OpenAsk, adapter: Any, event_type: str, silent: bool
    ) -> asyncio.Task[Any] | None:
        """Show the ask on its channel; an AetherGraph-style adapter gets a
        ``session.need_*`` event in a task (its inline ``{"payload": ...}`` answers)."""
        present = getattr(adapter, "present_ask", None)
        if callable(present):
            present(self, entry.ask)
            return None
        if silent:
            return None
        ask = entry.ask
        meta = {
            "run_id": ask.run_id,
            "session_id": ask.session_id,
            "ask_id": ask.ask_id,
            "token": ask.ask_id,
            "resume_key": ask.ask_id,
            "_prompt": True,
        }
        if entry.choices:
            meta["options"] = [c.label for c in entry.choices]
            meta["choices"] = [
                {"id": c.id, "label": c.label, "aliases": list(c.aliases)} for c in entry.choices
            ]
        event = OutEvent(
            type=event_type,
            channel=ask.channel,
            text=ask.prompt or "Please reply.",
            meta=meta,
            buttons=[Button(label=c.label, value=c.id) for c in entry.choices] or None,
        )

        shown = fallback_event(adapter, event)
        if shown is None:
            return None
        send_from = getattr(adapter, "send_from", None)

        async def notify() -> None:
            try:
                if callable(send_from):  # a built-in adapter that needs the run (file)
                    result = await send_from(entry.context, shown)
                else:
                    result = await adapter.send(shown)
            except Exception:
                log.exception("channel adapter %r failed to show ask %s", adapter, ask.ask_id)
                return
            payload = (result or {}).get("payload") if isinstance(result, Mapping) else None
            if isinstance(payload, Mapping) and self.is_open(ask.ask_id):
                with contextlib.suppress(AskClosedError, AskAnswerError, AskNotFoundError):
                    await self.answer(ask.ask_id, dict(payload))

        return asyncio.get_running_loop().create_task(notify(), name=f"ag-ask:{ask.ask_id}")

    # ----------------------------------------------------------------- answering
    def _entry_for_answer(self, ask_id: Any) -> _OpenAsk:
        if not isinstance(ask_id, str):
            raise TypeError(f"ask_id must be a str, got {type(ask_id).__name__}")
        entry = self._open.get(ask_id)
        if entry is not None and not entry.claimed:
            return entry
        if entry is not None:
            raise AskClosedError(
                f"ask {ask_id} of run {entry.ask.run_id} is being answered already (its "
                "files are being saved; the first answer wins); this answer was not used",
                ask_id=ask_id,
                run_id=entry.ask.run_id,
                state="answering",
            )
        closed = self._closed.get(ask_id)
        if closed is not None:
            state, run_id, at, text = closed
            what = {
                "answered": f"was answered already at {at} ({text!r}; the first answer wins)",
                "timeout": f"timed out at {at} (the run got an AskTimeoutError)",
                "canceled": f"was canceled at {at} ({text})",
            }[state]
            raise AskClosedError(
                f"ask {ask_id} of run {run_id} {what}; this answer was not used. Open "
                f"asks: {self._list_open()}",
                ask_id=ask_id,
                run_id=run_id,
                state=state,
            )
        raise AskNotFoundError(
            f"no open ask with id {ask_id!r} in this kernel; open asks: {self._list_open()}. "
            "List them with get_run_manager().pending_asks() (or %ag_answer)."
        )

    def _list_open(self) -> str:
        ids = [f"{e.ask.ask_id} (run {e.ask.run_id})" for e in list(self._open.values())[:10]]
        more = len(self._open) - len(ids)
        return (", ".join(ids) + (f" and {more} more" if more > 0 else "")) or "(none)"

    def _normalize(self, entry: _OpenAsk, value: Any) -> tuple[dict[str, Any], str, list[Any]]:
        """``(payload, transcript text, files to save)`` for ``value``, or raise
        AskAnswerError / AskUploadTooLargeError (the ask stays open)."""
        ask = entry.ask
        if ask.kind == "text":
            if isinstance(value, Mapping) and set(value) <= {"text"}:
                value = value.get("text", "")
            if not isinstance(value, str):
                raise AskAnswerError(
                    f"ask {ask.ask_id} asks for text: answer it with a str (or {{'text': "
                    f"str}}), not {type(value).__name__}; the ask is still open"
                )
            return {"text": value}, value, []
        if ask.kind in ("choices", "approval"):
            if isinstance(value, str):
                payload = normalize_choice_reply(entry.choices, None, value)
            elif isinstance(value, Mapping) and "choice" in value and set(value) <= {
                "choice",
                "text",
            }:
                text = value.get("text") or ""
                if not isinstance(text, str):
                    raise AskAnswerError(f"'text' must be a str, got {type(text).__name__}")
                payload = normalize_choice_reply(entry.choices, value["choice"], text)
                if not payload["matched"]:
                    raise AskAnswerError(
                        f"{{'choice': {value['choice']!r}}} names no option of ask "
                        f"{ask.ask_id}; its options are {_describe_options(entry.choices)} "
                        "(give an id or label, or a str for free text); the ask is still open"
                    )
            else:
                raise AskAnswerError(
                    f"ask {ask.ask_id} asks for a choice among "
                    f"{_describe_options(entry.choices)}: answer with a str (an option's "
                    "id, label or number, else free text) or {'choice': id}; got "
                    f"{_short(repr(value))}; the ask is still open"
                )
            if payload["matched"]:
                shown = payload["choice_label"] or payload["choice"]
                if payload["text"] and payload["text"].strip().lower() not in {
                    str(payload["choice"]).lower(),
                    str(payload["choice_label"]).lower(),
                }:
                    shown = f"{shown}: {payload['text']}"
            else:
                shown = payload["text"]
            if ask.kind == "approval":
                first = entry.choices[0].id if entry.choices else None
                payload["approved"] = first is not None and payload["choice"] == first
            return payload, shown, []
        # files
        if isinstance(value, str):
            return {"text": value, "files": []}, value, []
        if not isinstance(value, Mapping) or not set(value) <= {"files", "text"}:
            raise AskAnswerError(
                f"ask {ask.ask_id} asks for files: answer with {{'files': [{{'name': str, "
                "'data': bytes or base64 str, 'mime': str}], 'text': str}} or a str (text "
                f"only); got {_short(repr(value))}; the ask is still open"
            )
        text = value.get("text") or ""
        if not isinstance(text, str):
            raise AskAnswerError(f"'text' must be a str, got {type(text).__name__}")
        files = _check_files(ask, value.get("files") or [])
        names = ", ".join(f[0] for f in files)
        shown = " | ".join(p for p in (text, f"files: {names}" if files else "") if p)
        return {"text": text, "files": []}, shown, files

    def _settle(self, entry: _OpenAsk, payload: dict[str, Any], shown: str) -> dict[str, Any]:
        self._close(entry, "answered", "answer", shown)
        if not entry.future.done():
            entry.future.set_result(payload)
        return payload

    def answer_nowait(self, ask_id: str, value: Any) -> dict[str, Any]:
        """Answer an open ask now, without awaiting (line magics, widget callbacks, other
        threads' hand-offs onto the loop): the ask closes at once and the run resumes
        at its next step. Returns the reply the run gets. Files need
        :meth:`answer` (they are saved first); a str answers a files ask with text only.

        Raises:
          AskNotFoundError, AskClosedError, AskAnswerError, AskUploadTooLargeError: see
            ``RunManager.answer``.
          TypeError: if ``ask_id`` is not a str, or files are given (use ``answer``).
        """
        entry = self._entry_for_answer(ask_id)
        payload, shown, files = self._normalize(entry, value)
        if files:
            raise TypeError(
                "an answer with files must be awaited (its files are saved as artifacts): "
                "await manager.answer(ask_id, {'files': [...]})"
            )
        return self._settle(entry, payload, shown)

    async def answer(self, ask_id: str, value: Any) -> dict[str, Any]:
        """Answer an open ask (see ``RunManager.answer``); returns the reply the run gets."""
        entry = self._entry_for_answer(ask_id)
        payload, shown, files = self._normalize(entry, value)
        if not files:
            return self._settle(entry, payload, shown)
        entry.claimed = True  # first answer wins while the files are saved
        try:
            payload["files"] = await self._save_files(entry, files)
        except BaseException:
            entry.claimed = False
            raise
        if self._open.get(ask_id) is not entry:  # timed out / canceled while saving
            state = self._closed.get(ask_id, ("canceled",))[0]
            raise AskClosedError(
                f"ask {ask_id} closed ({state}) while its files were being saved; they are "
                "kept as artifacts of the run but the run did not get them",
                ask_id=ask_id,
                run_id=entry.ask.run_id,
                state=state,
            )
        entry.claimed = False
        return self._settle(entry, payload, shown)

    async def _save_files(self, entry: _OpenAsk, files: list[Any]) -> list[dict[str, Any]]:
        ask = entry.ask
        try:
            store = entry.context.artifacts()
        except ServiceNotConfiguredError:
            raise ServiceNotConfiguredError(
                f"ask {ask.ask_id} got files, but run {ask.run_id} has no artifact store "
                "to save them in (an in-memory manager, workspace 'memory'): use a "
                "workspace folder, or answer with text; the ask is still open"
            ) from None
        refs: list[dict[str, Any]] = []
        for name, data, mime in files:
            art = await store.save_bytes(
                data, name=name, kind="upload", mime=mime, labels={"ask_id": ask.ask_id}
            )
            refs.append(
                {
                    "id": art.artifact_id,
                    "artifact_id": art.artifact_id,
                    "name": name,
                    "mimetype": art.mime,
                    "size": art.bytes,
                    "uri": art.uri,
                    "url": None,
                    "platform": ask.channel.split(":", 1)[0],
                    "channel_key": ask.channel,
                }
            )
        try:
            kv = entry.context.kv()
        except ServiceNotConfiguredError:
            kv = None
        if kv is not None and refs:  # a15's inbox, read by get_latest_uploads()
            with contextlib.suppress(Exception):
                await kv.list_append_unique(f"inbox://{ask.channel}", refs, id_key="id")
        return refs


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_files(ask: Ask, files: Any) -> list[tuple[str, bytes, str | None]]:
    """``[(name, data, mime)]`` of a files answer, decoded and within the caps.

    Raises:
      AskAnswerError: for a malformed list or file.
      AskUploadTooLargeError: past a cap.
    """
    if not isinstance(files, list | tuple):
        raise AskAnswerError(f"'files' must be a list of dicts, got {type(files).__name__}")
    if len(files) > MAX_UPLOAD_FILES:
        raise AskUploadTooLargeError(
            f"{len(files)} files given to ask {ask.ask_id}; at most {MAX_UPLOAD_FILES} per "
            "ask; the ask is still open"
        )
    if not ask.multiple and len(files) > 1:
        raise AskAnswerError(
            f"ask {ask.ask_id} takes one file (multiple=False), got {len(files)}; the ask "
            "is still open"
        )
    out: list[tuple[str, bytes, str | None]] = []
    total = 0
    for index, item in enumerate(files):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) or (
            "data" not in item
        ):
            raise AskAnswerError(
                f"file {index} of the answer to ask {ask.ask_id} must be {{'name': str, "
                "'data': bytes or base64 str, 'mime'?: str}; the ask is still open"
            )
        name, data, mime = item["name"], item["data"], item.get("mime")
        if mime is not None and not isinstance(mime, str):
            raise AskAnswerError(f"file {name!r}: 'mime' must be a str")
        if isinstance(data, str):
            if len(data) * 3 // 4 > MAX_UPLOAD_FILE_BYTES + 2:
                raise _too_large(ask, name, len(data) * 3 // 4)
            try:
                data = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise AskAnswerError(
                    f"file {name!r}: 'data' is a str but not valid base64; give bytes or "
                    "base64 text; the ask is still open"
                ) from None
        elif isinstance(data, bytes | bytearray | memoryview):
            data = bytes(data)
        else:
            raise AskAnswerError(
                f"file {name!r}: 'data' must be bytes or a base64 str, got "
                f"{type(data).__name__}; the ask is still open"
            )
        if len(data) > MAX_UPLOAD_FILE_BYTES:
            raise _too_large(ask, name, len(data))
        total += len(data)
        if total > MAX_UPLOAD_ASK_BYTES:
            raise AskUploadTooLargeError(
                f"the files given to ask {ask.ask_id} come to more than "
                f"{MAX_UPLOAD_ASK_BYTES >> 20} MiB (the cap per ask); the ask is still open. "
                "Save big files with context.artifacts().save_file(path) instead"
            )
        out.append((name, data, mime))
    return out


def _too_large(ask: Ask, name: str, size: int) -> AskUploadTooLargeError:
    return AskUploadTooLargeError(
        f"file {name!r} given to ask {ask.ask_id} is {size / (1 << 20):.1f} MiB; uploads "
        f"are capped at {MAX_UPLOAD_FILE_BYTES >> 20} MiB per file and "
        f"{MAX_UPLOAD_ASK_BYTES >> 20} MiB per ask (front-end messages are size-limited); "
        "the ask is still open. Save big files with context.artifacts().save_file(path)"
    )
