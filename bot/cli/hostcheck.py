"""`python -m bot check-hosts`: one cheap masked edit per host, to see that each still works as
documented before members find out that it does not.

Each host gets the same small picture made here (gradients and shapes, so any change shows)
with a mask over its centre, at low quality, one image, 1K. The host client is called directly,
without the router, so a failing host is reported rather than failed over, and nothing touches
credits, the ledger or Discord. What the host said is read off the wire (a trace on this check's
own HTTP session): every HTTP status for "reachable" and "key accepted", and the status field of
each poll reply for "statuses seen", so a status the host has newly invented shows up by name.

The mask verdict compares the host's output with the picture outside the mask before any
compositing; the bot itself always lays the output over the original through the mask, so an
ignored mask costs quality at the edge, not the member's picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
from PIL import Image, ImageDraw, ImageOps
from yarl import URL

from bot.cli.oneshot import output_bytes, wait_until_final
from bot.pictures import images, masks, sizes
from bot.pictures.composite import changed_outside, same_shape
from bot.pictures.files import DownloadError, FileStore
from bot.pictures.images import ImageProblem
from bot.providers.base import (
    EditRequest,
    ErrorKind,
    ImageRef,
    Provider,
    ProviderError,
    Run,
    RunFailed,
    RunStatus,
)
from bot.providers.registry import SPECS
from bot.providers.settings import ProvidersSettings

SIDE = 1024
# The editable rectangle: the middle half of each side.
MASK_BOX = (SIDE // 4, SIDE // 4, SIDE * 3 // 4, SIDE * 3 // 4)
PROMPT = "Paint a red apple in the middle of the picture; leave everything else exactly as it is."
DEFAULT_TIMEOUT = 300.0
# Share of the pixels outside the mask that may change before the mask counts as only partly
# honoured, and from which it counts as ignored. Re-encoding noise stays far below the first.
HONOURED_BELOW = 0.05
IGNORED_FROM = 0.5
# The poll replies worth reading for a status: JSON objects of a modest size.
_MAX_STATUS_BODY = 256 * 1024
_KEY_REJECTED = (401, 403)
# How long a run left behind by a timeout or Ctrl-C may take to be cancelled at the host.
_CANCEL_WITHIN = 10.0


@dataclass(frozen=True)
class Picture:
    """The check's input: the picture, its editable area (255 = may change) and both as sent."""

    image: Image.Image
    editable: Image.Image
    png: bytes = field(repr=False)
    mask_png: bytes = field(repr=False)


def make_picture() -> Picture:
    """Gradients in every channel with flat shapes on top: any repaint shows up as changed pixels,
    and it compresses to a few hundred KB, well under what the hosts take inline."""
    ramp = Image.linear_gradient("L").resize((SIDE, SIDE))
    across = ramp.rotate(90)
    image = Image.merge("RGB", (across, ramp, ImageOps.invert(across)))
    draw = ImageDraw.Draw(image)
    draw.ellipse((64, 64, 320, 320), fill=(245, 245, 235))
    draw.rectangle((700, 660, 960, 960), fill=(25, 25, 40))
    draw.polygon([(800, 60), (960, 300), (640, 300)], fill=(230, 180, 20))
    draw.rectangle((420, 420, 600, 600), fill=(40, 120, 200))
    editable = Image.new("L", (SIDE, SIDE), 0)
    ImageDraw.Draw(editable).rectangle((MASK_BOX[0], MASK_BOX[1], MASK_BOX[2] - 1, MASK_BOX[3] - 1), fill=255)
    return Picture(image, editable, _png(image), masks.to_bw_mask(_png(editable), (SIDE, SIDE)))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def edit_request(picture: Picture) -> EditRequest:
    """The cheapest edit the bot can ask for, on the path a member's 1K edit takes."""
    size = (picture.image.width, picture.image.height)
    return EditRequest(
        job_id=0,
        prompt=PROMPT,
        images=[ImageRef(filename="check-hosts.png", data=picture.png, content_type="image/png")],
        mask=ImageRef(filename="check-hosts-mask.png", data=picture.mask_png, content_type="image/png"),
        quality="low",
        image_size="square_hd",
        resolution="1K",
        count=1,
        output_format="png",
        dimensions=sizes.dimensions("square_hd", "1K", size),
    )


@dataclass
class Wire:
    """What the host's API sent back during one check. Only answers from `api_host` count, so a
    refused download from the host's file storage is not taken for a refused key."""

    api_host: str | None
    http: list[int] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)

    def status(self, value: Any) -> None:
        if isinstance(value, str) and value and value not in self.statuses:
            self.statuses.append(value)

    def trace(self) -> aiohttp.TraceConfig:
        config = aiohttp.TraceConfig()
        config.on_request_end.append(self._answered)
        config.on_response_chunk_received.append(self._body)
        return config

    async def _answered(
        self, session: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceRequestEndParams
    ) -> None:
        if params.url.host == self.api_host:
            self.http.append(params.response.status)

    async def _body(
        self,
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceResponseChunkReceivedParams,
    ) -> None:
        """Polls are GETs; the polled hosts name the status `status_code` (Runflow) or `status`
        (fal, each::labs). Submit replies are skipped: each::labs answers a create with
        `"status": "success"`, which says the request was taken, not how the run went."""
        if (
            params.method != "GET"
            or params.url.host != self.api_host
            or len(params.chunk) > _MAX_STATUS_BODY
            or not params.chunk.startswith(b"{")
        ):
            return
        try:
            body = json.loads(params.chunk)
        except ValueError:
            return
        if isinstance(body, dict):
            self.status(body.get("status_code", body.get("status")))


@dataclass(frozen=True)
class Output:
    width: int
    height: int
    format: str


@dataclass
class HostReport:
    host: str
    http: list[int] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    seconds: float = 0.0
    output: Output | None = None
    usd_micros: int | None = None
    changed_outside: float | None = None
    problem: str | None = None
    """What went wrong and what to do, in one sentence; None when the check passed."""

    @property
    def passed(self) -> bool:
        return self.problem is None

    @property
    def reachable(self) -> bool:
        return bool(self.http)

    @property
    def key_accepted(self) -> bool | None:
        """None when no answer came back to judge by."""
        if not self.http:
            return None
        return not any(status in _KEY_REJECTED for status in self.http)


def mask_verdict(share: float | None, output: Output | None) -> str:
    if output is None:
        return "not measured (no output)"
    if share is None:
        return f"not measured (the output is {output.width}×{output.height}, another shape than the picture)"
    if share < HONOURED_BELOW:
        return f"honoured ({share:.1%} changed outside)"
    if share < IGNORED_FROM:
        return f"partly honoured ({share:.1%} changed outside)"
    return f"ignored ({share:.1%} changed outside)"


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def problem_for(error: ProviderError, host: str, http: Sequence[int]) -> str:
    """One sentence for the owner: what the host said and what to do about it."""
    message = _short(error.message)
    rejected = next((status for status in http if status in _KEY_REJECTED), None)
    if rejected is not None:
        return (
            f"key rejected (HTTP {rejected}: {message}); check providers.{host}.api_key "
            "or make a new key in the host's dashboard."
        )
    if not http:
        if error.kind is ErrorKind.UNAVAILABLE:
            return f"not reachable ({message}); check the network, any proxy, and providers.{host}.base_url."
        return (
            f"not sent ({message}); this host cannot take the check's built-in picture, so try "
            f"`python -m bot edit --host {host}` with an image URL instead."
        )
    if error.kind is ErrorKind.AUTH_FAILED:
        return f"the key works but the account was refused ({message}); check its funds or plan at the host."
    if error.kind is ErrorKind.RATE_LIMITED:
        return f"rate limited ({message}); wait a minute and check again."
    if error.kind is ErrorKind.UNAVAILABLE:
        return f"the host is unavailable or answered in an unexpected way ({message}); check again later, then see its status page."
    if error.kind is ErrorKind.CONTENT_REJECTED:
        return f"the host's safety system refused the built-in picture ({message}); check again, and report it if it repeats."
    if error.kind is ErrorKind.INVALID_REQUEST:
        return f"the host refused the request ({message}); its API may have changed, so update Retouch or report it."
    return f"the run failed at the host ({message}); check again, then see its status page if it repeats."


def _measure(picture: Picture, data: bytes) -> tuple[Output, float | None]:
    """The output's shape, and the share changed outside the mask (None when shapes differ)."""
    info = images.inspect(data)
    output = Output(info.width, info.height, info.content_type.removeprefix("image/").upper())
    if not same_shape(picture.image.size, (info.width, info.height)):
        return output, None
    with Image.open(io.BytesIO(data)) as opened:
        result = images.as_8bit(opened)
        result.load()
    if result.size != picture.image.size:
        result = result.resize(picture.image.size, Image.Resampling.LANCZOS)
    return output, changed_outside(picture.image, result, picture.editable)


async def _cancel_quietly(provider: Provider, submitting: asyncio.Task[Run]) -> None:
    """A run the check stopped waiting for (timeout, Ctrl-C) may still be billed, even one whose
    submit was on its way when the check stopped: wait briefly for its id, then ask the host to
    stop it where it can, without letting that take long or fail the report."""
    with contextlib.suppress(ProviderError, TimeoutError, aiohttp.ClientError):
        async with asyncio.timeout(_CANCEL_WITHIN):
            await provider.cancel(await submitting)


async def check_host(
    host: str, settings: ProvidersSettings, picture: Picture, store: FileStore, *, timeout: float
) -> HostReport:
    """One host's check; whatever the host does becomes the report's `problem`, never an exception."""
    report = HostReport(host)
    host_settings = getattr(settings, host)
    if host_settings.api_key is None:
        report.problem = f"no key; set providers.{host}.api_key to check this host."
        return report
    wire = Wire(URL(host_settings.base_url).host)
    # Our own names for the states seen, for a host that has no statuses to poll (OpenAI).
    states: list[str] = []
    started = time.monotonic()
    async with aiohttp.ClientSession(trace_configs=[wire.trace()]) as session:
        provider = SPECS[host].factory(host_settings, session)
        # Shielded: a submit already sent is finished even when the check is not, so that the
        # run it started can be cancelled.
        submitting = asyncio.ensure_future(provider.submit(edit_request(picture)))
        ended = False
        try:
            async with asyncio.timeout(timeout):
                run = await asyncio.shield(submitting)
                state = await wait_until_final(
                    provider, run, settings, lambda state: states.append(state.status.value)
                )
                ended = True
                if state.status is not RunStatus.SUCCEEDED or state.result is None:
                    raise state.error or RunFailed(f"the run ended {state.status.value}", host=host)
                report.usd_micros = state.result.usd_micros
                if not state.result.images:
                    raise RunFailed("the run succeeded without an image", host=host)
                data = await output_bytes(state.result.images[0], session, store)
                report.output, report.changed_outside = await asyncio.to_thread(_measure, picture, data)
        except TimeoutError:
            last = states[-1] if states else "not accepted yet"
            report.problem = (
                f"no result within {timeout:g} s (last status: {last}); check again later, "
                "or allow longer with --timeout."
            )
        except ProviderError as error:
            report.problem = problem_for(error, host, wire.http)
        except DownloadError as error:
            report.problem = f"the output could not be downloaded ({_short(str(error))}); check again later."
        except ImageProblem as error:
            report.problem = (
                f"the output is not a usable image ({_short(str(error))}); report it to the host."
            )
        finally:
            if not ended:
                await _cancel_quietly(provider, submitting)
    report.seconds = time.monotonic() - started
    report.http = wire.http
    report.statuses = wire.statuses or list(dict.fromkeys(states))
    return report


async def check_hosts(
    settings: ProvidersSettings,
    hosts: Sequence[str],
    store: FileStore,
    *,
    timeout: float,
    done: Callable[[HostReport], None],
) -> list[HostReport]:
    """Every host checked at once, each bounded by `timeout`; `done` hears of each as it ends."""
    picture = await asyncio.to_thread(make_picture)

    async def one(host: str) -> HostReport:
        report = await check_host(host, settings, picture, store, timeout=timeout)
        done(report)
        return report

    return list(await asyncio.gather(*(one(host) for host in hosts)))


def _yes_no(value: bool | None) -> str:
    return "unknown (no answer)" if value is None else "yes" if value else "no"


def render(report: HostReport) -> list[str]:
    """The report as lines for the terminal: a verdict, then one fact a line."""
    head = f"{report.host}: passed" if report.passed else f"{report.host}: FAILED, {report.problem}"
    http = ", ".join(str(status) for status in dict.fromkeys(report.http))
    output = report.output
    cost = "not reported" if report.usd_micros is None else f"${report.usd_micros / 1_000_000:.4f}"
    rows = [
        ("reachable", f"yes (HTTP {http})" if report.reachable else "no"),
        ("key accepted", _yes_no(report.key_accepted)),
        ("statuses seen", ", ".join(report.statuses) or "none"),
        ("output", f"{output.width}×{output.height} {output.format}" if output else "none"),
        ("time", f"{report.seconds:.1f} s"),
        ("cost reported", cost),
        ("mask", mask_verdict(report.changed_outside, output)),
    ]
    return [head, *(f"  {name:<14} {value}" for name, value in rows)]
