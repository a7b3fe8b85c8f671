"""What every host's callback parser shares: finding a header, reading a JSON object, and
taking the id of the run it is about.

Each host's own parser and signature check live in its module and reach the web server through
its `HostSpec` (`bot/providers/spec.py`). Parsers are pure functions of the body so they can be
tested (and fuzzed) byte for byte, and raise only ValueError, with a short reason, for a body
they cannot use, so the server can answer 400 for all of them alike. Whatever a callback says,
it only prompts a poll: the outcome comes from the host's authenticated API.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


def json_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("the body is not JSON") from None
    if not isinstance(parsed, dict):
        raise ValueError("the body is not a JSON object")
    return parsed


def required_id(payload: dict[str, Any], key: str) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} is missing")
    return value
