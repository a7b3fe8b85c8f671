"""What every edit host looks like to the rest of the bot.

Hosts differ in transport (queue + poll, callbacks, one long multipart request) but the job
runner only ever sees these types, so failover and recovery are written once.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

QUALITIES = ("low", "medium", "high")
# The presets a host that takes only preset names can make within gpt-image-2's limits. The
# presets are fal's (Runflow and each::labs take the same names): `square` is 512x512 and the
# 16:9 ones 1024x576, under the model's 655,360-pixel minimum, so only these and `auto` (the
# model's own choice) are offered where no exact size can be sent.
PRESET_SIZES = frozenset({"auto", "square_hd", "portrait_4_3", "landscape_4_3"})


@dataclass(frozen=True)
class ImageRef:
    """A reference image: a URL the host can fetch, or bytes we send ourselves."""

    filename: str
    url: str | None = None
    data: bytes | None = field(default=None, repr=False)
    content_type: str = "image/png"


@dataclass(frozen=True)
class EditRequest:
    job_id: int
    prompt: str
    images: Sequence[ImageRef]
    mask: ImageRef | None = None
    quality: str = "high"
    image_size: str = "auto"
    resolution: str = "1K"
    count: int = 1
    output_format: str = "png"
    dimensions: tuple[int, int] | None = None
    """Width and height to make, from `bot.pictures.sizes` (always within the model's limits); None where
    the first image's shape is unknown (the command-line edit). Hosts that take exact sizes send
    it; preset-only hosts send `image_size`, which the router keeps to their `image_sizes`."""


@dataclass(frozen=True)
class Run:
    """A submitted run; `data` keeps whatever else the host needs to find it again."""

    host: str
    run_id: str
    data: Mapping[str, Any] = field(default_factory=dict)


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


@dataclass(frozen=True)
class OutputImage:
    url: str | None = None
    data: bytes | None = field(default=None, repr=False)
    content_type: str | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class EditResult:
    images: Sequence[OutputImage]
    seed: int | None = None
    duration_ms: int | None = None
    nsfw: bool = False
    usd_micros: int | None = None


@dataclass(frozen=True)
class RunState:
    status: RunStatus
    queue_position: int | None = None
    result: EditResult | None = None
    error: ProviderError | None = None


class ErrorKind(StrEnum):
    INVALID_REQUEST = "invalid_request"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    CONTENT_REJECTED = "content_rejected"
    AUTH_FAILED = "auth_failed"
    RUN_FAILED = "run_failed"


class ProviderError(Exception):
    """A host said no. `kind` decides retry, failover and what the member is told."""

    kind: ErrorKind = ErrorKind.UNAVAILABLE

    def __init__(self, message: str, *, host: str = "", code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.host = host
        self.code = code


class InvalidRequest(ProviderError):
    """Our fault or the member's: retrying or failing over would only fail again."""

    kind = ErrorKind.INVALID_REQUEST


class RateLimited(ProviderError):
    kind = ErrorKind.RATE_LIMITED

    def __init__(
        self, message: str, *, retry_after: float | None, host: str = "", code: str | None = None
    ) -> None:
        super().__init__(message, host=host, code=code)
        self.retry_after = retry_after


class Unavailable(ProviderError):
    """5xx, timeouts, connection errors, unreadable replies: retry, then fail over."""

    kind = ErrorKind.UNAVAILABLE


class ContentRejected(ProviderError):
    """The host's safety system refused the prompt or an image."""

    kind = ErrorKind.CONTENT_REJECTED


class AuthFailed(ProviderError):
    """The owner's key is wrong or out of funds; the member cannot fix it."""

    kind = ErrorKind.AUTH_FAILED


class RunFailed(ProviderError):
    """The run was accepted and then failed at the host for a reason of its own."""

    kind = ErrorKind.RUN_FAILED


def url_or_data_uri(image: ImageRef, host: str) -> str:
    """The image as URL-taking hosts accept it: its URL, else its bytes inline as a data URI."""
    if image.url is not None:
        return image.url
    if image.data is None:
        raise InvalidRequest(f"image {image.filename} has neither a URL nor bytes", host=host)
    return f"data:{image.content_type};base64,{base64.b64encode(image.data).decode('ascii')}"


def require_preset_size(request: EditRequest, host: str) -> None:
    """Refuse what a host with only preset sizes would make wrongly: above 1K it would quietly
    make about 1K (charged at the resolution asked for, delivered smaller), and a preset outside
    PRESET_SIZES is under the model's minimum. The router already keeps such requests away;
    this is the last guard."""
    if request.resolution != "1K":
        raise InvalidRequest(
            f"{host} makes only its preset sizes (1K), not a {request.resolution} image", host=host
        )
    if request.image_size not in PRESET_SIZES:
        raise InvalidRequest(
            f"{host} cannot make the {request.image_size} preset within the model's limits", host=host
        )


def finished_result(state: RunState, run: Run, host: str) -> EditResult:
    """The result of a run that has ended, or the error it ended with."""
    if state.error is not None:
        raise state.error
    if state.result is None:
        raise InvalidRequest(f"run {run.run_id} has not finished ({state.status})", host=host)
    return state.result


class Provider(Protocol):
    name: str
    resolutions: frozenset[str]
    """The RESOLUTIONS this host can make; a request for another must not be sent to it, as it
    would be charged at that resolution and delivered at a smaller one."""
    image_sizes: frozenset[str]
    """The IMAGE_SIZES this host makes within the model's limits: all of them where it takes an
    exact size, PRESET_SIZES where it takes only preset names."""

    async def submit(self, request: EditRequest, *, callback_url: str | None = None) -> Run: ...

    async def status(self, run: Run) -> RunState: ...

    async def result(self, run: Run) -> EditResult: ...

    async def cancel(self, run: Run) -> bool:
        """Ask the host to stop; False where the host cannot (the result is then ignored)."""
        ...

    async def close(self) -> None: ...
