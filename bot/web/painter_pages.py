"""The painter's routes on the bot's web server: the page, its picture and data, the submit
and the status. Every route opens the link first, so a forged, expired, reused or other
member's link gets a page (or JSON) that says so and what to do instead."""

from __future__ import annotations

import asyncio
import html
import logging
from pathlib import Path

from aiohttp import BodyPartReader, web

from bot.pictures.files import DownloadError
from bot.pictures.images import ImageProblem
from bot.web.painter import COUNTS, GONE, QUALITIES, Choice, Link, LinkRefused, Painter

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("web_static")
STATIC_FILES = {"painter.js": "text/javascript", "painter.css": "text/css"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# A mask of a 4K picture compresses to far less; this bounds what a page can make the bot read.
MAX_MASK_BYTES = 16 * 1024 * 1024
MAX_PROMPT_BYTES = 64 * 1024
SUBMIT_TIMEOUT = 60.0
PAINTER_KEY = web.AppKey("painter", Painter)

REFUSAL_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Retouch painter</title><link rel="stylesheet" href="/paint-static/painter.css"></head>
<body class="refused"><main><h1>Retouch painter</h1><p id="refusal">{message}</p></main></body></html>
"""


def _refused(error: LinkRefused) -> web.Response:
    body = REFUSAL_PAGE.format(message=html.escape(error.message))
    return web.Response(text=body, status=error.status, content_type="text/html", headers=HEADERS)


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers=HEADERS)


async def _link(request: web.Request, *, unused: bool = True) -> Link:
    return await request.app[PAINTER_KEY].open(request.match_info["token"], unused=unused)


async def page(request: web.Request) -> web.Response:
    try:
        await _link(request)
    except LinkRefused as error:
        return _refused(error)
    body = await asyncio.to_thread((STATIC / "painter.html").read_bytes)
    return web.Response(body=body, content_type="text/html", headers=HEADERS)


async def state(request: web.Request) -> web.Response:
    try:
        link = await _link(request)
    except LinkRefused as error:
        return _json({"error": error.message}, error.status)
    return _json(await request.app[PAINTER_KEY].offer(link))


async def picture(request: web.Request) -> web.Response:
    try:
        link = await _link(request)
        data = await request.app[PAINTER_KEY].picture(link)
    except LinkRefused as error:
        return _refused(error)
    except DownloadError as error:
        log.info("painter: picture not fetched (%s)", error)
        return _refused(LinkRefused(404, GONE))
    content_type = link.grant.image.content_type or "application/octet-stream"
    return web.Response(body=data, content_type=content_type, headers=HEADERS)


async def _form(request: web.Request) -> tuple[dict[str, str], bytes]:
    """The submit's fields and mask, read within size and time limits."""
    fields: dict[str, str] = {}
    mask = b""
    async with asyncio.timeout(SUBMIT_TIMEOUT):
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ImageProblem("The page sent an unreadable form; reload it and try again.")
            limit = MAX_MASK_BYTES if part.name == "mask" else MAX_PROMPT_BYTES
            data = await part.read_chunk(limit + 1)
            while len(data) <= limit and (chunk := await part.read_chunk()):
                data += chunk
            if len(data) > limit:
                raise ImageProblem("The painted mask is too large; reload the page and try again.")
            if part.name == "mask":
                mask = data
            elif part.name:
                fields[part.name] = data.decode("utf-8", errors="replace")
    return fields, mask


async def submit(request: web.Request) -> web.Response:
    painter = request.app[PAINTER_KEY]
    try:
        link = await _link(request)
        fields, mask = await _form(request)
        quality = fields.get("quality", "")
        count = fields.get("count", "")
        if quality not in QUALITIES or count not in {str(n) for n in COUNTS}:
            raise ImageProblem("Pick a quality and a number of versions from the lists.")
        kept = await painter.keep_mask(link, mask)
        outcome = await painter.submit(link, Choice(fields.get("prompt", ""), quality, int(count), kept))
    except LinkRefused as error:
        return _json({"state": "refused", "message": error.message}, error.status)
    except ImageProblem as error:
        # The link stays unused: the member can fix what is wrong and submit again.
        return _json({"state": "invalid", "message": str(error)}, 400)
    except TimeoutError:
        return _json({"state": "invalid", "message": "The upload took too long; try again."}, 408)
    if outcome.refusal is not None:
        return _json({"state": "refused", "message": outcome.refusal})
    return _json({"state": "queued", "job": outcome.job_id})


async def status(request: web.Request) -> web.Response:
    try:
        link = await _link(request, unused=False)
    except LinkRefused as error:
        return _json({"error": error.message}, error.status)
    return _json(await request.app[PAINTER_KEY].status(link))


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    body = await asyncio.to_thread((STATIC / name).read_bytes)
    return web.Response(body=body, content_type=STATIC_FILES[name], headers=HEADERS)


def add_routes(app: web.Application, painter: Painter) -> None:
    app[PAINTER_KEY] = painter
    prefix = "/paint/{token:[0-9a-f.]{1,200}}"
    app.router.add_get(f"{prefix}/", page)
    app.router.add_get(f"{prefix}/state", state)
    app.router.add_get(f"{prefix}/image", picture)
    app.router.add_post(f"{prefix}/submit", submit)
    app.router.add_get(f"{prefix}/status", status)
    app.router.add_get("/paint-static/{name}", static)
