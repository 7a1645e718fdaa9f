"""``context.channel()``: AetherGraph's channel API for the notebook.

- :mod:`.bus`: AetherGraph's channel types (``Button``, ``OutEvent``, ``ChoiceOption``),
  the process-wide channel bus (adapters by key prefix, default key, aliases:
  ``register_channel_adapter``, ``set_default_channel`` ...) and the built-in adapters
  (``notebook:`` / ``console:``, ``file:``);
- :mod:`.asks`: asks (``Ask``), their answers and transcripts (``AskBook``, one per
  RunManager);
- :mod:`.session`: ``ChannelSession``, what ``context.channel()`` returns.
"""

from __future__ import annotations

from .asks import (
    MAX_UPLOAD_ASK_BYTES,
    MAX_UPLOAD_FILE_BYTES,
    MAX_UPLOAD_FILES,
    Ask,
    AskBook,
)
from .bus import (
    DEFAULT_CHANNEL,
    Button,
    ChannelAdapter,
    ChannelBus,
    ChoiceOption,
    FileChannelAdapter,
    NotebookChannelAdapter,
    OutEvent,
    get_channel_service,
    get_default_channel,
    register_channel_adapter,
    set_channel_alias,
    set_default_channel,
)
from .session import ChannelSession

__all__ = [
    "DEFAULT_CHANNEL",
    "MAX_UPLOAD_ASK_BYTES",
    "MAX_UPLOAD_FILES",
    "MAX_UPLOAD_FILE_BYTES",
    "Ask",
    "AskBook",
    "Button",
    "ChannelAdapter",
    "ChannelBus",
    "ChannelSession",
    "ChoiceOption",
    "FileChannelAdapter",
    "NotebookChannelAdapter",
    "OutEvent",
    "get_channel_service",
    "get_default_channel",
    "register_channel_adapter",
    "set_channel_alias",
    "set_default_channel",
]
