"""Reading the fake Discord's stored messages the way a member looks at them."""

from __future__ import annotations

from typing import Any

from tests.fakes.discord import walk_components

EPHEMERAL = 64


def buttons(message: dict[str, Any]) -> list[str]:
    """The labels of every button, in rows or inside a Components V2 card."""
    return [
        c.get("label") or "" for c in walk_components(message.get("components", [])) if c.get("type") == 2
    ]


def text(message: dict[str, Any]) -> str:
    """What a member reads: the content, or a Components V2 card's text displays."""
    shown = [c["content"] for c in walk_components(message.get("components", [])) if c.get("type") == 10]
    return "\n".join([message.get("content") or "", *shown]).strip()


def gallery(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The items of a Components V2 media gallery, resolved to the message's attachments."""
    return [
        item
        for c in walk_components(message.get("components", []))
        if c.get("type") == 12
        for item in c.get("items", [])
    ]


def has_image(message: dict[str, Any]) -> bool:
    return bool(message.get("attachments")) and "Refine" in buttons(message)


def shows(wanted: str) -> Any:
    """A predicate for the first message whose text includes `wanted`."""
    return lambda message: wanted in text(message)


async def private_answer(interaction: Any) -> str:
    """What the member alone was told: an ephemeral first answer, or (for refusals found after
    the acknowledgement) an ephemeral followup once the public "thinking" message is withdrawn."""
    first = await interaction.wait_response()
    if first["type"] == 4:
        assert first["data"]["flags"] & EPHEMERAL
        return str(first["data"]["content"])
    followup = await interaction.wait_followup(predicate=lambda m: bool(m.get("flags", 0) & EPHEMERAL))
    return str(followup["content"])
