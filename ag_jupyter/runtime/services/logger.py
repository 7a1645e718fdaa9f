"""The ``logger()`` service: per-run loggers whose lines never land in a random cell.

In a kernel, anything a background task writes to stderr shows up in whichever cell is
running at the time; so runs log to the ``ag_jupyter.runs`` logger (which has a
``NullHandler``, so Python's last-resort stderr handler never fires) and to a bounded
in-memory buffer the panel and ``%ag_logs`` read.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from typing import Any

RUN_LOGGER_NAME = "ag_jupyter.runs"
logging.getLogger("ag_jupyter").addHandler(logging.NullHandler())


class RunLogBuffer(logging.Handler):
    """Keeps the last ``max_lines`` log lines (all runs together) in memory.

    Args:
      max_lines: lines kept in total (oldest dropped first).
    """

    def __init__(self, max_lines: int = 5000) -> None:
        super().__init__(level=logging.DEBUG)
        self._lines: deque[dict[str, Any]] = deque(maxlen=max_lines)
        self._lines_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        line = {
            "time": record.created,
            "level": record.levelname,
            "run_id": getattr(record, "run_id", None),
            "session_id": getattr(record, "session_id", None),
            "message": record.getMessage(),
        }
        with self._lines_lock:
            self._lines.append(line)

    def lines(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Buffered lines, oldest first; only ``run_id``'s when given."""
        with self._lines_lock:
            return [ln for ln in self._lines if run_id is None or ln["run_id"] == run_id]


class RunLoggerAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A LoggerAdapter that adds run_id/graph_id/node_id/session_id to every record and
    feeds the run log buffer."""

    def __init__(self, logger: logging.Logger, extra: dict[str, Any], buffer: RunLogBuffer):
        super().__init__(logger, extra)
        self._buffer = buffer

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**self.extra, **kwargs.get("extra", {})}  # type: ignore[dict-item]
        return msg, kwargs

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        # INFO and up always reach the run's buffer, whatever the logger's own level.
        to_buffer = level >= logging.INFO or self.logger.isEnabledFor(level)
        to_logger = self.logger.isEnabledFor(level)
        if not (to_buffer or to_logger):
            return
        msg, kwargs = self.process(msg, kwargs)
        exc_info = kwargs.get("exc_info")
        if exc_info is True:
            exc_info = sys.exc_info()
        elif isinstance(exc_info, BaseException):
            exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
        record = self.logger.makeRecord(
            self.logger.name, level, "(run)", 0, msg, args, exc_info or None,
            extra=kwargs.get("extra"),
        )
        if to_buffer:
            self._buffer.handle(record)
        if to_logger:
            self.logger.handle(record)


class RunLoggerService:
    """``context.logger()`` provider: a :class:`RunLoggerAdapter` per context."""

    def __init__(self, buffer: RunLogBuffer) -> None:
        self.buffer = buffer
        self._logger = logging.getLogger(RUN_LOGGER_NAME)

    def bind(self, context: Any) -> RunLoggerAdapter:
        extra = {
            "run_id": context.run_id,
            "graph_id": context.graph_id,
            "node_id": context.node_id,
            "session_id": context.session_id,
        }
        return RunLoggerAdapter(self._logger, extra, self.buffer)
