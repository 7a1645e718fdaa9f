"""``context.channel()``: AetherGraph 0.1.0a15's ``ChannelSession`` (``services/channel/
session.py``), with its method names, keywords and return shapes.

Differences from a15, on purpose:

- **waiting**: while a run waits on an ask its record is ``waiting`` (a15 keeps it
  ``running``) and it gives its concurrency slots back; see ``asks.py`` and
  ``RunManager._begin_wait``.
- **timeouts**: ``timeout_s`` is enforced: :class:`~ag_jupyter.runtime.errors.
  AskTimeoutError` (a ``TimeoutError``) is raised in the run (a15 stores a deadline a
  cooperative wait never checks, so it waits forever).
- **transcript**: sent messages, asks and answers are kept with the run
  (``RunManager.transcript(run_id)``), whichever channel showed them.
- **progress**: ``progress()`` and ``send_phase()`` also set the run's
  ``meta["progress"]`` (``{"title", "current", "total", "percent" (0-100), "eta_seconds",
  "subtitle", "phase", "status", "updated_at"}``), at most one record change every
  ``PROGRESS_INTERVAL_S`` seconds (the last one always lands). A run without progress
  has no such key.
- ``stream_text`` / ``send_text(prefer_stream=True)`` send the text whole (no typing
  animation: nothing here renders one).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import PurePath
from typing import Any, Literal

from ...errors import ServiceNotConfiguredError
from ...models import utc_now
from .bus import Button, OutEvent, fallback_event, get_channel_service

log = logging.getLogger("ag_jupyter.channel")

#: Least seconds between two record changes made by progress updates.
PROGRESS_INTERVAL_S = 0.1
PROGRESS_KEYS = (
    "title",
    "current",
    "total",
    "percent",
    "eta_seconds",
    "subtitle",
    "phase",
    "status",
    "updated_at",
)

Role = Literal["user", "assistant", "system", "tool"]


class _ChannelResult(dict):  # type: ignore[type-arg]
    """a15's dict result that also unpacks as a tuple of its main keys
    (``approved, choice, choice_label, text, matched = await ch.ask_approval(...)``)."""

    __slots__ = ("_iter_keys",)

    def __init__(self, *args: Any, iter_keys: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._iter_keys = iter_keys

    def __iter__(self):  # type: ignore[override]
        for key in self._iter_keys:
            yield self.get(key)


class ChannelSession:
    """What ``context.channel(channel_key=None)`` returns: send messages, ask a person,
    report progress, on one channel.

    The key is resolved as a15 does: a per-call ``channel=`` argument, else the key this
    session was made with, else the default (``set_default_channel``; built in:
    ``"notebook:panel"``), then aliases (``set_channel_alias``). See ``bus.py`` for the
    adapters. Every ``send_*`` is kept in the run's transcript (``kind="sent"``) and,
    unless ``memory_log=False``, in ``context.memory()`` as a chat turn (a15).
    """

    def __init__(self, context: Any, channel_key: str | None = None) -> None:
        self.ctx = context
        self._override_key = channel_key

    def __repr__(self) -> str:
        return f"<ChannelSession {self._resolve_key()!r} run_id={self.ctx.run_id!r}>"

    # ------------------------------------------------------------------ helpers
    @property
    def _bus(self) -> Any:
        return get_channel_service()

    @property
    def _book(self) -> Any:
        return self.ctx.manager.asks

    def _resolve_key(self, channel: str | None = None) -> str:
        bus = self._bus
        raw = channel or self._override_key or bus.get_default_channel_key()
        return bus.resolve_channel_key(raw)

    def _inject_context_meta(self, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
        base: dict[str, Any] = dict(meta or {})
        for name in ("run_id", "graph_id", "node_id", "session_id", "agent_id", "app_id"):
            value = getattr(self.ctx, name, None)
            if value is not None:
                base.setdefault(name, value)
        return base

    async def _publish(self, event: OutEvent) -> dict[str, Any] | None:
        adapter = self._bus.pick(event.channel)
        event = fallback_event(adapter, event)
        if event is None:
            return None
        send_from = getattr(adapter, "send_from", None)
        if callable(send_from):
            return await send_from(self.ctx, event)
        return await adapter.send(event)

    def _record_sent(self, text: str) -> None:
        self._book.record(str(self.ctx.run_id), "sent", text)

    async def _log_chat(
        self,
        role: Role,
        text: str,
        *,
        tags: list[str] | None = None,
        data: dict[str, Any] | None = None,
        severity: int = 2,
        signal: float | None = None,
        enabled: bool = True,
        channel: str | None = None,
    ) -> None:
        """a15's best-effort chat logging: a ``chat.turn`` event in ``memory()``, tagged
        ``channel:<key>`` and ``tags``; nothing without a memory service."""
        if not enabled or not text:
            return
        try:
            memory = self.ctx.memory()
        except ServiceNotConfiguredError:
            return
        append = getattr(memory, "append_chat_turn", None) or getattr(memory, "record_chat", None)
        if not callable(append):
            return
        all_tags = [f"channel:{self._resolve_key(channel)}", *(tags or [])]
        await append(role, text, tags=all_tags, data=data, severity=severity, signal=signal)

    # --------------------------------------------------------------------- send
    async def send(self, event: OutEvent | str, *, channel: str | None = None) -> None:
        """Publish a ready-made :class:`OutEvent` (its channel filled in from
        ``channel`` / this session when empty; context ids merged into its meta). A str
        is sent as :meth:`send_text` (AetherGraph's docs write ``send(f"...")``, which
        a15 rejects with an ``AttributeError``)."""
        if isinstance(event, str):
            await self.send_text(event, channel=channel)
            return
        if not event.channel:
            event.channel = self._resolve_key(channel)
        event.meta = self._inject_context_meta(event.meta)
        if event.type == "agent.message" and event.text:
            self._record_sent(event.text)
        await self._publish(event)

    async def send_text(
        self,
        text: str,
        *,
        meta: dict[str, Any] | None = None,
        channel: str | None = None,
        prefer_stream: bool = False,
        stream_threshold_chars: int | None = None,
        stream_chars_per_second: float | None = None,
        stream_target_chunk_chars: int | None = None,
        memory_log: bool = True,
        memory_role: Role = "assistant",
        memory_tags: list[str] | None = None,
        memory_data: dict[str, Any] | None = None,
        memory_severity: int = 2,
        memory_signal: float | None = None,
    ) -> None:
        """Send a text message (a15). It is kept in the run's transcript exactly as given
        (``"sent"``) and logged to memory (``memory_role``, default assistant) unless
        ``memory_log=False``. ``prefer_stream`` and the ``stream_*`` knobs are accepted;
        the text is sent whole.

        Raises:
          ServiceNotConfiguredError: if no adapter serves the channel key.
          TypeError: if ``text`` is not a str.
        """
        if not isinstance(text, str):
            raise TypeError(f"send_text() takes a str, got {type(text).__name__}")
        key = self._resolve_key(channel)
        self._bus.pick(key)  # fail before anything is kept
        await self._log_chat(
            memory_role,
            text,
            tags=memory_tags,
            data=memory_data,
            severity=memory_severity,
            signal=memory_signal,
            enabled=memory_log,
            channel=channel,
        )
        self._record_sent(text)
        await self._publish(
            OutEvent(
                type="agent.message", channel=key, text=text, meta=self._inject_context_meta(meta)
            )
        )

    async def send_rich(
        self,
        text: str | None = None,
        *,
        rich: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        channel: str | None = None,
        memory_log: bool = True,
        memory_role: Role = "assistant",
        memory_tags: list[str] | None = None,
        memory_data: dict[str, Any] | None = None,
        memory_severity: int = 2,
        memory_signal: float | None = None,
    ) -> None:
        """Send text with a structured ``rich`` payload (a15); the transcript keeps the
        text (``"[rich message]"`` without one)."""
        key = self._resolve_key(channel)
        self._bus.pick(key)
        shown = text or "[rich message]"
        await self._log_chat(
            memory_role,
            shown,
            tags=memory_tags,
            data=memory_data,
            severity=memory_severity,
            signal=memory_signal,
            enabled=memory_log,
            channel=channel,
        )
        self._record_sent(shown)
        await self._publish(
            OutEvent(
                type="agent.message",
                channel=key,
                text=text,
                rich=rich,
                meta=self._inject_context_meta(meta),
            )
        )

    async def send_image(
        self,
        url: str | None = None,
        *,
        file_bytes: bytes | None = None,
        alt: str = "image",
        title: str | None = None,
        image_format: str | None = None,
        mimetype: str | None = None,
        channel: str | None = None,
        artifact_labels: dict[str, Any] | None = None,
        memory_log: bool = True,
        memory_role: Role = "assistant",
        memory_tags: list[str] | None = None,
        memory_data: dict[str, Any] | None = None,
        memory_severity: int = 2,
        memory_signal: float | None = None,
    ) -> None:
        """Send an image: :meth:`send_file` with ``kind="image"`` and a
        ``{"renderer": "image"}`` label (a15)."""
        mime = (mimetype or "").strip().lower() or (
            "image/svg+xml" if (image_format or "").lower() == "svg" else "image/png"
        )
        labels = {"renderer": "image", **(artifact_labels or {})}
        labels.setdefault("mimetype", mime)
        base = title or alt or "image"
        filename = base if PurePath(base).suffix else base + (
            ".svg" if mime == "image/svg+xml" else ".png"
        )
        await self.send_file(
            url=url,
            file_bytes=file_bytes,
            filename=filename,
            title=title or alt,
            channel=channel,
            artifact_kind="image",
            artifact_labels=labels,
            memory_log=memory_log,
            memory_role=memory_role,
            memory_tags=[*(memory_tags or []), "image"],
            memory_data=memory_data,
            memory_severity=memory_severity,
            memory_signal=memory_signal,
        )

    async def send_file(
        self,
        url: str | None = None,
        *,
        file_bytes: bytes | None = None,
        filename: str = "file.bin",
        title: str | None = None,
        channel: str | None = None,
        artifact_kind: str = "file",
        artifact_labels: dict[str, Any] | None = None,
        memory_log: bool = True,
        memory_role: Role = "assistant",
        memory_tags: list[str] | None = None,
        memory_data: dict[str, Any] | None = None,
        memory_severity: int = 2,
        memory_signal: float | None = None,
    ) -> None:
        """Send a file (a15): ``file_bytes`` or a local path in ``url`` are saved as an
        artifact of the run first (``artifact_kind``, labels with ``filename``); an
        ``http(s)`` URL is passed on as is. The transcript keeps ``"File: <name>
        (<uri or url>)"``. Without an artifact store (an in-memory manager) the file is
        sent without one and a warning goes to the run's logger, as a15 logs it."""
        key = self._resolve_key(channel)
        self._bus.pick(key)
        chat_file: dict[str, Any] = {"name": filename}
        labels = {"filename": filename, **(artifact_labels or {})}
        artifact = None
        if file_bytes is not None or (url and not url.startswith(("http://", "https://"))):
            try:
                store = self.ctx.artifacts()
                if file_bytes is not None:
                    artifact = await store.save_bytes(
                        file_bytes, name=filename, kind=artifact_kind, labels=labels
                    )
                else:
                    artifact = await store.save_file(
                        url, name=filename, kind=artifact_kind, labels=labels
                    )
            except ServiceNotConfiguredError as exc:
                self._warn(f"send_file({filename!r}): not saved as an artifact ({exc})")
        if artifact is not None:
            chat_file.update(
                {
                    "artifact_id": artifact.artifact_id,
                    "filename": filename,
                    "mimetype": artifact.mime,
                    "size": artifact.bytes,
                    "uri": artifact.uri,
                    "renderer": labels.get("renderer"),
                }
            )
        else:
            if url:
                chat_file["url"] = url
            if "renderer" in labels:
                chat_file["renderer"] = labels["renderer"]
        chat_file.setdefault("filename", filename)
        where = chat_file.get("uri") or chat_file.get("url") or "N/A"
        shown = f"File: {filename} ({where})"
        await self._log_chat(
            memory_role,
            f"File: {filename} (url: {chat_file.get('url') or 'N/A'})",
            tags=[*(memory_tags or []), "file"],
            data=memory_data,
            severity=memory_severity,
            signal=memory_signal,
            enabled=memory_log,
            channel=channel,
        )
        self._record_sent(shown)
        await self._publish(
            OutEvent(
                type="agent.message",
                channel=key,
                text=title or filename,
                file=chat_file,
                meta=self._inject_context_meta(None),
            )
        )

    async def send_buttons(
        self,
        text: str,
        buttons: list[Button] | Mapping[str, Button],
        *,
        meta: dict[str, Any] | None = None,
        channel: str | None = None,
        memory_log: bool = True,
        memory_role: Role = "assistant",
        memory_tags: list[str] | None = None,
        memory_data: dict[str, Any] | None = None,
        memory_severity: int = 2,
        memory_signal: float | None = None,
    ) -> None:
        """Send a message with buttons (a15's ``link.buttons`` event): links
        (``Button(label, url=...)``) or values. A mapping of buttons (as a docs example
        writes it) uses its values. The transcript keeps the text, then one line per
        button (``label: url or value``).

        Raises:
          TypeError: if a button is not a :class:`Button` (or a dict of its fields).
        """
        if isinstance(buttons, Mapping):
            buttons = list(buttons.values())
        made = [b if isinstance(b, Button) else _button(b) for b in buttons]
        key = self._resolve_key(channel)
        self._bus.pick(key)
        await self._log_chat(
            memory_role,
            text,
            tags=[*(memory_tags or []), "buttons"],
            data=memory_data,
            severity=memory_severity,
            signal=memory_signal,
            enabled=memory_log,
            channel=channel,
        )
        lines = [text, *(f"[{b.label}] {b.url or b.value or ''}".rstrip() for b in made)]
        self._record_sent("\n".join(lines))
        await self._publish(
            OutEvent(
                type="link.buttons",
                channel=key,
                text=text,
                buttons=made,
                meta=self._inject_context_meta(meta),
            )
        )

    async def send_phase(
        self,
        phase: str,
        status: Literal["pending", "active", "done", "failed", "skipped"],
        *,
        label: str | None = None,
        detail: str | None = None,
        channel: str | None = None,
    ) -> None:
        """Report a phase (a15): sets the run's ``meta["progress"]`` ``phase`` (``label``,
        else ``phase``) and ``status``, and publishes an ``agent.progress.update`` event
        to the channel's adapter. Not kept in the transcript."""
        key = self._resolve_key(channel)
        progress_board.update(self.ctx, {"phase": label or phase, "status": status})
        await self._publish(
            OutEvent(
                type="agent.progress.update",
                channel=key,
                rich={
                    "kind": "phase",
                    "phase": phase,
                    "status": status,
                    "label": label or phase.title(),
                    "detail": detail or "",
                },
                meta=self._inject_context_meta({"kind": "phase", "phase": phase, "status": status}),
            )
        )

    # ---------------------------------------------------------------------- ask
    async def _ask(
        self,
        kind: str,
        prompt: str | None,
        *,
        options: Iterable[Any] = (),
        timeout_s: float | None,
        channel: str | None,
        event_type: str,
        log_kind: str,
        memory_log_prompt: bool,
        memory_tags: list[str] | None,
        accept: Iterable[str] = (),
        multiple: bool = True,
        silent: bool = False,
    ) -> dict[str, Any]:
        key = self._resolve_key(channel)
        adapter = self._bus.pick(key)
        if prompt:
            await self._log_chat(
                "assistant",
                prompt,
                tags=[*(memory_tags or []), log_kind, "prompt"],
                enabled=memory_log_prompt,
                channel=channel,
            )
        return await self._book.ask(
            self.ctx,
            kind=kind,
            prompt=prompt,
            options=options,
            timeout_s=timeout_s,
            channel_key=key,
            adapter=adapter,
            event_type=event_type,
            accept=accept,
            multiple=multiple,
            silent=silent,
        )

    async def ask_text(
        self,
        prompt: str | None,
        *,
        timeout_s: float | None = 3600,
        silent: bool = False,
        channel: str | None = None,
        memory_log_prompt: bool = True,
        memory_log_reply: bool = True,
        memory_tags: list[str] | None = None,
    ) -> str:
        """Ask a person for text and wait for the reply (a15). The run is ``waiting``
        meanwhile (its slots given back); the ask is listed by
        ``manager.pending_asks()``, shown in the run panel (and on stdin in a terminal
        script) and answered with ``manager.answer(ask_id, text)`` or ``%ag_answer``.

        Args:
          prompt: the question (None: wait without one, as :meth:`wait_text`).
          timeout_s: seconds to wait (None: no limit). Default 3600, as a15.
          silent: a15's flag (the prompt is not shown by push adapters).
          memory_log_prompt / memory_log_reply: log the prompt (assistant) / the non-empty
            reply (user) to ``memory()`` as chat turns tagged ``ask_text`` and
            ``prompt`` / ``reply`` (a15).

        Returns the reply text ("" for an empty answer).

        Raises:
          AskTimeoutError: (a ``TimeoutError``) if ``timeout_s`` seconds pass first.
          asyncio.CancelledError: if the run is canceled meanwhile (the ask is canceled).
          ServiceNotConfiguredError: if no adapter serves the channel key.
        """
        payload = await self._ask(
            "text",
            prompt,
            timeout_s=timeout_s,
            channel=channel,
            event_type="session.need_input",
            log_kind="ask_text",
            memory_log_prompt=memory_log_prompt,
            memory_tags=memory_tags,
            silent=silent,
        )
        text = str(payload.get("text", ""))
        if text:
            await self._log_chat(
                "user",
                text,
                tags=[*(memory_tags or []), "ask_text", "reply"],
                enabled=memory_log_reply,
                channel=channel,
            )
        return text

    async def wait_text(
        self,
        *,
        timeout_s: float | None = 3600,
        channel: str | None = None,
        memory_log_reply: bool = True,
        memory_tags: list[str] | None = None,
    ) -> str:
        """Wait for text without a prompt (a15: ``ask_text(None, silent=True)``)."""
        return await self.ask_text(
            None,
            timeout_s=timeout_s,
            silent=True,
            channel=channel,
            memory_log_prompt=False,
            memory_log_reply=memory_log_reply,
            memory_tags=memory_tags,
        )

    async def ask_choices(
        self,
        prompt: str,
        options: Iterable[Any],
        *,
        timeout_s: float | None = 3600,
        channel: str | None = None,
        memory_log_prompt: bool = True,
        memory_log_reply: bool = True,
        memory_tags: list[str] | None = None,
    ) -> dict[str, Any]:
        """Ask a person to choose (a15): ``options`` are str, ``{"id", "label",
        "aliases"}`` dicts or ``ChoiceOption``. Returns ``{"choice": id or None,
        "choice_label", "text", "matched"}`` (also unpacks in that order): a reply
        naming an option (id, label, alias or number) selects it; other text comes back
        as ``text`` with ``matched`` False. Timeouts, cancel, memory: as
        :meth:`ask_text` (reply logged as ``"Selected: <id> (<label>)"``)."""
        payload = await self._ask(
            "choices",
            prompt,
            options=options,
            timeout_s=timeout_s,
            channel=channel,
            event_type="session.need_approval",
            log_kind="ask_choices",
            memory_log_prompt=memory_log_prompt,
            memory_tags=memory_tags,
        )
        await self._log_choice(payload, "ask_choices", memory_log_reply, memory_tags, channel)
        return _ChannelResult(
            {k: payload.get(k) for k in ("choice", "choice_label", "text", "matched")},
            iter_keys=("choice", "choice_label", "text", "matched"),
        )

    async def _log_choice(
        self,
        payload: Mapping[str, Any],
        log_kind: str,
        enabled: bool,
        memory_tags: list[str] | None,
        channel: str | None,
    ) -> None:
        if payload.get("choice") is None and not payload.get("text"):
            return
        label = payload.get("choice_label")
        text = payload.get("text")
        await self._log_chat(
            "user",
            f"Selected: {payload.get('choice')}"
            + (f" ({label})" if label else "")
            + (f" | Text: {text}" if text else ""),
            tags=[*(memory_tags or []), log_kind, "reply"],
            enabled=enabled,
            channel=channel,
        )

    async def ask_approval(
        self,
        prompt: str,
        options: Iterable[Any] = ("Approve", "Reject"),
        *,
        timeout_s: float | None = 3600,
        channel: str | None = None,
        memory_log_prompt: bool = True,
        memory_log_reply: bool = True,
        memory_tags: list[str] | None = None,
    ) -> dict[str, Any]:
        """Ask for approval (a15): :meth:`ask_choices` whose first option means yes.
        Returns ``{"approved", "choice", "choice_label", "text", "matched"}`` (also
        unpacks in that order); ``approved`` is True when the first option was chosen."""
        payload = await self._ask(
            "approval",
            prompt,
            options=options,
            timeout_s=timeout_s,
            channel=channel,
            event_type="session.need_approval",
            log_kind="ask_choices",
            memory_log_prompt=memory_log_prompt,
            memory_tags=memory_tags,
        )
        await self._log_choice(payload, "ask_choices", memory_log_reply, memory_tags, channel)
        keys = ("approved", "choice", "choice_label", "text", "matched")
        result = {k: payload.get(k) for k in keys}
        result["approved"] = bool(result["approved"])
        result["matched"] = bool(result["matched"])
        return _ChannelResult(result, iter_keys=keys)

    async def ask_files(
        self,
        prompt: str,
        *,
        accept: list[str] | None = None,
        multiple: bool = True,
        timeout_s: float | None = 3600,
        channel: str | None = None,
        memory_log_prompt: bool = True,
        memory_log_reply: bool = True,
        memory_tags: list[str] | None = None,
    ) -> dict[str, Any]:
        """Ask a person for files (a15). Returns ``{"text": str, "files": [ref, ...]}``;
        each file is saved as an artifact of the run (kind ``"upload"``) and its ref is
        ``{"id", "artifact_id", "name", "mimetype", "size", "uri", "url", "platform",
        "channel_key"}`` (a15's file refs). Uploads are capped at 10 MiB per file and 20
        MiB per ask (20 files). ``accept`` is advisory (MIME types / extensions), as in
        a15. Timeouts, cancel, memory: as :meth:`ask_text`."""
        payload = await self._ask(
            "files",
            prompt,
            timeout_s=timeout_s,
            channel=channel,
            event_type="session.need_input",
            log_kind="ask_files",
            memory_log_prompt=memory_log_prompt,
            memory_tags=memory_tags,
            accept=accept or (),
            multiple=multiple,
        )
        text = str(payload.get("text", ""))
        if text:
            await self._log_chat(
                "user",
                text,
                tags=[*(memory_tags or []), "ask_files", "reply"],
                enabled=memory_log_reply,
                channel=channel,
            )
        files = payload.get("files")
        return {"text": text, "files": list(files) if isinstance(files, list) else []}

    async def ask_text_or_files(
        self,
        *,
        prompt: str,
        timeout_s: float | None = 3600,
        channel: str | None = None,
        memory_log_prompt: bool = True,
        memory_log_reply: bool = True,
        memory_tags: list[str] | None = None,
    ) -> dict[str, Any]:
        """Ask for text or files (a15): :meth:`ask_files` (``{"text", "files"}``)."""
        return await self.ask_files(
            prompt,
            timeout_s=timeout_s,
            channel=channel,
            memory_log_prompt=memory_log_prompt,
            memory_log_reply=memory_log_reply,
            memory_tags=memory_tags,
        )

    async def get_latest_uploads(self, *, clear: bool = True) -> list[dict[str, Any]]:
        """Files uploaded to this channel (its inbox in ``kv()``), popped when ``clear``
        (a15).

        Raises:
          ServiceNotConfiguredError: without a kv service (an in-memory manager).
        """
        kv = self.ctx.kv()
        key = f"inbox://{self._resolve_key()}"
        if clear:
            return list(await kv.list_pop_all(key) or [])
        return list(await kv.get(key, []) or [])

    # ---------------------------------------------------------------- streaming
    @contextlib.asynccontextmanager
    async def stream(self, channel: str | None = None) -> AsyncIterator[_StreamSender]:
        """A stream sender (a15): ``await s.delta(piece)`` ... ``await s.end()``; the
        whole text is kept in the transcript and memory at ``end()`` (no auto-end)."""
        yield _StreamSender(self, channel)

    async def stream_text(
        self,
        full_text: str,
        *,
        channel: str | None = None,
        memory_log: bool = True,
        memory_tags: list[str] | None = None,
        memory_data: dict[str, Any] | None = None,
        memory_role: Role = "assistant",
        memory_severity: int = 2,
        memory_signal: float | None = None,
        chars_per_second: float = 18.0,
        target_chunk_chars: int = 28,
        min_delay: float = 0.05,
        max_delay: float = 0.15,
    ) -> None:
        """Send pre-written text (a15 animates typing; here it is sent whole, the pacing
        knobs are accepted)."""
        if not full_text:
            return
        async with self.stream(channel=channel) as s:
            await s.delta(full_text)
            await s.end(
                full_text=full_text,
                memory_log=memory_log,
                memory_tags=memory_tags,
                memory_data=memory_data,
                memory_role=memory_role,
                memory_severity=memory_severity,
                memory_signal=memory_signal,
            )

    # ----------------------------------------------------------------- progress
    @contextlib.asynccontextmanager
    async def progress(
        self,
        *,
        title: str = "Working...",
        total: int | None = None,
        key_suffix: str = "progress",
        channel: str | None = None,
    ) -> AsyncIterator[_ProgressSender]:
        """A progress bar on the run's row (a15's ``progress``): ``async with
        ch.progress(title=..., total=N) as p: await p.update(current=..., inc=...,
        percent=..., subtitle=..., eta_seconds=...)``, then ``await p.end(subtitle=,
        success=)`` (no auto-end, as a15). Updates set ``meta["progress"]`` (coalesced;
        see the module docstring); ``percent`` there is 0-100, from ``current / total``
        when ``total`` is known, else from ``update(percent=)`` (a fraction 0-1, as
        a15), else None: never a made-up bar."""
        sender = _ProgressSender(self, title=title, total=total, channel=channel)
        await sender.start()
        yield sender

    def _warn(self, message: str) -> None:
        try:
            self.ctx.logger().warning(message)
        except Exception:
            log.warning(message)


class _StreamSender:
    def __init__(self, outer: ChannelSession, channel: str | None) -> None:
        self._outer = outer
        self._channel = channel
        self._key = outer._resolve_key(channel)
        self._parts: list[str] = []
        self._started = False

    async def start(self) -> None:
        """Publish ``agent.stream.start`` once."""
        if not self._started:
            self._started = True
            await self._outer._publish(
                OutEvent(
                    type="agent.stream.start",
                    channel=self._key,
                    meta=self._outer._inject_context_meta(None),
                )
            )

    async def delta(self, text_piece: str) -> None:
        """Add ``text_piece`` to the message."""
        if not text_piece:
            return
        await self.start()
        self._parts.append(text_piece)
        await self._outer._publish(
            OutEvent(
                type="agent.stream.delta",
                channel=self._key,
                text=text_piece,
                meta=self._outer._inject_context_meta(None),
            )
        )

    async def end(
        self,
        full_text: str | None = None,
        *,
        memory_log: bool = True,
        memory_role: Role = "assistant",
        memory_tags: list[str] | None = None,
        memory_data: dict[str, Any] | None = None,
        memory_severity: int = 2,
        memory_signal: float | None = None,
    ) -> None:
        """Finish: the whole text (``full_text``, else the deltas) is kept in the
        transcript and memory and sent as the final message."""
        await self.start()
        text = "".join(self._parts) if full_text is None else full_text
        outer = self._outer
        await outer._log_chat(
            memory_role,
            text,
            tags=memory_tags,
            data=memory_data,
            severity=memory_severity,
            signal=memory_signal,
            enabled=memory_log,
            channel=self._channel,
        )
        if text:
            outer._record_sent(text)
        event = OutEvent(
            type="agent.stream.end",
            channel=self._key,
            text=text,
            meta=outer._inject_context_meta(None),
        )
        adapter = outer._bus.pick(self._key)
        if "stream" not in getattr(adapter, "capabilities", set()):
            event = OutEvent(type="agent.message", channel=self._key, text=text, meta=event.meta)
        await outer._publish(event)


class _ProgressSender:
    def __init__(
        self, outer: ChannelSession, *, title: str, total: int | None, channel: str | None
    ) -> None:
        self._outer = outer
        self._title = title
        self._total = total
        self._current = 0
        self._key = outer._resolve_key(channel)
        self._started = False

    def _state(
        self, *, subtitle: str | None, percent: float | None, eta: float | None, status: str
    ) -> dict[str, Any]:
        total = self._total
        if total:
            shown = max(0.0, min(100.0, 100.0 * self._current / total))
        elif percent is not None:
            shown = max(0.0, min(100.0, 100.0 * float(percent)))
        else:
            shown = None
        return {
            "title": self._title,
            "current": self._current,
            "total": total,
            "percent": shown,
            "eta_seconds": None if eta is None else float(eta),
            "subtitle": subtitle,
            "status": status,
        }

    async def _publish(self, kind: str, state: Mapping[str, Any]) -> None:
        rich = {"kind": "progress"}
        rich.update({k: state[k] for k in ("title", "subtitle", "total", "current")})
        if state.get("eta_seconds") is not None:
            rich["eta_seconds"] = state["eta_seconds"]
        await self._outer._publish(
            OutEvent(
                type=kind,
                channel=self._key,
                rich=rich,
                meta=self._outer._inject_context_meta(None),
            )
        )

    async def start(self, *, subtitle: str | None = None) -> None:
        """Show the bar (once; ``progress()`` calls it)."""
        if self._started:
            return
        self._started = True
        state = self._state(subtitle=subtitle, percent=None, eta=None, status="active")
        progress_board.update(self._outer.ctx, state, urgent=True)
        await self._publish("agent.progress.start", state)

    async def update(
        self,
        *,
        current: int | None = None,
        inc: int | None = None,
        subtitle: str | None = None,
        percent: float | None = None,
        eta_seconds: float | None = None,
    ) -> None:
        """Move the bar (a15): ``percent`` (a fraction 0-1) sets ``current`` from
        ``total``, then ``inc`` adds, then ``current`` sets; ``eta_seconds`` and
        ``subtitle`` are shown as given."""
        await self.start()
        if percent is not None and self._total:
            self._current = round(self._total * max(0.0, min(1.0, float(percent))))
        if inc is not None:
            self._current += int(inc)
        if current is not None:
            self._current = int(current)
        state = self._state(subtitle=subtitle, percent=percent, eta=eta_seconds, status="active")
        progress_board.update(self._outer.ctx, state)
        await self._publish("agent.progress.update", state)

    async def end(self, *, subtitle: str | None = "Done.", success: bool = True) -> None:
        """Finish the bar: ``current`` = ``total`` (as a15), status ``"done"`` (or
        ``"failed"`` when ``success`` is False). This update always lands at once."""
        if self._total is not None:
            self._current = self._total
        state = self._state(
            subtitle=subtitle, percent=None, eta=None, status="done" if success else "failed"
        )
        if self._total is None:
            state["percent"] = 100.0 if success else None
        progress_board.update(self._outer.ctx, state, urgent=True)
        await self._publish("agent.progress.end", state)


class _ProgressBoard:
    """Puts progress on run records: the newest state is on the record at once (so a
    run that ends carries its last update), emitted to watchers (and stored) at most
    every ``PROGRESS_INTERVAL_S`` seconds, the last one always."""

    #: Runs remembered before finished ones are forgotten.
    _PRUNE_AT = 1024

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, Any]] = {}  # run id -> (loop time, manager)
        self._timers: dict[str, Any] = {}

    def update(self, context: Any, changes: Mapping[str, Any], *, urgent: bool = False) -> None:
        live = getattr(context, "_live", None)
        manager = context.manager
        if live is None or live.record.status.is_terminal:
            return  # an ad-hoc session (no record), or a run that ended
        run_id = live.record.run_id
        progress = {k: None for k in PROGRESS_KEYS}
        progress.update(live.record.meta.get("progress") or {})
        progress.update(changes)
        progress["updated_at"] = utc_now().isoformat()
        manager._patch_meta(live, {"progress": progress}, emit=False)
        loop = manager.loop
        now = loop.time()
        timer = self._timers.get(run_id)
        last = self._last.get(run_id, (-1e9, None))[0]
        if urgent or (timer is None and now - last >= PROGRESS_INTERVAL_S):
            if timer is not None:
                timer.cancel()
            self._flush(manager, live)
        elif timer is None:
            delay = max(0.0, PROGRESS_INTERVAL_S - (now - last))
            self._timers[run_id] = loop.call_later(delay, self._flush, manager, live)

    def _flush(self, manager: Any, live: Any) -> None:
        run_id = live.record.run_id
        self._timers.pop(run_id, None)
        if manager.find_record(run_id) is not live.record or live.record.status.is_terminal:
            self._last.pop(run_id, None)
            return
        self._last[run_id] = (manager.loop.time(), manager)
        if len(self._last) > self._PRUNE_AT:
            self._last = {
                rid: entry
                for rid, entry in self._last.items()
                if rid in self._timers
                or ((rec := entry[1].find_record(rid)) is not None and not rec.status.is_terminal)
            }
        manager._patch_meta(live, {}, emit=True)


progress_board = _ProgressBoard()


def _button(value: Any) -> Button:
    if isinstance(value, Mapping):
        return Button(**dict(value))
    raise TypeError(f"send_buttons() takes Button objects, got {type(value).__name__}")


__all__ = ["PROGRESS_KEYS", "ChannelSession", "progress_board"]
