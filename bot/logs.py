"""Logging: one line per event, readable by default, JSON for log collectors."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

# Extra attributes a log call may attach (`log.info(..., extra={"job_id": 3})`) that the JSON
# form carries as fields of their own.
CONTEXT_FIELDS = ("job_id", "guild_id", "user_id", "host")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                event[name] = value
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False)


def setup_logging(level: str, *, json_format: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_format:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # discord.py logs every HTTP request at DEBUG and gateway chatter at INFO.
    logging.getLogger("discord.http").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("discord.gateway").setLevel(max(logging.WARNING, root.level))
