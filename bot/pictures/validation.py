"""Checks that answer a member before anything is queued.

These run on what Discord already told us about an attachment (type, size, dimensions), so
they are cheap enough to run before deferring and their answers can be private.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.pictures.images import MAX_PIXELS, WEBP_MAX_PIXELS

ACCEPTED_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
MAX_INPUT_BYTES = 25 * 1024 * 1024
MAX_INPUT_SIDE = 8192
MIN_INPUT_SIDE = 16
# fal documents `prompt` minLength 2 for gpt-image-2. Applied whatever hosts are configured: the
# router may fail over to fal, a Retry may land there, and a one-character prompt says nothing
# worth paying an edit for on any host.
MIN_PROMPT_LENGTH = 2
# GPT Image 2's own limit, the same on every host.
MAX_PROMPT_LENGTH = 20_000


@dataclass(frozen=True)
class AttachmentFacts:
    filename: str
    content_type: str | None
    size: int
    width: int | None
    height: int | None


def attachment_problem(facts: AttachmentFacts) -> str | None:
    """One sentence saying what is wrong and what to do, or None when the file looks usable."""
    # The name is shown in a code span, where Discord shows text as typed; a backtick would end it.
    name = facts.filename.replace("`", "'")
    content_type = (facts.content_type or "").split(";")[0].strip().lower()
    if content_type not in ACCEPTED_TYPES or facts.width is None or facts.height is None:
        return f"`{name}` is not an image I can edit; attach a PNG, JPEG, WebP or GIF."
    if facts.size > MAX_INPUT_BYTES:
        size = facts.size / 1048576
        return f"`{name}` is {size:.1f} MiB; attach an image under {MAX_INPUT_BYTES // 1048576} MiB."
    megapixels = facts.width * facts.height / 1_000_000
    if facts.width * facts.height > MAX_PIXELS:
        return (
            f"`{name}` is {megapixels:.0f} megapixels; "
            f"attach one of at most {MAX_PIXELS // 1_000_000} megapixels."
        )
    if content_type == "image/webp" and facts.width * facts.height > WEBP_MAX_PIXELS:
        return (
            f"`{name}` is a {megapixels:.0f}-megapixel WebP; attach it as a PNG or JPEG, "
            f"or as a WebP of at most {WEBP_MAX_PIXELS // 1_000_000} megapixels."
        )
    if max(facts.width, facts.height) > MAX_INPUT_SIDE:
        return (
            f"`{name}` is {facts.width}×{facts.height} pixels; "
            f"attach one no larger than {MAX_INPUT_SIDE} pixels on a side."
        )
    if min(facts.width, facts.height) < MIN_INPUT_SIDE:
        return f"`{name}` is only {facts.width}×{facts.height} pixels; attach a larger image."
    return None


def prompt_problem(prompt: str) -> str | None:
    text = clean_prompt(prompt).strip()
    if not text:
        return "The prompt is empty; say what to change, for example “make the sky stormy”."
    if len(text) < MIN_PROMPT_LENGTH:
        return (
            f"The prompt is too short; say what to change in at least {MIN_PROMPT_LENGTH} characters, "
            "for example “make the sky stormy”."
        )
    if len(text) > MAX_PROMPT_LENGTH:
        return f"The prompt is {len(text)} characters; keep it to {MAX_PROMPT_LENGTH} at most."
    return None


# C0 and C1 control characters, except the newline and tab a modal's paragraph input can hold.
_CONTROLS = dict.fromkeys(code for code in (*range(0x20), *range(0x7F, 0xA0)) if chr(code) not in "\n\t")


def clean_prompt(prompt: str) -> str:
    """The prompt without control characters, to run before `prompt_problem`.

    Invisible bytes would let a prompt of nothing pass the emptiness check and be paid for, and
    NUL is refused by PostgreSQL text columns, where the job table is meant to move.
    Carriage returns become newlines rather than vanish, so pasted lines stay apart.
    """
    return prompt.replace("\r\n", "\n").replace("\r", "\n").translate(_CONTROLS)
