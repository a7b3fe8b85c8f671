"""Every REST call the bot makes goes to `discord.api_base`, so several processes can share
Discord's global rate limit through one REST proxy (README, "Running more than one process").

discord.py builds interaction answers and webhook calls with its own `Route`s; this runs the
paths that use them (an edit with its buttons, /show, Delete, a DM edit, a result that falls back
to the member's DMs, the command sync) and records every HTTP request the process sends.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import yarl

from tests.e2e.conftest import InProcessBot
from tests.e2e.helpers import has_image
from tests.fakes.discord import FakeDiscord
from tests.images import png

Sent = list[tuple[str, yarl.URL]]


@pytest.fixture
def outgoing(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sent]:
    """Every request any aiohttp session of this process sends (discord.py's, webhooks', the
    bot's own), recorded before it leaves; requested before the bot so it sees the login."""
    sent: Sent = []
    original = aiohttp.ClientSession._request

    async def recording(self: aiohttp.ClientSession, method: str, url: Any, **options: Any) -> Any:
        sent.append((method.upper(), yarl.URL(url)))
        return await original(self, method, url, **options)

    monkeypatch.setattr(aiohttp.ClientSession, "_request", recording)
    yield sent


@pytest.mark.parametrize(
    "overrides", [{"RETOUCH_EDITING__ALLOW_DMS": "true", "RETOUCH_CREDITS__DM_ALLOWANCE": "100"}]
)
async def test_every_rest_call_goes_to_the_configured_api_base(
    outgoing: Sent, retouch: InProcessBot, discord_fake: FakeDiscord
) -> None:
    fake = discord_fake
    image = fake.add_cdn_file(png(), "p.png")
    await fake.slash("edit", prompt="brighter", image=image)
    result = await fake.wait_for_message(has_image)
    await (await fake.click(result, "Info")).wait_response()
    await (await fake.slash("show", job=1)).wait_response()
    await (await fake.click(result, "Delete")).wait_response()
    await fake.wait_for_request("DELETE", rf"/channels/{fake.channel_id}/messages/\d+")

    await fake.slash("edit", dm=True, prompt="in private", image=fake.add_cdn_file(png(), "d.png"))
    await fake.wait_for_message(lambda m: has_image(m) and "in private" in m["content"])

    # The channel refuses the result and the interaction's message is gone: it goes to the DMs.
    fake.fail_next("POST", rf"/channels/{fake.channel_id}/messages$", 403)
    fake.fail_next("PATCH", r"/webhooks/\d+/[^/]+/messages/", 404, times=50)
    await fake.slash("edit", prompt="to my DMs", image=fake.add_cdn_file(png(), "m.png"))
    await fake.wait_for_message(lambda m: has_image(m) and "to my DMs" in m["content"])
    await retouch.stop()

    api_base = yarl.URL(fake.api_base)
    assert {url.host for _, url in outgoing} == {"127.0.0.1"}, "a request left for another host"
    # To the fake's port: REST, the gateway's websocket, and attachments on its CDN.
    rest = [
        (method, url)
        for method, url in outgoing
        if url.port == api_base.port and url.path != "/gateway" and not url.path.startswith("/cdn/")
    ]
    elsewhere = [str(url) for _, url in rest if not str(url).startswith(fake.api_base + "/")]
    assert elsewhere == [], "REST calls that ignored discord.api_base"
    sent = Counter((method, url.path.removeprefix(api_base.path)) for method, url in rest)
    assert sent == Counter((r.method, r.path) for r in fake.requests), (
        "the fake saw other requests than were sent"
    )
    assert rest[0][0] == "GET" and rest[0][1].path.endswith("/users/@me"), "recording began after the login"

    paths = {f"{method} {path}" for method, path in sent}
    kinds = {
        "command sync": f"PUT /applications/{fake.app_id}/commands",
        "interaction answer": r"POST /interactions/\d+/[^/]+/callback",
        "webhook edit": r"PATCH /webhooks/\d+/[^/]+/messages/",
        "webhook delete": r"DELETE /webhooks/\d+/[^/]+/messages/@original",
        "channel post": rf"POST /channels/{fake.channel_id}/messages",
        "the member, for DMs": rf"GET /users/{fake.member_id}",
        "opening a DM": r"POST /users/@me/channels",
        "DM post": rf"POST /channels/{fake.dm_channel_id()}/messages",
    }
    missing = [kind for kind, pattern in kinds.items() if not any(re.match(pattern, path) for path in paths)]
    assert missing == [], f"the test no longer exercises {missing}"
