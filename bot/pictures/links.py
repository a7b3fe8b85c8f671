"""Short-lived, unguessable links to files we keep, for hosts that only take URLs.

An image that had to be changed (rotated, converted) or whose Discord URL has expired cannot
go to such a host by its Discord URL. Instead the bot serves it from `web.public_url` under a
link signed with a key derived from the bot's token: it cannot be guessed or extended, it stops
working at its expiry, and every process of the same bot signs and honours the same links, so a
host may fetch from whichever process its request reaches.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

from yarl import URL

NAME = re.compile(r"(?:input-[0-9]{1,2}(?:-ready)?|mask-ready)\.(?:png|jpg|webp|gif)")
# A Unix time in ASCII digits: str.isdigit() also takes other scripts' digits, which int() refuses.
EXPIRY = re.compile(r"[0-9]{1,12}")
LINK_TTL = 3600.0


def derive_key(secret: str, purpose: str) -> bytes:
    """A key for one purpose from a secret every process of the bot has (its token), so keys for
    different purposes never sign each other's links."""
    return hmac.new(secret.encode(), f"retouch {purpose}".encode(), hashlib.sha256).digest()


class FileLinks:
    def __init__(self, public_url: str, *, secret: bytes | None = None) -> None:
        self._base = public_url.rstrip("/")
        self._secret = secret or secrets.token_bytes(32)

    @classmethod
    def for_bot(cls, public_url: str, token: str) -> FileLinks:
        """The links of a bot with this token, alike in every one of its processes."""
        return cls(public_url, secret=derive_key(token, "file links"))

    def _sign(self, job_id: int, name: str, expires: int) -> str:
        message = f"{job_id}/{name}/{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def url_for(self, job_id: int, name: str, *, ttl: float = LINK_TTL, now: float | None = None) -> str:
        if not NAME.fullmatch(name):
            raise ValueError(f"not a servable file name: {name!r}")
        expires = int((now or time.time()) + ttl)
        query = {"exp": str(expires), "sig": self._sign(job_id, name, expires)}
        return str(URL(f"{self._base}/files/{job_id}/{name}").with_query(query))

    def valid(
        self, job_id: int, name: str, expires: str, signature: str, *, now: float | None = None
    ) -> bool:
        if not NAME.fullmatch(name) or not EXPIRY.fullmatch(expires):
            return False
        if int(expires) < (now or time.time()):
            return False
        return hmac.compare_digest(self._sign(job_id, name, int(expires)), signature)
