"""One JSON-over-HTTP call to a host, with every failure turned into a typed ProviderError.

Hosts word their errors differently, but the HTTP status already says most of what the
router needs; each host passes a small function that pulls its message and code out of the
body.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from bot.providers.base import (
    AuthFailed,
    ContentRejected,
    InvalidRequest,
    ProviderError,
    RateLimited,
    Unavailable,
)
from bot.providers.settings import HostSettings

ErrorParser = Callable[[Any], tuple[str | None, str | None]]
"""Body -> (code, message); either may be None when the body does not say."""


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify(
    status: int,
    body: Any,
    headers: Mapping[str, str],
    *,
    host: str,
    parse_error: ErrorParser,
    content_codes: frozenset[str] = frozenset(),
) -> ProviderError:
    code, message = parse_error(body)
    text = message or f"HTTP {status}"
    if code is not None and code.lower() in content_codes:
        return ContentRejected(text, host=host, code=code)
    if status in (401, 402, 403):
        return AuthFailed(text, host=host, code=code)
    if status == 429:
        return RateLimited(text, retry_after=parse_retry_after(headers), host=host, code=code)
    if status in (408, 409) or status >= 500:
        return Unavailable(text, host=host, code=code)
    return InvalidRequest(text, host=host, code=code)


async def request_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    host: str,
    parse_error: ErrorParser,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
    data: aiohttp.FormData | None = None,
    content_codes: frozenset[str] = frozenset(),
) -> Any:
    """The decoded JSON body of a 2xx reply; anything else raises a ProviderError."""
    try:
        async with session.request(
            method,
            url,
            headers=headers,
            json=json_body,
            data=data,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            raw = await response.read()
            status = response.status
            reply_headers = response.headers
    except TimeoutError as exc:
        raise Unavailable(f"{host} did not answer within {timeout:g} s", host=host) from exc
    except aiohttp.ClientError as exc:
        raise Unavailable(f"could not reach {host}: {exc.__class__.__name__}", host=host) from exc
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
        if 200 <= status < 300:
            raise Unavailable(f"{host} sent a reply that is not JSON", host=host) from None
    if 200 <= status < 300:
        return body
    raise classify(
        status, body, reply_headers, host=host, parse_error=parse_error, content_codes=content_codes
    )


@dataclass(frozen=True)
class JsonApi:
    """One host's JSON API: where it is, how it authenticates and words its errors.

    Every call's reply must be a JSON object; anything else means the host is not answering
    as documented, which is treated like an outage.
    """

    host: str
    session: aiohttp.ClientSession
    headers: Mapping[str, str]
    timeout: float
    parse_error: ErrorParser
    content_codes: frozenset[str] = frozenset()

    @classmethod
    def keyed(
        cls,
        host: str,
        settings: HostSettings,
        session: aiohttp.ClientSession,
        *,
        auth: tuple[str, str],
        parse_error: ErrorParser,
        content_codes: frozenset[str] = frozenset(),
    ) -> JsonApi:
        """The API of a host configured under `providers.<host>`, authenticated with its key:
        `auth` is the header and its value, with `{key}` where the key goes."""
        if settings.api_key is None:
            raise ValueError(f"providers.{host}.api_key is required")
        header, value = auth
        return cls(
            host=host,
            session=session,
            headers={header: value.format(key=settings.api_key.get_secret_value())},
            timeout=settings.request_timeout,
            parse_error=parse_error,
            content_codes=content_codes,
        )

    async def call(self, method: str, url: str, body: Any = None) -> dict[str, Any]:
        reply = await request_json(
            self.session,
            method,
            url,
            host=self.host,
            parse_error=self.parse_error,
            timeout=self.timeout,
            headers=self.headers,
            json_body=body,
            content_codes=self.content_codes,
        )
        if not isinstance(reply, dict):
            raise Unavailable(f"{self.host} sent a reply that is not a JSON object", host=self.host)
        return reply
