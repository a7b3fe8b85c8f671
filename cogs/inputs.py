"""The pictures an edit takes from Discord: attachments, a form's uploads, a message's images
(its attachments, then its embeds), and whether a message is one of the bot's own results.

Discord describes each picture before the bot fetches it; these checks run on that description
(no download), so a refusal comes before the acknowledgement.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Mapping, Sequence
from typing import Any

import discord

from bot.edits import InputImage
from bot.pictures.validation import AttachmentFacts, attachment_problem, prompt_problem

# The images the bot posts are named after their job, which lets "Edit image" on a result
# continue its chain.
RESULT_FILE = re.compile(r"(?:SPOILER_)?retouch-(?P<job_id>[0-9]{1,20})-(?P<n>[1-4])\.\w+")
MAX_MESSAGE_IMAGES = 4


def as_input(attachment: discord.Attachment) -> InputImage:
    return InputImage(
        url=attachment.url,
        filename=attachment.filename,
        content_type=attachment.content_type,
        size=attachment.size,
        width=attachment.width,
        height=attachment.height,
    )


def uploaded_input(payload: Mapping[str, Any]) -> InputImage:
    """A file a member put in a modal's upload, from the attachment object Discord resolved."""
    return InputImage(
        url=str(payload.get("url", "")),
        filename=str(payload.get("filename", "upload")),
        content_type=payload.get("content_type"),
        size=payload.get("size"),
        width=payload.get("width"),
        height=payload.get("height"),
    )


def facts(item: InputImage) -> AttachmentFacts:
    """What Discord told us of an image; an embedded image has no size, which the download caps."""
    return AttachmentFacts(item.filename, item.content_type, item.size or 0, item.width, item.height)


def first_problem(prompt: str, inputs: Sequence[InputImage]) -> str | None:
    found = prompt_problem(prompt)
    for item in inputs:
        found = found or attachment_problem(facts(item))
    return found


def _embedded(embed: discord.Embed) -> InputImage | None:
    """An embed's picture through Discord's media proxy (the only way the bot fetches it), with
    its type read from the file name, since embeds do not carry one."""
    media = embed.image if embed.image.url else embed.thumbnail
    url = media.proxy_url or ""
    filename = url.rsplit("/", 1)[-1].split("?", 1)[0]
    content_type, _ = mimetypes.guess_type(filename)
    if not url or content_type is None or not content_type.startswith("image/"):
        return None
    return InputImage(
        url=url, filename=filename, content_type=content_type, width=media.width, height=media.height
    )


def message_images(message: discord.Message) -> list[InputImage]:
    """Every picture on a message, attachments first, then images in its embeds."""
    found = [
        as_input(a) for a in message.attachments if a.width and (a.content_type or "").startswith("image/")
    ]
    found += [item for item in map(_embedded, message.embeds) if item is not None]
    return found[:MAX_MESSAGE_IMAGES]


def result_origin(message: discord.Message, bot_id: int | None) -> tuple[int, int] | None:
    """The job and output a message of the bot shows, from its first result file's name."""
    if bot_id is None or message.author.id != bot_id:
        return None
    for attachment in message.attachments:
        if (match := RESULT_FILE.fullmatch(attachment.filename)) is not None:
            return int(match["job_id"]), int(match["n"]) - 1
    return None
