"""The edit host misbehaving in every way the issue lists, with the bot in this process.

Each test injects one fault into the fake Runflow, makes one edit and checks the three things
a member and an auditor see: the job's final state, the message the member's edit ends with,
and the ledger (judged by `harness.judge`, verified by `CreditService.verify()`). Transient
faults must end in a delivered edit charged once; permanent ones in a refund with a message
that says what happened.
"""

from __future__ import annotations

import pytest

from bot.providers.router import RetryPolicy
from tests.reliability.lab import BotLab

SLOW_POLLS = {"RETOUCH_PROVIDERS__POLL_INTERVAL": "0.05", "RETOUCH_PROVIDERS__POLL_INTERVAL_MAX": "0.1"}
SHORT_TIMEOUT = {"RETOUCH_PROVIDERS__RUNFLOW__REQUEST_TIMEOUT": "0.5"}
RUNS = r"/runs$"
POLL = r"/v1/runs/"
FILES = r"/files/"


def fast_retries(lab: BotLab) -> None:
    """The router's backoff starts at 1 s with jitter; these tests need its logic, not its
    patience, so they shrink the delays (Retry-After from the host is still honoured as given)."""
    assert lab.bot.bot is not None
    lab.bot.bot.router._retry = RetryPolicy(attempts=3, base_delay=0.02, max_delay=0.05, max_retry_after=60)


async def edit(lab: BotLab, label: str, *, count: int = 1) -> str:
    prompt = lab.prompt(label)
    await lab.ask(prompt, count=count)
    return prompt


async def delivered(lab: BotLab, prompt: str) -> None:
    problems = await lab.outcome([prompt])
    assert not problems, lab.report(problems)
    assert "✅" in lab.shown(prompt)


async def refunded(lab: BotLab, prompt: str, says: str) -> None:
    problems = await lab.outcome([prompt], expect={"failed"})
    assert not problems, lab.report(problems)
    shown = lab.shown(prompt)
    assert "❌" in shown and says in shown, shown


# ---------------------------------------------------------------------------------------------- submit


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_a_5xx_on_submit_is_retried(lab: BotLab, status: int) -> None:
    fast_retries(lab)
    lab.runflow.fail_next("POST", RUNS, status)
    prompt = await edit(lab, f"submit {status}")
    await delivered(lab, prompt)
    assert len(lab.runflow.runs) == 1


async def test_a_host_that_keeps_failing_refunds_and_says_so(lab: BotLab) -> None:
    fast_retries(lab)
    lab.runflow.fail_next("POST", RUNS, 500, times=3)
    prompt = await edit(lab, "submit down")
    await refunded(lab, prompt, "not responding")
    assert lab.runflow.runs == {}


async def test_a_429_waits_the_retry_after_it_was_given(lab: BotLab) -> None:
    fast_retries(lab)
    lab.runflow.rate_limit_next("POST", RUNS, retry_after=0.3)
    prompt = await edit(lab, "submit 429")
    await delivered(lab, prompt)
    posts = [r.time for r in lab.runflow.requests if r.method == "POST"]
    assert len(posts) == 2 and posts[1] - posts[0] >= 0.3


async def test_a_429_asking_for_an_hour_refunds_rather_than_waits(lab: BotLab) -> None:
    fast_retries(lab)
    lab.runflow.rate_limit_next("POST", RUNS, retry_after=3600)
    prompt = await edit(lab, "submit 429 hour")
    await refunded(lab, prompt, "busy")


@pytest.mark.parametrize("overrides", [SHORT_TIMEOUT])
async def test_a_submit_that_times_out_is_retried_and_charged_once(lab: BotLab) -> None:
    """The timed-out request created a run anyway; the retry makes a second one. The member
    pays once; the owner pays the host twice (no idempotency key: see the router's docstring)."""
    fast_retries(lab)
    lab.runflow.hang_next("POST", RUNS, 2.0)
    prompt = await edit(lab, "submit timeout")
    await delivered(lab, prompt)
    assert len(lab.runflow.runs) == 2


async def test_a_reset_connection_on_submit_is_retried(lab: BotLab) -> None:
    fast_retries(lab)
    lab.runflow.reset_next("POST", RUNS)
    prompt = await edit(lab, "submit reset")
    await delivered(lab, prompt)


async def test_malformed_json_from_submit_is_retried(lab: BotLab) -> None:
    fast_retries(lab)
    lab.runflow.fail_next("POST", RUNS, 200, b'{"id": "half a run')
    prompt = await edit(lab, "submit junk")
    await delivered(lab, prompt)


async def test_a_submit_without_a_run_id_is_retried(lab: BotLab) -> None:
    fast_retries(lab)
    lab.runflow.fail_next("POST", RUNS, 201, {"status_code": "queued"})
    prompt = await edit(lab, "submit no id")
    await delivered(lab, prompt)


async def test_a_refused_request_refunds_and_says_why(lab: BotLab) -> None:
    lab.runflow.fail_next(
        "POST", RUNS, 422, {"code": "VALIDATION_ERROR", "message": "image_urls.0 is not an image"}
    )
    prompt = await edit(lab, "submit 422")
    await refunded(lab, prompt, "could not use this request")


async def test_a_rejected_key_refunds_and_names_the_owner(lab: BotLab) -> None:
    lab.runflow.fail_next("POST", RUNS, 401)
    prompt = await edit(lab, "submit 401")
    await refunded(lab, prompt, "server owner")


# ---------------------------------------------------------------------------------------------- polling


@pytest.mark.parametrize(
    "fault",
    ["500", "503", "429", "reset", "junk", "timeout"],
)
@pytest.mark.parametrize("overrides", [{**SLOW_POLLS, **SHORT_TIMEOUT}])
async def test_a_poll_that_fails_is_polled_again(lab: BotLab, fault: str) -> None:
    runflow = lab.runflow
    runflow.hold = True
    prompt = await edit(lab, f"poll {fault}")
    run = await runflow.wait_for_run()
    await lab.wait_job(prompt, "running")
    if fault in ("500", "503"):
        runflow.fail_next("GET", POLL, int(fault), times=3)
    elif fault == "429":
        runflow.rate_limit_next("GET", POLL, retry_after=0.1, times=2)
    elif fault == "reset":
        runflow.reset_next("GET", POLL, times=4)
    elif fault == "junk":
        runflow.fail_next("GET", POLL, 200, b"<html>502 Bad Gateway</html>", times=2)
    else:
        runflow.hang_next("GET", POLL, 1.5)
    await runflow.wait_until(lambda: True if runflow.faults_fired() else None, "the fault to fire")
    runflow.release()
    await delivered(lab, prompt)
    assert run.polls >= 1


async def test_a_run_the_host_has_forgotten_refunds(lab: BotLab) -> None:
    lab.runflow.hold = True
    prompt = await edit(lab, "poll 404")
    await lab.wait_job(prompt, "running")
    lab.runflow.fail_next("GET", POLL, 404, {"code": "RUN_NOT_FOUND", "message": "Run not found"})
    await refunded(lab, prompt, "could not use this request")
    lab.runflow.release()


@pytest.mark.parametrize("overrides", [{"RETOUCH_PROVIDERS__DEADLINE": "1"}])
async def test_a_run_that_never_ends_is_given_up_and_refunded(lab: BotLab) -> None:
    lab.runflow.hold = True
    prompt = await edit(lab, "never ends")
    await refunded(lab, prompt, "not responding")
    lab.runflow.release()


# ---------------------------------------------------------------------------------------------- the run's outcome


@pytest.mark.parametrize(
    ("code", "says"),
    [
        ("PROVIDER_ERROR", "could not finish this edit"),
        ("CONTENT_POLICY_VIOLATION", "safety filter"),
        ("INPUT_VALIDATION_FAILED", "could not use this request"),
    ],
)
async def test_a_failed_run_refunds_and_says_why(lab: BotLab, code: str, says: str) -> None:
    lab.runflow.fail_runs = {"failure_code": code, "failure_message": "it did not work"}
    prompt = await edit(lab, f"run {code}")
    await refunded(lab, prompt, says)


async def test_a_run_without_outputs_refunds(lab: BotLab) -> None:
    lab.runflow.empty_output = True
    prompt = await edit(lab, "no outputs")
    await refunded(lab, prompt, "without any image")


async def test_an_nsfw_flagged_result_is_withheld_and_refunded(lab: BotLab) -> None:
    """The default server policy blocks results the host flags as NSFW."""
    lab.runflow.nsfw = True
    prompt = await edit(lab, "flagged")
    await refunded(lab, prompt, "NSFW")


@pytest.mark.parametrize("fault", ["404", "reset"])
async def test_a_dropped_output_download_is_tried_again(lab: BotLab, fault: str) -> None:
    """The host finished the edit, so one failed download is not the end: the bot asks for the
    result again and delivers it, charged once."""
    if fault == "404":
        lab.runflow.fail_next("GET", FILES, 404, {"code": "NOT_FOUND", "message": "expired"})
    else:
        lab.runflow.reset_next("GET", FILES, times=2)
    prompt = await edit(lab, f"download {fault}")
    await delivered(lab, prompt)


async def test_an_output_that_never_downloads_refunds(lab: BotLab) -> None:
    """Every try fails: a refund and a message saying so."""
    lab.runflow.fail_next("GET", FILES, 404, {"code": "NOT_FOUND", "message": "expired"}, times=20)
    prompt = await edit(lab, "download never")
    await refunded(lab, prompt, "not responding")


async def test_two_images_with_one_host_hiccup_each_way_are_delivered_once(lab: BotLab) -> None:
    """A mix: a submit 500, a poll 429 and a poll reset on an edit of two images."""
    fast_retries(lab)
    lab.runflow.fail_next("POST", RUNS, 500)
    lab.runflow.rate_limit_next("GET", POLL, retry_after=0.05)
    lab.runflow.reset_next("GET", POLL, times=2)
    prompt = await edit(lab, "mixed", count=2)
    await delivered(lab, prompt)
    job = lab.job(prompt)
    assert job is not None and job.captured == 2 * job.price_per_image
