"""Logging for every Corral process: one setup call, plain or JSON lines on stderr.

Rule: configure once at process start (`setup_logging`); modules only call `logging.getLogger`.
"""

from __future__ import annotations

import logging
import sys

import orjson


class JSONFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and any exception, plus the
    items of a ``fields`` mapping passed as ``extra={"fields": {...}}`` (request ids and such)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        entry = {
            **(fields if isinstance(fields, dict) else {}),
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def setup_logging(level: str = "info", *, json_lines: bool = False) -> None:
    """Send log records to stderr at `level`, as JSON lines when asked."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
