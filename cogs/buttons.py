"""The buttons under progress and results, alive across restarts.

Each is a `DynamicItem` whose custom_id holds only a job id (and an output index). The id
carries no authority: anyone may Refine, Retry or Use a result and pays with their own
credits, while Cancel and Delete check the job's owner (or Manage Server) in the database.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import discord

from bot.edits import EditOptions, InputImage
from bot.providers.base import RESOLUTIONS
from cogs import render
from cogs.flow import as_input, can_moderate, start_edit
from storage.jobs import Job

if TYPE_CHECKING:
    from bot.app import Retouch

    Interaction = discord.Interaction[Retouch]

# A text input in a modal holds at most 4000 characters (Discord's limit).
MODAL_PROMPT_MAX = 4000
GONE = "That edit no longer exists."


async def _job(interaction: Interaction, job_id: int) -> Job | None:
    job = await interaction.client.jobs.get(job_id)
    if job is None:
        await interaction.response.send_message(GONE, ephemeral=True)
    return job


async def _owned_job(interaction: Interaction, job_id: int, verb: str) -> Job | None:
    """The job when the presser asked for it or moderates here; otherwise they are told no."""
    job = await _job(interaction, job_id)
    if job is not None and interaction.user.id != job.user_id and not can_moderate(interaction):
        await interaction.response.send_message(
            f"Only the member who asked for this edit, or a moderator, can {verb} it.", ephemeral=True
        )
        return None
    return job


def _result_images(message: discord.Message | None) -> list[discord.Attachment]:
    return [a for a in (message.attachments if message else []) if a.width]


class _JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"$^"):
    """A button about one job: `retouch:<action>:<job id>[:<output>]`."""

    action = ""
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
    data: Mapping[str, Any] = interaction.data or {}
    parent = await _job(interaction, int(match["job_id"]))
    if parent is None:
        return True
    output = int(match["output"])
    images = _result_images(interaction.message)
    if output >= len(images):
        await interaction.response.send_message(
            "That result has no image left to refine; run a new /edit instead.", ephemeral=True
        )
        return True
    await start_edit(
        interaction,
        prompt=submitted_values(data).get("prompt", ""),
        inputs=[as_input(images[output])],
        options=EditOptions.from_dict(parent.options),
        kind="refine",
        parent_id=parent.id,
        parent_output=output,
    )
    return True


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
    data: Mapping[str, Any] = interaction.data or {}
    parent = await _job(interaction, int(match["job_id"]))
    if parent is None:
        return True
    chosen = submitted_choices(data)
    size = (chosen.get("resolution") or [""])[0]
    picked = (chosen.get("output") or ["0"])[0]
    output = int(picked) if picked.isdigit() else -1
    images = _result_images(interaction.message)
    if size not in upscale_sizes(parent, interaction.client.jobs.resolutions):
        await interaction.response.send_message(
            "This bot's image host cannot make that size any more; pick another.", ephemeral=True
        )
        return True
    if not 0 <= output < len(images):
        await interaction.response.send_message(
            "That result has no image left to upscale; run a new /edit instead.", ephemeral=True
        )
        return True
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
    return True


class RefineButton(_JobButton, template=_template("refine")):
    """Refine (or, with an output index, "Use N"): this result becomes the next reference."""

    action = "refine"
    label = "Refine"
    emoji: str | None = "✏️"
    style = discord.ButtonStyle.primary

    async def callback(self, interaction: Interaction) -> None:  # type: ignore[override]
        job = await _job(interaction, self.job_id)
        if job is not None:
            await interaction.response.send_modal(RefineModal(job, self.output or 0))


class UseButton(RefineButton, template=_template("use")):
    action = "use"
    label = "Use"
    emoji = None
    style = discord.ButtonStyle.secondary


class UpscaleButton(_JobButton, template=_template("upscale")):
    """A larger copy of the result, where the bot's hosts can make 2K or 4K."""

    action = "upscale"
    label = "Upscale"
    emoji = "🔍"

    async def callback(self, interaction: Interaction) -> None:  # type: ignore[override]
        job = await _job(interaction, self.job_id)
        if job is None:
            return
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

    action = "retry"
    label = "Retry"
    emoji = "🔁"

    async def callback(self, interaction: Interaction) -> None:  # type: ignore[override]
        job = await _job(interaction, self.job_id)
        if job is None:
            return
        await start_edit(
            interaction,
            prompt=job.prompt,
            inputs=[InputImage(**item) for item in job.inputs],
            options=EditOptions.from_dict(job.options),
            kind="retry",
            parent_id=job.id,
        )


class VaryButton(_JobButton, template=_template("vary")):
    """Another take: the same prompt again, starting from this result instead of the original."""

    action = "vary"
    label = "Vary"
    emoji = "🎲"

    async def callback(self, interaction: Interaction) -> None:  # type: ignore[override]
        job = await _job(interaction, self.job_id)
        if job is None:
            return
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


class InfoButton(_JobButton, template=_template("info")):
    action = "info"
    label = "Info"
    emoji = "ℹ️"

    async def callback(self, interaction: Interaction) -> None:  # type: ignore[override]
        job = await _job(interaction, self.job_id)
        if job is None:
            return
        chain = await interaction.client.jobs.chain(job.id)
        await interaction.response.send_message(
            embed=render.info_embed(job, chain), ephemeral=True, allowed_mentions=render.NO_PINGS
        )


class DeleteButton(_JobButton, template=_template("delete")):
    action = "delete"
    label = "Delete"
    emoji = "🗑️"
    style = discord.ButtonStyle.danger

    async def callback(self, interaction: Interaction) -> None:  # type: ignore[override]
        if await _owned_job(interaction, self.job_id, "delete") is None:
            return
        await interaction.response.defer()
        if interaction.message is not None:
            await interaction.message.delete()


class CancelButton(_JobButton, template=_template("cancel")):
    action = "cancel"
    label = "Cancel"
    emoji = "✖️"
    style = discord.ButtonStyle.danger

    async def callback(self, interaction: Interaction) -> None:  # type: ignore[override]
        job = await _owned_job(interaction, self.job_id, "cancel")
        if job is None:
            return
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
    InfoButton,
    DeleteButton,
    CancelButton,
)


def _result_buttons(job_id: int, outputs: int, upscale: bool) -> tuple[list[_JobButton], list[_JobButton]]:
    """The buttons under a result: the actions on the whole edit, then Use N and Upscale."""
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
    return main, extra


def result_message(job_id: int, text: str, files: Sequence[discord.File], *, upscale: bool) -> dict[str, Any]:
    """A result's message: one image as an attachment under the text, or several as a Components
    V2 gallery in one card with the text and the buttons, so a set reads as one result."""
    main, extra = _result_buttons(job_id, len(files), upscale)
    if len(files) == 1:
        view = discord.ui.View(timeout=None)
        for button in (*main, *extra):
            view.add_item(button)
        return {"content": text, "files": list(files), "view": view}
    card = discord.ui.Container[discord.ui.LayoutView](
        discord.ui.TextDisplay[discord.ui.LayoutView](text),
        discord.ui.MediaGallery[discord.ui.LayoutView](
            *(discord.MediaGalleryItem(file, spoiler=file.spoiler) for file in files)
        ),
        discord.ui.ActionRow[Any](*main),
    )
    if extra:
        card.add_item(discord.ui.ActionRow[Any](*extra))
    layout = discord.ui.LayoutView(timeout=None)
    layout.add_item(card)
    return {"content": None, "files": list(files), "view": layout}


def progress_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view
