"""Host callbacks repeated, out of order, forged, unreadable, late or never sent.

The bot treats a callback only as a reason to poll now: the outcome always comes from the
host's authenticated API. So a callback can make an edit finish sooner, and nothing else;
without one, polling finishes it. Here polling is slowed to 30 s where the test is about the
callback doing the waking, so an edit that ends in seconds was ended by the callback.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import aiohttp
import pytest

from tests.reliability.conftest import CALLBACK_SECRET
from tests.reliability.harness import result_messages
from tests.reliability.lab import BotLab

WAKE_ONLY = "30"
FALLBACK = "0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def poll_interval() -> str:
    return WAKE_ONLY


@pytest.fixture
def overrides(poll_interval: str) -> dict[str, str]:
    """Callbacks on: a known port for the bot's web server, its public URL, and the secret."""
    port = free_port()
    return {
        "RETOUCH_WEB__PORT": str(port),
        "RETOUCH_WEB__PUBLIC_URL": f"http://127.0.0.1:{port}",
        "RETOUCH_PROVIDERS__RUNFLOW__CALLBACK_SECRET": CALLBACK_SECRET,
        "RETOUCH_PROVIDERS__POLL_INTERVAL": poll_interval,
        "RETOUCH_PROVIDERS__POLL_INTERVAL_MAX": poll_interval,
    }


async def post_callback(
    lab: BotLab, payload: dict[str, Any] | bytes, *, secret: str | None = CALLBACK_SECRET
) -> int:
    """A callback as a host (or an attacker) would post it; returns the bot's HTTP status."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["Runflow-Signature"] = lab.runflow.sign(body, secret)
    url = f"http://127.0.0.1:{lab.web_port}/callbacks/runflow"
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as response:
        return response.status


async def running_and_polled(lab: BotLab, label: str) -> tuple[str, str]:
    """An edit held at the host that the bot has polled once (so it now waits on its interval)."""
    lab.runflow.hold = True
    prompt = lab.prompt(label)
    await lab.ask(prompt)
    run = await lab.runflow.wait_for_run()
    await lab.wait_job(prompt, "running")
    await lab.runflow.wait_until(lambda: True if run.polls >= 1 else None, "the first poll")
    return prompt, run.id


def statuses(lab: BotLab) -> list[int | None]:
    return [attempt["status"] for attempt in lab.runflow.callbacks_sent]


async def test_the_callback_ends_the_wait(lab: BotLab) -> None:
    prompt, run_id = await running_and_polled(lab, "woken")
    lab.runflow.release()
    problems = await lab.outcome([prompt], timeout=10)
    assert not problems, lab.report(problems)
    assert statuses(lab) == [200]
    assert lab.runflow.runs[run_id].polls == 2


async def test_a_repeated_callback_delivers_once(lab: BotLab) -> None:
    lab.runflow.callback_mode = "twice"
    prompt, _ = await running_and_polled(lab, "twice")
    lab.runflow.release()
    await lab.runflow.wait_callbacks(2)
    problems = await lab.outcome([prompt], timeout=10)
    assert not problems, lab.report(problems)
    assert statuses(lab) == [200, 200]


async def test_a_late_replay_of_the_callback_changes_nothing(lab: BotLab) -> None:
    prompt, _ = await running_and_polled(lab, "late replay")
    lab.runflow.release()
    result = await lab.wait_result(prompt)
    [sent] = await lab.runflow.wait_callbacks(1)
    assert await post_callback(lab, sent["body"]) == 200
    problems = await lab.outcome([prompt], timeout=10)
    assert not problems, lab.report(problems)
    job = lab.job(prompt)
    assert job is not None and result_messages(lab.discord, job.id) == [
        lab.discord.messages[int(result["id"])]
    ]


@pytest.mark.parametrize("poll_interval", [FALLBACK])
async def test_a_forged_callback_is_refused_and_polling_finishes(lab: BotLab) -> None:
    lab.runflow.callback_mode = "forged"
    prompt, _ = await running_and_polled(lab, "forged")
    lab.runflow.release()
    await lab.runflow.wait_callbacks(1)
    problems = await lab.outcome([prompt])
    assert not problems, lab.report(problems)
    assert statuses(lab) == [401]


@pytest.mark.parametrize("poll_interval", [FALLBACK])
async def test_a_callback_that_never_comes_is_covered_by_polling(lab: BotLab) -> None:
    lab.runflow.callback_mode = "never"
    prompt, _ = await running_and_polled(lab, "never called")
    lab.runflow.release()
    problems = await lab.outcome([prompt])
    assert not problems, lab.report(problems)
    assert statuses(lab) == []


@pytest.mark.parametrize("event", ["run.completed", "run.failed"])
async def test_a_callback_before_the_run_ends_is_not_believed(lab: BotLab, event: str) -> None:
    """A correctly signed callback that arrives out of order (ahead of the run's real end) and
    claims success with someone else's image, or failure: the bot asks the host, hears
    "running", and waits on; the real end then delivers the real result once."""
    prompt, run_id = await running_and_polled(lab, f"early {event}")
    status = "succeeded" if event == "run.completed" else "failed"
    output = (
        {
            "outputs": [{"type": "image", "url": "http://127.0.0.1:9/not-the-result.png"}],
            "nsfw_detected": False,
        }
        if status == "succeeded"
        else {"code": "PROVIDER_ERROR", "message": "not really"}
    )
    early = {"event": event, "run_id": run_id, "status": status, "output": output}
    assert await post_callback(lab, early) == 200
    await lab.runflow.wait_until(
        lambda: True if lab.runflow.runs[run_id].polls >= 2 else None, "the woken poll"
    )
    job = lab.job(prompt)
    assert job is not None and job.state == "running"
    lab.runflow.release()
    problems = await lab.outcome([prompt], timeout=10)
    assert not problems, lab.report(problems)


async def test_callbacks_for_unknown_runs_unsigned_or_unreadable_are_harmless(lab: BotLab) -> None:
    prompt, run_id = await running_and_polled(lab, "noise")
    unknown = {"event": "run.completed", "run_id": "no-such-run", "status": "succeeded", "output": None}
    assert await post_callback(lab, unknown) == 200
    real = {"event": "run.completed", "run_id": run_id, "status": "succeeded", "output": None}
    assert await post_callback(lab, real, secret=None) == 401
    assert await post_callback(lab, real, secret="whsec_wrong") == 401
    assert await post_callback(lab, b"{not json") == 400
    assert await post_callback(lab, {"run_id": run_id, "status": "maybe"}) == 400
    job = lab.job(prompt)
    assert job is not None and job.state == "running"
    lab.runflow.release()
    problems = await lab.outcome([prompt], timeout=10)
    assert not problems, lab.report(problems)
