"""A loopback fake of Discord (REST v10, gateway and CDN) for end-to-end tests of discord.py bots.

Why a fake below the socket instead of mocks: the bot runs unchanged, so discord.py's transport,
multipart encoding, 429 handling, gateway handshake and login run exactly as against Discord
(see the shared research notes, discord-testing.md). One aiohttp application on a random port of 127.0.0.1 serves

- ``/api/v10/...``: REST, routed by a small table (an unknown route answers
  ``404 {"code": 0, "message": "fake discord: no route METHOD PATH"}`` so gaps fail loudly),
- ``/gateway``: the websocket gateway (text JSON frames, which discord.py accepts),
- ``/cdn/...``: attachment bytes behind signed, expiring URLs like Discord's, and the media proxy's
  copies of images linked in messages (``add_embed_image()``).

Point discord.py at it with two class attributes (the bot under test does this from its config)::

    discord.http.Route.BASE = fake.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)

Interactions come from the guild's one text channel or, with ``dm=True``, from the member's DM with the
bot, shaped as Discord sends them there (``user`` instead of ``member``, ``context`` 1) and only for
commands whose synced definition Discord would offer in a DM. A user who added the app to their own
account (``install_for_user()``) can also use it in a server without the bot (``add_guild(with_bot=False)``)
and in a group DM (``add_group_dm()``): context 0 or 2, ``authorizing_integration_owners`` naming only the
user install, and only commands whose ``integration_types`` and ``contexts`` allow it there.

Sharding as Discord does it: ``FakeDiscord(shards=n)`` makes ``/gateway/bot`` recommend ``n``, and a bot that
IDENTIFYs with ``shard: [id, count]`` gets on that connection only the guilds, and the events (interactions
included), of guilds whose ``(guild_id >> 22) % count`` is ``id``; DMs go to shard 0. ``add_guild(shard=k)``
picks a guild id that lands on shard ``k``; the first guild is on shard 0. Unsharded, every event goes
to the one connection.

The world (guild, members, messages, files, commands) outlives gateway connections, so a bot can be
killed and restarted, in-process or as a subprocess, against the same fake. The rules bots trip over
in production are enforced: the 3 s first-response deadline, a single acknowledgement, the 15 min
token lifetime, upload size, message and component limits, and the first followup after a defer
editing the "thinking" message while keeping the defer's visibility.

Waiting is event driven: every state change bumps one ``asyncio.Event`` and waiters re-check their
condition, so tests never sleep. Things no bot can do on Discord (clicking a missing or disabled
button, an option that is not in the synced command) raise ``AssertionError`` in the test.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import io
import itertools
import json
import math
import mimetypes
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from aiohttp import BodyPartReader, WSMsgType, web
from PIL import Image

from tests.fakes.listen import BACKLOG

__all__ = ["DiscordError", "FakeDiscord", "Interaction", "RecordedRequest"]

JSON = dict[str, Any]
Path = tuple[str | int, ...]
T = TypeVar("T")

API_PREFIX: Final = "/api/v10"
DISCORD_EPOCH_MS: Final = 1_420_070_400_000
ALL_PERMISSIONS: Final = 8_866_461_766_385_663  # discord.Permissions.all().value in discord.py 2.7.1
ADMINISTRATOR, MANAGE_MESSAGES = 1 << 3, 1 << 13
# @everyone in a new server: invite, react, view, send, embed, attach, history, app commands, threads...
EVERYONE_PERMISSIONS: Final = sum(
    1 << bit for bit in (0, 6, 9, 10, 11, 14, 15, 16, 18, 20, 21, 25, 26, 31, 35, 36, 37, 38, 39, 46, 49, 50)
)
BOT_PERMISSIONS: Final = sum(1 << bit for bit in (6, 10, 11, 14, 15, 16, 18, 38))
DM_APP_PERMISSIONS: Final = 4_011_158_005_075_008  # discord.Permissions._dm_permissions().value in 2.7.1
GUILD_CONTEXT, BOT_DM_CONTEXT, PRIVATE_CHANNEL_CONTEXT = 0, 1, 2  # interaction context types
GUILD_INSTALL, USER_INSTALL = 0, 1  # application integration types
USE_EXTERNAL_APPS: Final = 1 << 50  # without it, a user-installed app's replies in the server are ephemeral
INTENT_GUILDS, INTENT_MEMBERS, INTENT_PRESENCES, INTENT_GUILD_MESSAGES = 1 << 0, 1 << 1, 1 << 8, 1 << 9
INTENT_DIRECT_MESSAGES, INTENT_MESSAGE_CONTENT = 1 << 12, 1 << 15
PRIVILEGED_INTENTS: Final = INTENT_MEMBERS | INTENT_PRESENCES | INTENT_MESSAGE_CONTENT
EPHEMERAL, LOADING, COMPONENTS_V2 = 1 << 6, 1 << 7, 1 << 15
SETTABLE_FLAGS: Final = (1 << 2) | EPHEMERAL | (1 << 12) | COMPONENTS_V2  # + suppress embeds/notifications
CHANNEL_FLAGS: Final = SETTABLE_FLAGS & ~EPHEMERAL  # ephemeral exists only for interaction responses
APP_COMMAND, COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 2, 3, 4, 5
CALLBACK_TYPES: Final = {
    APP_COMMAND: {4, 5, 9},
    COMPONENT: {4, 5, 6, 7, 9},
    AUTOCOMPLETE: {8},
    MODAL_SUBMIT: {4, 5, 6, 7},
}
INTERACTIVE_COMPONENTS: Final = {2, 3, 4, 5, 6, 7, 8}  # button, selects, text input
LABEL_CHILDREN: Final = {3, 4, 19}  # string select, text input, file upload: what submit_modal() fills
UNSIMULATED_LABEL_CHILDREN: Final = {5, 6, 7, 8, 21, 22, 23}  # other selects, radio, checkboxes


class DiscordError(Exception):
    """An API error; the router turns it into Discord's ``{"code", "message", "errors"?}`` body."""

    def __init__(self, status: int, code: int, message: str, errors: JSON | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status, self.code, self.message, self.errors = status, code, message, errors

    def body(self) -> JSON:
        return {
            "code": self.code,
            "message": self.message,
            **({"errors": self.errors} if self.errors else {}),
        }


def _unknown(status: int, code: int, what: str) -> DiscordError:
    return DiscordError(status, code, f"Unknown {what}")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """``web.json_response`` appends ``; charset=utf-8`` and discord.py then parses nothing (pitfall 1)."""
    headers = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(body=json.dumps(data).encode(), status=status, headers=headers)


def _defaults(nulls: str = "", zeros: str = "", falses: str = "", lists: str = "") -> JSON:
    """The empty fields of a payload, from space-separated names: keeps the payload builders short."""
    fields: JSON = dict.fromkeys(nulls.split())
    fields |= dict.fromkeys(zeros.split(), 0) | dict.fromkeys(falses.split(), False)
    return fields | {name: [] for name in lists.split()}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _snowflake_time(snowflake: int) -> str:
    return datetime.fromtimestamp(((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000, UTC).isoformat()


def describe_file(data: bytes, filename: str, content_type: str | None = "auto") -> JSON:
    """What Discord learns from an upload: a sniffed content type, and width/height only for images
    Pillow can read (Discord sends none for a file it could not read as an image)."""
    info: JSON = {}
    image_format = None
    try:
        with Image.open(io.BytesIO(data)) as image:
            info["width"], info["height"] = image.size
            image_format = image.format
    except Exception:  # anything Pillow cannot open is simply not an image
        pass
    if content_type == "auto":
        content_type = Image.MIME.get(image_format or "") or mimetypes.guess_type(filename)[0]
        if content_type and content_type.startswith("text/"):
            content_type += "; charset=utf-8"
    return info | ({"content_type": content_type} if content_type else {})


def walk_components(components: list[JSON]) -> Iterator[JSON]:
    """Every component, depth first, through action rows, V2 containers/sections and modal labels."""
    for _, component in _walk_with_paths(components, ()):
        yield component


def _walk_with_paths(components: list[JSON], path: Path) -> Iterator[tuple[Path, JSON]]:
    """Components with their form paths as Discord reports them (``components.0.components.1``)."""
    for index, component in enumerate(components):
        yield (*path, index), component
        yield from _walk_with_paths(component.get("components") or [], (*path, index, "components"))
        for key in ("accessory", "component"):
            if isinstance(component.get(key), dict):
                yield (*path, index, key), component[key]
                yield from _walk_with_paths(
                    component[key].get("components") or [], (*path, index, key, "components")
                )


def number_components(components: list[JSON]) -> None:
    """Discord fills in a numeric ``id`` for every component that has none, in tree order."""
    used = {c["id"] for c in walk_components(components) if "id" in c}
    free = (n for n in itertools.count(1) if n not in used)
    for component in walk_components(components):
        component.setdefault("id", next(free))


# ---------------------------------------------------------------------------------------------- validation


class _FormErrors:
    """Collects 400 50035 "Invalid Form Body" errors in Discord's nested ``{"a": {"0": {"_errors": []}}}``."""

    def __init__(self, prefix: Path = ()) -> None:
        self.prefix = prefix
        self.errors: JSON = {}

    def add(self, path: Path, code: str, message: str) -> None:
        node = self.errors
        for part in self.prefix + path:
            node = node.setdefault(str(part), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})

    def length(self, path: Path, value: Any, low: int, high: int) -> None:
        if not isinstance(value, str) or not low <= len(value) <= high:
            self.add(path, "BASE_TYPE_BAD_LENGTH", f"Must be between {low} and {high} in length.")

    def at_most(self, path: Path, value: Any, high: int) -> None:
        if value is not None and len(value) > high:
            self.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {high} or fewer in length.")

    def raise_if_any(self) -> None:
        if self.errors:
            raise DiscordError(400, 50035, "Invalid Form Body", self.errors)


def validate_commands(definitions: list[JSON]) -> None:
    """Discord's limits: names 1-32 (lowercase for slash commands), descriptions 1-100 for slash commands
    and empty for context menus, unique names, 25 options and choices, required options first."""
    errors = _FormErrors()
    seen: set[tuple[Any, Any]] = set()
    for index, command in enumerate(definitions):
        name, slash = command.get("name"), command.get("type", 1) == 1
        errors.length((index, "name"), name, 1, 32)
        if slash and isinstance(name, str) and (name != name.lower() or not re.fullmatch(r"[-_'\w]+", name)):
            errors.add((index, "name"), "APPLICATION_COMMAND_INVALID_NAME", f"Invalid name {name!r}")
        if slash:
            errors.length((index, "description"), command.get("description"), 1, 100)
        elif command.get("description"):
            errors.add((index, "description"), "APPLICATION_COMMAND_INVALID_DESCRIPTION", "Must be empty.")
        if (name, command.get("type", 1)) in seen:
            errors.add((index, "name"), "APPLICATION_COMMANDS_DUPLICATE_NAME", "Names must be unique")
        seen.add((name, command.get("type", 1)))
        _validate_options(command.get("options") or [], errors, (index, "options"))
    errors.raise_if_any()


def _validate_options(options: list[JSON], errors: _FormErrors, path: Path) -> None:
    errors.at_most(path, options, 25)
    optional_seen = False
    for index, option in enumerate(options):
        here = (*path, index)
        errors.length((*here, "name"), option.get("name"), 1, 32)
        errors.length((*here, "description"), option.get("description"), 1, 100)
        errors.at_most((*here, "choices"), option.get("choices"), 25)
        for number, choice in enumerate(option.get("choices") or []):
            errors.length((*here, "choices", number, "name"), choice.get("name"), 1, 100)
        if option.get("type") in (1, 2):
            _validate_options(option.get("options") or [], errors, (*here, "options"))
        elif option.get("required") and optional_seen:
            errors.add((*here, "required"), "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID", "Required first")
        optional_seen = optional_seen or not option.get("required")


def command_contexts(command: JSON, install: int = GUILD_INSTALL) -> set[int]:
    """Where Discord's client offers a synced command through one kind of install, as interaction
    context types. A guild command only in its guild, through the server's install; a global one only
    through the installs its ``integration_types`` name, where ``contexts`` says, or, when that is
    null, in servers and (unless the deprecated ``dm_permission`` is false) in DMs with the bot. Group
    DMs (PRIVATE_CHANNEL) are reached only through a user's own install."""
    if "guild_id" in command:
        return {GUILD_CONTEXT} if install == GUILD_INSTALL else set()
    if install not in (command.get("integration_types") or [GUILD_INSTALL]):
        return set()
    reachable = {GUILD_CONTEXT, BOT_DM_CONTEXT} | (
        {PRIVATE_CHANNEL_CONTEXT} if install == USER_INSTALL else set()
    )
    contexts = command.get("contexts")
    if contexts is None:
        return {GUILD_CONTEXT} | (set() if command.get("dm_permission") is False else {BOT_DM_CONTEXT})
    return set(contexts) & reachable


def validate_message(message: JSON, errors: _FormErrors, new_files: int) -> None:
    """Content, embed, file and component limits on the message as it would be stored."""
    errors.at_most(("content",), message["content"], 2000)
    errors.at_most(("embeds",), message["embeds"], 10)
    if new_files > 10 or len(message["attachments"]) > 10:
        errors.add(("attachments",), "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    total = 0
    for index, embed in enumerate(message["embeds"]):
        errors.at_most(("embeds", index, "title"), embed.get("title"), 256)
        errors.at_most(("embeds", index, "description"), embed.get("description"), 4096)
        errors.at_most(("embeds", index, "fields"), embed.get("fields"), 25)
        texts = [embed.get("title"), embed.get("description"), (embed.get("footer") or {}).get("text")]
        texts += [(embed.get("author") or {}).get("name")]
        texts += [text for f in embed.get("fields") or [] for text in (f.get("name"), f.get("value"))]
        total += sum(len(text) for text in texts if isinstance(text, str))
    if total > 6000:
        errors.add(("embeds",), "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")
    components = message["components"]
    if message["flags"] & COMPONENTS_V2:
        if message["content"] or message["embeds"]:
            errors.add(("content",), "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2", "Not with V2")
        if sum(1 for _ in walk_components(components)) > 40:
            errors.add(("components",), "COMPONENT_MAX_TOTAL_COMPONENTS_EXCEEDED", "Must be 40 or fewer.")
    else:
        errors.at_most(("components",), components, 5)
        for index, row in enumerate(components):
            children = row.get("components") or []
            buttons = sum(1 for child in children if child.get("type") == 2)
            if row.get("type") != 1:
                errors.add(("components", index, "type"), "UNION_TYPE_CHOICES", "Must be an action row.")
            elif not 1 <= len(children) <= 5 or (buttons != len(children) and len(children) != 1):
                errors.add(
                    ("components", index), "COMPONENT_LAYOUT_WIDTH_EXCEEDED", "1-5 buttons or 1 select"
                )
    seen: set[Any] = set()
    for where, component in _walk_with_paths(components, ("components",)):
        if component.get("type") not in INTERACTIVE_COMPONENTS:
            continue
        if component.get("type") == 2 and component.get("style") in (5, 6):  # link and premium buttons
            if component.get("style") == 5 and not component.get("url"):
                errors.add((*where, "url"), "BASE_TYPE_REQUIRED", "This field is required")
        else:
            errors.length((*where, "custom_id"), component.get("custom_id"), 1, 100)
            if component.get("custom_id") in seen:
                errors.add((*where, "custom_id"), "COMPONENT_CUSTOM_ID_DUPLICATED", "Duplicate custom_id")
            seen.add(component.get("custom_id"))
        errors.at_most((*where, "label"), component.get("label"), 80)
        errors.at_most((*where, "options"), component.get("options"), 25)
        errors.at_most((*where, "placeholder"), component.get("placeholder"), 150)


def validate_modal(data: JSON) -> JSON:
    """custom_id 1-100, title 1-45, 1-5 rows/labels/text displays; a label (text 1-45, description up to
    100) holds one text input, string select or file upload, and a file upload lives only in a label.
    Inputs are checked as Discord checks them, so a modal Discord would refuse is a 50035 here too, with
    error paths like ``data.components.0.component.max_values``."""
    errors = _FormErrors(("data",))
    errors.length(("custom_id",), data.get("custom_id"), 1, 100)
    errors.length(("title",), data.get("title"), 1, 45)
    components = data.get("components") or []
    if not 1 <= len(components) <= 5:
        errors.add(("components",), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
    for index, component in enumerate(components):
        here: Path = ("components", index)
        if component.get("type") not in (1, 10, 18):
            errors.add((*here, "type"), "UNION_TYPE_CHOICES", "Must be a row, text or label.")
        if component.get("type") == 18:
            errors.length((*here, "label"), component.get("label"), 1, 45)
            errors.at_most((*here, "description"), component.get("description"), 100)
            child = component.get("component")
            child_type = child.get("type") if isinstance(child, dict) else None
            # Discord takes these too, but submit_modal() cannot fill them in (yet): fail loudly.
            if child_type in UNSIMULATED_LABEL_CHILDREN:
                raise NotImplementedError(f"fake discord: label child component type {child_type}")
            if child_type not in LABEL_CHILDREN:
                errors.add((*here, "component", "type"), "UNION_TYPE_CHOICES", "Must be a modal input.")
    seen: set[Any] = set()
    for where, component in _walk_with_paths(components, ("components",)):
        kind = component.get("type")
        if kind not in (3, 4, 19):
            continue
        errors.length((*where, "custom_id"), component.get("custom_id"), 1, 100)
        if component.get("custom_id") in seen:
            errors.add((*where, "custom_id"), "COMPONENT_CUSTOM_ID_DUPLICATED", "Duplicate custom_id")
        seen.add(component.get("custom_id"))
        if kind == 4:
            errors.at_most((*where, "value"), component.get("value"), 4000)
            if not 0 <= component.get("max_length", 4000) <= 4000:
                errors.add((*where, "max_length"), "NUMBER_TYPE_MAX", "Must be 4000 or less.")
            continue
        if kind == 19 and where[-1] != "component":
            errors.add((*where, "type"), "UNION_TYPE_CHOICES", "A file upload must be inside a label.")
        if kind == 3:
            options = component.get("options")
            if not isinstance(options, list) or not 1 <= len(options) <= 25:
                errors.add((*where, "options"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 25 in length.")
            errors.at_most((*where, "placeholder"), component.get("placeholder"), 150)
            if component.get("disabled"):  # "Modals can not currently have disabled components"
                errors.add(
                    (*where, "disabled"), "COMPONENT_INVALID_DISABLED", "Cannot be disabled in a modal."
                )
        _validate_value_counts(component, errors, where, high=25 if kind == 3 else 10)
    errors.raise_if_any()
    data = copy.deepcopy(data)
    number_components(data["components"])
    return data


def _value_counts(component: JSON) -> tuple[Any, Any]:
    """``min_values``/``max_values`` with Discord's defaults of 1; discord.py 2.7.1 sends ``null`` for a
    ``FileUpload`` built without them, which counts as absent."""
    low, high = component.get("min_values"), component.get("max_values")
    return (1 if low is None else low), (1 if high is None else high)


def _validate_value_counts(component: JSON, errors: _FormErrors, where: Path, *, high: int) -> None:
    """min_values 0..high, max_values 1..high, min <= max, and min_values at least 1 unless
    ``required`` is false (the footnote on select and file upload structures)."""
    low_values, high_values = _value_counts(component)
    for name, value, floor in (("min_values", low_values, 0), ("max_values", high_values, 1)):
        if not isinstance(value, int) or isinstance(value, bool):
            errors.add((*where, name), "NUMBER_TYPE_COERCE", f'Value "{value}" is not int.')
        elif value < floor:
            errors.add(
                (*where, name), "NUMBER_TYPE_MIN", f"int value should be greater than or equal to {floor}."
            )
        elif value > high:
            errors.add(
                (*where, name), "NUMBER_TYPE_MAX", f"int value should be less than or equal to {high}."
            )
    if isinstance(low_values, int) and isinstance(high_values, int) and low_values > high_values:
        errors.add((*where, "min_values"), "COMPONENT_MIN_VALUES_EXCEEDS_MAX", "Must not exceed max_values.")
    if low_values == 0 and component.get("required", True):
        errors.add(
            (*where, "min_values"), "NUMBER_TYPE_MIN", "int value should be greater than or equal to 1."
        )


# ---------------------------------------------------------------------------------------------- records


@dataclass
class RecordedRequest:
    """One HTTP request to ``/api/v10``; ``json`` comes from ``payload_json`` for multipart bodies."""

    method: str
    path: str  # without /api/v10 and without the query
    query: dict[str, str]
    json: Any
    files: list[JSON]  # {name, filename, content_type, data}
    status: int
    time: float  # time.monotonic() when it arrived
    headers: dict[str, str] = field(default_factory=dict)  # minus Authorization


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    body: JSON
    headers: dict[str, str]
    remaining: int


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, str]
    json: Any
    files: list[JSON]
    params: dict[str, str] = field(default_factory=dict)

    @property
    def payload(self) -> JSON:
        return self.json if isinstance(self.json, dict) else {}


@dataclass
class _StoredFile:
    data: bytes
    content_type: str


class Interaction:
    """The test's handle on one injected interaction: what the bot answered and what it created."""

    def __init__(
        self, fake: FakeDiscord, kind: int, user_id: int, data: JSON, message: JSON | None, channel_id: int
    ) -> None:
        self._fake = fake
        self.id: int = fake._ids.next()
        self.token: str = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48)
        self.type, self.user_id, self.data = kind, user_id, data
        self.channel_id = channel_id  # where it was used, so where its answers are posted
        self.message_id: int | None = int(message["id"]) if message else None  # the clicked message
        self.opened_by: Interaction | None = None  # for a modal submit: the interaction that opened it
        self.shard: int | None = None  # the gateway shard it was sent on
        self.responses: list[JSON] = []  # every callback attempt: {type, data, files, status}
        self.sent_at = math.inf  # time.monotonic() when its frame was written to the gateway
        self.acknowledged = False  # a callback succeeded
        self.expired = False  # the first callback came too late: the token is dead
        self.original_id: int | None = None  # what @original means for the webhook routes
        self.loading = False  # @original is a "thinking" message that the next followup replaces
        self.modal: JSON | None = None
        # authorizing_integration_owners: install type ("0" server, "1" user) -> its owner's id
        self.owners: dict[str, str] = {}
        self._followup_ids: list[int] = []

    def __repr__(self) -> str:
        return f"<fake Interaction {self.id} type={self.type} {self.data.get('name') or self.data.get('custom_id')}>"

    @property
    def in_dm(self) -> bool:
        """Used in the member's DM with the bot rather than in a guild or a group DM."""
        return self._fake._dm_recipient(self.channel_id) is not None

    @property
    def followups(self) -> list[JSON]:
        """Messages created by followups, current state (a followup that replaced @original included)."""
        return [self._fake._message_any(message_id) for message_id in self._followup_ids]

    def original(self) -> JSON | None:
        return self._fake.messages.get(self.original_id) if self.original_id else None

    async def wait_response(self, timeout: float = 10) -> JSON:
        """The first callback attempt (check its ``status``: a late one is 404)."""
        return await self._fake._wait(
            lambda: self.responses[0] if self.responses else None, timeout, f"a callback to {self!r}"
        )

    async def wait_modal(self, timeout: float = 10) -> JSON:
        """The modal (type-9 ``data``) this interaction was answered with."""

        def answered() -> JSON | None:
            return next((response for response in self.responses if response["status"] == 200), None)

        try:
            await self._fake._wait(answered, timeout, f"an answer to {self!r}")
        except TimeoutError:
            raise TimeoutError(f"no successful answer to {self!r}; attempts: {self.responses}") from None
        assert self.modal is not None, (
            f"expected a modal, got {[(r['type'], r['status']) for r in self.responses]}"
        )
        return self.modal

    async def wait_followup(
        self, timeout: float = 10, *, predicate: Callable[[JSON], bool] = lambda m: True
    ) -> JSON:
        return await self._fake._wait_message(
            lambda m: int(m["id"]) in self._followup_ids and predicate(m), timeout, f"a followup to {self!r}"
        )

    def metadata(self) -> JSON:
        """``interaction_metadata`` of the messages created in response to this interaction."""
        meta: JSON = {"id": str(self.id), "type": self.type, "user": self._fake._users[self.user_id]}
        meta["authorizing_integration_owners"] = dict(self.owners)
        if self.type == APP_COMMAND:
            meta |= {"name": self.data["name"], "command_type": self.data["type"]}
        if self.message_id is not None:
            meta["interacted_message_id"] = str(self.message_id)
        if self.opened_by is not None:
            meta["triggering_interaction_metadata"] = self.opened_by.metadata()
        return meta

    def message_type(self) -> int:
        if self.type == APP_COMMAND:
            return 20 if self.data["type"] == 1 else 23  # CHAT_INPUT_COMMAND / CONTEXT_MENU_COMMAND
        return 0


# ---------------------------------------------------------------------------------------------- world


class _Snowflakes:
    """Snowflakes from the real clock (discord.py derives ``created_at`` from them), strictly increasing."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(self._last + 1, (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22)
        return self._last

    def next_on_shard(self, shard_id: int, shard_count: int) -> int:
        """The next snowflake that, as a guild id, Discord puts on this shard: ``(id >> 22) % count``
        is the shard, so its timestamp is moved up to the next millisecond that fits."""
        snowflake = self.next()
        late = (shard_id - (snowflake >> 22)) % shard_count
        if late:
            snowflake = self._last = ((snowflake >> 22) + late) << 22
        return snowflake


class Guild:
    """A guild: roles, members, its text channel, and the permission maths Discord does. Users are
    shared by every guild of the fake (a user may be a member of several); each guild starts with the
    bot, an owner (Administrator) and a plain member."""

    def __init__(
        self,
        ids: _Snowflakes,
        bot_id: int,
        users: dict[int, JSON],
        name: str = "Fake Guild",
        *,
        with_bot: bool = True,
        guild_id: int | None = None,
    ) -> None:
        self.ids, self.bot_id, self.name = ids, bot_id, name
        self.id = guild_id or ids.next()
        self.channel_id = ids.next()
        self.users = users
        self.roles: dict[int, JSON] = {}
        self.members: dict[int, JSON] = {}
        self.add_role("@everyone", EVERYONE_PERMISSIONS, role_id=self.id)
        if with_bot:
            tags = {"bot_id": str(bot_id)}
            bot_role = self.add_role("Retouch Test", BOT_PERMISSIONS, managed=True, tags=tags)
            self.add_member(self.add_user("Retouch Test", bot=True, user_id=bot_id), [bot_role])
        self.owner_id = self.add_member(self.add_user("owner"), [self.add_role("Admin", ADMINISTRATOR)])
        self.member_id = self.add_member(self.add_user("member"), [])

    def add_user(self, name: str, *, bot: bool = False, user_id: int | None = None) -> int:
        user_id = user_id or self.ids.next()
        self.users[user_id] = {
            "id": str(user_id),
            "username": name,
            "discriminator": "0",
            "global_name": None if bot else name.title(),
            **_defaults(nulls="avatar avatar_decoration_data", zeros="public_flags flags"),
            **({"bot": True} if bot else {}),
        }
        return user_id

    def add_role(self, name: str, permissions: int, *, role_id: int | None = None, **extra: Any) -> int:
        role_id = role_id or self.ids.next()
        self.roles[role_id] = {
            "id": str(role_id),
            "name": name,
            "permissions": str(permissions),
            "position": len(self.roles),
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            **_defaults(nulls="icon unicode_emoji", zeros="color flags", falses="hoist managed mentionable"),
            **extra,
        }
        return role_id

    def add_member(self, user_id: int, roles: list[int]) -> int:
        self.members[user_id] = {
            "user": self.users[user_id],
            "roles": [str(role) for role in roles],
            "joined_at": _now_iso(),
            **_defaults(
                "nick avatar banner premium_since communication_disabled_until", "flags", "deaf mute pending"
            ),
        }
        return user_id

    def permissions(self, user_id: int) -> int:
        if user_id == self.owner_id:
            return ALL_PERMISSIONS
        value = int(self.roles[self.id]["permissions"])
        for role_id in self.members[user_id]["roles"]:
            value |= int(self.roles[int(role_id)]["permissions"])
        return ALL_PERMISSIONS if value & ADMINISTRATOR else value

    def deny_everyone(self, permissions: int) -> None:
        """Take permissions from @everyone, as a server's settings do (e.g. ``USE_EXTERNAL_APPS``)."""
        everyone = self.roles[self.id]
        everyone["permissions"] = str(int(everyone["permissions"]) & ~permissions)

    def channel_payload(self) -> JSON:
        return {
            "id": str(self.channel_id),
            "type": 0,
            "guild_id": str(self.id),
            "name": "general",
            **_defaults("parent_id topic last_message_id", "position rate_limit_per_user flags", "nsfw"),
            "permission_overwrites": [],
        }

    def payload(self, *, members: bool) -> JSON:
        """GUILD_CREATE. All members only with the members intent, and then ``member_count ==
        len(members)`` so discord.py does not chunk; otherwise just the bot, as Discord does."""
        return {
            **_defaults(
                nulls="icon splash discovery_splash banner description afk_channel_id rules_channel_id "
                "public_updates_channel_id safety_alerts_channel_id vanity_url_code application_id",
                zeros="verification_level default_message_notifications explicit_content_filter mfa_level "
                "nsfw_level premium_tier premium_subscription_count system_channel_flags",
                falses="premium_progress_bar_enabled large unavailable",
                lists="features threads presences voice_states emojis stickers stage_instances "
                "guild_scheduled_events soundboard_sounds",
            ),
            "id": str(self.id),
            "name": self.name,
            "owner_id": str(self.owner_id),
            "afk_timeout": 300,
            "preferred_locale": "en-US",
            "system_channel_id": str(self.channel_id),
            "max_members": 500_000,
            "joined_at": self.members[self.bot_id]["joined_at"],
            "member_count": len(self.members),
            "roles": list(self.roles.values()),
            "members": list(self.members.values()) if members else [self.members[self.bot_id]],
            "channels": [self.channel_payload()],
        }


# ---------------------------------------------------------------------------------------------- gateway


class _Session:
    def __init__(self, intents: int, shard: list[int] | None) -> None:
        self.id, self.intents, self.shard, self.seq = uuid.uuid4().hex, intents, shard, 0

    @property
    def shard_id(self) -> int:
        """An unsharded connection is shard 0 of 1."""
        return self.shard[0] if self.shard else 0

    @property
    def shard_count(self) -> int:
        return self.shard[1] if self.shard else 1


class _Connection:
    """One gateway websocket. Frames go out through a queue drained by one task, so that events queued
    from synchronous code (``add_member``) keep their order relative to later awaited ones."""

    def __init__(self, ws: web.WebSocketResponse, on_sent: Callable[[JSON, float], None]) -> None:
        self.ws, self._on_sent = ws, on_sent
        self.session: _Session | None = None
        self.ready = False
        self._queue: asyncio.Queue[tuple[JSON, asyncio.Future[bool]]] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write_loop())

    def send(self, payload: JSON) -> asyncio.Future[bool]:
        """Queue a frame; the future says whether it was written."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((payload, future))
        return future

    def dispatch(self, event: str, data: JSON) -> asyncio.Future[bool]:
        assert self.session is not None
        self.session.seq += 1
        return self.send({"op": 0, "t": event, "s": self.session.seq, "d": data})

    async def _write_loop(self) -> None:
        while True:
            payload, future = await self._queue.get()
            written, data = False, json.dumps(payload)
            writing_at = time.monotonic()  # the bot may read it before send_str returns
            if not self.ws.closed:
                try:
                    await self.ws.send_str(data)
                    written = True
                except (ConnectionError, RuntimeError):
                    pass
            if written and payload["op"] != 11:
                self._on_sent(payload, writing_at)
            if not future.done():
                future.set_result(written)

    async def stop(self) -> None:
        self._writer.cancel()
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_result(False)


# ---------------------------------------------------------------------------------------------- the fake

Handler = Callable[[_Request], Awaitable[Any]]


class FakeDiscord:
    """The fake server plus the test-side API: inject interactions, inspect messages and requests."""

    def __init__(
        self,
        *,
        token: str = "test-token",
        deadline: float = 3.0,
        upload_limit: int = 10 * 1024 * 1024,
        shards: int = 1,
    ) -> None:
        self.token, self.deadline, self.upload_limit = token, deadline, upload_limit
        # What /gateway/bot recommends; events are routed by the count the bot identifies with.
        self.shard_count = shards
        self.token_lifetime = 900.0
        self.allowed_intents = PRIVILEGED_INTENTS  # privileged intents "enabled in the developer portal"
        self._ids = _Snowflakes()
        self.app_id = self.bot_user_id = self._ids.next()  # a bot's user id is its application id
        self._users: dict[int, JSON] = {}
        self._guild = Guild(
            self._ids, self.bot_user_id, self._users, guild_id=self._ids.next_on_shard(0, shards)
        )
        self.guilds: dict[int, Guild] = {self._guild.id: self._guild}
        self.guild_id, self.channel_id = self._guild.id, self._guild.channel_id
        self.owner_id, self.member_id = self._guild.owner_id, self._guild.member_id
        self.messages: dict[int, JSON] = {}  # created by the bot, current state; an edit replaces the dict
        self.user_messages: dict[int, JSON] = {}  # posted by test users with post_message()
        self.deleted_messages: dict[int, JSON] = {}  # last state of deleted messages
        self.requests: list[RecordedRequest] = []
        self.gateway_events_sent: list[JSON] = []  # every frame sent, except heartbeat ACKs
        self.identifies = 0
        self.identified_shards: list[tuple[int, int]] = []  # (shard id, shard count) of each IDENTIFY
        self.interactions: list[Interaction] = []
        self.internal_errors: list[Exception] = []  # fake bugs or unparseable payloads (answered 400)
        self._message_log: list[JSON] = []  # every version of every bot message, for waiters
        self._by_token: dict[str, Interaction] = {}
        self._by_id: dict[int, Interaction] = {}
        self._command_scopes: dict[int | None, dict[tuple[str, int], JSON]] = {}  # guild id or None
        self._command_ids: dict[tuple[int | None, str, int], int] = {}
        self._files: dict[int, _StoredFile] = {}
        self._external: dict[int, _StoredFile] = {}  # add_embed_image() pictures, by media proxy key
        self._dm_channels: dict[int, int] = {}  # user id -> DM channel id
        self.foreign_guilds: dict[int, Guild] = {}  # guilds without the bot, reached by user installs
        self._group_dms: dict[int, list[int]] = {}  # channel id -> its members' user ids
        self.user_installs: set[int] = set()  # users who added the app to their own account
        self._nonces: dict[str, int] = {}
        self._faults: list[_Fault] = []
        self._sessions: dict[str, _Session] = {}
        self._connections: set[_Connection] = set()
        self._shards: dict[int, _Connection] = {}  # shard id -> the connection events go to
        self._routing_count = shards  # the shard count of the latest IDENTIFY
        self._tick = asyncio.Event()
        self._cdn_secret = secrets.token_bytes(16)
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._routes = [(set(m.split("|")), re.compile(p), h) for m, p, h in self._route_table()]

    async def start(self) -> None:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._api)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/gateway/", self._gateway)
        app.router.add_get("/cdn/{kind:(?:media/)?attachments}/{channel}/{attachment}/{filename}", self._cdn)
        app.router.add_get(r"/cdn/external/{signature}/{key:\d+}/{tail:.+}", self._external_cdn)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0, backlog=BACKLOG).start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        for connection in list(self._connections):
            await connection.ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # -------------------------------------------------------------------------------------- waiting

    def _bump(self) -> None:
        self._tick.set()
        self._tick = asyncio.Event()

    async def _wait(self, check: Callable[[], T | None], timeout: float, what: str) -> T:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    tick = self._tick
                    if (result := check()) is not None:
                        return result
                    await tick.wait()
        except TimeoutError:
            raise TimeoutError(f"fake discord: timed out after {timeout} s waiting for {what}") from None

    async def _wait_message(self, predicate: Callable[[JSON], bool], timeout: float, what: str) -> JSON:
        """Current messages first, then every later version in order, so short-lived states are seen."""
        cursor = len(self._message_log)
        for message in list(self.messages.values()):
            if predicate(message):
                return message

        def check() -> JSON | None:
            nonlocal cursor
            while cursor < len(self._message_log):
                cursor += 1
                if predicate(self._message_log[cursor - 1]):
                    return self._message_log[cursor - 1]
            return None

        return await self._wait(check, timeout, what)

    async def wait_ready(self, timeout: float = 10, *, shards: Iterable[int] | None = None) -> None:
        """Until a bot has IDENTIFY'd (or RESUMEd) and got READY + GUILD_CREATE on the connection of each
        of ``shards`` (by default every shard of the count it identified with; shard 0 if unsharded).
        After killing a bot process, ``wait_disconnected()`` first, or this may see the dying connection."""
        wanted = None if shards is None else list(shards)

        def ready() -> bool | None:
            expected = range(self._routing_count) if wanted is None else wanted
            live = [self._shards.get(shard) for shard in expected]
            return True if all(connection and connection.ready for connection in live) else None

        await self._wait(ready, timeout, f"a bot to connect and identify (shards {wanted or 'all'})")

    async def wait_disconnected(self, timeout: float = 10, *, shards: Iterable[int] | None = None) -> None:
        """Until no connection (or none of ``shards``) is left."""
        wanted = None if shards is None else set(shards)
        await self._wait(
            lambda: True if not (self._shards.keys() & (wanted or self._shards.keys())) else None,
            timeout,
            "the bot to disconnect",
        )

    async def _wait_connected(self, timeout: float = 10) -> None:
        """Until some bot connection is ready (so its commands are synced), whichever its shard."""
        await self._wait(
            lambda: True if any(connection.ready for connection in self._shards.values()) else None,
            timeout,
            "a bot to connect and identify",
        )

    def _shard_of(self, guild_id: int | None) -> int:
        """Discord's routing: a guild's events go to shard ``(guild_id >> 22) % shard_count``; events
        with no guild (DMs) to shard 0."""
        return 0 if guild_id is None else (guild_id >> 22) % self._routing_count

    def _connection_for(self, guild_id: int | None) -> _Connection | None:
        return self._shards.get(self._shard_of(guild_id))

    async def wait_for_message(
        self, predicate: Callable[[JSON], bool] = lambda m: True, *, timeout: float = 10
    ) -> JSON:
        """The first bot message (existing or future, created or edited) satisfying ``predicate``."""
        return await self._wait_message(predicate, timeout, "a bot message matching the predicate")

    async def wait_for_request(
        self, method: str, path_regex: str, *, since: int = 0, timeout: float = 10
    ) -> RecordedRequest:
        """The first request from index ``since`` whose method matches ("*" for any) and whose path
        ``re.search``-es ``path_regex``."""
        pattern, method = re.compile(path_regex), method.upper()

        def check() -> RecordedRequest | None:
            matching = (
                r for r in self.requests[since:] if method in ("*", r.method) and pattern.search(r.path)
            )
            return next(matching, None)

        return await self._wait(check, timeout, f"{method} {path_regex}")

    def unanswered(self) -> list[Interaction]:
        """Interactions without a successful callback: the user saw "The application did not respond"."""
        return [interaction for interaction in self.interactions if not interaction.acknowledged]

    # -------------------------------------------------------------------------------------- world

    @property
    def commands(self) -> dict[str, JSON]:
        """Synced command definitions by name, from the latest PUT per scope (guild ones win)."""
        merged: dict[str, JSON] = {}
        for scope in sorted(self._command_scopes, key=lambda s: s is not None):
            merged.update({name: command for (name, _), command in self._command_scopes[scope].items()})
        return merged

    def add_guild(
        self, name: str = "Other Guild", *, with_bot: bool = True, shard: int | None = None
    ) -> Guild:
        """Another guild with the bot in it (GUILD_CREATE reaches a connected bot, as when it joins),
        with its own channel, owner and member; ``add_member(guild=...)`` adds more. With
        ``with_bot=False`` a guild that never installed the app: the bot sees nothing of it (no events,
        its channel unknown to REST) and its members reach the app only through their own install.
        ``shard`` picks its id so that it lands on that shard of ``shards`` (the fake's count)."""
        guild_id = None if shard is None else self._ids.next_on_shard(shard, self.shard_count)
        guild = Guild(self._ids, self.bot_user_id, self._users, name, with_bot=with_bot, guild_id=guild_id)
        if not with_bot:
            self.foreign_guilds[guild.id] = guild
            return guild
        self.guilds[guild.id] = guild
        connection = self._connection_for(guild.id)
        if connection is not None and connection.session is not None:
            members = bool(connection.session.intents & INTENT_MEMBERS)
            self._dispatch_nowait("GUILD_CREATE", guild.payload(members=members), INTENT_GUILDS, guild.id)
        return guild

    def shard_of(self, guild: Guild | int | None) -> int:
        """The shard this guild's events go to (0 for DMs), under the count the bot identified with."""
        return self._shard_of(guild.id if isinstance(guild, Guild) else guild)

    def guild_of(self, channel_id: int) -> Guild | None:
        """The guild with the bot whose text channel this is; None for a DM (or a place without the bot)."""
        return next((guild for guild in self.guilds.values() if guild.channel_id == channel_id), None)

    def _foreign_guild_of(self, channel_id: int) -> Guild | None:
        return next((g for g in self.foreign_guilds.values() if g.channel_id == channel_id), None)

    def install_for_user(self, user: int | None = None) -> None:
        """The user adds the app to their own account (a user install)."""
        self.user_installs.add(user if user is not None else self.member_id)

    def add_group_dm(self, *users: int) -> int:
        """A group DM between ``users`` (the bot is never in one); returns its channel id."""
        assert len(users) >= 2 and all(user in self._users for user in users), "a group DM needs known users"
        channel_id = self._ids.next()
        self._group_dms[channel_id] = list(users)
        return channel_id

    def _group_dm_payload(self, channel_id: int) -> JSON:
        members = self._group_dms[channel_id]
        return {
            "id": str(channel_id),
            "type": 3,
            "owner_id": str(members[0]),
            "recipients": [self._users[user] for user in members],
            **_defaults(nulls="name icon last_message_id", zeros="flags"),
        }

    def add_role(self, name: str, permissions: int = 0, *, guild: Guild | None = None) -> int:
        guild = guild or self._guild
        role_id = guild.add_role(name, permissions)
        if guild.id in self.guilds:  # the bot hears only of its own servers
            event = {"guild_id": str(guild.id), "role": guild.roles[role_id]}
            self._dispatch_nowait("GUILD_ROLE_CREATE", event, INTENT_GUILDS, guild.id)
        return role_id

    def add_member(
        self,
        name: str,
        *,
        permissions: int = 0,
        roles: list[int] | None = None,
        guild: Guild | None = None,
        user_id: int | None = None,
    ) -> int:
        """A new human member (or, with ``user_id``, an existing user joining another guild).
        ``permissions`` become a role of their own, so discord.py's role-based ``guild_permissions``
        agree with the interaction's ``permissions``. GUILD_MEMBER_ADD reaches the bot only with the
        members intent, as on Discord."""
        guild = guild or self._guild
        own = [self.add_role(f"{name} perms", permissions, guild=guild)] if permissions else []
        user_id = guild.add_member(user_id or guild.add_user(name), [*(roles or []), *own])
        if guild.id in self.guilds:
            event = {"guild_id": str(guild.id), **guild.members[user_id]}
            self._dispatch_nowait("GUILD_MEMBER_ADD", event, INTENT_MEMBERS, guild.id)
        return user_id

    def add_cdn_file(self, data: bytes, filename: str, content_type: str | None = "auto") -> JSON:
        """Host bytes on the fake CDN as if a user had uploaded them; returns the attachment payload."""
        attachment = self._new_attachment(self.channel_id, data, filename, content_type)
        self._files[int(attachment["id"])] = _StoredFile(data, attachment.get("content_type", ""))
        return attachment

    def remove_cdn_file(self, attachment: JSON) -> None:
        """The file is gone from the CDN (its message was deleted): its URL now answers 404."""
        self._files.pop(int(attachment["id"]), None)

    def file_bytes(self, attachment: JSON) -> bytes:
        return self._files[int(attachment["id"])].data

    def add_embed_image(self, data: bytes, filename: str) -> JSON:
        """The embed Discord adds to a message that links an image; pass it to ``post_message(embeds=)``.
        ``url`` is the link as posted, on ``example.invalid`` (RFC 2606: it never resolves), so a bot
        that fetches it instead of Discord's media proxy fails as it would in production for most
        hosts; ``thumbnail.proxy_url`` serves the bytes from this fake, laid out like Discord's
        ``images-ext`` proxy (``/external/<signature>/https/<host>/<path>``). Discord reads the
        picture's width and height, so Pillow must be able to open ``data``."""
        with Image.open(io.BytesIO(data)) as image:
            (width, height), image_format = image.size, image.format
        filename = re.sub(r"[^A-Za-z0-9._-]", "_", filename) or "image"
        key = self._ids.next()
        tail = f"{key}/https/example.invalid/{filename}"
        content_type = Image.MIME.get(image_format or "") or "application/octet-stream"
        self._external[key] = _StoredFile(data, content_type)
        url = f"https://example.invalid/{filename}"
        proxy_url = f"{self.base_url}/cdn/external/{self._external_mac(tail)}/{tail}"
        thumbnail = {"url": url, "proxy_url": proxy_url, "width": width, "height": height}
        return {"type": "image", "url": url, "thumbnail": thumbnail}

    def dm_channel_id(self, user: int | None = None) -> int:
        """The id of the DM channel between the bot and ``user`` (the member by default), the same one
        ``create_dm()`` returns to the bot and ``slash(dm=True)`` is used from."""
        user_id = user if user is not None else self.member_id
        assert user_id in self._users and user_id != self.bot_user_id, f"no user {user_id} to DM"
        return self._dm_channels.setdefault(user_id, self._ids.next())

    def _dm_recipient(self, channel_id: int) -> int | None:
        return next((user for user, dm in self._dm_channels.items() if dm == channel_id), None)

    def _new_attachment(self, channel_id: int, data: bytes, filename: str, content_type: str | None) -> JSON:
        attachment_id = self._ids.next()
        filename = re.sub(r"[^A-Za-z0-9._-]", "_", filename) or "unknown"  # Discord renames like this
        path = f"attachments/{channel_id}/{attachment_id}/{filename}"
        urls = {"url": self._signed(f"/cdn/{path}"), "proxy_url": self._signed(f"/cdn/media/{path}")}
        info = describe_file(data, filename, content_type)
        return {"id": str(attachment_id), "filename": filename, "size": len(data), **urls, **info}

    def _cdn_mac(self, path: str, query: str) -> str:
        canonical = f"{path.replace('/cdn/media/', '/cdn/', 1)}?{query}"
        return hmac.new(self._cdn_secret, canonical.encode(), hashlib.sha256).hexdigest()

    def _signed(self, path: str) -> str:
        """A URL with ``ex``/``is``/``hm`` like Discord's: a bot that drops the query gets a 404."""
        issued = int(time.time())
        query = f"ex={issued + 86_400:08x}&is={issued:08x}"
        return f"{self.base_url}{path}?{query}&hm={self._cdn_mac(path, query)}&"

    async def _cdn(self, request: web.Request) -> web.Response:
        query = f"ex={request.query.get('ex', '')}&is={request.query.get('is', '')}"
        stored = self._files.get(int(request.match_info["attachment"]))
        expiry = int(request.query.get("ex") or "0", 16)
        signed = hmac.compare_digest(self._cdn_mac(request.path, query), request.query.get("hm", ""))
        if stored is None or expiry < time.time() or not signed:
            return web.Response(status=404, text="This content is no longer available.")
        return web.Response(body=stored.data, content_type=stored.content_type.split(";")[0] or None)

    def _external_mac(self, tail: str) -> str:
        return hmac.new(self._cdn_secret, f"external/{tail}".encode(), hashlib.sha256).hexdigest()[:43]

    async def _external_cdn(self, request: web.Request) -> web.Response:
        """The media proxy's copy of an ``add_embed_image()`` picture; a tampered path is a 404."""
        tail = f"{request.match_info['key']}/{request.match_info['tail']}"
        stored = self._external.get(int(request.match_info["key"]))
        if stored is None or not hmac.compare_digest(
            self._external_mac(tail), request.match_info["signature"]
        ):
            return web.Response(status=404)
        return web.Response(body=stored.data, content_type=stored.content_type)

    def _message_any(self, message_id: int) -> JSON:
        for store in (self.messages, self.user_messages, self.deleted_messages):
            if message_id in store:
                return store[message_id]
        raise KeyError(message_id)

    def _current_message(self, message: JSON | int) -> JSON:
        message_id = int(message["id"]) if isinstance(message, dict) else message
        exists = message_id in self.messages or message_id in self.user_messages
        assert exists, f"fake discord: message {message_id} does not exist (deleted?)"
        return self._message_any(message_id)

    def _channel(self, channel_id: int) -> JSON | None:
        if (guild := self.guild_of(channel_id)) is not None:
            return guild.channel_payload()
        if (user_id := self._dm_recipient(channel_id)) is not None:
            recipients = [self._users[user_id]]
            return {
                "id": str(channel_id),
                "type": 1,
                "last_message_id": None,
                "flags": 0,
                "recipients": recipients,
            }
        return None

    # -------------------------------------------------------------------------------------- faults

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        body: JSON | None = None,
        *,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """The next ``times`` requests whose method matches ("*" for any) and whose path (no query, no
        /api/v10) ``re.search``-es ``path_regex`` get this answer instead of being handled."""
        body = body if body is not None else {"code": 0, "message": f"fake discord: injected {status}"}
        self._faults.append(
            _Fault(method.upper(), re.compile(path_regex), status, body, headers or {}, times)
        )

    def rate_limit_next(
        self, method: str, path_regex: str, retry_after: float = 0.2, *, times: int = 1
    ) -> None:
        """A 429 discord.py honours: a JSON body and a ``Via`` header (without one it assumes a
        Cloudflare ban and raises at once)."""
        headers = {
            "Retry-After": str(math.ceil(retry_after)),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
            "X-RateLimit-Reset-After": f"{retry_after:.3f}",
            "X-RateLimit-Bucket": hashlib.sha256(path_regex.encode()).hexdigest()[:32],
            "X-RateLimit-Scope": "user",
            "Via": "1.1 google",
        }
        body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
        self.fail_next(method, path_regex, 429, body, headers=headers, times=times)

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.remaining > 0 and fault.method in (method, "*") and fault.pattern.search(path):
                fault.remaining -= 1
                return fault
        return None

    # -------------------------------------------------------------------------------------- REST plumbing

    def _route_table(self) -> list[tuple[str, str, Handler]]:
        channel, webhook = r"/channels/(?P<channel>\d+)", r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)"
        return [
            ("GET", r"/users/@me", self._get_me),
            ("POST", r"/users/@me/channels", self._create_dm),
            ("GET", r"/users/(?P<user>\d+)", self._get_user),
            ("GET", r"/oauth2/applications/@me", self._get_application),
            ("GET", r"/gateway(?P<bot>/bot)?", self._get_gateway),
            ("GET|PUT", r"/applications/(?P<app>\d+)(?:/guilds/(?P<guild>\d+))?/commands", self._commands),
            ("POST", r"/interactions/(?P<id>\d+)/(?P<token>[^/]+)/callback", self._callback),
            ("POST", webhook, self._followup),
            ("GET|PATCH|DELETE", webhook + r"/messages/(?P<message>@original|\d+)", self._webhook_message),
            ("GET", channel, self._get_channel),
            ("POST", channel + r"/typing", self._typing),
            ("GET|POST", channel + r"/messages", self._channel_messages),
            ("GET|PATCH|DELETE", channel + r"/messages/(?P<message>\d+)", self._channel_message),
            ("GET", r"/guilds/(?P<guild>\d+)(?P<part>|/roles|/channels)", self._get_guild),
            ("GET", r"/guilds/(?P<guild>\d+)/members/(?P<user>\d+)", self._get_member),
        ]

    async def _api(self, request: web.Request) -> web.Response:
        """Every REST request: parse, authenticate, inject faults, route, record."""
        arrived, path, method = time.monotonic(), request.path.removeprefix(API_PREFIX), request.method
        payload: Any = None
        files: list[JSON] = []
        try:
            payload, files = await self._read_body(request)
            exempt = path.startswith(("/interactions/", "/webhooks/")) or path == "/gateway"  # token in URL
            if not exempt and request.headers.get("Authorization") != f"Bot {self.token}":
                raise DiscordError(401, 0, "401: Unauthorized")
            if fault := self._take_fault(method, path):
                response = json_response(fault.body, fault.status, fault.headers)
            else:
                response = await self._route(_Request(method, path, dict(request.query), payload, files))
        except DiscordError as error:
            response = json_response(error.body(), error.status)
        except Exception as error:  # answered 400: a 500 would make discord.py retry for ~25 s
            self.internal_errors.append(error)
            response = json_response({"code": 0, "message": f"fake discord internal error: {error!r}"}, 400)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        query = dict(request.query)
        self.requests.append(
            RecordedRequest(method, path, query, payload, files, response.status, arrived, headers)
        )
        self._bump()
        return response

    async def _route(self, request: _Request) -> web.Response:
        for methods, pattern, handler in self._routes:
            if (match := pattern.fullmatch(request.path)) and request.method in methods:
                request.params = {k: v for k, v in match.groupdict().items() if v is not None}
                result = await handler(request)
                if isinstance(result, web.Response):
                    return result
                return web.Response(status=204) if result is None else json_response(result)
        raise DiscordError(404, 0, f"fake discord: no route {request.method} {request.path}")

    @staticmethod
    async def _read_body(request: web.Request) -> tuple[Any, list[JSON]]:
        """JSON, or multipart with ``payload_json`` and ``files[n]`` parts as discord.py sends them."""
        if not request.content_type.startswith("multipart/"):
            raw = await request.read()
            try:
                return (json.loads(raw) if raw else None), []
            except ValueError:
                raise DiscordError(400, 50109, "The request body contains invalid JSON.") from None
        payload: Any = None
        files: list[JSON] = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if isinstance(part, BodyPartReader):
                data = bytes(await part.read())
                if part.name == "payload_json":
                    payload = json.loads(data)
                elif part.name and part.name.startswith("files["):
                    content_type = part.headers.get("Content-Type", "application/octet-stream")
                    files.append(
                        {
                            "name": part.name,
                            "filename": part.filename,
                            "content_type": content_type,
                            "data": data,
                        }
                    )
        return payload, files

    # -------------------------------------------------------------------------------------- REST: login, commands

    def _bot_user(self) -> JSON:
        return {**self._users[self.bot_user_id], "verified": True, "mfa_enabled": False}

    async def _get_me(self, request: _Request) -> JSON:
        return {**self._bot_user(), "email": None}

    async def _get_user(self, request: _Request) -> JSON:
        if (user := self._users.get(int(request.params["user"]))) is None:
            raise _unknown(404, 10013, "User")
        return user

    async def _get_application(self, request: _Request) -> JSON:
        """Everything ``AppInfo`` requires; ``interactions_endpoint_url`` null or discord.py warns."""
        return {
            "id": str(self.app_id),
            "name": "Retouch Test",
            "description": "",
            "summary": "",
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": self._users[self.owner_id],
            "verify_key": "0" * 64,
            "flags": 1 << 23,  # GATEWAY_MESSAGE_CONTENT_LIMITED
            "redirect_uris": [],
            "approximate_guild_count": 1,
            "bot": self._users[self.bot_user_id],
            **_defaults(nulls="icon team interactions_endpoint_url"),
        }

    async def _get_gateway(self, request: _Request) -> JSON:
        if "bot" not in request.params:
            return {"url": self.gateway_url}
        limit = {"total": 1000, "remaining": 999, "reset_after": 86_400_000, "max_concurrency": 1}
        return {"url": self.gateway_url, "shards": self.shard_count, "session_start_limit": limit}

    async def _commands(self, request: _Request) -> list[JSON]:
        """Bulk overwrite (what ``tree.sync`` does) and list, global or for the fake guild."""
        guild = int(request.params["guild"]) if "guild" in request.params else None
        if int(request.params["app"]) != self.app_id or (guild is not None and guild not in self.guilds):
            raise DiscordError(403, 50001, "Missing Access")
        if request.method == "PUT":
            definitions = request.json if isinstance(request.json, list) else []
            validate_commands(definitions)
            scope = self._command_scopes[guild] = {}
            for command in definitions:
                key = (command["name"], command.get("type", 1))
                stored = {
                    **_defaults(nulls="default_member_permissions contexts", falses="nsfw"),
                    "type": 1,
                    "description": "",
                    "integration_types": [0],
                    **copy.deepcopy(command),
                    "id": str(self._command_ids.setdefault((guild, *key), self._ids.next())),  # stable ids
                    "application_id": str(self.app_id),
                    "version": str(self._ids.next()),
                }
                scope[key] = stored | ({"guild_id": str(guild)} if guild else {})
        return list(self._command_scopes.get(guild, {}).values())

    # -------------------------------------------------------------------------------------- REST: interactions

    async def _callback(self, request: _Request) -> JSON:
        interaction = self._by_id.get(int(request.params["id"]))
        if interaction is None or not hmac.compare_digest(interaction.token, request.params["token"]):
            raise _unknown(404, 10062, "interaction")
        kind, data = request.payload.get("type"), request.payload.get("data")
        record: JSON = {"type": kind, "data": data, "files": request.files}
        try:
            result = await self._answer(interaction, kind, data or {}, request.files)
        except DiscordError as error:
            interaction.responses.append(record | {"status": error.status})
            raise
        finally:
            self._bump()
        interaction.responses.append(record | {"status": 200})
        return result

    async def _answer(self, interaction: Interaction, kind: Any, data: JSON, files: list[JSON]) -> JSON:
        """One callback, with Discord's rules: one acknowledgement, the deadline, types valid for the
        interaction. The reply is the JSON discord.py asks for with ``?with_response=1``, never a 204."""
        if interaction.acknowledged:
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        if interaction.expired or time.monotonic() - interaction.sent_at > self.deadline:
            interaction.expired = True
            raise _unknown(404, 10062, "interaction")
        allowed = CALLBACK_TYPES[interaction.type] - ({7} if interaction.message_id is None else set())
        if kind not in allowed:
            errors = _FormErrors()
            errors.add(("type",), "INTERACTION_RESPONSE_TYPE_INVALID", f"Type {kind} is not valid here")
            errors.raise_if_any()
        interaction.acknowledged = True  # claimed before any await: a concurrent second callback gets 40060
        try:
            message = await self._acknowledge(interaction, kind, data, files)
        except DiscordError:
            interaction.acknowledged = False  # an invalid answer acknowledges nothing; the bot may retry
            raise
        meta: JSON = {"id": str(interaction.id), "type": interaction.type}
        if message is None:
            return {"interaction": meta, "resource": {"type": kind}}
        interaction.original_id = int(message["id"])
        meta["response_message_id"] = message["id"]
        meta["response_message_loading"] = bool(message["flags"] & LOADING)
        meta["response_message_ephemeral"] = bool(message["flags"] & EPHEMERAL)
        resource = {"type": kind, **({"message": message} if kind != 5 else {})}
        return {"interaction": meta, "resource": resource}

    async def _acknowledge(
        self, interaction: Interaction, kind: int, data: JSON, files: list[JSON]
    ) -> JSON | None:
        """What each callback type does; returns the message it created or edited, if any."""
        message: JSON | None = None
        if kind == 4:
            message = await self._create_message(
                interaction.channel_id, data, files, interaction=interaction, prefix=("data",)
            )
        elif kind == 5:
            loading = {"content": "", "flags": LOADING | (int(data.get("flags") or 0) & EPHEMERAL)}
            message = await self._create_message(
                interaction.channel_id,
                loading,
                [],
                interaction=interaction,
                validate=False,
                flags_mask=LOADING | EPHEMERAL,
            )
        elif kind in (6, 7):  # about the clicked message: @original now means that message
            interaction.original_id = interaction.message_id
            if kind == 7 and interaction.message_id is not None:
                message = await self._edit_message(interaction.message_id, data, files, prefix=("data",))
        elif kind == 8:
            errors = _FormErrors(("data",))
            errors.at_most(("choices",), data.get("choices"), 25)
            errors.raise_if_any()
        elif kind == 9:
            interaction.modal = validate_modal(data)
        interaction.loading = kind == 5
        return message

    def _webhook_interaction(self, request: _Request) -> Interaction:
        """The interaction behind a webhook token: acknowledged, and not older than ``token_lifetime``."""
        interaction = self._by_token.get(request.params["token"])
        if interaction is None or int(request.params["app"]) != self.app_id or not interaction.acknowledged:
            raise _unknown(404, 10015, "Webhook")
        if time.monotonic() - interaction.sent_at > self.token_lifetime:
            raise _unknown(404, 10015, "Webhook")
        return interaction

    async def _followup(self, request: _Request) -> JSON | None:
        """A followup. The first one after a type-5 defer edits the thinking message instead and keeps
        the defer's ephemerality whatever this request asks for (pitfall 12)."""
        interaction = self._webhook_interaction(request)
        original = interaction.original()
        if interaction.loading and original is not None:
            payload = {**request.payload, "flags": int(request.payload.get("flags") or 0)}
            message = await self._edit_message(int(original["id"]), payload, request.files)
        else:
            message = await self._create_message(
                interaction.channel_id, request.payload, request.files, interaction=interaction, followup=True
            )
        interaction._followup_ids.append(int(message["id"]))
        self._bump()
        return message if request.query.get("wait", "").lower() in ("1", "true") else None

    async def _webhook_message(self, request: _Request) -> JSON | None:
        interaction = self._webhook_interaction(request)
        raw = request.params["message"]
        message_id = interaction.original_id if raw == "@original" else int(raw)
        own = message_id == interaction.original_id or message_id in interaction._followup_ids
        if message_id is None or message_id not in self.messages or not own:
            raise _unknown(404, 10008, "Message")
        if request.method == "GET":
            return self.messages[message_id]
        if request.method == "DELETE":
            await self._delete_message(message_id)
            return None
        return await self._edit_message(message_id, request.payload, request.files)

    # -------------------------------------------------------------------------------------- REST: channels, guild

    def _channel_id(self, request: _Request) -> int:
        if self._channel(channel_id := int(request.params["channel"])) is None:
            raise _unknown(404, 10003, "Channel")
        return channel_id

    async def _get_channel(self, request: _Request) -> JSON | None:
        return self._channel(self._channel_id(request))

    async def _typing(self, request: _Request) -> None:
        self._channel_id(request)

    async def _create_dm(self, request: _Request) -> JSON | None:
        user_id = int(request.payload.get("recipient_id") or 0)
        if user_id not in self._users or user_id == self.bot_user_id:
            raise _unknown(404, 10013, "User")
        return self._channel(self.dm_channel_id(user_id))

    def _visible_messages(self) -> Iterator[JSON]:
        """What channel routes see: ephemeral messages exist only for their interaction's webhook."""
        for message in itertools.chain(self.messages.values(), self.user_messages.values()):
            if not message["flags"] & EPHEMERAL:
                yield message

    async def _channel_messages(self, request: _Request) -> Any:
        channel_id = self._channel_id(request)
        if request.method == "GET":
            found = [m for m in self._visible_messages() if int(m["channel_id"]) == channel_id]
            return sorted(found, key=lambda m: -int(m["id"]))[: int(request.query.get("limit", 50))]
        nonce = request.payload.get("nonce")
        if request.payload.get("enforce_nonce") and self._nonces.get(str(nonce)) in self.messages:
            return self.messages[self._nonces[str(nonce)]]  # a retried send returns the first message
        message = await self._create_message(
            channel_id, request.payload, request.files, flags_mask=CHANNEL_FLAGS
        )
        if nonce is not None:
            self._nonces[str(nonce)] = int(message["id"])
        return message

    async def _channel_message(self, request: _Request) -> JSON | None:
        channel_id, message_id = self._channel_id(request), int(request.params["message"])
        message = next((m for m in self._visible_messages() if int(m["id"]) == message_id), None)
        if message is None or int(message["channel_id"]) != channel_id:
            raise _unknown(404, 10008, "Message")
        mine = int(message["author"]["id"]) == self.bot_user_id
        if request.method == "GET":
            return message
        if request.method == "PATCH":
            if not mine:
                raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
            return await self._edit_message(message_id, request.payload, request.files)
        guild = self.guild_of(channel_id)
        if not mine and guild is None:  # nobody deletes the other side's DMs
            raise DiscordError(403, 50003, "Cannot execute action on a DM channel")
        if not mine and guild is not None and not guild.permissions(self.bot_user_id) & MANAGE_MESSAGES:
            raise DiscordError(403, 50013, "Missing Permissions")
        await self._delete_message(message_id)
        return None

    def _guild_param(self, request: _Request) -> Guild:
        if (guild := self.guilds.get(int(request.params["guild"]))) is None:
            raise _unknown(404, 10004, "Guild")
        return guild

    async def _get_guild(self, request: _Request) -> Any:
        payload = self._guild_param(request).payload(members=False)
        if part := request.params["part"].strip("/"):
            return payload[part]
        return {k: v for k, v in payload.items() if k not in ("members", "channels", "threads", "presences")}

    async def _get_member(self, request: _Request) -> JSON:
        if (member := self._guild_param(request).members.get(int(request.params["user"]))) is None:
            raise _unknown(404, 10007, "Member")
        return member

    # -------------------------------------------------------------------------------------- messages

    async def _create_message(
        self,
        channel_id: int,
        payload: JSON,
        files: list[JSON],
        *,
        interaction: Interaction | None = None,
        followup: bool = False,
        prefix: Path = (),
        validate: bool = True,
        flags_mask: int = SETTABLE_FLAGS,
    ) -> JSON:
        message_id = self._ids.next()
        base: JSON = {
            "id": str(message_id),
            "channel_id": str(channel_id),
            "author": self._users[self.bot_user_id],
            "content": "",
            "timestamp": _snowflake_time(message_id),
            "tts": bool(payload.get("tts")),
            "type": 0,
            **_defaults("edited_timestamp", "flags", "mention_everyone pinned"),
            **_defaults(lists="mentions mention_roles attachments embeds components"),
        }
        if interaction is not None:
            metadata = interaction.metadata()
            if followup and interaction.original_id is not None:
                metadata["original_response_message_id"] = str(interaction.original_id)
            base |= {"type": interaction.message_type(), "interaction_metadata": metadata}
            base |= {"webhook_id": str(self.app_id), "application_id": str(self.app_id)}
            if interaction.type == APP_COMMAND:  # the deprecated field, still sent
                user = self._users[interaction.user_id]
                base["interaction"] = {
                    "id": str(interaction.id),
                    "type": 2,
                    "name": interaction.data["name"],
                    "user": user,
                }
        if (reference := payload.get("message_reference")) and reference.get("message_id"):
            base |= self._reply_fields(int(reference["message_id"]), channel_id, reference)
        payload = {**payload, "flags": int(payload.get("flags") or 0) & flags_mask}
        message = self._compose(base, payload, files, prefix=prefix, validate=validate)
        self.messages[message_id] = message
        self._message_log.append(message)
        if not message["flags"] & EPHEMERAL:
            await self._dispatch_message("MESSAGE_CREATE", message)
        self._bump()
        return message

    def _reply_fields(self, referenced_id: int, channel_id: int, reference: JSON) -> JSON:
        fields: JSON = {"type": 19, "message_reference": {"type": 0, "message_id": str(referenced_id)}}
        fields["message_reference"]["channel_id"] = str(channel_id)
        if (guild := self.guild_of(channel_id)) is not None:  # no guild_id for a reply in a DM
            fields["message_reference"]["guild_id"] = str(guild.id)
        try:
            referenced = self._message_any(referenced_id)
        except KeyError:
            if reference.get("fail_if_not_exists", True):
                errors = _FormErrors()
                errors.add(("message_reference",), "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
                errors.raise_if_any()
            return fields
        return fields | {
            "referenced_message": {k: v for k, v in referenced.items() if k != "referenced_message"}
        }

    async def _edit_message(
        self, message_id: int, payload: JSON, files: list[JSON], *, prefix: Path = ()
    ) -> JSON:
        """PATCH semantics: given fields replace, ``attachments`` lists what survives, the thinking state
        ends, and neither ephemerality nor Components V2 can be taken back."""
        old = self.messages[message_id]
        sticky = old["flags"] & (EPHEMERAL | COMPONENTS_V2)
        if "flags" in payload:
            payload = {
                **payload,
                "flags": sticky | (int(payload["flags"] or 0) & SETTABLE_FLAGS & ~EPHEMERAL),
            }
        else:
            payload = {**payload, "flags": old["flags"] & ~LOADING}
        message = self._compose(old, payload, files, prefix=prefix, validate=True)
        message["edited_timestamp"] = _now_iso()
        self.messages[message_id] = message
        self._message_log.append(message)
        for interaction in self.interactions:
            if interaction.original_id == message_id:
                interaction.loading = False
        if not message["flags"] & EPHEMERAL:
            await self._dispatch_message("MESSAGE_UPDATE", message)
        self._bump()
        return message

    async def _delete_message(self, message_id: int) -> None:
        message = self.messages.pop(message_id, None) or self.user_messages.pop(message_id)
        self.deleted_messages[message_id] = message
        for interaction in self.interactions:
            if interaction.original_id == message_id:
                interaction.loading = False  # a followup after deleting @original is a new message
        if not message["flags"] & EPHEMERAL:
            await self._dispatch_message(
                "MESSAGE_DELETE", {"id": str(message_id), "channel_id": message["channel_id"]}
            )
        self._bump()

    def _compose(self, base: JSON, payload: JSON, files: list[JSON], *, prefix: Path, validate: bool) -> JSON:
        """``base`` with a create/edit payload and its ``files[n]`` applied, validated in Discord's order
        (413 for a big file, then 50035 limits, then 50006 empty); new files are stored last."""
        if any(len(upload["data"]) > self.upload_limit for upload in files):
            raise DiscordError(413, 40005, "Request entity too large")
        message = copy.deepcopy(base)
        if "content" in payload:
            message["content"] = payload["content"] or ""
        if "embeds" in payload:
            message["embeds"] = [{"type": "rich", **embed} for embed in payload["embeds"] or []]
        if "components" in payload:
            message["components"] = copy.deepcopy(payload["components"] or [])
            number_components(message["components"])
        message["flags"] = payload["flags"]
        uploads = {int(re.sub(r"\D", "", upload["name"]) or -1): upload for upload in files}
        pending: list[tuple[JSON, bytes]] = []

        def attach(index: int, spec: JSON) -> JSON:
            upload = uploads.pop(index)
            filename = spec.get("filename") or upload["filename"] or "file"
            attachment = self._new_attachment(int(message["channel_id"]), upload["data"], filename, "auto")
            attachment |= {"description": spec["description"]} if spec.get("description") else {}
            pending.append((attachment, upload["data"]))
            return attachment

        if "attachments" in payload:  # existing ones listed by id survive, files[n] are listed by n
            existing = {attachment["id"]: attachment for attachment in message["attachments"]}
            kept = []
            for spec in payload["attachments"] or []:
                if (key := str(spec.get("id"))) in existing:
                    kept.append(existing[key])
                elif key.isdigit() and int(key) in uploads:
                    kept.append(attach(int(key), spec))
            message["attachments"] = kept
        message["attachments"] += [attach(index, {}) for index in sorted(uploads)]
        self._resolve_attachment_refs(message)
        self._set_mentions(message, payload.get("allowed_mentions"))
        if validate:
            errors = _FormErrors(prefix)
            validate_message(message, errors, len(files))
            errors.raise_if_any()
            fields = ("content", "embeds", "attachments", "components")
            if (
                not any(message[f] for f in fields)
                and not payload.get("sticker_ids")
                and not payload.get("poll")
            ):
                raise DiscordError(400, 50006, "Cannot send an empty message")
        for attachment, data in pending:
            self._files[int(attachment["id"])] = _StoredFile(data, attachment.get("content_type", ""))
        return message

    @staticmethod
    def _resolve_attachment_refs(message: JSON) -> None:
        """``attachment://name`` in embeds and V2 media becomes that attachment's CDN URL, as on Discord."""
        by_name = {attachment["filename"]: attachment for attachment in message["attachments"]}
        keys = ("url", "proxy_url", "width", "height", "content_type")

        def visit(node: Any) -> None:
            if isinstance(node, list):
                for item in node:
                    visit(item)
            elif isinstance(node, dict):
                url = node.get("url")
                if isinstance(url, str) and (found := by_name.get(url.removeprefix("attachment://"))):
                    node |= {key: found[key] for key in keys if key in found} | {"attachment_id": found["id"]}
                for value in node.values():
                    visit(value)

        visit([message["embeds"], message["components"]])

    def _set_mentions(self, message: JSON, allowed: JSON | None) -> None:
        """Who the message pings, as Discord decides it: the content's mentions that ``allowed_mentions``
        lets through (without it, everything parses), so tests see exactly who was notified."""
        content = message["content"]
        rules = {"parse": ["users", "roles", "everyone"]} if allowed is None else allowed
        parse = set(rules.get("parse") or [])

        def let_through(kind: str, named: set[int], known: Mapping[int, Any]) -> list[int]:
            listed = named if kind in parse else {int(snowflake) for snowflake in rules.get(kind) or []}
            return sorted(named & listed & set(known))

        users = let_through("users", {int(user) for user in re.findall(r"<@!?(\d+)>", content)}, self._users)
        message["mentions"] = [self._users[user] for user in users]
        known_roles = {role: True for guild in self.guilds.values() for role in guild.roles}
        roles = let_through("roles", {int(role) for role in re.findall(r"<@&(\d+)>", content)}, known_roles)
        message["mention_roles"] = [str(role) for role in roles]
        message["mention_everyone"] = (
            "everyone" in parse and re.search(r"@(everyone|here)", content) is not None
        )

    # -------------------------------------------------------------------------------------- gateway

    def _sent(self, payload: JSON, writing_at: float) -> None:
        """A frame was written: an interaction's clock starts when its writing did, as the bot cannot
        answer it sooner. Timed when queued, a burst's last event was charged the writing of all
        the frames before it."""
        self.gateway_events_sent.append(payload)
        if payload.get("t") == "INTERACTION_CREATE" and (found := self._by_id.get(int(payload["d"]["id"]))):
            found.sent_at = writing_at

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        connection = _Connection(ws, self._sent)
        self._connections.add(connection)
        connection.send({"op": 10, "d": {"heartbeat_interval": 41_250}})
        try:
            async for frame in ws:
                try:
                    payload = json.loads(frame.data) if frame.type is WSMsgType.TEXT else {}
                    op, data = int(payload["op"]), payload.get("d")
                except (ValueError, KeyError, TypeError):
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
                await self._on_gateway_frame(connection, op, data)
        finally:
            self._connections.discard(connection)
            self._forget(connection)
            await connection.stop()
            self._bump()
        return ws

    async def _on_gateway_frame(self, connection: _Connection, op: int, data: Any) -> None:
        if op == 1:  # heartbeat
            connection.send({"op": 11})
        elif op == 2:
            await self._identify(connection, data)
        elif op == 6:  # resume: any session this fake issued, keeping its sequence
            session = self._sessions.get(data.get("session_id", ""))
            if session is None or data.get("token") != self.token:
                connection.send({"op": 9, "d": False})
                return
            connection.session = session
            self._shards[session.shard_id] = connection
            await connection.dispatch("RESUMED", {})
            connection.ready = True
            self._bump()
        elif op == 8:  # request guild members
            wanted = {int(user) for user in data.get("user_ids") or []}
            query = (data.get("query") or "").lower()
            guild = self.guilds.get(int(data.get("guild_id") or self.guild_id), self._guild)
            members = [
                member
                for user_id, member in guild.members.items()
                if user_id in wanted or (not wanted and member["user"]["username"].lower().startswith(query))
            ]
            chunk: JSON = {"guild_id": str(guild.id), "members": members[: data.get("limit") or None]}
            chunk |= {"chunk_index": 0, "chunk_count": 1, "not_found": [], "nonce": data.get("nonce")}
            connection.dispatch("GUILD_MEMBERS_CHUNK", chunk)
        elif op not in (3, 4):  # presence and voice state updates are accepted and ignored
            await connection.ws.close(code=4001, message=b"Unknown opcode.")

    async def _identify(self, connection: _Connection, data: JSON) -> None:
        if data.get("token") != self.token:
            await connection.ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = int(data.get("intents", 0))
        if intents & PRIVILEGED_INTENTS & ~self.allowed_intents:
            await connection.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        session = _Session(intents, data.get("shard"))
        live = {other.session.shard_count for other in self._shards.values() if other.session}
        if not 0 <= session.shard_id < session.shard_count or live - {session.shard_count}:
            await connection.ws.close(code=4010, message=b"Invalid shard.")
            return
        self._sessions[session.id] = session
        self._routing_count = session.shard_count
        connection.session = session
        self._shards[session.shard_id] = connection
        self.identifies += 1
        self.identified_shards.append((session.shard_id, session.shard_count))
        # Only this shard's guilds, in READY and then as GUILD_CREATE.
        guilds = [guild for guild in self.guilds.values() if self._shard_of(guild.id) == session.shard_id]
        ready = {
            "v": 10,
            "user": self._bot_user(),
            "guilds": [{"id": str(guild.id), "unavailable": True} for guild in guilds],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,  # discord.py resumes wherever this points
            "application": {"id": str(self.app_id), "flags": 1 << 23},
            "user_settings": {},
            **_defaults(
                lists="private_channels relationships presences geo_ordered_rtc_regions guild_join_requests"
            ),
            **({"shard": session.shard} if session.shard else {}),
        }
        connection.dispatch("READY", ready)
        for guild in guilds:
            await connection.dispatch("GUILD_CREATE", guild.payload(members=bool(intents & INTENT_MEMBERS)))
        connection.ready = True
        self._bump()

    def _forget(self, connection: _Connection) -> None:
        """A closed connection no longer receives its shard's events."""
        for shard, holder in list(self._shards.items()):
            if holder is connection:
                del self._shards[shard]

    def _dispatch_nowait(
        self, event: str, data: JSON, intent: int = 0, guild_id: int | None = None
    ) -> asyncio.Future[bool] | None:
        """Queue an event for the connection of the guild's shard (shard 0 without a guild), if any
        and if its intents ask for it."""
        connection = self._connection_for(guild_id)
        if (
            connection is None
            or connection.session is None
            or (intent and not connection.session.intents & intent)
        ):
            return None
        return connection.dispatch(event, data)

    async def _dispatch_message(self, event: str, message: JSON) -> None:
        """MESSAGE_* events as Discord sends them: intent-gated, only from channels the bot is in, and
        without the message content intent other users' guild messages come blank unless they
        mention the bot."""
        if self._channel(int(message["channel_id"])) is None:
            return  # a server without the bot, or a group DM
        guild = self.guild_of(int(message["channel_id"]))
        in_guild = guild is not None
        data = copy.deepcopy(message)
        author = int(message.get("author", {}).get("id", 0))
        if guild is not None:
            data["guild_id"] = str(guild.id)
            if author in guild.members:
                data["member"] = {k: v for k, v in guild.members[author].items() if k != "user"}
        connection = self._connection_for(guild.id if guild is not None else None)
        session = connection.session if connection else None
        mentioned = any(int(user["id"]) == self.bot_user_id for user in message.get("mentions", []))
        blank = session and not session.intents & INTENT_MESSAGE_CONTENT and "author" in message
        if blank and in_guild and author != self.bot_user_id and not mentioned:
            data |= {"content": "", "embeds": [], "attachments": [], "components": []}
        future = self._dispatch_nowait(
            event,
            data,
            INTENT_GUILD_MESSAGES if in_guild else INTENT_DIRECT_MESSAGES,
            guild.id if guild is not None else None,
        )
        if future is not None:
            await future

    async def disconnect_gateway(self, code: int = 4000, *, shard: int = 0) -> None:
        """Close the bot's websocket (of one shard); discord.py reconnects and RESUMEs (``wait_ready()``
        waits for that)."""
        connection = self._shards.pop(shard, None)
        assert connection is not None, f"fake discord: no bot is connected on shard {shard}"
        await connection.ws.close(code=code)

    # -------------------------------------------------------------------------------------- injecting interactions

    async def _send_interaction(
        self,
        kind: int,
        data: JSON,
        user: int | None,
        *,
        message: JSON | None = None,
        opened_by: Interaction | None = None,
        channel_id: int | None = None,
        owners: dict[str, str] | None = None,
    ) -> Interaction:
        """INTERACTION_CREATE to the current bot; waits up to 10 s for one, also when the connection
        dies under us (a killed bot process), and starts the deadline clock when the event is sent.
        It comes from ``channel_id``, else the clicked message's channel, else the guild channel.
        ``owners`` (authorizing_integration_owners) default to the opening interaction's, else those
        of the interaction that made the clicked message, else every install reaching the channel."""
        user_id = user if user is not None else self.member_id
        if channel_id is None:
            channel_id = int(message["channel_id"]) if message is not None else self.channel_id
        interaction = Interaction(self, kind, user_id, data, message, channel_id)
        interaction.opened_by = opened_by
        if owners is None and opened_by is not None:
            owners = opened_by.owners
        if owners is None and message is not None and (made_by := message.get("interaction_metadata")):
            owners = dict(made_by["authorizing_integration_owners"])
        if owners is None:
            owners = {
                str(install): owner for install, owner in self._installs_at(user_id, channel_id)[1].items()
            }
        interaction.owners = owners
        payload = {
            "id": str(interaction.id),
            "application_id": str(self.app_id),
            "type": kind,
            "data": data,
            "token": interaction.token,
            "version": 1,
            "locale": "en-US",
            "attachment_size_limit": self.upload_limit,  # discord.py raises KeyError without it
            **_defaults(lists="entitlements entitlement_sku_ids"),
            **({"message": message} if message is not None else {}),
            **self._context_fields(user_id, channel_id),
            "authorizing_integration_owners": owners,
        }
        self.interactions.append(interaction)
        self._by_token[interaction.token] = interaction
        self._by_id[interaction.id] = interaction
        place = self.guild_of(channel_id) or self._foreign_guild_of(channel_id)
        give_up = time.monotonic() + 10
        while True:
            shard = self._shard_of(place.id if place is not None else None)
            try:
                await self.wait_ready(timeout=max(0.0, give_up - time.monotonic()), shards=[shard])
            except TimeoutError:
                self.interactions.remove(interaction)
                del self._by_id[interaction.id]
                raise
            connection = self._shards[shard]
            if await connection.dispatch("INTERACTION_CREATE", payload):
                interaction.shard = shard
                break
            self._forget(connection)  # its socket is gone: wait for the bot to come back
        self._bump()
        return interaction

    def _installs_at(self, user_id: int, channel_id: int) -> tuple[int, dict[int, str]]:
        """The interaction context of a channel and, for each install that reaches the user there, its
        owner: the server (or "0" in the bot's DMs, as Discord's docs say) and the user's own install."""
        own = {USER_INSTALL: str(user_id)} if user_id in self.user_installs else {}
        if (guild := self.guild_of(channel_id)) is not None:
            return GUILD_CONTEXT, {GUILD_INSTALL: str(guild.id), **own}
        if self._dm_recipient(channel_id) is not None:
            return BOT_DM_CONTEXT, {GUILD_INSTALL: "0", **own}
        if self._foreign_guild_of(channel_id) is not None:
            return GUILD_CONTEXT, own
        assert channel_id in self._group_dms, f"fake discord: no channel {channel_id}"
        return PRIVATE_CHANNEL_CONTEXT, own

    def _context_fields(self, user_id: int, channel_id: int) -> JSON:
        if self._dm_recipient(channel_id) is not None:
            return self._dm_context(user_id, channel_id)
        if channel_id in self._group_dms:
            assert user_id in self._group_dms[channel_id], (
                f"fake discord: user {user_id} is not in that group DM"
            )
            return {
                "channel_id": str(channel_id),
                "channel": self._group_dm_payload(channel_id),
                "user": self._users[user_id],
                "app_permissions": str(DM_APP_PERMISSIONS),
                "context": PRIVATE_CHANNEL_CONTEXT,
            }
        return self._guild_context(user_id, channel_id)

    def _guild_context(self, user_id: int, channel_id: int) -> JSON:
        """The fields of an interaction used in a guild's channel, with the bot in it or not."""
        guild = self.guild_of(channel_id) or self._foreign_guild_of(channel_id)
        assert guild is not None, f"fake discord: channel {channel_id} is no guild's"
        assert user_id in guild.members, f"fake discord: user {user_id} is not a member of {guild.name}"
        permissions = str(guild.permissions(user_id))
        app = guild.permissions(self.bot_user_id) if self.bot_user_id in guild.members else BOT_PERMISSIONS
        return {
            "guild_id": str(guild.id),
            "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
            "channel_id": str(channel_id),
            "channel": {**guild.channel_payload(), "permissions": permissions},
            "member": {**guild.members[user_id], "permissions": permissions},
            "app_permissions": str(app),
            "guild_locale": "en-US",
            "context": GUILD_CONTEXT,
        }

    def _dm_context(self, user_id: int, channel_id: int) -> JSON:
        """The fields of an interaction used in a DM with the bot: no guild and no member, the invoking
        ``user``, context BOT_DM, and the server install's owner given as "0" (Discord's docs)."""
        recipient = self._dm_recipient(channel_id)
        assert recipient is not None, f"fake discord: channel {channel_id} is neither the guild's nor a DM"
        assert recipient == user_id, f"fake discord: user {user_id} cannot see the DM of user {recipient}"
        return {
            "channel_id": str(channel_id),
            "channel": self._channel(channel_id),
            "user": self._users[user_id],
            "app_permissions": str(DM_APP_PERMISSIONS),
            "context": BOT_DM_CONTEXT,
        }

    def _command(
        self, name: str, kind: int, *, user_id: int, channel_id: int
    ) -> tuple[JSON, JSON, dict[str, str]]:
        """A synced command, the start of its interaction ``data`` (with ``guild_id`` for guild
        commands: discord.py's tree looks them up by it) and the installs that authorize it there.
        Outside the bot's guilds only global commands exist, and a command Discord's client would not
        offer where it is used (by its ``integration_types`` and ``contexts``) raises AssertionError."""
        context, reaching = self._installs_at(user_id, channel_id)
        in_bot_guild = self.guild_of(channel_id) is not None
        if in_bot_guild:
            available = self.commands
        else:
            available = {key: found for (key, _), found in self._command_scopes.get(None, {}).items()}
        command = available.get(name)
        where = {
            GUILD_CONTEXT: "in the guild" if in_bot_guild else "in a server without the bot",
            BOT_DM_CONTEXT: "in DMs with the bot",
            PRIVATE_CHANNEL_CONTEXT: "in group DMs",
        }[context]
        assert command and command["type"] == kind, (
            f"fake discord: no synced command {name!r} (type {kind}) {where}; {sorted(available)}"
        )
        definition = {key: command.get(key) for key in ("contexts", "dm_permission", "integration_types")}
        owners = {
            str(install): owner
            for install, owner in reaching.items()
            if context in command_contexts(command, install)
        }
        assert owners, (
            f"fake discord: Discord does not offer {name!r} {where}; its definition has {definition}, "
            f"installs reaching the user there: {sorted(reaching)}"
        )
        data = {"id": command["id"], "name": name, "type": kind}
        return command, data | ({"guild_id": command["guild_id"]} if "guild_id" in command else {}), owners

    async def slash(
        self,
        name: str,
        *,
        user: int | None = None,
        subcommand: str | None = None,
        dm: bool | int = False,  # not just bool: tests pass options as **dict[str, int]
        in_guild: Guild | int | None = None,  # a guild or its id (options may come as **dict[str, int])
        channel: int | None = None,  # a group DM's id (add_group_dm())
        **options: Any,
    ) -> Interaction:
        """A slash command. Options are typed from the synced definition (an int for a STRING option is
        sent as a string); an ``add_cdn_file()`` dict fills an attachment option, a user id a user option;
        ``None`` omits one; ``user_=`` passes an option named ``user`` (``dm_=`` one named ``dm``);
        ``subcommand`` may be "group sub". Discord's client-side checks (required, choices, min/max)
        raise AssertionError; ``default_member_permissions`` is not enforced, so server-side checks can
        be tested. ``dm=True`` uses it in the user's DM with the bot (``dm_channel_id()``), where the
        answers land too; ``in_guild`` in another guild's channel (``add_guild()``, with the bot or
        not); ``channel`` in a group DM."""
        dm = bool(dm)
        await self._wait_connected()
        if isinstance(in_guild, int):
            in_guild = self.guilds.get(in_guild) or self.foreign_guilds[in_guild]
        guild = None if dm or channel is not None else in_guild or self._guild
        if channel is None:
            channel = self.dm_channel_id(user) if guild is None else guild.channel_id
        user_id = user if user is not None else self.member_id
        command, data, owners = self._command(name, 1, user_id=user_id, channel_id=channel)
        data["options"], resolved = self._build_options(
            command, subcommand, options, focused=None, guild=guild
        )
        return await self._send_interaction(
            APP_COMMAND,
            data | ({"resolved": resolved} if resolved else {}),
            user,
            channel_id=channel,
            owners=owners,
        )

    async def autocomplete(
        self,
        name: str,
        focused: str,
        *,
        user: int | None = None,
        subcommand: str | None = None,
        dm: bool | int = False,  # as in slash()
        **options: Any,
    ) -> Interaction:
        """An autocomplete request (type 4) while typing option ``focused``; the bot answers with type 8."""
        dm = bool(dm)
        await self._wait_connected()
        channel_id = self.dm_channel_id(user) if dm else self.channel_id
        user_id = user if user is not None else self.member_id
        command, data, owners = self._command(name, 1, user_id=user_id, channel_id=channel_id)
        guild = None if dm else self._guild
        data["options"], _ = self._build_options(command, subcommand, options, focused=focused, guild=guild)
        return await self._send_interaction(AUTOCOMPLETE, data, user, channel_id=channel_id, owners=owners)

    def _build_options(
        self,
        command: JSON,
        subcommand: str | None,
        values: dict[str, Any],
        *,
        focused: str | None,
        guild: Guild | None,
    ) -> tuple[list[JSON], JSON]:
        definitions: list[JSON] = command.get("options") or []
        chain: list[JSON] = []
        for part in (subcommand or "").split():
            sub = next((o for o in definitions if o["name"] == part and o["type"] in (1, 2)), None)
            assert sub is not None, f"/{command['name']} has no subcommand {part!r}"
            chain.append(sub)
            definitions = sub.get("options") or []
        assert not any(o["type"] in (1, 2) for o in definitions), f"/{command['name']} needs a subcommand"
        built: list[JSON] = []
        resolved: JSON = {}
        for key, value in values.items():
            name = key.removesuffix("_")  # user_= for an option named like a keyword of slash()
            definition = next((o for o in definitions if o["name"] == name), None)
            names = [o["name"] for o in definitions]
            assert definition is not None, f"/{command['name']} has no option {name!r}; options: {names}"
            if name == focused:
                built.append({"name": name, "type": definition["type"], "value": str(value), "focused": True})
            elif value is not None:
                option_value = self._option_value(definition, value, resolved, guild=guild)
                built.append({"name": name, "type": definition["type"], "value": option_value})
        missing = {o["name"] for o in definitions if o.get("required")} - {o["name"] for o in built}
        assert focused is not None or not missing, f"/{command['name']} is missing required options {missing}"
        for sub in reversed(chain):
            built = [{"name": sub["name"], "type": sub["type"], "options": built}]
        return built, resolved

    def _option_value(self, definition: JSON, value: Any, resolved: JSON, *, guild: Guild | None) -> Any:
        """A test value coerced to the option's synced type, with the checks Discord's client makes.
        In a DM there are no roles to pick and users come without member data."""
        kind, name = definition["type"], definition["name"]
        if kind == 11:
            assert isinstance(value, dict) and "url" in value, f"option {name!r} wants an add_cdn_file() dict"
            resolved.setdefault("attachments", {})[value["id"]] = value
            return value["id"]
        if kind in (6, 7, 8, 9):  # user, channel, role, mentionable: by id (or a payload with an id)
            snowflake = int(value["id"] if isinstance(value, dict) else value)
            channel = self._channel(snowflake)
            if kind in (8, 9) and guild is not None and snowflake in guild.roles:
                resolved.setdefault("roles", {})[str(snowflake)] = guild.roles[snowflake]
            elif kind in (6, 9) and snowflake in self._users:
                resolved.setdefault("users", {})[str(snowflake)] = self._users[snowflake]
                if guild is not None and (member := guild.members.get(snowflake)):
                    member = {k: v for k, v in member.items() if k != "user"}
                    member["permissions"] = str(guild.permissions(snowflake))
                    resolved.setdefault("members", {})[str(snowflake)] = member
            elif kind == 7 and channel is not None:
                resolved.setdefault("channels", {})[str(snowflake)] = channel | {
                    "permissions": str(ALL_PERMISSIONS)
                }
            else:
                raise AssertionError(f"option {name!r}: {snowflake} is nothing this option can take")
            return str(snowflake)
        coerced: Any = {3: str, 4: int, 5: bool, 10: float}[kind](value)
        choices = [choice["value"] for choice in definition.get("choices") or []]
        assert not choices or coerced in choices, f"option {name!r}={coerced!r} is not one of {choices}"
        if kind == 3:
            low, high = definition.get("min_length", 0), definition.get("max_length", 6000)
            assert low <= len(coerced) <= high, f"option {name!r}: length {len(coerced)} not in {low}..{high}"
        if kind in (4, 10):
            low, high = definition.get("min_value", -math.inf), definition.get("max_value", math.inf)
            assert low <= coerced <= high, f"option {name!r}: {coerced} not in {low}..{high}"
        return coerced

    async def message_command(self, name: str, target: JSON, *, user: int | None = None) -> Interaction:
        """A message context menu command on ``target`` (a bot or ``post_message()`` message), used where
        the target is: in a guild, in a DM with the bot, or in a group DM."""
        await self._wait_connected()
        current = self._current_message(target)
        channel_id, user_id = int(current["channel_id"]), user if user is not None else self.member_id
        _, data, owners = self._command(name, 3, user_id=user_id, channel_id=channel_id)
        data |= {"target_id": current["id"], "resolved": {"messages": {current["id"]: current}}}
        return await self._send_interaction(APP_COMMAND, data, user, channel_id=channel_id, owners=owners)

    async def click(
        self, message: JSON | int, label_or_custom_id: str, *, user: int | None = None
    ) -> Interaction:
        """Click a button of the message's current stored version (by label, then by custom_id), in the
        channel the message is in (a DM one only its recipient can click in)."""
        current = self._current_message(message)
        buttons = [c for c in walk_components(current["components"]) if c.get("type") == 2]
        button = next((b for b in buttons if b.get("label") == label_or_custom_id), None) or next(
            (b for b in buttons if b.get("custom_id") == label_or_custom_id), None
        )
        available = [f"{b.get('label')!r} ({b.get('custom_id') or b.get('url')})" for b in buttons]
        assert button, f"no button {label_or_custom_id!r} on message {current['id']}; buttons: {available}"
        assert not button.get("disabled"), f"button {label_or_custom_id!r} is disabled"
        assert button.get("custom_id"), f"button {label_or_custom_id!r} is a link or premium button"
        data = {"custom_id": button["custom_id"], "component_type": 2, "id": button.get("id")}
        return await self._send_interaction(COMPONENT, data, user, message=current)

    async def select(
        self, message: JSON | int, custom_id: str, values: list[str], *, user: int | None = None
    ) -> Interaction:
        """Choose ``values`` in a string select of the message's current stored version."""
        current = self._current_message(message)
        menu = next(
            (c for c in walk_components(current["components"]) if c.get("custom_id") == custom_id), None
        )
        assert menu and menu["type"] == 3, f"no string select {custom_id!r} on message {current['id']}"
        assert not menu.get("disabled"), f"select {custom_id!r} is disabled"
        options = [option["value"] for option in menu.get("options") or []]
        assert set(values) <= set(options), f"values {values} are not all among the options {options}"
        low, high = menu.get("min_values", 1), menu.get("max_values", 1)
        assert low <= len(values) <= high, f"{len(values)} values, select {custom_id!r} takes {low}..{high}"
        data = {"custom_id": custom_id, "component_type": 3, "values": values, "id": menu.get("id")}
        return await self._send_interaction(COMPONENT, data, user, message=current)

    async def submit_modal(
        self, opened_by: Interaction, values: dict[str, Any], *, user: int | None = None
    ) -> Interaction:
        """Submit the modal ``opened_by`` answered with, as the client does: every input in the modal's
        layout (action rows or labels), the others keeping their default. ``values`` are keyed by
        custom_id or, failing that, by label (discord.py generates random custom_ids when none is
        given). A text input takes a string, a select a list of option values, a file upload a list of
        ``add_cdn_file()`` dicts: the submit carries their ids and ``data.resolved.attachments``, as
        Discord sends them. What the client would not let a user submit (a required input left empty,
        too few or too many values or files, a file over ``upload_limit``) raises AssertionError.
        ``user`` defaults to whoever opened the modal; the submit comes from where it was opened."""
        modal = await opened_by.wait_modal()
        labels: dict[str, str] = {}  # label -> custom_id
        for top in modal["components"]:
            for component in [top["component"]] if top["type"] == 18 else top.get("components") or []:
                label = top.get("label") if top["type"] == 18 else component.get("label")
                if label and component.get("custom_id"):
                    labels.setdefault(label, component["custom_id"])
        inputs = {
            c["custom_id"] for c in walk_components(modal["components"]) if c.get("type") in LABEL_CHILDREN
        }
        known = [f"{custom_id!r} ({label!r})" for label, custom_id in labels.items()]
        for key in set(values) - inputs:
            assert key in labels, f"modal {modal['custom_id']!r} has no input {key!r}; inputs: {known}"
        values = {key if key in inputs else labels[key]: value for key, value in values.items()}
        attachments: JSON = {}  # becomes data.resolved.attachments

        def answer(component: JSON) -> JSON:
            custom_id: str = component.get("custom_id") or ""
            sent: JSON = {"type": component["type"], "id": component["id"], "custom_id": custom_id}
            if component["type"] == 4:
                value = str(values.get(custom_id, component.get("value") or ""))
                assert value or not component.get("required", True), f"text input {custom_id!r} is required"
                low, high = component.get("min_length", 0), component.get("max_length", 4000)
                assert not value or low <= len(value) <= high, (
                    f"{custom_id!r}: length {len(value)} not in {low}..{high}"
                )
                return sent | {"value": value}
            if component["type"] == 19:
                files = values.get(custom_id, [])
                assert isinstance(files, list) and all(isinstance(f, dict) and "url" in f for f in files), (
                    f"file upload {custom_id!r} takes a list of add_cdn_file() dicts, not {files!r}"
                )
                for file in files:
                    assert file["size"] <= self.upload_limit, (
                        f"{file['filename']!r} ({file['size']} bytes) is over the {self.upload_limit} upload limit"
                    )
                    attachments[file["id"]] = file | {"ephemeral": True}  # as Discord's example shows
                chosen = [file["id"] for file in files]
            elif component["type"] == 3:
                options = component.get("options") or []
                defaults = [option["value"] for option in options if option.get("default")]
                chosen = values.get(custom_id, defaults)
                assert isinstance(chosen, list), f"select {custom_id!r} takes a list, not {chosen!r}"
                allowed = [option["value"] for option in options]
                assert set(chosen) <= set(allowed), f"values {chosen} are not all among the options {allowed}"
            else:  # never validated as a label child: sent as given
                return sent | {"values": list(values.get(custom_id, []))}
            what = "file upload" if component["type"] == 19 else "select"
            assert chosen or not component.get("required", True), f"{what} {custom_id!r} is required"
            low, high = _value_counts(component)
            assert not chosen or low <= len(chosen) <= high, (
                f"{what} {custom_id!r}: {len(chosen)} values, it takes {low}..{high}"
            )
            return sent | {"values": list(chosen)}

        submitted: list[JSON] = []
        for top in modal["components"]:
            if top["type"] == 1:
                submitted.append(
                    {"type": 1, "id": top["id"], "components": [answer(c) for c in top["components"]]}
                )
            elif top["type"] == 18:
                submitted.append({"type": 18, "id": top["id"], "component": answer(top["component"])})
            else:
                submitted.append({"type": top["type"], "id": top["id"]})
        data: JSON = {"custom_id": modal["custom_id"], "components": submitted}
        if attachments:
            data["resolved"] = {"attachments": attachments}
        message = self._current_message(opened_by.message_id) if opened_by.message_id is not None else None
        user_id = user if user is not None else opened_by.user_id
        return await self._send_interaction(
            MODAL_SUBMIT, data, user_id, message=message, opened_by=opened_by, channel_id=opened_by.channel_id
        )

    async def post_message(
        self,
        content: str = "",
        *,
        user: int | None = None,
        attachments: list[JSON] | None = None,
        embeds: list[JSON] | None = None,
        reply_to: JSON | int | None = None,
        dm: bool = False,
        channel: int | None = None,
    ) -> JSON:
        """A human's message in the guild channel, or with ``dm=True`` in their DM with the bot,
        dispatched as MESSAGE_CREATE; a target for ``message_command()``. Stored in ``user_messages``.
        ``attachments`` come from ``add_cdn_file()``; ``embeds`` are what Discord unfurled, such as
        ``add_embed_image()`` for a linked picture (put the link in ``content`` too, as a user would).
        ``channel`` posts in another channel: a group DM, or a guild's (with the bot or not)."""
        user_id = user if user is not None else self.member_id
        channel_id = (
            channel if channel is not None else self.dm_channel_id(user_id) if dm else self.channel_id
        )
        assert len(embeds or []) <= 10, "Discord unfurls at most 10 embeds"
        message_id = self._ids.next()
        message: JSON = {
            "id": str(message_id),
            "channel_id": str(channel_id),
            "author": self._users[user_id],
            "content": content,
            "timestamp": _snowflake_time(message_id),
            "attachments": list(attachments or []),
            "embeds": copy.deepcopy(embeds or []),
            "type": 0,
            **_defaults("edited_timestamp", "flags", "tts pinned", "components"),
        }
        self._set_mentions(message, None)
        if reply_to is not None:
            referenced = self._current_message(reply_to)
            assert referenced["channel_id"] == str(channel_id), "a reply is in its message's channel"
            message |= self._reply_fields(int(referenced["id"]), channel_id, {})
            if referenced["author"] not in message["mentions"]:  # a reply pings its author by default
                message["mentions"].append(referenced["author"])
        self.user_messages[message_id] = message
        await self._dispatch_message("MESSAGE_CREATE", message)
        self._bump()
        return message
