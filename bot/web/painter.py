"""The mask painter's links and what the page may do with them, Discord-free.

A Paint press records a grant (who, which picture, where the result goes, the interaction to
deliver through) and gives the member a link to the bot's own page. The link is the only key
to the grant, so it is signed (HMAC-SHA256) over the grant's id, the member and the expiry:
changing any of them breaks the signature. The signing key is derived from the Discord token
rather than drawn per process, so a page opened just before a restart still submits after it,
no extra secret has to be configured, and resetting the token (the owner's answer to any leak)
invalidates every link. "Used once" is a column the submit claims atomically in the database,
so it survives restarts as well.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import re
import secrets
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from PIL import Image

from bot.credits import CreditService
from bot.edits import TOKEN_LIFETIME, EditOptions, InputImage, JobKind
from bot.jobs import JobService
from bot.pictures import image_costs, masks, memory
from bot.pictures.files import FileStore
from bot.pictures.images import ImageProblem
from bot.pictures.validation import AttachmentFacts
from bot.runtime.clock import SYSTEM_CLOCK
from storage.jobs import JobState
from storage.paint_links import PaintLinkRepository, PaintLinkRow

# Discord's interaction token lives as long; the link must not outlive the way back to the channel.
LINK_TTL = TOKEN_LIFETIME
QUALITIES = ("low", "medium", "high")
COUNTS = (1, 2, 3, 4)
MAX_PICTURE_BYTES = 25 * 1024 * 1024
TOKEN = re.compile(
    r"(?P<id>[0-9a-f]{32})\.(?P<user>[0-9]{1,20})\.(?P<exp>[0-9]{1,12})\.(?P<sig>[0-9a-f]{64})"
)

FORGED = "This painter link is not valid; press Paint in Discord again to get a new one."
OTHER_MEMBER = "This painter link was made for another member; press Paint in Discord to get your own."
EXPIRED = "This painter link has expired (links last 15 minutes); press Paint in Discord again."
USED = "This painter link has already been used for an edit; press Paint in Discord again for another."
GONE = "The picture could not be fetched from Discord any more; press Paint on a message that still has it."


@dataclass(frozen=True)
class Grant:
    """What a Paint press allows: an edit of `image` by this member, delivered where it was pressed."""

    user_id: int
    guild_id: int | None
    channel_id: int
    image: InputImage
    options: EditOptions
    prompt: str = ""
    references: Sequence[InputImage] = ()
    kind: JobKind = JobKind.EDIT
    parent_id: int | None = None
    parent_output: int | None = None
    role_ids: Sequence[int] = ()
    application_id: int | None = None
    interaction_token: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grant:
        return cls(
            **{
                **data,
                "image": InputImage(**data["image"]),
                "options": EditOptions.from_dict(data["options"]),
                "kind": JobKind(data.get("kind", JobKind.EDIT)),
                "references": [InputImage(**item) for item in data.get("references", [])],
                "role_ids": list(data.get("role_ids", [])),
            }
        )


@dataclass(frozen=True)
class Choice:
    """What the member chose on the page; the mask is a kept white-is-editable PNG."""

    prompt: str
    quality: str
    count: int
    mask: InputImage


@dataclass(frozen=True)
class Outcome:
    job_id: int | None = None
    refusal: str | None = None


@dataclass(frozen=True)
class Link:
    """An opened link: its row and the grant it holds."""

    row: PaintLinkRow
    grant: Grant = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "grant", Grant.from_dict(self.row.grant))

    @property
    def token_expires_at(self) -> datetime:
        return self.row.created_at + TOKEN_LIFETIME


class LinkRefused(Exception):
    """The link cannot be used; `status` is the HTTP answer, the message what the member reads."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Desk(Protocol):
    """Queues a painted edit as its member, with every usual check; the Discord side implements it
    because the result's status message is posted through the Paint interaction."""

    async def submit(self, link: Link, choice: Choice) -> Outcome: ...


class Painter:
    def __init__(
        self,
        *,
        public_url: str,
        key: bytes,
        repo: PaintLinkRepository,
        jobs: JobService,
        credits: CreditService,
        files: FileStore,
        session: aiohttp.ClientSession,
        cdn_hosts: Collection[str] | None,
        clock: Callable[[], datetime] = SYSTEM_CLOCK.now,
    ) -> None:
        self._base = public_url.rstrip("/")
        self._key = key
        self._repo = repo
        self._jobs = jobs
        self._credits = credits
        self._files = files
        self._session = session
        self._cdn_hosts = cdn_hosts
        self.clock = clock
        self.desk: Desk | None = None

    def _sign(self, link_id: str, user_id: int, expires: int) -> str:
        return hmac.new(self._key, f"{link_id}.{user_id}.{expires}".encode(), hashlib.sha256).hexdigest()

    def token(self, link_id: str, user_id: int, expires: int) -> str:
        return f"{link_id}.{user_id}.{expires}.{self._sign(link_id, user_id, expires)}"

    async def issue(self, grant: Grant) -> str:
        """Record the grant and return the member's link to the page.

        Links past their lifetime are forgotten here, a lifetime late (their page keeps saying
        "expired" meanwhile), so the table holds about a lifetime of Paint presses however long
        the bot runs, without a task of its own."""
        now = self.clock()
        expires = now + LINK_TTL
        link_id = secrets.token_hex(16)
        await self._repo.prune(expired_before=now - LINK_TTL)
        await self._repo.insert(
            link_id,
            user_id=grant.user_id,
            guild_id=grant.guild_id,
            channel_id=grant.channel_id,
            grant=grant.to_dict(),
            created_at=now,
            expires_at=expires,
        )
        return f"{self._base}/paint/{self.token(link_id, grant.user_id, int(expires.timestamp()))}/"

    async def open(self, token: str, *, unused: bool = True) -> Link:
        """The link `token` names, when it is genuine, the member's, in time and (with `unused`)
        not yet used; LinkRefused otherwise."""
        match = TOKEN.fullmatch(token)
        if match is None or not hmac.compare_digest(
            self._sign(match["id"], int(match["user"]), int(match["exp"])), match["sig"]
        ):
            raise LinkRefused(403, FORGED)
        row = await self._repo.get(match["id"])
        if row is None:
            raise LinkRefused(403, FORGED)
        if row.user_id != int(match["user"]):
            raise LinkRefused(403, OTHER_MEMBER)
        if unused and row.used_at is not None:
            raise LinkRefused(410, USED)
        if unused and row.expires_at <= self.clock():
            raise LinkRefused(410, EXPIRED)
        return Link(row)

    async def offer(self, link: Link) -> dict[str, Any]:
        """What the page shows beside the picture: the prefilled choices, every price and the balance."""
        grant = link.grant
        balance = await self._credits.balance(grant.guild_id or 0, grant.user_id, grant.role_ids)
        prices = {
            quality: {
                str(count): self._jobs.estimate(replace(grant.options, quality=quality, count=count)).credits
                for count in COUNTS
            }
            for quality in QUALITIES
        }
        return {
            "prompt": grant.prompt,
            "quality": grant.options.quality,
            "count": grant.options.count,
            "prices": prices,
            "balance": balance.available,
            "private": grant.options.private,
            "expires_at": int(link.row.expires_at.timestamp()),
        }

    async def picture(self, link: Link) -> bytes:
        """The picture's bytes from Discord's CDN (the page may load nothing from elsewhere)."""
        return await self._files.download(
            self._session, link.grant.image.url, max_bytes=MAX_PICTURE_BYTES, allowed_hosts=self._cdn_hosts
        )

    async def keep_mask(self, link: Link, data: bytes) -> InputImage:
        """Check the painted mask against the picture and keep it; ImageProblem says what is wrong."""
        width, height = await asyncio.to_thread(_png_size, data)
        facts = AttachmentFacts("mask.png", "image/png", len(data), width, height)
        image = link.grant.image
        problem = masks.mask_problem(
            facts,
            AttachmentFacts(image.filename, image.content_type, image.size or 0, image.width, image.height),
        )
        if problem is not None:
            raise ImageProblem(problem)
        # Decoding a painted mask (up to the picture's 40 megapixels) is pixel work like any other:
        # under the memory budget, so a burst of submits cannot take the process past its bound.
        await memory.shared().run(image_costs.bw_mask_cost, masks.to_bw_mask, data, (width, height))
        path = self._files.staging_path(f"painted-{link.row.id}.png")
        await self._files.write(path, data)
        return InputImage(
            url="",
            filename="mask.png",
            content_type="image/png",
            size=len(data),
            width=width,
            height=height,
            path=str(path),
        )

    async def submit(self, link: Link, choice: Choice) -> Outcome:
        """Claim the link (once, ever) and hand the edit to the desk; the outcome is recorded for
        the page's status."""
        staged = Path(choice.mask.path or "")
        if not await self._repo.claim(link.row.id, self.clock()):
            await self._files.discard(staged)
            raise LinkRefused(410, USED)
        assert self.desk is not None, "the Discord side sets the desk at start"
        outcome = await self.desk.submit(link, choice)
        await self._repo.settle(link.row.id, job_id=outcome.job_id, refusal=outcome.refusal)
        if outcome.job_id is None:
            # Refused: no edit will move the staged mask into its folder.
            await self._files.discard(staged)
        return outcome

    async def status(self, link: Link) -> dict[str, Any]:
        """What became of the link's submit, for the page to show."""
        row = link.row
        if row.refusal is not None:
            return {"state": "refused", "message": row.refusal}
        if row.job_id is None:
            return {"state": "unused" if row.used_at is None else "submitting"}
        job = await self._jobs.get(row.job_id)
        if job is None:
            return {"state": "failed", "message": "This edit is no longer kept."}
        answer: dict[str, Any] = {"state": job.state.value, "job": job.id}
        if job.state is JobState.DONE and job.result_message_id is not None:
            where = job.guild_id if job.guild_id is not None else "@me"
            answer["message_url"] = (
                f"https://discord.com/channels/{where}/{job.channel_id}/{job.result_message_id}"
            )
        return answer


def _png_size(data: bytes) -> tuple[int, int]:
    """The size of a PNG the page sent; ImageProblem when it is not one."""
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            return image.size
    except Exception as exc:
        raise ImageProblem(masks.UNREADABLE) from exc
