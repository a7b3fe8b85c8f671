"""Turning jobs into the text members read."""

from __future__ import annotations

from collections.abc import Sequence

import discord

from bot.jobs import Progress, ResultFile
from storage.jobs import Job, JobState

PROMPT_PREVIEW = 300
NO_PINGS = discord.AllowedMentions.none()
ONLY_USERS = discord.AllowedMentions(everyone=False, roles=False, users=True, replied_user=False)


def quote_prompt(prompt: str) -> str:
    """The prompt as a one-line quote: shortened, markdown and mentions neutralised."""
    flat = " ".join(prompt.split())
    if len(flat) > PROMPT_PREVIEW:
        flat = flat[: PROMPT_PREVIEW - 1] + "…"
    return discord.utils.escape_mentions(discord.utils.escape_markdown(flat))


def progress_text(job: Job, progress: Progress) -> str:
    head = f"> {quote_prompt(job.prompt)}\n"
    if progress.state is JobState.QUEUED:
        place = f" — position {progress.queue_position}" if progress.queue_position else ""
        return head + f"⏳ Waiting in line{place}."
    if progress.state is JobState.SUBMITTING:
        return head + "⏳ Sending to the image host…"
    if progress.state is JobState.RUNNING:
        elapsed = f" ({int(progress.elapsed)} s)" if progress.elapsed is not None else ""
        return head + f"🎨 Editing{elapsed}… this usually takes 15–40 seconds."
    return head + "📦 Fetching the result…"


def result_text(job: Job, files: Sequence[ResultFile], *, mention: bool) -> str:
    who = f"<@{job.user_id}> " if mention else ""
    seconds = ""
    if job.submitted_at is not None:
        seconds = f" · {int((discord.utils.utcnow() - job.submitted_at).total_seconds())} s"
    shrunk = " · shrunk to fit Discord's upload limit" if any(f.shrunk for f in files) else ""
    return f"{who}> {quote_prompt(job.prompt)}\n✅ Edit #{job.id}{seconds}{shrunk}"


def failure_text(job: Job, message: str, *, mention: bool) -> str:
    who = f"<@{job.user_id}> " if mention else ""
    return f"{who}> {quote_prompt(job.prompt)}\n❌ {message}"
