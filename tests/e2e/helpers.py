"""Reading the fake Discord's stored messages the way a member looks at them."""

from __future__ import annotations

from typing import Any

EPHEMERAL = 64


def buttons(message: dict[str, Any]) -> list[str]:
    return [
        component.get("label") or ""
        for row in message.get("components", [])
        for component in row.get("components", [])
        if component.get("type") == 2
    ]


def has_image(message: dict[str, Any]) -> bool:
    return bool(message.get("attachments")) and "Refine" in buttons(message)


def shows(text: str) -> Any:
    """A predicate for the first message whose content includes `text`."""
    return lambda message: text in (message.get("content") or "")


async def private_answer(interaction: Any) -> str:
    """What the member alone was told: an ephemeral first answer, or (for refusals found after
    the acknowledgement) an ephemeral followup once the public "thinking" message is withdrawn."""
    first = await interaction.wait_response()
    if first["type"] == 4:
        assert first["data"]["flags"] & EPHEMERAL
        return str(first["data"]["content"])
    followup = await interaction.wait_followup(predicate=lambda m: bool(m.get("flags", 0) & EPHEMERAL))
    return str(followup["content"])
