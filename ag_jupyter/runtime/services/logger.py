"""The ``logger()`` service: per-run loggers whose lines never land in a random cell.

In a kernel, anything a background task writes to stderr shows up in whichever cell is
running at the time; so runs log to the ``ag_jupyter.runs`` logger (which has a
``NullHandler``, so Python's last-resort stderr handler never fires) and to a per-run,
bounded log (in the workspace when there is one) that the panel and
``manager.logs(run_id)`` read.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from ..store.run_logs import RunLogBook

RUN_LOGGER_NAME = "ag_jupyter.runs"
logging.getLogger("ag_jupyter").addHandler(logging.NullHandler())


class RunLogBuffer(logging.Handler):
    """The logging handler behind ``context.logger()``: hands each line to a sink that
    keeps it per run (bounded; see ``store/run_logs.py``).

    Args:
      sink: a :class:`~ag_jupyter.runtime.store.run_logs.RunLogBook` (memory only, the
        default) or a :class:`~ag_jupyter.runtime.store.run_logs.WorkspaceRunLogs`
        (kept in the workspace, readable after a restart).
    """

    def __init__(self, sink: Any = None) -> None:
        super().__init__(level=logging.DEBUG)
        self.sink = sink if sink is not None else RunLogBook()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception as exc:  # a bad %-format must not lose the line
            message = f"{record.msg!r} (formatting failed: {exc})"
        line = {
            "time": record.created,
            "level": record.levelname,
            "run_id": getattr(record, "run_id", None),
            "session_id": getattr(record, "session_id", None),
            "message": message,
        }
        if record.exc_info:
            line["traceback"] = logging.Formatter().formatException(record.exc_info)
        self.sink.append(line)

    def lines(
        self,
        run_id: str | None = None,
        *,
        search: str | None = None,
        levels: set[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Lines kept in memory, oldest first; only ``run_id``'s when given (see
        :meth:`RunLogBook.lines`)."""
        book = getattr(self.sink, "book", self.sink)
        return book.lines(run_id, search=search, levels=levels)

    async def read(
        self,
        run_id: str,
        *,
        offset: int = 0,
        limit: int = 200,
        search: str | None = None,
        levels: set[str] | None = None,
    ) -> dict[str, Any]:
        """A page of ``run_id``'s lines, oldest first: ``{"lines": [...], "total": n}``,
        from the workspace when the sink keeps them there (so after a restart too).

        Raises:
          WorkspaceError: if the workspace cannot be read.
        """
        reader = getattr(self.sink, "read", None)
        if reader is not None:
            return await reader(run_id, offset=offset, limit=limit, search=search, levels=levels)
        found = self.lines(run_id, search=search, levels=levels)
        return {"lines": found[offset : offset + limit], "total": len(found)}


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
