"""The buttons under progress and results, alive across restarts.

Each is a `DynamicItem` whose custom_id holds only a job id (and an output index). The id
carries no authority: every press asks the job service whether this member may do this to that
job, here, from this message (`bot.jobs.access`): anyone in the job's server may Refine, Retry, Vary,
Use or Upscale a public result and pays with their own credits, a private one is its requester's
alone, and Cancel and Delete are for the requester or the server's moderators. A failure of any
kind is answered through `cogs.errors`, so the member never sees a bare "interaction failed".
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import discord

from bot.edits import EditOptions, InputImage
from bot.jobs.access import Act
from bot.pictures.sizes import RESOLUTIONS
from cogs import render
from cogs.errors import answering
from cogs.flow import actor_of, as_input, start_edit
from cogs.paint import grant_for, offer_painter
from storage.jobs import Job

if TYPE_CHECKING:
    from cogs.app import Retouch

    Interaction = discord.Interaction[Retouch]

# A text input in a modal holds at most 4000 characters (Discord's limit).
MODAL_PROMPT_MAX = 4000


async def _job(interaction: Interaction, job_id: int, act: Act) -> Job:
    """The job this press or form is about, checked for this member and bound to the message it
    came from (a form opened from a button carries that button's message)."""
    message_id = interaction.message.id if interaction.message is not None else 0
    return await interaction.client.jobs.acting_on(job_id, actor_of(interaction), act, message_id=message_id)


def _result_images(message: discord.Message | None) -> list[discord.Attachment]:
    return [a for a in (message.attachments if message else []) if a.width]


class _JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"$^"):
    """A button about one job: `retouch:<action>:<job id>[:<output>]`. A press is checked and its
    failures answered here; `run` does the act itself."""

    action = Act.INFO
    label = ""
    emoji: str | None = None
    style = discord.ButtonStyle.secondary

    def __init__(self, job_id: int, output: int | None = None) -> None:
        suffix = "" if output is None else f":{output}"
        super().__init__(
            discord.ui.Button(
                label=self.label if output is None else f"{self.label} {output + 1}",
                emoji=self.emoji,
                style=self.style,
                custom_id=f"retouch:{self.action}:{job_id}{suffix}",
            )
        )
        self.job_id = job_id
        self.output = output

    async def callback(self, interaction: Interaction) -> None:  # type: ignore[override]
        async with answering(interaction, f"the {self.action.value} button of job {self.job_id}"):
            await self.run(interaction, await _job(interaction, self.job_id, self.action))

    async def run(self, interaction: Interaction, job: Job) -> None:
        raise NotImplementedError

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> _JobButton:
        output = match.groupdict().get("output")
        return cls(int(match["job_id"]), int(output) if output is not None else None)


def _template(action: str) -> str:
    return rf"retouch:{action}:(?P<job_id>[0-9]{{1,20}})(?::(?P<output>[0-3]))?"


REFINE_MODAL = re.compile(r"retouch:refine-modal:(?P<job_id>[0-9]{1,20}):(?P<output>[0-3])")


class RefineModal(discord.ui.Modal, title="Refine this edit"):
    """The form only: its submit is handled by `refine_submitted`, from the custom_id and the
    database, because discord.py drops the submit of a modal sent before a restart."""

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
    """The custom_id of a submitted modal of this form, matched; None for any other interaction.

    The bot's forms are answered here, from the custom_id, rather than by the Modal objects,
    because discord.py drops the submit of a modal sent before a restart.
    """
    if interaction.type is not discord.InteractionType.modal_submit:
        return None
    data: Mapping[str, Any] = interaction.data or {}
    return form.fullmatch(str(data.get("custom_id", "")))


async def refine_submitted(interaction: Interaction) -> bool:
    """Run a Refine (or Use N) from its submitted modal; False when it is not one."""
    match = modal_submitted(interaction, REFINE_MODAL)
    if match is None:
        return False
    async with answering(interaction, "a Refine form"):
        await _refine(interaction, await _job(interaction, int(match["job_id"]), Act.REFINE), match)
    return True


async def _refine(interaction: Interaction, parent: Job, match: re.Match[str]) -> None:
    data: Mapping[str, Any] = interaction.data or {}
    output = int(match["output"])
    images = _result_images(interaction.message)
    if output >= len(images):
        await interaction.response.send_message(
            "That result has no image left to refine; run a new /edit instead.", ephemeral=True
        )
        return
    await start_edit(
        interaction,
        prompt=submitted_values(data).get("prompt", ""),
        inputs=[as_input(images[output])],
        options=EditOptions.from_dict(parent.options),
        kind="refine",
        parent_id=parent.id,
        parent_output=output,
    )


UPSCALE_MODAL = re.compile(r"retouch:upscale-modal:(?P<job_id>[0-9]{1,20})")
# The model has no separate upscaler; the result itself is the reference, at a larger size.
UPSCALE_PROMPT = (
    "Reproduce this image exactly at a higher resolution: the same content, composition, colours "
    "and style, with finer detail."
)


def upscale_sizes(job: Job, resolutions: Collection[str]) -> list[str]:
    """The sizes larger than the job's own that the bot's hosts can make, smallest first."""
    current = RESOLUTIONS.index(str(job.options.get("resolution", "1K")))
    return [size for size in RESOLUTIONS[current + 1 :] if size in resolutions]


class UpscaleModal(discord.ui.Modal, title="Upscale this edit"):
    """The form only, like `RefineModal`: `upscale_submitted` answers it from its custom_id."""

    def __init__(self, bot: Retouch, parent: Job, sizes: Sequence[str], outputs: int) -> None:
        super().__init__(custom_id=f"retouch:upscale-modal:{parent.id}")
        options = EditOptions.from_dict(parent.options)
        prices = {size: bot.jobs.estimate(replace(options, resolution=size, count=1)) for size in sizes}
        self.add_item(
            discord.ui.Label(
                text="Size",
                component=discord.ui.Select(
                    custom_id="resolution",
                    options=[
                        discord.SelectOption(label=f"{size} · {prices[size].credits} credits", value=size)
                        for size in sizes
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
        await _upscale(interaction, await _job(interaction, int(match["job_id"]), Act.UPSCALE))
    return True


async def _upscale(interaction: Interaction, parent: Job) -> None:
    chosen = submitted_choices(interaction.data or {})
    size = (chosen.get("resolution") or [""])[0]
    picked = (chosen.get("output") or ["0"])[0]
    output = int(picked) if picked.isascii() and picked.isdigit() else -1
    images = _result_images(interaction.message)
    if size not in upscale_sizes(parent, interaction.client.jobs.resolutions):
        await interaction.response.send_message(
            "This bot's image host cannot make that size any more; pick another.", ephemeral=True
        )
        return
    if not 0 <= output < len(images):
        await interaction.response.send_message(
            "That result has no image left to upscale; run a new /edit instead.", ephemeral=True
        )
        return
    options = EditOptions.from_dict(parent.options)
    await start_edit(
        interaction,
        prompt=UPSCALE_PROMPT,
        inputs=[as_input(images[output])],
        options=replace(options, resolution=size, count=1, image_size="auto"),
        kind="upscale",
        parent_id=parent.id,
        parent_output=output,
    )


class RefineButton(_JobButton, template=_template("refine")):
    """Refine (or, with an output index, "Use N"): this result becomes the next reference."""

    action = Act.REFINE
    label = "Refine"
    emoji: str | None = "✏️"
    style = discord.ButtonStyle.primary

    async def run(self, interaction: Interaction, job: Job) -> None:
        await interaction.response.send_modal(RefineModal(job, self.output or 0))


class UseButton(RefineButton, template=_template("use")):
    action = Act.USE
    label = "Use"
    emoji = None
    style = discord.ButtonStyle.secondary


class UpscaleButton(_JobButton, template=_template("upscale")):
    """A larger copy of the result, where the bot's hosts can make 2K or 4K."""

    action = Act.UPSCALE
    label = "Upscale"
    emoji = "🔍"

    async def run(self, interaction: Interaction, job: Job) -> None:
        sizes = upscale_sizes(job, interaction.client.jobs.resolutions)
        if not sizes:
            await interaction.response.send_message(
                "This edit is already as large as this bot's image host can make.", ephemeral=True
            )
            return
        outputs = len(_result_images(interaction.message))
        await interaction.response.send_modal(UpscaleModal(interaction.client, job, sizes, outputs))


class RetryButton(_JobButton, template=_template("retry")):
    """The same request again: same references, prompt and options."""

    action = Act.RETRY
    label = "Retry"
    emoji = "🔁"

    async def run(self, interaction: Interaction, job: Job) -> None:
        await start_edit(
            interaction,
            prompt=job.prompt,
            inputs=[InputImage(**item) for item in job.inputs],
            mask=InputImage(**job.mask) if job.mask is not None else None,
            options=EditOptions.from_dict(job.options),
            kind="retry",
            parent_id=job.id,
        )


class VaryButton(_JobButton, template=_template("vary")):
    """Another take: the same prompt again, starting from this result instead of the original."""

    action = Act.VARY
    label = "Vary"
    emoji = "🎲"

    async def run(self, interaction: Interaction, job: Job) -> None:
        results = _result_images(interaction.message)
        if not results:
            await interaction.response.send_message(
                "That result has no image left to vary; run a new /edit instead.", ephemeral=True
            )
            return
        await start_edit(
            interaction,
            prompt=job.prompt,
            inputs=[as_input(results[0])],
            options=EditOptions.from_dict(job.options),
            kind="vary",
            parent_id=job.id,
            parent_output=0,
        )


class PaintButton(_JobButton, template=_template("paint")):
    """Paint the region to change in the browser, on this result (the first image of a set)."""

    action = Act.PAINT
    label = "Paint"
    emoji = "🖌️"

    async def run(self, interaction: Interaction, job: Job) -> None:
        output = self.output or 0
        images = _result_images(interaction.message)
        if output >= len(images):
            await interaction.response.send_message(
                "That result has no image left to paint on; run a new /edit instead.", ephemeral=True
            )
            return
        grant = grant_for(
            interaction,
            as_input(images[output]),
            EditOptions.from_dict(job.options),
            prompt=job.prompt,
            kind="refine",
            parent_id=job.id,
            parent_output=output,
        )
        await offer_painter(interaction, grant)


class InfoButton(_JobButton, template=_template("info")):
    action = Act.INFO
    label = "Info"
    emoji = "ℹ️"

    async def run(self, interaction: Interaction, job: Job) -> None:
        chain = await interaction.client.jobs.chain(job.id, actor_of(interaction))
        outputs = await interaction.client.jobs.outputs(job.id)
        await interaction.response.send_message(
            embed=render.info_embed(job, chain, outputs), ephemeral=True, allowed_mentions=render.NO_PINGS
        )


class DeleteButton(_JobButton, template=_template("delete")):
    action = Act.DELETE
    label = "Delete"
    emoji = "🗑️"
    style = discord.ButtonStyle.danger

    async def run(self, interaction: Interaction, job: Job) -> None:
        """The pressed message goes through the interaction (which can also remove a private one);
        every other message that showed the result is removed where the bot still can."""
        shown = await interaction.client.jobs.delete(job)
        await interaction.response.defer()
        await interaction.delete_original_response()
        pressed = interaction.message.id if interaction.message is not None else None
        for channel_id, message_id in shown:
            if message_id != pressed and channel_id is not None:
                channel = interaction.client.get_partial_messageable(channel_id)
                with contextlib.suppress(discord.NotFound, discord.Forbidden):
                    await channel.get_partial_message(message_id).delete()


class CancelButton(_JobButton, template=_template("cancel")):
    action = Act.CANCEL
    label = "Cancel"
    emoji = "✖️"
    style = discord.ButtonStyle.danger

    async def run(self, interaction: Interaction, job: Job) -> None:
        cancelled = await interaction.client.jobs.cancel(job.id)
        if cancelled is None:
            await interaction.response.send_message(
                "This edit has already finished, so there is nothing to cancel.", ephemeral=True
            )
            return
        await interaction.response.edit_message(content=render.cancelled_text(cancelled), view=None)


DYNAMIC_ITEMS: tuple[type[_JobButton], ...] = (
    RefineButton,
    UseButton,
    RetryButton,
    VaryButton,
    UpscaleButton,
    PaintButton,
    InfoButton,
    DeleteButton,
    CancelButton,
)


def _result_buttons(
    job_id: int, outputs: int, upscale: bool, paint: bool
) -> tuple[list[_JobButton], list[_JobButton], list[_JobButton]]:
    """The buttons under a result: the actions on the whole edit, then Use N and Upscale, then
    Paint (where the bot's page can be reached)."""
    main: list[_JobButton] = [
        RefineButton(job_id),
        RetryButton(job_id),
        VaryButton(job_id),
        InfoButton(job_id),
        DeleteButton(job_id),
    ]
    extra: list[_JobButton] = [UseButton(job_id, n) for n in range(outputs)] if outputs > 1 else []
    if upscale:
        extra.append(UpscaleButton(job_id))
    return main, extra, [PaintButton(job_id)] if paint else []


def result_message(
    job_id: int, text: str, files: Sequence[discord.File], *, upscale: bool, paint: bool = False
) -> dict[str, Any]:
    """A result's message: one image as an attachment under the text, or several as a Components
    V2 gallery in one card with the text and the buttons, so a set reads as one result."""
    main, extra, painting = _result_buttons(job_id, len(files), upscale, paint)
    if len(files) == 1:
        view = discord.ui.View(timeout=None)
        for button in (*main, *extra, *painting):
            view.add_item(button)
        return {"content": text, "files": list(files), "view": view}
    card = discord.ui.Container[discord.ui.LayoutView](
        discord.ui.TextDisplay[discord.ui.LayoutView](text),
        discord.ui.MediaGallery[discord.ui.LayoutView](
            *(discord.MediaGalleryItem(file, spoiler=file.spoiler) for file in files)
        ),
        discord.ui.ActionRow[Any](*main),
    )
    for row in (extra, painting):
        if row:
            card.add_item(discord.ui.ActionRow[Any](*row))
    layout = discord.ui.LayoutView(timeout=None)
    layout.add_item(card)
    return {"content": None, "files": list(files), "view": layout}


def progress_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view
