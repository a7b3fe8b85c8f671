"""Logging: one line per event, readable by default, JSON for log collectors.

Much of what is logged comes from outside: run ids and error text from hosts, file names and
prompts from members, exception messages quoting any of them, and discord.py's own records,
whose URLs carry interaction tokens. So that no call site has to remember any of this, the
root handler's `Sanitizer` rewrites every record before a formatter sees it:

- control characters (line breaks, ANSI escapes, Unicode line separators, bidi overrides) are
  escaped, so a value can never end its line and forge another record;
- each %-argument is cut to ARG_LIMIT characters and the message to MESSAGE_LIMIT, so a 60 KB
  run id makes a short line;
- configured secrets, and tokens in Discord webhook/interaction URLs and `"token": ...` pairs,
  become [redacted], in the message and in exception text alike.

Tracebacks are ours and stay multi-line (each line escaped and capped, secrets redacted); the
text form indents every line after a record's first, so only a record starts at column 0.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

# Extra attributes a log call may attach (`log.info(..., extra={"job_id": 3})`) that the JSON
# form carries as fields of their own.
CONTEXT_FIELDS = ("job_id", "guild_id", "user_id", "host")

REDACTED = "[redacted]"
ARG_LIMIT = 1000
MESSAGE_LIMIT = 4000
# A "secret" this short would redact ordinary words everywhere; no real key or token is.
MIN_SECRET_LENGTH = 8

_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_ESCAPES: dict[int, str] = {
    **{code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))},
    **{ord(char): f"\\u{ord(char):04x}" for char in "\u2028\u2029" + _BIDI},
    **{ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"},
}
_NEEDS_ESCAPE = re.compile("[" + "".join(map(chr, _ESCAPES)) + "]")
_TOKENS = re.compile(
    r"(?P<keep>/(?:webhooks|interactions)/\d+/|[\"']token[\"']\s*:\s*[\"'])(?P<token>[^/?#\s\"'<>]+)"
)
_INDENT = "    "


def escape(text: str) -> str:
    """Control characters as visible escapes; backslashes stay, so escaping twice changes nothing."""
    # Searching first is several times faster for the usual line with nothing to escape.
    return text.translate(_ESCAPES) if _NEEDS_ESCAPE.search(text) else text


def cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


class Sanitizer(logging.Filter):
    """Makes a record safe to write: escaped, capped and redacted (see the module docstring).

    It rewrites the record in place (message formatted, arguments dropped, exception text
    prepared), which is idempotent, and never refuses a record or raises.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        kept = {secret for secret in secrets if len(secret) >= MIN_SECRET_LENGTH}
        # Longest first, so a secret that contains another is redacted whole.
        self._secrets = sorted(kept, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        if "/webhooks/" in text or "/interactions/" in text or "token" in text:
            text = _TOKENS.sub(rf"\g<keep>{REDACTED}", text)
        return text

    def clean(self, text: str, limit: int) -> str:
        return cap(escape(self.redact(text)), limit)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.clean(self._message(record), MESSAGE_LIMIT)
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = _PLAIN.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._lines(record.exc_text)
        if record.stack_info:
            record.stack_info = self._lines(record.stack_info)
        return True

    def _message(self, record: logging.LogRecord) -> str:
        template = str(record.msg)
        if not record.args:
            return template
        args: tuple[object, ...] | Mapping[str, object]
        if isinstance(record.args, Mapping):
            args = {key: self._argument(value) for key, value in record.args.items()}
        else:
            args = tuple(self._argument(value) for value in record.args)
        try:
            return template % args
        except (TypeError, ValueError, KeyError):
            return f"{template} {args!r}"

    def _argument(self, value: object) -> object:
        # Numbers cannot carry text and must stay numbers for %d and %.1f.
        return value if isinstance(value, int | float) else _Shown(value, self)

    def _lines(self, text: str) -> str:
        return "\n".join(self.clean(line, MESSAGE_LIMIT) for line in text.splitlines())


class _Shown:
    """A %-argument as the log shows it, whichever of %s or %r the message asks for."""

    __slots__ = ("_sanitizer", "_value")

    def __init__(self, value: object, sanitizer: Sanitizer) -> None:
        self._value = value
        self._sanitizer = sanitizer

    def __str__(self) -> str:
        return self._cut(str(self._value))

    def __repr__(self) -> str:
        return self._cut(repr(self._value))

    def _cut(self, text: str) -> str:
        # The whole message is escaped and redacted afterwards; only a value being cut is
        # redacted first, so the cut cannot leave half a secret that no longer matches.
        return cap(self._sanitizer.redact(text), ARG_LIMIT) if len(text) > ARG_LIMIT else text


_PLAIN = logging.Formatter()


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`, with any traceback indented beneath it."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        first, *rest = super().format(record).split("\n")
        return "\n".join([first, *(_INDENT + line for line in rest)])


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
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            event["exception"] = record.exc_text
        return json.dumps(event, ensure_ascii=False)


def setup_logging(level: str, *, json_format: bool, secrets: Iterable[str]) -> None:
    """Log to stderr through the Sanitizer; `secrets` are every configured key and token."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(Sanitizer(secrets))
    handler.setFormatter(JsonFormatter() if json_format else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # discord.py logs every HTTP request at DEBUG and gateway chatter at INFO.
    logging.getLogger("discord.http").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("discord.gateway").setLevel(max(logging.WARNING, root.level))
