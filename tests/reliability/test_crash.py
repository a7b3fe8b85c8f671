"""kill -9 at every point of an edit's life, restart on the same data, and check the end.

Each crash point is a function that drives a subprocess bot to one exact place and returns
what to undo before the restart. The place is reached through the fakes, never by waiting a
guessed time: Runflow's hold keeps a run running, its hangs and file holds park a poll or a
download, Discord's holds park an upload before or after Discord acts on it, and `DbFreeze`
stops the bot at its next database write. Then a random jitter (drawn from the seed) passes,
the bot is killed, a new process starts on the same directory and the same fakes, the holds
are lifted, and every job is judged (see `harness.judge`): delivered exactly once, or refunded
and told; the ledger verifies and every member's balance is the allowance minus what their
delivered images cost.

The CI set runs each point once with a fixed seed. The soak set (`-m soak`) runs
`RETOUCH_SOAK_RUNS` (default 200) seeds, cycling through the points with random jitter,
random image counts, holds lifted before or after the restart, and sometimes a second kill
while the restarted bot is recovering.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from tests.e2e.helpers import text
from tests.fakes.discord import FakeDiscord, Interaction
from tests.reliability.fakes import has_files, says
from tests.reliability.harness import (
    NOT_TOLD,
    REQUEST_DROPPED,
    Problem,
    wait_for,
)
from tests.reliability.lab import CrashLab

WEBHOOK_FOLLOWUP = r"/webhooks/\d+/[^/]+$"
ONE_WORKER = {"RETOUCH_PROVIDERS__RUNFLOW__MAX_CONCURRENCY": "1"}
SOAK_RUNS = int(os.environ.get("RETOUCH_SOAK_RUNS", "200"))
MAX_JITTER = 0.25


def channel_messages(fake: FakeDiscord) -> str:
    return rf"/channels/{fake.channel_id}/messages$"


@dataclass
class Placed:
    """Where a crash point left the bot: the edits to judge and what to undo around the restart."""

    prompts: list[str]
    expect: set[str] = field(default_factory=lambda: {"done"})
    before_restart: list[Callable[[], None]] = field(default_factory=list)
    after_restart: list[Callable[[], None]] = field(default_factory=list)
    jitter: float = 0.0
    """At least this long before the kill, for points whose place is a moment, not a hold."""


Point = Callable[[CrashLab, int], Awaitable[Placed]]
"""Drive the bot to the point; the int is how many images to ask for."""


def release_runs(lab: CrashLab) -> Callable[[], None]:
    def release() -> None:
        lab.runflow.hold = False
        lab.runflow.release()

    return release


def lift_runs(lab: CrashLab, placed: Placed) -> Placed:
    """Let held runs finish, before the restart or after it (the seed decides)."""
    (placed.before_restart if lab.rng.random() < 0.5 else placed.after_restart).append(release_runs(lab))
    return placed


async def running(lab: CrashLab, label: str, count: int) -> str:
    """Ask for an edit and wait until the host has it running (held) and the bot knows."""
    lab.runflow.hold = True
    prompt = lab.prompt(label)
    await lab.ask(prompt, count=count)
    await lab.wait_job(prompt, "running")
    return prompt


# ---------------------------------------------------------------------------------------------- crash points


async def after_reserve(lab: CrashLab, count: int) -> Placed:
    """Queued with its credits reserved: one worker, busy with another member's held edit."""
    lab.overrides.update(ONE_WORKER)
    await lab.start()
    lab.runflow.hold = True
    other = lab.discord.add_member("other")
    blocker = lab.prompt("blocker")
    await lab.ask(blocker, user=other)
    await lab.wait_job(blocker, "running")
    queued = lab.prompt("queued")
    await lab.ask(queued, count=count)
    job = await lab.wait_job(queued, "queued")
    assert job.reserves == 1
    return lift_runs(lab, Placed([blocker, queued]))


async def during_submit(lab: CrashLab, count: int) -> Placed:
    """The host has created the run, the bot has not heard back: the job says `submitting`.
    The restarted bot submits again, so the host runs the edit twice (the owner pays twice;
    the member pays once); the first run is counted as orphaned."""
    await lab.start()
    lab.runflow.hang_next("POST", r"/runs$", 60)
    prompt = lab.prompt("during submit")
    await lab.ask(prompt, count=count)
    await lab.runflow.wait_for_run()
    await lab.wait_job(prompt, "submitting")
    return Placed([prompt])


async def after_submit(lab: CrashLab, count: int) -> Placed:
    """The run id is written and the host is working on it."""
    await lab.start()
    prompt = await running(lab, "after submit", count)
    return lift_runs(lab, Placed([prompt]))


async def while_running(lab: CrashLab, count: int) -> Placed:
    """The bot has polled the running run a few times (1-4, from the seed)."""
    await lab.start()
    prompt = await running(lab, "while running", count)
    run = await lab.runflow.wait_for_run()
    polls = run.polls + lab.rng.randint(1, 4)
    await lab.runflow.wait_until(lambda: True if run.polls >= polls else None, f"{polls} polls")
    return lift_runs(lab, Placed([prompt]))


async def host_finished(lab: CrashLab, count: int) -> Placed:
    """The host has finished, and the poll that would tell the bot is parked."""
    await lab.start()
    prompt = await running(lab, "host finished", count)
    run = await lab.runflow.wait_for_run()
    lab.runflow.hang_next("GET", r"/v1/runs/", 60)
    await lab.runflow.wait_until(lambda: True if lab.runflow.faults_fired() else None, "a parked poll")
    lab.runflow.hold = False
    lab.runflow.release()
    await lab.runflow.wait_finished(run.id)
    return Placed([prompt])


async def host_finished_seen(lab: CrashLab, count: int) -> Placed:
    """The bot has read "succeeded" and not yet written `delivering` (frozen at that write)."""
    await lab.start()
    prompt = await running(lab, "finished seen", count)
    freeze = lab.freeze()
    lab.runflow.on_finished_poll(freeze.engage)
    lab.runflow.hold = False
    lab.runflow.release()
    await lab.wait_event(freeze.engaged, "a poll reporting the finished run")
    return Placed([prompt], before_restart=[freeze.thaw])


async def during_download(lab: CrashLab, count: int) -> Placed:
    """`delivering`, with the first output's download parked at the host."""
    await lab.start()
    hold = lab.runflow.hold_file(1)
    prompt = lab.prompt("during download")
    await lab.ask(prompt, count=count)
    await lab.wait_event(hold.arrived, "the output download")
    await lab.wait_job(prompt, "delivering")
    return Placed([prompt])


async def between_downloads(lab: CrashLab, count: int) -> Placed:
    """Two images asked for: the first is on disk, the second's download parked. (Found by this
    suite: outputs were recorded one by one, and recovery delivered and charged the one it had,
    silently dropping the other.)"""
    await lab.start()
    hold = lab.runflow.hold_file(2)
    prompt = lab.prompt("between downloads")
    await lab.ask(prompt, count=2)
    await lab.wait_event(hold.arrived, "the second output's download")
    await lab.wait_job(prompt, "delivering")
    return Placed([prompt])


async def during_upload(lab: CrashLab, count: int) -> Placed:
    """The result's upload (a new message in the channel, the interaction still valid) is
    parked before Discord has it."""
    await lab.start()
    hold = lab.discord.hold_next("POST", channel_messages(lab.discord), predicate=has_files)
    prompt = lab.prompt("during upload")
    await lab.ask(prompt, count=count)
    await lab.wait_event(hold.arrived, "the result upload")
    return Placed([prompt])


async def upload_answer_lost(lab: CrashLab, count: int) -> Placed:
    """Discord has stored the result; its answer to the bot is parked."""
    await lab.start()
    hold = lab.discord.hold_next("POST", channel_messages(lab.discord), when="after", predicate=has_files)
    prompt = lab.prompt("answer lost")
    await lab.ask(prompt, count=count)
    await lab.wait_event(hold.arrived, "the result upload")
    return Placed([prompt])


async def after_upload(lab: CrashLab, count: int) -> Placed:
    """Discord has the result and answered; the bot is frozen before it records the delivery
    and captures the credits."""
    await lab.start()
    freeze = lab.freeze()
    lab.discord.after_handled("POST", channel_messages(lab.discord), freeze.engage, predicate=has_files)
    prompt = lab.prompt("after upload")
    await lab.ask(prompt, count=count)
    await lab.wait_event(freeze.engaged, "the result upload")
    return Placed([prompt], before_restart=[freeze.thaw])


async def expired_token(lab: CrashLab, label: str, count: int) -> str:
    """A running edit whose interaction token then expires, so the result goes to the channel."""
    prompt = await running(lab, label, count)
    lab.discord.token_lifetime = 0.0
    return prompt


async def during_channel_upload(lab: CrashLab, count: int) -> Placed:
    """The token expired, so the result goes to the channel: that post is parked."""
    await lab.start()
    prompt = await expired_token(lab, "channel upload", count)
    hold = lab.discord.hold_next("POST", channel_messages(lab.discord), predicate=has_files)
    lab.runflow.hold = False
    lab.runflow.release()
    await lab.wait_event(hold.arrived, "the result post in the channel")
    return Placed([prompt])


async def after_channel_upload(lab: CrashLab, count: int) -> Placed:
    """The channel post landed and the bot is frozen before recording it: the restarted bot
    posts again with the same nonce, which Discord answers with the first message."""
    await lab.start()
    prompt = await expired_token(lab, "after channel upload", count)
    freeze = lab.freeze()
    lab.discord.after_handled("POST", channel_messages(lab.discord), freeze.engage, predicate=has_files)
    lab.runflow.hold = False
    lab.runflow.release()
    await lab.wait_event(freeze.engaged, "the result post in the channel")
    return Placed([prompt], before_restart=[freeze.thaw])


async def during_refine(lab: CrashLab, count: int) -> Placed:
    """A Refine of a delivered edit, killed while the refinement is at a point the seed picks:
    running at the host, downloading, or uploading."""
    await lab.start()
    first = lab.prompt("refine parent")
    await lab.ask(first, count=count)
    result = await lab.wait_result(first)
    second = lab.prompt("refinement")
    where = lab.rng.choice(["running", "download", "upload"])
    if where == "running":
        lab.runflow.hold = True
        await lab.refine(result, second)
        await lab.wait_job(second, "running")
        return lift_runs(lab, Placed([first, second]))
    if where == "download":
        hold = lab.runflow.hold_file(1)
        await lab.refine(result, second)
        await lab.wait_event(hold.arrived, "the refinement's download")
        return Placed([first, second])
    parked = lab.discord.hold_next(
        "POST",
        channel_messages(lab.discord),
        predicate=lambda request: has_files(request) and second in str(request.payload),
    )
    await lab.refine(result, second)
    await lab.wait_event(parked.arrived, "the refinement's upload")
    return Placed([first, second])


async def host_failed(lab: CrashLab, count: int) -> Placed:
    """Killed while a run that the host will fail is running: the end must be a refund, told."""
    await lab.start()
    lab.runflow.fail_runs = {"failure_code": "PROVIDER_ERROR", "failure_message": "the GPU fell over"}
    prompt = await running(lab, "host failed", count)
    return lift_runs(lab, Placed([prompt], expect={"failed"}))


async def during_failure_notice(lab: CrashLab, count: int) -> Placed:
    """The host failed the run; the bot has released the credits, withdrawn the public status
    message, and its private notice to the member is parked. (Found by this suite: recovery only finished open holds, so the member stayed
    refunded but never told.)"""
    await lab.start()
    lab.runflow.fail_runs = {"failure_code": "PROVIDER_ERROR", "failure_message": "the GPU fell over"}
    hold = lab.discord.hold_next("POST", WEBHOOK_FOLLOWUP, predicate=says("❌"))
    prompt = lab.prompt("failure notice")
    await lab.ask(prompt, count=count)
    await lab.wait_event(hold.arrived, "the failure notice")
    return Placed([prompt], expect={"failed"})


async def anywhere_after_the_host(lab: CrashLab, count: int) -> Placed:
    """The run is released and the kill comes 0-600 ms later (from the seed), wherever the bot
    then is: polling, downloading, uploading, recording or done. The soak's wide net for the
    gaps between the parked points (e.g. after the capture and before `done`)."""
    await lab.start()
    prompt = await running(lab, "anywhere after", count)
    release_runs(lab)()
    return Placed([prompt], jitter=lab.rng.uniform(0.0, 0.6))


async def after_dm_upload(lab: CrashLab, count: int) -> Placed:
    """Token expired and the channel closed to the bot, so the result goes by DM: the DM landed
    and the bot is frozen before recording it; the restarted bot's resend carries the same
    nonce, which Discord answers with the first message."""
    await lab.start()
    prompt = await expired_token(lab, "after dm upload", count)
    channel = channel_messages(lab.discord)
    lab.discord.fail_next("POST", channel, 403, {"code": 50013, "message": "Missing Permissions"}, times=2)
    freeze = lab.freeze()
    lab.discord.after_handled(
        "POST",
        r"/channels/\d+/messages$",
        freeze.engage,
        predicate=lambda request: has_files(request) and not re.search(channel, request.path),
    )
    release_runs(lab)()
    await lab.wait_event(freeze.engaged, "the result sent by DM")
    return Placed([prompt], before_restart=[freeze.thaw])


async def after_upload_then_expiry(lab: CrashLab, count: int) -> Placed:
    """`after_upload`, and the bot stays down past the interaction token's 15 minutes (the
    fake's token lifetime is cut to zero while it is down). (Found by this suite: the restarted
    bot found the edit route gone and posted the result a second time in the channel.)"""
    placed = await after_upload(lab, count)
    placed.before_restart.append(lambda: setattr(lab.discord, "token_lifetime", 0.0))
    return placed


POINTS: dict[str, Point] = {
    "after_reserve": after_reserve,
    "during_submit": during_submit,
    "after_submit": after_submit,
    "while_running": while_running,
    "host_finished": host_finished,
    "host_finished_seen": host_finished_seen,
    "during_download": during_download,
    "during_upload": during_upload,
    "upload_answer_lost": upload_answer_lost,
    "after_upload": after_upload,
    "during_channel_upload": during_channel_upload,
    "after_channel_upload": after_channel_upload,
    "during_refine": during_refine,
    "host_failed": host_failed,
    "between_downloads": between_downloads,
    "during_failure_notice": during_failure_notice,
    "after_upload_then_expiry": after_upload_then_expiry,
}
SOAK_ONLY_POINTS: dict[str, Point] = {
    "anywhere_after_the_host": anywhere_after_the_host,
    "after_dm_upload": after_dm_upload,
}


# ---------------------------------------------------------------------------------------------- the driver


async def crash_run(
    lab: CrashLab, point: Point, *, count: int = 1, jitter: float = 0.0, second_kill: float | None = None
) -> list[Problem]:
    """Place, kill, restart (twice when `second_kill` is the jitter of a kill during recovery),
    lift the holds, settle and judge."""
    placed = await point(lab, count)
    await lab.crash(max(jitter, placed.jitter))
    lab.discord.clear_holds()
    for undo in placed.before_restart:
        undo()
    await lab.restart()
    for undo in placed.after_restart:
        undo()
    if second_kill is not None:
        await lab.crash(second_kill)
        await lab.restart()
    await lab.settle(placed.prompts)
    lab.count_faults()
    return await lab.verdict(placed.prompts, expect=placed.expect)


CI_SEEDS = {name: 1000 + number for number, name in enumerate(POINTS)}


@pytest.mark.parametrize("point", list(POINTS))
async def test_crash_point(crash_lab: CrashLab, point: str) -> None:
    """Every point once, fixed seed, no jitter: the CI set."""
    crash_lab.reseed(CI_SEEDS[point])
    problems = crash_lab.record(await crash_run(crash_lab, POINTS[point]))
    assert not problems, crash_lab.report(problems)


async def test_crash_while_the_refine_modal_is_open(crash_lab: CrashLab) -> None:
    """Killed between opening the Refine modal and submitting it: the submit reaches the new
    process, which must answer it. (Found by this suite: discord.py only dispatches a modal
    submit to modals sent by the same process, so the restarted bot dropped it unanswered.)"""
    crash_lab.reseed(CI_SEEDS["during_refine"] + 100)
    await crash_lab.start()
    first = crash_lab.prompt("modal parent")
    await crash_lab.ask(first)
    result = await crash_lab.wait_result(first)
    click = await crash_lab.discord.click(result, "Refine")
    await click.wait_modal()
    await crash_lab.crash()
    await crash_lab.restart()
    second = crash_lab.prompt("modal refinement")
    submitted = await crash_lab.discord.submit_modal(click, {"prompt": second})
    try:
        response = await submitted.wait_response(timeout=2)  # a live bot defers within ~0.1 s
    except TimeoutError:
        dropped = Problem(REQUEST_DROPPED, None, "the Refine submitted after the restart got no answer")
        lost = crash_lab.record([dropped])
        raise AssertionError(crash_lab.report(lost)) from None
    assert response["status"] == 200
    await crash_lab.settle([first, second])
    problems = crash_lab.record(await crash_lab.verdict([first, second]))
    assert not problems, crash_lab.report(problems)


async def crash_after_the_defer(lab: CrashLab, label: str) -> tuple[str, Interaction]:
    """Discord has accepted the defer (the member sees "thinking"); the bot is killed before it
    hears back, and started again."""
    await lab.start()
    hold = lab.discord.hold_next("POST", r"/interactions/\d+/[^/]+/callback$", when="after")
    prompt = lab.prompt(label)
    interaction = await lab.ask(prompt)
    await lab.wait_event(hold.arrived, "the defer")
    await lab.crash()
    lab.discord.clear_holds()
    await lab.restart()
    return prompt, interaction


async def test_crash_right_after_the_defer_loses_nothing(crash_lab: CrashLab) -> None:
    """The edit must survive: delivered once, or refunded and told. (Found by this suite: the
    job row used to be written after the defer, so this crash left no job and no word.)"""
    crash_lab.reseed(CI_SEEDS["during_refine"] + 200)
    prompt, interaction = await crash_after_the_defer(crash_lab, "deferred")

    def answered() -> bool | None:
        original = interaction.original() or {}
        return True if crash_lab.job(prompt) is not None or text(original) else None

    with contextlib.suppress(TimeoutError):
        await wait_for(answered, events=lambda: [crash_lab.discord.changed()], timeout=2, what="any answer")
    problems: list[Problem] = []
    if crash_lab.job(prompt) is None:
        problems.append(Problem(REQUEST_DROPPED, None, "the deferred edit left no job"))
    else:
        await crash_lab.settle([prompt])
        problems = await crash_lab.verdict([prompt], expect={"done", "failed"})
    crash_lab.record(problems)
    assert not problems, crash_lab.report(problems)


async def test_crash_right_after_the_defer_leaves_no_message_thinking(crash_lab: CrashLab) -> None:
    """What the member's own message shows once the recovered edit is over: the result, a
    notice, or at least not an endless "thinking"."""
    crash_lab.reseed(CI_SEEDS["during_refine"] + 300)
    prompt, interaction = await crash_after_the_defer(crash_lab, "left thinking")
    await crash_lab.settle([prompt])
    original = interaction.original() or {}
    thinking = bool(original) and not text(original) and not original.get("attachments")
    problems = (
        [Problem(NOT_TOLD, None, "the member's deferred message is still 'thinking'")] if thinking else []
    )
    crash_lab.record(problems)
    assert not problems, crash_lab.report(problems)


# ---------------------------------------------------------------------------------------------- soak

ALL_POINTS = {**POINTS, **SOAK_ONLY_POINTS}
SOAK_POINTS = list(ALL_POINTS)


@pytest.mark.soak
@pytest.mark.parametrize(
    "seed", range(SOAK_RUNS), ids=lambda seed: f"{seed}-{SOAK_POINTS[seed % len(SOAK_POINTS)]}"
)
async def test_soak(crash_lab: CrashLab, seed: int) -> None:
    """One randomized crash run per seed, cycling through every point (soak-only ones too):
    jitter 0-250 ms before the kill, 1 or 2 images, holds lifted before or after the restart,
    and one run in four killed a second time while the restarted bot recovers. Any problem
    fails with its seed.
    """
    name = SOAK_POINTS[seed % len(SOAK_POINTS)]
    point = ALL_POINTS[name]
    rng = crash_lab.rng
    count = rng.choice([1, 1, 2])
    jitter = rng.uniform(0, MAX_JITTER)
    second_kill = rng.uniform(0, 2 * MAX_JITTER) if rng.random() < 0.25 else None
    problems = await crash_run(crash_lab, point, count=count, jitter=jitter, second_kill=second_kill)
    crash_lab.record(problems)
    assert not problems, f"{name} count={count} jitter={jitter:.3f} second_kill={second_kill}\n" + (
        crash_lab.report(problems)
    )
