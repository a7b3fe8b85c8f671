"""The loopback world — fake Discord and a zero-latency fake Runflow — in a process of its own.

Why a separate process: the fakes do real work per edit (multipart parsing of every upload,
serving CDN and result files, storing every message), and on Discord or Runflow that work runs on
someone else's servers. In the bot's process it would compete for the bot's event loop and GIL,
and its stored uploads would count in the bot's RSS. Here it gets its own interpreter; the bot
under test runs alone in the benchmark's process. Both processes read the same CLOCK_MONOTONIC,
so times recorded here (an interaction sent, a callback received) compare with the bot's.

Run as `python -m bench.world [--upload-limit BYTES]`; it prints one JSON line (the control URL and
the fakes' addresses) and then serves a small JSON control API on 127.0.0.1 until /shutdown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import threading
import time
from collections import Counter, defaultdict
from typing import Any

from aiohttp import web
from PIL import Image
from yarl import URL

import tests.fakes.runflow as runflow_module
from bench.core import LoopLag
from bench.images import photo_png
from tests.fakes.discord import FakeDiscord, Interaction
from tests.fakes.listen import BACKLOG
from tests.fakes.runflow import FakeRunflow

_encode_outputs = runflow_module._encode_outputs
_fixed_output: list[bytes] = []  # when set, every run's output is these bytes (see World.host)
_memo: dict[tuple[int, int, str], list[bytes]] = {}
_memo_lock = threading.Lock()
_key_locks: defaultdict[tuple[int, int, str], threading.Lock] = defaultdict(threading.Lock)


def _encode_once(
    source: Image.Image, count: int, pil_format: str, mask: Image.Image | None = None
) -> list[bytes]:
    """The fake's output encoding, done once per distinct input and reused by every later run
    (the benchmarks send no mask)."""
    if _fixed_output:
        return _fixed_output * count
    key = (id(source), count, pil_format)
    with _memo_lock:
        lock = _key_locks[key]
    with lock:
        if key not in _memo:
            _memo[key] = _encode_outputs(source, count, pil_format, mask)
    return _memo[key]


class InstantRunflow(FakeRunflow):
    """FakeRunflow as a zero-latency host: each distinct input is fetched from the CDN and decoded
    once, and its output encoded once; later runs reuse them (the same bytes object, so 200 outputs
    of 15 MiB cost the world 15 MiB). The bot sees exactly the API, URLs and bytes of FakeRunflow."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._sources: dict[str, asyncio.Task[Image.Image]] = {}

    async def _fetch_image(self, label: str, url: str) -> Image.Image:
        key = URL(url).path
        task = self._sources.get(key)
        if task is None or (task.done() and task.exception() is not None):
            task = asyncio.ensure_future(super()._fetch_image(label, url))
            self._sources[key] = task
        return await asyncio.shield(task)


runflow_module._encode_outputs = _encode_once  # the fake calls it through the module global


def _route_of(method: str, path: str) -> str:
    """A request's route with ids and tokens blanked, for counting requests by kind."""
    path = re.sub(r"/webhooks/\d+/[^/]+", "/webhooks/{app}/{token}", path)
    path = re.sub(r"/interactions/\d+/[^/]+", "/interactions/{id}/{token}", path)
    path = re.sub(r"/v1/runs/[^/]+", "/v1/runs/{id}", path)
    path = re.sub(r"/files/[^/?]+", "/files/{name}", path)
    path = re.sub(r"\d{6,}", "{id}", path)
    return f"{method} {path}"


class World:
    def __init__(self, upload_limit: int) -> None:
        self.discord = FakeDiscord(upload_limit=upload_limit)
        self.runflow = InstantRunflow()
        self.attachments: dict[str, dict[str, Any]] = {}
        self.interactions: dict[int, Interaction] = {}
        self.done = asyncio.Event()
        # The fake does not record CDN reads; wrap its handler (before start() routes to it).
        self.cdn_reads: list[float] = []
        serve = self.discord._cdn

        async def cdn(request: web.Request) -> web.Response:
            self.cdn_reads.append(time.monotonic())
            return await serve(request)

        self.discord._cdn = cdn  # type: ignore[method-assign]

    async def start(self) -> web.AppRunner:
        self.lag = LoopLag().__enter__()  # how late this process's own loop runs (/loop_lag)
        await self.discord.start()
        await self.runflow.start()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for name in (
            "members",
            "cdn",
            "slash",
            "acks",
            "host",
            "wait_runs",
            "stats",
            "timeline",
            "loop_lag",
            "clear",
            "shutdown",
        ):
            app.router.add_post(f"/{name}", self._wrap(getattr(self, name)))
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, backlog=BACKLOG).start()
        return runner

    def _wrap(self, handler: Any) -> Any:
        async def wrapped(request: web.Request) -> web.Response:
            body = await request.json() if request.can_read_body else {}
            try:
                result = await handler(**body)
            except Exception as exc:
                return web.json_response({"error": repr(exc)}, status=500)
            return web.json_response(result)

        return wrapped

    # ------------------------------------------------------------------ the world

    async def members(self, count: int) -> list[int]:
        return [self.discord.add_member(f"bench{len(self.discord._guild.members)}") for _ in range(count)]

    async def cdn(self, name: str, width: int, height: int, grain: float = 4.0) -> dict[str, Any]:
        """Upload a photo-like PNG to the fake CDN, as a member's attachment."""
        data = await asyncio.to_thread(photo_png, width, height, grain)
        attachment = self.discord.add_cdn_file(data, f"{name}.png")
        self.attachments[name] = attachment
        return attachment

    async def slash(
        self, users: list[int], options: dict[str, Any], command: str = "edit"
    ) -> list[dict[str, Any]]:
        """One `/command` per user, all at once; returns when every one has been sent."""
        resolved: dict[str, Any] = {
            key: self.attachments[value[1:]] if isinstance(value, str) and value.startswith("@") else value
            for key, value in options.items()
        }
        sent = await asyncio.gather(*(self.discord.slash(command, user=u, **resolved) for u in users))
        for interaction in sent:
            self.interactions[interaction.id] = interaction
        return [{"id": i.id, "user": i.user_id, "token": i.token, "sent_at": i.sent_at} for i in sent]

    async def acks(self, ids: list[int], timeout: float = 30.0) -> list[dict[str, Any]]:
        """Each interaction's first callback: how long after it was sent it arrived, and its type."""
        # One waiter for all of them: 200 `wait_response` waiters would each wake on every request
        # the fake receives, and that storm (in this process) would delay the callbacks we time.
        pending = [self.interactions[i] for i in ids]

        def all_answered() -> bool | None:
            while pending and pending[-1].responses:
                pending.pop()
            return True if not pending else None

        with contextlib.suppress(TimeoutError):
            await self.discord._wait(all_answered, timeout, "acknowledgements")
        found = [
            self.interactions[i].responses[0] if self.interactions[i].responses else "no answer" for i in ids
        ]
        arrivals: dict[int, float] = {}
        for request in self.discord.requests:
            match = re.match(r"/interactions/(\d+)/[^/]+/callback", request.path)
            if match:
                arrivals.setdefault(int(match.group(1)), request.time)
        answers = []
        for interaction_id, response in zip(ids, found, strict=True):
            sent = self.interactions[interaction_id].sent_at
            arrived = arrivals.get(interaction_id)
            answers.append(
                {
                    "id": interaction_id,
                    "latency": None if arrived is None else arrived - sent,
                    "type": response.get("type") if isinstance(response, dict) else None,
                    "status": response.get("status") if isinstance(response, dict) else repr(response),
                }
            )
        return answers

    async def host(
        self,
        hold: bool | None = None,
        delay: float | None = None,
        release: bool = False,
        output: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Runflow's behaviour: hold runs, add a delay, release held runs, or fix every run's
        output to one photo-like PNG (`output`: width, height, grain) whatever the input."""
        if output is not None:
            data = await asyncio.to_thread(photo_png, output["width"], output["height"], output["grain"])
            _fixed_output[:] = [data]
        if hold is not None:
            self.runflow.hold = hold
        if delay is not None:
            self.runflow.delay = delay
        if release:
            self.runflow.release()
        return {
            "hold": self.runflow.hold,
            "delay": self.runflow.delay,
            "output_bytes": len(_fixed_output[0]) if _fixed_output else None,
        }

    async def wait_runs(self, count: int, status: str = "running", timeout: float = 120.0) -> int:
        """Until `count` runs have reached `status` (or gone past it); returns how many have."""
        order = ["queued", "dispatching", "running", "succeeded"]

        def reached() -> int | None:
            done = sum(
                1
                for run in self.runflow.runs.values()
                if run.status_code in order and order.index(run.status_code) >= order.index(status)
            )
            return done if done >= count else None

        return await self.runflow.wait_until(reached, f"{count} runs {status}", timeout=timeout)

    async def stats(self, polls: bool = False) -> dict[str, Any]:
        discord_routes = Counter(_route_of(r.method, r.path) for r in self.discord.requests)
        runflow_routes = Counter(_route_of(r.method, r.path) for r in self.runflow.requests)
        result: dict[str, Any] = {
            "discord": dict(discord_routes),
            "runflow": dict(runflow_routes),
            "cdn_reads": len(self.cdn_reads),
            "runs": len(self.runflow.runs),
            "run_status": dict(Counter(run.status_code for run in self.runflow.runs.values())),
            "unanswered": len(self.discord.unanswered()),
            "internal_errors": [repr(e) for e in self.discord.internal_errors[:5]],
            "now": time.monotonic(),
        }
        if polls:
            times: defaultdict[str, list[float]] = defaultdict(list)
            created: dict[str, float] = {}
            for r in self.runflow.requests:
                if r.method == "GET" and (m := re.fullmatch(r"/v1/runs/([^/]+)", r.path)):
                    times[m.group(1)].append(r.time)
                elif r.method == "POST" and r.path.endswith("/runs") and r.status == 201:
                    created[f"#{len(created)}"] = r.time
            result["poll_times"] = {
                run_id: {
                    "polls": run.polls,
                    "started": run.started_monotonic,
                    "completed": run.completed_at,
                    "times": times.get(run_id, []),
                }
                for run_id, run in self.runflow.runs.items()
            }
        return result

    async def timeline(self, since: float = 0.0) -> list[tuple[float, str, str, int]]:
        """Every request to either fake since `since`, in time order: (time, fake, route, files)."""
        found = [
            (r.time, "discord", _route_of(r.method, r.path), len(r.files))
            for r in self.discord.requests
            if r.time >= since
        ]
        found += [
            (r.time, "runflow", _route_of(r.method, r.path), 0)
            for r in self.runflow.requests
            if r.time >= since
        ]
        found += [(t, "cdn", "GET /cdn/attachments/…", 0) for t in self.cdn_reads if t >= since]
        return sorted(found)

    async def loop_lag(self, reset: bool = True) -> dict[str, float]:
        """How late the world's own event loop ran since the last reset: when the fakes are slow
        to take a request, that delay shows in every time they record."""
        found = self.lag.summary()
        if reset:
            self.lag.lateness.clear()
        return found

    async def clear(self) -> None:
        """Forget recorded requests (they hold every uploaded file) between phases."""
        self.discord.requests.clear()
        self.runflow.requests.clear()
        self.cdn_reads.clear()

    async def shutdown(self) -> None:
        self.done.set()


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.world")
    parser.add_argument("--upload-limit", type=int, default=10 * 1024 * 1024)
    args = parser.parse_args(argv)
    world = World(args.upload_limit)
    runner = await world.start()
    print(
        json.dumps(
            {
                "control": f"http://127.0.0.1:{runner.addresses[0][1]}",
                "token": world.discord.token,
                "api_base": world.discord.api_base,
                "gateway_url": world.discord.gateway_url,
                "runflow_base_url": world.runflow.base_url,
                "runflow_api_key": world.runflow.api_key,
                "guild_id": world.discord.guild_id,
                "channel_id": world.discord.channel_id,
                "pid": os.getpid(),
            }
        ),
        flush=True,
    )
    # Leave with the parent: when the benchmark process dies, our stdin (its pipe) closes.
    loop = asyncio.get_running_loop()

    def stdin_readable() -> None:
        if not os.read(0, 4096):
            loop.remove_reader(0)
            world.done.set()

    loop.add_reader(0, stdin_readable)
    await world.done.wait()
    await asyncio.sleep(0.05)  # let the /shutdown answer go out
    with contextlib.suppress(Exception):
        await world.runflow.close()
        await world.discord.close()
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
