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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import discord

from bot.edits import InputImage, JobKind
from bot.jobs.access import Act
from cogs import render
from cogs.errors import answering
from cogs.flow import start_edit
from cogs.forms import RefineModal, UpscaleModal, job_for, result_images
from cogs.inputs import as_input
from cogs.interactions import actor_of
from cogs.paint import grant_for, offer_painter
from storage.jobs import Job

if TYPE_CHECKING:
    from cogs.interactions import Interaction


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
            await self.run(interaction, await job_for(interaction, self.job_id, self.action))

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
        prices = interaction.client.admission.upscale_offers(job)
        if not prices:
            await interaction.response.send_message(
                "This edit is already as large as this bot's image host can make.", ephemeral=True
            )
            return
        outputs = len(result_images(interaction.message))
        await interaction.response.send_modal(UpscaleModal(job, prices, outputs))


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
            options=job.options,
            kind=JobKind.RETRY,
            parent_id=job.id,
        )


class VaryButton(_JobButton, template=_template("vary")):
    """Another take: the same prompt again, starting from this result instead of the original."""

    action = Act.VARY
    label = "Vary"
    emoji = "🎲"

    async def run(self, interaction: Interaction, job: Job) -> None:
        results = result_images(interaction.message)
        if not results:
            await interaction.response.send_message(
                "That result has no image left to vary; run a new /edit instead.", ephemeral=True
            )
            return
        await start_edit(
            interaction,
            prompt=job.prompt,
            inputs=[as_input(results[0])],
            options=job.options,
            kind=JobKind.VARY,
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
        images = result_images(interaction.message)
        if output >= len(images):
            await interaction.response.send_message(
                "That result has no image left to paint on; run a new /edit instead.", ephemeral=True
            )
            return
        grant = grant_for(
            interaction,
            as_input(images[output]),
            job.options,
            prompt=job.prompt,
            kind=JobKind.REFINE,
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
