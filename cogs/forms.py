"""The forms under a result (Refine, Use N, Upscale) and how any submitted form is read.

The bot's forms are answered from their custom_id and the database rather than by the Modal
objects, because discord.py drops the submit of a modal sent before a restart.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import discord

from bot.credits import Estimate
from bot.edits import JobKind
from bot.jobs.access import Act
from bot.jobs.admission import Refused
from cogs.errors import answering
from cogs.flow import start_edit
from cogs.inputs import as_input
from cogs.interactions import actor_of, answer_privately
from storage.jobs import Job

if TYPE_CHECKING:
    from cogs.interactions import Interaction

# A text input in a modal holds at most 4000 characters (Discord's limit).
MODAL_PROMPT_MAX = 4000
REFINE_MODAL = re.compile(r"retouch:refine-modal:(?P<job_id>[0-9]{1,20}):(?P<output>[0-3])")
UPSCALE_MODAL = re.compile(r"retouch:upscale-modal:(?P<job_id>[0-9]{1,20})")
# The model has no separate upscaler; the result itself is the reference, at a larger size.
UPSCALE_PROMPT = (
    "Reproduce this image exactly at a higher resolution: the same content, composition, colours "
    "and style, with finer detail."
)


async def job_for(interaction: Interaction, job_id: int, act: Act) -> Job:
    """The job this press or form is about, checked for this member and bound to the message it
    came from (a form opened from a button carries that button's message)."""
    message_id = interaction.message.id if interaction.message is not None else 0
    return await interaction.client.jobs.acting_on(job_id, actor_of(interaction), act, message_id=message_id)


def result_images(message: discord.Message | None) -> list[discord.Attachment]:
    return [a for a in (message.attachments if message else []) if a.width]


def _submitted(data: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """A modal submit's inputs, in either layout (action rows or labels)."""
    for top in data.get("components", []):
        yield from top.get("components") or [top.get("component") or {}]


def submitted_values(data: Mapping[str, Any]) -> dict[str, str]:
    """A modal submit's text inputs by custom_id."""
    return {
        component["custom_id"]: component["value"]
        for component in _submitted(data)
        if "custom_id" in component and isinstance(component.get("value"), str)
    }


def submitted_choices(data: Mapping[str, Any]) -> dict[str, list[str]]:
    """A modal submit's selects and file uploads by custom_id: the chosen values, or for an
    upload the attachment ids (see `uploaded_files`)."""
    return {
        component["custom_id"]: [str(value) for value in component["values"]]
        for component in _submitted(data)
        if "custom_id" in component and isinstance(component.get("values"), list)
    }


def uploaded_files(data: Mapping[str, Any], custom_id: str) -> list[Mapping[str, Any]]:
    """The attachments a member put in a modal's file upload, as Discord resolved them."""
    resolved: Mapping[str, Any] = (data.get("resolved") or {}).get("attachments") or {}
    ids = submitted_choices(data).get(custom_id, [])
    return [resolved[attachment_id] for attachment_id in ids if attachment_id in resolved]


def modal_submitted(interaction: Interaction, form: re.Pattern[str]) -> re.Match[str] | None:
    """The custom_id of a submitted modal of this form, matched; None for any other interaction."""
    if interaction.type is not discord.InteractionType.modal_submit:
        return None
    data: Mapping[str, Any] = interaction.data or {}
    return form.fullmatch(str(data.get("custom_id", "")))


class RefineModal(discord.ui.Modal, title="Refine this edit"):
    """The form only: its submit is handled by `refine_submitted`."""

    prompt: discord.ui.TextInput[RefineModal] = discord.ui.TextInput(
        label="What should change next?",
        custom_id="prompt",
        style=discord.TextStyle.paragraph,
        max_length=MODAL_PROMPT_MAX,
        placeholder="e.g. now make it night time",
    )

    def __init__(self, parent: Job, output: int) -> None:
        super().__init__(custom_id=f"retouch:refine-modal:{parent.id}:{output}")
        self.prompt.default = parent.prompt[:MODAL_PROMPT_MAX]

    async def on_submit(self, interaction: Interaction) -> None:  # type: ignore[override]
        """Answered by `refine_submitted`, which sees every submit, before or after a restart."""


async def refine_submitted(interaction: Interaction) -> bool:
    """Run a Refine (or Use N) from its submitted modal; False when it is not one."""
    match = modal_submitted(interaction, REFINE_MODAL)
    if match is None:
        return False
    async with answering(interaction, "a Refine form"):
        await _refine(interaction, await job_for(interaction, int(match["job_id"]), Act.REFINE), match)
    return True


async def _refine(interaction: Interaction, parent: Job, match: re.Match[str]) -> None:
    data: Mapping[str, Any] = interaction.data or {}
    output = int(match["output"])
    images = result_images(interaction.message)
    if output >= len(images):
        await interaction.response.send_message(
            "That result has no image left to refine; run a new /edit instead.", ephemeral=True
        )
        return
    await start_edit(
        interaction,
        prompt=submitted_values(data).get("prompt", ""),
        inputs=[as_input(images[output])],
        options=parent.options,
        kind=JobKind.REFINE,
        parent_id=parent.id,
        parent_output=output,
    )


class UpscaleModal(discord.ui.Modal, title="Upscale this edit"):
    """The form only, like `RefineModal`: `upscale_submitted` answers it from its custom_id."""

    def __init__(self, parent: Job, prices: Mapping[str, Estimate], outputs: int) -> None:
        super().__init__(custom_id=f"retouch:upscale-modal:{parent.id}")
        self.add_item(
            discord.ui.Label(
                text="Size",
                component=discord.ui.Select(
                    custom_id="resolution",
                    options=[
                        discord.SelectOption(label=f"{size} · {prices[size].credits} credits", value=size)
                        for size in prices
                    ],
                ),
            )
        )
        if outputs > 1:
            self.add_item(
                discord.ui.Label(
                    text="Which image",
                    component=discord.ui.Select(
                        custom_id="output",
                        options=[
                            discord.SelectOption(label=f"Image {n + 1}", value=str(n)) for n in range(outputs)
                        ],
                    ),
                )
            )

    async def on_submit(self, interaction: Interaction) -> None:  # type: ignore[override]
        """Answered by `upscale_submitted`."""


async def upscale_submitted(interaction: Interaction) -> bool:
    """Run an Upscale from its submitted modal; False when it is not one."""
    match = modal_submitted(interaction, UPSCALE_MODAL)
    if match is None:
        return False
    async with answering(interaction, "an Upscale form"):
        await _upscale(interaction, await job_for(interaction, int(match["job_id"]), Act.UPSCALE))
    return True


async def _upscale(interaction: Interaction, parent: Job) -> None:
    chosen = submitted_choices(interaction.data or {})
    size = (chosen.get("resolution") or [""])[0]
    picked = (chosen.get("output") or ["0"])[0]
    output = int(picked) if picked.isascii() and picked.isdigit() else -1
    images = result_images(interaction.message)
    options = interaction.client.admission.upscaled(parent, size)
    if isinstance(options, Refused):
        await answer_privately(interaction, options.reason)
        return
    if not 0 <= output < len(images):
        await interaction.response.send_message(
            "That result has no image left to upscale; run a new /edit instead.", ephemeral=True
        )
        return
    await start_edit(
        interaction,
        prompt=UPSCALE_PROMPT,
        inputs=[as_input(images[output])],
        options=options,
        kind=JobKind.UPSCALE,
        parent_id=parent.id,
        parent_output=output,
    )
