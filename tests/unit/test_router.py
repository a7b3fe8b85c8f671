"""Failover, retries and the circuit breaker, with scripted hosts and an injected clock and sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

import aiohttp
import pytest
from pydantic import SecretStr

from bot.pictures.sizes import IMAGE_SIZES, RESOLUTIONS
from bot.providers.base import (
    PRESET_SIZES,
    AuthFailed,
    ContentRejected,
    EditRequest,
    EditResult,
    ImageRef,
    InvalidRequest,
    Provider,
    ProviderError,
    RateLimited,
    Run,
    RunFailed,
    RunState,
    RunStatus,
    Unavailable,
)
from bot.providers.router import FULL_WAIT, BreakerState, HostHealth, RetryPolicy, Router, build_router
from bot.providers.settings import ProvidersSettings

REQUEST = EditRequest(job_id=1, prompt="p", images=[ImageRef("a.png", url="http://127.0.0.1:9/a.png")])
ONLY_1K = frozenset({"1K"})


class Host:
    """A provider that fails as scripted, then succeeds; `gate`, when set, holds every submit."""

    def __init__(
        self,
        name: str,
        *failures: ProviderError,
        resolutions: frozenset[str] = frozenset(RESOLUTIONS),
        image_sizes: frozenset[str] = frozenset(IMAGE_SIZES),
    ) -> None:
        self.name = name
        self.resolutions = resolutions
        self.image_sizes = image_sizes
        self.failures = list(failures)
        self.fail_always: ProviderError | None = None
        self.submits = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.gate: asyncio.Event | None = None
        self.changed = asyncio.Condition()
        self.calls: list[str] = []
        self.closed = False

    async def submit(self, request: EditRequest, *, callback_url: str | None = None) -> Run:
        self.submits += 1
        number = self.submits
        async with self.changed:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.changed.notify_all()
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.fail_always is not None:
                raise self.fail_always
            if self.failures:
                raise self.failures.pop(0)
            return Run(self.name, f"{self.name}-{number}")
        finally:
            async with self.changed:
                self.in_flight -= 1
                self.changed.notify_all()

    async def status(self, run: Run) -> RunState:
        self.calls.append(f"status {run.run_id}")
        return RunState(RunStatus.RUNNING)

    async def result(self, run: Run) -> EditResult:
        self.calls.append(f"result {run.run_id}")
        return EditResult(images=[])

    async def cancel(self, run: Run) -> bool:
        self.calls.append(f"cancel {run.run_id}")
        return True

    async def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def router(
    *hosts: Host, clock: Clock | None = None, sleeps: Sleeps | None = None, **options: object
) -> Router:
    return Router(
        list(hosts),
        clock=clock or Clock(),
        sleep=sleeps or Sleeps(),
        jitter=lambda: 0.5,  # factor 1.0: delays are exactly the exponential backoff
        **options,  # type: ignore[arg-type]
    )


def down(message: str = "503") -> Unavailable:
    return Unavailable(message, host="x")


async def test_outage_is_retried_with_backoff_then_fails_over() -> None:
    first, second = Host("first"), Host("second")
    first.fail_always = down()
    sleeps = Sleeps()
    run = await router(first, second, sleeps=sleeps, retry=RetryPolicy(attempts=3, base_delay=1.0)).submit(
        REQUEST
    )
    assert run.host == "second"
    assert first.submits == 3 and second.submits == 1
    assert sleeps.delays == [1.0, 2.0]


async def test_backoff_is_capped_and_jittered() -> None:
    host = Host("only", down(), down(), down())
    sleeps = Sleeps()
    routed = Router(
        [host], sleep=sleeps, jitter=lambda: 0.0, retry=RetryPolicy(attempts=4, base_delay=1.0, max_delay=3.0)
    )
    await routed.submit(REQUEST)
    assert sleeps.delays == [0.5, 1.0, 1.5]


@pytest.mark.parametrize(
    "error",
    [
        InvalidRequest("bad", host="first"),
        ContentRejected("no", host="first"),
        RunFailed("boom", host="first"),
    ],
)
async def test_answers_about_the_edit_never_fail_over(error: ProviderError) -> None:
    first, second = Host("first", error), Host("second")
    with pytest.raises(type(error)):
        await router(first, second).submit(REQUEST)
    assert first.submits == 1 and second.submits == 0


async def test_a_bad_key_fails_over_without_retrying() -> None:
    first, second = Host("first", AuthFailed("wrong key", host="first")), Host("second")
    sleeps = Sleeps()
    assert (await router(first, second, sleeps=sleeps).submit(REQUEST)).host == "second"
    assert first.submits == 1 and sleeps.delays == []
    assert router(first).health()[0].state is BreakerState.CLOSED


async def test_retry_after_is_honoured_at_the_same_host() -> None:
    first, second = Host("first", RateLimited("slow down", retry_after=7.0)), Host("second")
    sleeps = Sleeps()
    assert (await router(first, second, sleeps=sleeps).submit(REQUEST)).host == "first"
    assert sleeps.delays == [7.0] and second.submits == 0


async def test_a_retry_after_too_long_to_wait_fails_over_at_once() -> None:
    first, second = Host("first", RateLimited("later", retry_after=3600.0)), Host("second")
    sleeps = Sleeps()
    assert (await router(first, second, sleeps=sleeps).submit(REQUEST)).host == "second"
    assert sleeps.delays == [] and first.submits == 1


async def test_when_every_host_is_down_the_last_error_is_raised() -> None:
    first, second = Host("first"), Host("second")
    first.fail_always = down("first down")
    second.fail_always = down("second down")
    with pytest.raises(Unavailable, match="second down"):
        await router(first, second, retry=RetryPolicy(attempts=1)).submit(REQUEST)


async def test_breaker_closed_open_half_open_closed() -> None:
    clock = Clock()
    first, second = Host("first"), Host("second")
    first.fail_always = down()
    routed = router(
        first, second, clock=clock, retry=RetryPolicy(attempts=1), failure_threshold=2, cooldown=30
    )

    await routed.submit(REQUEST)
    assert routed.health()[0] == HostHealth("first", BreakerState.CLOSED, 1, None)
    await routed.submit(REQUEST)
    assert routed.health()[0] == HostHealth("first", BreakerState.OPEN, 2, 1000.0)

    await routed.submit(REQUEST)  # open: skipped without a request
    assert first.submits == 2 and second.submits == 3

    clock.now += 30
    assert routed.health()[0].state is BreakerState.HALF_OPEN
    await routed.submit(REQUEST)  # the trial fails: open again, from now
    assert first.submits == 3
    assert routed.health()[0] == HostHealth("first", BreakerState.OPEN, 3, 1030.0)

    clock.now += 30
    first.fail_always = None
    assert (await routed.submit(REQUEST)).host == "first"
    assert routed.health()[0] == HostHealth("first", BreakerState.CLOSED, 0, None)
    assert routed.health()[1] == HostHealth("second", BreakerState.CLOSED, 0, None)


async def test_an_answer_about_the_edit_closes_a_half_open_breaker() -> None:
    clock = Clock()
    host = Host("only", down(), InvalidRequest("bad", host="only"))
    routed = router(host, clock=clock, retry=RetryPolicy(attempts=1), failure_threshold=1, cooldown=5)
    with pytest.raises(Unavailable):
        await routed.submit(REQUEST)
    with pytest.raises(Unavailable, match="circuits open"):
        await routed.submit(REQUEST)
    clock.now += 5
    with pytest.raises(InvalidRequest):
        await routed.submit(REQUEST)
    assert routed.health()[0].state is BreakerState.CLOSED


async def test_half_open_lets_one_trial_through_at_a_time() -> None:
    clock = Clock()
    first, second = Host("first", down()), Host("second")
    routed = router(
        first, second, clock=clock, retry=RetryPolicy(attempts=1), failure_threshold=1, cooldown=5
    )
    await routed.submit(REQUEST)
    clock.now += 5
    first.gate = asyncio.Event()
    trial = asyncio.create_task(routed.submit(REQUEST))
    async with first.changed:
        await first.changed.wait_for(lambda: first.in_flight == 1)
    assert (await routed.submit(REQUEST)).host == "second"
    first.gate.set()
    assert (await trial).host == "first"
    assert routed.health()[0].state is BreakerState.CLOSED


async def test_a_cancelled_trial_frees_the_half_open_slot() -> None:
    clock = Clock()
    host = Host("only", down())
    routed = router(host, clock=clock, retry=RetryPolicy(attempts=1), failure_threshold=1, cooldown=5)
    with pytest.raises(Unavailable):
        await routed.submit(REQUEST)
    clock.now += 5
    host.gate = asyncio.Event()
    trial = asyncio.create_task(routed.submit(REQUEST))
    async with host.changed:
        await host.changed.wait_for(lambda: host.in_flight == 1)
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    host.gate.set()
    assert (await routed.submit(REQUEST)).host == "only"


class Slots:
    """`HostSlots` in memory: the host each job is at."""

    def __init__(self, **at: str) -> None:
        self.at = {int(job.removeprefix("job")): host for job, host in at.items()}

    async def take(self, host: str, job_id: int, limit: int) -> bool:
        if sum(1 for job, at in self.at.items() if at == host and job != job_id) >= limit:
            return False
        self.at[job_id] = host
        return True

    async def give_back(self, host: str, job_id: int) -> None:
        if self.at.get(job_id) == host:
            del self.at[job_id]


class Waits(Sleeps):
    """Sleeps that run `then` at each wait for a slot (FULL_WAIT)."""

    def __init__(self, then: Callable[[], None]) -> None:
        super().__init__()
        self.then = then

    async def __call__(self, seconds: float) -> None:
        await super().__call__(seconds)
        if seconds == FULL_WAIT:
            self.then()


async def test_a_full_host_is_passed_over_for_the_next() -> None:
    first, second = Host("first"), Host("second")
    slots = Slots(job99="first")
    routed = router(first, second, concurrency={"first": 1}, slots=slots)
    assert (await routed.submit(REQUEST)).host == "second"
    assert first.submits == 0 and slots.at == {99: "first", 1: "second"}


async def test_an_edit_waits_while_every_host_it_may_use_is_full() -> None:
    only = Host("only")
    slots = Slots(job99="only")
    waits = Waits(lambda: slots.at.clear())  # that run ends while the edit waits
    routed = router(only, concurrency={"only": 1}, slots=slots, sleeps=waits)
    assert (await routed.submit(REQUEST)).host == "only"
    assert waits.delays == [FULL_WAIT] and slots.at == {1: "only"}


async def test_a_host_whose_submit_failed_gives_its_slot_back_while_the_edit_waits_for_another() -> None:
    first, second = Host("first", down()), Host("second")
    slots = Slots(job99="second")
    seen: list[dict[int, str]] = []

    def run_ends() -> None:
        seen.append(dict(slots.at))
        del slots.at[99]

    waits = Waits(run_ends)
    routed = router(
        first, second, concurrency={"second": 1}, slots=slots, sleeps=waits, retry=RetryPolicy(attempts=1)
    )
    assert (await routed.submit(REQUEST)).host == "second"
    assert seen == [{99: "second"}]  # while it waited, the edit held no slot at the host that failed
    assert first.submits == 1  # and it was not sent there again


async def test_runs_are_followed_at_their_own_host_whatever_its_breaker() -> None:
    first, second = Host("first", down()), Host("second")
    routed = router(first, second, retry=RetryPolicy(attempts=1), failure_threshold=1)
    await routed.submit(REQUEST)
    assert routed.health()[0].state is BreakerState.OPEN
    run = Run("first", "r1")
    assert (await routed.status(run)).status is RunStatus.RUNNING
    await routed.result(run)
    assert await routed.cancel(run) is True
    assert first.calls == ["status r1", "result r1", "cancel r1"] and second.calls == []
    with pytest.raises(InvalidRequest, match="not configured"):
        await routed.status(Run("gone", "r2"))
    await routed.close()
    assert first.closed and second.closed


def sized(resolution: str, dimensions: tuple[int, int]) -> EditRequest:
    return replace(REQUEST, resolution=resolution, dimensions=dimensions)


async def test_a_resolution_goes_only_to_hosts_that_make_it() -> None:
    small, large = Host("small", resolutions=ONLY_1K), Host("large")
    routed = router(small, large)
    assert routed.resolutions == frozenset(RESOLUTIONS)
    assert (await routed.submit(sized("4K", (3840, 2160)))).host == "large"
    assert small.submits == 0
    assert (await routed.submit(REQUEST)).host == "small"  # 1K still goes to the first host


async def test_a_resolution_no_host_makes_is_refused_without_a_submit() -> None:
    first, second = Host("first", resolutions=ONLY_1K), Host("second", resolutions=ONLY_1K)
    routed = router(first, second)
    assert routed.resolutions == ONLY_1K
    with pytest.raises(InvalidRequest, match="can make 2K images"):
        await routed.submit(sized("2K", (2048, 2048)))
    assert first.submits == second.submits == 0


async def test_failover_never_sends_a_larger_resolution_to_a_preset_only_host() -> None:
    large, small = Host("large"), Host("small", resolutions=ONLY_1K)
    large.fail_always = down("large down")
    routed = router(large, small, retry=RetryPolicy(attempts=2))
    with pytest.raises(Unavailable, match="large down"):
        await routed.submit(sized("2K", (2048, 2048)))
    assert large.submits == 2 and small.submits == 0
    assert (await routed.submit(REQUEST)).host == "small"  # a 1K edit may still fail over


async def test_a_size_goes_only_to_hosts_that_make_it_within_the_models_limits() -> None:
    """A preset-only host's `square` is 512x512, under gpt-image-2's minimum: it must not get it."""
    presets, exact = Host("presets", resolutions=ONLY_1K, image_sizes=PRESET_SIZES), Host("exact")
    routed = router(presets, exact)
    assert routed.image_sizes == frozenset(IMAGE_SIZES)
    assert (await routed.submit(replace(REQUEST, image_size="square"))).host == "exact"
    assert presets.submits == 0
    assert (await routed.submit(replace(REQUEST, image_size="square_hd"))).host == "presets"


async def test_a_size_no_host_makes_validly_is_refused_without_a_submit() -> None:
    presets = Host("presets", resolutions=ONLY_1K, image_sizes=PRESET_SIZES)
    routed = router(presets)
    assert routed.image_sizes == PRESET_SIZES
    with pytest.raises(InvalidRequest, match="landscape_16_9"):
        await routed.submit(replace(REQUEST, image_size="landscape_16_9"))
    assert presets.submits == 0


async def test_build_router_takes_order_and_limits_from_settings() -> None:
    settings = ProvidersSettings.model_validate(
        {
            "order": ["openai", "fal"],
            "openai": {"api_key": SecretStr("sk"), "max_concurrency": 1},
            "fal": {"api_key": SecretStr("key")},
        }
    )
    async with aiohttp.ClientSession() as session:
        routed: Provider = build_router(settings, session)
    assert isinstance(routed, Router)
    assert [health.name for health in routed.health()] == ["openai", "fal"]
    assert routed._hosts["openai"].concurrency == 1
    assert routed.resolutions == frozenset(RESOLUTIONS)
